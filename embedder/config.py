"""One configuration object for stage one: every training setting with its default.

:class:`TrainingConfig` is what travels from the estimator, the CLI and the benchmarks to
:mod:`embedder.training`; nothing threads the settings one keyword at a time. Each field's
help text lives in its ``metadata`` so the CLI builds its options from this one list.
"""

from __future__ import annotations

import dataclasses
import math
import os
from numbers import Integral, Real

#: Names of the losses (see :mod:`embedder.losses`); ``"triplet"`` is the seed's
#: offline approach, the others mine triplets inside P x K batches.
LOSS_NAMES = ("batch_all", "batch_hard", "semi_hard", "contrastive", "triplet")
DISTANCE_NAMES = ("euclidean", "squared", "cosine")
PRECISIONS = (None, "mixed_float16", "mixed_bfloat16")
STRATEGIES = (None, "mirrored")
#: Why ``strategy="multi_worker"`` is refused (see the README's "Scaling up").
MULTI_WORKER_UNSUPPORTED = (
    "strategy='multi_worker' is not supported: tf.distribute.MultiWorkerMirroredStrategy "
    "fails before the first step under Keras 3 (keras-team/keras#20585); run independent "
    "trainings (folds, searches) on several machines with Dask instead")
#: P x K batches aim at about this many images when P is not given.
TARGET_BATCH_SIZE = 64


