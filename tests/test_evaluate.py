"""evaluate_model, figures, the comparison table and `mammo evaluate` on a tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from fixtures_inference import png_bytes, synthetic_breast

from mammo_utils.classes import scheme_classes
from mammo_utils.cli import main
from mammo_utils.comparison import LEVEL_ORDER, TABLE_METRICS, level_column, write_comparison
from mammo_utils.evaluate import evaluate_model, protocol_statement
from mammo_utils.files import sha256_file
from mammo_utils.levels import LEVELS
from mammo_utils.metrics import BOOTSTRAP_METRICS
from mammo_utils.model_card import find_model_dirs

SIZE = 16
FIGURES = {"confusion_matrix", "roc", "precision_recall", "reliability", "mistakes",
           "training_curves"}


@pytest.fixture(scope="module")
def processed_dir(tmp_path_factory) -> Path:
    """A processed folder: 16-bit PNGs whose brightness encodes the label, and a manifest."""
    root = tmp_path_factory.mktemp("processed")
    rng = np.random.default_rng(0)
    classes = scheme_classes("four_class")
    rows = []
    for i in range(48):
        label = classes[i % 4]
        split = ("train", "val", "test")[i % 3]
        image = np.full((SIZE, SIZE), 0.2 + 0.2 * (i % 4)) + rng.normal(0, 0.02, (SIZE, SIZE))
        name = f"img{i:03d}.png"
        cv2.imwrite(str(root / name), (np.clip(image, 0, 1) * 65535).astype(np.uint16))
        rows.append({"path": name, "item_id": f"it{i}", "image_id": f"im{i}",
                     "patient_id": f"P{i // 2}", "split": split, "label": label,
                     "dataset": "synthetic"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "preprocess_config.json").write_text(json.dumps({"task": "image", "size": SIZE}))
    return root


def _tiny_model_dir(root: Path, name: str, scheme: str = "four_class") -> Path:
    import keras

    from mammo_utils.model_card import ModelCard

    classes = scheme_classes(scheme)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(len(classes), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    out = root / name
    out.mkdir(parents=True)
    model.save(out / "model.keras")
    pd.DataFrame({"epoch": [0, 1], "loss": [1.4, 1.2], "val_loss": [1.5, 1.3],
                  "accuracy": [0.3, 0.4], "val_accuracy": [0.25, 0.3]}).to_csv(
        out / "history.csv", index=False)
    ModelCard(model_name=name, architecture="tiny", classes=list(classes), label_scheme=scheme,
              task="image", image_size=SIZE, parameter_count=model.count_params(),
              training={"training_time_s": 1.5, "weights": "none"}).save(out)
    return out


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    _tiny_model_dir(root, "tiny_a")
    _tiny_model_dir(root, "tiny_b", scheme="three_class")
    return root


def test_evaluate_writes_predictions_metrics_and_figures(processed_dir, models_dir, tmp_path):
    result = evaluate_model(models_dir / "tiny_a", processed_dir, "test", tmp_path,
                            n_bootstrap=50, progress=False)
    predictions = pd.read_csv(tmp_path / "metrics" / "tiny_a" / "predictions.csv")
    manifest = pd.read_csv(processed_dir / "manifest.csv")
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    assert predictions["image_id"].tolist() == test["image_id"].tolist()
    assert predictions["true_label"].tolist() == test["label"].tolist()
    p_columns = [f"p_{c}" for c in scheme_classes("four_class")]
    assert list(predictions.columns[:8]) == ["image_id", "patient_id", "dataset", "true_label",
                                              *p_columns]
    np.testing.assert_allclose(predictions[p_columns].sum(axis=1), 1.0, atol=1e-5)
    metrics = json.loads((tmp_path / "metrics" / "tiny_a" / "metrics.json").read_text())
    assert metrics["n_images"] == len(test)
    assert metrics["n_patients"] == test["patient_id"].nunique()
    timing = json.loads((tmp_path / "metrics" / "tiny_a" / "timing.json").read_text())
    assert timing["inference_images_per_second"] > 0 and timing["training_time_s"] == 1.5
    assert metrics["model"]["parameter_count"] == 8  # Dense(1 -> 4)
    assert set(result.figures) == FIGURES
    for path in result.figures.values():
        assert path.is_file() and path.stat().st_size > 5000
        assert cv2.imread(str(path)).shape[1] >= 600  # 150 dpi, several inches wide


def test_three_class_model_scored_on_mapped_labels(processed_dir, models_dir, tmp_path):
    result = evaluate_model(models_dir / "tiny_b", processed_dir, "test", tmp_path,
                            n_bootstrap=20, make_figures=False, progress=False)
    assert result.metrics["classes"] == ["NORMAL", "BENIGN", "MALIGNANT"]
    assert "BENIGN_WITHOUT_CALLBACK" not in set(result.predictions["true_label"])
    assert result.figures == {}


def test_comparison_table(processed_dir, models_dir, tmp_path):
    for model_dir in find_model_dirs(models_dir):
        evaluate_model(model_dir, processed_dir, "test", tmp_path, n_bootstrap=20,
                       make_figures=False, progress=False)
    table = write_comparison(tmp_path / "metrics")
    assert sorted(table["model"]) == ["tiny_a", "tiny_b"]
    assert {"accuracy_lower", "malignant_roc_auc_upper", "parameter_count", "training_time_s",
            "inference_images_per_s"} <= set(table.columns)
    # One name per metric: every table column is the metrics.json key it shows.
    metrics = json.loads((tmp_path / "metrics" / "tiny_a" / "metrics.json").read_text())
    row = table.set_index("model").loc["tiny_a"]
    for name in TABLE_METRICS:
        assert row[name] == pytest.approx(metrics[name], nan_ok=True), name
    for name in BOOTSTRAP_METRICS:
        interval = metrics["bootstrap"]["intervals"][name]
        assert row[f"{name}_lower"] == pytest.approx(interval["lower"]), name
    assert (table["training_time_s"] == 1.5).all()
    markdown = (tmp_path / "metrics" / "comparison.md").read_text()
    levels_table, full_table = markdown.split("\n\n")[-2:]
    # header, rule, two models
    assert len(levels_table.splitlines()) == 4 and len(full_table.splitlines()) == 4
    assert "tiny_a" in full_table and "[" in full_table
    assert all(name in full_table.splitlines()[0] for name in TABLE_METRICS)
    assert markdown.startswith("Protocol: synthetic test split, 16 images, 16 patients\n")
    # An image model is scored at the image level only: its patch and breast cells are n/a.
    assert levels_table.splitlines()[0] == ("| model | image malignant_roc_auc | "
                                           "breast malignant_roc_auc | patch malignant_roc_auc |")
    assert levels_table.splitlines()[2].endswith("(n=16) | n/a | n/a |")
    assert row["image_malignant_roc_auc"] == pytest.approx(metrics["malignant_roc_auc"])
    assert pd.read_csv(tmp_path / "metrics" / "comparison.csv").shape[0] == 2


def test_comparison_refuses_a_stale_metrics_file(tmp_path):
    stale = tmp_path / "old_model" / "metrics.json"
    stale.parent.mkdir()
    stale.write_text(json.dumps({"n_images": 4, "n_patients": 2, "accuracy": 0.5,
                                 "malignant_vs_rest_auc": 0.7, "bootstrap": {"intervals": {}}}))
    with pytest.raises(ValueError, match=r"old_model.metrics\.json: no macro_f1, .*again"):
        write_comparison(tmp_path)


def test_two_evaluations_of_one_model_write_the_same_metrics_file(
        processed_dir, models_dir, tmp_path):
    """metrics.json is a function of the model and the data: run facts such as seconds and
    throughput live in timing.json, so two report runs can be compared byte for byte."""
    texts = []
    for run in ("first", "second"):
        result = evaluate_model(models_dir / "tiny_a", processed_dir, "test", tmp_path / run,
                                n_bootstrap=20, progress=False, make_figures=False)
        texts.append(result.metrics_path.read_text())
    assert texts[0] == texts[1]
    assert "second" not in texts[0] and "per_second" not in texts[0]


def test_find_model_dirs_names_missing(models_dir):
    assert [p.name for p in find_model_dirs(models_dir, ["tiny_b"])] == ["tiny_b"]
    with pytest.raises(FileNotFoundError, match="no model named nope"):
        find_model_dirs(models_dir, ["nope"])


def test_one_function_lists_the_models_of_a_run_or_of_every_run(models_dir, tmp_path):
    """The demo, notebooks 04 and 05 and evaluation all list models through it."""
    for run in ("run_a", "run_b"):
        shutil.copytree(models_dir, tmp_path / "models" / run)
    (tmp_path / "models" / "run_b" / "not_a_model").mkdir()
    in_run = find_model_dirs(tmp_path / "models" / "run_a")
    assert [path.name for path in in_run] == ["tiny_a", "tiny_b"]
    every_run = find_model_dirs(tmp_path / "models")
    assert [f"{p.parent.name}/{p.name}" for p in every_run] == [
        "run_a/tiny_a", "run_a/tiny_b", "run_b/tiny_a", "run_b/tiny_b"]


def test_cli_evaluate(processed_dir, models_dir, tmp_path, capsys):
    status = main(["evaluate", "--model", str(models_dir / "tiny_a"), "--data",
                   str(processed_dir), "--split", "val", "--out", str(tmp_path),
                   "--bootstrap", "10", "--no-figures"])
    assert status == 0
    assert "tiny_a on val" in capsys.readouterr().out
    assert (tmp_path / "metrics" / "tiny_a" / "metrics.json").is_file()


def test_cli_evaluate_bad_model_dir(processed_dir, tmp_path, capsys):
    status = main(["evaluate", "--model", str(tmp_path / "missing"), "--data",
                   str(processed_dir), "--out", str(tmp_path)])
    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("mammo evaluate: error: ") and "missing" in error


def test_permuted_class_order_is_scored_against_its_own_units(
    permuted_known_answer_model, known_answer_roi_data, tmp_path
):
    """A model whose card lists its classes in a permuted order is scored in that order:
    on the known-answer patches it must score far above chance, which it could not if
    the labels were encoded in the scheme's default order."""
    result = evaluate_model(permuted_known_answer_model.model_dir, known_answer_roi_data,
                            "test", tmp_path, n_bootstrap=20, progress=False)
    predictions = pd.read_csv(result.predictions_path)
    card_classes = list(permuted_known_answer_model.card.classes)
    assert [c.removeprefix("p_") for c in predictions.columns if c.startswith("p_")] == \
        card_classes
    assert result.metrics["accuracy"] > 0.75
    assert (predictions["predicted_label"] == predictions["true_label"]).mean() > 0.75


