"""Preprocessing: outputs, manifest, rejects, resumability and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from fixtures_preprocess import SMOKE_SIZE, SMOKE_WORKING_SIZE, tiny_dataset, tiny_mias

from mammo_utils.breast import prepare_and_fit
from mammo_utils.cli import main as cli_main
from mammo_utils.files import PARTIAL_SUFFIX, sha256_file
from mammo_utils.ingest import ingest
from mammo_utils.preprocess import PreprocessConfig, run_preprocess, workers
from mammo_utils.preprocess.manifest import (
    STATE_DIR,
    SourceStamp,
    manifest_columns,
)
from mammo_utils.preprocess.roi_task import NO_LOCATION, UNKNOWN_PATHOLOGY
from mammo_utils.preprocess.workers import chunk_jobs
from mammo_utils.reader import read_image

ROI = PreprocessConfig(task="roi", size=SMOKE_SIZE, working_size=SMOKE_WORKING_SIZE,
                       normal_per_image=3, patches_per_lesion=1, seed=0)
ROI_NO_JITTER = PreprocessConfig(task="roi", size=SMOKE_SIZE, working_size=SMOKE_WORKING_SIZE,
                                 normal_per_image=3, patches_per_lesion=1, jitter=0, seed=0)


@pytest.fixture()
def tiny(tmp_path) -> tuple[Path, pd.DataFrame]:
    return tiny_dataset(tmp_path / "raw")


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*.png"))}


def test_roi_manifest_columns_and_counts(tiny, tmp_path):
    index, _ = tiny
    result = run_preprocess(index, tmp_path / "out", ROI, progress=False)
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    assert tuple(manifest.columns) == manifest_columns("roi")
    assert result.images_in == 6 == result.images_done + result.images_rejected
    assert (result.images_done, result.images_rejected) == (5, 1)
    lesions = manifest[manifest["kind"] == "lesion"]
    assert sorted(lesions["label"]) == ["BENIGN", "BENIGN", "MALIGNANT"]
    assert set(manifest.loc[manifest["kind"] == "normal", "label"]) == {"NORMAL"}
    assert (manifest["kind"] == "normal").sum() == 3 * 5
    for path in manifest["path"]:
        patch = cv2.imread(str(tmp_path / "out" / path), cv2.IMREAD_UNCHANGED)
        assert patch.dtype == np.uint16 and patch.shape == (SMOKE_SIZE, SMOKE_SIZE)
    config = json.loads((tmp_path / "out" / "preprocess_config.json").read_text())
    assert config["working_size"] == list(SMOKE_WORKING_SIZE) and config["datasets"] == ["tiny"]
    assert len(config["index_sha256"]) == 64


def test_corrupt_source_is_rejected_with_reason(tiny, tmp_path):
    index, _ = tiny
    run_preprocess(index, tmp_path / "out", ROI, progress=False)
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv")
    assert list(rejects.columns) == ["source", "reason"]
    assert len(rejects) == 1 and rejects["source"][0].endswith("IMG_BAD.png")
    assert "IMG_BAD.png" in rejects["reason"][0]


def test_lesion_patch_is_centred_on_the_lesion(tiny, tmp_path):
    index, _ = tiny
    result = run_preprocess(index, tmp_path / "out", ROI_NO_JITTER, progress=False)
    lesions = result.manifest[result.manifest["kind"] == "lesion"]
    assert len(lesions) == 3
    centre = slice(SMOKE_SIZE // 2 - 2, SMOKE_SIZE // 2 + 2)
    for path in lesions["path"]:
        patch = cv2.imread(str(tmp_path / "out" / path), cv2.IMREAD_UNCHANGED)
        assert patch[centre, centre].min() > 65000, f"{path}: the disk is not at the centre"


def test_normal_patches_overlap_no_lesion(tiny, tmp_path):
    index, lesions = tiny
    result = run_preprocess(index, tmp_path / "out", ROI, progress=False)
    images = pd.read_csv(index).set_index("image_id")
    half = SMOKE_SIZE // 2
    for lesion in lesions.itertuples():
        source, _ = read_image(images.loc[lesion.image_id, "image_path"])
        _, breast, geometry = prepare_and_fit(source, SMOKE_WORKING_SIZE)
        disk = np.zeros(source.shape, dtype=np.uint8)
        cv2.circle(disk, (int(lesion.source_x), int(lesion.source_y)), 12, 1, thickness=-1)
        mapped = geometry.map_mask(disk > 0)
        normals = result.manifest[(result.manifest["image_id"] == lesion.image_id)
                                  & (result.manifest["kind"] == "normal")]
        assert len(normals) == 3
        for row in normals.itertuples():
            window = (slice(row.center_y - half, row.center_y + half),
                      slice(row.center_x - half, row.center_x + half))
            assert not mapped[window].any(), f"{row.item_id} overlaps the lesion"
            assert breast[window].mean() >= 0.7


def test_image_task_gives_square_crops_chest_wall_left(tiny, tmp_path):
    index, _ = tiny
    config = PreprocessConfig(task="image", size=SMOKE_SIZE)
    result = run_preprocess(index, tmp_path / "out", config, progress=False)
    assert tuple(result.manifest.columns) == manifest_columns("image")
    assert len(result.manifest) == 5
    flipped = dict(zip(result.manifest["image_id"], result.manifest["flipped"], strict=True))
    assert flipped == {"IMG_A": False, "IMG_B": True, "IMG_C": False, "IMG_D": False,
                       "IMG_E": True}
    for path in result.manifest["path"]:
        image = cv2.imread(str(tmp_path / "out" / path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SMOKE_SIZE, SMOKE_SIZE) and image.dtype == np.uint16
        assert image[:, :8].mean() > image[:, -8:].mean()


def test_rerun_skips_everything(tiny, tmp_path):
    index, _ = tiny
    first = run_preprocess(index, tmp_path / "out", ROI, progress=False)
    before = _outputs(tmp_path / "out")
    again = run_preprocess(index, tmp_path / "out", ROI, progress=False)
    assert first.images_processed == 6 and again.images_processed == 0
    pd.testing.assert_frame_equal(first.manifest, again.manifest)
    assert _outputs(tmp_path / "out") == before


def test_killed_run_resumes_to_identical_outputs(tiny, tmp_path):
    index, _ = tiny
    reference = run_preprocess(index, tmp_path / "reference", ROI, progress=False)

    class Killed(RuntimeError):
        pass

    done = []

    def kill_after_two(record):
        done.append(record.image_id)
        if len(done) == 2:
            raise Killed

    with pytest.raises(Killed):
        run_preprocess(index, tmp_path / "out", ROI, on_image_done=kill_after_two,
                       progress=False)
    assert not (tmp_path / "out" / "manifest.csv").exists()
    assert not list((tmp_path / "out").rglob(f"*{PARTIAL_SUFFIX}"))
    resumed = run_preprocess(index, tmp_path / "out", ROI, workers=2, progress=False)
    assert resumed.images_processed == 4
    pd.testing.assert_frame_equal(reference.manifest, resumed.manifest)
    assert _outputs(tmp_path / "out") == _outputs(tmp_path / "reference")
    assert (tmp_path / "out" / "manifest.csv").read_bytes() == (
        tmp_path / "reference" / "manifest.csv").read_bytes()


def test_leftover_partial_file_is_removed(tiny, tmp_path):
    index, _ = tiny
    leftover = tmp_path / "out" / "NORMAL" / f"IMG_D_normal_0.png{PARTIAL_SUFFIX}"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a png")
    run_preprocess(index, tmp_path / "out", ROI, progress=False)
    assert not leftover.exists()


def test_changed_source_is_redone(tiny, tmp_path):
    index, _ = tiny
    run_preprocess(index, tmp_path / "out", ROI, progress=False)
    source = Path(pd.read_csv(index).set_index("image_id").loc["IMG_D", "image_path"])
    image = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(source), (image // 2).astype(np.uint16))
    again = run_preprocess(index, tmp_path / "out", ROI, progress=False)
    assert again.images_processed == 1
    row = again.manifest[again.manifest["image_id"] == "IMG_D"].iloc[0]
    assert len(row["source_sha256"]) == 64


def test_other_settings_in_same_folder_are_refused(tiny, tmp_path):
    index, _ = tiny
    run_preprocess(index, tmp_path / "out", ROI, progress=False)
    other = PreprocessConfig(task="roi", size=SMOKE_SIZE, working_size=SMOKE_WORKING_SIZE,
                             normal_per_image=3, patches_per_lesion=1, seed=1)
    with pytest.raises(ValueError, match="seed"):
        run_preprocess(index, tmp_path / "out", other, progress=False)


def test_abnormal_image_without_lesion_rows_is_rejected(tiny, tmp_path):
    index, _ = tiny
    lesions = pd.read_csv(index.parent / "lesions.csv")
    lesions[lesions["image_id"] != "IMG_C"].to_csv(index.parent / "lesions.csv", index=False)
    result = run_preprocess(index, tmp_path / "out", ROI, progress=False)
    assert result.images_rejected == 2
    assert result.rejects["reason"].str.contains("lists no abnormality for IMG_C").any()


def test_cli_preprocess(tiny, tmp_path, capsys):
    index, _ = tiny
    status = cli_main([
        "preprocess", "--index", str(index), "--task", "roi", "--size", "64",
        "--out", str(tmp_path / "out"), "--working-size", "320x256",
        "--normal-per-image", "1", "--seed", "3", "--allow-rejects",
    ])
    assert status == 0
    assert "6 images in: 5 done, 1 rejected" in capsys.readouterr().out
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert (manifest["kind"] == "normal").sum() == 5


def test_synthetic_roi_data(synthetic_roi_data):
    manifest = pd.read_csv(synthetic_roi_data / "manifest.csv", keep_default_na=False)
    assert {"lesion", "normal"} <= set(manifest["kind"])
    assert "NORMAL" in set(manifest["label"]) and len(set(manifest["label"])) >= 2
    assert set(manifest["split"]) <= {"train", "val", "test"}
    assert all((synthetic_roi_data / path).is_file() for path in manifest["path"])


def test_synthetic_image_data(synthetic_image_data):
    manifest = pd.read_csv(synthetic_image_data / "manifest.csv")
    assert tuple(manifest.columns) == manifest_columns("image")
    first = cv2.imread(str(synthetic_image_data / manifest["path"][0]), cv2.IMREAD_UNCHANGED)
    assert first.shape == (SMOKE_SIZE, SMOKE_SIZE)


def test_source_stamp_hashes_the_bytes_it_returns(tmp_path):
    path = tmp_path / "source.dcm"
    path.write_bytes(b"0123456789" * 1000)
    stamp, data = SourceStamp.read(path)
    assert data == path.read_bytes()
    assert stamp.sha256 == sha256_file(path) and stamp.size == 10_000
    assert stamp.mtime_ns == path.stat().st_mtime_ns


@pytest.mark.parametrize(("count", "workers", "sizes"), [
    (5, 2, [1, 1, 1, 1, 1]), (40, 2, [5] * 8), (100, 2, [8] * 12 + [4]),
])
def test_chunks_cover_every_job_in_order(count, workers, sizes):
    jobs = list(range(count))
    chunks = chunk_jobs(jobs, workers)
    assert [len(chunk) for chunk in chunks] == sizes
    assert [job for chunk in chunks for job in chunk] == jobs


def test_two_workers_give_the_same_outputs_as_one(tiny, tmp_path):
    index, _ = tiny
    config = PreprocessConfig(task="image", size=SMOKE_SIZE)
    serial = run_preprocess(index, tmp_path / "serial", config, progress=False)
    parallel = run_preprocess(index, tmp_path / "parallel", config, workers=2, progress=False)
    assert parallel.images_processed == 6
    pd.testing.assert_frame_equal(serial.manifest, parallel.manifest)
    assert _outputs(tmp_path / "parallel") == _outputs(tmp_path / "serial")


def test_patches_per_lesion_cuts_several_jittered_views_of_each_lesion(tiny, tmp_path):
    """Each abnormality gives ``patches_per_lesion`` patches with their own centre shift,
    all from the same image (so in the same split); NORMAL patches are unchanged."""
    index, _ = tiny
    one = run_preprocess(index, tmp_path / "one", ROI, progress=False)
    three = run_preprocess(index, tmp_path / "three", PreprocessConfig(
        task="roi", size=SMOKE_SIZE, working_size=SMOKE_WORKING_SIZE, normal_per_image=3,
        patches_per_lesion=3, seed=0), progress=False)
    lesions_one = one.manifest[one.manifest["kind"] == "lesion"]
    lesions_three = three.manifest[three.manifest["kind"] == "lesion"]
    assert len(lesions_three) == 3 * len(lesions_one) > 0
    for _, views in lesions_three.groupby(["image_id", "abnormality_id"]):
        assert len(views) == 3 and views["split"].nunique() == 1
        assert len(set(zip(views["center_x"], views["center_y"], strict=True))) > 1
    assert (three.manifest["kind"] == "normal").sum() == (one.manifest["kind"] == "normal").sum()


def test_patches_per_lesion_below_one_is_refused():
    with pytest.raises(ValueError, match="patches_per_lesion must be >= 1"):
        PreprocessConfig(patches_per_lesion=0)


@pytest.fixture()
def mias_interim(tmp_path) -> Path:
    """The ingest folder of :func:`tiny_mias`: mdb233's calcification has no location."""
    return ingest("mias", tiny_mias(tmp_path / "mias"), seed=0).save(tmp_path / "interim")


