"""Run image jobs in worker processes: each job reads one source image, writes its PNGs
and returns its done record; the parent alone writes records and the manifest.

Parallel runs use one process pool per run. Its workers fork from a forkserver that has
already imported this module (OpenCV, pydicom, NumPy), so a worker starts in
milliseconds instead of re-importing them, and jobs travel in small chunks so the
per-task messaging is paid once per chunk.

Workers never outlive their run: when the run stops early (an error, Ctrl-C, SIGTERM
turned into an interrupt by the command line) the parent terminates them, and when the
parent is killed outright each worker sees the end of its *lifeline*, a pipe whose only
writing end the parent holds, and exits. (The forkserver cannot be relied on for this:
every worker holds the descriptor that keeps it alive.) Workers ignore Ctrl-C, which the
terminal sends to the whole process group: the parent alone decides how the run ends.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing.connection import Connection
from pathlib import Path

import cv2

from mammo_utils.files import atomic_write_bytes
from mammo_utils.preprocess.image_task import cut_image
from mammo_utils.preprocess.job import ImageJob
from mammo_utils.preprocess.manifest import DoneRecord, SourceStamp
from mammo_utils.preprocess.roi_task import cut_roi
from mammo_utils.reader import ImageReadError, read_image

#: How each task cuts one source image (the ``breast`` task writes each view as the
#: ``image`` task does, and pairs the views afterwards).
_TASKS = {"image": cut_image, "roi": cut_roi, "breast": cut_image}

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


def _init_worker(lifeline: Connection | None = None) -> None:
    """One OpenCV thread per worker process (parallelism comes from the processes), Ctrl-C
    left to the parent, and with a ``lifeline`` a watchdog ending the worker with it."""
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if lifeline is not None:
        threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True,
                         name="lifeline").start()


def _exit_with_parent(lifeline: Connection) -> None:
    """Block on the lifeline (the parent never writes to it); its end means the parent is
    gone, even by SIGKILL, and nobody will collect this worker's results: exit at once."""
    try:
        lifeline.recv()
    except (EOFError, OSError):
        pass
    os._exit(1)


def worker_pool(workers: int, lifeline: Connection | None = None) -> ProcessPoolExecutor:
    """A pool whose workers fork from a forkserver that has this module imported.

    Workers never fork this process: a fork of a process whose OpenCV (or a notebook
    kernel) already runs threads can deadlock. The forkserver is started once per
    Python process, so later runs in a session (a notebook, the benchmark) reuse it.
    ``lifeline``: the reading end of a pipe whose writing end only the caller holds;
    each worker exits when it closes (see :func:`run_jobs`).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                               initargs=(lifeline,), mp_context=context)


def run_jobs(jobs: Sequence[ImageJob], workers: int) -> Iterator[DoneRecord]:
    """Yield the record of each job as its chunk finishes (in the parent with ``workers`` <= 1).

    If the consumer stops early (an error, an interrupt), queued chunks are cancelled and
    the workers are terminated; what they were writing is left as ``.partial`` files,
    which the next run removes before it resumes.
    """
    if workers <= 1 or len(jobs) <= 1:
        yield from map(process_job, jobs)
        return
    before = set(multiprocessing.active_children())
    lifeline, keep_alive = multiprocessing.get_context("forkserver").Pipe(duplex=False)
    executor = worker_pool(min(workers, len(jobs)), lifeline)
    pool: set = set()
    try:
        futures = [executor.submit(process_chunk, chunk) for chunk in chunk_jobs(jobs, workers)]
        pool = set(multiprocessing.active_children()) - before
        for future in as_completed(futures):
            yield from future.result()
    except BaseException:  # GeneratorExit and KeyboardInterrupt included
        for process in pool:
            process.terminate()
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        keep_alive.close()
        lifeline.close()
