"""Training end to end: known answer, class order, reproducibility, model directory and
card, the training config, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import yaml
from fixtures_training import PERMUTED_CLASSES, PERMUTED_CONFIG

from mammo_utils import models, pipeline
from mammo_utils import train as training
from mammo_utils.classes import CLASSES, check_class_order, scheme_classes
from mammo_utils.cli import main as mammo
from mammo_utils.model_card import (
    CARD_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    ModelCard,
    ModelDirectoryError,
    load_model_dir,
)
from mammo_utils.train import _compile, _validation_metrics, train
from mammo_utils.training_config import TrainingConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_baseline_learns_the_synthetic_known_answer(known_answer_baseline):
    """The issue's known answer: synthetic roi data -> validation macro ROC-AUC >= 0.85.

    The whole chain runs (synth, ingest, preprocess, pipeline, train), so a label-order
    or pipeline bug anywhere shows as a score near chance. About 1.5 min on 2 cores.
    """
    result = known_answer_baseline
    metrics = result.card.validation_metrics
    assert metrics["macro_roc_auc"] >= 0.85, metrics
    assert list(metrics["roc_auc_per_class"]) == list(CLASSES)
    counts = result.card.data["counts"]["val"]
    assert metrics["n"] == sum(counts.values()) and min(counts.values()) >= 10, counts


#: Validation macro ROC-AUC the real-scale known answer must reach. The issue's commands
#: with the default recipe reached 0.826, 0.850 and 0.853 with train seeds 1, 2 and 3
#: (synthetic seed 11, 40 patients, 68 validation patches); the test trains seed 1. The old
#: defaults gave 0.542, chance level; the margin allows for other CPUs' arithmetic.
REAL_SCALE_MIN_AUC = 0.75


@pytest.mark.slow
def test_baseline_learns_at_the_real_working_scale(real_scale_baseline):
    """The issue's first paragraph with the new defaults: 224-pixel patches at 1152x896,
    ``--epochs`` at its default, learn (the old defaults gave 0.54, chance level)."""
    card = real_scale_baseline
    assert (card.image_size, card.working_size) == (224, [1152, 896])
    assert card.training["epochs"] == TrainingConfig().epochs
    assert card.validation_metrics["macro_roc_auc"] >= REAL_SCALE_MIN_AUC, \
        card.validation_metrics


@pytest.fixture(scope="module")
def trained_baseline(permuted_known_answer_model):
    """The baseline trained on the known-answer patches, output order PERMUTED_CLASSES."""
    return permuted_known_answer_model


@pytest.mark.slow
def test_output_units_follow_the_requested_class_order(trained_baseline,
                                                       known_answer_roi_data):
    card = trained_baseline.card
    assert card.classes == list(PERMUTED_CLASSES)
    assert ModelCard.load(trained_baseline.model_dir).classes == list(PERMUTED_CLASSES)
    rows = pipeline.load_manifest(known_answer_roi_data).split("test")
    test = pipeline.make_dataset(known_answer_roi_data, "test", batch_size=16)
    winners = trained_baseline.model.predict(test, verbose=0).argmax(axis=1)
    named = np.array([card.classes[unit] for unit in winners])
    truth = rows["label"].to_numpy()
    # Read through the card, the units name the right class; read in the scheme's
    # order (the bug this guards against) they would not.
    assert (named == truth).mean() >= 0.75, pd.crosstab(truth, named)
    assert (np.array(CLASSES)[winners] == truth).mean() <= 0.5
    for name in CLASSES:  # each class's patches most often win on that class's unit
        most_often = np.bincount(winners[truth == name], minlength=4).argmax()
        assert most_often == card.classes.index(name), name
    metrics = card.validation_metrics
    assert metrics["macro_roc_auc"] >= 0.85, metrics
    assert list(metrics["roc_auc_per_class"]) == list(PERMUTED_CLASSES)
    assert list(card.training["class_weight"]) == list(PERMUTED_CLASSES)


def test_class_order_must_be_a_permutation_of_the_scheme():
    assert check_class_order(PERMUTED_CLASSES, "four_class") == PERMUTED_CLASSES
    with pytest.raises(ValueError, match="duplicated NORMAL; missing BENIGN$"):
        check_class_order(["NORMAL", "BENIGN_WITHOUT_CALLBACK", "NORMAL", "MALIGNANT"],
                          "four_class")
    with pytest.raises(ValueError, match="missing NORMAL; unknown NOT_MALIGNANT"):
        check_class_order(["NOT_MALIGNANT", "BENIGN", "MALIGNANT"], "three_class")
    with pytest.raises(ValueError, match="^class_order: .*not an order of the four_class"):
        TrainingConfig(class_order=["MALIGNANT", "NORMAL"])
    config = TrainingConfig(label_scheme="three_class",
                            class_order=["MALIGNANT", "NORMAL", "BENIGN"])
    assert config.class_order == ("MALIGNANT", "NORMAL", "BENIGN")


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("epochs", 0, "epochs must be an integer >= 1, got 0"),
    ("epochs", 2.5, "epochs must be an integer >= 1, got 2.5"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
    ("fine_tune_epochs", -1, "fine_tune_epochs must be an integer >= 0"),
    ("seed", -3, "seed must be an integer >= 0"),
    ("learning_rate", 0.0, "learning_rate must be a number > 0, got 0.0"),
    ("fine_tune_learning_rate", -1e-5, "fine_tune_learning_rate must be a number > 0"),
    ("learning_rate", float("nan"), "learning_rate must be a number > 0, got nan"),
    ("fine_tune_fraction", 1.5, r"fine_tune_fraction must be a number in \(0, 1\]"),
    ("dropout", 1.0, r"dropout must be a number in \[0, 1\)"),
    ("l2", -1e-4, "l2 must be a number >= 0"),
    ("balance", "smote", "balance must be one of class_weight, oversample, none, got 'smote'"),
    ("architecture", "vgg19", "architecture must be one of baseline, vgg16, .*got 'vgg19'"),
    ("label_scheme", "two_class", "label_scheme must be one of four_class, "),
    ("weights", "imagenet", "weights must be 'none' for the baseline CNN"),
    ("augment", "no", "augment must be True or False, got 'no'"),
])
def test_training_config_names_the_setting_out_of_range(setting, value, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        TrainingConfig(**{setting: value})


def test_training_config_normalises_what_it_accepts(tmp_path):
    config = TrainingConfig(architecture="densenet121", weights=tmp_path / "b.weights.h5",
                            epochs=np.int64(3), learning_rate=1)
    assert config.weights == str(tmp_path / "b.weights.h5") and config.pretrained
    assert type(config.epochs) is int and type(config.learning_rate) is float
    assert not TrainingConfig(architecture="densenet121").pretrained
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()


def test_card_rebuilds_the_training_config():
    config = TrainingConfig(architecture="mobilenetv2", weights="imagenet", epochs=3,
                            fine_tune_epochs=2, label_scheme="three_class",
                            class_order=("MALIGNANT", "BENIGN", "NORMAL"), seed=7,
                            balance="oversample", augment=False)
    card = ModelCard(model_name="m", architecture="mobilenetv2", classes=config.class_order,
                     label_scheme="three_class", task="roi", image_size=32,
                     training={**config.to_dict(), "epochs_run": 5, "strategy": "X"})
    assert ModelCard.from_json(card.to_json()).training_config() == config
    older = ModelCard.from_json({**json.loads(card.to_json()),
                                 "training": {"epochs": 3, "batch_size": 32}})
    with pytest.raises(ValueError, match="'m' does not record the training setting.*seed"):
        older.training_config()


def test_train_takes_a_training_config(known_answer_roi_data, tmp_path):
    with pytest.raises(TypeError, match="config must be a TrainingConfig, got str"):
        train(known_answer_roi_data, tmp_path / "never", "baseline")


@pytest.mark.slow
def test_model_directory_reloads_with_identical_predictions(trained_baseline,
                                                           known_answer_roi_data):
    folder = trained_baseline.model_dir
    assert {MODEL_FILE, CARD_FILE, HISTORY_FILE} <= {p.name for p in folder.iterdir()}
    model, card = load_model_dir(folder)
    test = pipeline.make_dataset(known_answer_roi_data, "test", batch_size=8)
    np.testing.assert_allclose(
        model.predict(test, verbose=0), trained_baseline.model.predict(test, verbose=0),
        atol=1e-6,
    )
    assert card.to_json() == trained_baseline.card.to_json()


@pytest.mark.slow
def test_card_records_class_order_and_provenance(trained_baseline, known_answer_roi_data):
    card = ModelCard.load(trained_baseline.model_dir)
    assert card.classes == list(PERMUTED_CLASSES)
    # The label order of training is the card's: label c is unit i for classes[i].
    rows = pipeline.load_manifest(known_answer_roi_data).split("val")
    labels = pipeline.encode_labels(rows["label"], card.label_scheme, card.classes)
    assert [card.classes[i] for i in labels] == rows["label"].tolist()
    assert card.image_size == 32 and card.working_size == [320, 256] and card.task == "roi"
    assert card.preprocessing["size"] == 32
    assert len(card.data["manifest_sha256"]) == 64 and len(card.data["split_sha256"]) == 64
    assert card.data["counts"]["train"]["MALIGNANT"] == 48
    history = pd.read_csv(trained_baseline.model_dir / HISTORY_FILE)
    assert card.best_epoch == int(history["val_loss"].idxmin()) + 1
    assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"} <= set(history)
    assert card.parameter_count == trained_baseline.model.count_params()
    assert card.training["training_time_s"] > 0 and card.seed == 0
    assert card.training["class_weight"] == {name: 1.0 for name in card.classes}
    assert card.training_config() == PERMUTED_CONFIG
    assert card.training["epochs_run"] == len(history) and [
        (stage["name"], stage["epochs_run"]) for stage in card.training["stages"]
    ] == [("full", len(history))]
    assert "tensorflow" in json.dumps(card.versions)


@pytest.mark.slow
def test_same_seed_in_one_process_gives_the_same_model(tiny_roi_data, tmp_path):
    """Two trainings with one seed in one process (as a notebook kernel trains) write the
    same weights and loss; another seed writes other weights. The handful of tiny patches
    shows it as well as a larger set would: the seed fixes initialisation, shuffling and
    dropout whatever the data's size."""
    def trained(name, seed):
        result = train(tiny_roi_data, tmp_path / name,
                       TrainingConfig(epochs=1, batch_size=8, seed=seed), verbose=0)
        return result.history["loss"].iloc[0], [w.numpy().tobytes() for w in result.model.weights]

    loss, weights = trained("a", 5)
    assert trained("b", 5) == (loss, weights)
    other_loss, other_weights = trained("c", 6)
    assert other_loss != loss and other_weights != weights


