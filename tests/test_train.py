"""Training end to end: known answer, class order, reproducibility, model directory and
card, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fixtures_training import PERMUTED_CLASSES

from mammo_utils import models, pipeline
from mammo_utils.classes import CLASSES, check_class_order, scheme_classes
from mammo_utils.cli import main as mammo
from mammo_utils.cli.train import ARCHITECTURES
from mammo_utils.model_card import (
    CARD_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    ModelCard,
    ModelDirectoryError,
    load_model_dir,
)
from mammo_utils.train import _compile, _validation_metrics, train


@pytest.mark.slow
def test_baseline_learns_the_synthetic_known_answer(synthetic_known_answer_roi_data, tmp_path):
    """The issue's known answer: synthetic roi data -> validation macro ROC-AUC >= 0.85.

    The whole chain runs (synth, ingest, preprocess, pipeline, train), so a label-order
    or pipeline bug anywhere shows as a score near chance. About 1.5 min on 2 cores.
    """
    result = train(synthetic_known_answer_roi_data, "baseline", "none", epochs=20,
                   batch_size=32, out_dir=tmp_path / "baseline", seed=0, patience=20,
                   augment=False, verbose=0)
    metrics = result.card.validation_metrics
    assert metrics["macro_roc_auc"] >= 0.85, metrics
    assert list(metrics["roc_auc_per_class"]) == list(CLASSES)
    counts = result.card.data["counts"]["val"]
    assert metrics["n"] == sum(counts.values()) and min(counts.values()) >= 10, counts


@pytest.fixture(scope="module")
def trained_baseline(permuted_known_answer_model):
    """The baseline trained on the known-answer patches, output order PERMUTED_CLASSES."""
    return permuted_known_answer_model


@pytest.mark.slow
def test_output_units_follow_the_requested_class_order(trained_baseline,
                                                       known_answer_roi_data):
    card = trained_baseline.card
    assert card.classes == list(PERMUTED_CLASSES)
    assert ModelCard.load(trained_baseline.model_dir).classes == list(PERMUTED_CLASSES)
    rows = pipeline.load_manifest(known_answer_roi_data).split("test")
    test = pipeline.make_dataset(known_answer_roi_data, "test", batch_size=16)
    winners = trained_baseline.model.predict(test, verbose=0).argmax(axis=1)
    named = np.array([card.classes[unit] for unit in winners])
    truth = rows["label"].to_numpy()
    # Read through the card, the units name the right class; read in the scheme's
    # order (the bug this guards against) they would not.
    assert (named == truth).mean() >= 0.75, pd.crosstab(truth, named)
    assert (np.array(CLASSES)[winners] == truth).mean() <= 0.5
    for name in CLASSES:  # each class's patches most often win on that class's unit
        most_often = np.bincount(winners[truth == name], minlength=4).argmax()
        assert most_often == card.classes.index(name), name
    metrics = card.validation_metrics
    assert metrics["macro_roc_auc"] >= 0.85, metrics
    assert list(metrics["roc_auc_per_class"]) == list(PERMUTED_CLASSES)
    assert list(card.training["class_weight"]) == list(PERMUTED_CLASSES)


def test_class_order_must_be_a_permutation_of_the_scheme(known_answer_roi_data, tmp_path):
    assert check_class_order(PERMUTED_CLASSES, "four_class") == PERMUTED_CLASSES
    with pytest.raises(ValueError, match="duplicated NORMAL; missing BENIGN$"):
        check_class_order(["NORMAL", "BENIGN_WITHOUT_CALLBACK", "NORMAL", "MALIGNANT"],
                          "four_class")
    with pytest.raises(ValueError, match="missing NORMAL; unknown NOT_MALIGNANT"):
        check_class_order(["NOT_MALIGNANT", "BENIGN", "MALIGNANT"], "three_class")
    with pytest.raises(ValueError, match="not an order of the four_class classes"):
        train(known_answer_roi_data, "baseline", epochs=1, out_dir=tmp_path / "never",
              class_order=["MALIGNANT", "NORMAL"], verbose=0)
    assert not (tmp_path / "never").exists()  # refused before anything is written


@pytest.mark.slow
def test_model_directory_reloads_with_identical_predictions(trained_baseline,
                                                           known_answer_roi_data):
    folder = trained_baseline.model_dir
    assert {MODEL_FILE, CARD_FILE, HISTORY_FILE} <= {p.name for p in folder.iterdir()}
    model, card = load_model_dir(folder)
    test = pipeline.make_dataset(known_answer_roi_data, "test", batch_size=8)
    np.testing.assert_allclose(
        model.predict(test, verbose=0), trained_baseline.model.predict(test, verbose=0),
        atol=1e-6,
    )
    assert card.to_json() == trained_baseline.card.to_json()


@pytest.mark.slow
def test_card_records_class_order_and_provenance(trained_baseline, known_answer_roi_data):
    card = ModelCard.load(trained_baseline.model_dir)
    assert card.classes == list(PERMUTED_CLASSES)
    # The label order of training is the card's: label c is unit i for classes[i].
    rows = pipeline.load_manifest(known_answer_roi_data).split("val")
    labels = pipeline.encode_labels(rows["label"], card.label_scheme, card.classes)
    assert [card.classes[i] for i in labels] == rows["label"].tolist()
    assert card.image_size == 32 and card.working_size == [320, 256] and card.task == "roi"
    assert card.preprocessing["size"] == 32
    assert len(card.data["manifest_sha256"]) == 64 and len(card.data["split_sha256"]) == 64
    assert card.data["counts"]["train"]["MALIGNANT"] == 48
    history = pd.read_csv(trained_baseline.model_dir / HISTORY_FILE)
    assert card.best_epoch == int(history["val_loss"].idxmin()) + 1
    assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"} <= set(history)
    assert card.parameter_count == trained_baseline.model.count_params()
    assert card.training["training_time_s"] > 0 and card.seed == 0
    assert card.training["class_weight"] == {name: 1.0 for name in card.classes}
    assert "tensorflow" in json.dumps(card.versions)


@pytest.mark.slow
def test_same_seed_gives_the_same_first_epoch_loss(known_answer_roi_data, tmp_path):
    def first_loss(name, seed):
        result = train(known_answer_roi_data, "baseline", epochs=1, batch_size=32,
                       out_dir=tmp_path / name, seed=seed, verbose=0)
        return result.history["loss"].iloc[0]

    reference = first_loss("a", 5)
    assert first_loss("b", 5) == reference
    assert first_loss("c", 6) != reference


@pytest.mark.slow
def test_pretrained_backbone_trains_head_then_fine_tunes(known_answer_roi_data, tmp_path):
    weights = models.save_backbone_weights(
        models.build_model("mobilenetv2", 2, 32), tmp_path / "pretrained.weights.h5"
    )
    result = train(known_answer_roi_data, "mobilenetv2", weights, epochs=1, batch_size=32,
                   out_dir=tmp_path / "mnv2", label_scheme="malignant_vs_rest",
                   fine_tune_epochs=1, verbose=0)
    assert len(result.history) == 2  # one head epoch, one fine-tune epoch
    assert result.history["learning_rate"].tolist() == pytest.approx([1e-3, 1e-5])
    assert result.card.training["stages"] == ["head", "finetune"]
    model, card = load_model_dir(result.model_dir)
    assert card.classes == ["NOT_MALIGNANT", "MALIGNANT"] and model.output_shape == (None, 2)
    assert card.training["fine_tune_epochs"] == 1


def test_patient_in_two_splits_is_refused_before_training(known_answer_roi_data, tmp_path):
    frame = pd.read_csv(known_answer_roi_data / "manifest.csv")
    frame.loc[frame.index[0], "split"] = "val"  # one patch of a train patient moves to val
    frame["path"] = [str(known_answer_roi_data / p) for p in frame["path"]]
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    frame.to_csv(leaky / "manifest.csv", index=False)
    with pytest.raises(ValueError, match="P_00001"):
        train(leaky, "baseline", epochs=1, out_dir=tmp_path / "never", verbose=0)
    assert not (tmp_path / "never" / MODEL_FILE).exists()


def _tiny_model_dir(folder, image_size=32, units=4):
    model = models.build_model("baseline", units, image_size, baseline_filters=(4, 8, 8))
    folder.mkdir(parents=True)
    model.save(folder / MODEL_FILE)
    ModelCard(model_name="tiny", architecture="baseline", classes=list(scheme_classes()),
              label_scheme="four_class", task="roi", image_size=32).save(folder)
    return folder


def test_model_directory_that_disagrees_with_its_card_is_refused(tmp_path):
    ok = _tiny_model_dir(tmp_path / "ok")
    model, card = load_model_dir(ok)
    assert card.classes == list(scheme_classes()) and model.output_shape == (None, 4)

    wrong_units = _tiny_model_dir(tmp_path / "units", units=3)
    with pytest.raises(ModelDirectoryError, match=r"units.*3 output units.*4 classes"):
        load_model_dir(wrong_units)
    wrong_size = _tiny_model_dir(tmp_path / "size", image_size=48)
    with pytest.raises(ModelDirectoryError, match=r"size.*\(48, 48, 1\).*\(32, 32, 1\)"):
        load_model_dir(wrong_size)

    card_path = ok / CARD_FILE
    values = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**values, "classes": ["MALIGNANT", "NORMAL"]}))
    with pytest.raises(ModelDirectoryError,
                       match=r"invalid model_card.json.*not an order of the four_class"):
        load_model_dir(ok)
    card_path.write_text("{not json")
    with pytest.raises(ModelDirectoryError, match=str(ok)):
        load_model_dir(ok)
    card_path.unlink()
    with pytest.raises(ModelDirectoryError, match="no model_card.json"):
        load_model_dir(ok)


def test_card_json_round_trip_and_unknown_fields():
    card = ModelCard(model_name="m", architecture="baseline", classes=["MALIGNANT", "NORMAL",
                     "BENIGN"], label_scheme="three_class", task="image", image_size=64,
                     training={"class_weight": {0: np.float64(1.5)}}, parameter_count=10)
    again = ModelCard.from_json(card.to_json())
    assert again.classes == ["MALIGNANT", "NORMAL", "BENIGN"]  # any order of the scheme
    assert again.training["class_weight"] == {"0": 1.5}
    with pytest.raises(ValueError, match="unknown model card fields: colour"):
        ModelCard.from_json({**json.loads(card.to_json()), "colour": "red"})


def test_validation_roc_auc_is_none_where_undefined():
    """A validation split of one class has no ROC-AUC: the card says None (JSON null), as
    metrics.json does, not NaN (which is not JSON)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    _compile(model, 1e-3, 3)
    labels = np.zeros(6, dtype=int)
    features = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    val_data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(3)
    metrics = _validation_metrics(model, val_data, labels, ("NORMAL", "BENIGN", "MALIGNANT"))
    assert metrics["macro_roc_auc"] is None
    assert metrics["roc_auc_per_class"] == {"NORMAL": None, "BENIGN": None, "MALIGNANT": None}
    json.dumps(metrics, allow_nan=False)


