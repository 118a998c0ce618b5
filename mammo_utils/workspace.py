"""Where each stage reads and writes: one object, so notebooks, the CLI and the
report runner agree on every path.

Layout under the project folder (all generated, all git-ignored)::

    data/raw/<dataset>/                         raw data; the synthetic default is generated here
    data/interim/<dataset>/                     index.csv, lesions.csv, rejects.csv
    data/processed/<dataset>/<task>-<size>[-HxW]/  PNGs, manifest.csv, preprocess_config.json
    models/<run>/<model>/                       model.keras, model_card.json, history.csv
    reports/<run>/                              executed notebooks, HTML, figures/, metrics/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    """Paths of one run. ``dataset`` names the ingested source (``synthetic``,
    ``cbis-ddsm``, ``mias``, ``folder`` or a combination such as ``cbis-ddsm+mias``)."""

    project_dir: Path = Path(".")
    run_name: str = "default"
    dataset: str = "synthetic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "project_dir", Path(self.project_dir).resolve())

    @property
    def synthetic_dir(self) -> Path:
        """Root of the generated synthetic data set (CBIS-DDSM layout) of this dataset key."""
        return self.project_dir / "data" / "raw" / self.dataset

    @property
    def interim_dir(self) -> Path:
        """Ingest output: index.csv, lesions.csv, rejects.csv."""
        return self.project_dir / "data" / "interim" / self.dataset

    def processed_dir(
        self, task: str, size: int, working_size: tuple[int, int] | list[int] | None = None
    ) -> Path:
        """Preprocess output for one task and patch or image size (``roi-64-640x512``:
        a ``roi`` folder also names its working resolution, since patches of one size
        cut at two scales are different data)."""
        name = f"{task}-{size}"
        if working_size is not None:
            name += "-{}x{}".format(*working_size)
        return self.project_dir / "data" / "processed" / self.dataset / name

    @property
    def models_dir(self) -> Path:
        """Folder holding one sub-folder per trained model of this run."""
        return self.project_dir / "models" / self.run_name

    def model_dir(self, model_name: str) -> Path:
        """Folder of one trained model: model.keras, model_card.json, history.csv."""
        return self.models_dir / model_name

    @property
    def reports_dir(self) -> Path:
        """Folder of this run's reports."""
        return self.project_dir / "reports" / self.run_name

    @property
    def figures_dir(self) -> Path:
        return self.reports_dir / "figures"

    @property
    def metrics_dir(self) -> Path:
        return self.reports_dir / "metrics"


def whole_image_names(architecture: str, source: str) -> tuple[str, str]:
    """Model folder names of a whole-breast model trained without a patch model
    (``<architecture>-image``) and of the same one started from the run's patch model
    ``source`` (``<architecture>-image-from-<source>``)."""
    return f"{architecture}-image", f"{architecture}-image-from-{source}"


def two_view_name(architecture: str, source: str = "") -> str:
    """Model folder name of a two-view (``breast``) model: ``<architecture>-two-view``,
    or ``<architecture>-two-view-from-<source>`` when it starts from the run's model
    ``source`` (a patch model or a whole-breast one)."""
    return f"{architecture}-two-view" + (f"-from-{source}" if source else "")
