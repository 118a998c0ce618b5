"""Distributed training and resuming a killed training (issue 16).

The slow tests run ``mammo train`` in fresh processes, as a user or a cluster would:
logical CPU devices and ``TF_CONFIG`` must be set before TensorFlow starts its devices,
and a killed training needs a process to kill. Each trains the baseline on 16 patches
of 16x16 pixels (8 for validation) for a few epochs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from fixtures_training import write_known_answer_dataset

from mammo_utils import pipeline
from mammo_utils.cli import build_parser
from mammo_utils.cli.train import training_config
from mammo_utils.model_card import CARD_FILE, HISTORY_FILE, MODEL_FILE
from mammo_utils.resume import BACKUP_DIR, BACKUP_FILE, Backup, Position, ResumeRefused
from mammo_utils.training_config import TrainingConfig

REPO = Path(__file__).resolve().parents[1]

#: Mirrored over two devices against one device on the same global batch: the same
#: examples in the same steps, batch statistics taken over the global batch, the
#: gradients of two halves summed rather than of the whole. Agreement is to float32
#: rounding (seen: 1e-7 relative); this leaves room for other CPUs' summation order.
MIRRORED_LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """16 train and 8 validation patches of 16x16 pixels (4 classes)."""
    return write_known_answer_dataset(tmp_path_factory.mktemp("distribute_data"),
                                      {"train": 4, "val": 2, "test": 1}, size=16)


def _env(**extra: str) -> dict:
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": python_path, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _train(data: Path, out: Path, *options: str, **env: str) -> subprocess.Popen:
    """``mammo train`` on ``data`` into ``out`` in a new process (output in out.log)."""
    with open(out.parent / f"{out.name}.log", "w") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "mammo_utils", "train", "--data", str(data), "--out",
             str(out), *options], env=_env(**env), stdout=log, stderr=subprocess.STDOUT,
        )


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for ``process``; return its log, failing with it when the exit is not 0."""
    process.wait(timeout=timeout)
    log = Path(process.args[process.args.index("--out") + 1] + ".log").read_text()
    assert process.returncode == 0, log[-3000:]
    return log


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


# --- fast: settings, sharding, the stream, the backup ------------------------------------


def test_distribute_is_checked_and_reaches_the_config():
    with pytest.raises(ValueError, match="distribute must be one of auto, none, mirrored"):
        TrainingConfig(distribute="horovod")
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o",
                                      "--distribute", "multi-worker", "--cpu-devices", "2"])
    assert training_config(args).distribute == "multi-worker"
    assert args.cpu_devices == 2
    assert TrainingConfig().to_dict()["distribute"] == "auto"


def test_multi_worker_without_a_cluster_says_so(monkeypatch):
    from mammo_utils.distribute import choose_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        choose_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(ValueError, match="TF_CONFIG lacks task"):
        choose_strategy("multi-worker")


def test_shards_are_disjoint_and_together_every_row():
    rows = pd.DataFrame({"item": range(11)})
    shards = [pipeline.shard_rows(rows, (index, 3)) for index in range(3)]
    items = sorted(item for shard in shards for item in shard["item"])
    assert items == list(range(11))
    assert [len(shard) for shard in shards] == [4, 4, 3]
    with pytest.raises(ValueError, match="shard"):
        pipeline.shard_rows(rows, (3, 3))


def _labels(dataset, batches: int) -> list[list[int]]:
    iterator = iter(dataset)
    return [next(iterator)[1].numpy().tolist() for _ in range(batches)]


def test_training_stream_ignores_earlier_iterators_and_starts_where_asked(tiny_data):
    """The order of each pass is the seed's and the pass's alone (an iterator made and
    dropped before changes nothing), and ``start`` skips exactly that many examples."""
    def stream(start=0):
        return pipeline.make_dataset(tiny_data, "train", batch_size=4, seed=3, start=start,
                                     augmentation=pipeline.Augmentation.none())

    dataset = stream()
    reference = _labels(dataset, 10)  # 40 examples: two and a half passes of 16
    assert _labels(dataset, 10) == reference
    assert _labels(stream(), 10) == reference
    assert reference[:4] != reference[4:8]  # each pass in its own order
    assert _labels(stream(start=12), 7) == reference[3:]


def test_class_weights_travel_with_the_examples(tiny_data):
    weights = {0: 0.5, 1: 1.0, 2: 2.0, 3: 4.0}
    images, labels, sample_weights = next(iter(pipeline.make_dataset(
        tiny_data, "train", batch_size=8, class_weight=weights)))
    assert sample_weights.numpy().tolist() == [weights[label] for label in labels.numpy()]


