"""A self-contained HTML run report: data, model, layer groups, history, LR finder, mistakes, diagnosis.

One report for every task. The sections every run has (data, model, layer groups, history, LR finder,
diagnosis) are built from the learner; the task's own sections (scores, per-class table, confusion matrix, top
losses) from its interpretation: `Interpretation` (classification), `SegmentationInterpretation` or
`DetectionInterpretation`. `SECTIONS`, `SEGMENTATION_SECTIONS` and `DETECTION_SECTIONS` list each report's
sections, in order, with their titles.
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..deploy.bundle import BundleConfig
from ..files import atomic_write_text
from ..tasks.classification.interpretation import Interpretation
from ..tasks.detection.interpretation import DetectionInterpretation
from ..tasks.segmentation.interpretation import SegmentationInterpretation
from ..train.history import History, plot_history
from ..version import __version__
from .conformal import evaluate_sets

__all__ = ["DETECTION_SECTIONS", "SECTIONS", "SEGMENTATION_SECTIONS", "save_report"]

SECTIONS = {  # classification
    "data": "Data",
    "model": "Model",
    "layer-groups": "Layer groups and learning rates",
    "history": "Training history",
    "lr-finder": "Learning-rate finder",
    "confusion-matrix": "Confusion matrix",
    "top-losses": "Top losses",
    "per-class": "Per-class precision, recall, F1 and support",
    "calibration": "Calibration: how far to trust the probabilities",
    "conformal": "Conformal prediction sets: which images to send to a person",
    "diagnosis": "Diagnosis",
}

SEGMENTATION_SECTIONS = {
    "data": "Data",
    "model": "Model",
    "layer-groups": "Layer groups and learning rates",
    "history": "Training history",
    "lr-finder": "Learning-rate finder",
    "scores": "Mean IoU, pixel accuracy and Dice",
    "per-class": "Per-class IoU, Dice, precision and recall",
    "confusion-matrix": "Pixel confusion matrix",
    "top-losses": "Top losses: image, prediction, truth",
    "diagnosis": "Diagnosis",
}

DETECTION_SECTIONS = {
    "data": "Data",
    "model": "Model",
    "layer-groups": "Layer groups and learning rates",
    "history": "Training history",
    "lr-finder": "Learning-rate finder",
    "scores": "mAP@0.5 and mAP@0.5:0.95",
    "per-class": "Per-class average precision",
    "top-losses": "Top losses: true boxes (green), predictions (red)",
    "diagnosis": "Diagnosis",
}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0; overflow-wrap: anywhere; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
.table-scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f3f3f3; } img { max-width: 100%; height: auto; }
.figure { display: inline-block; max-width: 100%; overflow-x: auto; vertical-align: top; }
/* on a phone a figure keeps its own size (its labels stay readable) and scrolls sideways in its box */
@media (max-width: 700px) { .figure img { max-width: none; } }
pre { background: #f7f7f7; padding: 1em; white-space: pre-wrap; overflow-wrap: anywhere; }
.muted { color: #666; } .warning { color: #a33; }
"""


