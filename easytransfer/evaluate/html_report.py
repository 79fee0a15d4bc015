"""A self-contained HTML run report: data, model, layer groups, history, LR finder, the task's sections, diagnosis.

One report for every task. The sections every run has (`LEADING_SECTIONS`: data, model, layer groups, history,
LR finder; `CLOSING_SECTIONS`: diagnosis) are built here from the learner; the task's own sections (scores,
per-class table, confusion matrix, top losses ...) come from its interpretation's ``report_sections`` (the
`TaskInterpretation` protocol), written in the task's folder with the helpers below (`figure_html`,
`table_html`, `scores_table`). This module knows no task.
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

from ..files import atomic_write_text
from ..version import __version__
from .interpretation import ReportSection, TaskInterpretation

__all__ = ["CLOSING_SECTIONS", "LEADING_SECTIONS", "data_name", "figure_html", "report_titles", "save_report",
           "scores_table", "table_html"]

LEADING_SECTIONS = {  # every report's first sections, built from the learner
    "data": "Data",
    "model": "Model",
    "layer-groups": "Layer groups and learning rates",
    "history": "Training history",
    "lr-finder": "Learning-rate finder",
}
CLOSING_SECTIONS = {"diagnosis": "Diagnosis"}  # and its last


def report_titles(task_titles: dict[str, str]) -> dict[str, str]:
    """Every section of a report whose task adds `task_titles` (key -> title), in page order.

    >>> list(report_titles({"scores": "Scores"}))
    ['data', 'model', 'layer-groups', 'history', 'lr-finder', 'scores', 'diagnosis']
    """
    return {**LEADING_SECTIONS, **task_titles, **CLOSING_SECTIONS}


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


def figure_html(fig: Figure, alt: str) -> str:
    """`fig` as an embedded PNG (no file, no network) in a box that scrolls on a narrow screen; `alt`: its text.

    >>> figure_html(Figure(figsize=(1, 1)), "empty").startswith('<div class="figure"><img alt="empty"')
    True
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<div class="figure"><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></div>'


