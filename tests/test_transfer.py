"""Starting a model from another model's trunk (``--init-from``): the weights copied by
layer name (flat, nested backbone, nested two-view trunk), mismatches refused, lineage
and stages recorded in the card, the CLI and the params files passing it through."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from fixtures_training import write_known_answer_dataset

from mammo_utils import models, transfer, workflow
from mammo_utils.classes import scheme_classes
from mammo_utils.cli import build_parser
from mammo_utils.cli.train import training_config
from mammo_utils.files import sha256_file
from mammo_utils.model_card import (
    CARD_FILE,
    LINEAGE_KEYS,
    MODEL_FILE,
    ModelCard,
    ModelDirectoryError,
    load_model_dir,
)
from mammo_utils.report import (
    ReportError,
    load_params,
    plan_parameters,
    run_report,
    wiring_problems,
)
from mammo_utils.train import train
from mammo_utils.training_config import TrainingConfig
from mammo_utils.transfer import (
    HEAD_LAYERS,
    TransferError,
    copy_trunk_weights,
    initialise_from,
    stem_steps_of,
    trunk_layers,
)
from mammo_utils.workflow import DataSettings, evaluation_folder

FOUR = scheme_classes("four_class")


def _randomised(model: keras.Model, seed: int) -> keras.Model:
    """Give every weight (moving statistics included) a seeded random value, so a copy
    cannot pass by two models sharing their initial values."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def _save(folder: Path, model: keras.Model, *, architecture: str, size: int,
          label_scheme: str = "four_class", task: str = "roi") -> Path:
    """A model directory as training writes it (model file, sealed card)."""
    folder.mkdir(parents=True)
    model.save(folder / MODEL_FILE)
    ModelCard(model_name=folder.name, architecture=architecture,
              classes=list(scheme_classes(label_scheme)), label_scheme=label_scheme,
              task=task, image_size=size, working_size=[128, 96] if task == "roi" else None,
              parameter_count=model.count_params()).save(folder)
    return folder


def _assert_trunk_equal(source: keras.Model, target: keras.Model, names: list[str]) -> None:
    source_layers, target_layers = trunk_layers(source), trunk_layers(target)
    for name in names:
        for mine, theirs in zip(source_layers[name].get_weights(),
                                target_layers[name].get_weights(), strict=True):
            np.testing.assert_array_equal(mine, theirs, err_msg=name)


def test_baseline_trunk_copies_from_patch_to_whole_image_size(tmp_path):
    source = _randomised(models.build_model("baseline", 4, 32), seed=1)
    folder = _save(tmp_path / "patch", source, architecture="baseline", size=32)
    # a larger, whole-breast input, keeping the patch model's stem (none at 32 px)
    target = models.build_model("baseline", 4, 96, stem_steps=stem_steps_of(folder))
    head_before = target.get_layer("predictions").get_weights()

    lineage = initialise_from(target, folder, architecture="baseline", classes=FOUR)

    expected = [f"block{b}_{kind}{i}" for b in (1, 2, 3) for kind in ("conv", "bn")
                for i in (1, 2)]
    assert sorted(lineage["layers_copied"]) == sorted(expected)
    _assert_trunk_equal(source, target, expected)
    for before, after in zip(head_before, target.get_layer("predictions").get_weights(),
                             strict=True):
        np.testing.assert_array_equal(before, after)  # the head is new, not copied
    assert set(lineage) == set(LINEAGE_KEYS)
    assert lineage["source_model"] == "patch" and lineage["source_task"] == "roi"
    assert lineage["source_card_sha256"] == sha256_file(folder / CARD_FILE)
    assert lineage["source_architecture"] == "baseline" and lineage["source_image_size"] == 32


