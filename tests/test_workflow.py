"""mammo_utils.workflow: data keys, the missing-data_root error, resumable preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mammo_utils.model_card import ModelCard
from mammo_utils.training_config import TrainingConfig
from mammo_utils.workflow import (
    DataSettings,
    ensure_model,
    ensure_processed,
    ensure_raw,
    train_model,
)

#: The smallest synthetic set that still has every split: seconds to generate and process.
TINY = {"synth_patients": 6, "synth_seed": 3}


def test_dataset_key_names_the_synthetic_parameters():
    keys = {
        DataSettings(synth_patients=patients, synth_seed=seed, synth_size=size).dataset_key
        for patients in (24, 80) for seed in (0, 1) for size in ("small", "full")
    }
    assert len(keys) == 8
    assert DataSettings().dataset_key == "synthetic-p24-s0-small"


def test_dataset_key_keeps_a_real_data_set_name(tmp_path):
    settings = DataSettings(project_dir=tmp_path, dataset="cbis-ddsm", data_root="/downloads/x",
                            synth_patients=80)
    assert settings.dataset_key == "cbis-ddsm"
    # A synthetic set the user generated elsewhere is named by its data set, not our key.
    assert DataSettings(data_root="/elsewhere").dataset_key == "synthetic"


def test_workspace_paths_follow_the_key(tmp_path):
    ws = DataSettings(project_dir=tmp_path, run_name="r", synth_patients=7).workspace
    key = "synthetic-p7-s0-small"
    assert ws.synthetic_dir == tmp_path.resolve() / "data" / "raw" / key
    assert ws.interim_dir == tmp_path.resolve() / "data" / "interim" / key
    processed = tmp_path.resolve() / "data" / "processed" / key
    assert ws.processed_dir("image", 64) == processed / "image-64"
    assert ws.processed_dir("roi", 64, (640, 512)) == processed / "roi-64-640x512"
    assert ws.model_dir("baseline") == tmp_path.resolve() / "models" / "r" / "baseline"


def test_ensure_raw_refuses_an_empty_data_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_root is empty.*cbis-ddsm download"):
        ensure_raw(DataSettings(project_dir=tmp_path, dataset="cbis-ddsm"))


def test_ensure_raw_names_a_missing_data_root(tmp_path):
    missing = tmp_path / "not-downloaded"
    with pytest.raises(FileNotFoundError, match=f"{missing}.* is not a folder"):
        ensure_raw(DataSettings(project_dir=tmp_path, dataset="mias", data_root=missing))


def test_ensure_raw_returns_an_existing_data_root(tmp_path):
    assert ensure_raw(DataSettings(dataset="mias", data_root=tmp_path)) == tmp_path


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> tuple[DataSettings, object]:
    """A tiny synthetic set taken from nothing to patches by one ensure_processed call."""
    settings = DataSettings(project_dir=tmp_path_factory.mktemp("project"), **TINY)
    result = ensure_processed(settings, "roi", 32, (160, 128), normal_per_image=1)
    return settings, result


def test_ensure_processed_builds_every_stage(processed):
    settings, result = processed
    ws = settings.workspace
    assert (ws.synthetic_dir / "synth_manifest.json").is_file()
    assert (ws.interim_dir / "index.csv").is_file()
    assert result.out_dir == ws.processed_dir("roi", 32, (160, 128))
    assert result.images_in == result.images_processed > 0
    assert result.images_in == result.images_done + result.images_rejected
    assert (result.out_dir / "manifest.csv").is_file() and len(result.manifest) > 0


def test_ensure_processed_second_call_does_nothing(processed):
    settings, first = processed
    index = settings.workspace.interim_dir / "index.csv"
    pngs = sorted(first.out_dir.rglob("*.png"))
    before = {path: path.stat().st_mtime_ns for path in [index, *pngs]}

    # normal_per_image is not repeated: the folder's own value (1) is kept, not the default 2.
    again = ensure_processed(settings, "roi", 32, [160, 128])

    assert again.images_processed == 0
    assert again.images_in == first.images_in
    assert len(again.manifest) == len(first.manifest)
    assert {path: path.stat().st_mtime_ns for path in before} == before
    config = json.loads((first.out_dir / "preprocess_config.json").read_text())
    assert config["normal_per_image"] == 1


def test_ensure_processed_refuses_other_settings_in_the_same_folder(processed):
    settings, _ = processed
    with pytest.raises(ValueError, match="other settings.*jitter"):
        ensure_processed(settings, "roi", 32, (160, 128), jitter=1)


def test_another_working_size_gets_its_own_folder(processed):
    settings, first = processed
    other = ensure_processed(settings, "roi", 32, (192, 160), normal_per_image=1)
    assert other.out_dir != first.out_dir and other.out_dir.name == "roi-32-192x160"


def test_ensure_model_keeps_an_existing_model_of_the_architecture(tmp_path):
    settings = DataSettings(project_dir=tmp_path, run_name="r")
    model_dir = settings.workspace.model_dir("mobilenetv2")
    model_dir.mkdir(parents=True)
    (model_dir / "model_card.json").write_text("{}")
    # No data folder exists: training would fail, so returning proves nothing was trained.
    config = TrainingConfig(architecture="mobilenetv2", epochs=2)
    assert ensure_model(settings, Path(tmp_path / "no-data"), config) == model_dir


def test_a_relative_data_root_is_taken_from_the_project_folder(tmp_path):
    (tmp_path / "data" / "raw" / "mias").mkdir(parents=True)
    settings = DataSettings(project_dir=tmp_path, dataset="mias", data_root="data/raw/mias")
    assert ensure_raw(settings) == tmp_path.resolve() / "data" / "raw" / "mias"


@pytest.mark.slow
def test_train_model_trains_into_the_run_folder_every_time(tiny_roi_data, tmp_path):
    settings = DataSettings(project_dir=tmp_path, run_name="r")
    first = train_model(settings, tiny_roi_data, TrainingConfig(epochs=1, batch_size=8),
                        verbose=0)
    assert first.model_dir == settings.workspace.model_dir("baseline")
    again = train_model(settings, tiny_roi_data, TrainingConfig(epochs=2, batch_size=8),
                        verbose=0)
    assert again.model_dir == first.model_dir and len(again.history) == 2
    # ensure_model keeps what is there rather than training its own small model.
    assert ensure_model(settings, tiny_roi_data, TrainingConfig(epochs=1)) == first.model_dir
    assert ModelCard.load(first.model_dir).training_config().epochs == 2
