"""``mammo fetch`` against a real HTTP server on 127.0.0.1 (tests/fetch_server.py) that
mimics TCIA's NBIA API and the mini-MIAS archive, with injected failures. The served
CBIS-DDSM collection is a small set from ``mammo synth``, so a full fetch must rebuild it
byte for byte and ingest with zero rejects."""

from __future__ import annotations

import csv
import hashlib
import json
import socket
import sys
import time
from pathlib import Path

import pytest

from mammo_utils.cli import main
from mammo_utils.fetch import FetchError, RetryPolicy, fetch_cbis_ddsm, fetch_mini_mias
from mammo_utils.fetch.manifest import MANIFEST_NAME
from mammo_utils.fetch.tcia import METADATA_COLUMNS, SeriesInfo, select_series
from mammo_utils.ingest import ingest
from mammo_utils.synth import SynthSummary, generate_dataset

sys.path.insert(0, str(Path(__file__).parent))
from fetch_server import (  # noqa: E402
    Collection,
    MockServer,
    build_mias_archive,
    collection_from_synth,
    corrupted,
)

#: A synthetic set holding all four subsets, two Mass-Training patients (seed 4 draws them
#: from four patients) and no normal cases, as TCIA's CBIS-DDSM collection holds none.
SYNTH = {"patients": 4, "seed": 4, "size": "small", "normal_fraction": 0.0}
#: metadata.csv columns that name a series; a fetch must reproduce them exactly.
IDENTITY = (
    "Series UID", "Subject ID", "Study UID", "Series Description", "Modality",
    "SOP Class UID", "Number of Images", "File Location",
)  # fmt: skip
FAST = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05, timeout=5)
ONCE = RetryPolicy(attempts=1, timeout=5)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """The synthetic set the mock TCIA serves, generated once for this module."""
    return generate_dataset(tmp_path_factory.mktemp("tcia-source"), progress=False, **SYNTH)


@pytest.fixture(scope="module")
def collection(synth: SynthSummary) -> Collection:
    return collection_from_synth(synth.out)


@pytest.fixture
def server(collection: Collection):
    with MockServer(collection, build_mias_archive(), lifetime=60) as running:
        yield running


def _fetch(server: MockServer, out: Path, policy: RetryPolicy = FAST, **options):
    return fetch_cbis_ddsm(
        out, base_url=server.base_url, csv_base_url=server.csv_base_url,
        policy=policy, progress=False, **options,
    )  # fmt: skip


def _series_uids(server: MockServer) -> list[str]:
    return [item["SeriesInstanceUID"] for item in server.listing]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file in ``folder``, by name."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def _patient(subject: str) -> str:
    """``P_00003`` of ``Mass-Training_P_00003_LEFT_CC_1``."""
    return "_".join(subject.split("_")[1:3])


def _first_patients(server: MockServer, prefix: str, patients: int) -> list[str]:
    """Sorted subject IDs of the first ``patients`` patients (by id) under ``prefix``."""
    subjects = {s["PatientID"] for s in server.listing if s["PatientID"].startswith(prefix + "_")}
    chosen = sorted({_patient(subject) for subject in subjects})[:patients]
    return sorted(subject for subject in subjects if _patient(subject) in chosen)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_full_fetch_reproduces_the_synthetic_set_and_ingests_with_zero_rejects(
    server: MockServer, synth: SynthSummary, tmp_path: Path
) -> None:
    out = tmp_path / "cbis"
    report = _fetch(server, out, workers=3)

    assert report.ok and len(report.downloaded) == len(server.listing) + 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cbis"]  # nothing outside
    assert not (out / ".fetch-tmp").exists()
    source = {row["Series UID"]: row for row in _read_csv(synth.out / "metadata.csv")}
    fetched = _read_csv(out / "metadata.csv")
    assert tuple(fetched[0]) == METADATA_COLUMNS and len(fetched) == len(source)
    for row in fetched:
        original = source[row["Series UID"]]
        assert {key: row[key] for key in IDENTITY} == {key: original[key] for key in IDENTITY}
        location = row["File Location"]
        assert _digests(out / location) == _digests(synth.out / location)
    for name in server.files.keys() - {"mias"}:
        assert (out / name).read_bytes() == (synth.out / name).read_bytes()

    result = ingest("cbis-ddsm", root=out)
    full = [row for row in fetched if row["Series Description"] == "full mammogram images"]
    assert len(result.rejects) == 0
    assert len(result.index) == len(full) == synth.n_images
    assert len(result.lesions) == synth.n_abnormalities
    assert (result.lesions["mask_path"] != "").all() and (result.lesions["crop_path"] != "").all()
    assert set(result.index["dataset"]) == {"cbis-ddsm"}
    assert all(Path(path).is_relative_to(out) for path in result.index["image_path"])