def test_a_baseline_started_from_a_patch_model_keeps_its_stem(tmp_path):
    """The blocks learned their features at the patch model's scale: a whole-image
    baseline started from it keeps that stem depth, whatever its own input size."""
    source = _randomised(models.build_model("baseline", 4, 128), seed=2)  # one stem step
    folder = _save(tmp_path / "patch", source, architecture="baseline", size=128, task="image")
    assert stem_steps_of(folder) == 1
    scratch = models.build_model("baseline", 4, 512)
    assert {layer.name for layer in scratch.layers} >= {"stem_conv3"}  # 512 -> 64
    target = models.build_model("baseline", 4, 512, stem_steps=stem_steps_of(folder))
    names = {layer.name for layer in target.layers}
    assert "stem_conv1" in names and "stem_conv2" not in names
    lineage = initialise_from(target, folder, architecture="baseline", classes=FOUR)
    assert "stem_conv1" in lineage["layers_copied"]
    _assert_trunk_equal(source, target, ["stem_conv1", "stem_bn1", "block3_conv2"])
    # A model started from that one (a two-view model from the whole-image model) keeps
    # the stem the whole-image model has, not the one its own 512-pixel input suggests.
    whole = _save(tmp_path / "whole", target, architecture="baseline", size=512, task="image")
    assert stem_steps_of(whole) == 1


def test_backbone_trunk_copies_at_another_input_size():
    source = _randomised(models.build_model("mobilenetv2", 2, 32), seed=2)
    target = models.build_model("mobilenetv2", 2, 64)
    copied = copy_trunk_weights(source, target)
    backbone = models.backbone_of(source)
    assert {layer.name for layer in backbone.layers if layer.weights} <= set(copied)
    assert not set(copied) & HEAD_LAYERS
    _assert_trunk_equal(source, target, copied)


def _two_view(size: int) -> keras.Model:
    """A two-view model: one shared baseline trunk (nested, single-view layer names) for
    both views, their pooled features concatenated, one head."""
    single = models.build_model("baseline", 4, size)
    trunk = keras.Model(single.input, single.get_layer("block3_dropout").output, name="trunk")
    views = [keras.Input((size, size, 1), name=view) for view in ("cc", "mlo")]
    pooled = [keras.layers.GlobalMaxPooling2D()(trunk(view)) for view in views]
    features = keras.layers.Concatenate(name="views")(pooled)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions")(features)
    return keras.Model(views, outputs, name="two_view")


def test_trunk_copies_into_a_nested_shared_trunk():
    source = _randomised(models.build_model("baseline", 4, 32), seed=3)
    target = _two_view(48)
    copied = copy_trunk_weights(source, target)
    assert len(copied) == 12
    _assert_trunk_equal(source, target, copied)
    trunk = target.get_layer("trunk")
    np.testing.assert_array_equal(trunk.get_layer("block2_conv1").get_weights()[0],
                                  source.get_layer("block2_conv1").get_weights()[0])


def test_top_blocks_are_new_layers_that_train_while_the_trunk_is_frozen(tmp_path):
    """A whole-breast baseline from a patch model: the top blocks (Shen et al.'s new
    layers for whole images) are not copied, and the head stage trains them."""
    assert models.top_blocks_for("roi") == 0
    assert models.top_blocks_for("image") == models.top_blocks_for("breast") == 2
    source = _randomised(models.build_model("baseline", 4, 32), seed=3)
    folder = _save(tmp_path / "patch", source, architecture="baseline", size=32)
    target = models.build_model("baseline", 4, 96, stem_steps=0, top_blocks=2)
    top = {layer.name for layer in target.layers if layer.name.startswith("top")}
    assert {"top1_conv1", "top1_conv2", "top2_conv2", "top2_pool"} <= top
    # 96 px -> 12 after the blocks -> 6 -> 3 after the top blocks
    assert target.get_layer("top2_pool").output.shape[1:3] == (3, 3)
    top_before = target.get_layer("top1_conv1").get_weights()
    lineage = initialise_from(target, folder, architecture="baseline", classes=FOUR)
    assert not any(name.startswith("top") for name in lineage["layers_copied"])
    np.testing.assert_array_equal(top_before[0], target.get_layer("top1_conv1").get_weights()[0])
    models.set_backbone_trainable(target, "head")
    assert not target.get_layer("block3_conv2").trainable
    assert target.get_layer("top1_conv1").trainable and target.get_layer("top2_bn2").trainable
    # A two-view model shares one nested top between its views and takes the whole-image
    # model's top blocks with its trunk.
    whole = _save(tmp_path / "whole", _randomised(target, seed=4), architecture="baseline",
                  size=96, task="image")
    two_view = models.build_two_view_model("baseline", 4, 96, stem_steps=0, top_blocks=2)
    shared_top = two_view.get_layer(models.TOP_LAYER)
    lineage = initialise_from(two_view, whole, architecture="baseline", classes=FOUR)
    assert {"top1_conv1", "top2_conv2", "block1_conv1"} <= set(lineage["layers_copied"])
    np.testing.assert_array_equal(shared_top.get_layer("top2_conv2").get_weights()[0],
                                  target.get_layer("top2_conv2").get_weights()[0])
    assert models.build_model("baseline", 4, 32, top_blocks=2).output.shape[-1] == 4
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--top-blocks", "0"])
    assert training_config(args).top_blocks == 0 and TrainingConfig().top_blocks is None
    with pytest.raises(ValueError, match="top_blocks must be an integer >= 0"):
        TrainingConfig(top_blocks=-1)