@pytest.mark.slow
def test_pretrained_backbone_trains_head_then_fine_tunes(tiny_roi_data, tmp_path, monkeypatch):
    weights = models.save_backbone_weights(
        models.build_model("mobilenetv2", 2, 32), tmp_path / "pretrained.weights.h5"
    )
    strategies = []

    def one_strategy(mode):
        assert mode == "auto"
        strategies.append(tf.distribute.get_strategy())
        return strategies[-1]

    monkeypatch.setattr(training, "choose_strategy", one_strategy)
    config = TrainingConfig(architecture="mobilenetv2", weights=weights, epochs=1,
                            batch_size=32, label_scheme="malignant_vs_rest", fine_tune_epochs=1)
    result = train(tiny_roi_data, tmp_path / "mnv2", config, verbose=0)
    assert len(result.history) == 2  # one head epoch, one fine-tune epoch
    assert result.history["learning_rate"].tolist() == pytest.approx([1e-3, 1e-5])
    assert [(stage["name"], stage["epochs"], stage["learning_rate"], stage["epochs_run"])
            for stage in result.card.training["stages"]] == [("head", 1, 1e-3, 1),
                                                             ("finetune", 1, 1e-5, 1)]
    # Both stages and the card share the one strategy the run chose.
    assert len(strategies) == 1
    assert result.card.training["strategy"] == type(strategies[0]).__name__
    assert result.card.training["replicas"] == 1
    model, card = load_model_dir(result.model_dir)
    assert card.classes == ["NOT_MALIGNANT", "MALIGNANT"] and model.output_shape == (None, 2)
    assert card.training_config() == config and card.training["fine_tune_epochs"] == 1


