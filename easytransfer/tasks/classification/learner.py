"""`ClassifierLearner` and `transfer_learner`: the transfer recipe for image classification.

The recipe (`TransferLearner`) plus what a classifier adds: the head trained on cached body features while the
body is frozen (`FeatureCache`, `HeadLoop`), heads fitted in one go (`fit_frozen(method="logistic" |
"prototype" | "knn")`), probability calibration and conformal prediction sets, test-time augmentation,
`predict`, `interpret` and `evaluate`, and the calibration figures `diagnose` reads.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from fastai.callback.mixup import CutMix, MixHandler, MixUp
from fastai.data.core import DataLoaders
from fastai.data.transforms import Normalize
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.metrics import accuracy, accuracy_multi
from fastai.torch_core import set_seed
from fastai.vision.core import PILImage
from torch import nn

from ...data.augment import uses_cutmix
from ...data.images import as_rgb
from ...data.loaders import ImageData
from ...data.sources import candidate_files
from ...deploy.bundle import Preprocessing
from ...errors import EasyTransferError
from ...evaluate.calibration import Calibration, fit_calibration
from ...evaluate.conformal import ConformalCalibration
from ...log import get_logger
from ...models.factory import ModelSpec, build_model, head_dropout
from ...models.heads import HeadConfig
from ...models.layer_groups import LayerGroups, split_layer_groups
from ...models.zero_shot import zero_shot_model
from ...train.diagnosis import AUGMENTATION_ADVICE, MISTAKES_HINT, ConfidenceCheck
from ...train.distributed import RankSplit, rank_trainer
from ...train.features import (
    DEFAULT_CACHE_VIEWS,
    FeatureCache,
    FeatureCacheUnsupported,
    cache_key,
    compute_feature_cache,
    feature_head,
)
from ...train.head_loop import HeadLoop
from ...train.learner import TransferLearner
from ...train.precision import autocast_dtype
from .choice import ChosenDefaults, choose_for_frozen_stage
from .config import ClassificationConfig
from .interpretation import Interpretation, as_dataloader
from .prediction_sets import ConformalPredictor
from .probe import fit_knn_head, fit_logistic_probe, fit_prototype_head, record_probe
from .uncertainty import calibration_activation, folder_probabilities, image_probabilities, raw_logits

__all__ = ["FIT_FROZEN_METHODS", "ClassifierLearner", "transfer_learner"]

logger = get_logger(__name__)

FIT_FROZEN_METHODS = ("gradient", "logistic", "prototype", "knn")
FEW_SHOT_HEADS = ("prototype", "knn")  # head types fitted by fit_frozen(method=...), not built for training


class ClassifierLearner(ChosenDefaults, TransferLearner):
    """A `TransferLearner` for image classification (single- or multi-label); build one with `transfer_learner`.

    While the head trains on cached features an inner fastai Learner runs the loop (`HeadLoop`); this learner is
    not changed for it, and every callback of the fit sees this learner, whose ``model`` is always the whole model.

    Attributes:
        head_config: the head's `HeadConfig` (linear, mlp, prototype, knn ...), recorded in the bundle.
        free_settings, choice: what the frozen stage may choose (``"size"``, ``"pool"``, ``"aug"``: those not
            given) and its `RecipeChoice` (size, pooling, aug, decay and why; in the bundle).
        feature_cache: the `FeatureCache` of the frozen body, while it matches the weights and data.
        calibration: the `Calibration` fitted by `calibrate` (``None``: plain softmax).
        conformal_calibration: the `ConformalCalibration` fitted by `conformal`; exported with the bundle.
        last_interpretation: the last `interpret` / `evaluate`, which `save_report` shows by default.

    >>> learn = transfer_learner(dls, "efficientnet_lite0"); learn.fit_frozen(3)  # doctest: +SKIP
    """

    task = "classification"
    mistakes_hint = MISTAKES_HINT
    augmentation_advice = AUGMENTATION_ADVICE
    accuracy_per_image = True

    def __init__(self, dls: DataLoaders, model: nn.Module, *, spec: ModelSpec, layer_groups: LayerGroups,
                 head_config: HeadConfig | None = None, free_settings: tuple[str, ...] = (), **kwargs):
        head_config = head_config if head_config is not None else _head_config_of(model, spec)
        super().__init__(dls, model, spec=spec, layer_groups=layer_groups, head_config=head_config, **kwargs)
        self.free_settings, self.choice, self.choice_explained = tuple(free_settings), None, False
        self.feature_cache: FeatureCache | None = None
        self.last_interpretation: Interpretation | None = None
        self._interpretation_cache: tuple[tuple, Interpretation] | None = None
        self.calibration: Calibration | None = None
        self.conformal_calibration: ConformalCalibration | None = None

    # ------------------------------------------------------------------------------------ the bundle's pieces

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names in output order."""
        return tuple(str(c) for c in self.dls.vocab)

    def preprocessing(self) -> Preprocessing:
        """The data's size, resize filter, mean and std (the model's, for DataLoaders not built by easytransfer)."""
        recipe = getattr(self.dls, "recipe", None)
        source = recipe if recipe is not None else self.spec
        size = recipe.size if recipe is not None else self.spec.size
        return Preprocessing(int(size), source.interpolation, tuple(source.mean), tuple(source.std))

    def task_config(self) -> ClassificationConfig:
        """Multi-label or not, the calibration and conformal scores fitted (`calibrate`, `conformal`), and what the
        frozen stage chose."""
        return ClassificationConfig(bool(getattr(self.dls, "is_multilabel", False)), self.calibration,
                                    self.conformal_calibration, self.choice)

    # ------------------------------------------------------------------------------------ frozen fits

    def fit_frozen(self, epochs: int = 3, lr: float | str | None = None, *, warmup_pct: float = 0.1,
                   monitor: str = "valid_loss", patience: int | None = 5, restore_best: bool = True,
                   cache: bool = True, cache_views: int = DEFAULT_CACHE_VIEWS, method: str = "gradient",
                   k: int | None = None, choose: bool | None = None, cbs=None, resume: bool = False):
        """Train only the new head with the body frozen (feature extraction); or fit it in one go (`method`).

        First it chooses the input size (the model's or twice it) and pooling (avg or max) by a cross-validated
        probe per candidate, keeping the model's own unless another is better by 2 SE (`tasks.classification.choice`);
        one line says why, ``learn.choice`` keeps it, and fine-tuning and the bundle run at it. A `size`, `pool` or
        `aug` the user gave is never changed.

        With ``cache=True`` (default) the body's pooled features are computed once (`cache_views` views per
        training image: the plain image, plus augmented ones when more than 1) and the head trains on them,
        with the same schedule, callbacks, metrics, history and early stopping; the features are reused by the
        next frozen fit and by `lr_find` while the weights, preprocessing and files stay the same. Not possible
        (and skipped) with ``train_bn=True``, MixUp / CutMix, or a model with more than one head module.

        Args:
            epochs, lr, warmup_pct, monitor, patience, restore_best, cache, cache_views, cbs, resume: as in
                `TransferLearner.fit_frozen` (one fit for the methods other than ``"gradient"``).
            method: how the head is made (the other three fit it in one go on the cached features of the plain
                training images, choosing their setting by validation log-loss, and add one history row):

                - ``"gradient"`` (default): trained by gradient descent;
                - ``"logistic"``: a linear probe, an L2-regularised logistic regression written into the linear
                  head (regularisation ``C`` chosen; a prototype or k-NN head is first replaced by a Linear);
                - ``"prototype"``: a `PrototypeHead` replaces the head: softmax of the scaled cosine similarity
                  to each class's mean normalised feature (the nearest class mean wins; ``scale`` chosen);
                - ``"knn"``: a `KNNHead` replaces the head: the smoothed vote of the `k` nearest training images
                  by cosine similarity (``k`` chosen from `KNN_KS`); it stores the training features.

                Prototype and k-NN heads are for single-label data; they are exported like any head.
            k: ``method="knn"`` only: use this many neighbours instead of choosing.
            choose: ``None`` (default): choose the settings not given, the first time (not with ``cache=False``);
                ``True``: choose again; ``False``: keep the current ones.

        Returns:
            The learner.

        >>> learn.fit_frozen(3)  # doctest: +SKIP
        >>> learn.fit_frozen(1, method="prototype"); learn.head_config.type  # doctest: +SKIP
        'prototype'
        """
        if method not in FIT_FROZEN_METHODS:
            raise ValueError(f"method must be one of {FIT_FROZEN_METHODS}, got {method!r}")
        if k is not None and method != "knn":
            raise ValueError(f"k= is the number of neighbours of method='knn'; method={method!r} takes no k.")
        if choose or (choose is None and self.choice is None and cache):  # resumed too: it is deterministic
            choose_for_frozen_stage(self, cache_views, required=bool(choose))
        if method == "gradient":
            return super().fit_frozen(epochs, lr, warmup_pct=warmup_pct, monitor=monitor, patience=patience,
                                      restore_best=restore_best, cache=cache, cache_views=cache_views, cbs=cbs,
                                      resume=resume)
        self.freeze()
        if cache_views < 1:
            raise ValueError(f"cache_views must be at least 1, got {cache_views}")
        features = self._feature_cache_or_none(cache_views)
        if features is None:
            raise ValueError(f"method={method!r} needs cached features: {self._cache_obstacle()}")
        self.fine_tune_choice = None
        self._weights_will_change()
        if method == "logistic":
            if self.head_config.type in FEW_SHOT_HEADS:  # the probe is written into a Linear layer
                self._install_head(nn.Linear(features.train.shape[-1], len(self.dls.vocab)))
            return fit_logistic_probe(self, features)
        start = time.perf_counter()
        if method == "prototype":
            head, fit = fit_prototype_head(features, len(self.dls.vocab))
        else:
            head, fit = fit_knn_head(features, len(self.dls.vocab), k=k)
        self._install_head(head)
        return record_probe(self, features, fit, start)

    def _install_head(self, head: nn.Module) -> None:
        """Put a fitted `head` where the cached features enter the model; groups, optimizer, config follow.

        A Linear-shaped head (a `PrototypeHead`, a Linear) in place of a Linear of its shape takes over that
        Linear's parameters (values copied), so the optimizer and layer groups are untouched; otherwise the head
        group is re-read from ``spec.classifier`` and the optimizer is rebuilt with the body still frozen.
        """
        module, _ = feature_head(self)
        path = next(name for name, m in self.model.named_modules() if m is module)
        head = head.to(self.device)
        keeps = (isinstance(head, nn.Linear) and isinstance(module, nn.Linear) and module.bias is not None
                 and module.weight.shape == head.weight.shape)
        if keeps:
            with torch.no_grad():
                module.weight.copy_(head.weight)
                module.bias.copy_(head.bias)
            head.weight, head.bias = module.weight, module.bias
        self.model.set_submodule(path, head)
        if not keeps:
            paths = self.spec.classifier_paths
            names = tuple(n for n, _ in self.model.named_parameters() if any(n.startswith(p + ".") for p in paths))
            self.layer_groups = LayerGroups(self.layer_groups.names[:-1] + (names,))
            self.splitter = self.layer_groups.splitter
            self.create_opt()
            self.freeze()
        self.head_config = replace(HeadConfig.from_module(head), pool=self.head_config.pool)

    def _check_trainable(self) -> None:
        """A clear error instead of autograd's when the head has nothing to train (a k-NN head)."""
        if self.head_config.type == "knn":
            raise EasyTransferError(
                f"The head is a {self.head_config.type!r} head: it stores training features and has no weights "
                "to train by gradient descent. fit_frozen(1, method='logistic') or method='prototype' gives it a "
                "head with weights again (then fit_frozen(epochs) trains it), or build a new learner.")

    # ------------------------------------------------------------------------------------ cached features

    def _cache_obstacle(self) -> str | None:
        """Why features cannot be cached for this learner (``None`` when they can)."""
        if getattr(self, "train_bn", False):
            return "BatchNorm layers train (train_bn=True)"
        if not isinstance(self.dls, ImageData):
            return "the data is not an ImageData"
        if any(isinstance(cb, MixHandler) for cb in self.cbs):
            return "MixUp / CutMix mixes the images of each batch (aug='strong' adds CutMix; mix='none' turns it off)"
        if feature_head(self) is None:
            return f"the head of {self.spec.name} is not a single module"
        return None

    def _feature_cache_or_none(self, cache_views: int, caller: str = "fit_frozen") -> FeatureCache | None:
        """The cached features for the current weights, data and views (computed when needed), or ``None``.

        Says in one line when the cheap path is lost (and why), and when `lr_find` does the one-time feature pass.
        """
        obstacle = self._cache_obstacle()
        if obstacle is not None:
            logger.info(f"{caller}: the head trains on the images, not on cached features, because {obstacle}: "
                        "every frozen epoch is a full pass through the body.")
            return None
        module, _ = feature_head(self)
        key = cache_key(self, module, cache_views)
        if self.feature_cache is None or self.feature_cache.key != key:
            if caller == "lr_find":
                logger.info(f"lr_find: computing the frozen body's features of the {len(self.dls.train_ds)} "
                            f"training and {len(self.dls.valid_ds)} validation images once (one pass); the sweep and "
                            "later frozen fits reuse them.")
            self.feature_cache = None  # free the old one first
            try:
                ranks = RankSplit(self.world) if self.world is not None else None
                self.feature_cache = compute_feature_cache(self, module, cache_views, key, ranks=ranks,
                                                           autocast_dtype=autocast_dtype(self.cbs, self.device))
            except FeatureCacheUnsupported as e:
                logger.info(f"Training the head on images, not cached features: {e}.")
                return None
        return self.feature_cache

    def _training_loop(self, features: FeatureCache | None):
        """This learner, or the `HeadLoop` that trains the head on cached `features` with its optimizer and
        callbacks."""
        if features is None:
            return self
        _, trainable = feature_head(self)
        inner_cbs = [rank_trainer(self.device)] if self.world is not None else []  # DDP over the head alone
        return HeadLoop(self, features.dataloaders(self.dls, self.device), trainable, inner_cbs=inner_cbs)

    # ------------------------------------------------------------------------------------ predictions

    def _confidence_check(self, interp: Interpretation | None = None) -> ConfidenceCheck | None:
        """The validation set's calibration error for `diagnose` (a trained single-label classifier)."""
        if getattr(self.dls, "is_multilabel", False) or not len(self.fit_history):
            return None
        interp = interp if interp is not None else self.interpret()
        if interp.multilabel or not len(interp.targs):
            return None
        return ConfidenceCheck(interp.calibration_error(), float(interp.probs.max(axis=1).mean()), interp.accuracy,
                               calibrated=self.calibration is not None)

    def interpret(self, dl=None, tta: bool = False) -> Interpretation:
        """Predictions on `dl`, computed once; every table and plot of the `Interpretation` reads them.

        Predictions on the same images with the same weights are made once: `evaluate` then `interpret` on a
        folder (or the validation or test set) costs one pass. The result is kept as ``learn.last_interpretation``,
        which `save_report` shows by default.

        Args:
            dl: the validation set (default), a DataLoader, a folder of class sub-folders or a list of files.
            tta: average the plain pass with augmented ones (`tta`).

        Returns:
            an `Interpretation`.

        >>> interp = learn.interpret(); interp.per_class(); interp.plot_top_losses(9)  # doctest: +SKIP
        """
        return self._interpretation(dl, tta=tta, test_set=False)

    def _interpretation(self, dl, *, tta: bool, test_set: bool) -> Interpretation:
        """`interpret` on `dl` (on the data's test split when `test_set`), reused while images and weights match."""
        images = _images_key(dl, test_set)
        key = None if images is None else images + (tta, id(self.dls), _weights_fingerprint(self.model),
                                                     id(self.calibration))
        cached = self._interpretation_cache
        if key is not None and cached is not None and cached[0] == key:
            interp = cached[1]
        else:
            loader = self.dls.labelled_dl() if test_set else dl
            interp = Interpretation.from_learner(self, loader, tta=tta)
            interp.data_name = None if images is None else " ".join(str(part) for part in images[:2])
            self._interpretation_cache = (key, interp) if key is not None else None
        self.last_interpretation = interp
        return interp

    def get_preds(self, ds_idx=1, dl=None, with_input=False, with_decoded=False, with_loss=False, act=None,
                  **kwargs):
        """fastai's ``get_preds``; after `calibrate` the probabilities are the calibrated ones (``act`` not given).

        `predict`, `tta`, `interpret` and `evaluate` all read their probabilities from here.

        >>> probs, targs = learn.get_preds(dl=learn.dls.valid)  # doctest: +SKIP
        """
        if act is None and self.calibration is not None:
            act = calibration_activation(self.calibration)
        return super().get_preds(ds_idx, dl, with_input, with_decoded, with_loss, act, **kwargs)

    def calibrate(self, dl=None, method: str = "temperature") -> ClassifierLearner:
        """Fit a probability calibration on labelled images; every later prediction uses it, and `export` keeps it.

        Training again drops the calibration (it was fitted to the old weights); calibrating drops conformal
        sets made before (call `conformal` after `calibrate`).

        Args:
            dl: the calibration set: a folder of class sub-folders, a table with ``path`` and ``label``, a list of
                files or a DataLoader; default the validation set (with a warning: images the model was not chosen
                on give an honest fit).
            method: ``"temperature"`` (one number divides the logits: the predicted class never changes) or
                ``"isotonic"`` (an increasing step function per class; needs a few hundred images).

        Returns:
            The learner.

        >>> learn.calibrate("data/calib"); learn.interpret("data/test").calibration_error()  # doctest: +SKIP
        """
        self._check_single_label("calibrate")
        if dl is None:
            warnings.warn("Calibrating on the validation set, which also chose the weights; a separate set of "
                          "labelled images gives an honest fit: learn.calibrate('path/to/calib').", stacklevel=2)
        logits, targets = raw_logits(self, as_dataloader(self, dl))
        self.calibration = fit_calibration(logits, targets, method)
        self.conformal_calibration = None  # its thresholds were for the probabilities before
        return self

    def conformal(self, calib=None, alpha: float = 0.1, *, mondrian: bool = False, score: str = "lac",
                  allow_empty: bool = False) -> ConformalPredictor:
        """Conformal prediction sets: labels that hold the true one with probability at least ``1 - alpha``.

        The promise holds on images exchangeable with `calib` (same source and conditions), on average over
        the draw of the calibration set; docs/when_the_model_is_unsure.md says what it does not promise.

        Args:
            calib: labelled calibration images not used for training (a folder, a table, a list of files or a
                DataLoader), or this learner's `Interpretation` of them (no new inference); default the
                validation set (with a warning).
            alpha: the error rate: 0.1 asks for sets that miss the true label at most 10 % of the time.
            mondrian: one threshold per class (coverage within each class) instead of one overall.
            score: ``"lac"`` (smallest sets) or ``"aps"`` (sets that adapt to how hard the image is).
            allow_empty: keep empty sets; by default an empty set becomes the top label.

        Returns:
            a `ConformalPredictor` (``predict``, ``predict_folder``, ``evaluate``); its scores are also kept as
            ``learn.conformal_calibration`` and travel in the exported bundle (`Predictor.predict_set`).

        >>> cp = learn.conformal("data/calib", alpha=0.1); cp.predict("photo.jpg").labels  # doctest: +SKIP
        ['stain']
        """
        self._check_single_label("conformal")
        if calib is None:
            warnings.warn("Conformal thresholds from the validation set, which also chose the weights; coverage is "
                          "only promised on a separate calibration set: learn.conformal('path/to/calib').",
                          stacklevel=2)
        interp = calib if isinstance(calib, Interpretation) else self.interpret(calib)
        self.conformal_calibration = ConformalCalibration.fit(interp.probs, interp.targs, score=score, alpha=alpha,
                                                              mondrian=mondrian, allow_empty=allow_empty)
        return ConformalPredictor(self.conformal_calibration, self.dls.vocab,
                                  probabilities=lambda images: image_probabilities(self, images),
                                  interpret=self.interpret,
                                  folder_probabilities=lambda path: folder_probabilities(self, path))

    def _check_single_label(self, what: str) -> None:
        if getattr(self.dls, "is_multilabel", False):
            raise EasyTransferError(f"learn.{what}() is for single-label classification; this learner does "
                                    "multi-label classification: threshold each label's probability instead.")

    def _weights_will_change(self) -> None:
        """Training changes the weights: a calibration or conformal thresholds fitted before no longer hold."""
        if self.calibration is not None or self.conformal_calibration is not None:
            warnings.warn("Training changes the model: its calibration and conformal thresholds are dropped; call "
                          "learn.calibrate() / learn.conformal() again after training.", stacklevel=3)
        self.calibration = None
        self.conformal_calibration = None

    def tta(self, dl=None, n: int = 4, beta: float = 0.25, **kwargs):
        """Test-time augmentation: `n` passes with the training augmentations, averaged with the plain pass.

        Args:
            dl: a DataLoader, a folder, a list of files or a dataset index (fastai's ``ds_idx``; default the
                validation set).
            n, beta: fastai's: the augmented passes, and the weight of the plain pass is ``1 - beta``.

        Returns:
            ``(probs, targets)`` as fastai's `Learner.tta`.

        >>> probs, targs = learn.tta(learn.dls.valid)  # doctest: +SKIP
        """
        loader = as_dataloader(self, dl if dl is not None else kwargs.pop("ds_idx", 1))
        loader = loader.new(shuffle=False, drop_last=False)
        return super().tta(dl=loader, n=n, beta=beta, **kwargs)

    def predict(self, item, rm_type_tfms=None, with_input: bool = False):
        """fastai's ``predict`` for one image: a path, a PIL image, or an HxWx3 / CxHxW array or tensor (`as_rgb`).

        Returns:
            ``(label, class index, probabilities)``; see `load_model` for the same outside a notebook.

        >>> label, idx, probs = learn.predict("photo.jpg")  # doctest: +SKIP
        """
        if not isinstance(item, PILImage):  # the one image-to-RGB of the package (EXIF, alpha, float, CHW ...)
            item = PILImage.create(as_rgb(item))
        return super().predict(item, rm_type_tfms=rm_type_tfms, with_input=with_input)

    def evaluate(self, test=None, tta: bool = False) -> dict:
        """Loss, accuracy and macro / weighted F1 on held-out images, from one inference pass.

        With ``test=None`` the data must have a test split: a ``test/`` folder, or ``test_pct=`` when it was
        built. A following ``interpret`` of the same images reuses these predictions.

        Args:
            test: ``None`` (the data's test split: its ``test/`` folder or ``test_pct``), a folder of class
                sub-folders, a list of files (labelled by their folder), a table with ``path`` and ``label``, or a
                DataLoader.
            tta: use test-time augmentation.

        Returns:
            the scores by name.

        >>> learn.evaluate("data/test")  # doctest: +SKIP
        {'n_images': 90, 'loss': 0.41, 'accuracy': 0.87, 'macro_f1': 0.86, 'weighted_f1': 0.86}
        """
        return self._interpretation(test, tta=tta, test_set=test is None).scores()