def test_patients_limit_takes_first_patients_of_each_subset(
    server: MockServer, tmp_path: Path
) -> None:
    patients = {
        _patient(s["PatientID"]) for s in server.listing if "Mass-Training" in s["PatientID"]
    }
    assert len(patients) == 2  # the limit has someone to leave out

    report = _fetch(server, tmp_path, subsets=["mass-train"], patients=1)

    subjects = sorted(p.name for p in (tmp_path / "CBIS-DDSM").iterdir())
    assert subjects == _first_patients(server, "Mass-Training", 1)
    assert {_patient(subject) for subject in subjects} == {min(patients)}
    assert report.downloaded[-1] == "mass_case_description_train_set.csv"
    assert not (tmp_path / "calc_case_description_test_set.csv").exists()


def test_select_series_groups_full_and_roi_series_by_patient() -> None:
    listing = [
        SeriesInfo(uid=f"u{n}", study_uid="s", subject=subject)
        for n, subject in enumerate([
            "Calc-Test_P_00002_LEFT_CC", "Calc-Test_P_00001_RIGHT_MLO_1",
            "Calc-Test_P_00001_RIGHT_MLO", "Mass-Test_P_00001_LEFT_CC", "Calc-Test_P_00003_LEFT_CC",
        ])
    ]  # fmt: skip
    chosen = select_series(listing, ["calc-test"], patients=2)
    assert [s.subject for s in chosen] == [
        "Calc-Test_P_00001_RIGHT_MLO", "Calc-Test_P_00001_RIGHT_MLO_1", "Calc-Test_P_00002_LEFT_CC",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown subset"):
        select_series(listing, ["mass-validation"], patients=None)


def test_interrupted_run_resumes_without_refetching_finished_series(
    server: MockServer, tmp_path: Path
) -> None:
    uids = _series_uids(server)
    cut_uid = uids[2]
    server.cut(cut_uid, after=300)

    first = _fetch(server, tmp_path, policy=ONCE, workers=2)
    assert [uid for uid, _ in first.failed] == [cut_uid]
    assert "closed after 300" in first.failed[0][1]
    partial = tmp_path / ".fetch-tmp" / f"{cut_uid}.zip.part"
    assert partial.stat().st_size == 300  # kept for resume, never under a final name
    assert not list(tmp_path.rglob(f"{cut_uid}.zip"))
    assert cut_uid not in (tmp_path / "metadata.csv").read_text()

    second = _fetch(server, tmp_path, workers=2)
    assert second.ok and second.downloaded == [cut_uid]
    assert len(second.skipped) == len(uids) - 1 + 4
    assert server.requests[cut_uid] == 2 and server.ranges[cut_uid][1] == "bytes=300-"
    assert all(server.requests[uid] == 1 for uid in uids if uid != cut_uid)
    assert cut_uid in (tmp_path / "metadata.csv").read_text()


def test_cut_stream_is_resumed_in_the_same_run(server: MockServer, tmp_path: Path) -> None:
    uid = next(s["SeriesInstanceUID"] for s in server.listing if s["PatientID"][:5] == "Calc-")
    server.cut(uid, after=100)
    report = _fetch(server, tmp_path, subsets=["calc-train", "calc-test"])
    assert report.ok and uid in report.downloaded
    assert server.ranges[uid] == [None, "bytes=100-"]


def test_tampered_file_is_fetched_again(server: MockServer, tmp_path: Path) -> None:
    _fetch(server, tmp_path, subsets=["calc-test"])
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    uid, entry = next((k[7:], v) for k, v in manifest["items"].items() if k.startswith("series:"))
    (tmp_path / entry["files"][0]["path"]).write_bytes(b"damaged")

    report = _fetch(server, tmp_path, subsets=["calc-test"])
    assert report.downloaded == [uid] and server.requests[uid] == 2


def test_server_error_is_answered_by_a_retry(server: MockServer, tmp_path: Path) -> None:
    server.fail_next(2)
    report = _fetch(server, tmp_path, subsets=["calc-test"])
    assert report.ok and server.requests["getSeries"] == 3


def test_refusal_is_not_retried(server: MockServer, tmp_path: Path) -> None:
    report = fetch_cbis_ddsm(
        tmp_path, subsets=["calc-test"], base_url=server.base_url,
        csv_base_url=server.url + "/moved", policy=FAST, progress=False,
    )  # fmt: skip
    assert [name for name, _ in report.failed] == ["calc_case_description_test_set.csv"]
    assert "HTTP 404" in report.failed[0][1] and "NBIA Data Retriever" in report.failed[0][1]
    assert server.requests["calc_case_description_test_set.csv"] == 1


def test_corrupted_archive_is_named_and_leaves_nothing(server: MockServer, tmp_path: Path) -> None:
    bad = server.listing[0]
    server.corrupt.add(bad["SeriesInstanceUID"])

    report = _fetch(server, tmp_path)

    assert [uid for uid, _ in report.failed] == [bad["SeriesInstanceUID"]]
    message = report.failed[0][1]
    assert bad["PatientID"] in message and "corrupt archive" in message
    assert not (tmp_path / "CBIS-DDSM" / bad["PatientID"]).exists()
    assert not (tmp_path / ".fetch-tmp").exists()
    assert bad["SeriesInstanceUID"] not in (tmp_path / MANIFEST_NAME).read_text()
    assert len(report.downloaded) == len(server.listing) - 1 + 4


def test_offline_run_fails_fast_with_the_manual_route(tmp_path: Path, capsys) -> None:
    base = f"http://127.0.0.1:{_closed_port()}/nbia-api/services/v4"
    started = time.monotonic()
    with pytest.raises(FetchError, match="cannot reach .*NBIA Data Retriever"):
        fetch_cbis_ddsm(tmp_path / "out", base_url=base, progress=False)
    status = main(["fetch", "cbis-ddsm", "--out", str(tmp_path / "out"), "--base-url", base])
    assert time.monotonic() - started < 5
    error = capsys.readouterr().err.strip()
    assert status == 1 and len(error.splitlines()) == 1 and "README" in error
    assert not (tmp_path / "out").exists()


def test_cli_fetches_a_subset(server: MockServer, tmp_path: Path, capsys) -> None:
    status = main([
        "fetch", "cbis-ddsm", "--out", str(tmp_path), "--subset", "mass-train,calc-test",
        "--patients", "1", "--workers", "2", "--base-url", server.base_url,
        "--csv-base-url", server.csv_base_url, "--no-progress",
    ])  # fmt: skip
    subjects = _first_patients(server, "Mass-Training", 1) + _first_patients(server, "Calc-Test", 1)
    series = [s for s in server.listing if s["PatientID"] in subjects]
    assert status == 0 and f"{len(series) + 2} downloaded" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "CBIS-DDSM").iterdir()) == sorted(subjects)


