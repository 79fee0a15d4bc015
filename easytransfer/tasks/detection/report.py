"""The detection sections of the HTML run report: mAP@0.5 and mAP@0.5:0.95, per-class AP and the top losses with
their boxes (`DetectionInterpretation.report_sections` gives them to `save_report`)."""

from __future__ import annotations

from ...evaluate.html_report import figure_html, report_titles, scores_table, table_html
from ...evaluate.interpretation import ReportSection, TaskInterpretation

__all__ = ["SECTIONS", "TASK_SECTIONS", "detection_sections"]

TASK_SECTIONS = {
    "scores": "mAP@0.5 and mAP@0.5:0.95",
    "per-class": "Per-class average precision",
    "top-losses": "Top losses: true boxes (green), predictions (red)",
}
SECTIONS = report_titles(TASK_SECTIONS)  # the detection report, in page order


def detection_sections(interp: TaskInterpretation, top_k: int) -> list[ReportSection]:
    """The detection report sections (`TASK_SECTIONS`) of `interp`, with `top_k` images in the top losses.

    >>> [s.key for s in detection_sections(learn.interpret(), 4)]  # doctest: +SKIP
    ['scores', 'per-class', 'top-losses']
    """
    bodies = _sections(interp, top_k)
    return [ReportSection(key, title, bodies[key]) for key, title in TASK_SECTIONS.items()]


def _sections(interp: TaskInterpretation, top_k: int) -> dict[str, str]:
    shown = {"n_images": "images", "map50": "mAP@0.5", "map": "mAP@0.5:0.95 (COCO)",
             "mask_map50": "mask mAP@0.5", "mask_map": "mask mAP@0.5:0.95 (COCO segm)"}
    values = interp.scores()
    scores = scores_table(values, {key: name for key, name in shown.items() if key in values})
    if interp.losses is None:
        top_losses = '<p class="muted">Computed without losses (learn.interpret(losses=False)).</p>'
    else:
        top_losses = (figure_html(interp.plot_top_losses(top_k), "top losses: true and predicted boxes")
                      + table_html(interp.top_losses(top_k)))
    return {
        "scores": scores + "<p>COCO average precision, equal to pycocotools' figures, on boxes in the pixels of the "
        "resized images the model saw.</p>",
        "per-class": table_html(interp.per_class()),
        "top-losses": top_losses,
    }
