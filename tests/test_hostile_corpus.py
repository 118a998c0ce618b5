"""The hostile corpus (issue 17): each case is built in a temporary folder and run through
the ``mammo`` command line as a user would; each asserts the exit status, the one line
that names the file or argument, the counts (in = out + rejected) and that nothing leaks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from fixtures_preprocess import make_breast, tiny_dataset
from test_reader_hostile import write_dicom

from mammo_utils import ImageReadError, read_image
from mammo_utils.cli import main as mammo
from mammo_utils.demo import build_demo
from mammo_utils.inference import Classifier
from mammo_utils.ingest import INDEX_FILE, RECONCILIATION_FILE, REJECTS_FILE
from mammo_utils.ingest.dicom_index import index_dicom_tree
from mammo_utils.model_card import CARD_FILE, MODEL_FILE
from mammo_utils.preprocess import MANIFEST_FILE, FolderLock
from mammo_utils.preprocess.job import safe_name
from mammo_utils.reader.errors import describe_exception

REPO = Path(__file__).resolve().parents[1]


def _one_error(capsys) -> str:
    """The one ``error:`` line the last command wrote to stderr (progress bars aside)."""
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


def _usage_error(argv: list[str], capsys) -> str:
    """Run a command that argparse must refuse; return its one error line."""
    with pytest.raises(SystemExit) as stop:
        mammo(argv)
    assert stop.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1
    return errors[0]


# --- item 9: every numeric argument is range-checked before work starts ---------------

BAD_ARGUMENTS = {
    "preprocess-workers": (["preprocess", "--workers", "-1"], "--workers"),
    "preprocess-workers-zero": (["preprocess", "--workers", "0"], "--workers"),
    "preprocess-size": (["preprocess", "--size", "0"], "--size"),
    "preprocess-normal": (["preprocess", "--normal-per-image", "-2"], "--normal-per-image"),
    "preprocess-patches": (["preprocess", "--patches-per-lesion", "0"], "--patches-per-lesion"),
    "preprocess-jitter": (["preprocess", "--jitter", "-1"], "--jitter"),
    "predict-stride-negative": (["predict", "x.png", "--stride", "-8"], "--stride"),
    "predict-stride-zero": (["predict", "x.png", "--stride", "0"], "--stride"),
    "predict-threshold": (["predict", "x.png", "--threshold", "1.5"], "--threshold"),
    "predict-max-patches": (["predict", "x.png", "--max-patches", "0"], "--max-patches"),
    "ingest-val": (["ingest", "folder", "--val-fraction", "1"], "--val-fraction"),
    "ingest-test": (["ingest", "folder", "--test-fraction", "-0.1"], "--test-fraction"),
    "ingest-nan": (["ingest", "folder", "--test-fraction", "nan"], "--test-fraction"),
    "evaluate-batch": (["evaluate", "--batch-size", "0"], "--batch-size"),
    "evaluate-bootstrap": (["evaluate", "--bootstrap", "-5"], "--bootstrap"),
    "synth-patients": (["synth", "--patients", "0"], "--patients"),
    "synth-normal-fraction": (["synth", "--normal-fraction", "2"], "--normal-fraction"),
}
REQUIRED = {
    "preprocess": ["--index", "i.csv", "--out", "o"],
    "predict": ["--model", "m"],
    "ingest": ["--root", "r", "--out", "o"],
    "evaluate": ["--model", "m", "--data", "d", "--out", "o"],
    "synth": [],
}


@pytest.mark.parametrize("argv, argument", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS)
def test_out_of_range_argument_is_one_error_line_naming_it(argv, argument, capsys, tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _usage_error(argv + REQUIRED[argv[0]], capsys)
    assert f"argument {argument}:" in line and line.startswith(f"mammo {argv[0]}: error:")
    assert not any(tmp_path.iterdir())  # refused before any work


@pytest.mark.parametrize("option, value, setting", [
    ("--epochs", "0", "epochs"), ("--epochs", "-1", "epochs"),
    ("--batch-size", "0", "batch_size"), ("--learning-rate", "-1", "learning_rate"),
])
def test_train_settings_are_checked_before_a_model_folder_exists(
    option, value, setting, tmp_path, capsys
):
    out = tmp_path / "model"
    status = mammo(["train", "--data", str(tmp_path), "--out", str(out), option, value])
    error = capsys.readouterr().err.strip()
    assert status == 1 and error.startswith("mammo train: error:") and setting in error
    assert "\n" not in error and not out.exists()


def test_bad_working_size_is_refused(tmp_path, capsys):
    for size in ("0x0", "-5x4", "100000x100000"):
        status = mammo(["preprocess", "--index", str(tmp_path / "i.csv"),
                        "--out", str(tmp_path / "o"), f"--working-size={size}"])
        error = capsys.readouterr().err.strip()
        assert status == 1 and "working size" in error and "\n" not in error
    assert not (tmp_path / "o").exists()


def test_index_that_is_not_a_csv_is_named(tmp_path, capsys):
    index = tmp_path / "some.png"
    index.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    status = mammo(["preprocess", "--index", str(index), "--out", str(tmp_path / "o")])
    error = capsys.readouterr().err.strip()
    assert status == 1 and str(index) in error and "\n" not in error


ROI_CARD = {"classes": ["NORMAL", "BENIGN", "MALIGNANT"], "task": "roi", "image_size": 224,
            "working_size": [1152, 896]}


def test_scan_larger_than_the_patch_limit_is_refused_before_reading():
    assert Classifier(None, ROI_CARD).stride == 112  # the default scan stays under the limit
    with pytest.raises(ValueError, match=r"625217 patches.*--max-patches"):
        Classifier(None, ROI_CARD, stride=1)
    assert Classifier(None, ROI_CARD, stride=1, max_patches=700_000).stride == 1
    with pytest.raises(ValueError, match="stride must be at least 1"):
        Classifier(None, ROI_CARD, stride=0)


# --- item 10: a DICOM cut short is refused as truncated ---------------------------------


def _dicom_bytes(tmp_path) -> bytes:
    pixels = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) % 4096
    return write_dicom(tmp_path / "whole.dcm", pixels).read_bytes()


def test_dicom_cut_anywhere_inside_an_element_is_called_truncated(tmp_path):
    data = _dicom_bytes(tmp_path)
    pixel_data = data.rindex(b"\xe0\x7f\x10\x00")  # (7FE0,0010), little endian
    for cut in (140, 200, pixel_data - 3, pixel_data + 4, pixel_data + 11, len(data) - 1):
        path = tmp_path / f"cut{cut}.dcm"
        path.write_bytes(data[:cut])
        with pytest.raises(ImageReadError, match="truncated") as refusal:
            read_image(path)
        assert str(path) in str(refusal.value) and "\n" not in str(refusal.value)
    assert read_image(data)[0].shape == (64, 48)


# --- item 4: a reason names the file and the cause, never the file's content -----------

SECRET = "s3cr3t-Jane-Doe"


@pytest.mark.parametrize("content", [
    f"root:x:0:0:{SECRET}:/root:/bin/bash\n".encode(),
    SECRET.encode() + bytes(range(256)),
    b"\0" * 128 + b"DICM" + SECRET.encode() * 8,
])
def test_refusal_reason_never_echoes_the_file(tmp_path, content):
    path = tmp_path / "scan.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as refusal:
        read_image(path)
    message = str(refusal.value)
    assert str(path) in message
    assert SECRET not in message and "root:x" not in message and "s3cr" not in message


def test_library_messages_are_masked():
    error = ValueError(f"invalid literal for int() with base 10: '{SECRET}' or b'\\x00{SECRET}'")
    assert describe_exception(error) == (
        "ValueError: invalid literal for int() with base 10: <value> or <value>"
    )
    error = ValueError("'Bits Stored' value of '20', 'Patient ID' '99812345', date '19650412'")
    assert describe_exception(error) == (
        "ValueError: 'Bits Stored' value of '20', 'Patient ID' <value>, date <value>"
    )


# --- item 1: two source files never share an image id or an output file ----------------


def _write_breast(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.rint(make_breast((160, 128), seed=seed) * 255).astype(np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def _ingest_folder(root: Path, out: Path, *extra: str) -> int:
    return mammo(["ingest", "folder", "--root", str(root), "--out", str(out),
                  "--val-fraction", "0", "--test-fraction", "0", *extra])


def test_colliding_names_keep_every_image(tmp_path, capsys):
    root = tmp_path / "images"
    names = ["MALIGNANT/case 1.png", "MALIGNANT/case_1.png", "BENIGN/a/b.png",
             "BENIGN/a__b.png", "NORMAL/x.png", "NORMAL/x.jpg"]
    for seed, name in enumerate(names):
        _write_breast(root / name, seed)
    assert _ingest_folder(root, tmp_path / "interim") == 0
    index = pd.read_csv(tmp_path / "interim" / INDEX_FILE, dtype=str)
    assert index["image_id"].nunique() == len(names)
    out = tmp_path / "processed"
    assert mammo(["preprocess", "--index", str(tmp_path / "interim" / INDEX_FILE),
                  "--task", "image", "--size", "32", "--out", str(out)]) == 0
    manifest = pd.read_csv(out / MANIFEST_FILE, dtype=str)
    assert len(manifest) == len(names) and manifest["path"].nunique() == len(names)
    pixels = {(out / path).read_bytes() for path in manifest["path"]}
    assert len(pixels) == len(names)  # six files, six different images
    capsys.readouterr()


def test_ingest_refuses_one_id_for_two_images_naming_both(tmp_path, capsys):
    first = _write_breast(tmp_path / "one" / "BENIGN" / "a.png", 0)
    second = _write_breast(tmp_path / "two" / "BENIGN" / "a.png", 1)
    status = _ingest_folder(tmp_path / "one", tmp_path / "interim",
                            "--also", f"folder:{tmp_path / 'two'}")
    error = _one_error(capsys)
    assert status == 1 and error.startswith("mammo ingest: error:")
    assert "'BENIGN/a.png'" in error and str(first) in error and str(second) in error
    assert not (tmp_path / "interim" / INDEX_FILE).exists()


def test_output_names_differ_for_identifiers_that_differ():
    identifiers = ["case 1", "case_1", "case__1", "case/1", "case_1+x", "a/b", "a__b", "é"]
    names = [safe_name(text) for text in identifiers]
    assert len(set(names)) == len(identifiers)
    assert safe_name("IMG_A_normal_0") == "IMG_A_normal_0"  # plain ids keep their names
    assert all(re.fullmatch(r"[A-Za-z0-9._+-]+", name) for name in names)


# --- item 2: ingest indexes only files readable as images; preprocess exit status -------


def _png_header(height: int, width: int) -> bytes:
    """A PNG signature and IHDR claiming ``height`` x ``width``, then IEND (no pixels)."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + b"IHDR" + ihdr
            + b"\0" * 4 + b"\0\0\0\0IEND\xaeB`\x82")


