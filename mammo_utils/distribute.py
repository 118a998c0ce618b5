"""One training spread over devices and machines with ``tf.distribute``.

:func:`choose_strategy` turns a :data:`~mammo_utils.training_config.DISTRIBUTE_MODES`
value into a strategy: the default strategy on one device, ``MirroredStrategy`` over the
GPUs (or the logical CPU devices :func:`split_cpu` configured) of one machine,
``MultiWorkerMirroredStrategy`` over the processes ``TF_CONFIG`` lists. Every replica
takes ``batch_size`` examples a step, so a step takes ``batch_size`` times the replicas.

:class:`Placement` says where this process stands: which worker of how many, and
whether it is the chief, the one worker that writes the model directory (the others
train in a temporary folder, :meth:`Placement.work_dir`, removed when they finish).
:func:`training_data` gives each worker its own share of the manifest's rows
(:func:`mammo_utils.pipeline.shard_rows`): the data are sharded explicitly, by row, not
by file or by TensorFlow's automatic policy.

Strategies must be made before TensorFlow starts its devices (:func:`split_cpu` too):
:func:`mammo_utils.train.train` makes one right after seeding, before reading data.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from mammo_utils.training_config import DISTRIBUTE_MODES

#: The environment variable that describes the cluster of a ``multi-worker`` run.
CLUSTER_VARIABLE = "TF_CONFIG"


def split_cpu(devices: int) -> None:
    """Present the CPU as ``devices`` logical devices, so ``mirrored`` runs on a machine
    without GPUs (tests, benchmarks, trying a cluster setting on a laptop).

    Must run before TensorFlow starts its devices; ``RuntimeError`` saying so otherwise.
    """
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be an integer >= 1, got {devices!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
        )
    except RuntimeError as error:
        raise RuntimeError(
            f"cannot split the CPU into {devices} devices: TensorFlow has already started "
            f"its devices in this process ({error})"
        ) from None


def choose_strategy(mode: str = "auto") -> tf.distribute.Strategy:
    """The strategy ``mode`` names (see :data:`DISTRIBUTE_MODES`).

    ``auto``: ``MirroredStrategy`` when several GPUs are visible, else the default
    strategy; ``none``: the default strategy; ``mirrored``: every visible GPU, or every
    logical CPU device when there is no GPU; ``multi-worker``: the cluster in
    ``TF_CONFIG`` (``ValueError`` when it is not set).
    """
    if mode not in DISTRIBUTE_MODES:
        raise ValueError(f"distribute must be one of {', '.join(DISTRIBUTE_MODES)}, "
                         f"got {mode!r}")
    if mode == "multi-worker":  # before anything starts TensorFlow's devices
        if not os.environ.get(CLUSTER_VARIABLE):
            raise ValueError(
                f"distribute 'multi-worker' needs the cluster in {CLUSTER_VARIABLE} (see "
                "README, 'Training on several GPUs or machines')"
            )
        _check_cluster(os.environ[CLUSTER_VARIABLE])
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if mode == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if mode == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _check_cluster(text: str) -> None:
    """Refuse a ``TF_CONFIG`` that is not JSON or lacks ``cluster`` or ``task``."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{CLUSTER_VARIABLE} is not JSON: {error}") from None
    missing = [key for key in ("cluster", "task") if not isinstance(config.get(key), dict)]
    if missing:
        raise ValueError(f"{CLUSTER_VARIABLE} lacks {' and '.join(missing)}")