def test_mini_mias_fetch_verifies_and_unpacks(server: MockServer, tmp_path: Path) -> None:
    report = fetch_mini_mias(tmp_path, url=server.mias_url, policy=FAST, progress=False)

    assert report.downloaded == ["mini-mias"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["Info.txt", "Licence.txt", "README", MANIFEST_NAME,
                     "mdb001.pgm", "mdb002.pgm", "mdb003.pgm", "mdb004.pgm"]  # fmt: skip
    assert "mdb001 G CIRC B 535 425 197" in (tmp_path / "Info.txt").read_text()
    again = fetch_mini_mias(tmp_path, url=server.mias_url, policy=FAST, progress=False)
    assert again.skipped == ["mini-mias"] and server.requests["mias"] == 1


def test_mini_mias_table_is_taken_from_the_readme(collection: Collection, tmp_path: Path) -> None:
    with MockServer(collection, build_mias_archive(info_in_readme=True)) as running:
        fetch_mini_mias(tmp_path, url=running.mias_url, policy=FAST, progress=False)
    rows = (tmp_path / "Info.txt").read_text().splitlines()
    assert rows[:3] == [
        "mdb001 G CIRC B 535 425 197",
        "mdb002 G CIRC B 522 280 69",
        "mdb003 D NORM",
    ]


def test_mini_mias_corrupt_archive_leaves_nothing(collection: Collection, tmp_path: Path) -> None:
    with MockServer(collection, corrupted(build_mias_archive())) as running:
        with pytest.raises(FetchError, match="all-mias.tar.gz: corrupt archive"):
            fetch_mini_mias(tmp_path, url=running.mias_url, policy=FAST, progress=False)
        wrong = "0" * 64
        with pytest.raises(FetchError, match="differs from the expected"):
            fetch_mini_mias(tmp_path, url=running.mias_url, sha256=wrong, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff=0.5, max_backoff=3)
    assert [policy.delay(k) for k in range(4)] == [0.5, 1.0, 2.0, 3]
