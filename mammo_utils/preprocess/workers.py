"""Run image jobs in worker processes: each job reads one source image, writes its PNGs
and returns its done record; the parent alone writes records and the manifest."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import cv2

from mammo_utils.preprocess.image_task import cut_image
from mammo_utils.preprocess.job import ImageJob
from mammo_utils.preprocess.manifest import DoneRecord, SourceStamp, atomic_write_bytes
from mammo_utils.preprocess.roi_task import cut_roi
from mammo_utils.reader import ImageReadError, read_image

_TASKS = {"image": cut_image, "roi": cut_roi}


def _encode_png(array) -> bytes:
    ok, buffer = cv2.imencode(".png", array)
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    return buffer.tobytes()


def process_job(job: ImageJob) -> DoneRecord:
    """Preprocess one source image; every failure becomes a rejected record, never raised.

    The checksum is taken before decoding, so the record names the bytes that were read.
    """
    path = Path(job.image_path)

    def rejected(reason: str, stamp: SourceStamp) -> DoneRecord:
        return DoneRecord(
            image_id=job.image_id, source=job.image_path, stamp=stamp,
            inputs_sha256=job.inputs_sha256,
            rejects=[{"source": job.image_path, "reason": reason}], rejected=True,
        )

    try:
        stamp = SourceStamp.of(path)
    except OSError as exc:
        return rejected(f"{path}: cannot read the file ({exc.strerror or exc})",
                        SourceStamp("", -1, -1))
    try:
        image, _ = read_image(path)
        output = _TASKS[job.config.task](image, job, stamp.sha256)
    except ImageReadError as exc:
        return rejected(str(exc), stamp)
    except (ValueError, cv2.error) as exc:
        return rejected(f"{path}: {exc}", stamp)
    out_dir = Path(job.out_dir)
    for relative, array in output.images.items():
        atomic_write_bytes(out_dir / relative, _encode_png(array))
    return DoneRecord(
        image_id=job.image_id, source=job.image_path, stamp=stamp,
        inputs_sha256=job.inputs_sha256, rows=output.rows, rejects=output.rejects,
    )


def _init_worker() -> None:
    """One OpenCV thread per worker process: parallelism comes from the processes."""
    cv2.setNumThreads(1)


def run_jobs(jobs: Sequence[ImageJob], workers: int) -> Iterator[DoneRecord]:
    """Yield the record of each job as it finishes (in the parent with ``workers`` <= 1).

    If the consumer stops early (an error, an interrupt), queued jobs are cancelled and
    only the running ones finish; their PNGs are complete files without a record.
    """
    if workers <= 1 or len(jobs) <= 1:
        yield from map(process_job, jobs)
        return
    # Workers start from a clean server process, never by forking this one: a fork of a
    # process whose OpenCV (or a notebook kernel) already runs threads can deadlock.
    executor = ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker,
        mp_context=multiprocessing.get_context("forkserver"),
    )
    try:
        futures = [executor.submit(process_job, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