def _field(default, help, **kinds):
    return dataclasses.field(default=default, metadata={"help": help, **kinds})


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Every stage-one training setting (see DESIGN section 3 and the README's recipe).

    Build it from keyword arguments, from an estimator's ``get_params()``
    (:meth:`from_params`) or from CLI options; :meth:`validate` checks every field and
    :meth:`resolve` fills the defaults that depend on the data (the margin of the loss,
    P from the class count).

    Examples
    --------
    >>> from embedder.config import TrainingConfig
    >>> config = TrainingConfig(loss="batch_hard", epochs=5).validate()
    >>> config.resolve(n_classes=40).classes_per_batch
    16
    """

    loss: str = _field("batch_all", "batch_all, batch_hard, semi_hard, contrastive, or "
                       "triplet (the seed's offline random triplets)", choices=LOSS_NAMES)
    margin: float | None = _field(None, "hinge margin (default: 0.2 for triplet losses, "
                                  "0.5 for contrastive)")
    distance: str = _field("euclidean", "euclidean, squared or cosine",
                           choices=DISTANCE_NAMES)
    soft: bool = _field(False, "soft-margin batch-hard: log1p(exp(d_ap - d_an)), the "
                        "margin is not used")
    classes_per_batch: int | None = _field(None, "P of the P x K batches (default: about "
                                           "64 / K classes)", metavar="P")
    samples_per_class: int = _field(4, "K of the P x K batches", metavar="K")
    epochs: int = _field(20, "upper bound on epochs (early stopping usually ends sooner)")
    learning_rate: float = _field(2e-3, "peak Adam learning rate (warm-up, cosine decay)")
    warmup_epochs: float = _field(1.0, "epochs of linear learning-rate warm-up")
    freeze_backbone_epochs: int | None = _field(
        None, "fine-tuning: first epochs train only the embedding head, the backbone "
        "frozen (its BatchNorm in inference mode); then all layers but the backbone's "
        "BatchNorm train (default: 1 when starting from pretrained weights or a .keras "
        "encoder and epochs > 1, else 0)", metavar="N")
    fine_tune_learning_rate_factor: float = _field(
        0.1, "learning rate of the epochs after the frozen-backbone ones, relative to "
        "learning_rate (their own warm-up and cosine decay)", metavar="FACTOR")
    patience: int = _field(5, "epochs without a better validation MAP@R before stopping")
    validation_fraction: float = _field(0.1, "stratified hold-out for validation "
                                        "retrieval, early stopping and best weights; 0: none")
    augment: bool = _field(False, "random flips, shifts and brightness changes")
    precision: str | None = _field(None, "mixed_float16 or mixed_bfloat16 (encoder computes "
                                   "in it; losses and normalisation stay float32)",
                                   choices=PRECISIONS)
    strategy: str | None = _field(None, "mirrored: tf.distribute.MirroredStrategy over the "
                                  "local GPUs", choices=STRATEGIES)
    cross_replica: bool = _field(False, "mine triplets across the batches of all replicas")
    checkpoint_dir: str | None = _field(None, "per-epoch backups; a later run with the same "
                                        "data and settings resumes from them", metavar="DIR")
    random_state: int | None = _field(None, "seed of sampling, weights and augmentation")
    verbose: int = _field(0, "0 silent, 1 progress bar, 2 one line per epoch")

    # ----------------------------------------------------------------- checks
    def validate(self) -> TrainingConfig:
        """Check every field; return ``self``.

        Raises
        ------
        ValueError
            Naming the field, what it must be and what it is.
        """
        if self.strategy == "multi_worker":
            raise ValueError(MULTI_WORKER_UNSUPPORTED)
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            value = getattr(self, field.name)
            if choices is not None and value not in choices:
                raise ValueError(f"{field.name} must be one of {list(choices)}, got {value!r}")
        _check_number("margin", self.margin, Real, 0, None, optional=True)
        _check_number("classes_per_batch", self.classes_per_batch, Integral, 2, None,
                      optional=True)
        _check_number("samples_per_class", self.samples_per_class, Integral, 2, None)
        _check_number("epochs", self.epochs, Integral, 1, None)
        _check_number("warmup_epochs", self.warmup_epochs, Real, 0, None)
        _check_fine_tuning(self)
        _check_number("patience", self.patience, Integral, 0, None)
        _check_number("verbose", self.verbose, Integral, 0, None)
        _check_open_interval("learning_rate", self.learning_rate, 0, math.inf)
        _check_number("validation_fraction", self.validation_fraction, Real, 0, None)
        if self.validation_fraction >= 1:
            raise ValueError("validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction!r}")
        if self.soft and self.loss != "batch_hard":
            raise ValueError(f"soft=True applies to loss='batch_hard' only, got "
                             f"loss={self.loss!r}")
        if self.cross_replica and self.loss == "triplet":
            raise ValueError("cross_replica=True needs an in-batch loss, got loss='triplet' "
                             "(offline triplets have no batch to gather)")
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir,
                                                              str | os.PathLike):
            raise TypeError("checkpoint_dir must be a folder path or None, got "
                            f"{type(self.checkpoint_dir).__name__}")
        return self

    @property
    def in_batch(self) -> bool:
        """Whether triplets are mined inside P x K batches (every loss but ``"triplet"``)."""
        return self.loss != "triplet"

    def resolve(self, n_classes: int, n_replicas: int = 1, *,
                pretrained: bool = False) -> TrainingConfig:
        """The config with the data-dependent defaults filled in.

        Parameters
        ----------
        n_classes : int
            Classes in the training set.
        n_replicas : int, default=1
            Replicas that share each batch (``tf.distribute``).
        pretrained : bool, default=False
            Whether the encoder starts from pretrained weights (a ``weights`` file or
            ``"imagenet"``, or a saved ``.keras`` encoder): decides the default
            ``freeze_backbone_epochs``.

        Returns
        -------
        TrainingConfig
            ``margin`` set to the loss's default when None, and ``classes_per_batch``
            to about ``TARGET_BATCH_SIZE / samples_per_class`` classes (at least 2, at
            most ``n_classes``) when None. With several replicas mining separately
            (``cross_replica=False``) the default P is a multiple of ``n_replicas``:
            a batch is laid out class by class and split evenly, so every replica then
            gets whole classes, with positives for every anchor.
            ``freeze_backbone_epochs`` None becomes 1 for a pretrained start with more
            than one epoch, else 0; ``fine_tune_learning_rate_factor`` becomes 1.0 when
            no epochs follow a frozen-backbone phase (nothing is lowered), so the
            resolved config says what is applied.
        """
        margin = self.margin
        if margin is None:
            margin = 0.5 if self.loss == "contrastive" else 0.2
        p = self.classes_per_batch
        if p is None:
            p = int(min(n_classes, max(2, TARGET_BATCH_SIZE // self.samples_per_class)))
            if n_replicas > 1 and not self.cross_replica and self.in_batch:
                p = max(n_replicas, p - p % n_replicas)
        freeze = self.freeze_backbone_epochs
        if freeze is None:
            # One head-only epoch protects pretrained features from the large gradients a
            # randomly initialised head sends back; from scratch there is nothing to keep.
            freeze = 1 if pretrained and self.epochs > 1 else 0
        factor = self.fine_tune_learning_rate_factor if 0 < freeze < self.epochs else 1.0
        return self.replace(margin=float(margin), classes_per_batch=p,
                            freeze_backbone_epochs=int(freeze),
                            fine_tune_learning_rate_factor=float(factor))

    # ------------------------------------------------------------- conversion
    def replace(self, **changes) -> TrainingConfig:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The settings as a plain dict (paths as strings)."""
        out = dataclasses.asdict(self)
        if out["checkpoint_dir"] is not None:
            out["checkpoint_dir"] = os.fspath(out["checkpoint_dir"])
        return out

    @classmethod
    def from_params(cls, params: dict) -> TrainingConfig:
        """A config from a mapping such as an estimator's ``get_params()``.

        Keys that are not training settings (``encoder``, ``input_shape``, ...) are
        ignored; a ``RandomState`` ``random_state`` is turned into an int seed.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in params.items() if k in names}
        if "random_state" in kwargs and kwargs["random_state"] is not None:
            kwargs["random_state"] = seed_from(kwargs["random_state"])
        return cls(**kwargs)


def seed_from(random_state) -> int:
    """An int seed from a scikit-learn ``random_state`` (int, RandomState or None)."""
    if isinstance(random_state, Integral):
        return int(random_state)
    from sklearn.utils import check_random_state

    return int(check_random_state(random_state).randint(2**31 - 1))


def _check_number(name, value, kind, low, high, *, optional=False):
    if value is None and optional:
        return
    expected = "an int" if kind is Integral else "a number"
    valid = (not isinstance(value, bool) and isinstance(value, kind)
             and math.isfinite(value) and value >= low and (high is None or value <= high))
    if not valid:
        raise ValueError(f"{name} must be {expected} >= {low}"
                         f"{' or None' if optional else ''}, got {value!r}")


def _check_fine_tuning(config):
    _check_number("freeze_backbone_epochs", config.freeze_backbone_epochs, Integral, 0,
                  None, optional=True)
    freeze = config.freeze_backbone_epochs
    if freeze is not None and freeze > config.epochs:  # epochs is checked before
        raise ValueError(f"freeze_backbone_epochs must be at most epochs ({config.epochs}), "
                         f"got {freeze!r}")
    factor = config.fine_tune_learning_rate_factor
    if isinstance(factor, bool) or not isinstance(factor, Real) or not 0 < factor <= 1:
        raise ValueError("fine_tune_learning_rate_factor must be a number in (0, 1], got "
                         f"{factor!r}")


def _check_open_interval(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, Real) or not low < value < high:
        raise ValueError(f"{name} must be a number > {low}, got {value!r}")