def test_mismatches_are_refused_naming_both_models():
    baseline = models.build_model("baseline", 4, 32)
    mobilenet = models.build_model("mobilenetv2", 4, 32)
    with pytest.raises(TransferError, match=r"'baseline' and target model 'mobilenetv2' "
                                            r"share no trunk layer"):
        copy_trunk_weights(baseline, mobilenet)
    vgg = models.build_model("vgg16", 4, 32)  # shares block1_conv1 with the baseline
    with pytest.raises(TransferError, match=r"'vgg16' and target model 'baseline' have "
                                            r"different architectures: the target lacks"):
        copy_trunk_weights(vgg, baseline)
    inputs = keras.Input((32, 32, 1))
    conv = keras.layers.Conv2D(8, 3, use_bias=False, name="block1_conv1")
    narrow = keras.Model(inputs, conv(inputs), name="narrow")
    with pytest.raises(TransferError, match=r"'narrow'.*'baseline'.*'block1_conv1' has "
                                            r"weight shapes \[\(3, 3, 1, 8\)\]"):
        copy_trunk_weights(narrow, baseline)
    other = keras.Model(inputs, keras.layers.Conv2D(8, 3, name="other")(inputs), name="other")
    with pytest.raises(TransferError, match="'other' and target model 'baseline' share no "
                                            "trunk layer"):
        copy_trunk_weights(other, baseline)


def test_initialise_from_refuses_another_architecture_or_class_order(tmp_path):
    source = models.build_model("baseline", 4, 32)
    folder = _save(tmp_path / "patch", source, architecture="baseline", size=32)
    target = models.build_model("baseline", 4, 32)
    with pytest.raises(TransferError, match=r"mobilenetv2 model from .*patch: that model is "
                                            r"a baseline"):
        initialise_from(target, folder, architecture="mobilenetv2", classes=FOUR)
    with pytest.raises(TransferError, match=r"classes \['NORMAL', 'BENIGN', 'MALIGNANT'\] "
                                            r"from .*patch: that model's classes are"):
        initialise_from(target, folder, architecture="baseline",
                        classes=scheme_classes("three_class"))
    (folder / MODEL_FILE).write_bytes((folder / MODEL_FILE).read_bytes() + b"x")
    with pytest.raises(ModelDirectoryError, match="not the file its card was saved with"):
        initialise_from(target, folder, architecture="baseline", classes=FOUR)


