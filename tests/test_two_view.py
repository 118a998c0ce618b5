"""The two-view ``breast`` task: pairing, splits, the shared trunk, training, inference
and evaluation, on the toy set of ``fixtures_breast`` (13 views of 7 breasts, 32 px)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from fixtures_breast import BREAST_SIZE, TOY_VIEWS, toy_view_file

from mammo_utils.cli import main
from mammo_utils.preprocess import PreprocessConfig, run_preprocess
from mammo_utils.preprocess.breast_task import SINGLE_VIEW_EXCLUDED, pair_views


def _views(*specs) -> pd.DataFrame:
    """Written-view rows from ``(patient, laterality, view, label, split)`` tuples."""
    return pd.DataFrame([
        {"path": f"{label}/{patient}_{side}_{view}.png", "image_id": f"{patient}_{side}_{view}",
         "patient_id": patient, "laterality": side, "view": view, "split": split,
         "label": label, "dataset": "toy", "image_path": f"/src/{patient}_{side}_{view}.dcm"}
        for patient, side, view, label, split in specs
    ])


TOY_PAIRING = _views(
    ("A", "LEFT", "MLO", "NORMAL", "train"),      # both views, MLO listed first
    ("A", "LEFT", "CC", "MALIGNANT", "train"),
    ("A", "RIGHT", "CC", "BENIGN", "train"),      # a missing MLO
    ("B", "LEFT", "CC", "NORMAL", "test"),        # a second patient, both views
    ("B", "LEFT", "MLO", "BENIGN", "test"),
)


def test_pairing_excludes_a_single_view_breast_and_counts_it():
    breasts, rejects, counts = pair_views(TOY_PAIRING, "exclude")

    assert list(breasts["item_id"]) == ["A_LEFT", "B_LEFT"]
    first = breasts.iloc[0]
    assert (first["cc_image_id"], first["mlo_image_id"]) == ("A_LEFT_CC", "A_LEFT_MLO")
    assert first["label"] == "MALIGNANT"  # the most severe of its views
    assert list(breasts["split"]) == ["train", "test"]
    assert rejects == [{"source": "/src/A_RIGHT_CC.dcm",
                        "reason": f"{SINGLE_VIEW_EXCLUDED}: image A_RIGHT_CC (breast A_RIGHT)"}]
    assert counts["breasts_in"] == 3 == counts["breasts_paired"] + counts["breasts_excluded"]
    assert counts["views_in"] == 5 == counts["views_paired"] + 1


def test_pairing_duplicates_a_single_view_breast_when_asked():
    breasts, rejects, counts = pair_views(TOY_PAIRING, "duplicate")

    single = breasts.set_index("item_id").loc["A_RIGHT"]
    assert single["cc_path"] == single["mlo_path"] == "BENIGN/A_RIGHT_CC.png"
    assert single["views"] == "CC" and single["label"] == "BENIGN"
    assert rejects == []
    assert (counts["breasts_in"], counts["breasts_paired"], counts["breasts_duplicated"],
            counts["views_paired"]) == (3, 2, 1, 5)


def test_breast_preprocessing_writes_one_row_per_breast_grouped_by_patient(
    toy_breast_index, tmp_path
):
    result = run_preprocess(toy_breast_index, tmp_path / "breast",
                            PreprocessConfig(task="breast", size=BREAST_SIZE),
                            progress=False)

    manifest = result.manifest
    assert len(manifest) == 6 and manifest["item_id"].is_unique  # P7's lone MLO excluded
    assert result.breasts["breasts_in"] == 7 and result.breasts["breasts_excluded"] == 1
    assert len(result.rejects) == 1 and "P7_RIGHT_MLO" in result.rejects["reason"][0]
    splits = {patient: split for patient, split, *_ in TOY_VIEWS}
    assert (manifest["split"] == manifest["patient_id"].map(splits)).all()
    for column in ("cc_path", "mlo_path"):
        assert all((tmp_path / "breast" / path).is_file() for path in manifest[column])
    shapes = {cv2.imread(str(tmp_path / "breast" / path), cv2.IMREAD_UNCHANGED).shape
              for path in pd.concat([manifest["cc_path"], manifest["mlo_path"]])}
    assert shapes == {(BREAST_SIZE, BREAST_SIZE)}  # both views on one canvas
    config = json.loads((tmp_path / "breast" / "preprocess_config.json").read_text())
    assert (config["task"], config["single_view"]) == ("breast", "exclude")
    assert "breasts in" in result.summary()


def test_preprocess_command_records_the_single_view_option(toy_breast_index, tmp_path,
                                                           capsys):
    common = ["preprocess", "--index", str(toy_breast_index), "--task", "breast", "--size",
              str(BREAST_SIZE)]

    assert main([*common, "--out", str(tmp_path / "exclude")]) == 1  # the lone view rejected
    assert "1 single view excluded" in capsys.readouterr().out
    assert main([*common, "--single-view", "duplicate", "--out", str(tmp_path / "dup")]) == 0
    config = json.loads((tmp_path / "dup" / "preprocess_config.json").read_text())
    assert config["single_view"] == "duplicate"


@pytest.mark.parametrize("architecture", ["baseline", "mobilenetv2"])
def test_shared_trunk_layer_names_are_the_single_view_trunk_names(architecture):
    """The contract with ``--init-from``: weights copied by layer name from a single-view
    model fill the nested trunk, whose layers are named, and shaped, as that model's."""
    from mammo_utils import models

    single = models.build_model(architecture, 4, BREAST_SIZE)
    two_view = models.build_two_view_model(architecture, 4, BREAST_SIZE)
    trunk = models.trunk_of(two_view)
    names = [layer.name for layer in trunk.layers[1:]]  # after its input layer
    single_names = [layer.name for layer in single.layers[1:]]
    assert names == single_names[: single_names.index("global_pool")]
    for name in names:
        assert ([w.shape for w in trunk.get_layer(name).weights]
                == [w.shape for w in single.get_layer(name).weights])
    assert [layer.name for layer in two_view.layers].count("trunk") == 1  # one, shared
    assert [tensor.name for tensor in two_view.inputs] == ["cc", "mlo"]