#: The patch architectures the default report trains from scratch (params/default.yaml):
#: two `make reports` must write the same models.
_DEFAULT_REPORT = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
REPORT_ARCHITECTURES = (
    "baseline", *_DEFAULT_REPORT["notebooks"]["04_transfer_learning"]["backbones"])

_TRAIN_EACH = """
import sys
from pathlib import Path
from mammo_utils.train import train
from mammo_utils.training_config import TrainingConfig
data_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
for architecture in sys.argv[3:]:
    config = TrainingConfig(architecture=architecture, epochs=2, batch_size=8)
    train(data_dir, out_dir / architecture, config, verbose=0)
"""


@pytest.fixture(scope="module")
def two_report_runs(tiny_roi_data, tmp_path_factory) -> list[Path]:
    """Each report architecture trained twice, as two `make reports` would: two processes
    (run side by side) with different hash seeds."""
    root = tmp_path_factory.mktemp("two_runs")
    runs = [root / "first", root / "second"]
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    # As a user's shell: no TF_NUM_INTEROP_THREADS, train() pins the threads itself.
    env = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTEROP_THREADS"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _TRAIN_EACH, str(tiny_roi_data), str(run),
             *REPORT_ARCHITECTURES],
            env={**env, "PYTHONPATH": python_path, "PYTHONHASHSEED": str(hash_seed),
                 "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for run, hash_seed in zip(runs, (1, 2), strict=True)
    ]
    for process in processes:
        _, errors = process.communicate(timeout=900)
        assert process.returncode == 0, errors[-4000:]
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("architecture", REPORT_ARCHITECTURES)
def test_two_runs_of_one_config_write_the_same_model(two_report_runs, architecture):
    (first, first_card), (second, second_card) = (
        load_model_dir(run / architecture) for run in two_report_runs
    )
    assert [w.path for w in first.weights] == [w.path for w in second.weights]
    for left, right in zip(first.weights, second.weights, strict=True):
        assert left.numpy().tobytes() == right.numpy().tobytes(), left.path  # bit for bit
    first_history, second_history = (
        pd.read_csv(run / architecture / HISTORY_FILE) for run in two_report_runs
    )
    assert len(first_history) == 2
    pd.testing.assert_frame_equal(first_history, second_history, check_exact=True)
    assert first_card.validation_metrics == second_card.validation_metrics
    assert first_card.best_epoch == second_card.best_epoch
    assert first_card.training["repeatable"] and second_card.training["repeatable"]


