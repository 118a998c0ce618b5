"""mini-MIAS ingest on an Info.txt written in the published format, with tiny PGMs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mammo_utils.cli import main
from mammo_utils.ingest import IngestResult, ReconciliationError, ingest, mias
from mammo_utils.splits import assert_no_patient_leakage

INFO = """\
MIAS MiniMammographic Database: information on the images.

1st column: MIAS database reference number.
2nd column: Character of background tissue: F Fatty, G Fatty-glandular, D Dense-glandular
3rd column: Class of abnormality present: CALC CIRC SPIC MISC ARCH ASYM NORM
4th column: Severity of abnormality; B Benign, M Malignant
5th, 6th columns: x,y image-coordinates of centre of abnormality.
7th column: Approximate radius (in pixels) of a circle enclosing the abnormality.

REFNUM BG CLASS SEVERITY X Y RADIUS
mdb001 G CIRC B 535 425 197
mdb002 G CIRC B 522 280 69
mdb003 D NORM\x20
mdb004 D NORM
mdb005 F CIRC B 477 133 30
mdb005 F CIRC B 500 168 26
mdb007 G NORM
mdb010 F NORM
mdb059 F CIRC B
mdb060 G ARCH M 600 400 40
mdb213 G CALC M\x20
mdb214 G CALC B 547 573 48
mdb215 D SPIC XYZ 1 2 3
"""
ON_DISK = ("001", "002", "003", "004", "005", "006", "007", "059", "060", "213", "214", "215")


def write_pgm(path: Path, size: int = 8) -> None:
    pixels = np.arange(size * size, dtype=np.uint8).reshape(size, size)
    path.write_bytes(f"P5\n{size} {size}\n255\n".encode() + pixels.tobytes())


@pytest.fixture
def mias_root(tmp_path: Path) -> Path:
    (tmp_path / "Info.txt").write_text(INFO)
    for number in ON_DISK:
        write_pgm(tmp_path / f"mdb{number}.pgm")
    return tmp_path


def test_parse_info_keeps_table_rows_and_rejects_garbage(mias_root: Path) -> None:
    table, bad = mias.parse_info(mias_root / "Info.txt")
    assert len(table) == 12
    assert table.loc[table["refnum"] == "mdb005", "x"].tolist() == ["477", "500"]
    assert [row["source"] for row in bad] == ["Info.txt:23"]
    assert "mdb215" in bad[0]["reason"]


def test_mias_index_labels_patients_and_sides(mias_root: Path) -> None:
    result = ingest("mias", mias_root, seed=1)
    index = result.index.set_index("image_id")
    assert index.loc["mdb003", "label"] == "NORMAL"
    assert index.loc["mdb003", "n_abnormalities"] == 0
    assert index.loc["mdb005", "n_abnormalities"] == 2
    assert index.loc["mdb060", "label"] == "MALIGNANT"
    assert index.loc["mdb213", "abnormality_types"] == "calcification"
    assert index.loc["mdb001", "laterality"] == "RIGHT"
    assert index.loc["mdb002", "laterality"] == "LEFT"
    assert index.loc["mdb001", "patient_id"] == index.loc["mdb002", "patient_id"] == "W001"
    assert index.loc["mdb059", "patient_id"] == index.loc["mdb060", "patient_id"] == "W030"
    assert set(index["view"]) == {"MLO"}
    assert set(index["dataset"]) == {"mias"}
    assert index.loc["mdb214", "breast_density"] == "G"
    assert_no_patient_leakage(result.index)


def test_mias_lesions_keep_top_based_centre_and_radius(mias_root: Path) -> None:
    lesions = ingest("mias", mias_root).lesions.set_index(["image_id", "abnormality_id"])
    first = lesions.loc[("mdb001", 1)]
    assert (first["center_x"], first["center_y"], first["radius"]) == (535, 1024 - 425, 197)
    assert lesions.loc[("mdb005", 2), "center_y"] == 1024 - 168
    assert lesions.loc[("mdb059", 1), "center_x"] == ""  # no coordinates published
    assert lesions.loc[("mdb213", 1), "type"] == "calcification"
    assert lesions.loc[("mdb213", 1), "radius"] == ""
    assert lesions.loc[("mdb001", 1), "mass_margins"] == "CIRCUMSCRIBED"
    assert lesions.loc[("mdb060", 1), "type"] == "architectural distortion"
    assert lesions.loc[("mdb214", 1), "pathology"] == "BENIGN"
    assert "mdb003" not in lesions.index.get_level_values(0)


def test_mias_rejects_reconcile(mias_root: Path) -> None:
    result = ingest("mias", mias_root)
    reasons = dict(zip(result.rejects["source"], result.rejects["reason"], strict=True))
    assert reasons["Info.txt:18"] == "image not found: mdb010.pgm"
    assert any(source.endswith("mdb006.pgm") for source in reasons)
    result.check_reconciliation()
    table = result.reconciliation.set_index("unit")
    assert table.loc["table rows", ["total", "kept", "rejected"]].tolist() == [13, 11, 2]
    assert table.loc["images", ["total", "kept", "rejected"]].tolist() == [13, 10, 3]


#: Rows whose coordinate fields refer to one of the file's notes, as the published file
#: does for calcifications without one centre, or hold nothing at all.
NOTES = """\
NOTE 3: calcifications spread over the breast have no single centre; see the notes
instead of the coordinates.