def table_html(df: pd.DataFrame, digits: int = 4) -> str:
    """`df` as an HTML table rounded to `digits`, in a box that scrolls sideways on a narrow screen.

    >>> table_html(pd.DataFrame({"a": [0.123456]})).count("<table")
    1
    """
    # a wide table scrolls inside its own box on a narrow screen instead of making the whole page scroll
    return f'<div class="table-scroll">{df.round(digits).to_html(border=0, na_rep="")}</div>'


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _data_section(learn, config) -> str:  # config: the learner's BundleConfig
    report = getattr(learn.dls, "report", None)
    parts = [f"<p>{len(learn.dls.train_ds)} training and {len(learn.dls.valid_ds)} validation images; classes: "
             f"{html.escape(', '.join(map(str, learn.dls.vocab)))}.</p>"]
    if report is not None:
        parts.append(f"<p>{html.escape(report.summary())}</p>")
        parts.append(table_html(report.counts))
        if len(report.excluded):
            parts.append("<h3>Excluded files</h3>" + table_html(report.excluded.head(200)))
        if report.messages:
            parts.append("<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in report.messages) + "</ul>")
    recipe = getattr(learn.dls, "recipe", None)
    if recipe is not None:
        pre = config.preprocessing  # what the exported model does (a detector normalises inside the model)
        parts.append(f"<p>Preprocessing: {pre.size} px, {html.escape(pre.interpolation)} resize, mean "
                     f"{tuple(round(m, 4) for m in pre.mean)}, std {tuple(round(s, 4) for s in pre.std)}; "
                     f"augmentation {html.escape(recipe.aug)!s}; batch size {recipe.bs}.</p>")
    return "\n".join(parts)


def _model_section(learn, config, head: str) -> str:
    spec = learn.spec
    rows = {"name": spec.name, "task": config.task, "source": f"{spec.source} ({spec.arch})", "family": spec.family,
            "weights": spec.weights, "parameters": f"{sum(p.numel() for p in learn.model.parameters()):,}",
            "pre-training input": f"{spec.input_size}, {spec.interpolation}", "head": head}
    return table_html(pd.DataFrame({"value": rows}))


def _peak_lrs_of_last_fit(history) -> list[float] | None:  # history: the learner's History
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
    return table_html(table, digits=8)


def _history_section(learn) -> str:
    history = learn.fit_history
    if len(history) == 0:
        return '<p class="muted">No training yet.</p>'
    table = history.to_frame()
    for column in [c for c in table.columns if c.startswith("lr_")]:  # 3.0e-05, not 0.0000
        table[column] = table[column].map(lambda v: f"{v:.1e}")
    return figure_html(learn.plot_history(), "training history") + table_html(table)


def _lr_section(learn) -> str:
    result = getattr(learn, "lr_find_result", None)
    if result is None:
        return '<p class="muted">The LR finder was not run (learn.lr_find()).</p>'
    shown = ", ".join(f"{k} {v:.2e}" for k, v in result.suggestions.items())
    return f"<p>Suggestions: {html.escape(shown)}.</p>" + figure_html(result.plot(), "LR finder")


def data_name(interp) -> str:
    """`` (name)`` of the labelled set an interpretation read (``interp.data_name``), or ``""``.

    >>> data_name(object())
    ''
    """
    name = getattr(interp, "data_name", None)
    return f" ({html.escape(name)})" if name else ""


def scores_table(scores: dict, names: dict[str, str]) -> str:
    """The scalar `scores` named in `names` (score key -> row name) as a one-column table (counts as integers).

    >>> "0.5000" in scores_table({"miou": 0.5}, {"miou": "mean IoU"})
    True
    """
    shown = {name: f"{scores[key]:.4f}" if isinstance(scores[key], float) else str(scores[key])
             for key, name in names.items()}
    return table_html(pd.DataFrame({"value": shown}))


def save_report(learn, path: str | os.PathLike, dl=None, top_k: int = 9, interp=None) -> Path:
    """Write one self-contained HTML file (images embedded as PNG data, no network) about `learn`'s run.

    Predictions on `dl` (``None``: the set ``learn.interpret()`` reads) are computed once for the task's
    sections; pass an interpretation you already have as `interp` to reuse it. The page holds the data, model,
    layer groups, history and LR finder (`LEADING_SECTIONS`), the task's sections (its interpretation's
    ``report_sections``: a classifier's confusion matrix, top losses, per-class table, calibration and conformal
    sets; a segmentation model's mIoU, Dice and pixel confusion matrix; a detector's mAP and per-class AP), and
    the diagnosis (`CLOSING_SECTIONS`). Each task's ``report`` module lists its page's ``SECTIONS``.

    Args:
        learn: the learner; path: the HTML file (replaced atomically); dl: the labelled images to interpret.
        top_k: how many images the top-losses sections show; interp: an interpretation to reuse.

    Returns:
        The file's path.

    >>> save_report(learn, "report.html")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    interp = learn.interpret(dl) if interp is None else interp
    if not isinstance(interp, TaskInterpretation):
        raise TypeError(f"save_report needs a TaskInterpretation (learn.interpret(): scores, per_class, "
                        f"plot_top_losses, report_sections); got a {type(interp).__name__}.")
    config = learn.bundle_config()
    leading = {
        "data": _data_section(learn, config),
        "model": _model_section(learn, config, learn.describe_head()),
        "layer-groups": _groups_section(learn),
        "history": _history_section(learn),
        "lr-finder": _lr_section(learn),
    }
    sections = [ReportSection(key, LEADING_SECTIONS[key], body) for key, body in leading.items()]
    sections += interp.report_sections(top_k, learn)
    sections.append(ReportSection("diagnosis", CLOSING_SECTIONS["diagnosis"],
                                  f"<pre>{html.escape(str(learn.diagnose(interp=interp)))}</pre>"))
    body = [_section(s.key, s.title, s.html) for s in sections]
    title = f"easytransfer run report: {learn.spec.name}"
    doc = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
           f"<title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
           f"<p class=\"muted\">easytransfer {__version__}, {time.strftime('%Y-%m-%d %H:%M')}</p>\n"
           + "\n".join(body) + "\n</body></html>\n")
    return atomic_write_text(path, doc)
