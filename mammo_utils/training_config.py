"""The settings of one training run, checked when they are made.

:class:`TrainingConfig` is the one description of how a model is trained: ``mammo train``
builds it from its arguments, notebooks 03 and 04 from their parameters,
:func:`mammo_utils.train.train` takes it, and a model card's ``training`` section
records it (:meth:`TrainingConfig.to_dict`, plus what happened at run time), so
:meth:`mammo_utils.model_card.ModelCard.training_config` gives back the settings a
model was made with. A value out of range raises ``ValueError`` naming the setting
before anything is read or written.

This module does not import TensorFlow, so ``mammo --help`` and reading a card stay fast.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from pathlib import Path

from mammo_utils.classes import LABEL_SCHEMES, check_class_order

#: Architectures :func:`mammo_utils.models.build_model` knows, baseline first.
ARCHITECTURES: tuple[str, ...] = ("baseline", "vgg16", "resnet50", "mobilenetv2", "densenet121")

#: How class imbalance is handled: loss weights, resampling, or not at all.
BALANCE_MODES: tuple[str, ...] = ("class_weight", "oversample", "none")

#: How training is spread over devices (see :mod:`mammo_utils.distribute`): ``auto``
#: mirrors over several visible GPUs, else one device; ``none`` one device; ``mirrored``
#: every visible GPU or configured logical device of this machine; ``multi-worker``
#: several processes or machines, the cluster taken from ``TF_CONFIG``.
DISTRIBUTE_MODES: tuple[str, ...] = ("auto", "none", "mirrored", "multi-worker")


@dataclass(frozen=True)
class TrainingConfig:
    """How one model is trained (the data and the output folder are given separately).

    ``epochs`` is the first stage's length. A backbone with pretrained ``weights``
    (``"imagenet"`` or a weights file) trains its new head on the frozen backbone,
    then fine-tunes the top ``fine_tune_fraction`` of the backbone for
    ``fine_tune_epochs`` more at ``fine_tune_learning_rate``. With ``weights="none"``
    there is nothing to protect: the whole network trains from scratch for
    ``epochs + fine_tune_epochs`` in one stage. ``class_order`` is the output order, a
    permutation of the ``label_scheme``'s classes (default: the scheme's order).
    ``balance`` is one of :data:`BALANCE_MODES`. ``patience`` is the early-stopping
    patience in epochs on validation loss (the learning rate halves after half of it).
    ``deterministic`` makes TensorFlow's ops deterministic, so one seed gives the
    same weights on the same machine. ``distribute`` is one of :data:`DISTRIBUTE_MODES`;
    ``batch_size`` is per replica, so a step takes ``batch_size`` times the replicas.

    The defaults are the recipe measured at the real working scale (README, "Training at
    the real working scale"): batches of 16 give a small data set twice the optimizer
    steps per epoch of 32, and a patience of 10 (the learning rate halves after 5) lets
    training outlast a small validation set's noise.

    ``init_from`` names a model directory whose convolutional trunk starts this model
    (:mod:`mammo_utils.transfer`; same architecture and class order, any task and input
    size). Its weights replace the initial ones, so ``weights`` must be ``"none"``, and
    the model trains in the same two stages as a pretrained backbone: the new layers on
    the frozen trunk for ``epochs``, then the top ``fine_tune_fraction`` of the trunk
    (``1.0``: all of it) for ``fine_tune_epochs`` at ``fine_tune_learning_rate``.
    :meth:`stages` lists the stages a configuration trains in.

    ``stem_steps`` (baseline only) is how many strided convolutions halve the input
    before the baseline's blocks; ``None`` sizes the stem to the input
    (:func:`mammo_utils.models.baseline_stem_steps`). Set it to compare a baseline started
    from a patch model with the same network from scratch: a started baseline keeps its
    source's stem (so ``init_from`` and ``stem_steps`` do not go together).

    ``top_blocks`` is how many new convolution blocks sit between trunk and pooling
    (:func:`mammo_utils.models.top_blocks_for`); ``None`` takes the task's default: none
    for patches, two for whole breasts (``image``, ``breast``), as Shen et al. (2019) put
    on a patch classifier's trunk to classify whole mammograms.
    """

    architecture: str = "baseline"
    weights: str = "none"
    epochs: int = 20
    batch_size: int = 16
    label_scheme: str = "four_class"
    class_order: tuple[str, ...] | None = None
    seed: int = 0
    learning_rate: float = 1e-3
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-5
    fine_tune_fraction: float = 0.3
    balance: str = "class_weight"
    augment: bool = True
    patience: int = 10
    dropout: float = 0.3
    l2: float = 1e-4
    tensorboard: bool = False
    deterministic: bool = True
    distribute: str = "auto"
    init_from: str | None = None
    stem_steps: int | None = None
    top_blocks: int | None = None

    def __post_init__(self) -> None:
        self._choice("architecture", ARCHITECTURES)
        self._choice("label_scheme", LABEL_SCHEMES)
        self._choice("balance", BALANCE_MODES)
        self._choice("distribute", DISTRIBUTE_MODES)
        if isinstance(self.weights, Path):
            self._set("weights", str(self.weights))
        if not isinstance(self.weights, str) or not self.weights:
            raise ValueError(
                f"weights must be 'none', 'imagenet' or a weights file path, got {self.weights!r}"
            )
        if self.architecture == "baseline" and self.weights != "none":
            raise ValueError(
                f"weights must be 'none' for the baseline CNN (it has no pretrained "
                f"weights), got {self.weights!r}"
            )
        if isinstance(self.init_from, Path):
            self._set("init_from", str(self.init_from))
        if self.init_from is not None:
            if not isinstance(self.init_from, str) or not self.init_from:
                raise ValueError(
                    f"init_from must be a model directory path or None, got {self.init_from!r}"
                )
            if self.weights != "none":
                raise ValueError(
                    f"init_from {self.init_from!r} gives the trunk its weights: weights must "
                    f"be 'none', got {self.weights!r}"
                )
        if self.stem_steps is not None:
            self._integer("stem_steps", 0)
            if self.architecture != "baseline":
                raise ValueError(f"stem_steps is a setting of the baseline CNN, not of "
                                 f"{self.architecture!r}")
            if self.init_from is not None:
                raise ValueError(f"stem_steps: a model started from {self.init_from!r} keeps "
                                 f"that model's stem; leave stem_steps unset")
        if self.top_blocks is not None:
            self._integer("top_blocks", 0)
        if self.class_order is not None:
            try:
                order = check_class_order(self.class_order, self.label_scheme)
            except ValueError as error:
                raise ValueError(f"class_order: {error}") from None
            self._set("class_order", order)
        for name, least in (("epochs", 1), ("batch_size", 1), ("fine_tune_epochs", 0),
                            ("patience", 0), ("seed", 0)):
            self._integer(name, least)
        for name in ("learning_rate", "fine_tune_learning_rate"):
            self._number(name, lambda value: value > 0, "> 0")
        self._number("fine_tune_fraction", lambda value: 0 < value <= 1, "in (0, 1]")
        self._number("dropout", lambda value: 0 <= value < 1, "in [0, 1)")
        self._number("l2", lambda value: value >= 0, ">= 0")
        for name in ("augment", "tensorboard", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def pretrained(self) -> bool:
        """Whether a backbone starts from given weights (and so trains in two stages)."""
        return self.architecture != "baseline" and self.weights != "none"

    @property
    def two_stage(self) -> bool:
        """Whether the trunk starts from given weights (pretrained or ``init_from``), so the
        new layers train first on the frozen trunk."""
        return self.pretrained or self.init_from is not None

    def stages(self) -> list[dict]:
        """The training stages in order: ``name`` (the trunk setting of
        :func:`mammo_utils.models.set_backbone_trainable`), ``trains`` (in words),
        ``epochs`` and ``learning_rate``. From scratch there is nothing to protect: one
        ``full`` stage of ``epochs + fine_tune_epochs``."""
        if not self.two_stage:
            return [{"name": "full", "trains": "every layer",
                     "epochs": self.epochs + self.fine_tune_epochs,
                     "learning_rate": self.learning_rate}]
        stages = [{"name": "head", "trains": "the new layers only (trunk frozen)",
                   "epochs": self.epochs, "learning_rate": self.learning_rate}]
        if self.fine_tune_epochs:
            fraction = self.fine_tune_fraction
            share = "all" if fraction == 1 else f"the top {fraction:.0%}"
            stages.append({
                "name": "finetune",
                "trains": f"{share} of the trunk and the new layers "
                          "(BatchNormalization statistics frozen)",
                "epochs": self.fine_tune_epochs, "learning_rate": self.fine_tune_learning_rate,
            })
        return stages

    def to_dict(self) -> dict:
        """The settings as JSON-ready values (``class_order`` a list or None)."""
        values = asdict(self)
        if self.class_order is not None:
            values["class_order"] = list(self.class_order)
        return values

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def _choice(self, name: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

    def _integer(self, name: str, least: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        self._set(name, int(value))

    def _number(self, name: str, accept, rule: str) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not accept(value):
            raise ValueError(f"{name} must be a number {rule}, got {value!r}")
        self._set(name, float(value))