def test_config_takes_init_from_and_lists_its_stages(tmp_path):
    config = TrainingConfig(init_from=tmp_path / "patch", epochs=2, fine_tune_epochs=3,
                            fine_tune_fraction=1.0)
    assert config.init_from == str(tmp_path / "patch") and config.two_stage
    assert not config.pretrained
    assert [(s["name"], s["epochs"], s["learning_rate"]) for s in config.stages()] == [
        ("head", 2, 1e-3), ("finetune", 3, 1e-5)]
    assert config.stages()[1]["trains"].startswith("all of the trunk")
    assert [s["name"] for s in TrainingConfig(epochs=2, fine_tune_epochs=3).stages()] == [
        "full"]
    with pytest.raises(ValueError, match="init_from .* gives the trunk its weights: weights "
                                         "must be 'none'"):
        TrainingConfig(architecture="vgg16", weights="imagenet", init_from="m")
    with pytest.raises(ValueError, match="init_from must be a model directory path"):
        TrainingConfig(init_from="")
    older = ModelCard(model_name="m", architecture="baseline", classes=list(FOUR),
                      label_scheme="four_class", task="roi", image_size=32,
                      training={k: v for k, v in TrainingConfig().to_dict().items()
                                if k not in ("init_from", "stem_steps", "top_blocks")})
    assert older.training_config() == TrainingConfig()  # a card from before init_from


def test_cli_takes_the_architecture_from_the_init_from_card(tmp_path):
    folder = tmp_path / "mnv2"
    folder.mkdir()
    ModelCard(model_name="mnv2", architecture="mobilenetv2", classes=list(FOUR),
              label_scheme="four_class", task="roi", image_size=32).save(folder)
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o",
                                      "--init-from", str(folder), "--fine-tune-epochs", "2"])
    config = training_config(args)
    assert config.architecture == "mobilenetv2" and config.init_from == str(folder)
    plain = training_config(build_parser().parse_args(["train", "--data", "d", "--out", "o"]))
    assert plain.architecture == "baseline" and plain.init_from is None


def test_stem_steps_is_a_baseline_setting_apart_from_init_from():
    """The control of a started baseline takes the source's stem by ``stem_steps``."""
    assert TrainingConfig(stem_steps=0).stem_steps == 0
    assert TrainingConfig().stem_steps is None  # sized to the input
    with pytest.raises(ValueError, match="stem_steps is a setting of the baseline CNN"):
        TrainingConfig(architecture="mobilenetv2", stem_steps=1)
    with pytest.raises(ValueError, match="keeps that model's stem"):
        TrainingConfig(init_from="patch", stem_steps=1)
    with pytest.raises(ValueError, match="stem_steps must be an integer >= 0"):
        TrainingConfig(stem_steps=-1)
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--stem-steps", "2"])
    assert training_config(args).stem_steps == 2


def test_training_builds_the_stem_the_config_names(tiny_roi_data, tmp_path):
    """32-pixel patches get no stem by default; ``stem_steps=2`` builds two halvings,
    and the card's training settings give the same configuration back."""
    config = TrainingConfig(epochs=1, batch_size=8, stem_steps=2)
    result = train(tiny_roi_data, tmp_path / "stemmed", config, verbose=0)
    assert stem_steps_of(result.model_dir) == 2
    assert result.card.training_config().stem_steps == 2


@pytest.fixture(scope="module")
def patch_model(tiny_roi_data, tmp_path_factory):
    """A baseline trained one epoch on the tiny known-answer patches (32 px)."""
    out = tmp_path_factory.mktemp("transfer") / "patch"
    return train(tiny_roi_data, out, TrainingConfig(epochs=1, batch_size=8), verbose=0)


@pytest.mark.slow
def test_roi_to_roi_copies_the_trunk_and_records_the_lineage(patch_model, tiny_roi_data,
                                                             tmp_path):
    config = TrainingConfig(epochs=1, batch_size=8, init_from=str(patch_model.model_dir))
    result = train(tiny_roi_data, tmp_path / "again", config, verbose=0)
    model, card = load_model_dir(result.model_dir)
    source, _ = load_model_dir(patch_model.model_dir)
    # The head stage freezes the trunk (BatchNormalization statistics too): after it the
    # trunk still holds the source's weights exactly.
    _assert_trunk_equal(source, model, card.lineage["layers_copied"])
    assert card.lineage["source_model"] == "patch"
    assert card.lineage["source_card_sha256"] == sha256_file(patch_model.model_dir / CARD_FILE)
    assert len(card.lineage["layers_copied"]) == 12
    assert [s["name"] for s in card.training["stages"]] == ["head"]
    assert card.training_config() == config
    assert json.loads((result.model_dir / CARD_FILE).read_text())["lineage"] == card.lineage