def _bad_files(root: Path) -> dict[str, str]:
    """Write every unreadable file of the corpus; return relative path -> expected reason."""
    good = cv2.imencode(".png", (make_breast((160, 128)) * 255).astype(np.uint8))[1].tobytes()
    dicom = write_dicom(root / "scratch.dcm", np.zeros((32, 24), np.uint16)).read_bytes()
    (root / "scratch.dcm").unlink()
    files = {
        "NORMAL/empty.png": (b"", "empty file"),
        "NORMAL/text.png": (f"root:x:0:0:{SECRET}\n".encode(), "unrecognised text"),
        "NORMAL/huge.png": (_png_header(60000, 60000), "megapixel limit"),
        "NORMAL/cut.png": (good[: len(good) // 2], "PNG truncated"),
        "BENIGN/cut.dcm": (dicom[:-100], "pixel data truncated"),
    }
    for relative, (content, _) in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    write_dicom(root / "BENIGN" / "nopixels.dcm", None)
    return {**{name: reason for name, (_, reason) in files.items()},
            "BENIGN/nopixels.dcm": "no Pixel Data"}


def test_folder_ingest_rejects_every_unreadable_file_with_its_reason(tmp_path, capsys):
    root = tmp_path / "images"
    for seed, name in enumerate(["NORMAL/g1.png", "MALIGNANT/g2.png"]):
        _write_breast(root / name, seed)
    expected = _bad_files(root)
    assert _ingest_folder(root, tmp_path / "interim") == 0
    interim = tmp_path / "interim"
    index = pd.read_csv(interim / INDEX_FILE, dtype=str)
    rejects = pd.read_csv(interim / REJECTS_FILE, dtype=str)
    assert sorted(index["image_id"]) == ["MALIGNANT/g2.png", "NORMAL/g1.png"]
    reasons = dict(zip(rejects["source"], rejects["reason"], strict=True))
    assert set(reasons) == set(expected)
    for name, reason in expected.items():
        assert reason in reasons[name], (name, reasons[name])
    counts = pd.read_csv(interim / RECONCILIATION_FILE).iloc[0]
    assert counts["total"] == 2 + len(expected) == counts["kept"] + counts["rejected"]
    assert SECRET not in "".join(path.read_text() for path in interim.iterdir())
    capsys.readouterr()


def test_preprocess_fails_on_rejects_unless_allowed_and_always_when_empty(tmp_path, capsys):
    index_path, _ = tiny_dataset(tmp_path / "data")  # five images and one text file
    run = ["preprocess", "--index", str(index_path), "--task", "image", "--size", "32"]
    assert mammo([*run, "--out", str(tmp_path / "a")]) == 1
    error = _one_error(capsys)
    assert "1 rejects (1 of 6 images)" in error and str(tmp_path / "a" / REJECTS_FILE) in error
    assert mammo([*run, "--out", str(tmp_path / "b"), "--allow-rejects"]) == 0
    capsys.readouterr()
    index = pd.read_csv(index_path, dtype=str)
    index[index["image_id"] == "IMG_BAD"].to_csv(tmp_path / "bad.csv", index=False)
    status = mammo(["preprocess", "--index", str(tmp_path / "bad.csv"), "--task", "image",
                    "--size", "32", "--out", str(tmp_path / "c"), "--allow-rejects"])
    assert status == 1 and "nothing was written" in _one_error(capsys)


# --- item 3: symbolic links out of the data root are refused unless asked ---------------


def test_links_out_of_the_root_are_rejected_unless_followed(tmp_path, capsys):
    root, outside = tmp_path / "images", tmp_path / "elsewhere"
    _write_breast(root / "NORMAL" / "inside.png", 0)
    _write_breast(outside / "scan.png", 1)
    _write_breast(outside / "folder" / "deep.png", 2)
    (root / "NORMAL" / "same.png").symlink_to(root / "NORMAL" / "inside.png")
    (root / "BENIGN").mkdir()
    (root / "BENIGN" / "link.png").symlink_to(outside / "scan.png")
    (root / "BENIGN" / "passwd.png").symlink_to("/etc/passwd")
    (root / "MALIGNANT").symlink_to(outside / "folder", target_is_directory=True)
    assert _ingest_folder(root, tmp_path / "a") == 0
    index = pd.read_csv(tmp_path / "a" / INDEX_FILE, dtype=str)
    rejects = pd.read_csv(tmp_path / "a" / REJECTS_FILE, dtype=str)
    assert sorted(index["image_id"]) == ["NORMAL/inside.png", "NORMAL/same.png"]
    outside_links = rejects[rejects["reason"].str.contains("outside the data root")]
    assert set(outside_links["source"]) >= {"BENIGN/link.png", "BENIGN/passwd.png"}
    assert "root:" not in (tmp_path / "a" / REJECTS_FILE).read_text()
    counts = pd.read_csv(tmp_path / "a" / RECONCILIATION_FILE).iloc[0]
    assert counts["total"] == counts["kept"] + counts["rejected"] == len(index) + len(rejects)

    assert _ingest_folder(root, tmp_path / "b", "--follow-symlinks") == 0
    followed = pd.read_csv(tmp_path / "b" / INDEX_FILE, dtype=str)
    assert "BENIGN/link.png" in set(followed["image_id"])
    reasons = pd.read_csv(tmp_path / "b" / REJECTS_FILE, dtype=str).set_index("source")
    assert "not a DICOM, PNG, JPEG or PGM" in reasons.loc["BENIGN/passwd.png", "reason"]
    capsys.readouterr()


# --- item 8: a model card is checked against limits and tied to its model file ---------

BAD_CARDS = {
    "working-zero": ({"working_size": [0, 0]}, "working_size side must be an integer in"),
    "working-one": ({"working_size": [1, 1]}, "working_size side must be an integer in"),
    "working-negative": ({"working_size": [-128, 96]}, "working_size side"),
    "working-one-number": ({"working_size": [128]}, "working_size must be [height, width]"),
    "working-huge": ({"working_size": [100000, 100000]}, "working_size side"),
    "image-size-zero": ({"image_size": 0}, "image_size must be an integer in"),
    "task": ({"task": "segment"}, "task must be one of"),
    "classes-reordered": (
        {"classes": ["BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT", "NORMAL"]},
        "changed after the model was saved",
    ),
    "unsealed": ({"model_file": {}}, "does not record its model.keras"),
}


@pytest.mark.parametrize("change, reason", BAD_CARDS.values(), ids=BAD_CARDS)
def test_bad_model_card_is_refused_before_any_image(change, reason, bright_roi_model_dir,
                                                    breast_png, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(bright_roi_model_dir, model_dir)
    card = json.loads((model_dir / CARD_FILE).read_text())
    (model_dir / CARD_FILE).write_text(json.dumps({**card, **change}))
    status = mammo(["predict", str(breast_png), "--model", str(model_dir)])
    error = _one_error(capsys)
    assert status == 1 and str(model_dir) in error and reason in error


def test_replaced_model_file_is_refused(bright_roi_model_dir, breast_png, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(bright_roi_model_dir, model_dir)
    with (model_dir / MODEL_FILE).open("ab") as stream:
        stream.write(b"\0")
    status = mammo(["predict", str(breast_png), "--model", str(model_dir)])
    error = _one_error(capsys)
    assert status == 1 and "not the file its card was saved with" in error
    assert mammo(["predict", str(breast_png), "--model", str(bright_roi_model_dir)]) == 0


# --- item 7: one preprocess run at a time per output folder -----------------------------


def test_second_run_into_a_held_folder_fails_at_once_naming_the_owner(tmp_path, capsys):
    index_path, _ = tiny_dataset(tmp_path / "data", corrupt=False)
    out = tmp_path / "out"
    out.mkdir()
    run = ["preprocess", "--index", str(index_path), "--task", "image", "--size", "32",
           "--out", str(out)]
    with FolderLock(out):
        started = time.monotonic()
        assert mammo(run) == 1
        assert time.monotonic() - started < 10
        error = _one_error(capsys)
        assert str(out) in error and f"process id {os.getpid()}" in error
        assert not (out / MANIFEST_FILE).exists()
    holder = FolderLock(out).__enter__()
    release = threading.Timer(1.0, holder.__exit__, args=(None, None, None))
    release.start()
    try:
        assert mammo([*run, "--wait"]) == 0  # waits for the holder, then runs
    finally:
        release.join()
    assert len(pd.read_csv(out / MANIFEST_FILE)) == 5


def test_two_concurrent_runs_into_one_folder(tmp_path):
    index_path, _ = tiny_dataset(tmp_path / "data", corrupt=False)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mammo_utils", "preprocess", "--index", str(index_path),
               "--task", "roi", "--size", "64", "--working-size", "320x256", "--out", str(out)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(2)]
    try:
        results = [run.communicate(timeout=120) for run in runs]
    finally:
        for run in runs:
            run.kill()
    statuses = [run.returncode for run in runs]
    for status, (_, err) in zip(statuses, results, strict=True):
        assert status == 0 or (status == 1 and "process id" in err and str(out) in err), err
        assert "Traceback" not in err and ".partial" not in err
    assert 0 in statuses
    manifest = pd.read_csv(out / MANIFEST_FILE)
    assert all((out / path).is_file() for path in manifest["path"])


# --- item 6: no worker outlives a killed or interrupted preprocess run ------------------

LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/environ").exists(),
                                reason="finds a run's processes through /proc")


def _processes_marked(marker: str) -> list[int]:
    """Live (not zombie) processes whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


def _slow_index(tmp_path: Path, images: int = 120) -> Path:
    """An index of many large images (one file, many ids), so a run lasts seconds."""
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), (make_breast((2400, 1900)) * 65535).astype(np.uint16))
    rows = [{"image_id": f"IMG_{number:03d}", "patient_id": f"P{number}", "dataset": "big",
             "split": "train", "label": "NORMAL", "image_path": str(path)}
            for number in range(images)]
    pd.DataFrame(rows).to_csv(tmp_path / "index.csv", index=False)
    return tmp_path / "index.csv"


@LINUX_PROC
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_the_parent_ends_every_worker(how, tmp_path):
    index, out = _slow_index(tmp_path), tmp_path / "out"
    marker = f"MAMMO_KILL_TEST={tmp_path.name}-{how}"
    command = [sys.executable, "-m", "mammo_utils", "preprocess", "--index", str(index),
               "--task", "image", "--size", "256", "--workers", "2", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), marker.split("=")[0]: marker.split("=")[1]}
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("NORMAL/*.png")) and time.monotonic() < deadline:
            assert run.poll() is None, run.communicate()
            time.sleep(0.05)
        assert len(_processes_marked(marker)) >= 3  # the run, its forkserver, its workers
        run.send_signal(how)
        _, err = run.communicate(timeout=30)
        deadline = time.monotonic() + 10
        while _processes_marked(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_marked(marker) == []
    finally:
        run.kill()
        for pid in _processes_marked(marker):
            os.kill(pid, signal.SIGKILL)
    assert not (out / MANIFEST_FILE).exists()  # stopped mid-run
    if how == signal.SIGTERM:
        assert run.returncode == 130 and "Traceback" not in err
        assert "run the same command again to resume" in err


# --- item 5: identifying DICOM values reach no output of any stage ----------------------

#: Identifying and free-text tags of the PS3.15 basic profile, each with a value that
#: must never come out (free text mixes allowed words with identifying ones).
PHI_TAGS = {
    "PatientName": "Doe^Jane^Quincy",
    "PatientID": "MRN-99812345",
    "OtherPatientIDs": "OTHER-77123",
    "PatientBirthDate": "19650412",
    "PatientAddress": "12 Elm Street Springfield",
    "PatientTelephoneNumbers": "555-0199",
    "PatientComments": "Quincy prefers mornings",
    "AdditionalPatientHistory": "sister Quincy had cancer",
    "AccessionNumber": "ACC-5566778",
    "StudyID": "STUDY9981",
    "StudyDate": "20240115",
    "StudyDescription": "Screening Jane Quincy Doe",
    "SeriesDescription": "L CC Jane Doe 1965-04-12 mrn 99812345",
    "ImageComments": "Jane Quincy Doe MRN 99812345",
    "ProtocolName": "Quincy protocol",
    "InstitutionName": "St Elsewhere Hospital",
    "InstitutionAddress": "1 Elsewhere Road",
    "StationName": "STATION-7Q",
    "ReferringPhysicianName": "Ref^Rita",
    "PerformingPhysicianName": "Perf^Paulo",
    "OperatorsName": "Tech^Terry",
    "DeviceSerialNumber": "SN-4455667",
    "StudyInstanceUID": "1.2.826.0.1.3680043.99.4711",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.99.4712",
}
LEAK_MARKERS = ("Jane", "Quincy", "99812345", "77123", "19650412", "1965-04-12", "Elm Street",
                "555-0199", "5566778", "STUDY9981", "20240115", "Elsewhere", "STATION-7Q",
                "Rita", "Paulo", "Terry", "4455667", "3680043.99")


def _leaks(text: str) -> list[str]:
    return [marker for marker in LEAK_MARKERS if marker in text]


def _tree_text(folder: Path) -> str:
    """Every file under ``folder`` (hidden state records included) read as text."""
    return "\n".join(path.read_bytes().decode("utf-8", "replace")
                     for path in sorted(folder.rglob("*")) if path.is_file()
                     and path.suffix.lower() not in {".png", ".keras"})


def test_phi_in_dicom_tags_reaches_no_output(tmp_path, capsys, cnn_image_model_dir,
                                             bright_roi_model_dir):
    root = tmp_path / "images"
    for seed, (name, laterality) in enumerate([("NORMAL/phi.dcm", "L"),
                                               ("MALIGNANT/phi2.dcm", "R")]):
        pixels = np.rint(make_breast((320, 256), seed=seed) * 4095).astype(np.uint16)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_dicom(root / name, pixels, ImageLaterality=laterality, **PHI_TAGS)
    interim, processed, reports = tmp_path / "interim", tmp_path / "processed", tmp_path / "rep"

    assert _ingest_folder(root, interim) == 0
    assert mammo(["preprocess", "--index", str(interim / INDEX_FILE), "--task", "image",
                  "--size", "32", "--out", str(processed)]) == 0
    assert mammo(["evaluate", "--model", str(cnn_image_model_dir), "--data", str(processed),
                  "--split", "train", "--out", str(reports), "--bootstrap", "5",
                  "--no-figures"]) == 0
    for style in ([], ["--json"]):
        assert mammo(["predict", str(root / "NORMAL" / "phi.dcm"), "--model",
                      str(bright_roi_model_dir), *style]) == 0
    printed = capsys.readouterr()
    index = pd.read_csv(interim / INDEX_FILE, dtype=str)
    assert set(index["laterality"]) == {"LEFT", "RIGHT"} and len(index) == 2
    for text in (_tree_text(interim), _tree_text(processed), _tree_text(reports),
                 printed.out, printed.err):
        assert _leaks(text) == []

    project = tmp_path / "project"
    shutil.copytree(bright_roi_model_dir, project / "models" / "run" / "bright_roi")
    app = build_demo(project, project / "models" / "run" / "bright_roi",
                     example_path=root / "NORMAL" / "phi.dcm")
    assert app.prediction is not None, app.error
    shown = " ".join(str(getattr(app, name).value) for name in (
        "metadata", "source_label", "label", "warnings", "description", "error_box"))
    assert _leaks(shown + app.summary()) == []


def test_reader_and_header_cache_keep_no_free_text(tmp_path):
    pixels = np.rint(make_breast((320, 256)) * 4095).astype(np.uint16)
    (tmp_path / "tree").mkdir()
    path = write_dicom(tmp_path / "tree" / "phi.dcm", pixels, **PHI_TAGS)
    _, metadata = read_image(path)
    assert metadata["series_description"] == "L CC"
    assert _leaks(json.dumps(metadata)) == []
    cache = tmp_path / "headers.csv"
    headers = index_dicom_tree(tmp_path / "tree", cache)
    # only the join keys (PatientID, study and series UIDs) a CBIS-DDSM ingest needs stay
    join_keys = {"99812345", "3680043.99"}
    assert set(_leaks(cache.read_text())) <= join_keys
    assert set(_leaks(headers.to_csv())) <= join_keys
