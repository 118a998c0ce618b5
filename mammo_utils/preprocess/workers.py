"""Run image jobs in worker processes: each job reads one source image, writes its PNGs
and returns its done record; the parent alone writes records and the manifest.

Parallel runs use one process pool per run. Its workers fork from a forkserver that has
already imported this module (OpenCV, pydicom, NumPy), so a worker starts in
milliseconds instead of re-importing them, and jobs travel in small chunks so the
per-task messaging is paid once per chunk.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import cv2

from mammo_utils.files import atomic_write_bytes
from mammo_utils.preprocess.image_task import cut_image
from mammo_utils.preprocess.job import ImageJob
from mammo_utils.preprocess.manifest import DoneRecord, SourceStamp
from mammo_utils.preprocess.roi_task import cut_roi
from mammo_utils.reader import ImageReadError, read_image

_TASKS = {"image": cut_image, "roi": cut_roi}

#: Chunks per worker when jobs are split: enough to balance uneven images between
#: workers, few enough that messaging stays negligible.
CHUNKS_PER_WORKER = 4
#: Most jobs in one chunk, so an interrupted run loses little finished work.
MAX_CHUNK = 8


def _encode_png(array) -> bytes:
    ok, buffer = cv2.imencode(".png", array)
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    return buffer.tobytes()


def process_job(job: ImageJob) -> DoneRecord:
    """Preprocess one source image; every failure becomes a rejected record, never raised.

    The file is read once: its checksum is taken from the very bytes that are decoded.
    """
    path = Path(job.image_path)

    def rejected(reason: str, stamp: SourceStamp) -> DoneRecord:
        return DoneRecord(
            image_id=job.image_id, source=job.image_path, stamp=stamp,
            inputs_sha256=job.inputs_sha256,
            rejects=[{"source": job.image_path, "reason": reason}], rejected=True,
        )

    try:
        stamp, data = SourceStamp.read(path)
    except OSError as exc:
        return rejected(f"{path}: cannot read the file ({exc.strerror or exc})",
                        SourceStamp("", -1, -1))
    try:
        image, _ = read_image(data, name=str(path))
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
        lesions_not_cut=dict(output.not_cut),
    )


def process_chunk(jobs: Sequence[ImageJob]) -> list[DoneRecord]:
    """:func:`process_job` over a chunk of jobs, in one worker task."""
    return [process_job(job) for job in jobs]


def chunk_jobs(jobs: Sequence[ImageJob], workers: int) -> list[Sequence[ImageJob]]:
    """Split ``jobs`` into consecutive chunks, about :data:`CHUNKS_PER_WORKER` per worker."""
    size = max(1, min(MAX_CHUNK, len(jobs) // (workers * CHUNKS_PER_WORKER)))
    return [jobs[start : start + size] for start in range(0, len(jobs), size)]


def _init_worker() -> None:
    """One OpenCV thread per worker process: parallelism comes from the processes."""
    cv2.setNumThreads(1)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool whose workers fork from a forkserver that has this module imported.

    Workers never fork this process: a fork of a process whose OpenCV (or a notebook
    kernel) already runs threads can deadlock. The forkserver is started once per
    Python process, so later runs in a session (a notebook, the benchmark) reuse it.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, mp_context=context)


def run_jobs(jobs: Sequence[ImageJob], workers: int) -> Iterator[DoneRecord]:
    """Yield the record of each job as its chunk finishes (in the parent with ``workers`` <= 1).

    If the consumer stops early (an error, an interrupt), queued chunks are cancelled and
    only the running ones finish; their PNGs are complete files without a record.
    """
    if workers <= 1 or len(jobs) <= 1:
        yield from map(process_job, jobs)
        return
    executor = worker_pool(min(workers, len(jobs)))
    try:
        futures = [executor.submit(process_chunk, chunk) for chunk in chunk_jobs(jobs, workers)]
        for future in as_completed(futures):
            yield from future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
