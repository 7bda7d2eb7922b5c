"""``TripletEmbedder``: train an encoder with a triplet-style loss, as a transformer."""

from __future__ import annotations

import os
from numbers import Integral

from sklearn.base import BaseEstimator
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length

from classifiers.sklearn_compat import Interval, fit_context
from embedder.base import EmbedderBase
from embedder.checks import check_non_empty, column_labels
from embedder.training.config import TrainingConfig, seed_from


class TripletEmbedder(EmbedderBase, BaseEstimator):
    """Image embeddings from an encoder trained with a triplet-style loss.

    ``fit`` always trains: a registered encoder (``"seed_cnn"``, ``"small_cnn"``,
    ``"mobilenet_v2"``, ``"resnet50"``) from scratch, or a saved ``.keras`` encoder as the
    starting point (fine-tuning), on class-balanced P x K batches with in-batch mining.
    ``transform`` returns one unit-norm float32 row per image, ready for kNN,
    logistic-regression or SVM heads in a ``Pipeline``. To use a saved encoder without
    training it, use :class:`embedder.FrozenEmbedder`. A pretrained start (``weights``,
    or a ``.keras`` encoder) follows Keras's fine-tuning recipe by default: one epoch
    trains only the new embedding head on the frozen backbone, the rest train the whole
    encoder at a tenth of the learning rate (``freeze_backbone_epochs``,
    ``fine_tune_learning_rate_factor``).

    The training settings are gathered into one :class:`embedder.training.config.TrainingConfig`
    (``config_`` after ``fit``); see it for the recipe.

    Parameters
    ----------
    encoder : str or path-like, default="seed_cnn"
        A registered encoder name, or the path of a saved ``.keras`` encoder to fine-tune.
    input_shape : tuple of 3 ints or None, default=(112, 112, 3)
        Shape the images are given in: 2-D ``X`` of shape (n, h*w*c) is reshaped to it and
        image files are decoded to it. ``None`` infers it from ``X`` (a square grey image
        when the feature count is a square, else a 1-pixel-high strip).
    embedding_dim : int, default=128
        Size of the embedding (ignored when fine-tuning a saved encoder).
    weights : str, path-like or None, default=None
        Initial weights: a local weights file, or ``"imagenet"`` for the Keras
        Applications backbones (downloaded by Keras when online).
    loss : str, default="batch_all"
        A loss of :data:`embedder.losses.LOSSES` (``"batch_all"``, ``"batch_hard"``,
        ``"semi_hard"``, ``"contrastive"``, ``"multi_similarity"``,
        ``"supervised_contrastive"``, ``"circle"``, the proxy losses ``"proxy_anchor"`` and
        ``"arcface"``, or one registered with :func:`embedder.losses.register_loss`).
        ``"triplet"`` is the seed's approach: offline random triplets through three inputs
        of one shared encoder, kept as a baseline.
    margin : float or None, default=None
        ``None`` takes the loss's default (0.2 for triplet losses, 0.5 for contrastive,
        0.4 for circle, 0.1 for proxy_anchor, 0.5 radians for arcface; multi_similarity
        and supervised_contrastive have none).
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings inside the triplet and contrastive losses; the
        similarity and proxy losses always score cosine similarities (``distance`` then
        only sets the training diagnostics).
    soft : bool, default=False
        Soft-margin batch-hard (``loss="batch_hard"`` only): ``log1p(exp(d_ap - d_an))``
        per anchor, the margin is not used.
    classes_per_batch : int or None, default=None
        P of the P x K batches; ``None`` picks about 64 / K classes (all, if fewer).
    samples_per_class : int, default=4
        K of the P x K batches.
    epochs : int, default=20
        Upper bound: early stopping on validation MAP@R usually ends sooner.
    learning_rate : float, default=2e-3
        Peak Adam rate, reached after the warm-up, then cosine decay.
    warmup_epochs : float, default=1
        Epochs of linear learning-rate warm-up.
    freeze_backbone_epochs : int or None, default=None
        Fine-tuning recipe for a pretrained start: these first epochs train only the
        embedding head (the final Dense and normalisation) while the backbone is frozen,
        its BatchNormalization in inference mode; the later epochs train every layer but
        the backbone's BatchNormalization, at ``learning_rate *
        fine_tune_learning_rate_factor``. ``None``: 1 when the encoder starts from
        pretrained weights (``weights`` given, or a ``.keras`` encoder) and ``epochs > 1``,
        else 0 (all layers train from the first epoch). At most ``epochs``.
    fine_tune_learning_rate_factor : float, default=0.1
        Peak learning rate of the epochs after the frozen-backbone ones, relative to
        ``learning_rate`` (with their own warm-up and cosine decay); in (0, 1]. Used only
        when a frozen-backbone phase runs.
    patience : int, default=5
        Epochs without a rise of the validation MAP@R by ``min_delta`` before early
        stopping.
    validation_fraction : float, default=0.1
        Stratified hold-out for validation P@1/MAP@R, early stopping and best-weights
        restore; 0 disables it (sets too small for a split are trained without one, and
        ``validation_`` says why).
    augment : bool, {"photo", "digits"}, list of keras layers, default=False
        Augmentation of the training batches (never of validation or inference), seeded
        from ``random_state``. ``True``: random horizontal flips, shifts up to 10 % and
        brightness changes up to 20 %. ``"photo"``: random resized crops (zoom in up to
        25 % per side), horizontal flips and colour jitter (brightness, contrast,
        saturation for RGB). ``"digits"``: shifts up to 10 %, rotations up to 10 degrees
        and zoom up to 10 %, never a flip. Or the user's own Keras preprocessing layers
        for float32 pixels on 0..255 (copied for every fit; a layer without a ``seed``
        gets one from ``random_state``). See
        :data:`embedder.data.augmentation.AUGMENTATIONS`.
    min_delta : float, default=0.005
        Smallest rise of the validation MAP@R that counts as progress for ``patience``;
        the best epoch's weights are kept whatever its margin.
    converged_patience : int, default=2
        Stop after this many epochs in a row with (almost) no active triplet (active
        fraction <= 0.001: the loss is ~0, nothing is left to learn); 0 never stops.
    precision : {None, "mixed_float16", "mixed_bfloat16"}, default=None
        Mixed-precision policy of the encoder; losses and normalisation stay float32.
    strategy : {None, "mirrored", "multi_worker"}, default=None
        ``"mirrored"`` trains with ``tf.distribute.MirroredStrategy`` (all local GPUs).
        ``"multi_worker"`` trains one run over the machines of ``TF_CONFIG`` with
        ``MultiWorkerMirroredStrategy`` in the loop of
        :mod:`embedder.training.multi_worker` (in-batch losses, one phase); create it
        with ``multi_worker_strategy()`` before TensorFlow runs anything.
    cross_replica : bool, default=False
        With a strategy, mine triplets across the batches of all replicas.
    checkpoint_dir : str, path-like or None, default=None
        Per-epoch training backups; ``fit`` resumes an interrupted run from them when the
        data and settings match, and raises ``ValueError`` when they do not.
    random_state : int, RandomState or None, default=None
        Makes training reproducible on CPU (sampling, initial weights, augmentation).
    verbose : int, default=0
        0 silent, 1 Keras progress bar, 2 one line per epoch.
    loss_params : dict, str or None, default=None
        The loss's own settings (``LOSSES[loss].params``), as a dict or a JSON object,
        e.g. ``{"alpha": 2, "beta": 50}`` for ``"multi_similarity"``,
        ``{"temperature": 0.1}`` for ``"supervised_contrastive"``, ``{"sub_centers": 3}``
        for ``"arcface"``; missing ones take the registered defaults.
    memory_size : int, default=0
        Rows of the cross-batch memory (XBM, Wang et al. 2020): anchors are mined
        against the batch and the embeddings of the last ``memory_size`` training images
        (held by the training model, not by the encoder); 0: no memory. Pair losses only.
    memory_warmup_epochs : float, default=1.0
        Epochs of training before the memory is used.
    callbacks : list of keras.callbacks.Callback or None, default=None
        Keras callbacks (``TensorBoard``, ``CSVLogger``, your own) that watch every
        epoch of every training phase, with the library's metrics in ``logs`` (``loss``,
        the batch diagnostics, ``val_map_at_r``, ``learning_rate``, ...). They run after
        the library's own callbacks and may stop training (``model.stop_training``).
        ``clone`` and pickling copy them without the state of a run (the training
        model, open files), which Keras callbacks rebuild in ``on_train_begin``.

    Attributes
    ----------
    encoder_ : keras.Model
        The trained encoder.
    config_ : TrainingConfig
        The settings used, with the data-dependent defaults resolved and the
        fine-tuning recipe as applied: ``freeze_backbone_epochs`` a number, and
        ``fine_tune_learning_rate_factor`` 1.0 when no lowered phase ran.
    history_ : dict of str -> list
        Per-epoch training logs (loss, active triplet fraction, mean positive/negative
        distance, embedding norms, validation P@1/MAP@R, ``collapsed`` flags, the
        ``learning_rate`` at each epoch's end and ``backbone_frozen`` flags).
    validation_ : dict
        ``used`` (bool), ``n_images`` and ``reason`` (why no validation split was made,
        in which case early stopping was off and the last epoch was kept).
    classes_ : ndarray
        The class labels seen in ``fit``.
    n_features_in_ : int
        What ``fit`` was given per image: 1 for a column of image paths, else the
        pixels per image (h * w * c of ``input_shape_``).
    feature_names_in_ : ndarray of str
        The column names of a ``DataFrame`` given to ``fit`` (one name for a column of
        paths, e.g. from a ``ColumnTransformer``); absent for other inputs.
    input_shape_ : tuple of int
        The resolved image shape.
    collapsed_ : bool
        Whether the collapse detector fired during training.
    stop_reason_ : str
        Why training ended: ``"plateau: ..."`` (validation MAP@R), ``"converged: ..."``
        (nothing left to learn), ``"collapse: ..."`` or ``"reached epochs=N"``.
    epochs_run_ : int
        Epochs trained.
    epoch_kept_ : int
        The 1-based epoch whose weights the encoder has (the best validation epoch when a
        validation split was used, else the last).
    training_fingerprints_ : ndarray of str
        Content digests of the training images, so reports can detect an encoder that
        saw the evaluated images.

    See Also
    --------
    FrozenEmbedder : A saved encoder as a transformer, without training.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from embedder import TripletEmbedder
    >>> X, y = load_digits(return_X_y=True)
    >>> embedder = TripletEmbedder("small_cnn", input_shape=(8, 8, 1), embedding_dim=16,
    ...                            epochs=1, random_state=0)
    >>> embedder.fit_transform(X[:200] * 16, y[:200]).shape
    (200, 16)
    """

    _parameter_constraints: dict = {
        "encoder": [str, os.PathLike],
        "input_shape": [tuple, list, None],
        "embedding_dim": [Interval(Integral, 1, None, closed="left")],
        "weights": [str, os.PathLike, None],
        "callbacks": [list, tuple, None],
        **TrainingConfig.parameter_constraints(),
    }

    def __init__(  # noqa: PLR0913 - an estimator lists every parameter
        self,
        encoder="seed_cnn",
        *,
        input_shape=(112, 112, 3),
        embedding_dim=128,
        weights=None,
        loss="batch_all",
        margin=None,
        distance="euclidean",
        soft=False,
        classes_per_batch=None,
        samples_per_class=4,
        epochs=20,
        learning_rate=2e-3,
        warmup_epochs=1,
        freeze_backbone_epochs=None,
        fine_tune_learning_rate_factor=0.1,
        patience=5,
        validation_fraction=0.1,
        augment=False,
        min_delta=0.005,
        converged_patience=2,
        precision=None,
        strategy=None,
        cross_replica=False,
        checkpoint_dir=None,
        random_state=None,
        verbose=0,
        loss_params=None,
        memory_size=0,
        memory_warmup_epochs=1.0,
        callbacks=None,
    ):
        self.encoder = encoder
        self.input_shape = input_shape
        self.embedding_dim = embedding_dim
        self.weights = weights
        self.loss = loss
        self.margin = margin
        self.distance = distance
        self.soft = soft
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.warmup_epochs = warmup_epochs
        self.freeze_backbone_epochs = freeze_backbone_epochs
        self.fine_tune_learning_rate_factor = fine_tune_learning_rate_factor
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.augment = augment
        self.min_delta = min_delta
        self.converged_patience = converged_patience
        self.precision = precision
        self.strategy = strategy
        self.cross_replica = cross_replica
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.verbose = verbose
        self.loss_params = loss_params
        self.memory_size = memory_size
        self.memory_warmup_epochs = memory_warmup_epochs
        self.callbacks = callbacks

    def training_config(self) -> TrainingConfig:
        """The validated :class:`TrainingConfig` these parameters describe (before data
        defaults)."""
        return self._config().validate()

    def _config(self):
        params = self.get_params(deep=False)
        params["random_state"] = seed_from(self.random_state)
        if params["checkpoint_dir"] is not None:
            params["checkpoint_dir"] = os.fspath(params["checkpoint_dir"])
        return TrainingConfig.from_params(params)

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, callbacks=None):
        """Train the encoder on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : ndarray (n, h, w, c), ndarray (n, h*w*c), or list/array of image paths
            Training images.
        y : array-like of shape (n,)
            Class labels; at least 2 classes with 2 or more images each.
        callbacks : list of keras.callbacks.Callback or None, default=None
            Callbacks of this ``fit`` only, run after the ``callbacks`` parameter's; in a
            ``Pipeline``: ``pipe.fit(X, y, embed__callbacks=[...])``.

        Returns
        -------
        self : TripletEmbedder
            The fitted embedder.
        """
        from embedder.training.user_callbacks import check_callbacks

        extra = (check_callbacks(self.callbacks)
                 + check_callbacks(callbacks, "fit's callbacks"))
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None"
                " (the encoder is trained on labelled images)")
        if hasattr(X, "__len__") and not isinstance(X, str | os.PathLike):
            check_non_empty(X, "X")
        images = self._prepare_X(X, reset=True)
        y = column_labels(y)
        check_consistent_length(images, y)
        check_classification_targets(y)
        labels = LabelEncoder().fit(y)
        self.classes_ = labels.classes_
        _check_trainable_classes(y, self.classes_)
        self._train(images, labels.transform(y), extra)
        return self

    def _train(self, images, y_enc, callbacks=()):
        from embedder.data.fingerprints import image_fingerprints
        from embedder.training.run import (
            build_training_run,
            dtype_policy,
            make_strategy,
            run_training,
            stop_summary,
            strategy_scope,
        )
        from embedder.training.seeding import seeded

        # Each field was checked by scikit-learn's parameter validation in ``fit`` (its
        # constraints are derived from the config's rules): only the rules between
        # fields remain.
        config = self._config().validate(fields=False)
        with seeded(config.random_state):
            strategy = make_strategy(config.strategy)
            with strategy_scope(strategy), dtype_policy(config.precision):
                encoder = self._initial_encoder()
            run = build_training_run(encoder, images, y_enc, config,
                                     input_shape=self.input_shape_, strategy=strategy,
                                     pretrained=self._pretrained_start(),
                                     callbacks=callbacks)
            self.history_ = run_training(run)
        self.encoder_ = encoder
        self.config_ = run.config
        self.validation_ = run.validation
        self.collapsed_ = bool(any(v == 1 for v in self.history_.get("collapsed", [])))
        stop = stop_summary(run, self.history_)
        self.stop_reason_ = stop["reason"]
        self.epochs_run_, self.epoch_kept_ = stop["epochs_run"], stop["epoch_kept"]
        self.training_fingerprints_ = image_fingerprints(images)

    def _pretrained_start(self):
        """Whether training starts from learnt weights (decides the frozen-head epoch)."""
        from embedder.models.encoders import available_encoders

        registered = isinstance(self.encoder, str) and self.encoder in available_encoders()
        return self.weights is not None or not registered

    def _initial_encoder(self):
        from embedder.models.encoders import available_encoders, build_encoder

        if isinstance(self.encoder, str) and self.encoder in available_encoders():
            return build_encoder(self.encoder, self.input_shape_, self.embedding_dim,
                                 weights=self.weights)
        if not str(self.encoder).endswith(".keras") or not os.path.isfile(self.encoder):
            raise ValueError(
                f"encoder must be one of {available_encoders()} or the path of an existing "
                f".keras encoder to fine-tune, got {self.encoder!r}")
        from embedder.models.encoder_files import check_encoder_channels, load_encoder_file

        model, _, _ = load_encoder_file(self.encoder)
        check_encoder_channels(model, self.input_shape_, self.encoder)
        return model

    def __sklearn_clone__(self):
        # scikit-learn deep-copies each callback: one that trained holds the training
        # model and closed files. The clone gets copies without that run state.
        from embedder.training.user_callbacks import portable_callbacks

        if self.callbacks is None:
            return super().__sklearn_clone__()
        twin = object.__new__(type(self))
        vars(twin).update(vars(self))
        twin.callbacks = portable_callbacks(self.callbacks)
        return super(TripletEmbedder, twin).__sklearn_clone__()

    def __getstate__(self):
        state = super().__getstate__()
        if state.get("callbacks") is not None:
            from embedder.training.user_callbacks import portable_callbacks

            state = {**state, "callbacks": portable_callbacks(state["callbacks"])}
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def _check_trainable_classes(y, classes):
    if len(classes) < 2:
        raise ValueError(
            f"y has 1 class ({classes[0]!r}); triplet training needs at least 2 classes "
            "with 2 or more images each")
    from embedder.data.sampling import check_class_sizes

    check_class_sizes(y)