def test_cli_architectures_match_models():
    assert ARCHITECTURES == models.ARCHITECTURES


@pytest.mark.slow
def test_mammo_train_command_writes_a_model_directory(known_answer_roi_data, tmp_path, capsys):
    out = tmp_path / "cli-model"
    status = mammo(["train", "--data", str(known_answer_roi_data), "--model", "baseline",
                    "--epochs", "1", "--batch-size", "32", "--out", str(out),
                    "--label-scheme", "three_class", "--class-order", "MALIGNANT, NORMAL,BENIGN",
                    "--seed", "3"])
    assert status == 0
    assert "macro ROC-AUC" in capsys.readouterr().out
    card = ModelCard.load(out)
    assert card.classes == ["MALIGNANT", "NORMAL", "BENIGN"] and card.seed == 3


def test_mammo_train_reports_bad_input_without_a_traceback(tmp_path, capsys,
                                                           known_answer_roi_data):
    status = mammo(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m")])
    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("mammo train: error: ") and "manifest not found" in error
    status = mammo(["train", "--data", str(known_answer_roi_data), "--out", str(tmp_path / "m"),
                    "--class-order", "NORMAL,BENIGN,MALIGNANT,MALIGNANT"])
    assert status == 1
    assert "duplicated MALIGNANT; missing BENIGN_WITHOUT_CALLBACK" in capsys.readouterr().err