@pytest.mark.slow
def test_roi_to_image_trains_head_then_the_whole_trunk(patch_model, tiny_roi_data, tmp_path):
    data = write_known_answer_dataset(tmp_path / "image", {"train": 4, "val": 2, "test": 1},
                                      size=48, seed=5)
    settings = json.loads((data / "preprocess_config.json").read_text())
    (data / "preprocess_config.json").write_text(json.dumps({**settings, "task": "image"}))
    config = TrainingConfig(epochs=1, fine_tune_epochs=1, fine_tune_fraction=1.0,
                            batch_size=8, init_from=str(patch_model.model_dir))
    result = train(data, tmp_path / "whole", config, verbose=0)
    card = result.card
    assert card.task == "image" and card.image_size == 48
    assert card.lineage["source_task"] == "roi" and card.lineage["source_image_size"] == 32
    assert [(s["name"], s["learning_rate"], s["epochs_run"]) for s in
            card.training["stages"]] == [("head", 1e-3, 1), ("finetune", 1e-5, 1)]
    history = pd.read_csv(result.model_dir / "history.csv")
    assert history["learning_rate"].tolist() == pytest.approx([1e-3, 1e-5])
    # Notebook 05 scores each model on a folder of its own task.
    assert evaluation_folder(result.model_dir, tiny_roi_data) == data
    assert evaluation_folder(patch_model.model_dir, tiny_roi_data) == tiny_roi_data
    # The last stage trained the whole trunk, BatchNormalization statistics excepted.
    trunk = {layer.name: layer for layer in models.trunk_layers(result.model)}
    assert trunk["block1_conv1"].trainable and trunk["block3_conv2"].trainable
    assert not trunk["block1_bn1"].trainable
    # A whole-breast model gets the task's top blocks (config None: by task), new layers.
    assert result.model.get_layer("top2_conv2").trainable
    assert not any(name.startswith("top") for name in card.lineage["layers_copied"])


REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("0[1-6]_*.ipynb"))
GPU_PARAMS = REPO / "params" / "cbis-ddsm-gpu.yaml"


def _plan(params: dict):
    return plan_parameters(NOTEBOOKS, params, {"project_dir": str(REPO), "run_name": "dry"})


def test_gpu_params_file_validates_dry():
    params = load_params(GPU_PARAMS)
    plan, problems = _plan(params)
    assert problems == [] and wiring_problems(NOTEBOOKS, plan) == []
    assert params["common"]["dataset"] == "cbis-ddsm"
    assert params["common"]["working_size"] == [1152, 896]
    stage = plan["04_transfer_learning.ipynb"]
    assert stage["weights"] == "imagenet" and stage["whole_image_from"] in stage["backbones"]
    assert stage["whole_image_size"] == 1152
    # Every training stage is a valid configuration before any GPU time is spent.
    patch = TrainingConfig(architecture=stage["whole_image_from"], weights=stage["weights"],
                           epochs=stage["epochs"], fine_tune_epochs=stage["fine_tune_epochs"],
                           batch_size=stage["batch_size"])
    whole = TrainingConfig(architecture=patch.architecture, init_from="models/x",
                           epochs=stage["whole_image_epochs"], fine_tune_fraction=1.0,
                           fine_tune_epochs=stage["whole_image_fine_tune_epochs"],
                           fine_tune_learning_rate=stage["whole_image_fine_tune_learning_rate"],
                           batch_size=stage["whole_image_batch_size"])
    assert [s["name"] for s in whole.stages()] == ["head", "finetune"]
    # Stage 3 starts the two-view model from stage 2's patch-initialised model.
    assert stage["two_view_size"] == 1152
    assert stage["two_view_from"] == workflow.whole_image_names(patch.architecture,
                                                                stage["whole_image_from"])[1]
    assert stage["two_view_single_view"] in ("exclude", "duplicate")
    two_view = TrainingConfig(architecture=patch.architecture, init_from="models/y",
                              epochs=stage["two_view_epochs"], fine_tune_fraction=1.0,
                              fine_tune_epochs=stage["two_view_fine_tune_epochs"],
                              fine_tune_learning_rate=stage["two_view_fine_tune_learning_rate"],
                              batch_size=stage["two_view_batch_size"])
    assert [s["name"] for s in two_view.stages()] == ["head", "finetune"]
    text = GPU_PARAMS.read_text()
    for figure in ("0.88", "0.91", "0.834", "0.866", "official", "85:15"):
        assert figure in text, figure
    assert "PENDING" not in text