# ----------------------------------------------------------------- image and breast levels
ROI_SOURCES = [
    # image_id, patient, laterality, view, label, lesion
    ("p1_l_cc", "P1", "LEFT", "CC", "MALIGNANT", True),
    ("p1_l_mlo", "P1", "LEFT", "MLO", "MALIGNANT", True),
    ("p2_r_cc", "P2", "RIGHT", "CC", "NORMAL", False),
    ("p2_r_mlo", "P2", "RIGHT", "MLO", "BENIGN", False),
    ("p3_l_cc", "P3", "LEFT", "CC", "NORMAL", False),
    ("p3_r_cc", "P3", "RIGHT", "CC", "MALIGNANT", True),
    ("p4_l_cc", "P4", "LEFT", "CC", "not a class", False),
]


def write_project(root: Path, sources, *, key: str = "levels", dataset: str = "synthetic",
                  seed: int = 0) -> Path:
    """A workspace-shaped project: an ingest index of whole synthetic breasts under
    data/interim/<key>/ and a roi folder made from it under data/processed/<key>/."""
    interim = root / "data" / "interim" / key
    processed = root / "data" / "processed" / key / "roi-32-128x96"
    (interim / "images").mkdir(parents=True)
    processed.mkdir(parents=True)
    index_rows, manifest_rows = [], []
    for number, (image_id, patient, side, view, label, lesion) in enumerate(sources):
        image, _ = synthetic_breast(lesion, chest_wall="left" if side == "LEFT" else "right",
                                    seed=seed + number)
        path = interim / "images" / f"{image_id}.png"
        path.write_bytes(png_bytes(image))
        index_rows.append({"image_id": image_id, "patient_id": patient, "dataset": dataset,
                           "official_split": "test", "split": "test", "laterality": side,
                           "view": view, "label": label, "image_path": str(path)})
        patch = np.full((32, 32), 1.0 if lesion else 0.3)
        (processed / f"{image_id}.png").write_bytes(png_bytes(patch))
        manifest_rows.append({"path": f"{image_id}.png", "item_id": f"{image_id}_0",
                              "image_id": image_id, "patient_id": patient, "split": "test",
                              "label": "MALIGNANT" if lesion else "NORMAL",
                              "dataset": dataset})
    pd.DataFrame(index_rows).to_csv(interim / "index.csv", index=False)
    pd.DataFrame(manifest_rows).to_csv(processed / "manifest.csv", index=False)
    (processed / "preprocess_config.json").write_text(json.dumps({
        "task": "roi", "size": 32, "working_size": [128, 96], "min_breast_fraction": 0.5,
        "index_sha256": sha256_file(interim / "index.csv"), "datasets": [dataset]}))
    return processed


