"""Start a model from another model's convolutional trunk (``--init-from``).

A patch classifier's trunk becomes the trunk of a whole-breast model under new top layers
(Shen et al. 2019), and a ``roi`` model can start from another ``roi`` model (fine-tuning
on new data). :func:`copy_trunk_weights` copies the trunk by layer name: the baseline's
``block*_conv*`` and ``block*_bn*`` layers, or every layer of the nested
``keras.applications`` backbone (:data:`mammo_utils.models.BACKBONE_LAYER`), wherever the
target nests them (a two-view model holds its shared trunk inside a nested model). The
head (:data:`HEAD_LAYERS`) is never copied: it is what the new task learns. The trunk is
fully convolutional and pooled globally, so its weights fit any input size.

:func:`initialise_from` is what training calls: it loads the source through the safe
loader (:func:`mammo_utils.model_card.load_model_dir`, which checks the card's sealed
record of the model file), refuses a source of another architecture or class order,
copies the trunk and returns the lineage the new model card records.
"""

from __future__ import annotations

from pathlib import Path

import keras

from mammo_utils.files import sha256_file
from mammo_utils.model_card import CARD_FILE, load_model_dir

#: Layers of the classification head, by name: learned anew, never copied.
HEAD_LAYERS: frozenset[str] = frozenset({"global_pool", "dense", "head_dropout", "predictions"})


class TransferError(ValueError):
    """A source model whose trunk cannot start the target model; the message names both."""


def trunk_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """The layers holding weights outside the head, by name, nested models included.

    A layer shared by several branches (a two-view model's trunk) is one layer and is
    listed once; two different layers of one name are refused, since copying by name
    could not tell them apart.
    """
    found: dict[str, keras.layers.Layer] = {}
    for layer in _leaf_layers(model):
        if layer.name in HEAD_LAYERS or not layer.weights:
            continue
        if layer.name in found and found[layer.name] is not layer:
            raise TransferError(
                f"model {model.name!r} holds two different layers named {layer.name!r}; "
                "trunk weights are copied by layer name"
            )
        found[layer.name] = layer
    return found


def _leaf_layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def copy_trunk_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """Copy every trunk layer of ``source`` into the layer of the same name in ``target``.

    Returns the copied layer names in the source's order. Raises :class:`TransferError`,
    before anything is copied, when no trunk layer matches, when the target lacks some
    of the source's trunk layers (the architectures differ), or when a layer's weight
    shapes differ. Layers of the target that the source lacks (new layers) keep their
    initial weights.
    """
    source_layers, target_layers = trunk_layers(source), trunk_layers(target)
    names = [name for name in source_layers if name in target_layers]
    pair = f"source model {source.name!r} and target model {target.name!r}"
    if not names:
        raise TransferError(f"{pair} share no trunk layer: nothing to copy")
    missing = [name for name in source_layers if name not in target_layers]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise TransferError(
            f"{pair} have different architectures: the target lacks {len(missing)} of the "
            f"source's trunk layers ({shown})"
        )
    for name in names:
        source_shapes = [tuple(weight.shape) for weight in source_layers[name].weights]
        target_shapes = [tuple(weight.shape) for weight in target_layers[name].weights]
        if source_shapes != target_shapes:
            raise TransferError(
                f"{pair}: layer {name!r} has weight shapes {source_shapes} in the source "
                f"and {target_shapes} in the target"
            )
    for name in names:
        target_layers[name].set_weights(source_layers[name].get_weights())
    return names


def stem_steps_of(source_dir: str | Path) -> int | None:
    """The stem a baseline started from ``source_dir`` keeps: as many halvings as the
    source model's stem makes (its blocks learned features at that scale, whatever size
    the new model takes), counted in the saved model, which may itself have kept the stem
    of the model it started from; ``None`` for a backbone."""
    source, card = load_model_dir(source_dir)
    if card.architecture != "baseline":
        return None
    return sum(layer.name.startswith("stem_conv") for layer in _leaf_layers(source))


def initialise_from(model: keras.Model, source_dir: str | Path, *, architecture: str,
                    classes: tuple[str, ...] | list[str]) -> dict:
    """Copy the trunk of the model in ``source_dir`` into ``model``; return the lineage.

    The source must have the same ``architecture`` and output ``classes`` (same order) as
    the model being trained: another architecture has another trunk, and another class
    order would make the lineage say the new model continues a different question.
    Raises :class:`~mammo_utils.model_card.ModelDirectoryError` for a source that does
    not load safely and :class:`TransferError` for a mismatch.
    """
    source_dir = Path(source_dir)
    source, card = load_model_dir(source_dir)
    if card.architecture != architecture:
        raise TransferError(
            f"cannot start a {architecture} model from {source_dir}: that model is a "
            f"{card.architecture} (train with the source's architecture)"
        )
    if list(card.classes) != list(classes):
        raise TransferError(
            f"cannot start a model with classes {list(classes)} from {source_dir}: that "
            f"model's classes are {card.classes} (label scheme {card.label_scheme}); train "
            "with the same label scheme and class order"
        )
    copied = copy_trunk_weights(source, model)
    return {
        "source_model": card.model_name,
        "source_dir": str(source_dir),
        "source_card_sha256": sha256_file(source_dir / CARD_FILE),
        "source_task": card.task,
        "source_architecture": card.architecture,
        "source_image_size": card.image_size,
        "layers_copied": copied,
    }