REFNUM BG CLASS SEVERITY X Y RADIUS
mdb231 F CALC M 603 538 44
mdb233 G CALC M *NOTE 3*
mdb236 D CALC B * NOTE 3 *
mdb238 F CALC M
mdb239 D CALC M 567 808 25
mdb239 D CALC M *NOTE 3*
mdb240 D CALC B 12 north 7
"""


@pytest.fixture
def notes_root(tmp_path: Path) -> Path:
    (tmp_path / "Info.txt").write_text(NOTES)
    for number in ("231", "233", "236", "238", "239", "240"):
        write_pgm(tmp_path / f"mdb{number}.pgm")
    return tmp_path


def test_rows_with_a_note_for_coordinates_keep_image_and_lesion(notes_root: Path) -> None:
    result = ingest("mias", notes_root)
    index = result.index.set_index("image_id")
    for refnum, label in (("mdb233", "MALIGNANT"), ("mdb236", "BENIGN"), ("mdb238", "MALIGNANT")):
        assert index.loc[refnum, "label"] == label
        assert index.loc[refnum, "abnormality_types"] == "calcification"
        assert index.loc[refnum, "n_abnormalities"] == 1
    assert index.loc["mdb239", "n_abnormalities"] == 2
    lesions = result.lesions.set_index(["image_id", "abnormality_id"])
    for key in (("mdb233", 1), ("mdb236", 1), ("mdb238", 1), ("mdb239", 2)):
        assert lesions.loc[key, ["center_x", "center_y", "radius"]].tolist() == ["", "", ""]
        assert lesions.loc[key, "type"] == "calcification"
    assert lesions.loc[("mdb239", 1), "center_x"] == 567
    assert lesions.loc[("mdb233", 1), "pathology"] == "MALIGNANT"
    assert result.warnings[mias.NO_LOCATION] == 4
    assert "4 abnormalities without a location" in result.summary()
    # coordinates that are neither numbers nor a note stay unparsable
    assert result.rejects["source"].tolist() == ["Info.txt:11", str(notes_root / "mdb240.pgm")]
    table = result.reconciliation.set_index("unit")
    assert table.loc["table rows", ["total", "kept", "rejected"]].tolist() == [7, 6, 1]
    assert table.loc["images", ["total", "kept", "rejected"]].tolist() == [6, 5, 1]
    result.check_reconciliation()


def test_a_row_lost_without_a_reject_fails_the_reconciliation(
    mias_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parse_info = mias.parse_info

    def parse_and_lose_a_row(path: Path):
        table, rejects = parse_info(path)
        return table[table["refnum"] != "mdb005"], rejects

    monkeypatch.setattr(mias, "parse_info", parse_and_lose_a_row)
    with pytest.raises(ReconciliationError) as error:
        ingest("mias", mias_root)
    assert "mias Info.txt (table rows): 13 read, 9 kept, 2 rejected; 2 read but neither" in str(
        error.value
    )


def test_second_file_of_one_name_is_rejected_not_dropped(mias_root: Path) -> None:
    (mias_root / "copies").mkdir()
    write_pgm(mias_root / "copies" / "mdb001.pgm")
    result = ingest("mias", mias_root)
    reasons = dict(zip(result.rejects["source"], result.rejects["reason"], strict=True))
    assert reasons[str(mias_root / "mdb001.pgm")].startswith("same image name as ")
    assert result.index.set_index("image_id").loc["mdb001", "image_path"] == str(
        (mias_root / "copies" / "mdb001.pgm").resolve()
    )
    table = result.reconciliation.set_index("unit")
    assert table.loc["images", ["total", "kept", "rejected"]].tolist() == [14, 10, 4]


def test_mias_views_without_mlo_reject_everything(mias_root: Path) -> None:
    result = ingest("mias", mias_root, views=["CC"])
    assert result.index.empty
    result.check_reconciliation()


def test_missing_info_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no Info.txt"):
        ingest("mias", tmp_path)


def test_cli_also_combines_with_prefixed_patients(
    mias_root: Path, tiny_cbis_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "combined"
    argv = ["ingest", "cbis-ddsm", "--root", str(tiny_cbis_root), "--out", str(out)]
    assert main([*argv, "--also", f"mias:{mias_root}"]) == 0
    result = IngestResult.load(out)
    assert set(result.index["dataset"]) == {"cbis-ddsm", "mias"}
    assert "mias:W001" in set(result.index["patient_id"])
    assert "cbis-ddsm:P_00003" in set(result.index["patient_id"])
    assert_no_patient_leakage(result.index)
    result.check_reconciliation()
    assert set(result.reconciliation["dataset"]) == {"cbis-ddsm", "mias"}
