"""Preprocessing: source mammograms -> 16-bit PNG crops or patches plus ``manifest.csv``.

``run_preprocess(index, out_dir, config)`` reads an ingest ``index.csv`` (and, for the
``roi`` task, the ``lesions.csv`` beside it), processes each source image in a worker
process and writes, under ``out_dir``: the PNGs (``<label>/<item>.png``, chest wall at
column 0), ``manifest.csv``, ``preprocess_config.json`` and ``rejects.csv``. A rerun
skips every image whose done record matches its source checksum and inputs, so an
interrupted run resumes where it stopped and a finished one costs only a stat per image.

Counts reconcile twice: images in = images done + images rejected, and, for ``roi``,
lesions in = lesions cut + lesions not cut, by reason (``lesion without location``, ...).
The ``breast`` task writes every view as ``image`` does and then pairs CC and MLO into
one manifest row per breast (:mod:`mammo_utils.preprocess.breast_task`); its counts
reconcile breasts (in = paired + single view duplicated + excluded) and views (done =
paired + unpaired, by reason).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from mammo_utils.files import atomic_write_csv, atomic_write_text, sha256_file
from mammo_utils.ingest import LESIONS_FILE, REJECTS_FILE
from mammo_utils.preprocess.breast_task import BREAST_COLUMNS, breast_summary, pair_views
from mammo_utils.preprocess.config import PreprocessConfig, parse_working_size
from mammo_utils.preprocess.job import ImageJob
from mammo_utils.preprocess.lock import FolderLock, FolderLockedError
from mammo_utils.preprocess.manifest import (
    REJECT_COLUMNS,
    DoneRecord,
    DoneStore,
    manifest_columns,
    remove_partial_files,
    sha256_json,
)
from mammo_utils.preprocess.roi_task import UNLOCATED, lesions_by_image
from mammo_utils.preprocess.workers import run_jobs
from mammo_utils.splits import assert_no_patient_leakage

__all__ = [
    "FolderLock",
    "FolderLockedError",
    "PreprocessConfig",
    "PreprocessResult",
    "parse_working_size",
    "run_preprocess",
]

INDEX_COLUMNS: tuple[str, ...] = (
    "image_id", "patient_id", "dataset", "split", "label", "image_path",
)
#: Further index columns the ``breast`` task pairs views by.
BREAST_INDEX_COLUMNS: tuple[str, ...] = ("laterality", "view")
#: The files a run writes into its processed folder (besides ingest's ``REJECTS_FILE``);
#: readers take the names from here.
MANIFEST_FILE = "manifest.csv"
CONFIG_FILE = "preprocess_config.json"
#: Reason counted for the lesions of an image that was rejected as a whole.
IMAGE_REJECTED = "image rejected"


@dataclass(frozen=True)
class PreprocessResult:
    """What a run left in ``out_dir`` and how the source images were accounted for.

    ``images_in == images_done + images_rejected``; ``images_processed`` of them were
    (re)done by this run, the others were resumed from earlier runs. For the ``roi``
    task, ``lesions_in == lesions_cut + sum(lesions_not_cut.values())``: the lesions of
    the indexed images, those with patches in the manifest, and the others by reason;
    ``normal_withheld`` images gave no NORMAL patch because a lesion could not be located.
    For the ``breast`` task, ``breasts`` holds the pairing counts (see
    :func:`~mammo_utils.preprocess.breast_task.pair_views`) and ``manifest`` one row per
    breast.
    """

    out_dir: Path
    manifest: pd.DataFrame
    rejects: pd.DataFrame
    images_in: int
    images_done: int
    images_rejected: int
    images_processed: int
    lesions_in: int = 0
    lesions_cut: int = 0
    lesions_not_cut: dict[str, int] = field(default_factory=dict)
    normal_withheld: int = 0
    breasts: dict = field(default_factory=dict)

    @property
    def images_skipped(self) -> int:
        return self.images_in - self.images_processed

    def summary(self) -> str:
        """Lines of counts for logs and the command line."""
        lines = [
            f"{self.images_in} images in: {self.images_done} done, "
            f"{self.images_rejected} rejected ({self.images_processed} processed now, "
            f"{self.images_skipped} resumed); {len(self.manifest)} outputs, "
            f"{len(self.rejects)} rejects -> {self.out_dir}"
        ]
        if self.lesions_in:
            reasons = "".join(
                f", {count} {reason}" for reason, count in sorted(self.lesions_not_cut.items())
            )
            lines.append(f"{self.lesions_in} lesions in: {self.lesions_cut} cut{reasons}")
        if self.breasts:
            lines.append(breast_summary(self.breasts))
        if self.normal_withheld:
            lines.append(
                f"no NORMAL patch cut from {self.normal_withheld} image(s) with a lesion "
                "of unknown location"
            )
        return "\n".join(lines)


def read_index(path: Path, task: str = "image") -> pd.DataFrame:
    """An ingest ``index.csv`` as strings, checked for the columns (the ``breast`` task
    also needs laterality and view) and unique image ids."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        cause = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else "not a CSV table"
        raise ValueError(f"{path}: cannot read the index: {cause}") from None
    needed = INDEX_COLUMNS + (BREAST_INDEX_COLUMNS if task == "breast" else ())
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: index is missing the column(s) {', '.join(missing)}")
    duplicated = frame["image_id"][frame["image_id"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"{path}: image_id not unique: {', '.join(duplicated[:5])}")
    return frame


def _read_lesions(path: Path | None, index_path: Path, task: str) -> pd.DataFrame:
    if task != "roi":
        return pd.DataFrame(columns=["image_id"])
    path = index_path.parent / LESIONS_FILE if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {LESIONS_FILE} not found (the roi task needs it)")
    return pd.read_csv(path, dtype={"image_id": str, "abnormality_id": str, "mask_path": str})


def _check_resumable(out_dir: Path, config: PreprocessConfig) -> None:
    """Refuse to mix outputs of different settings in one folder."""
    path = out_dir / CONFIG_FILE
    if not path.is_file():
        return
    previous = json.loads(path.read_text(encoding="utf-8"))
    current = config.output_settings()
    changed = sorted(key for key in current if previous.get(key) != current[key])
    if changed:
        raise ValueError(
            f"{out_dir} holds outputs made with other settings ({', '.join(changed)}); "
            "choose another output folder or delete it"
        )


def _plan(
    index: pd.DataFrame, lesions: dict, config: PreprocessConfig, out_dir: Path,
    store: DoneStore,
) -> tuple[dict[str, DoneRecord], list[ImageJob]]:
    """Split the index into images with a current done record and jobs to run."""
    finished: dict[str, DoneRecord] = {}
    jobs: list[ImageJob] = []
    for row in index.to_dict("records"):
        image_id = row["image_id"]
        image_lesions = lesions.get(image_id, ())
        inputs = sha256_json({"index": row, "lesions": image_lesions})
        record = store.load(image_id)
        if record is not None and store.is_current(record, Path(row["image_path"]), inputs):
            finished[image_id] = record
            continue
        if record is not None:
            store.discard_outputs(record)
        jobs.append(ImageJob(
            image_id=image_id, image_path=row["image_path"], index_row=row,
            lesions=image_lesions, config=config, out_dir=str(out_dir), inputs_sha256=inputs,
        ))
    return finished, jobs


def _check_unique_outputs(manifest: pd.DataFrame) -> None:
    """Raise ``AssertionError`` when two manifest rows share one file: output names are
    unique by construction (``safe_name``), so a clash is a fault of the task code."""
    shared = manifest[manifest["path"].duplicated(keep=False)]
    if not shared.empty:
        first = shared.iloc[0]
        owners = shared.loc[shared["path"] == first["path"], "image_id"].tolist()
        raise AssertionError(
            f"output {first['path']} written for several items (images {', '.join(owners)})"
        )


def _lesion_counts(
    frame: pd.DataFrame, lesions: dict, records: list[DoneRecord], manifest: pd.DataFrame
) -> dict:
    """Lesions in, cut and not cut (by reason), each counted on its own, and the images
    whose NORMAL patches were withheld; raises ``AssertionError`` naming the counts when
    in != cut + not cut (a fault of the task code: a lesion vanished or was counted twice).
    """
    lesions_in = sum(len(lesions.get(image_id, ())) for image_id in frame["image_id"])
    if "kind" in manifest.columns:
        cut = manifest.loc[manifest["kind"] == "lesion", ["image_id", "abnormality_id"]]
        lesions_cut = len(cut.drop_duplicates())
    else:
        lesions_cut = 0
    not_cut: Counter = Counter()
    for record in records:
        if record.rejected:
            not_cut[IMAGE_REJECTED] += len(lesions.get(record.image_id, ()))
        else:
            not_cut.update(record.lesions_not_cut)
    not_cut = +not_cut  # drop zero counts
    if lesions_in != lesions_cut + sum(not_cut.values()):
        raise AssertionError(
            f"lesion counts do not reconcile: {lesions_in} in, {lesions_cut} cut, "
            f"{sum(not_cut.values())} not cut ({dict(not_cut)})"
        )
    withheld = sum(
        not record.rejected and any(record.lesions_not_cut.get(reason) for reason in UNLOCATED)
        for record in records
    )
    return {"lesions_in": lesions_in, "lesions_cut": lesions_cut,
            "lesions_not_cut": dict(not_cut), "normal_withheld": withheld}


def run_preprocess(
    index: str | Path,
    out_dir: str | Path,
    config: PreprocessConfig | None = None,
    *,
    lesions: str | Path | None = None,
    workers: int = 1,
    on_image_done: Callable[[DoneRecord], None] | None = None,
    progress: bool = True,
    wait_for_lock: bool = False,
) -> PreprocessResult:
    """Preprocess every image of an ingest index into ``out_dir`` (resumable).

    ``lesions`` defaults to the ``lesions.csv`` beside the index (``roi`` task only).
    ``workers`` > 1 runs images in that many processes. ``on_image_done`` is called in
    this process after each image's record is stored (progress hooks; tests use it to
    interrupt a run). One run at a time writes ``out_dir`` (:class:`FolderLock`): another
    run's folder raises :class:`FolderLockedError` naming its process id, or, with
    ``wait_for_lock``, is waited for. Raises ``ValueError`` for a malformed index, for
    ``out_dir`` holding outputs of other settings, and ``PatientLeakageError`` when a
    patient is in several splits; a failing image is only rejected.
    """
    config = config or PreprocessConfig()
    index_path, out_dir = Path(index), Path(out_dir)
    frame = read_index(index_path, config.task)
    by_image = lesions_by_image(_read_lesions(lesions, index_path, config.task))
    out_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(out_dir, wait=wait_for_lock):
        return _run_locked(frame, index_path, by_image, out_dir, config, workers,
                           on_image_done, progress)


def _run_locked(
    frame: pd.DataFrame, index_path: Path, by_image: dict, out_dir: Path,
    config: PreprocessConfig, workers: int,
    on_image_done: Callable[[DoneRecord], None] | None, progress: bool,
) -> PreprocessResult:
    """The body of :func:`run_preprocess`, run while this process holds the folder."""
    _check_resumable(out_dir, config)
    settings = config.to_json_dict(
        index_sha256=sha256_file(index_path), datasets=sorted(frame["dataset"].unique()),
    )
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(settings, indent=2) + "\n")
    remove_partial_files(out_dir)
    store = DoneStore(out_dir)
    records, jobs = _plan(frame, by_image, config, out_dir, store)
    for record in tqdm(run_jobs(jobs, workers), total=len(jobs), unit="image",
                       desc=f"preprocess {config.task}-{config.size}", disable=not progress):
        store.save(record)
        records[record.image_id] = record
        if on_image_done is not None:
            on_image_done(record)
    ordered = [records[image_id] for image_id in frame["image_id"]]
    manifest = pd.DataFrame(
        [row for record in ordered for row in record.rows], columns=manifest_columns(config.task)
    )
    reject_rows = [reject for record in ordered for reject in record.rejects]
    assert_no_patient_leakage(manifest)
    _check_unique_outputs(manifest)
    lesion_counts = _lesion_counts(frame, by_image, ordered, manifest)
    breast_counts = {}
    if config.task == "breast":
        manifest, unpaired, breast_counts = _pair(manifest, frame, config.single_view)
        reject_rows += unpaired
    rejects = pd.DataFrame(reject_rows, columns=REJECT_COLUMNS)
    atomic_write_csv(out_dir / REJECTS_FILE, rejects)
    atomic_write_csv(out_dir / MANIFEST_FILE, manifest)
    rejected = sum(record.rejected for record in ordered)
    return PreprocessResult(
        out_dir=out_dir, manifest=manifest, rejects=rejects, images_in=len(ordered),
        images_done=len(ordered) - rejected, images_rejected=rejected,
        images_processed=len(jobs), breasts=breast_counts, **lesion_counts,
    )


def _pair(views: pd.DataFrame, index: pd.DataFrame, single_view: str):
    """The ``breast`` manifest from the written views and the index's laterality and view."""
    sides = index[["image_id", "laterality", "view", "image_path"]]
    views = views.merge(sides, on="image_id", how="left", validate="one_to_one")
    breasts, rejects, counts = pair_views(views, single_view)
    assert_no_patient_leakage(breasts)
    return breasts[list(BREAST_COLUMNS)], rejects, counts