@pytest.fixture(scope="module")
def roi_project(tmp_path_factory) -> Path:
    return write_project(tmp_path_factory.mktemp("project"), ROI_SOURCES)


@pytest.fixture(scope="module")
def roi_levels(bright_roi_model_dir, roi_project, tmp_path_factory):
    out = tmp_path_factory.mktemp("levels_report")
    return evaluate_model(bright_roi_model_dir, roi_project, "test", out, n_bootstrap=20,
                          progress=False)


def test_roi_image_level_is_the_inference_code_path(roi_levels, bright_roi_model_dir):
    from mammo_utils.inference import Classifier

    images = roi_levels.level_predictions["image"]
    classifier = Classifier.from_dir(bright_roi_model_dir)
    classes = list(classifier.classes)
    assert len(images) == 6  # the unlabelled image is left out
    for row in images.to_dict("records"):
        expected = classifier.predict(row["image_path"]).probabilities
        np.testing.assert_allclose([row[f"p_{c}"] for c in classes],
                                   [expected[c] for c in classes], atol=1e-6)
    lesion = images.set_index("image_id")["predicted_label"]
    assert lesion["p1_l_cc"] == "MALIGNANT" and lesion["p2_r_cc"] == "NORMAL"


def test_every_level_is_written_with_its_counts_and_rules(roi_levels):
    metrics = json.loads(roi_levels.metrics_path.read_text())
    assert metrics["level"] == "patch"
    sections = metrics["levels"]
    assert set(sections) == {"patch", "image", "breast"}
    for level in ("patch", "image", "breast"):
        assert (roi_levels.metrics_dir / f"predictions_{level}.csv").is_file()
        assert set(BOOTSTRAP_METRICS) <= set(sections[level]), level
        assert "malignant_roc_auc" in sections[level]["bootstrap"]["intervals"]
    image = sections["image"]
    assert image["n_images"] == 6 and image["malignant_roc_auc"] == 1.0
    assert image["counts"]["label_not_in_scheme"] == 1
    assert image["counts"]["images_in_split"] == 7
    assert image["counts"]["aggregation"] == "max"
    breast = sections["breast"]
    assert breast["n_images"] == 4 and breast["aggregation"] == "mean"
    assert breast["counts"]["single_view"] == 2 and breast["counts"]["two_or_more_views"] == 2
    breasts = pd.read_csv(roi_levels.metrics_dir / "predictions_breast.csv")
    labels = breasts.set_index("breast_id")["true_label"]
    assert labels["P2_RIGHT"] == "BENIGN"  # the most severe of NORMAL and BENIGN
    assert metrics["protocol"] == "official synthetic test split, 6 images, 4 breasts, 3 patients"
    assert {"image_confusion_matrix", "image_roc"} <= set(roi_levels.figures)


