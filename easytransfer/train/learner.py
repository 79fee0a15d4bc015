"""`TransferLearner`: the transfer recipe on a fastai `Learner`, for every task.

The recipe is the same whatever the model predicts: train the head with the body frozen (`fit_frozen`), open
layer groups (`unfreeze`), train them with rates decaying from head to stem (`fit_discriminative`, also per block
with `layer_decay`), or do it all in one call (`fine_tune`, `fit_gradual`); then `diagnose`, `save_report` and
`export`. What a task adds (a classifier's feature cache, probes and calibration; a segmentation model's masks;
a detector's boxes) lives in its learner under ``easytransfer/tasks/<task>/learner.py``, a subclass that answers
the hooks `task`, `classes`, `preprocessing` and `task_config` and may set the diagnosis wording.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import replace
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..deploy.bundle import BundleConfig, Preprocessing, write_bundle
from ..log import get_logger
from ..models.layer_groups import block_layer_groups
from ..models.weights import load_state_dict_strict
from .block_optimizer import optimizer_over
from .callbacks import better
from .diagnosis import ConfidenceCheck, Diagnosis, diagnose
from .distributed import broadcast_object, is_main_process, one_process_view
from .features import DEFAULT_CACHE_VIEWS
from .history import FineTuneChoice, Phase, PhaseKind, plot_history
from .layer_group_learner import LayerGroupLearner
from .lr_finder import LRFinderResult, find_lr
from .rates import (
    DEFAULT_DECAY,
    DEFAULT_HEAD_LR,
    DEFAULT_LR_MAX,
    DEFAULT_TUNE_EPOCHS,
    FROZEN_LR_FIND_IT,
    UNFROZEN_LR_FIND_IT,
    check_lr,
    discriminative_lrs,
)
from .recipe_defaults import RecipeDefaults

__all__ = ["DEFAULT_DECAY", "DEFAULT_HEAD_LR", "DEFAULT_LR_MAX", "DEFAULT_TUNE_EPOCHS", "FROZEN_LR_FIND_IT",
           "UNFROZEN_LR_FIND_IT",
           "TransferLearner"]

logger = get_logger(__name__)


class TransferLearner(RecipeDefaults, LayerGroupLearner, metaclass=ABCMeta):
    """A fastai `Learner` for transfer learning: frozen-body training, unfreezing, discriminative rates.

    The base of every task's learner (`ClassifierLearner` from `transfer_learner`, `SegmentationLearner`,
    `DetectionLearner`); it starts with the body frozen. It knows no task: a subclass sets `task` (the task
    registry's name) and answers `classes`, `preprocessing` and `task_config`, which `bundle_config` (the one
    builder of what `export` writes) asks for; its class attributes `mistakes_hint`, `augmentation_advice` and
    `accuracy_per_image` word `diagnose`'s advice.

    Attributes:
        spec: the backbone's `ModelSpec` (preprocessing, family, source).
        layer_groups: the `LayerGroups` (stem ... head) that freezing and learning rates work on.
        device: the `torch.device` everything runs on: model, data, checkpoints loaded.
        fit_history: the typed `History`: one `EpochRecord` per epoch of every fit so far (fastai's
            ``fit_one_cycle`` ... included).
        history: the same as a DataFrame (phase, epoch, losses, metrics, train_accuracy, lr_i, seconds).
        fine_tune_choice: the `FineTuneChoice` of the last `fine_tune` that ran both stages, else ``None``;
            ``fine_tune_kept`` is its ``kept`` (``"frozen"`` or ``"fine-tuned"``).

    >>> learn = segmentation_learner(dls); isinstance(learn, TransferLearner)  # doctest: +SKIP
    True
    """

    task: str  # the task registry's name (``learn.task``, the bundle's ``task``); each task's learner sets it
    # how `diagnose` words its advice for this task's models
    mistakes_hint = "learn.interpret() and its plot_top_losses()"
    augmentation_advice: tuple[str, ...] = (
        "More augmentation: the data's aug= preset, and more weight decay (wd=0.1 on the learner).",)
    accuracy_per_image = False  # whether one validation image is one step of the accuracy

    # ------------------------------------------------------------------------------------ what a task answers

    @abstractmethod
    def preprocessing(self) -> Preprocessing:
        """The validation pipeline a bundle records (size, resize filter, mean, std, resize rule)."""

    @abstractmethod
    def task_config(self):
        """The task's typed config a bundle records as ``task_config`` (``to_dict`` / ``from_dict``)."""

    def describe_head(self) -> str:
        """The model's head in words, for the report's model table (a classifier: the module the head is at)."""
        return self.spec.classifier

    def _confidence_check(self, interp=None) -> ConfidenceCheck | None:
        """The validation set's calibration figures for `diagnose`; ``None`` where they do not apply."""
        return None

    # ------------------------------------------------------------------------------------ learning rates

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int | None = None, stop_div: bool = True,
                *, decay: float | None = None) -> LRFinderResult:
        """Sweep the learning rate and suggest one; the model and optimizer are restored exactly afterwards.

        With the body frozen it sweeps the head (on cached features where the learner has them: seconds),
        `num_it` default 100; unfrozen it stops as soon as the loss diverges (4x its best) and `num_it`
        defaults to 50 (`UNFROZEN_LR_FIND_IT`). Unfrozen, every trainable group is swept together, group k from
        the head at ``decay**k`` times the head's rate (default `DEFAULT_DECAY`; ``decay=1`` for one rate), and
        the suggestions are for the head, i.e. the `lr_max` of `fit_discriminative`.

        Args:
            start_lr, end_lr: the range swept (the head's rate).
            num_it: steps of the sweep.
            stop_div: stop when the loss diverges.
            decay: the ratio between neighbouring groups' rates when unfrozen.

        Returns:
            an `LRFinderResult` with ``.valley``, ``.steep``, ``.minimum``, ``.slide``, ``.suggested`` and
            ``.plot()``; also kept as ``learn.lr_find_result``.

        >>> res = learn.lr_find(); res.plot(); learn.fit_frozen(3, lr=res.valley)  # doctest: +SKIP
        """
        self._check_trainable()
        frozen = self._body_is_frozen()
        if num_it is None:
            num_it = FROZEN_LR_FIND_IT if frozen else UNFROZEN_LR_FIND_IT
        cache = self._feature_cache_or_none(cache_views=1, caller="lr_find") if frozen else None
        if cache is not None:
            result = find_lr(self, start_lr, end_lr, num_it, stop_div, loop=self._training_loop(cache))
        elif frozen:
            result = find_lr(self, start_lr, end_lr, num_it, stop_div)
        else:
            ratios = discriminative_lrs(1.0, self.n_groups, self.default_decay() if decay is None else decay)
            result = find_lr(self, start_lr * ratios, end_lr * ratios, num_it, stop_div)
        if self.world is not None:  # every rank swept in step (DDP); rank 0's suggestion is everyone's
            result = broadcast_object(result)
        self.lr_find_result = result
        return result

    def _resolve_lr(self, lr, default: float, *, decay: float | None = None) -> float:
        check_lr(lr)
        if lr is None:
            return default
        if isinstance(lr, str):
            if lr != "find":
                raise ValueError(f"lr must be a number or 'find', got {lr!r}")
            result = self.lr_find(decay=decay)
            logger.info(f"lr_find suggests {result.suggested:.2e} ({result}).")
            return result.suggested
        return lr

    # ------------------------------------------------------------------------------------ the recipe

    def fit_frozen(self, epochs: int = 3, lr: float | str | None = None, *, warmup_pct: float = 0.1,
                   monitor: str | None = None, patience: int | None = 5, restore_best: bool = True,
                   cache: bool = True, cache_views: int = DEFAULT_CACHE_VIEWS, cbs=None, resume: bool = False):
        """Train only the head (everything above the body) with the body frozen, by gradient descent.

        The frozen body's BatchNorm layers run with their pre-trained statistics (inference mode) unless the
        learner was built with ``train_bn=True``. The learning rate warms up linearly over the first
        `warmup_pct` of steps, then follows a cosine to near zero. Where the learner can cache the body's
        features (a classifier: see `ClassifierLearner.fit_frozen`) the head trains on them; otherwise on the
        images.

        Args:
            epochs: number of epochs (fewer when early stopping ends the fit).
            lr: the head's peak learning rate; default `default_head_lr` (3e-3, a detector's its own); ``"find"``
                runs `lr_find` first.
            monitor: ``"valid_loss"``, ``"train_loss"`` or a metric's name; default `default_monitor`
                (``"valid_loss"``; a detector's ``"map50"``).
            patience: stop after this many epochs without improvement of `monitor`; ``None``: never.
            restore_best: at the end, load the weights of the epoch with the best `monitor`.
            cache: train the head on cached features when the learner can.
            cache_views: views per training image in the cache (1 = the plain image only).
            cbs: extra fastai callbacks for this fit.
            resume: continue an interrupted fit from the last checkpoint in ``checkpoint_dir`` (same schedule).

        Returns:
            The learner.

        >>> learn.fit_frozen(3)  # doctest: +SKIP
        """
        self.freeze()
        if cache_views < 1:
            raise ValueError(f"cache_views must be at least 1, got {cache_views}")
        features = self._feature_cache_or_none(cache_views) if cache else None
        lr = float(self._resolve_lr(lr, self.default_head_lr()))
        return self._fit_scheduled(epochs, np.full(self.n_groups, lr), warmup_pct=warmup_pct,
                                   phase=Phase(PhaseKind.FROZEN), monitor=monitor or self.default_monitor(),
                                   patience=patience, restore_best=restore_best, cbs=cbs, resume=resume,
                                   features=features)

    def fit_discriminative(self, epochs: int | None = None, lr_max=None, *, decay: float | None = None,
                           layer_decay: float | None = None, warmup_pct: float = 0.1, monitor: str | None = None,
                           patience: int | None = 5, restore_best: bool = True, cbs=None,
                           phase: str | Phase = "discriminative", resume: bool = False):
        """Train the unfrozen groups, each with its own learning rate decaying from head to stem.

        Group k counted from the head gets ``lr_max * decay**k``; a list (stem first) or ``slice(lo, hi)``
        is accepted too, and ``lr_max="find"`` runs `lr_find` (with the same decay) first. Call `unfreeze`
        first: groups still frozen stay frozen. Early stopping and best-weight restore as in `fit_frozen`.
        The default ``decay=0.1`` gives 1e-3, 1e-4, 1e-5 ... from the head down, as fastai's
        ``slice(1e-5, 1e-3)``: with 0.3 the top body group's 3e-4 made the valid loss jump on the textile set.

        Layer decay (``layer_decay=0.75``, the BEiT / MAE / timm recipe for fine-tuning ViTs) gives every block
        its own rate instead of every layer group: the head gets `lr_max`, the block under it
        ``lr_max * layer_decay``, and so on down to the stem at ``lr_max * layer_decay**(n_blocks + 1)``. The
        blocks are timm's ``group_matcher(coarse=False)`` (`block_layer_groups`); `decay` is not used then, and
        `lr_max` is one rate or ``"find"``. What is frozen is still decided by the layer groups (`unfreeze`).
        During this fit only, the optimizer has one parameter group per block and ``learn.layer_groups`` are the
        blocks (`optimizer_over`; optimizer moments carried over and back). The history's ``lr_i`` columns hold
        one rate per block for this fit, and its phase is named ``"layer decay 0.75"``. A model without
        per-block groups (torchvision's) raises `NoBlockGroupsError`, which names ``decay=``.

        Args:
            epochs: number of epochs; default `default_epochs` (5; a classifier's choice may say 10).
            lr_max: the head's peak rate, a list, a slice or ``"find"``; default `default_lr_max` (1e-3; a
                detector's its own).
            decay, layer_decay: the ratio between neighbouring groups' (or blocks') rates; default decay:
                `default_decay` (0.1, or what the frozen stage chose for its input size).
            warmup_pct, monitor, patience, restore_best, cbs, resume: as in `fit_frozen`.
            phase: labels the fit's rows in the history (a `Phase`, or a name).

        Returns:
            The learner.

        >>> learn.unfreeze(); learn.fit_discriminative(5, lr_max=1e-3, decay=0.1)  # doctest: +SKIP
        >>> learn.fit_discriminative(5, lr_max=1e-4, layer_decay=0.75)  # a ViT, per block  # doctest: +SKIP
        """
        epochs = self.default_epochs() if epochs is None else epochs
        common = dict(warmup_pct=warmup_pct, monitor=monitor or self.default_monitor(), patience=patience,
                      restore_best=restore_best, cbs=cbs, resume=resume)
        if layer_decay is not None:
            return self._fit_layer_decay(epochs, lr_max, layer_decay, phase=_discriminative_phase(phase), **common)
        decay = self.default_decay() if decay is None else decay
        lr_max = self._resolve_lr(lr_max, self.default_lr_max(), decay=decay)
        lrs = discriminative_lrs(lr_max, self.n_groups, decay)
        return self._fit_scheduled(epochs, lrs, phase=_discriminative_phase(phase), **common)

    def _fit_layer_decay(self, epochs: int, lr_max, layer_decay: float, *, phase: Phase, **kwargs):
        """`fit_discriminative` with one rate per block: ``lr_max * layer_decay**k``, k counted from the head."""
        if not isinstance(layer_decay, Real) or not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], e.g. 0.75; got {layer_decay!r}")
        one_rate = lr_max is None or isinstance(lr_max, str) or (isinstance(lr_max, Real) and lr_max > 0)
        if not one_rate:  # a string other than "find" gets _resolve_lr's error
            raise ValueError(f"With layer_decay, lr_max is the head's rate (a positive number) or 'find', got "
                             f"{lr_max!r}; the other rates follow from layer_decay.")
        blocks = block_layer_groups(self.model, head=self.spec.classifier)
        phase = replace(phase, layer_decay=layer_decay)
        with optimizer_over(self, blocks):
            lr_max = self._resolve_lr(lr_max, self.default_lr_max(), decay=layer_decay)
            lrs = discriminative_lrs(float(lr_max), len(blocks), layer_decay)
            return self._fit_scheduled(epochs, lrs, phase=phase, **kwargs)

    def fine_tune(self, epochs: int, frozen_epochs: int = 3, *, lr: float | str | None = None, lr_max=None,
                  decay: float | None = None, monitor: str | None = None, patience: int | None = 5,
                  warmup_pct: float = 0.1, restore_best: bool = True, cache: bool = True,
                  cache_views: int = DEFAULT_CACHE_VIEWS, cbs=None) -> TransferLearner:
        """The recipe in one call: train the head, unfreeze, fine-tune, and keep the stage that validates better.

        Runs ``fit_frozen(frozen_epochs, lr=lr)``, ``unfreeze()`` and ``fit_discriminative(epochs, lr_max=lr_max,
        decay=decay)``, each ending with its best epoch's weights. Then both stages' weights are measured on the
        validation set by `monitor` (lower is better for a loss, higher for a metric, as in every fit) and the
        frozen stage's weights (a copy of the whole model state kept in memory, buffers included) come back when
        fine-tuning made `monitor` worse: on small or unusual data fine-tuning can lose what the head learnt. One
        line says which weights were kept and both values; ``learn.fine_tune_choice`` keeps them, and
        `diagnose` says so when the frozen-stage weights were kept. The body stays unfrozen either way. Measuring
        costs one pass over the validation images before and after fine-tuning (fastai's ``validate``).

        Args:
            epochs: epochs of fine-tuning; ``0`` trains the head only.
            frozen_epochs: epochs of the frozen stage; ``0`` skips it (then there is nothing to choose from).
            lr: the head's rate in the frozen stage (as in `fit_frozen`; ``"find"`` runs `lr_find`).
            lr_max, decay: the discriminative rates of the fine-tuning stage (as in `fit_discriminative`).
            monitor: ``"valid_loss"`` or a metric's name (default `default_monitor`); early stopping, best weights
                and the choice use it.
            patience, warmup_pct, restore_best, cbs: as in `fit_frozen` and `fit_discriminative`, for both stages.
            cache, cache_views: as in `fit_frozen`, for the frozen stage.

        Returns:
            the learner. A fit stopped by a non-finite loss (``learn.stop_reason``) in the frozen stage ends the
            recipe there, as in `fit_gradual`.

        >>> learn.fine_tune(5, frozen_epochs=3)  # doctest: +SKIP
        fine_tune kept the fine-tuned weights (valid_loss 0.4120 < 0.5300 after the frozen stage)
        """
        if not isinstance(epochs, Integral) or not isinstance(frozen_epochs, Integral):
            raise TypeError(f"fine_tune(epochs, frozen_epochs) takes whole numbers of epochs, got {epochs!r}, "
                            f"{frozen_epochs!r}; the rates are lr= (head) and lr_max= (fastai's fine_tune takes "
                            "base_lr second)")
        if epochs < 0 or frozen_epochs < 0 or epochs + frozen_epochs == 0:
            raise ValueError(f"fine_tune needs epochs >= 0 and frozen_epochs >= 0, not both 0; got epochs={epochs}, "
                             f"frozen_epochs={frozen_epochs}")
        monitor = monitor or self.default_monitor()
        valid_names = self._monitor_names()[1:]
        if monitor not in valid_names:
            raise ValueError(f"fine_tune chooses by a validation figure; monitor={monitor!r} is not one of "
                             f"{valid_names}.")
        check_lr(lr, "lr")  # both rates before the first stage: a bad lr_max must not wait for the frozen stage
        check_lr(lr_max, "lr_max")
        common = dict(warmup_pct=warmup_pct, monitor=monitor, patience=patience, restore_best=restore_best, cbs=cbs)
        self.fine_tune_choice = None
        if frozen_epochs:
            self.fit_frozen(frozen_epochs, lr=lr, cache=cache, cache_views=cache_views, **common)
            if epochs == 0 or self.stop_reason:
                return self
            frozen_state = {name: t.detach().clone() for name, t in self.model.state_dict().items()}
            frozen_best_epoch = self.best_epoch if self.best_epoch is not None else len(self.fit_history) - 1
            frozen_value = None if restore_best else self._validation_value(monitor)
        self.unfreeze()
        self.fit_discriminative(epochs, lr_max=lr_max, decay=decay, **common)
        if not frozen_epochs:
            return self
        if frozen_value is None:  # measured by the fit, which kept those weights unless an epoch beat them
            frozen_value = self.fit_start.value
        tuned_value = self._validation_value(monitor)
        kept = "frozen" if better(monitor, frozen_value, tuned_value) else "fine-tuned"
        if kept == "frozen":
            load_state_dict_strict(self.model, frozen_state, where="the frozen stage of fine_tune")
            self.best_epoch = frozen_best_epoch
        self.fine_tune_choice = FineTuneChoice(kept, monitor, frozen_value, tuned_value)
        logger.info(str(self.fine_tune_choice))
        return self

    def fit_gradual(self, epochs_per_stage: int = 5, lr_max: float | None = None, *, head_lr: float | None = None,
                    decay: float | None = None, warmup_pct: float = 0.1, max_unfrozen: int | None = None,
                    monitor: str | None = None, patience: int | None = 5, restore_best: bool = True, cbs=None):
        """Gradual unfreezing (ULMFiT): train the head, then open one more body group from the top per stage.

        Stage 0 trains the head alone (as `fit_frozen`, with `head_lr`); stage k has the last k body groups
        unfrozen and trains with discriminative rates (`lr_max`, `decay`); every stage warms up again and
        ends with the best weights of that stage. History phases are ``"stage 0"``, ``"stage 1"`` ...

        Args:
            epochs_per_stage: epochs in each stage.
            lr_max, decay: the discriminative rates of stages 1 and up.
            head_lr: the head's rate in stage 0 (default `default_head_lr`).
            max_unfrozen: open at most this many body groups (default: all of them).
            warmup_pct, monitor, patience, restore_best, cbs: as in `fit_discriminative`, for every stage.

        Returns:
            The learner.

        >>> learn.fit_gradual(epochs_per_stage=2, max_unfrozen=2)  # doctest: +SKIP
        """
        n_body = self.layer_groups.n_body
        last = n_body if max_unfrozen is None else max_unfrozen
        if not 0 <= last <= n_body:
            raise ValueError(f"max_unfrozen must be between 0 and {n_body} (the body groups), got {max_unfrozen}")
        check_lr(head_lr, "head_lr")
        check_lr(lr_max, "lr_max")
        common = dict(warmup_pct=warmup_pct, monitor=monitor or self.default_monitor(), patience=patience,
                      restore_best=restore_best, cbs=cbs)
        self.freeze()
        head = float(self._resolve_lr(head_lr, self.default_head_lr()))
        self._fit_scheduled(epochs_per_stage, np.full(self.n_groups, head), phase=Phase(PhaseKind.GRADUAL, 0),
                            features=self._feature_cache_or_none(DEFAULT_CACHE_VIEWS), **common)
        for k in range(1, last + 1):
            if self.stop_reason:
                break
            self.unfreeze(k)
            self.fit_discriminative(epochs_per_stage, lr_max, decay=decay, phase=Phase(PhaseKind.GRADUAL, k),
                                    **common)
        return self

    # ------------------------------------------------------------------------------------ results

    def plot_history(self, axes=None, title: str | None = None) -> Figure:
        """Train and valid loss and the metrics of every epoch so far, phases shaded; returns the Figure.

        >>> learn.plot_history().savefig("history.png")  # doctest: +SKIP
        """
        return plot_history(self.fit_history, axes=axes, title=title)

    def diagnose(self, interp=None) -> Diagnosis:
        """Under-fitting, over-fitting or a good fit, in plain words, from ``learn.fit_history``; with next steps.

        Args:
            interp: an interpretation of the validation set to read calibration figures from (a classifier's;
                others ignore it), instead of a validation pass.

        Returns:
            a `Diagnosis` (``print`` it).

        >>> print(learn.diagnose())  # doctest: +SKIP
        """
        trainable = [any(p.requires_grad for p in g) for g in self.layer_groups.params(self.model)[:-1]]
        return diagnose(self.fit_history, n_valid=len(self.dls.valid_ds), frozen_body_groups=trainable.count(False),
                        restored_epoch=self.best_epoch, fine_tune=self.fine_tune_choice,
                        confidence=self._confidence_check(interp), mistakes_hint=self.mistakes_hint,
                        augmentation_advice=self.augmentation_advice, accuracy_per_image=self.accuracy_per_image)

    def save_report(self, path, dl=None, interp=None, top_k: int = 9) -> Path:
        """One self-contained HTML file: data, model, layer groups, history, LR finder, the task's scores, diagnosis.

        By default the report shows the last `interpret` (or `evaluate`) the learner kept
        (``learn.last_interpretation``) without predicting again, else the validation set. In a distributed run
        rank 0 alone writes it.

        Args:
            path: the ``.html`` file to write.
            dl: the images to predict for the task's sections (default: see above).
            interp: an interpretation to reuse.
            top_k: how many top losses are drawn.

        Returns:
            `path`.

        >>> learn.evaluate(); learn.save_report("report.html")  # doctest: +SKIP
        """
        from ..evaluate.html_report import save_report

        if interp is None and dl is None:
            interp = self.last_interpretation
        if not is_main_process():  # a distributed run: rank 0 writes it
            return Path(path)
        with one_process_view():
            return save_report(self, path, dl=dl, top_k=top_k, interp=interp)

    def bundle_config(self) -> BundleConfig:
        """What `export` writes beside the weights: architecture, classes, head, preprocessing and the task's config.

        The one builder of a bundle's record: the common fields come from the backbone's `ModelSpec` and the
        head, the task's pieces from `classes`, `preprocessing` and `task_config`.

        >>> learn.bundle_config().task  # doctest: +SKIP
        'classification'
        """
        spec = self.spec
        return BundleConfig(arch=spec.name, source=spec.source, source_arch=spec.arch, classes=tuple(self.classes),
                            head=self.head_config, preprocessing=self.preprocessing(), task=self.task,
                            task_config=self.task_config(), arch_config=spec.arch_config)

    def export(self, path) -> Path:
        """Write a model bundle (safetensors weights + JSON) to folder `path`; no pickle is involved.

        In a distributed run (`distributed`, during or after the block) rank 0 alone writes it; the other ranks
        return `path` without writing.

        Args:
            path: the bundle's folder.

        Returns:
            `path` as a `Path`.

        >>> learn.export("runs/textile-model")  # doctest: +SKIP
        """
        if not is_main_process():  # a distributed run: rank 0 writes it
            return Path(path)
        return write_bundle(path, self.model, self.bundle_config())


def _discriminative_phase(phase: str | Phase) -> Phase:
    """`fit_discriminative`'s phase: a `Phase`, or a name ("stage 2" is a gradual stage; others label the fit)."""
    if isinstance(phase, Phase):
        return phase
    parsed = Phase.from_name(phase)
    return parsed if parsed.trains_body else Phase(PhaseKind.DISCRIMINATIVE, label=phase)