def test_breast_pipeline_yields_both_views(toy_breast_data):
    from mammo_utils import pipeline

    batch, labels = next(iter(pipeline.make_dataset(toy_breast_data, "train", batch_size=2)))
    assert set(batch) == {"cc", "mlo"}
    assert batch["cc"].shape == batch["mlo"].shape == (2, BREAST_SIZE, BREAST_SIZE, 1)
    assert not np.allclose(batch["cc"].numpy(), batch["mlo"].numpy())


def test_two_view_model_trains_and_predicts_a_breast_from_two_files(
    toy_breast_model, toy_breast_index, capsys
):
    assert toy_breast_model.card.task == "breast"
    cc, mlo = (toy_view_file(toy_breast_index, f"P1_LEFT_{view}") for view in ("CC", "MLO"))

    status = main(["predict", str(mlo), str(cc), "--model",
                   str(toy_breast_model.model_dir), "--json"])

    assert status == 0
    record = json.loads(capsys.readouterr().out)
    assert record["file"] == f"{mlo} + {cc}"
    assert record["input_kind"] == "breast" and record["metadata"]["view"] == "CC+MLO"
    assert abs(sum(record["probabilities"].values()) - 1) < 1e-5
    assert record["label"] in record["probabilities"]


@pytest.mark.parametrize("other", ["P2_LEFT_MLO", "P1_RIGHT_MLO"])
def test_a_mismatched_pair_is_refused_naming_both_files(
    toy_breast_model, toy_breast_index, tmp_path, capsys, other
):
    cc = toy_view_file(toy_breast_index, "P1_LEFT_CC")
    second = toy_view_file(toy_breast_index, other)
    if not second.exists():  # P1 has no right breast: copy a view under that name
        second = tmp_path / f"{other}.png"
        second.write_bytes(toy_view_file(toy_breast_index, "P1_LEFT_MLO").read_bytes())

    status = main(["predict", str(cc), str(second), "--model", str(toy_breast_model.model_dir)])

    assert status == 1
    message = capsys.readouterr().err
    assert str(cc) in message and str(second) in message
    assert ("different patients" if other.startswith("P2") else "different sides") in message


def test_one_file_follows_the_models_single_view_option(toy_breast_model, toy_breast_index):
    from mammo_utils.inference import Classifier

    mlo = toy_view_file(toy_breast_index, "P7_RIGHT_MLO")
    duplicate = Classifier(toy_breast_model.model, toy_breast_model.card)
    prediction = duplicate.predict(mlo)
    assert any("given as both CC and MLO" in note for note in prediction.warnings)
    assert prediction.image.shape == (BREAST_SIZE, 2 * BREAST_SIZE)

    card = {**toy_breast_model.card.__dict__,
            "preprocessing": {**toy_breast_model.card.preprocessing, "single_view": "exclude"}}
    with pytest.raises(ValueError, match="P7_RIGHT_MLO.png: this two-view model needs"):
        Classifier(toy_breast_model.model, card).predict(mlo)


def test_a_breast_prediction_has_a_grad_cam_map_per_view(toy_breast_model, toy_breast_index):
    from mammo_utils.inference import Classifier

    classifier = Classifier(toy_breast_model.model, toy_breast_model.card)
    cc, mlo = (toy_view_file(toy_breast_index, f"P3_LEFT_{view}") for view in ("CC", "MLO"))
    prediction = classifier.predict_breast(cc, mlo)

    assert prediction.heatmap.shape == prediction.image.shape == (BREAST_SIZE, 2 * BREAST_SIZE)
    assert prediction.heatmap.min() >= 0 and prediction.heatmap.max() == pytest.approx(1.0)
    canvases = [classifier.fit_canvas(classifier_input)[0] for classifier_input in
                (cv2.imread(str(path), cv2.IMREAD_UNCHANGED) / 65535.0 for path in (cc, mlo))]
    direct = toy_breast_model.model.predict_on_batch(
        {"cc": canvases[0][None, ..., None], "mlo": canvases[1][None, ..., None]})[0]
    assert np.allclose(list(prediction.probabilities.values()), direct, atol=1e-5)


def test_evaluate_writes_the_breast_level_of_a_two_view_model(toy_breast_model,
                                                              toy_breast_data, tmp_path):
    from mammo_utils.evaluate import evaluate_model

    result = evaluate_model(toy_breast_model.model_dir, toy_breast_data, split="train",
                            out_dir=tmp_path, n_bootstrap=10, make_figures=False,
                            progress=False)

    metrics = result.metrics
    assert metrics["level"] == "breast"
    assert "not_applicable" in metrics["levels"]["image"]
    breast = metrics["levels"]["breast"]
    assert breast["counts"]["breasts"] == 5 and breast["counts"]["single_view"] == 1
    assert breast["malignant_roc_auc"] == metrics["malignant_roc_auc"]
    table = pd.read_csv(result.metrics_dir / "predictions_breast.csv")
    assert list(table["breast_id"]) == ["P1_LEFT", "P2_LEFT", "P3_LEFT", "P4_LEFT", "P7_RIGHT"]
    assert metrics["protocol"] == "toy train split, 9 images, 5 breasts, 5 patients"