def test_topk_mean_is_recorded_and_changes_the_image_probabilities(
    bright_roi_model_dir, roi_project, roi_levels, tmp_path
):
    result = evaluate_model(bright_roi_model_dir, roi_project, "test", tmp_path, n_bootstrap=10,
                            make_figures=False, progress=False, aggregation="topk_mean",
                            top_k=1000, breast_rule="max")
    assert result.metrics["rules"] == {"image_aggregation": "top1000_mean",
                                       "breast_aggregation": "max"}
    smooth = result.level_predictions["image"]["p_MALIGNANT"].to_numpy()
    sharp = roi_levels.level_predictions["image"]["p_MALIGNANT"].to_numpy()
    # Every patch averaged: a lesion no longer decides alone.
    assert (smooth <= sharp + 1e-9).all() and (smooth < sharp - 0.1).any()


def test_levels_without_an_index_say_why(processed_dir, models_dir, tmp_path):
    result = evaluate_model(models_dir / "tiny_a", processed_dir, "test", tmp_path,
                            n_bootstrap=10, make_figures=False, progress=False)
    sections = result.metrics["levels"]
    assert "image model has no patch level" in sections["patch"]["not_applicable"]
    assert sections["image"]["n_images"] == 16  # an image model's rows are the mammograms
    assert "ingest index not found" in sections["breast"]["not_applicable"]


