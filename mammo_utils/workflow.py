"""Build what a notebook needs when the earlier stages have not written it yet.

Each notebook reads what the previous stage wrote into the run's workspace, so
papermill runs them in order; each still runs alone on its defaults because its
setup cell asks this module for its inputs, and every ``ensure_*`` function does
only the work that is missing (the stages themselves are resumable). The training
notebooks train through :func:`train_model` every time they run, so a report never
shows a model left over from other code::

    settings = DataSettings(project_dir="..", synth_patients=24)
    data_dir = ensure_processed(settings, task="roi", size=64).out_dir   # synth, ingest, patches
    result = train_model(settings, data_dir, TrainingConfig(epochs=10))  # always trains
    model_dir = ensure_model(settings, data_dir, TrainingConfig(epochs=2))  # trains if missing

The synthetic default is keyed by its generation parameters
(``synthetic-p24-s0-small``), so runs with different settings (the test suite's
smoke run, ``make reports``) never overwrite each other's data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mammo_utils.ingest import HEADER_CACHE_FILE, INDEX_FILE
from mammo_utils.model_card import CARD_FILE
from mammo_utils.preprocess import CONFIG_FILE
from mammo_utils.workspace import Workspace, two_view_name, whole_image_names

if TYPE_CHECKING:
    from mammo_utils.ingest import IngestResult
    from mammo_utils.preprocess import PreprocessResult
    from mammo_utils.train import TrainResult
    from mammo_utils.training_config import TrainingConfig

#: Sources that are ingested with the CBIS-DDSM adapter.
_CBIS_LAYOUTS = ("synthetic", "cbis-ddsm")

#: Preprocess settings that only notebook 02 declares; the other notebooks reuse the
#: values a processed folder was made with instead of imposing the defaults.
_FOLDER_SETTINGS = (
    "normal_per_image", "patches_per_lesion", "jitter", "min_breast_fraction",
)


@dataclass(frozen=True)
class DataSettings:
    """The data parameters every notebook shares (its ``parameters`` cell).

    ``data_root`` empty with ``dataset="synthetic"`` means the generated synthetic set
    (``synth_patients``, ``synth_seed``, ``synth_size``); otherwise it is the folder of a
    download. ``seed`` drives the patient-level splits and the preprocessing.
    """

    project_dir: str | Path = ".."
    run_name: str = "notebook"
    dataset: str = "synthetic"
    data_root: str | Path = ""
    synth_patients: int = 24
    synth_seed: int = 0
    synth_size: str = "small"
    views: str = "MLO,CC"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0

    @property
    def is_synthetic(self) -> bool:
        """Whether the data is the synthetic set this project generates itself."""
        return self.dataset == "synthetic" and not str(self.data_root)

    @property
    def dataset_key(self) -> str:
        """Folder name of the data under data/raw, data/interim and data/processed."""
        if self.is_synthetic:
            return f"synthetic-p{self.synth_patients}-s{self.synth_seed}-{self.synth_size}"
        return self.dataset

    @property
    def workspace(self) -> Workspace:
        """Every path of this run, with the data folders named by :attr:`dataset_key`."""
        return Workspace(Path(self.project_dir), self.run_name, self.dataset_key)


def ensure_raw(settings: DataSettings) -> Path:
    """The raw data root: the user's ``data_root``, or the synthetic set (generated once).

    A relative ``data_root`` is taken from the project folder (``data/raw/cbis-ddsm``
    means the same in a notebook, whose working folder is ``notebooks/``, as on the
    command line). Raises ``FileNotFoundError`` naming the folder when a real data set's
    ``data_root`` is empty or not a folder.
    """
    if not settings.is_synthetic:
        root = settings.workspace.project_dir / Path(settings.data_root)
        if not str(settings.data_root) or not root.is_dir():
            where = f"{root.resolve()} is not a folder" if str(settings.data_root) else "is empty"
            raise FileNotFoundError(
                f"data_root {where}: point it at the {settings.dataset} download "
                "(README, 'Real data'), or use dataset='synthetic' with an empty data_root"
            )
        return root
    from mammo_utils.synth import generate_dataset

    root = settings.workspace.synthetic_dir
    generate_dataset(root, patients=settings.synth_patients, seed=settings.synth_seed,
                     size=settings.synth_size, progress=False)
    return root


def ingest_dataset(settings: DataSettings) -> IngestResult:
    """Ingest the raw data named by ``settings`` (always anew) and save it to the workspace."""
    from mammo_utils.ingest import ingest

    root = ensure_raw(settings)
    adapter = "cbis-ddsm" if settings.dataset in _CBIS_LAYOUTS else settings.dataset
    options = {"views": [view for view in settings.views.split(",") if view] or None}
    if adapter == "cbis-ddsm":
        # The header index makes a re-ingest read only the DICOMs that changed.
        options["cache_path"] = settings.workspace.interim_dir / HEADER_CACHE_FILE
    result = ingest(adapter, root, val_fraction=settings.val_fraction,
                    test_fraction=settings.test_fraction, seed=settings.seed, **options)
    result.save(settings.workspace.interim_dir)
    return result


def ensure_ingested(settings: DataSettings) -> Path:
    """Path of the run's ``index.csv``, ingesting first when it is missing."""
    index = settings.workspace.interim_dir / INDEX_FILE
    if not index.is_file():
        ingest_dataset(settings)
    return index


