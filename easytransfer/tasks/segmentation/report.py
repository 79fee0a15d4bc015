"""The segmentation sections of the HTML run report: mIoU, pixel accuracy and Dice, per-class table, the pixel
confusion matrix and the top losses (`SegmentationInterpretation.report_sections` gives them to `save_report`)."""

from __future__ import annotations

import html

from ...evaluate.html_report import figure_html, report_titles, scores_table, table_html
from ...evaluate.interpretation import ReportSection, TaskInterpretation

__all__ = ["SECTIONS", "TASK_SECTIONS", "segmentation_sections"]

TASK_SECTIONS = {
    "scores": "Mean IoU, pixel accuracy and Dice",
    "per-class": "Per-class IoU, Dice, precision and recall",
    "confusion-matrix": "Pixel confusion matrix",
    "top-losses": "Top losses: image, prediction, truth",
}
SECTIONS = report_titles(TASK_SECTIONS)  # the segmentation report, in page order


def segmentation_sections(interp: TaskInterpretation, top_k: int) -> list[ReportSection]:
    """The segmentation report sections (`TASK_SECTIONS`) of `interp`, with `top_k` images in the top losses.

    >>> [s.key for s in segmentation_sections(learn.interpret(), 4)]  # doctest: +SKIP
    ['scores', 'per-class', 'confusion-matrix', 'top-losses']
    """
    bodies = _sections(interp, top_k)
    return [ReportSection(key, title, bodies[key]) for key, title in TASK_SECTIONS.items()]


def _sections(interp: TaskInterpretation, top_k: int) -> dict[str, str]:
    ignored = ("" if interp.ignore_index is None
               else f" Pixels labelled {interp.ignore_index} (ignore_index) are not scored.")
    scores = scores_table(interp.scores(), {"n_images": "images", "miou": "mean IoU",
                                             "pixel_accuracy": "pixel accuracy", "dice": "mean Dice",
                                             "loss": "loss (cross-entropy per image)"})
    return {
        "scores": scores + "<p>IoU and Dice are over all pixels of the set, at the training resolution; a class "
        f"absent from both truth and prediction has no IoU and is left out of the means.{html.escape(ignored)}</p>",
        "per-class": table_html(interp.per_class()),
        "confusion-matrix": figure_html(interp.plot_confusion_matrix(normalize=False), "pixel confusion matrix")
        + figure_html(interp.plot_confusion_matrix(normalize=True), "row-normalised pixel confusion matrix"),
        "top-losses": figure_html(interp.plot_top_losses(top_k), "top losses: image, prediction, truth")
        + table_html(interp.top_losses(top_k)),
    }