def test_a_whole_image_stage_without_its_patch_model_is_refused(tmp_path):
    params = load_params(GPU_PARAMS)
    params["notebooks"]["04_transfer_learning"]["whole_image_from"] = "vgg16"
    plan, _ = _plan(params)
    # The whole-image model is not trained either, so stage 3 loses its source too.
    assert wiring_problems(NOTEBOOKS, plan) == [
        "04_transfer_learning: whole_image_from 'vgg16' is not a patch model this run "
        "trains (it trains baseline, resnet50)",
        "04_transfer_learning: two_view_from 'resnet50-image-from-resnet50' is not a model "
        "this run trains (it trains baseline, resnet50)"]
    with pytest.raises(ReportError, match="whole_image_from 'vgg16'"):
        run_report(params, "unwired", project_dir=tmp_path, notebooks_dir=REPO / "notebooks",
                   progress=False)
    assert not (tmp_path / "reports" / "unwired" / "01_ingest.ipynb").exists()


@pytest.mark.parametrize(("changes", "problem"), [
    ({"two_view_from": "resnet50-image-from-vgg16"},
     "two_view_from 'resnet50-image-from-vgg16' is not a model this run trains (it trains "
     "baseline, resnet50, resnet50-image, resnet50-image-from-resnet50)"),
    # Without the whole-image stage its model is not trained, so stage 3 has no source.
    ({"whole_image_size": 0},
     "two_view_from 'resnet50-image-from-resnet50' is not a model this run trains (it "
     "trains baseline, resnet50)"),
])
def test_a_two_view_stage_without_its_source_model_is_refused(changes, problem):
    params = load_params(GPU_PARAMS)
    params["notebooks"]["04_transfer_learning"] |= changes
    plan, _ = _plan(params)
    assert wiring_problems(NOTEBOOKS, plan) == [f"04_transfer_learning: {problem}"]


def test_a_two_view_stage_from_scratch_or_switched_off_needs_no_source():
    for changes in ({"two_view_from": ""}, {"two_view_size": 0, "two_view_from": "vgg16"}):
        params = load_params(GPU_PARAMS)
        params["notebooks"]["04_transfer_learning"] |= changes
        assert wiring_problems(NOTEBOOKS, _plan(params)[0]) == []


def test_default_report_compares_patch_initialised_and_scratch_whole_image_models():
    plan, problems = _plan(load_params(REPO / "params" / "default.yaml"))
    stage = plan["04_transfer_learning.ipynb"]
    assert problems == [] and wiring_problems(NOTEBOOKS, plan) == []
    assert stage["whole_image_size"] > 0 and stage["whole_image_from"] == "baseline"