def _folder_settings(out_dir: Path) -> dict:
    """The notebook-02-only settings a processed folder was made with (empty if none)."""
    path = out_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text(encoding="utf-8"))
    return {key: saved[key] for key in _FOLDER_SETTINGS if key in saved}


def ensure_processed(
    settings: DataSettings,
    task: str = "roi",
    size: int = 64,
    working_size: tuple[int, int] | list[int] = (320, 256),
    *,
    workers: int = 1,
    progress: bool = False,
    **config,
) -> PreprocessResult:
    """Preprocess what is missing for ``task`` and ``size``; the result names ``out_dir``.

    ``config`` holds further :class:`~mammo_utils.preprocess.PreprocessConfig` fields
    (``normal_per_image``, ``jitter``, ...). Those not given keep the values the folder
    was made with, so a notebook that does not declare them reuses notebook 02's
    patches rather than refusing them. Images already done are not redone.
    """
    from mammo_utils.preprocess import PreprocessConfig, run_preprocess

    out_dir = settings.workspace.processed_dir(
        task, size, working_size if task == "roi" else None
    )
    config = {**_folder_settings(out_dir), **config}
    preprocess_config = PreprocessConfig(task=task, size=int(size),
                                         working_size=tuple(working_size),
                                         seed=settings.seed, **config)
    return run_preprocess(ensure_ingested(settings), out_dir, preprocess_config,
                          workers=workers, progress=progress)


def train_model(settings: DataSettings, data_dir: str | Path, config: TrainingConfig, *,
                name: str | None = None, verbose: int = 2) -> TrainResult:
    """Train ``config`` on the processed folder ``data_dir`` into the run's model folder
    ``models/<run>/<name>`` (default: the architecture), replacing what is there."""
    from mammo_utils.train import train

    return train(data_dir, settings.workspace.model_dir(name or config.architecture), config,
                 verbose=verbose)


def ensure_model(settings: DataSettings, data_dir: str | Path, config: TrainingConfig) -> Path:
    """The run's model folder for ``config.architecture``: the model already there,
    whatever its settings, or one trained now with ``config`` (see :func:`train_model`)."""
    model_dir = settings.workspace.model_dir(config.architecture)
    if not (model_dir / CARD_FILE).is_file():
        train_model(settings, data_dir, config)
    return model_dir


def _started_settings(
    settings: DataSettings, source: str, *, epochs: int, fine_tune_epochs: int,
    fine_tune_learning_rate: float, batch_size: int,
) -> tuple[Path, dict]:
    """The run's model ``source`` (its folder) and the :class:`TrainingConfig` fields a
    model started from it shares with its control: the source's architecture, label
    scheme and class order, the run's seed, and the budget of ``epochs`` (new layers
    on the frozen trunk) then ``fine_tune_epochs`` (everything at
    ``fine_tune_learning_rate``)."""
    from mammo_utils.model_card import ModelCard

    source_dir = settings.workspace.model_dir(source)
    card = ModelCard.load(source_dir)
    return source_dir, {
        "architecture": card.architecture, "label_scheme": card.label_scheme,
        "class_order": tuple(card.classes), "batch_size": batch_size, "seed": settings.seed,
        "epochs": epochs, "fine_tune_epochs": fine_tune_epochs,
        "fine_tune_learning_rate": fine_tune_learning_rate,
    }


def _started_from(source_dir: Path, common: dict) -> TrainingConfig:
    """The configuration that starts from ``source_dir``'s trunk and, after the new
    layers, fine-tunes all of it (:func:`_started_settings` gives ``common``)."""
    from mammo_utils.training_config import TrainingConfig

    return TrainingConfig(init_from=str(source_dir), fine_tune_fraction=1.0, **common)