_MIXES = {"mixup": MixUp, "cutmix": CutMix}


def _images_key(dl, test_set: bool) -> tuple | None:
    """What names the images `dl` gives, for reusing an interpretation; ``None`` when it cannot be told."""
    if test_set:
        return ("test split",)
    if dl is None:
        return ("validation set",)
    if isinstance(dl, (str, os.PathLike)):
        folder = Path(dl).expanduser().resolve()
        return ("folder", str(folder), tuple(candidate_files(folder)) if folder.is_dir() else ())
    if isinstance(dl, (list, tuple)) and dl and all(isinstance(p, (str, os.PathLike)) for p in dl):
        return ("files", tuple(str(Path(p).expanduser().resolve()) for p in dl))
    return None  # a DataLoader or a table: predicted every time


def _weights_fingerprint(model: nn.Module) -> tuple[float, ...]:
    """The sum of each tensor of the model's state: changes with any training step or loaded weights."""
    with torch.no_grad():
        return tuple(float(t.float().sum()) for t in model.state_dict().values() if t.is_floating_point())


def _head_config_of(model: nn.Module, spec: ModelSpec) -> HeadConfig:
    """The `HeadConfig` that rebuilds `model`'s head (timm keeps a linear head's dropout as ``drop_rate``)."""
    paths = spec.classifier_paths
    if len(paths) != 1:
        return HeadConfig()
    config = HeadConfig.from_module(model.get_submodule(paths[0]))
    drop_rate = head_dropout(model, spec)
    if config.type == "linear" and config.dropout is None and drop_rate > 0:
        return HeadConfig("linear", dropout=drop_rate)
    return config