def test_whole_image_models_share_budget_and_classes_with_their_control(tmp_path, monkeypatch):
    settings = DataSettings(project_dir=tmp_path, run_name="run")
    source = settings.workspace.model_dir("baseline")
    source.mkdir(parents=True)
    order = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK", "NORMAL")
    ModelCard(model_name="baseline", architecture="baseline", classes=list(order),
              label_scheme="four_class", task="roi", image_size=32).save(source)
    trained = {}
    # The patch model's stem (read from its saved model) is given to the control too.
    monkeypatch.setattr(transfer, "stem_steps_of", lambda source_dir: 3)
    monkeypatch.setattr(workflow, "train_model",
                        lambda settings, data, config, *, name, verbose: trained.setdefault(
                            name, (data, config)))
    workflow.train_whole_image_models(settings, tmp_path / "image-96", "baseline", epochs=2,
                                      fine_tune_epochs=3, batch_size=8)
    control, started = (trained[name][1] for name in workflow.whole_image_names("baseline",
                                                                                  "baseline"))
    assert list(trained) == ["baseline-image", "baseline-image-from-baseline"]
    assert started.init_from == str(source) and control.init_from is None
    assert control.stem_steps == 3 and started.stem_steps is None
    assert control.class_order == started.class_order == order
    assert sum(s["epochs"] for s in control.stages()) == sum(
        s["epochs"] for s in started.stages()) == 5
    assert [s["name"] for s in started.stages()] == ["head", "finetune"]
    assert started.fine_tune_fraction == 1.0 and started.fine_tune_learning_rate == 1e-4


@pytest.mark.slow
def test_two_view_stage_builds_its_breast_folder_and_starts_from_the_runs_model(
        toy_breast_index, tiny_roi_data, tmp_path):
    """Notebook 04's two-view section on the toy breasts: the breast folder built from
    the run's index, the shared trunk started from the run's patch model."""
    settings = DataSettings(project_dir=tmp_path, run_name="run", dataset="toy")
    settings.workspace.interim_dir.mkdir(parents=True)
    (settings.workspace.interim_dir / "index.csv").write_bytes(toy_breast_index.read_bytes())
    workflow.train_model(settings, tiny_roi_data, TrainingConfig(epochs=1, batch_size=8),
                         verbose=0)
    results = workflow.train_two_view_model(
        settings, 32, "baseline", single_view="duplicate", epochs=1, fine_tune_epochs=1,
        batch_size=4, verbose=0)
    assert list(results) == ["baseline-two-view-from-baseline"]
    card = results["baseline-two-view-from-baseline"].card
    breast_dir = settings.workspace.processed_dir("breast", 32)
    assert card.task == "breast" and card.preprocessing["single_view"] == "duplicate"
    assert card.lineage["source_model"] == "baseline"
    assert card.lineage["source_dir"] == str(settings.workspace.model_dir("baseline"))
    assert card.lineage["source_card_sha256"] == sha256_file(
        settings.workspace.model_dir("baseline") / CARD_FILE)
    assert [s["name"] for s in card.training["stages"]] == ["head", "finetune"]
    # Notebook 05 scores it on its breast folder, not on the run's patches.
    assert evaluation_folder(settings.workspace.model_dir(card.model_name),
                             tiny_roi_data) == breast_dir


def test_a_two_view_model_without_source_starts_from_the_given_weights(tmp_path, monkeypatch):
    settings = DataSettings(project_dir=tmp_path, run_name="run", seed=3)
    built, trained = [], {}
    monkeypatch.setattr(workflow, "ensure_processed", lambda settings, task, size, **config: (
        built.append((task, size, config)) or type("Done", (), {"out_dir": tmp_path / "b"})))
    monkeypatch.setattr(workflow, "train_model",
                        lambda settings, data, config, *, name, verbose: trained.setdefault(
                            name, (data, config)))
    workflow.train_two_view_model(settings, 64, architecture="mobilenetv2", weights="imagenet",
                                  label_scheme="three_class", epochs=2, fine_tune_epochs=1)
    assert built == [("breast", 64, {"single_view": "exclude"})]
    data, config = trained["mobilenetv2-two-view"]
    assert data == tmp_path / "b" and config.init_from is None
    assert (config.weights, config.label_scheme, config.seed) == ("imagenet", "three_class", 3)
    assert [s["name"] for s in config.stages()] == ["head", "finetune"]