def _without_source(weights: str, common: dict, like: Path | None = None) -> TrainingConfig:
    """The configuration of the same model without a source model of the run: from
    ``weights`` (a baseline has none to take), in the usual stages. With ``like`` (the
    source model a twin is started from), a baseline gets that model's stem, so the two
    differ in their starting weights alone."""
    from mammo_utils import transfer
    from mammo_utils.training_config import TrainingConfig

    if common["architecture"] != "baseline":
        return TrainingConfig(weights=weights, **common)
    stem_steps = None if like is None else transfer.stem_steps_of(like)
    return TrainingConfig(weights="none", stem_steps=stem_steps, **common)


def train_whole_image_models(
    settings: DataSettings, image_dir: str | Path, source: str, *, weights: str = "none",
    epochs: int, fine_tune_epochs: int, fine_tune_learning_rate: float = 1e-4,
    batch_size: int = 16, verbose: int = 2,
) -> dict[str, TrainResult]:
    """Patch-to-image transfer next to its control, on the whole-breast folder ``image_dir``.

    Trains the architecture of the run's patch model ``source`` (``models/<run>/<source>``)
    twice on the same budget of ``epochs + fine_tune_epochs`` epochs: started from the
    patch model's trunk (new layers on the frozen trunk for ``epochs``, then the whole
    trunk for ``fine_tune_epochs`` at ``fine_tune_learning_rate``), and without it (with
    ``weights``: from scratch in one stage, or a pretrained backbone in the usual two
    stages). Same label scheme, class order, batch size and seed as the patch model, and
    for the baseline the same stem (the control differs in its starting weights alone).
    Returns the two results by model folder name (:func:`whole_image_names`).
    """
    source_dir, common = _started_settings(
        settings, source, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
        fine_tune_learning_rate=fine_tune_learning_rate, batch_size=batch_size)
    configs = (_without_source(weights, common, like=source_dir),
               _started_from(source_dir, common))
    names = whole_image_names(common["architecture"], source)
    return {name: train_model(settings, image_dir, config, name=name, verbose=verbose)
            for name, config in zip(names, configs, strict=True)}


def train_two_view_model(
    settings: DataSettings, size: int, source: str = "", *, single_view: str = "exclude",
    architecture: str = "baseline", weights: str = "none", label_scheme: str = "four_class",
    epochs: int, fine_tune_epochs: int, fine_tune_learning_rate: float = 1e-4,
    batch_size: int = 16, verbose: int = 2,
) -> dict[str, TrainResult]:
    """The two-view (``breast``) model of the run, on CC and MLO canvases of side ``size``.

    Builds the run's ``breast`` folder when it is missing (:func:`ensure_processed`, a
    breast with one view handled by ``single_view``: ``exclude`` or ``duplicate``). With
    ``source``, the run's model ``models/<run>/<source>`` (a patch model, or a
    whole-breast model of :func:`train_whole_image_models`) starts the shared trunk and
    fixes the architecture, label scheme and class order, which the model card's
    lineage records; training then runs as for a whole-breast model started from a
    patch model. Without ``source``, ``architecture`` starts from ``weights`` with
    ``label_scheme``'s classes on the same budget. Returns the result by model folder
    name (:func:`two_view_name`).
    """
    breast_dir = ensure_processed(settings, "breast", size, single_view=single_view).out_dir
    budget = {"epochs": epochs, "fine_tune_epochs": fine_tune_epochs,
              "fine_tune_learning_rate": fine_tune_learning_rate, "batch_size": batch_size}
    if source:
        source_dir, common = _started_settings(settings, source, **budget)
        config = _started_from(source_dir, common)
    else:
        config = _without_source(weights, {"architecture": architecture,
                                           "label_scheme": label_scheme,
                                           "seed": settings.seed, **budget})
    name = two_view_name(config.architecture, source)
    return {name: train_model(settings, breast_dir, config, name=name, verbose=verbose)}


def evaluation_folder(model_dir: str | Path, data_dir: str | Path) -> Path:
    """The processed folder to score a model on: ``data_dir`` when it holds the model's
    task, else the folder the model was trained on (a run's whole-breast models next to
    its patch models). ``FileNotFoundError`` names the model when neither fits."""
    from mammo_utils.model_card import ModelCard

    card = ModelCard.load(model_dir)
    data_dir = Path(data_dir)
    folder_task = json.loads((data_dir / CONFIG_FILE).read_text(encoding="utf-8")).get("task")
    if folder_task == card.task:
        return data_dir
    manifest = card.data.get("manifest")
    if manifest and (Path(manifest).parent / CONFIG_FILE).is_file():
        return Path(manifest).parent
    raise FileNotFoundError(
        f"{model_dir}: a {card.task} model cannot be scored on the {folder_task} folder "
        f"{data_dir}, and the folder it was trained on is gone"
    )