def test_a_changed_index_is_not_used(bright_roi_model_dir, roi_project, tmp_path):
    changed = tmp_path / "index.csv"
    pd.read_csv(roi_project.parents[2] / "interim" / "levels" / "index.csv").to_csv(
        changed, index=False, sep=";")
    result = evaluate_model(bright_roi_model_dir, roi_project, "test", tmp_path, n_bootstrap=10,
                            make_figures=False, progress=False, index=changed)
    assert "index_sha256 differs" in result.metrics["levels"]["image"]["not_applicable"]


def test_cli_evaluate_prints_every_level(bright_roi_model_dir, roi_project, tmp_path, capsys):
    status = main(["evaluate", "--model", str(bright_roi_model_dir), "--data", str(roi_project),
                   "--out", str(tmp_path), "--bootstrap", "10", "--no-figures",
                   "--aggregation", "topk_mean", "--top-k", "2", "--breast-rule", "max"])
    assert status == 0
    out = capsys.readouterr().out
    assert "image: 6 rows, malignant_roc_auc 1.000" in out
    assert "breast: 4 rows" in out
    assert "protocol: official synthetic test split" in out
    metrics = json.loads((tmp_path / "metrics" / "bright_roi" / "metrics.json").read_text())
    assert metrics["rules"] == {"image_aggregation": "top2_mean", "breast_aggregation": "max"}
    assert main(["evaluate", "--model", str(bright_roi_model_dir), "--data", str(roi_project),
                 "--out", str(tmp_path), "--aggregation", "topk_mean", "--top-k", "0"]) == 1
    assert "k >= 1" in capsys.readouterr().err


def test_comparison_shows_every_level_with_the_image_level_first(roi_levels):
    table = write_comparison(roi_levels.metrics_dir.parent)
    assert set(LEVEL_ORDER) == set(LEVELS)
    row = table.iloc[0]
    sections = roi_levels.metrics["levels"]
    for level in LEVELS:
        assert row[level_column(level)] == pytest.approx(sections[level]["malignant_roc_auc"])
        interval = sections[level]["bootstrap"]["intervals"]["malignant_roc_auc"]
        assert row[f"{level_column(level)}_lower"] == pytest.approx(interval["lower"],
                                                                    nan_ok=True)
    assert row["protocol"].startswith("official synthetic test split")
    interval_columns = [c for c in table.columns if f"{c}_lower" in table]
    assert interval_columns[0] == "image_malignant_roc_auc"  # the headline of index.html


