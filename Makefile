# Mammography research workbench. The two commands that matter:
#   make reports   set up, then regenerate every report on the embedded synthetic data
#   make test      set up, then lint and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PARAMS ?= params/default.yaml
PYTEST_ARGS ?=
DEMO_PORT ?= 8866
# Keep TensorFlow's start-up messages out of test logs and executed notebooks.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup reports test lint bench demo ui clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sample,export,dicom]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

reports: setup
	$(BIN)/mammo report --params $(PARAMS)

# Style, then the layering contracts of pyproject.toml ([tool.importlinter]).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The unit and integration tests, then every notebook under nbval (run from notebooks/,
# on its own defaults, in order, so each reuses what the previous one wrote).
# The notebooks' MLflow runs go to a throwaway store (tests/conftest.py does the same for
# the tests), never to the project's reports/mlflow/mlflow.db.
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests
	store=$$(mktemp -d) && cd notebooks && MLFLOW_TRACKING_URI=sqlite:///$$store/mlflow.db \
		../$(BIN)/python -m pytest -p no:cacheprovider --nbval-lax $(PYTEST_ARGS) \
		01_ingest.ipynb 02_preprocess.ipynb 03_baseline_cnn.ipynb 04_transfer_learning.ipynb \
		05_evaluation.ipynb 06_interactive_demo.ipynb; status=$$?; rm -rf $$store; exit $$status

bench: setup
	$(BIN)/python -m benchmarks

# Serves app/demo.ipynb, whose one output is the app (notebook 06 narrates the same app).
# MODEL=models/<run>/<model> chooses the model shown first (default: the newest).
demo: setup
	MAMMO_DEMO_MODEL_DIR=$(if $(MODEL),$(abspath $(MODEL))) $(BIN)/voila app/demo.ipynb --no-browser --port=$(DEMO_PORT) \
		--Voila.ip=127.0.0.1 \
		--Voila.tornado_settings="{'websocket_max_message_size': 209715200}"

# The MLflow UI over the project's runs (reports/mlflow/mlflow.db, or MLFLOW_TRACKING_URI).
UI_PORT ?= 5000
ui: setup
	$(BIN)/mammo ui --port $(UI_PORT)

# Removes the environment and everything the project generated (synthetic data, ingest and
# preprocess outputs, models, reports). Downloads in data/raw/ other than the synthetic
# sets are kept; the tracked READMEs stay.
clean:
	rm -rf $(VENV) data/raw/synthetic* data/interim data/processed data/bench \
		.pytest_cache .ruff_cache
	find models reports -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