def test_a_backup_of_other_settings_is_refused_naming_each_change(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    fingerprint = {"settings": {"learning_rate": 0.001, "epochs": 4}, "manifest_sha256": "a"}
    Backup(tmp_path, fingerprint).save(Position(epochs=1), model, {})
    assert (tmp_path / BACKUP_DIR / BACKUP_FILE).is_file()
    changed = {"settings": {"learning_rate": 0.002, "epochs": 4}, "manifest_sha256": "b"}
    with pytest.raises(ResumeRefused) as refused:
        Backup(tmp_path, changed).load()
    message = str(refused.value)
    assert "settings.learning_rate: backup 0.001, now 0.002" in message
    assert "manifest_sha256: backup 'a', now 'b'" in message
    assert str(tmp_path / BACKUP_DIR) in message  # what to delete to start over
    assert Backup(tmp_path, fingerprint).load().epochs == 1


# --- slow: the three trainings of the issue ----------------------------------------------


@pytest.mark.slow
def test_mirrored_over_two_devices_follows_one_device(tiny_data, tmp_path):
    """Two logical CPU devices with 4 examples each against one device with 8: the same
    loss curve within MIRRORED_LOSS_RTOL (dropout off: each replica draws its own mask)."""
    common = ("--epochs", "2", "--dropout", "0")
    one = _train(tiny_data, tmp_path / "one", "--batch-size", "8", "--distribute", "none",
                 *common)
    two = _train(tiny_data, tmp_path / "two", "--batch-size", "4", "--distribute",
                 "mirrored", "--cpu-devices", "2", *common)
    _finish(one)
    _finish(two)
    curves = [pd.read_csv(tmp_path / name / HISTORY_FILE) for name in ("one", "two")]
    for column in ("loss", "val_loss"):
        np.testing.assert_allclose(curves[1][column], curves[0][column],
                                   rtol=MIRRORED_LOSS_RTOL)
    training = json.loads((tmp_path / "two" / CARD_FILE).read_text())["training"]
    assert training["strategy"] == "MirroredStrategy"
    assert (training["replicas"], training["workers"]) == (2, 1)
    assert (training["batch_size"], training["global_batch_size"]) == (4, 8)


@pytest.mark.slow
def test_two_workers_train_and_only_the_chief_writes(tiny_data, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = [
        _train(tiny_data, tmp_path / f"worker{index}", "--epochs", "2", "--batch-size", "4",
               "--distribute", "multi-worker",
               TF_CONFIG=json.dumps({"cluster": cluster,
                                     "task": {"type": "worker", "index": index}}))
        for index in range(2)
    ]
    for worker in workers:
        _finish(worker)
    chief = tmp_path / "worker0"
    assert sorted(path.name for path in chief.iterdir()) == sorted(
        [CARD_FILE, HISTORY_FILE, MODEL_FILE])
    assert not (tmp_path / "worker1").exists()  # its temporary folder is gone, and it
    training = json.loads((chief / CARD_FILE).read_text())["training"]
    assert (training["workers"], training["replicas"]) == (2, 2)
    assert training["global_batch_size"] == 8 and training["distribute"] == "multi-worker"
    assert len(pd.read_csv(chief / HISTORY_FILE)) == 2


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_result(tiny_data, tmp_path):
    """SIGKILL once the first epoch's backup is written; a rerun with another setting is
    refused; the same command then ends bit for bit where an uninterrupted run ends
    (one machine, deterministic ops on one inter-op thread: the project's default)."""
    options = ("--epochs", "5", "--batch-size", "4")
    uninterrupted = _train(tiny_data, tmp_path / "whole", *options)
    killed_out = tmp_path / "killed"
    killed = _train(tiny_data, killed_out, *options)
    backup = killed_out / BACKUP_DIR / BACKUP_FILE
    deadline = time.monotonic() + 240
    while not backup.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the training ended before the kill"
    assert not (killed_out / MODEL_FILE).exists()

    changed = _train(tiny_data, killed_out, *options, "--learning-rate", "0.002")
    changed.wait(timeout=300)
    message = (tmp_path / "killed.log").read_text()
    assert changed.returncode != 0
    assert "cannot be resumed (settings.learning_rate: backup 0.001, now 0.002)" in message
    assert "Traceback" not in message

    _finish(_train(tiny_data, killed_out, *options))
    _finish(uninterrupted)
    assert not (killed_out / BACKUP_DIR).exists()
    assert (killed_out / HISTORY_FILE).read_bytes() == (tmp_path / "whole" / HISTORY_FILE
                                                        ).read_bytes()
    resumed_model = keras.saving.load_model(killed_out / MODEL_FILE, compile=False)
    whole_model = keras.saving.load_model(tmp_path / "whole" / MODEL_FILE, compile=False)
    for resumed, whole in zip(resumed_model.get_weights(), whole_model.get_weights(),
                              strict=True):
        np.testing.assert_array_equal(resumed, whole)
    cards = [json.loads((folder / CARD_FILE).read_text()) for folder in (killed_out,
                                                                           tmp_path / "whole")]
    assert cards[0]["validation_metrics"] == cards[1]["validation_metrics"]
    assert cards[0]["training"]["resumed_after_epoch"] >= 1
    assert cards[1]["training"]["resumed_after_epoch"] is None
