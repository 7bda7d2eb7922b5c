"""One configuration object for stage one: every training setting with its default.

:class:`TrainingConfig` is what travels from the estimator, the CLI and the benchmarks to
:mod:`embedder.training`; nothing threads the settings one keyword at a time. Each field's
help text lives in its ``metadata`` so the CLI builds its options from this one list.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
from numbers import Integral, Real

from classifiers.sklearn_compat import Interval, StrOptions

DISTANCE_NAMES = ("euclidean", "squared", "cosine")
PRECISIONS = (None, "mixed_float16", "mixed_bfloat16")
STRATEGIES = (None, "mirrored", "multi_worker")
#: P x K batches aim at about this many images when P or K is not given.
TARGET_BATCH_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Check:
    """The rule a numeric or flag setting obeys, in one place for every consumer.

    :meth:`TrainingConfig.validate` applies it, :meth:`TrainingConfig.parameter_constraints`
    turns it into the estimator's scikit-learn constraint, and the CLI's option types
    follow ``kind``.

    Parameters
    ----------
    kind : {Integral, Real, bool, "path", "params", "augment"}
        The type of the value (``"augment"``: ``False``, ``True``, a preset name or
        Keras layers, see :mod:`embedder.data.augmentation`).
    low, high : float or None
        Bounds (None: unbounded).
    closed : {"left", "right", "both", "neither"}, default="left"
        Which bounds are included.
    optional : bool, default=False
        Whether None is allowed.
    """

    kind: object
    low: float | None = None
    high: float | None = None
    closed: str = "left"
    optional: bool = False

    def problem(self, value):
        """None when ``value`` obeys the rule, else what it must be (for a message)."""
        if value is None and self.optional:
            return None
        if self.kind is bool:
            return None if isinstance(value, bool) else "True or False"
        if self.kind == "path":
            return None if isinstance(value, str | os.PathLike) else "a folder path"
        if self.kind == "augment":
            from embedder.data.augmentation import augment_problem

            return augment_problem(value)
        if self.kind == "params":
            return (None if isinstance(value, str | collections.abc.Mapping)
                    else "a dict or a JSON object string")
        expected = "an int" if self.kind is Integral else "a number"
        ok = (not isinstance(value, bool) and isinstance(value, self.kind)
              and math.isfinite(value))
        low_ok = self.low is None or (value >= self.low if self.closed in ("left", "both")
                                      else value > self.low) if ok else False
        high_ok = self.high is None or (value <= self.high if self.closed in ("right", "both")
                                        else value < self.high) if ok else False
        if ok and low_ok and high_ok:
            return None
        return f"{expected} {self.describe()}".rstrip()

    def describe(self):
        """The bounds in words, e.g. ``">= 1"`` or ``"in [0, 1)"``."""
        left = "[" if self.closed in ("left", "both") else "("
        right = "]" if self.closed in ("right", "both") else ")"
        if self.low is not None and self.high is not None:
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return (">= " if left == "[" else "> ") + f"{self.low:g}"
        if self.high is not None:
            return ("<= " if right == "]" else "< ") + f"{self.high:g}"
        return ""

    def constraint(self):
        """The scikit-learn ``_parameter_constraints`` entry of this rule."""
        if self.kind is bool:
            out = ["boolean"]
        elif self.kind == "path":
            out = [str, os.PathLike]
        elif self.kind == "params":
            out = [dict, str]
        elif self.kind == "augment":
            import keras

            from embedder.data.augmentation import AUGMENTATIONS

            # the layers inside a list are checked by fit (validate) and the pipeline
            out = ["boolean", StrOptions(set(AUGMENTATIONS)), list, tuple, keras.layers.Layer]
        else:
            out = [Interval(self.kind, self.low, self.high, closed=self.closed)]
        return out + [None] if self.optional else out


def _field(default, help, *, check=None, choices=None, metavar=None):
    metadata = {"help": help, "check": check, "choices": choices, "metavar": metavar}
    return dataclasses.field(default=default, metadata=metadata)


class RegisteredLosses(collections.abc.Set):
    """The names in :data:`embedder.losses.LOSSES`, read when asked (a live set).

    The config's choices and the estimator's ``StrOptions`` constraint hold this object,
    so a loss registered after import is accepted everywhere.
    """

    def _names(self):
        from embedder.losses import loss_names

        return loss_names()

    def __contains__(self, name):
        return name in self._names()

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())

    def __repr__(self):
        return repr(list(self._names()))

    @classmethod
    def _from_iterable(cls, iterable):
        # set operations (e.g. ``deprecated - options`` in scikit-learn) give plain sets
        return frozenset(iterable)


def _loss_choices():
    return tuple(RegisteredLosses())


def field_choices(field):
    """The allowed values of a ``TrainingConfig`` field with choices (else None).

    Loss names are read from the registry when asked, so a loss registered later is a
    valid choice.
    """
    choices = field.metadata.get("choices")
    return choices() if callable(choices) else choices


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Every stage-one training setting (see DESIGN section 3 and the README's recipe).

    This is the one source of the settings: each field's metadata holds its help text,
    its rule (:class:`Check`) or its choices. The estimator's parameters and their
    scikit-learn constraints, and the CLI's options, are derived from it (and a test
    fails when they drift). Build it from keyword arguments, from an estimator's
    ``get_params()`` (:meth:`from_params`) or from CLI options; :meth:`validate` checks
    every field and :meth:`resolve` fills the defaults that depend on the data (the
    margin of the loss, P from the class count).

    Examples
    --------
    >>> from embedder.training import TrainingConfig
    >>> config = TrainingConfig(loss="batch_hard", epochs=5).validate()
    >>> config.resolve(n_classes=40).classes_per_batch
    16
    """

    loss: str = _field("batch_all", "a loss of embedder.losses.LOSSES: batch_all, "
                       "batch_hard, semi_hard, contrastive, multi_similarity, "
                       "supervised_contrastive, circle, proxy_anchor, arcface, or triplet "
                       "(the seed's offline random triplets)", choices=_loss_choices)
    margin: float | None = _field(None, "hinge margin (default: the loss's registered one, "
                                  "0.2 for triplet losses, 0.5 for contrastive)",
                                  check=Check(Real, 0, None, optional=True))
    distance: str = _field("euclidean", "euclidean, squared or cosine",
                           choices=DISTANCE_NAMES)
    soft: bool = _field(False, "soft-margin batch-hard: log1p(exp(d_ap - d_an)), the "
                        "margin is not used", check=Check(bool))
    classes_per_batch: int | None = _field(None, "P of the P x K batches (default: about "
                                           "64 / K classes)", metavar="P",
                                           check=Check(Integral, 2, None, optional=True))
    samples_per_class: int = _field(4, "K of the P x K batches", metavar="K",
                                    check=Check(Integral, 2, None))
    epochs: int = _field(20, "upper bound on epochs (early stopping usually ends sooner)",
                         check=Check(Integral, 1, None))
    learning_rate: float = _field(2e-3, "peak Adam learning rate (warm-up, cosine decay)",
                                  check=Check(Real, 0, None, closed="neither"))
    warmup_epochs: float = _field(1.0, "epochs of linear learning-rate warm-up",
                                  check=Check(Real, 0, None))
    freeze_backbone_epochs: int | None = _field(
        None, "fine-tuning: first epochs train only the embedding head, the backbone "
        "frozen (its BatchNorm in inference mode); then all layers but the backbone's "
        "BatchNorm train (default: 1 when starting from pretrained weights or a .keras "
        "encoder and epochs > 1, else 0)", metavar="N",
        check=Check(Integral, 0, None, optional=True))
    fine_tune_learning_rate_factor: float = _field(
        0.1, "learning rate of the epochs after the frozen-backbone ones, relative to "
        "learning_rate (their own warm-up and cosine decay)", metavar="FACTOR",
        check=Check(Real, 0, 1, closed="right"))
    patience: int = _field(5, "epochs without a better validation MAP@R before stopping",
                           check=Check(Integral, 0, None))
    validation_fraction: float = _field(0.1, "stratified hold-out for validation "
                                        "retrieval, early stopping and best weights; 0: none",
                                        check=Check(Real, 0, 1))
    augment: bool | str | list | tuple = _field(
        False, "training-time augmentation: True (flips, shifts, brightness), a preset "
        "(photo: resized crops, flips, colour jitter; digits: shifts, rotations, no flip) "
        "or the user's Keras preprocessing layers", metavar="PRESET",
        check=Check("augment"))
    min_delta: float = _field(0.005, "smallest rise of the validation MAP@R that counts "
                              "as progress for patience (smaller changes are noise)",
                              check=Check(Real, 0, 1))
    converged_patience: int = _field(
        2, "stop after this many epochs in a row with (almost) no active triplet: the "
        "loss is ~0 and there is nothing left to learn; 0: never", metavar="N",
        check=Check(Integral, 0, None))
    precision: str | None = _field(None, "mixed_float16 or mixed_bfloat16 (encoder computes "
                                   "in it; losses and normalisation stay float32)",
                                   choices=PRECISIONS)
    strategy: str | None = _field(None, "mirrored: tf.distribute.MirroredStrategy over the "
                                  "local GPUs; multi_worker: one run over the TF_CONFIG "
                                  "machines", choices=STRATEGIES)
    cross_replica: bool = _field(False, "mine triplets across the batches of all replicas",
                                 check=Check(bool))
    checkpoint_dir: str | None = _field(None, "per-epoch backups; a later run with the same "
                                        "data and settings resumes from them", metavar="DIR",
                                        check=Check("path", optional=True))
    random_state: int | None = _field(None, "seed of sampling, weights and augmentation",
                                      check=Check(Integral, 0, None, optional=True))
    verbose: int = _field(0, "0 silent, 1 progress bar, 2 one line per epoch",
                          check=Check(Integral, 0, None))
    loss_params: dict | str | None = _field(
        None, "the loss's own settings (LOSSES[loss].params), a dict or a JSON object, "
        "e.g. '{\"alpha\": 2}' for multi_similarity", metavar="JSON",
        check=Check("params", optional=True))
    memory_size: int = _field(0, "rows of the cross-batch memory (XBM): anchors are also "
                              "mined against the embeddings of earlier batches; 0: none",
                              metavar="N", check=Check(Integral, 0, None))
    memory_warmup_epochs: float = _field(1.0, "epochs before the cross-batch memory is used",
                                         metavar="EPOCHS", check=Check(Real, 0, None))

    # ----------------------------------------------------------------- checks
    def validate(self, *, fields=True) -> TrainingConfig:
        """Check the settings; return ``self``.

        ``fields=False`` checks only the rules between fields (for an estimator whose
        scikit-learn parameter validation, derived from the same rules, already checked
        each field).

        Raises
        ------
        ValueError, TypeError
            Naming the field, what it must be and what it is.
        """
        if fields:
            self._check_fields()
        freeze = self.freeze_backbone_epochs
        if freeze is not None and freeze > self.epochs:
            raise ValueError(f"freeze_backbone_epochs must be at most epochs ({self.epochs}), "
                             f"got {freeze!r}")
        if self.soft and self.loss != "batch_hard":
            raise ValueError(f"soft=True applies to loss='batch_hard' only, got "
                             f"loss={self.loss!r}")
        self.loss_settings()  # names and types of the loss's own settings
        if not fields:  # scikit-learn checked augment's type only, not a list's items
            from embedder.data.augmentation import check_augment

            check_augment(self.augment)
        if self.memory_size and (not self.in_batch or self._has_proxies()):
            raise ValueError(f"memory_size applies to in-batch pair losses, got "
                             f"loss={self.loss!r} with memory_size={self.memory_size!r}")
        if self.strategy == "multi_worker" and not self.in_batch:
            raise ValueError(f"strategy='multi_worker' needs an in-batch loss, got "
                             f"loss={self.loss!r}")
        if self.cross_replica and not self.in_batch:
            raise ValueError(f"cross_replica=True needs an in-batch loss, got "
                             f"loss={self.loss!r} (offline triplets have no batch to gather)")
        return self

    def _check_fields(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            choices = field_choices(field)
            if choices is not None and value not in choices:
                raise ValueError(f"{field.name} must be one of {list(choices)}, got {value!r}")
            check = field.metadata.get("check")
            problem = check.problem(value) if check is not None else None
            if problem is not None:
                if check.optional:
                    problem += " or None"
                error = TypeError if check.kind in (bool, "path", "params") else ValueError
                raise error(f"{field.name} must be {problem}, got {value!r}")

    @classmethod
    def parameter_constraints(cls) -> dict:
        """scikit-learn ``_parameter_constraints`` of the fields, derived from their rules."""
        out = {}
        for field in dataclasses.fields(cls):
            check = field.metadata.get("check")
            if field.name == "random_state":
                out[field.name] = ["random_state"]
            elif field.name == "loss":
                out[field.name] = [StrOptions(RegisteredLosses())]
            elif check is not None:
                out[field.name] = check.constraint()
            elif field_choices(field) is None:
                out[field.name] = ["no_validation"]
            else:
                choices = field_choices(field)
                out[field.name] = ([StrOptions({c for c in choices if c is not None})]
                                   + ([None] if None in choices else []))
        return out

    @property
    def in_batch(self) -> bool:
        """Whether triplets are mined inside P x K batches (every loss but ``"triplet"``)."""
        from embedder.losses import get_spec

        return get_spec(self.loss).in_batch

    def _has_proxies(self) -> bool:
        from embedder.losses import get_spec

        return get_spec(self.loss).has_proxies

    def loss_settings(self) -> dict:
        """The loss's own settings (see ``LOSSES[loss].params``): the fields named like
        one (``soft``), updated with the ``loss_params`` field (a dict or JSON text).

        Raises
        ------
        ValueError, TypeError
            For JSON that is not an object, or settings the loss does not take.
        """
        from embedder.losses import get_spec, resolve_params

        out = {name: getattr(self, name) for name in get_spec(self.loss).params
               if hasattr(self, name)}
        given = self.loss_params if self.loss_params is not None else {}
        if isinstance(given, str):
            import json

            try:
                given = json.loads(given)
            except json.JSONDecodeError as exc:
                raise ValueError(f"loss_params must be a JSON object, got {given!r}: "
                                 f"{exc.msg}") from None
            if not isinstance(given, dict):
                raise ValueError(f"loss_params must be a JSON object, got {self.loss_params!r}")
        out.update(given)
        resolve_params(self.loss, out)
        return out

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
            ``margin`` set to the loss's default when None (0.0 for a loss without a margin:
            the diagnostics then count triplets in the wrong order), and
            ``classes_per_batch`` to about ``TARGET_BATCH_SIZE / samples_per_class`` classes
            (at least 2, at most ``n_classes``) when None. With several replicas mining
            separately (``cross_replica=False``) the default P is a multiple of
            ``n_replicas``: a batch is laid out class by class and split evenly, so every
            replica then gets whole classes, with positives for every anchor.
            ``freeze_backbone_epochs`` None becomes 1 for a pretrained start with more
            than one epoch, else 0; ``fine_tune_learning_rate_factor`` becomes 1.0 when
            no epochs follow a frozen-backbone phase (nothing is lowered), so the
            resolved config says what is applied.
        """
        from embedder.losses import default_margin

        margin = default_margin(self.loss) if self.margin is None else self.margin
        margin = 0.0 if margin is None else margin  # a loss without one: diagnostics at 0
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
        if not isinstance(self.augment, bool | str):
            from embedder.data.augmentation import describe_augment

            out["augment"] = describe_augment(self.augment)
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
