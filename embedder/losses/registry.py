"""The one table of losses: each name with its function, its terms, its margin and its text.

Every place that lists losses reads :data:`LOSSES`: the configuration's choices
(:class:`embedder.training.TrainingConfig`), the trainer, :func:`embedder.losses.get_loss`,
the CLI's ``--loss`` choices, the report and the docs. Adding an in-batch loss takes its
pure ``keras.ops`` function, its ``*_terms`` function of a
:class:`~embedder.losses.mining.BatchView` and one :func:`register_loss` call (plus its
brute-force reference test); nothing else names it.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from types import MappingProxyType

from embedder.checks import few
from embedder.losses import functions, proxies, similarity


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """One registered loss.

    Parameters
    ----------
    name : str
        The name users pass (``loss="batch_all"``).
    function : callable
        The pure ``keras.ops`` function: ``function(labels, embeddings, margin=...,
        distance=..., **params, cross_replica=False)`` for an in-batch loss.
    description : str
        One line for the CLI's help, the report and the docs.
    default_margin : float or None, default=0.2
        The margin used when none is given (None: the loss has no margin).
    terms : callable or None, default=None
        ``terms(view, margin, **params) -> LossTerms`` from a
        :class:`~embedder.losses.mining.BatchView`; None for a loss that does not mine
        inside a batch (the offline ``"triplet"`` baseline).
    params : mapping of str to object, default={}
        The loss's own settings and their defaults (e.g. ``{"soft": False}``).
    proxy_shape : callable or None, default=None
        For a loss with trainable class proxies: ``proxy_shape(n_classes, dim, **params)
        -> (rows, dim)``, the shape of the proxy matrix the trainer creates and passes to
        ``terms(view, margin, proxies=..., **params)``; None for a loss without trainable
        state.
    """

    name: str
    function: Callable
    description: str
    default_margin: float | None = 0.2
    terms: Callable | None = None
    params: Mapping[str, object] = dataclasses.field(default_factory=dict)
    proxy_shape: Callable | None = None

    @property
    def in_batch(self) -> bool:
        """Whether the loss mines inside a P x K batch (one forward pass per batch)."""
        return self.terms is not None

    @property
    def has_proxies(self) -> bool:
        """Whether the loss trains class proxies (weights of the training model)."""
        return self.proxy_shape is not None


_REGISTRY: dict[str, LossSpec] = {}
#: Read-only view of the registered losses, by name, in registration order.
LOSSES: Mapping[str, LossSpec] = MappingProxyType(_REGISTRY)


def register_loss(spec, *, replace=False):
    """Add ``spec`` (a :class:`LossSpec`) to :data:`LOSSES`; return it.

    Raises
    ------
    ValueError
        When the name is taken (unless ``replace=True``) or is not an identifier.
    TypeError
        When ``spec`` is not a :class:`LossSpec` or its functions are not callable.
    """
    if not isinstance(spec, LossSpec):
        raise TypeError(f"spec must be a LossSpec, got {type(spec).__name__}")
    if not isinstance(spec.name, str) or not spec.name.isidentifier():
        raise ValueError(f"a loss name must be an identifier, got {spec.name!r}")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"a loss named {spec.name!r} is already registered; pass "
                         "replace=True to replace it")
    for attr in ("function", "terms", "proxy_shape"):
        value = getattr(spec, attr)
        if value is not None and not callable(value):
            raise TypeError(f"{attr} of loss {spec.name!r} must be callable, got {value!r}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_loss(name):
    """Remove the loss ``name`` (a built-in one too); a missing name raises ``ValueError``."""
    get_spec(name)
    del _REGISTRY[name]


def get_spec(name):
    """The :class:`LossSpec` of ``name``; ``ValueError`` listing the names otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"loss must be one of {list(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def loss_names(*, in_batch=None):
    """Names of the registered losses, all or only the (non-)in-batch ones."""
    return tuple(name for name, spec in _REGISTRY.items()
                 if in_batch is None or spec.in_batch == in_batch)


def default_margin(name):
    """Default margin of the loss ``name`` (see :data:`LOSSES`)."""
    return get_spec(name).default_margin


