"""Build what a notebook needs when the earlier stages have not written it yet.

Each notebook reads what the previous stage wrote into the run's workspace, so
papermill runs them in order; each still runs alone on its defaults because its
setup cell asks this module for its inputs, and every ``ensure_*`` function does
only the work that is missing (the stages themselves are resumable).

The synthetic default is keyed by its generation parameters
(``synthetic-p40-s0-small``), so runs with different settings (the test suite's
smoke run, ``make reports``) never overwrite each other's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mammo_utils.workspace import Workspace

#: Sources that are ingested with the CBIS-DDSM adapter.
_CBIS_LAYOUTS = ("synthetic", "cbis-ddsm")


@dataclass(frozen=True)
class DataSettings:
    """The data parameters every notebook shares (its ``parameters`` cell)."""

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
        return self.dataset == "synthetic" and not self.data_root

    @property
    def dataset_key(self) -> str:
        """Folder name of the data under data/raw, data/interim and data/processed."""
        if self.is_synthetic:
            return f"synthetic-p{self.synth_patients}-s{self.synth_seed}-{self.synth_size}"
        return self.dataset

    @property
    def workspace(self) -> Workspace:
        return Workspace(Path(self.project_dir), self.run_name, self.dataset_key)


def ensure_raw(settings: DataSettings) -> Path:
    """The raw data root: the user's ``data_root``, or the synthetic set (generated once)."""
    if not settings.is_synthetic:
        root = Path(settings.data_root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"data_root {root} is not a folder: point it at a {settings.dataset} download "
                "(see README, 'Real data'), or leave it empty for the synthetic default"
            )
        return root
    from mammo_utils.synth import generate_dataset

    root = settings.workspace.synthetic_dir
    generate_dataset(root, patients=settings.synth_patients, seed=settings.synth_seed,
                     size=settings.synth_size, progress=False)
    return root


def ingest_dataset(settings: DataSettings):
    """Ingest the raw data named by ``settings`` and save it to the workspace.

    Returns the :class:`~mammo_utils.ingest.IngestResult`.
    """
    from mammo_utils.ingest import ingest

    root = ensure_raw(settings)
    adapter = "cbis-ddsm" if settings.dataset in _CBIS_LAYOUTS else settings.dataset
    options = {"views": [view for view in settings.views.split(",") if view] or None}
    if adapter == "cbis-ddsm":
        options["cache_path"] = settings.workspace.interim_dir / "dicom_headers.csv"
    result = ingest(adapter, root, val_fraction=settings.val_fraction,
                    test_fraction=settings.test_fraction, seed=settings.seed, **options)
    result.save(settings.workspace.interim_dir)
    return result


def ensure_ingested(settings: DataSettings) -> Path:
    """Path of the run's ``index.csv``, ingesting first when it is missing."""
    index = settings.workspace.interim_dir / "index.csv"
    if not index.is_file():
        ingest_dataset(settings)
    return index


def ensure_processed(
    settings: DataSettings,
    task: str = "roi",
    size: int = 64,
    working_size: tuple[int, int] | list[int] = (320, 256),
    workers: int = 1,
    **config,
) -> Path:
    """The processed folder for ``task`` and ``size``, preprocessing what is missing.

    ``config`` holds further :class:`~mammo_utils.preprocess.PreprocessConfig` fields.
    """
    from mammo_utils.preprocess import PreprocessConfig, run_preprocess

    out_dir = settings.workspace.processed_dir(task, size)
    preprocess_config = PreprocessConfig(task=task, size=size, working_size=tuple(working_size),
                                         seed=settings.seed, **config)
    run_preprocess(ensure_ingested(settings), out_dir, preprocess_config, workers=workers,
                   progress=False)
    return out_dir


def ensure_model(
    settings: DataSettings,
    data_dir: Path,
    architecture: str = "baseline",
    epochs: int = 2,
    batch_size: int = 16,
    label_scheme: str = "four_class",
) -> Path:
    """A trained model folder of the run: the existing one, or a small one trained now."""
    model_dir = settings.workspace.model_dir(architecture)
    if (model_dir / "model_card.json").is_file():
        return model_dir
    from mammo_utils.train import train

    train(data_dir, architecture, "none", epochs=epochs, batch_size=batch_size,
          out_dir=model_dir, label_scheme=label_scheme, seed=settings.seed, verbose=2)
    return model_dir