def test_index_html_leads_with_the_image_level(bright_roi_model_dir, roi_project, tmp_path):
    from mammo_utils.report import write_index

    run_dir = tmp_path / "reports" / "levels_run"
    evaluate_model(bright_roi_model_dir, roi_project, "test", run_dir, n_bootstrap=10,
                   make_figures=False, progress=False)
    write_comparison(run_dir / "metrics")
    (run_dir / "params.yaml").write_text("name: levels\n")
    page = write_index(tmp_path / "reports").read_text()
    headline = page.index("<th>image_malignant_roc_auc</th>")
    assert headline < page.index("breast_malignant_roc_auc") < page.index(
        "patch_malignant_roc_auc")
    assert "<td>1.000" in page[headline:]
    assert "protocol: official synthetic test split, 6 images, 4 breasts, 3 patients" in page



# ----------------------------------------------------------------- external validation
@pytest.fixture(scope="module")
def trained_on_roi_project(bright_roi_model_dir, roi_project, tmp_path_factory) -> Path:
    """The bright-spot model with a card saying it was trained on ``roi_project``."""
    folder = tmp_path_factory.mktemp("trained") / "bright_roi"
    shutil.copytree(bright_roi_model_dir, folder)
    card_path = folder / "model_card.json"
    card = json.loads(card_path.read_text())
    card["preprocessing"] = json.loads((roi_project / "preprocess_config.json").read_text())
    card_path.write_text(json.dumps(card))
    return folder


WITHOUT_MALIGNANT = [
    ("x1_l_cc", "X1", "LEFT", "CC", "NORMAL", False),
    ("x1_l_mlo", "X1", "LEFT", "MLO", "BENIGN", False),
    ("x2_r_cc", "X2", "RIGHT", "CC", "BENIGN", False),
    ("x3_r_cc", "X3", "RIGHT", "CC", "NORMAL", False),
]


def test_external_validation_without_a_class_says_why(trained_on_roi_project, roi_project,
                                                      tmp_path_factory, tmp_path):
    other = write_project(tmp_path_factory.mktemp("other"), WITHOUT_MALIGNANT, key="other",
                          dataset="othersynth", seed=50)
    internal = evaluate_model(trained_on_roi_project, roi_project, "test", tmp_path,
                              n_bootstrap=20, make_figures=False, progress=False)
    assert "external" not in internal.metrics  # its own data: internal
    result = evaluate_model(trained_on_roi_project, other, "test", tmp_path, n_bootstrap=20,
                            make_figures=False, progress=False)
    assert result.metrics_dir == (tmp_path / "metrics" / "bright_roi" / "external"
                                  / "other-roi-32-128x96")
    image = result.metrics["levels"]["image"]
    assert image["malignant_roc_auc"] is None
    assert image["not_applicable_metrics"]["malignant_roc_auc"] == \
        "no MALIGNANT images in othersynth"
    assert image["not_applicable_metrics"]["per_class.BENIGN_WITHOUT_CALLBACK.roc_auc"] == \
        "no BENIGN_WITHOUT_CALLBACK images in othersynth"
    assert image["macro_roc_auc"] is not None  # NORMAL and BENIGN remain: still defined
    table = (result.metrics_dir / "internal_vs_external.md").read_text()
    assert "Internal: official synthetic test split, 6 images" in table
    assert "External: official othersynth test split, 4 images, 3 breasts, 3 patients" in table
    assert ("image malignant_roc_auc: not applicable externally "
            "(no MALIGNANT images in othersynth)") in table
    # The internal result is left as it was.
    assert json.loads(internal.metrics_path.read_text())["levels"]["image"]["n_images"] == 6


