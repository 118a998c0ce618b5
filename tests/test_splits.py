"""Patient-grouped, stratified, seeded splits and the leakage check."""

from __future__ import annotations

import pandas as pd
import pytest

from mammo_utils.ingest import IngestResult, combine
from mammo_utils.splits import (
    PatientLeakageError,
    assert_no_patient_leakage,
    assign_splits,
    split_summary,
)

LABELS = ("NORMAL", "BENIGN", "MALIGNANT")


def make_index(n_patients: int, images_per_patient: int = 2, official: str = "none"):
    rows = [
        {
            "image_id": f"P{p}_{i}",
            "patient_id": f"P{p}",
            "label": LABELS[p % len(LABELS)],
            "official_split": official,
            "dataset": "toy",
        }
        for p in range(n_patients)
        for i in range(images_per_patient)
    ]
    return pd.DataFrame(rows)


def test_leakage_assertion_names_patients_and_splits() -> None:
    frame = pd.DataFrame(
        {"patient_id": ["A", "A", "B", "C", "C"], "split": ["train", "test", "val", "val", "val"]}
    )
    with pytest.raises(PatientLeakageError, match=r"A: test, train") as caught:
        assert_no_patient_leakage(frame)
    assert caught.value.leaks == {"A": ["test", "train"]}
    assert_no_patient_leakage(frame[frame["patient_id"] != "A"])


def test_leakage_assertion_custom_columns_and_missing_column() -> None:
    frame = pd.DataFrame({"woman": ["A", "A"], "fold": ["train", "val"]})
    with pytest.raises(PatientLeakageError):
        assert_no_patient_leakage(frame, patient_col="woman", split_col="fold")
    with pytest.raises(KeyError, match="split"):
        assert_no_patient_leakage(frame, patient_col="woman")


def test_splits_group_patients_and_hit_fractions() -> None:
    split = assign_splits(make_index(300), val_fraction=0.2, test_fraction=0.1, seed=1)
    assert_no_patient_leakage(split)
    per_patient = split.groupby("patient_id")["split"].first().value_counts()
    assert per_patient["test"] == 30 and per_patient["val"] == 60
    shares = pd.crosstab(split["split"], split["label"], normalize="index")
    assert (shares.sub(shares.loc["train"]).abs() < 0.02).all().all()


def test_splits_are_seeded() -> None:
    index = make_index(60)
    first = assign_splits(index, seed=7)["split"]
    assert first.equals(assign_splits(index, seed=7)["split"])
    assert not first.equals(assign_splits(index, seed=8)["split"])


def test_official_test_is_kept_and_cross_file_patient_goes_to_test() -> None:
    train = make_index(40, official="train")
    test = make_index(10, official="test").assign(patient_id=lambda f: "T" + f["patient_id"])
    both = pd.DataFrame(
        [
            {
                "image_id": "x1",
                "patient_id": "P_00041",
                "label": "BENIGN",
                "official_split": "train",
            },
            {
                "image_id": "x2",
                "patient_id": "P_00041",
                "label": "MALIGNANT",
                "official_split": "test",
            },
        ]
    )
    split = assign_splits(pd.concat([train, test, both], ignore_index=True), seed=0)
    assert set(split.loc[split["official_split"] == "test", "split"]) == {"test"}
    assert set(split.loc[split["patient_id"] == "P_00041", "split"]) == {"test"}
    train_only = split[split["patient_id"].isin(train["patient_id"])]
    assert set(train_only["split"]) == {"train", "val"}
    assert "val" in set(split["split"])


@pytest.mark.parametrize("n_patients", [1, 2, 3, 6])
def test_tiny_data_does_not_crash(n_patients: int) -> None:
    split = assign_splits(make_index(n_patients, images_per_patient=1), seed=0)
    assert split["split"].isin({"train", "val", "test"}).all()
    assert_no_patient_leakage(split)
    assert "train" in set(split["split"])


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match="leave patients for training"):
        assign_splits(make_index(4), val_fraction=0.5, test_fraction=0.5)


def test_split_summary_counts_images() -> None:
    table = split_summary(assign_splits(make_index(30), seed=0))
    assert table.loc["total", "total"] == 60
    assert list(table.index)[-1] == "total"


def test_combine_prefixes_patients_and_recomputes_splits() -> None:
    def result(dataset: str, prefix: str) -> IngestResult:
        index = make_index(20).assign(
            dataset=dataset, image_id=lambda f: prefix + f["image_id"], split=""
        )
        reconciliation = pd.DataFrame(
            [
                {
                    "dataset": dataset,
                    "source": "x",
                    "unit": "images",
                    "total": 40,
                    "kept": 40,
                    "rejected": 0,
                }
            ]
        )
        return IngestResult(index, pd.DataFrame(), pd.DataFrame(), reconciliation)

    merged = combine([result("mias", "m"), result("folder", "f")], seed=2)
    assert merged.index["patient_id"].str.match(r"^(mias|folder):P\d+$").all()
    assert merged.index["patient_id"].nunique() == 40
    assert set(merged.datasets) == {"mias", "folder"}
    assert set(merged.index["split"]) == {"train", "val", "test"}
    assert len(merged.reconciliation) == 2
    with pytest.raises(ValueError, match="is given to two images"):
        combine([result("mias", "m"), result("folder", "m")])