def test_roi_counts_a_lesion_without_location_and_cuts_nothing_there(mias_interim, tmp_path):
    lesions = pd.read_csv(mias_interim / "lesions.csv", dtype=str, keep_default_na=False)
    unlocated = lesions.set_index("image_id").loc["mdb233"]
    assert (unlocated["pathology"], unlocated["center_x"]) == ("MALIGNANT", "")
    result = run_preprocess(mias_interim / "index.csv", tmp_path / "roi", ROI, progress=False)
    assert (result.images_in, result.images_done) == (4, 4)
    assert (result.lesions_in, result.lesions_cut) == (2, 1)
    assert result.lesions_not_cut == {NO_LOCATION: 1}
    assert result.normal_withheld == 1
    manifest = result.manifest
    assert "mdb233" not in set(manifest["image_id"])  # neither its lesion nor NORMAL tissue
    kinds = manifest.groupby("image_id")["kind"].agg(lambda kind: sorted(set(kind)))
    assert kinds.to_dict() == {"mdb001": ["lesion", "normal"], "mdb002": ["normal"],
                               "mdb234": ["normal"]}
    [reason] = result.rejects["reason"]
    assert reason.startswith(f"{NO_LOCATION}: abnormality 1 of mdb233")
    summary = result.summary()
    assert f"2 lesions in: 1 cut, 1 {NO_LOCATION}" in summary
    assert "no NORMAL patch cut from 1 image(s)" in summary