def test_external_validation_with_another_seed_compares_every_level(
    trained_on_roi_project, roi_project, tmp_path_factory, tmp_path
):
    other = write_project(tmp_path_factory.mktemp("seed"), ROI_SOURCES, key="seed7", seed=70)
    evaluate_model(trained_on_roi_project, roi_project, "test", tmp_path, n_bootstrap=20,
                   make_figures=False, progress=False)
    result = evaluate_model(trained_on_roi_project, other, "test", tmp_path, n_bootstrap=20,
                            make_figures=False, progress=False)
    rows = result.metrics["external"]["rows"]
    assert {row["level"] for row in rows} == {"patch", "image", "breast"}
    image_auc = next(r for r in rows if r["level"] == "image" and r["metric"] ==
                     "malignant_roc_auc")
    assert image_auc["internal"] == 1.0 and image_auc["external"] == 1.0
    assert image_auc["drop"] == 0.0 and image_auc["beyond_interval"] is False


def test_cli_external_validation(trained_on_roi_project, roi_project, tmp_path_factory,
                                 tmp_path, capsys):
    other = write_project(tmp_path_factory.mktemp("cli_other"), WITHOUT_MALIGNANT,
                          key="cli_other", dataset="othersynth", seed=90)
    common = ["--out", str(tmp_path), "--bootstrap", "10", "--no-figures"]
    assert main(["evaluate", "--model", str(trained_on_roi_project), "--data", str(other),
                 *common]) == 0
    assert "no internal evaluation" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(trained_on_roi_project), "--data",
                 str(roi_project), *common]) == 0
    assert main(["evaluate", "--model", str(trained_on_roi_project), "--data", str(other),
                 *common]) == 0
    out = capsys.readouterr().out
    assert "external validation: official othersynth test split" in out
    assert "image malignant_roc_auc: not applicable externally" in out


def test_the_protocol_says_whether_the_test_split_is_the_official_one():
    images = pd.DataFrame({"dataset": "cbis-ddsm", "patient_id": ["P1", "P1", "P2", "P3"],
                           "official_split": ["test", "test", "test", "test"]})
    assert protocol_statement(images, "test", 3) == \
        "official cbis-ddsm test split, 4 images, 3 breasts, 3 patients"
    images.loc[3, "official_split"] = "train"  # a patient in both official files
    assert protocol_statement(images, "test", None) == (
        "cbis-ddsm test split (3 of its images in the official test set), 4 images, "
        "3 patients")


#: Image-level malignant-vs-rest ROC-AUC the baseline must reach on the synthetic
#: known-answer set (see the test's docstring for the measurements behind it).
IMAGE_LEVEL_KNOWN_ANSWER = 0.65


@pytest.mark.slow
def test_image_level_known_answer(known_answer_baseline, synthetic_known_answer_roi_data,
                                  tmp_path):
    """The baseline trained as test_train's known-answer test trains it, scored per whole
    mammogram of the test split (max rule). Measured with training seeds 0, 1, 2 (94 test
    images, 47 breasts, 37 patients): image 0.768, 0.735, 0.798; breast (mean) 0.852,
    0.730, 0.870; patch 0.853, 0.896, 0.858. The threshold sits below the lowest image
    value by about the width of its lower interval half. The model is test_train's
    known-answer baseline (one shared fixture); the scan of 94 mammograms is the cost."""
    trained = known_answer_baseline
    index = synthetic_known_answer_roi_data.parent / "interim" / "index.csv"  # fixture layout
    result = evaluate_model(trained.model_dir, synthetic_known_answer_roi_data, "test",
                            tmp_path / "report", n_bootstrap=100, make_figures=False,
                            progress=False, index=index)
    levels = result.metrics["levels"]
    assert levels["image"]["malignant_roc_auc"] >= IMAGE_LEVEL_KNOWN_ANSWER, levels["image"]
    assert levels["image"]["n_images"] == levels["image"]["counts"]["images_in_split"]
    assert levels["breast"]["malignant_roc_auc"] is not None
    assert levels["breast"]["n_images"] < levels["image"]["n_images"]