def test_patient_in_two_splits_is_refused_before_training(known_answer_roi_data, tmp_path):
    frame = pd.read_csv(known_answer_roi_data / "manifest.csv")
    frame.loc[frame.index[0], "split"] = "val"  # one patch of a train patient moves to val
    frame["path"] = [str(known_answer_roi_data / p) for p in frame["path"]]
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    frame.to_csv(leaky / "manifest.csv", index=False)
    with pytest.raises(ValueError, match="P_00001"):
        train(leaky, tmp_path / "never", TrainingConfig(epochs=1), verbose=0)
    assert not (tmp_path / "never" / MODEL_FILE).exists()


def _tiny_model_dir(folder, image_size=32, units=4):
    model = models.build_model("baseline", units, image_size)
    folder.mkdir(parents=True)
    model.save(folder / MODEL_FILE)
    ModelCard(model_name="tiny", architecture="baseline", classes=list(scheme_classes()),
              label_scheme="four_class", task="roi", image_size=32).save(folder)
    return folder


def test_model_directory_that_disagrees_with_its_card_is_refused(tmp_path):
    ok = _tiny_model_dir(tmp_path / "ok")
    model, card = load_model_dir(ok)
    assert card.classes == list(scheme_classes()) and model.output_shape == (None, 4)

    wrong_units = _tiny_model_dir(tmp_path / "units", units=3)
    with pytest.raises(ModelDirectoryError, match=r"units.*3 output units.*4 classes"):
        load_model_dir(wrong_units)
    wrong_size = _tiny_model_dir(tmp_path / "size", image_size=48)
    with pytest.raises(ModelDirectoryError, match=r"size.*\(48, 48, 1\).*\(32, 32, 1\)"):
        load_model_dir(wrong_size)

    card_path = ok / CARD_FILE
    values = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**values, "classes": ["MALIGNANT", "NORMAL"]}))
    with pytest.raises(ModelDirectoryError,
                       match=r"invalid model_card.json.*not an order of the four_class"):
        load_model_dir(ok)
    card_path.write_text("{not json")
    with pytest.raises(ModelDirectoryError, match=str(ok)):
        load_model_dir(ok)
    card_path.unlink()
    with pytest.raises(ModelDirectoryError, match="no model_card.json"):
        load_model_dir(ok)