def _loss_func(dls, label_smoothing: float):
    """The loss for the data's balance setting and label smoothing; ``None``: fastai's default for the data."""
    multilabel = isinstance(dls, ImageData) and dls.is_multilabel
    if label_smoothing:
        if multilabel:
            raise ValueError("label_smoothing is for single-label data; this data is multi-label.")
        if not 0 < label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in (0, 1), got {label_smoothing}")
    weighted = isinstance(dls, ImageData) and dls.recipe.balance == "weights"
    weight = dls.class_weights() if weighted else None
    if multilabel:
        return BCEWithLogitsLossFlat(pos_weight=weight) if weighted else None
    if label_smoothing:
        return LabelSmoothingCrossEntropyFlat(eps=label_smoothing, weight=weight)
    return CrossEntropyLossFlat(weight=weight) if weighted else None


def _free_settings(dls, size: int | None, pool: str | None) -> tuple[str, ...]:
    """The settings the frozen stage may choose: those the user gave neither to the data nor to the learner."""
    if not isinstance(dls, ImageData):
        return ()
    free = []
    if size is None and not dls.recipe.size_given:
        free.append("size")
    if pool is None:
        free.append("pool")
    if not dls.recipe.aug_given:
        free.append("aug")
    return tuple(free)


def _default_metrics(dls) -> list:
    multilabel = isinstance(dls, ImageData) and dls.is_multilabel
    return [accuracy_multi] if multilabel else [accuracy]


