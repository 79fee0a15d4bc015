"""A plain-words diagnosis of a training history: under-fitting, over-fitting or a good fit, and what to try."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .history import FineTuneChoice, History, as_history, train_batches_name

__all__ = ["ConfidenceCheck", "Diagnosis", "diagnose"]

UNDERFIT_TRAIN_ACCURACY = 0.9  # below this the model has not learnt its own training images
OVERFIT_GAP = 0.10  # train accuracy this far above valid accuracy
VALID_LOSS_RISE = 0.10  # the last valid loss 10% above the best one while the train loss kept falling
EARLY_BEST_EPOCHS = 2  # the best valid loss this many epochs or more before the last: the later ones over-fit
# Guo et al. 2017 measured ECEs of 4-16 % for uncalibrated modern networks and under 2 % after temperature scaling;
# on a validation set of a few hundred images the 15-bin ECE of a calibrated model is itself a few points
HIGH_ECE = 0.08
# the advice's wording when the caller gives none: a classifier's (each learner passes its own class attributes)
MISTAKES_HINT = "learn.interpret().per_class() and plot_confusion_matrix()"
AUGMENTATION_ADVICE = (
    "Stronger augmentation: ImageData.from_folder(..., aug='strong') (adds rotation, colour jitter and CutMix), or "
    "transfer_learner(..., mix='mixup').",
    "More weight decay: transfer_learner(..., wd=0.1), and dropout on the head (dropout=0.3).",
)


@dataclass(frozen=True)
class ConfidenceCheck:
    """How the probabilities on the validation set compare with the accuracy (for `diagnose`).

    Attributes:
        ece: expected calibration error (15 bins).
        mean_confidence: mean top-class probability; above `accuracy`: over-confident.
        accuracy: share predicted right.
        calibrated: whether ``learn.calibrate()`` is applied to these probabilities.
    """

    ece: float
    mean_confidence: float
    accuracy: float
    calibrated: bool = False


@dataclass
class Diagnosis:
    """The verdict on a training history, the evidence for it and what to do next.

    Attributes:
        verdict: ``"under-fitting"``, ``"over-fitting"``, ``"good fit"``, ``"a gap of N points, still improving"``
            (train accuracy well above valid accuracy while the valid loss still falls: not over-fitting yet),
            ``"too early to tell"`` or ``"nothing was trained"`` (no epoch recorded a training loss).
        evidence: the figures the verdict rests on, in words.
        advice: next steps, most promising first, each with the call to make.

    ``print(learn.diagnose())`` shows it as text.
    """

    verdict: str
    evidence: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"Diagnosis: {self.verdict}."]
        lines += [f"  - {e}" for e in self.evidence]
        if self.advice:
            lines.append("What to try next:")
            lines += [f"  {i}. {a}" for i, a in enumerate(self.advice, 1)]
        return "\n".join(lines)

    __repr__ = __str__


def _valid_accuracy_column(history: History) -> str | None:
    names = history.metric_names
    for name in ("accuracy", "accuracy_multi"):
        if name in names:
            return name
    return None


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def diagnose(history: History | pd.DataFrame, n_valid: int | None = None, frozen_body_groups: int | None = None,
             restored_epoch: int | None = None, fine_tune: FineTuneChoice | None = None,
             confidence: ConfidenceCheck | None = None, *, mistakes_hint: str = MISTAKES_HINT,
             augmentation_advice: tuple[str, ...] = AUGMENTATION_ADVICE, accuracy_per_image: bool = True) -> Diagnosis:
    """Read a training history and say whether the model under-fits, over-fits or fits well, and what to try.

    Rules (thresholds are module constants): over-fitting when the last validation loss is 10% above its best
    while the training loss kept falling, or when the best validation loss came `EARLY_BEST_EPOCHS` or more
    epochs before the last; under-fitting when the accuracy on the training batches of the last epoch is below
    90%; when it is more than 10 points above the validation accuracy while the validation loss still improves,
    "a gap of N points, still improving" (a gap alone is not over-fitting); otherwise a good fit. Advice about
    augmentation is left out when only the head trained on cached features (augmentation cannot change them).

    Fine-tuning advice depends on whether any phase trained the body (`Phase.trains_body`): a frozen fit, a
    logistic probe and stage 0 of a gradual fit trained the head alone.

    Args:
        history: ``learn.fit_history`` (or the ``learn.history`` DataFrame).
        n_valid: number of validation images, to warn when the figures rest on very few.
        frozen_body_groups: body layer groups still frozen (``None``: unknown), to advise unfreezing them.
        restored_epoch: the epoch whose weights the model has now (``learn.best_epoch``), when not the last.
        fine_tune: what `fine_tune` kept (``learn.fine_tune_choice``); when it kept the frozen-stage weights the
            diagnosis says so and advises fine-tuning more gently.
        confidence: the validation set's calibration figures; an ECE above `HIGH_ECE` with confidence above
            accuracy is called over-confidence, with the advice to calibrate.
        mistakes_hint: the calls that show the model's mistakes (``learn.mistakes_hint``: a detector has no
            confusion matrix); augmentation_advice: what to say about augmentation against over-fitting (a
            learner's ``augmentation_advice``: masks and boxes take the data's own augmentation);
            accuracy_per_image: whether one validation image is one step of the accuracy (a classifier).

    >>> print(diagnose(learn.fit_history))  # doctest: +SKIP
    """
    history = as_history(history)
    if len(history) == 0:
        return Diagnosis("too early to tell", ["No epochs have been trained yet."],
                         ["Train the head first: learn.fit_frozen(3)."])
    records = history.records
    if not any(_finite(r.train_loss) for r in records):
        return Diagnosis("nothing was trained", [f"No training loss was recorded in any of the {len(records)} "
                                                 "epochs: no training batch ran, or every one gave a non-finite loss."],
                         ["Check that the training set holds at least one batch (bs no larger than the number of "
                          "training images), then lower the learning rate if the loss is still not finite."])
    last = records[-1]
    fine_tuned = any(r.phase.trains_body for r in records)
    acc_col = _valid_accuracy_column(history)
    train_acc = last.train_accuracy
    valid_acc = last.metrics.get(acc_col) if acc_col else None
    evidence = []
    if _finite(train_acc):
        evidence.append(f"train accuracy {train_acc:.1%} in the last epoch (on {train_batches_name([last])})")
    if _finite(valid_acc):
        evidence.append(f"valid {acc_col} {valid_acc:.1%}")
    evidence.append(f"train loss {last.train_loss:.4f}, valid loss {last.valid_loss:.4f} "
                    f"after {len(history)} epoch(s)")

    valid_loss = np.array([r.valid_loss for r in records], dtype=float)
    best = int(np.nanargmin(valid_loss)) if np.isfinite(valid_loss).any() else len(history) - 1
    best_loss = float(valid_loss[best])
    rising = (best < len(history) - 1 and last.valid_loss > best_loss * (1 + VALID_LOSS_RISE)
              and last.train_loss < records[best].train_loss)
    if rising:
        evidence.append(f"the valid loss was lowest at epoch {best} ({best_loss:.4f}) and has risen since, "
                        "while the train loss kept falling")
    still_falling = len(history) >= 2 and last.train_loss < 0.95 * records[-2].train_loss
    if still_falling:
        evidence.append("the train loss was still falling by more than 5% per epoch")
    gap = train_acc - valid_acc if _finite(train_acc) and _finite(valid_acc) else None

    best_before_last = best < len(history) - 1
    early_best = best <= len(history) - 1 - EARLY_BEST_EPOCHS
    if early_best and not rising:
        evidence.append(f"the valid loss was lowest at epoch {best} ({best_loss:.4f}), {len(history) - 1 - best} "
                        "epochs before the last, and has not improved since")
    augmentable = fine_tuned or not all(r.on_features for r in records)  # cached features ignore augmentation
    if rising or early_best:
        verdict, advice = "over-fitting", _overfit_advice(fine_tuned, best, best_before_last, augmentation_advice,
                                                        augmentable)
    elif _finite(train_acc) and train_acc < UNDERFIT_TRAIN_ACCURACY:
        verdict, advice = "under-fitting", _underfit_advice(fine_tuned, still_falling, frozen_body_groups)
    elif gap is not None and gap > OVERFIT_GAP:
        verdict = f"a gap of {gap * 100:.0f} points, still improving"
        evidence.append(f"train accuracy is {gap * 100:.0f} points above valid {acc_col}, but the valid loss is "
                        f"at its lowest in epoch {best}{' (the last)' if not best_before_last else ''}: not "
                        "over-fitting (yet)")
        advice = _good_fit_advice(fine_tuned, still_falling, mistakes_hint)
    else:
        verdict, advice = "good fit", _good_fit_advice(fine_tuned, still_falling, mistakes_hint)
    if restored_epoch is not None and restored_epoch != len(history) - 1:
        row = records[restored_epoch]
        kept = f", valid {acc_col} {row.metrics[acc_col]:.1%}" if acc_col and _finite(row.metrics.get(acc_col)) else ""
        evidence.append(f"the model now has the weights of epoch {restored_epoch}, the best one "
                        f"(valid loss {row.valid_loss:.4f}{kept})")
    if fine_tune is not None and fine_tune.kept == "frozen":
        evidence.append(f"fine-tuning made {fine_tune.monitor} worse ({fine_tune.fine_tuned_value:.4f} against "
                        f"{fine_tune.frozen_value:.4f} after the frozen stage), so fine_tune kept the frozen-stage "
                        "weights: the model is the head trained on the frozen body")
        advice.insert(0, "Fine-tune more gently, or not at all: a lower lr_max (learn.fine_tune(5, lr_max=1e-4)), "
                         "fewer unfrozen groups (learn.unfreeze(1); learn.fit_discriminative(5)), or keep the "
                         "frozen-stage model, which is what you have now.")
    if n_valid is not None and n_valid < 100:
        share = (f"one image is {1 / max(n_valid, 1):.1%} of accuracy" if accuracy_per_image
                 else "every score rests on few images")
        evidence.append(f"only {n_valid} validation images: {share}, so small differences are noise")
    if confidence is not None:
        _confidence_evidence(confidence, evidence, advice)
    return Diagnosis(verdict, evidence, advice)


def _confidence_evidence(check: ConfidenceCheck, evidence: list[str], advice: list[str]) -> None:
    """Say how far the probabilities can be trusted; advise calibration for an over-confident model."""
    state = "calibrated" if check.calibrated else "uncalibrated"
    evidence.append(f"expected calibration error {check.ece:.3f} on the validation set ({state}): mean confidence "
                    f"{check.mean_confidence:.1%} against {check.accuracy:.1%} accuracy")
    if check.ece > HIGH_ECE and check.mean_confidence > check.accuracy:
        evidence.append("the model is over-confident: its probabilities are higher than how often it is right")
        advice.append("Calibrate the probabilities on labelled images kept out of training: "
                      "learn.calibrate('path/to/calib'); and for a set of labels that holds the true one 90 % of the "
                      "time, learn.conformal('path/to/calib', alpha=0.1) (docs/when_the_model_is_unsure.md).")


def _underfit_advice(fine_tuned: bool, still_falling: bool, frozen_body_groups: int | None) -> list[str]:
    advice = []
    if still_falling:
        advice.append("Train longer: the loss was still falling (more epochs in the same call).")
    if not fine_tuned:
        advice.append("Unfreeze the last layer groups and fine-tune them: "
                      "learn.unfreeze(2); learn.fit_discriminative(5).")
    elif frozen_body_groups != 0:
        advice.append("Unfreeze more layer groups (learn.unfreeze()) so more of the network adapts.")
    advice.append("Raise the learning rate: learn.lr_find() and use its suggestion (fit_frozen(lr='find')).")
    advice.append("Use less regularisation (lower wd, no mix, lighter augmentation), or a bigger model.")
    return advice


def _overfit_advice(fine_tuned: bool, best: int, best_before_last: bool,
                    augmentation_advice: tuple[str, ...] = AUGMENTATION_ADVICE, augmentable: bool = True) -> list[str]:
    advice = []
    if fine_tuned:
        advice.append("Fine-tune less: unfreeze fewer groups (learn.unfreeze(1)), lower lr_max, or keep "
                      "feature extraction (fit_frozen) when the data set is small.")
    if not augmentable:  # the head trained on cached features of the plain images: augmentation changes nothing
        advice.append("More weight decay (transfer_learner(..., wd=0.1)) or dropout on the head (dropout=0.3); "
                      "or fine-tune, where augmentation starts to help (the cached features are not augmented).")
    else:
        advice.extend(augmentation_advice)
    if best_before_last:
        advice.append(f"Fewer epochs: the best valid loss was at epoch {best}; the best weights are restored at "
                      "the end of each fit (restore_best=True), and a smaller patience stops sooner.")
    advice.append("More labelled images, if you can get them, help most.")
    return advice


def _good_fit_advice(fine_tuned: bool, still_falling: bool, mistakes_hint: str = MISTAKES_HINT) -> list[str]:
    advice = []
    if still_falling:
        advice.append("A few more epochs may still help: the loss was still falling.")
    if not fine_tuned:
        advice.append("Try fine-tuning and keep it if the valid loss improves: "
                      "learn.unfreeze(); learn.fit_discriminative(3).")
    advice.append(f"Read the mistakes: {mistakes_hint}.")
    return advice
