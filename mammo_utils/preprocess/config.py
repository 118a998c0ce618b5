"""Settings of one preprocessing run, stored as ``preprocess_config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

TASKS: tuple[str, ...] = ("roi", "image", "breast")

#: What the ``breast`` task does with a breast that has one view only: leave it out
#: (counted and rejected), or give its one view as both CC and MLO.
SINGLE_VIEW_OPTIONS: tuple[str, ...] = ("exclude", "duplicate")

#: Settings that decide the bytes of every output: a resumed run must share them.
OUTPUT_SETTINGS: tuple[str, ...] = (
    "task", "size", "working_size", "normal_per_image", "patches_per_lesion", "jitter", "seed",
    "min_breast_fraction",
)

#: Largest working-resolution side: well above any mammogram's, far below what would
#: allocate gigabytes per image.
MAX_WORKING_SIDE = 8192


@dataclass(frozen=True)
class PreprocessConfig:
    """What to cut from each mammogram and at which scale.

    ``task`` ``image``: the whole breast crop padded to a square and resized to ``size``.
    ``task`` ``breast``: every view written as the ``image`` task writes it (one canvas
    for all), then the CC and MLO of each breast (patient and laterality) paired into
    one manifest row; ``single_view`` (:data:`SINGLE_VIEW_OPTIONS`) says what happens to
    a breast with one view, and is recorded for the model and inference.
    ``task`` ``roi``: the crop fitted to ``working_size`` ``(height, width)``, then
    ``patches_per_lesion`` patches of ``size`` x ``size`` centred on each abnormality, each
    shifted by its own draw of up to ``jitter`` working pixels (``None`` means ``size // 8``;
    several jittered views of a lesion multiply the scarce lesion examples, and all of them
    stay in the lesion's split; the default 4 turned the 224-pixel recipe from chance to
    learning, README "Training at the real working scale"), and ``normal_per_image`` NORMAL patches
    at least ``min_breast_fraction`` breast that overlap no abnormality. ``seed`` fixes
    every random draw, per image, so results do not depend on worker scheduling.
    """

    task: str = "roi"
    size: int = 224
    working_size: tuple[int, int] = (1152, 896)
    normal_per_image: int = 2
    patches_per_lesion: int = 4
    jitter: int | None = None
    seed: int = 0
    min_breast_fraction: float = 0.7
    single_view: str = "exclude"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.single_view not in SINGLE_VIEW_OPTIONS:
            raise ValueError(
                f"unknown single_view option {self.single_view!r}; choose one of "
                f"{', '.join(SINGLE_VIEW_OPTIONS)}"
            )
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        height, width = (int(value) for value in self.working_size)
        object.__setattr__(self, "working_size", (height, width))
        if not (0 < height <= MAX_WORKING_SIDE and 0 < width <= MAX_WORKING_SIDE):
            raise ValueError(
                f"working size {height}x{width}: each side must be in "
                f"[1, {MAX_WORKING_SIDE}] pixels"
            )
        if self.task == "roi" and min(height, width) < self.size:
            raise ValueError(
                f"working size {height}x{width} is smaller than the {self.size} pixel patch"
            )
        if self.normal_per_image < 0:
            raise ValueError(f"normal_per_image must be >= 0, got {self.normal_per_image}")
        if self.patches_per_lesion < 1:
            raise ValueError(f"patches_per_lesion must be >= 1, got {self.patches_per_lesion}")
        if not 0.0 <= self.min_breast_fraction <= 1.0:
            raise ValueError(
                f"min_breast_fraction must be in [0, 1], got {self.min_breast_fraction}"
            )
        jitter = self.size // 8 if self.jitter is None else int(self.jitter)
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {jitter}")
        object.__setattr__(self, "jitter", jitter)

    def output_settings(self) -> dict:
        """The settings a resumed run must match, as JSON-ready values (``single_view``
        only for the ``breast`` task, so other tasks' folders keep their settings)."""
        values = asdict(self)
        values["working_size"] = list(self.working_size)
        keys = OUTPUT_SETTINGS + (("single_view",) if self.task == "breast" else ())
        return {key: values[key] for key in keys}

    def to_json_dict(self, *, index_sha256: str, datasets: list[str]) -> dict:
        """The ``preprocess_config.json`` content (see docs/architecture.md)."""
        return {**self.output_settings(), "index_sha256": index_sha256, "datasets": datasets}


def parse_working_size(text: str) -> tuple[int, int]:
    """``"1152x896"`` -> ``(1152, 896)`` (height x width)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"working size {text!r} is not HEIGHTxWIDTH, e.g. 1152x896") from None
    return height, width