def transfer_learner(
    dls: DataLoaders,
    arch: str = "efficientnet_lite0",
    *,
    pretrained: bool = True,
    weights: str | None = None,
    n_stages: int | None = None,
    head: str = "linear",
    dropout: float | None = None,
    pool: str | None = None,
    metrics=None,
    wd: float | None = None,
    label_smoothing: float = 0.0,
    mix: str | None = None,
    train_bn: bool = False,
    freeze_bn_stats: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    matcher: dict | None = None,
    size: int | None = None,
    seed: int | None = None,
    mixed_precision: str | None = None,
    **kwargs,
) -> ClassifierLearner:
    """A `ClassifierLearner` for `dls` with a pre-trained `arch` whose head is replaced for the data's classes.

    The data is rebuilt with the model's own preprocessing (input size, resize filter, mean and std from its
    pretrained config) when it is an `ImageData`; other fastai DataLoaders get the model's normalisation.

    Args:
        dls: the data (`ImageData.from_folder` ...).
        arch: architecture name (``"efficientnet_lite0"``, ``"resnet50"``, ``"convnext_tiny"`` ...).
        pretrained: load pre-trained weights (``False``: random initialisation, no download).
        weights: a local weights file for `arch` (``.safetensors`` or ``.pth``).
        n_stages: number of body layer groups (default 4, fewer when the model has fewer stages).
        head: ``"linear"`` (a new Linear layer), ``"mlp"`` (hidden layer, BatchNorm and dropout), or for open_clip
            models ``"zero_shot"``: a Linear layer that starts as the zero-shot classifier of the data's classes
            (CLIP text embeddings of `DEFAULT_TEMPLATES` prompts, scaled by CLIP's logit scale), so the first
            predictions are `zero_shot_classifier`'s and fine-tuning starts from there (docs/zero_shot.md).
        dropout: dropout before the head's last layer (default none for ``"linear"``, 0.5 for ``"mlp"``).
        pool: ``"max"``, ``"avg"`` or ``"avgmax"`` (timm) to pool the body's feature map that way instead of the
            model's own pooling; ``"max"`` keeps a small defect's strong response that an average dilutes
            (docs/small_defects.md). Recorded in the bundle. Default: chosen by `fit_frozen` from validation
            (the model's own unless max pooling validates better by a margin).
        metrics: fastai metrics; default accuracy (multi-label: ``accuracy_multi``).
        wd: weight decay (fastai's default 0.01, decoupled as in AdamW).
        label_smoothing: e.g. ``0.1``: cross-entropy with label smoothing (single-label data only).
        mix: ``"mixup"`` or ``"cutmix"``: fastai's MixUp / CutMix callback on every training batch; by default
            CutMix when the data was built with ``aug="strong"`` (``mix="none"`` turns it off).
            Data built with ``balance="weights"`` gets a class-weighted loss.
        train_bn: keep training BatchNorm layers of a frozen body (fastai's behaviour); default ``False``.
        freeze_bn_stats: BatchNorm layers normalise with their pre-trained statistics during all training,
            also after unfreezing (Keras' rule; default). ``False``: unfrozen BN layers use batch statistics.
            Measured on the textile set with batches of 16: batch statistics after unfreezing sent the
            validation accuracy to chance, frozen statistics let it improve.
        checkpoint_dir: save ``last.safetensors`` and ``best.safetensors`` there after every epoch (atomically),
            so an interrupted fit can continue with ``resume=True``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a `torch.device`; default the device the DataLoaders
            were given, else CUDA when available, else CPU. Kept as ``learn.device``; the model, the data, the
            cached features, `lr_find`, `interpret` / `evaluate` and resumed checkpoints all use it.
        matcher: layer groups for a model without a group matcher of its own: timm's form, group name ->
            regex over parameter names (``{"stem": r"^conv1", "blocks": r"^layer(\\d+)"}``); checked first.
        size: run the model at this input size: ViT-like timm models are built for it (``img_size``), CNNs
            take it as is, and the data is resized to it. Default: the data's own ``size`` when it was given one
            (``ImageData.from_folder(..., size=...)``, which always wins: a different `size` here is ignored with
            a warning), else the model's (DINOv2: 224 px, not the 518 of its pretrained config; see
            ``easytransfer.models.backends.timm.DEFAULT_SIZES``). The model and the data always agree on it.
            When neither gave a size, `fit_frozen` chooses between the model's and twice it from validation
            (CNNs; `easytransfer.tasks.classification.choice`).
        seed: seed Python, numpy and torch (fastai's ``set_seed``, also ``easytransfer.set_seed``) before the head
            is made, so the head's initial weights and the order of the training batches repeat: the same
            figures in a notebook as from ``easytransfer train --seed`` (which passes it). ``from_folder(seed=)``
            fixes only the split. Default ``None``: not seeded.
        mixed_precision: ``"fp16"`` or ``"bf16"``: train (and compute cached features) in mixed precision on a
            GPU, as ``learn.to_fp16()`` / ``learn.to_bf16()``; ignored with a message on the CPU. Default off.

    Returns:
        The learner, its body frozen (only the new head trains until `unfreeze`).

    >>> from easytransfer import ImageData, transfer_learner
    >>> dls = ImageData.from_folder("path/to/images", valid_pct=0.2, seed=42)  # doctest: +SKIP
    >>> learn = transfer_learner(dls, "efficientnet_lite0"); learn.fit_frozen(3)  # doctest: +SKIP
    """
    if seed is not None:
        set_seed(seed)
    cbs = list(kwargs.pop("cbs", None) or [])
    recipe = getattr(dls, "recipe", None)
    if mix is None and recipe is not None and uses_cutmix(recipe.aug):
        mix = "cutmix"  # part of the "strong" augmentation preset
    if mix not in (None, "none"):
        if mix not in _MIXES:
            raise ValueError(f"mix must be one of {sorted(_MIXES)}, 'none' or None, got {mix!r}")
        cbs.append(_MIXES[mix]())
    loss_func = _loss_func(dls, label_smoothing)
    if loss_func is not None and "loss_func" not in kwargs:
        kwargs["loss_func"] = loss_func
    head_config = HeadConfig(head, dropout, pool=pool)
    given_size = size
    if isinstance(dls, ImageData) and recipe.size_given:  # the data's own size wins; a ViT is built for it
        if size is not None and size != recipe.size:
            warnings.warn(f"size={size} is ignored: the data was built with size={recipe.size}, which wins; "
                          "give the size to one of them.", stacklevel=2)
        size = recipe.size
    if head_config.type == "zero_shot":
        if isinstance(dls, ImageData) and dls.is_multilabel:
            raise ValueError("head='zero_shot' starts from a softmax over the classes (single-label data); this data "
                             "is multi-label: use head='linear'.")
        model, spec = zero_shot_model(arch, [str(c) for c in dls.vocab], pretrained=pretrained, weights=weights,
                                      size=size, head=head_config, device=device)
    else:
        model, spec = build_model(arch, len(dls.vocab), pretrained=pretrained, weights=weights, head=head_config,
                                  size=size)
    if isinstance(dls, ImageData):
        dls = dls.for_model(spec)
    else:
        dls.add_tfms([Normalize.from_stats(spec.mean, spec.std, cuda=False)], "after_batch")
    groups = split_layer_groups(model, n_stages, head=spec.classifier, matcher=matcher)
    learn = ClassifierLearner(
        dls, model, spec=spec, layer_groups=groups, metrics=metrics if metrics is not None else _default_metrics(dls),
        head_config=head_config, checkpoint_dir=checkpoint_dir, train_bn=train_bn, freeze_bn_stats=freeze_bn_stats,
        wd=wd, cbs=cbs, device=device, free_settings=_free_settings(dls, given_size, pool), **kwargs,
    )
    if mixed_precision not in (None, "no"):
        learn._mixed_precision(mixed_precision)  # to_fp16 / to_bf16; an unknown name raises ValueError
    return learn