def in_batch_loss(name, view, margin, params=None, proxies=None):
    """``(loss, LossTerms)`` of the in-batch loss ``name`` on ``view``.

    ``params`` holds the loss's own settings (missing ones take the registered defaults);
    ``proxies`` the class proxies of a proxy loss; the loss is reduced over the global
    batch under ``view.context``.
    """
    spec = get_spec(name)
    if not spec.in_batch:
        raise ValueError(f"loss {name!r} does not mine inside a batch; in-batch losses: "
                         f"{list(loss_names(in_batch=True))}")
    extra = {} if proxies is None else {"proxies": proxies}
    if spec.has_proxies and proxies is None:
        raise ValueError(f"loss {name!r} trains class proxies: pass proxies= (the "
                         "trainer creates them)")
    terms = spec.terms(view, margin, **resolve_params(name, params), **extra)
    return terms.reduce(view.context), terms


def resolve_params(name, params=None):
    """The loss's own settings: the registered defaults updated with ``params``."""
    spec = get_spec(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise ValueError(f"loss {name!r} takes the settings {sorted(spec.params)}, got "
                         f"unknown {few(unknown)}")
    for key, value in params.items():
        default = spec.params[key]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise TypeError(f"{key} must be True or False, got {value!r}")
        if (not isinstance(default, bool) and isinstance(default, numbers.Real)
                and (isinstance(value, bool) or not isinstance(value, numbers.Real))):
            raise TypeError(f"{key} of loss {name!r} must be a number, got {value!r}")
    return {**spec.params, **params}


register_loss(LossSpec(
    "batch_all", functions.batch_all_triplet_loss,
    "mean of the positive hinges over every valid triplet of the batch (Hermans 2017)",
    0.2, functions.batch_all_terms))
register_loss(LossSpec(
    "batch_hard", functions.batch_hard_triplet_loss,
    "hardest positive and hardest negative per anchor (Hermans 2017); soft=True: "
    "soft margin", 0.2, functions.batch_hard_terms, {"soft": False}))
register_loss(LossSpec(
    "semi_hard", functions.semi_hard_triplet_loss,
    "per positive pair, the closest negative farther than the positive (FaceNet 2015)",
    0.2, functions.semi_hard_terms))
register_loss(LossSpec(
    "contrastive", functions.contrastive_loss,
    "pull same-class pairs together, push others beyond the margin (Hadsell 2006)",
    0.5, functions.contrastive_terms))
register_loss(LossSpec(
    "triplet", functions.triplet_loss,
    "offline random triplets through one shared encoder, three inputs (baseline)", 0.2))
register_loss(LossSpec(
    "multi_similarity", similarity.multi_similarity_loss,
    "cosine similarities, pairs mined and weighted by self and relative similarity "
    "(Wang 2019); no margin", None, similarity.multi_similarity_terms,
    {"alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1}))
register_loss(LossSpec(
    "supervised_contrastive", similarity.supervised_contrastive_loss,
    "NT-Xent with labels: softmax of cosine similarities over the batch (Khosla 2020); "
    "no margin", None, similarity.supervised_contrastive_terms, {"temperature": 0.1}))
register_loss(LossSpec(
    "circle", similarity.circle_loss,
    "self-paced weighted cosine similarities, margin = relaxation m (Sun 2020)", 0.4,
    similarity.circle_terms, {"gamma": 80.0}))
register_loss(LossSpec(
    "proxy_anchor", proxies.proxy_anchor_loss,
    "each class's trainable proxy as an anchor against the batch, margin = delta "
    "(Kim 2020)", 0.1, proxies.proxy_anchor_terms, {"alpha": 32.0},
    proxies.proxy_anchor_shape))
register_loss(LossSpec(
    "arcface", proxies.arcface_loss,
    "softmax over trainable class centres with an additive angular margin in radians, "
    "sub_centers > 1: sub-center ArcFace (Deng 2019)", 0.5, proxies.arcface_terms,
    {"scale": 64.0, "sub_centers": 1}, proxies.arcface_shape))