def test_card_json_round_trip_and_unknown_fields():
    card = ModelCard(model_name="m", architecture="baseline", classes=["MALIGNANT", "NORMAL",
                     "BENIGN"], label_scheme="three_class", task="image", image_size=64,
                     training={"class_weight": {0: np.float64(1.5)}}, parameter_count=10)
    again = ModelCard.from_json(card.to_json())
    assert again.classes == ["MALIGNANT", "NORMAL", "BENIGN"]  # any order of the scheme
    assert again.training["class_weight"] == {"0": 1.5}
    with pytest.raises(ValueError, match="unknown model card fields: colour"):
        ModelCard.from_json({**json.loads(card.to_json()), "colour": "red"})


def test_validation_roc_auc_is_none_where_undefined():
    """A validation split of one class has no ROC-AUC: the card says None (JSON null), as
    metrics.json does, not NaN (which is not JSON)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    _compile(model, 1e-3, 3)
    labels = np.zeros(6, dtype=int)
    features = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    val_data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(3)
    metrics = _validation_metrics(model, val_data, labels, ("NORMAL", "BENIGN", "MALIGNANT"))
    assert metrics["macro_roc_auc"] is None
    assert metrics["roc_auc_per_class"] == {"NORMAL": None, "BENIGN": None, "MALIGNANT": None}
    json.dumps(metrics, allow_nan=False)


@pytest.mark.slow
def test_mammo_train_command_writes_a_model_directory(known_answer_roi_data, tmp_path, capsys):
    out = tmp_path / "cli-model"
    status = mammo(["train", "--data", str(known_answer_roi_data), "--model", "baseline",
                    "--epochs", "1", "--batch-size", "32", "--out", str(out),
                    "--label-scheme", "three_class", "--class-order", "MALIGNANT, NORMAL,BENIGN",
                    "--seed", "3"])
    assert status == 0
    assert "macro ROC-AUC" in capsys.readouterr().out
    card = ModelCard.load(out)
    assert card.classes == ["MALIGNANT", "NORMAL", "BENIGN"]
    assert card.training_config() == TrainingConfig(
        epochs=1, batch_size=32, label_scheme="three_class", seed=3,
        class_order=("MALIGNANT", "NORMAL", "BENIGN"),
    )


def test_mammo_train_reports_bad_input_without_a_traceback(tmp_path, capsys,
                                                           known_answer_roi_data):
    status = mammo(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m")])
    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("mammo train: error: ") and "manifest not found" in error
    status = mammo(["train", "--data", str(known_answer_roi_data), "--out", str(tmp_path / "m"),
                    "--class-order", "NORMAL,BENIGN,MALIGNANT,MALIGNANT"])
    assert status == 1
    assert "duplicated MALIGNANT; missing BENIGN_WITHOUT_CALLBACK" in capsys.readouterr().err


def test_mammo_train_refuses_bad_settings_before_reading_data(tmp_path, capsys):
    for option, value, message in (("--epochs", "0", "epochs must be an integer >= 1"),
                                   ("--learning-rate", "-1", "learning_rate must be a number"),
                                   ("--dropout", "1", "dropout must be a number in [0, 1)")):
        status = mammo(["train", "--data", str(tmp_path / "absent"), "--out",
                        str(tmp_path / "m"), option, value])
        assert status == 1
        # The setting is named, not the missing data folder: the config is checked first.
        assert capsys.readouterr().err.startswith(f"mammo train: error: {message}")
    assert not (tmp_path / "m").exists()


def _seeding_outcome(prelude: str) -> tuple[str, str]:
    """``seed_everything``'s verdict and the inter-op thread count in a fresh Python
    without TF_NUM_INTEROP_THREADS, after running ``prelude``."""
    code = (
        "import tensorflow as tf\n"
        "from mammo_utils.train import seed_everything\n"
        f"{prelude}\n"
        "print(seed_everything(0), tf.config.threading.get_inter_op_parallelism_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTEROP_THREADS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[-2:], result.stderr


def test_a_deterministic_run_uses_one_inter_op_thread():
    """Op determinism alone let DenseNet121 part between two runs at report scale."""
    (repeatable, threads), _ = _seeding_outcome("")
    assert (repeatable, threads) == ("True", "1")


def test_a_run_after_tensorflow_started_says_it_may_not_repeat():
    (repeatable, _), stderr = _seeding_outcome("tf.constant(1.0) + 1.0")
    assert repeatable == "False"
    assert "may not repeat bit for bit" in stderr