@dataclass(frozen=True)
class Placement:
    """This process's place in a training: worker ``worker`` of ``workers``, chief or not,
    with ``replicas`` in all (``replicas // workers`` of them here)."""

    strategy: tf.distribute.Strategy
    worker: int = 0
    workers: int = 1
    chief: bool = True

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def local_replicas(self) -> int:
        return self.replicas // self.workers

    @property
    def distributed(self) -> bool:
        """Whether batches are split over several replicas (or workers)."""
        return self.replicas > 1 or self.workers > 1

    def work_dir(self, out_dir: Path) -> Path:
        """Where this process writes while training: ``out_dir`` for the chief, a hidden
        folder inside it for another worker (:meth:`clean_up` removes it)."""
        return out_dir if self.chief else out_dir / f".worker-{self.worker}"

    def clean_up(self, out_dir: Path) -> None:
        """Remove a non-chief worker's folder, and ``out_dir`` itself if that leaves it
        empty; the chief's output is never touched."""
        if self.chief:
            return
        shutil.rmtree(self.work_dir(out_dir), ignore_errors=True)
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()


def placement(strategy: tf.distribute.Strategy) -> Placement:
    """Where this process stands under ``strategy``: one worker, the chief, unless the
    strategy is multi-worker, whose cluster (from ``TF_CONFIG``) says. A cluster with a
    ``chief`` task makes it worker 0; without one, worker 0 is the chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return Placement(strategy)
    has_chief = "chief" in cluster
    workers = len(cluster.get("worker", [])) + int(has_chief)
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    if task_type == "chief":
        return Placement(strategy, worker=0, workers=workers, chief=True)
    if task_type != "worker":
        raise ValueError(f"{CLUSTER_VARIABLE}: task type {task_type!r} cannot train; use "
                         "'chief' or 'worker'")
    worker = task_id + int(has_chief)
    return Placement(strategy, worker=worker, workers=workers,
                     chief=not has_chief and task_id == 0)


def training_data(where: Placement,
                  make: Callable[[tuple[int, int]], tf.data.Dataset]):
    """The training stream for ``where``: ``make(shard)`` builds one worker's pipeline of
    per-replica batches from its ``shard = (worker, workers)`` of the rows.

    On one device it is ``make((0, 1))`` itself; otherwise one pipeline per worker
    (``distribute_datasets_from_function``) whose consecutive batches go to the worker's
    replicas in turn, so a step over ``n`` replicas of one worker takes the examples one
    device would take with an ``n`` times larger batch.
    """
    if not where.distributed:
        return make((0, 1))

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make((context.input_pipeline_id, context.num_input_pipelines))

    return where.strategy.distribute_datasets_from_function(per_worker)


def synchronize_batch_norm(model: keras.Model) -> int:
    """Make every batch normalisation layer of ``model`` take its batch statistics over
    all replicas of a step, as one device would over the global batch (each replica's
    few examples alone would give other statistics, and other training). Returns how
    many layers it changed; frozen layers (a pretrained backbone's) use their moving
    statistics either way."""
    changed = 0
    for layer in _nested_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            changed += 1
    return changed


def _nested_layers(model: keras.Model):
    """Every layer of ``model``, those of nested models (a backbone) included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _nested_layers(layer)


def fit_without_symbolic_build(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Let Keras fit and evaluate ``model`` (already built) under
    ``MultiWorkerMirroredStrategy``, which Keras 3 cannot on its own
    (keras-team/keras#20585); other strategies are left alone.

    Two steps of Keras fail there: it peeks at the first batch and reduces it across
    replicas, refused for a batch of several tensors (a model that forgets the strategy
    it was made under skips the peek and takes the strategy from the scope it is fitted
    in: call ``fit``, ``evaluate`` and ``predict`` inside ``strategy.scope()``); and it
    averages each step's logs across workers along an axis that scalars lack (each log
    is given one, of length 1).
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    model._distribute_strategy = None
    train_step, test_step = model.train_step, model.test_step
    model.train_step = lambda data: _as_vectors(train_step(data))
    model.test_step = lambda data: _as_vectors(test_step(data))


def _as_vectors(logs: dict) -> dict:
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def evaluation_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """A finite dataset of global batches that every worker reads whole: no automatic
    sharding, each worker's replicas take their part of each global batch, so validation
    sees every example once and predictions come back in the manifest's order."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)