def _figure_html(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<div class="figure"><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></div>'


def _table_html(df: pd.DataFrame, digits: int = 4) -> str:
    # a wide table scrolls inside its own box on a narrow screen instead of making the whole page scroll
    return f'<div class="table-scroll">{df.round(digits).to_html(border=0, na_rep="")}</div>'


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _data_section(learn, config: BundleConfig) -> str:
    report = getattr(learn.dls, "report", None)
    parts = [f"<p>{len(learn.dls.train_ds)} training and {len(learn.dls.valid_ds)} validation images; classes: "
             f"{html.escape(', '.join(map(str, learn.dls.vocab)))}.</p>"]
    if report is not None:
        parts.append(f"<p>{html.escape(report.summary())}</p>")
        parts.append(_table_html(report.counts))
        if len(report.excluded):
            parts.append("<h3>Excluded files</h3>" + _table_html(report.excluded.head(200)))
        if report.messages:
            parts.append("<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in report.messages) + "</ul>")
    recipe = getattr(learn.dls, "recipe", None)
    if recipe is not None:
        pre = config.preprocessing  # what the exported model does (a detector normalises inside the model)
        parts.append(f"<p>Preprocessing: {pre.size} px, {html.escape(pre.interpolation)} resize, mean "
                     f"{tuple(round(m, 4) for m in pre.mean)}, std {tuple(round(s, 4) for s in pre.std)}; "
                     f"augmentation {html.escape(recipe.aug)!s}; batch size {recipe.bs}.</p>")
    return "\n".join(parts)


def _model_section(learn, config: BundleConfig) -> str:
    spec = learn.spec
    if config.task == "segmentation":
        head = f"{config.task_config.head} decoder"
    elif config.task == "detection":
        head = f"{config.task_config.head} detector over a feature pyramid"
    else:
        head = spec.classifier
    rows = {"name": spec.name, "task": config.task, "source": f"{spec.source} ({spec.arch})", "family": spec.family,
            "weights": spec.weights, "parameters": f"{sum(p.numel() for p in learn.model.parameters()):,}",
            "pre-training input": f"{spec.input_size}, {spec.interpolation}", "head": head}
    return _table_html(pd.DataFrame({"value": rows}))


def _peak_lrs_of_last_fit(history: History) -> list[float] | None:
    """Each layer group's peak rate over the last fit's epochs; ``None`` without one (or after a probe)."""
    rates = [r.lrs for r in history.last_run() if r.lrs]
    if not rates:
        return None
    return [max(group) for group in zip(*rates)]


def _groups_section(learn) -> str:
    table = learn.summary_groups().drop(columns=["lr"], errors="ignore")
    peaks = _peak_lrs_of_last_fit(learn.fit_history)
    if peaks is not None and len(peaks) == len(table):
        table["peak lr (last fit)"] = peaks
    return _table_html(table, digits=8)


def _history_section(learn) -> str:
    history = learn.fit_history
    if len(history) == 0:
        return '<p class="muted">No training yet.</p>'
    table = history.to_frame()
    for column in [c for c in table.columns if c.startswith("lr_")]:  # 3.0e-05, not 0.0000
        table[column] = table[column].map(lambda v: f"{v:.1e}")
    return _figure_html(plot_history(history), "training history") + _table_html(table)


def _lr_section(learn) -> str:
    result = getattr(learn, "lr_find_result", None)
    if result is None:
        return '<p class="muted">The LR finder was not run (learn.lr_find()).</p>'
    shown = ", ".join(f"{k} {v:.2e}" for k, v in result.suggestions.items())
    return f"<p>Suggestions: {html.escape(shown)}.</p>" + _figure_html(result.plot(), "LR finder")


def _classification_sections(interp: Interpretation, top_k: int) -> dict[str, str]:
    warnings_html = "".join(f'<p class="warning">{html.escape(w)}</p>' for w in interp.warnings())
    per_class = _table_html(interp.per_class()) + warnings_html
    confused = interp.most_confused()
    if len(confused):
        per_class += "<h3>Most confused</h3>" + _table_html(confused.head(20))
    return {
        "confusion-matrix": _figure_html(interp.plot_confusion_matrix(), "confusion matrix")
        + _figure_html(interp.plot_confusion_matrix(normalize=True), "row-normalised confusion matrix"),
        "top-losses": _figure_html(interp.plot_top_losses(top_k), "top losses") + _table_html(interp.top_losses(top_k)),
        "per-class": f"<p>{len(interp.losses)} images{_data_name(interp)}, accuracy {interp.accuracy:.4f}.</p>"
        + per_class,
    }


def _data_name(interp) -> str:
    name = getattr(interp, "data_name", None)
    return f" ({html.escape(name)})" if name else ""


REPORT_ALPHAS = (0.05, 0.1, 0.2)  # the error rates the conformal section shows


def _calibration_section(learn, interp: Interpretation) -> str:
    """ECE and reliability diagram of the report's predictions; before and after when the learner is calibrated."""
    if interp.multilabel:
        return '<p class="muted">Calibration error is reported for single-label classifiers.</p>'
    calibration = getattr(learn, "calibration", None)
    before = None
    if calibration is not None and interp.dl is not None:  # the same images through the plain softmax
        probs, targs = learn.get_preds(dl=interp.dl, act=lambda logits: logits.softmax(dim=1))
        before = Interpretation.from_probabilities(probs, targs, interp.vocab)
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
            + _figure_html(interp.plot_calibration(before=before), "reliability diagram"))


def _conformal_section(learn, interp: Interpretation) -> str:
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
    return f"<p>{html.escape(text)}</p>" + _table_html(pd.DataFrame(rows).T.rename_axis("alpha"))


def _diagnosis(learn, interp):
    """The learner's diagnosis; a classifier's reads its calibration from the report's interpretation."""
    if isinstance(interp, Interpretation) and getattr(learn, "task", None) == "classification":
        return learn.diagnose(interp=interp)
    return learn.diagnose()


def _scores_table(scores: dict, names: dict[str, str]) -> str:
    """The scalar `scores` named in `names` (score key -> row name) as a one-column table (counts as integers)."""
    shown = {name: f"{scores[key]:.4f}" if isinstance(scores[key], float) else str(scores[key])
             for key, name in names.items()}
    return _table_html(pd.DataFrame({"value": shown}))


def _segmentation_sections(interp: SegmentationInterpretation, top_k: int) -> dict[str, str]:
    ignored = ("" if interp.ignore_index is None
               else f" Pixels labelled {interp.ignore_index} (ignore_index) are not scored.")
    scores = _scores_table(interp.scores(), {"n_images": "images", "miou": "mean IoU",
                                             "pixel_accuracy": "pixel accuracy", "dice": "mean Dice",
                                             "loss": "loss (cross-entropy per image)"})
    return {
        "scores": scores + "<p>IoU and Dice are over all pixels of the set, at the training resolution; a class "
        f"absent from both truth and prediction has no IoU and is left out of the means.{html.escape(ignored)}</p>",
        "per-class": _table_html(interp.per_class()),
        "confusion-matrix": _figure_html(interp.plot_confusion_matrix(normalize=False), "pixel confusion matrix")
        + _figure_html(interp.plot_confusion_matrix(normalize=True), "row-normalised pixel confusion matrix"),
        "top-losses": _figure_html(interp.plot_top_losses(top_k), "top losses: image, prediction, truth")
        + _table_html(interp.top_losses(top_k)),
    }


def _detection_sections(interp: DetectionInterpretation, top_k: int) -> dict[str, str]:
    scores = _scores_table(interp.scores(), {"n_images": "images", "map50": "mAP@0.5", "map": "mAP@0.5:0.95 (COCO)"})
    if interp.losses is None:
        top_losses = '<p class="muted">Computed without losses (learn.interpret(losses=False)).</p>'
    else:
        top_losses = (_figure_html(interp.plot_top_losses(top_k), "top losses: true and predicted boxes")
                      + _table_html(interp.top_losses(top_k)))
    return {
        "scores": scores + "<p>COCO average precision, equal to pycocotools' figures, on boxes in the pixels of the "
        "resized images the model saw.</p>",
        "per-class": _table_html(interp.per_class()),
        "top-losses": top_losses,
    }


def save_report(learn, path: str | os.PathLike, dl=None, top_k: int = 9, interp=None) -> Path:
    """Write one self-contained HTML file (images embedded as PNG data, no network) about `learn`'s run.

    Predictions on `dl` (``None``: the set ``learn.interpret()`` reads) are computed once for the task's
    sections; pass an interpretation you already have as `interp` to reuse it. The sections are those of
    `SECTIONS` (classification: confusion matrix, top losses, per-class precision, recall and F1, calibration
    error with a reliability diagram, conformal coverage and set sizes),
    `SEGMENTATION_SECTIONS` (mIoU, pixel accuracy and Dice, per-class IoU and Dice, the pixel confusion matrix,
    top losses as image, prediction and truth) or `DETECTION_SECTIONS` (mAP@0.5 and mAP, per-class AP, top
    losses with their boxes), each beside the data, model, layer groups, history, LR finder and diagnosis.

    >>> save_report(learn, "report.html")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    interp = learn.interpret(dl) if interp is None else interp
    if isinstance(interp, SegmentationInterpretation):
        titles, task = SEGMENTATION_SECTIONS, _segmentation_sections(interp, top_k)
    elif isinstance(interp, DetectionInterpretation):
        titles, task = DETECTION_SECTIONS, _detection_sections(interp, top_k)
    else:
        titles, task = SECTIONS, _classification_sections(interp, top_k)
        task |= {"calibration": _calibration_section(learn, interp), "conformal": _conformal_section(learn, interp)}
    config = learn.bundle_config()
    bodies = {
        "data": _data_section(learn, config),
        "model": _model_section(learn, config),
        "layer-groups": _groups_section(learn),
        "history": _history_section(learn),
        "lr-finder": _lr_section(learn),
        **task,
        "diagnosis": f"<pre>{html.escape(str(_diagnosis(learn, interp)))}</pre>",
    }
    body = [_section(key, title, bodies[key]) for key, title in titles.items()]
    title = f"easytransfer run report: {learn.spec.name}"
    doc = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
           f"<title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
           f"<p class=\"muted\">easytransfer {__version__}, {time.strftime('%Y-%m-%d %H:%M')}</p>\n"
           + "\n".join(body) + "\n</body></html>\n")
    return atomic_write_text(path, doc)