def test_image_task_keeps_the_image_whose_lesion_has_no_location(mias_interim, tmp_path):
    config = PreprocessConfig(task="image", size=SMOKE_SIZE)
    result = run_preprocess(mias_interim / "index.csv", tmp_path / "image", config,
                            progress=False)
    labels = dict(zip(result.manifest["image_id"], result.manifest["label"], strict=True))
    assert labels == {"mdb001": "BENIGN", "mdb002": "NORMAL", "mdb233": "MALIGNANT",
                      "mdb234": "NORMAL"}
    assert result.rejects.empty and result.lesions_in == 0


def test_lesion_lost_without_a_reason_fails_the_count(tiny, tmp_path, monkeypatch):
    index, _ = tiny
    cut_roi = workers._TASKS["roi"]

    def cut_and_lose_lesions(image, job, sha256):
        output = cut_roi(image, job, sha256)
        output.rows = [row for row in output.rows if row["kind"] != "lesion"]
        return output

    monkeypatch.setitem(workers._TASKS, "roi", cut_and_lose_lesions)
    with pytest.raises(AssertionError, match="lesion counts do not reconcile: 3 in, 0 cut, 0 not"):
        run_preprocess(index, tmp_path / "out", ROI, progress=False)
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_records_of_an_older_format_are_redone(tiny, tmp_path):
    index, lesions = tiny
    lesions.loc[lesions["image_id"] == "IMG_C", ["center_x", "center_y"]] = ""
    lesions.drop(columns=["source_x", "source_y"]).to_csv(index.parent / "lesions.csv",
                                                          index=False)
    first = run_preprocess(index, tmp_path / "out", ROI, progress=False)
    for path in (tmp_path / "out" / STATE_DIR).glob("*.json"):
        record = json.loads(path.read_text())
        del record["record_format"], record["lesions_not_cut"]  # as written before counts
        path.write_text(json.dumps(record))
    again = run_preprocess(index, tmp_path / "out", ROI, progress=False)
    assert again.images_processed == 6
    assert again.lesions_not_cut == first.lesions_not_cut == {NO_LOCATION: 1}
    pd.testing.assert_frame_equal(first.manifest, again.manifest)


def test_lesion_of_unknown_pathology_is_counted_and_still_kept_out_of_normals(tiny, tmp_path):
    index, lesions = tiny
    lesions.loc[lesions["image_id"] == "IMG_A", "pathology"] = "MAYBE"
    lesions.drop(columns=["source_x", "source_y"]).to_csv(index.parent / "lesions.csv",
                                                          index=False)
    result = run_preprocess(index, tmp_path / "out", ROI, progress=False)
    assert result.lesions_not_cut == {UNKNOWN_PATHOLOGY: 1} and result.normal_withheld == 0
    img_a = result.manifest[result.manifest["image_id"] == "IMG_A"]
    assert img_a["kind"].tolist() == ["normal"] * 3  # its place is known, so normals are safe
    disk = lesions.set_index("image_id").loc["IMG_A"]
    source, _ = read_image(pd.read_csv(index).set_index("image_id").loc["IMG_A", "image_path"])
    _, _, geometry = prepare_and_fit(source, SMOKE_WORKING_SIZE)
    centre = geometry.map_points(np.array([[disk["source_x"], disk["source_y"]]]))[0]
    for row in img_a.itertuples():
        assert max(abs(row.center_x - centre[0]), abs(row.center_y - centre[1])) > SMOKE_SIZE / 2
