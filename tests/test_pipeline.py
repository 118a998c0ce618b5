"""tf.data pipeline: decoding, label schemes, seeded augmentation and class balance."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from fixtures_training import PERMUTED_CLASSES

from mammo_utils import pipeline
from mammo_utils.classes import map_label, scheme_classes


def _images_and_labels(dataset) -> tuple[np.ndarray, np.ndarray]:
    batches = list(dataset)
    return (np.concatenate([b[0].numpy() for b in batches]),
            np.concatenate([b[1].numpy() for b in batches]))


def test_decode_png_gives_exact_unit_floats(tmp_path):
    pixels = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    pixels = np.kron(pixels, np.ones((4, 4), dtype=np.uint16))
    cv2.imwrite(str(tmp_path / "a.png"), pixels)
    image = pipeline.decode_png(str(tmp_path / "a.png"), 8).numpy()
    assert image.shape == (8, 8, 1) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 0], pixels / 65535.0, rtol=0, atol=1e-7)


@pytest.mark.parametrize("scheme", ["four_class", "three_class", "malignant_vs_rest"])
def test_eval_split_keeps_manifest_order_and_scheme_labels(known_answer_roi_data, scheme):
    manifest = pipeline.load_manifest(known_answer_roi_data)
    rows = manifest.split("val")
    images, labels = _images_and_labels(
        pipeline.make_dataset(manifest, "val", label_scheme=scheme, batch_size=7)
    )
    assert images.shape == (len(rows), 32, 32, 1)
    assert 0.0 <= images.min() and images.max() <= 1.0
    order = scheme_classes(scheme)
    assert labels.tolist() == [order.index(map_label(label, scheme)) for label in rows["label"]]
    first = pipeline.decode_png(rows["path"][0], 32).numpy()
    np.testing.assert_array_equal(images[0], first)  # no augmentation outside training


def test_training_batches_repeat_with_seed_and_differ_without(known_answer_roi_data):
    def first_batches(seed):
        dataset = pipeline.make_dataset(known_answer_roi_data, "train", batch_size=16, seed=seed)
        return [batch[0].numpy() for batch in dataset.take(3)]

    same, again, other = first_batches(3), first_batches(3), first_batches(4)
    for left, right in zip(same, again, strict=True):
        np.testing.assert_array_equal(left, right)
    assert not np.array_equal(same[0], other[0])


def test_training_is_endless_and_augmented(known_answer_roi_data):
    manifest = pipeline.load_manifest(known_answer_roi_data)
    n_train = len(manifest.split("train"))
    dataset = pipeline.make_dataset(manifest, "train", batch_size=32, seed=0)
    steps = pipeline.steps_per_epoch(manifest, "train", 32)
    batches = list(dataset.take(2 * steps + 1))  # more than one pass
    assert len(batches) == 2 * steps + 1
    images = np.concatenate([b[0].numpy() for b in batches])
    assert images.shape[1:] == (32, 32, 1) and images.min() >= 0 and images.max() <= 1
    plain, _ = _images_and_labels(pipeline.make_dataset(manifest, "train", training=False))
    # An augmented image is (almost surely) none of the plain decoded images.
    distances = ((images[:8, None] - plain[None]) ** 2).sum(axis=(2, 3, 4)).min(axis=1)
    assert (distances > 1e-3).all()
    assert n_train // 32 == steps


def test_class_weights_balance_present_classes_and_keep_absent_units():
    weights = pipeline.class_weights(["NORMAL"] * 6 + ["MALIGNANT"] * 2)
    assert set(weights) == {0, 1, 2, 3}
    assert weights[0] * 6 == pytest.approx(weights[3] * 2)  # equal total weight per class
    assert weights[1] == weights[2] == 1.0
    assert pipeline.class_weights(["BENIGN", "BENIGN_WITHOUT_CALLBACK"], "three_class") == {
        0: 1.0, 1: 1.0, 2: 1.0
    }


def test_labels_and_weights_follow_a_requested_class_order():
    labels = ["NORMAL", "MALIGNANT", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT"]
    assert pipeline.encode_labels(labels, classes=PERMUTED_CLASSES).tolist() == [2, 1, 3, 1]
    assert pipeline.encode_labels(labels).tolist() == [0, 3, 1, 3]
    three = pipeline.encode_labels(labels, "three_class", ["MALIGNANT", "BENIGN", "NORMAL"])
    assert three.tolist() == [2, 0, 1, 0]
    weights = pipeline.class_weights(labels, classes=PERMUTED_CLASSES)
    assert weights == {0: 1.0, 1: pytest.approx(4 / 6), 2: pytest.approx(4 / 3),
                       3: pytest.approx(4 / 3)}


def test_dataset_labels_follow_a_requested_class_order(known_answer_roi_data):
    rows = pipeline.load_manifest(known_answer_roi_data).split("val")
    _, labels = _images_and_labels(pipeline.make_dataset(
        known_answer_roi_data, "val", classes=PERMUTED_CLASSES, batch_size=16))
    assert [PERMUTED_CLASSES[i] for i in labels] == rows["label"].tolist()
    with pytest.raises(ValueError, match="missing BENIGN_WITHOUT_CALLBACK"):
        pipeline.make_dataset(known_answer_roi_data, "val", classes=PERMUTED_CLASSES[:3])


def test_oversampling_draws_classes_evenly(known_answer_roi_data):
    frame = pd.read_csv(known_answer_roi_data / "manifest.csv")
    frame["path"] = [str(known_answer_roi_data / p) for p in frame["path"]]
    train = frame[frame["split"] == "train"]
    # Keep every NORMAL patch but only 8 of each other class: 48 vs 8.
    skewed = pd.concat([train[train["label"] == "NORMAL"],
                        train[train["label"] != "NORMAL"].groupby("label").head(8)])
    dataset = pipeline.make_dataset(pipeline.Manifest(skewed), "train", batch_size=64,
                                    balance="oversample", seed=1)
    _, labels = _images_and_labels(dataset.take(8))
    shares = np.bincount(labels, minlength=4) / len(labels)
    np.testing.assert_allclose(shares, 0.25, atol=0.06)


def test_manifest_errors_name_the_file_and_reason(tmp_path, known_answer_roi_data):
    with pytest.raises(pipeline.ManifestError, match="manifest not found"):
        pipeline.load_manifest(tmp_path)
    broken = tmp_path / "manifest.csv"
    pd.DataFrame({"path": ["a.png"], "split": ["train"]}).to_csv(broken, index=False)
    with pytest.raises(pipeline.ManifestError, match=f"{broken}.*missing columns label"):
        pipeline.load_manifest(broken)
    with pytest.raises(pipeline.ManifestError, match="split 'holdout' has no rows"):
        pipeline.make_dataset(known_answer_roi_data, "holdout")
    with pytest.raises(ValueError, match="balance must be one of"):
        pipeline.make_dataset(known_answer_roi_data, "train", balance="smote")


def test_no_augmentation_passes_images_through_unchanged(known_answer_roi_data):
    rows = pipeline.load_manifest(known_answer_roi_data).split("train")
    image = pipeline.decode_png(rows["path"][0], 32)
    seed = tf.constant([3, 4], tf.int64)
    np.testing.assert_array_equal(pipeline.Augmentation.none()(image, seed), image)
    assert not np.array_equal(pipeline.Augmentation()(image, seed), image)


def test_default_augmentation_keeps_intensities():
    """The default augmentation moves pixels but never changes their values: a uniform
    patch stays uniform (lesion contrast tells the classes apart), while an asked-for
    brightness or contrast change does alter it."""
    image = tf.fill([32, 32, 1], 0.4)
    seeds = [tf.constant([number, 7], tf.int64) for number in range(5)]
    for seed in seeds:
        np.testing.assert_allclose(pipeline.Augmentation()(image, seed), image, atol=1e-6)
    bright = pipeline.Augmentation(brightness=0.1, contrast=0.2)
    assert any(not np.allclose(bright(image, seed), image) for seed in seeds)


def _first_pass(data_dir, global_seed: int, balance: str = "class_weight",
                shard: tuple[int, int] = (0, 1)) -> list[bytes]:
    """The training images of the first pass over the split (or a shard of it), in the
    order drawn, after setting TensorFlow's global seed to ``global_seed``."""
    tf.random.set_seed(global_seed)
    dataset = pipeline.make_dataset(data_dir, "train", batch_size=4, seed=5, balance=balance,
                                    shard=shard)
    rows = pipeline.shard_rows(pipeline.load_manifest(data_dir).split("train"), shard)
    return [image.tobytes() for batch in dataset.take(len(rows) // 4)
            for image in batch[0].numpy()]


def test_augmentation_follows_the_example_not_its_place_in_the_shuffle(known_answer_roi_data):
    """An example's augmentation depends on the seed, the pass and the example only: two
    workers' shards draw their rows in another order, but each image is
    augmented as in the whole split's pass. The order is the seed's alone: TensorFlow's
    global seed does not change it."""
    first = _first_pass(known_answer_roi_data, 1)
    shards = [_first_pass(known_answer_roi_data, 1, shard=(index, 2)) for index in range(2)]
    assert shards[0] + shards[1] != first  # another order...
    assert sorted(shards[0] + shards[1]) == sorted(first)  # ...of the same augmented images
    assert _first_pass(known_answer_roi_data, 2) == first


def test_an_oversampled_image_drawn_twice_is_augmented_twice(known_answer_roi_data):
    frame = pd.read_csv(known_answer_roi_data / "manifest.csv")
    frame["path"] = [str(known_answer_roi_data / p) for p in frame["path"]]
    # Two images per class: a pass of 8 draws repeats some of them.
    tiny = frame[frame["split"] == "train"].groupby("label").head(2)
    dataset = pipeline.make_dataset(pipeline.Manifest(tiny), "train", batch_size=8,
                                    balance="oversample", seed=2)
    images = np.concatenate([batch[0].numpy() for batch in dataset.take(4)])
    assert len({image.tobytes() for image in images}) == len(images)
