"""The classifier's sections of the HTML run report: the settings the frozen stage chose, confusion matrix, top
losses, per-class table, calibration and conformal prediction sets (`Interpretation.report_sections` gives them to
`save_report`)."""

from __future__ import annotations

import html

import pandas as pd

from ...evaluate.conformal import evaluate_sets
from ...evaluate.html_report import data_name, figure_html, report_titles, table_html
from ...evaluate.interpretation import ReportSection, TaskInterpretation

__all__ = ["REPORT_ALPHAS", "SECTIONS", "TASK_SECTIONS", "classification_sections"]

TASK_SECTIONS = {
    "settings": "Input size and pooling: what the frozen stage chose",
    "confusion-matrix": "Confusion matrix",
    "top-losses": "Top losses",
    "per-class": "Per-class precision, recall, F1 and support",
    "calibration": "Calibration: how far to trust the probabilities",
    "conformal": "Conformal prediction sets: which images to send to a person",
}
SECTIONS = report_titles(TASK_SECTIONS)  # the classifier's whole report, in page order
REPORT_ALPHAS = (0.05, 0.1, 0.2)  # the error rates the conformal section shows


def classification_sections(interp: TaskInterpretation, top_k: int, learn=None) -> list[ReportSection]:
    """The classifier's report sections (`TASK_SECTIONS`) for `interp`; `learn` adds its calibration and conformal
    sets (without it those sections say there are none).

    Args:
        interp: the predictions; top_k: images in the top losses; learn: the learner, or ``None``.

    Returns:
        `ReportSection` records in page order.

    >>> [s.key for s in classification_sections(learn.interpret(), 9, learn)]  # doctest: +SKIP
    ['settings', 'confusion-matrix', 'top-losses', 'per-class', 'calibration', 'conformal']
    """
    bodies = _sections(interp, top_k)
    bodies |= {"settings": _settings_section(learn), "calibration": _calibration_section(learn, interp),
               "conformal": _conformal_section(learn, interp)}
    return [ReportSection(key, title, bodies[key]) for key, title in TASK_SECTIONS.items()]


def _sections(interp: TaskInterpretation, top_k: int) -> dict[str, str]:
    warnings_html = "".join(f'<p class="warning">{html.escape(w)}</p>' for w in interp.warnings())
    per_class = table_html(interp.per_class()) + warnings_html
    confused = interp.most_confused()
    if len(confused):
        per_class += "<h3>Most confused</h3>" + table_html(confused.head(20))
    return {
        "confusion-matrix": figure_html(interp.plot_confusion_matrix(), "confusion matrix")
        + figure_html(interp.plot_confusion_matrix(normalize=True), "row-normalised confusion matrix"),
        "top-losses": figure_html(interp.plot_top_losses(top_k), "top losses") + table_html(interp.top_losses(top_k)),
        "per-class": f"<p>{len(interp.losses)} images{data_name(interp)}, accuracy {interp.accuracy:.4f}.</p>"
        + per_class,
    }


def _settings_section(learn) -> str:
    """The frozen stage's `RecipeChoice`: what it chose and every candidate's validation figures."""
    choice = getattr(learn, "choice", None)
    if choice is None:
        recipe = getattr(getattr(learn, "dls", None), "recipe", None)
        size = f"{recipe.size} px, " if recipe is not None else ""
        return (f'<p class="muted">Nothing chosen: the run used {html.escape(size)}the settings it was given '
                "(a size, pooling or augmentation given to the data or the learner is never changed).</p>")
    table = pd.DataFrame([{"size": s.candidate.size, "pool": s.candidate.pool, "cross-validated log-loss": s.cv_loss,
                           "cross-validated accuracy": s.cv_accuracy, "gain over the baseline (SE)": s.gain_se,
                           "chosen": "yes" if s.candidate == choice.chosen else ""} for s in choice.scores])
    return f"<p>{html.escape(str(choice))}</p>" + table_html(table.set_index(["size", "pool"]))


def _calibration_section(learn, interp: TaskInterpretation) -> str:
    """ECE and reliability diagram of the report's predictions; before and after when the learner is calibrated."""
    if interp.multilabel:
        return '<p class="muted">Calibration error is reported for single-label classifiers.</p>'
    calibration = getattr(learn, "calibration", None)
    before = None
    if calibration is not None and interp.dl is not None:  # the same images through the plain softmax
        probs, targs = learn.get_preds(dl=interp.dl, act=lambda logits: logits.softmax(dim=1))
        before = type(interp).from_probabilities(probs, targs, interp.vocab)
    if calibration is None:
        text = ("Not calibrated: these are the model's softmax probabilities (learn.calibrate(calib) fits a "
                "temperature or isotonic calibration on separate labelled images).")
    else:
        fitted = (f"temperature {calibration.temperature:.3f}" if calibration.method == "temperature"
                  else "isotonic, one step function per class")
        text = f"Calibrated ({fitted}) on {calibration.n_images} images."
    ece = ("Expected calibration error (15 equal-width bins of top-class probability): "
           f"{interp.calibration_error():.4f}"
           + (f", {before.calibration_error():.4f} before calibration" if before is not None else "") + ".")
    return (f"<p>{html.escape(text)} {html.escape(ece)}</p>"
            + figure_html(interp.plot_calibration(before=before), "reliability diagram"))


def _conformal_section(learn, interp: TaskInterpretation) -> str:
    """Coverage and set sizes of the learner's conformal sets on the report's images, for a few alphas."""
    calibration = getattr(learn, "conformal_calibration", None)
    if calibration is None or interp.multilabel:
        return ('<p class="muted">No conformal sets: learn.conformal(calib, alpha=0.1) gives each image a set of '
                "labels that holds the true one with probability at least 1 - alpha.</p>")
    rows = {}
    for alpha in sorted(set(REPORT_ALPHAS) | {calibration.alpha}):
        result = evaluate_sets(calibration.prediction_sets(interp.probs, alpha), interp.targs, interp.vocab, alpha)
        rows[alpha] = {"target coverage": 1 - alpha, "coverage": result.coverage,
                       "lowest class coverage": min(result.per_class_coverage.values()),
                       "average set size": result.avg_set_size, "single-label sets": result.singleton_share}
    kind = "one threshold per class (Mondrian)" if calibration.mondrian else "one threshold for all classes"
    text = (f"Score {calibration.score!r}, {kind}, from {calibration.n_images} calibration images; measured on the "
            f"{len(interp.targs)} images of this report (honest only if they are not the calibration images). "
            "Images whose set holds more than one label are the ones to send to a person.")
    return f"<p>{html.escape(text)}</p>" + table_html(pd.DataFrame(rows).T.rename_axis("alpha"))
