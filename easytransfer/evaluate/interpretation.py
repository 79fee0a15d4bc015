"""The protocol every task's interpretation follows: predictions on labelled images computed once, read by tables,
plots, the HTML report and the command line without knowing the task.

``learn.interpret()`` and ``predictor.interpret(...)`` give one for every task (classification's
``Interpretation``, ``SegmentationInterpretation``, ``DetectionInterpretation``). Shared code asks it for its
scores, its per-class table, its worst images and its report sections; it never asks which task it is.

>>> from easytransfer.evaluate.interpretation import ReportSection
>>> ReportSection("scores", "Scores", "<p>0.9</p>").key
'scores'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["ReportSection", "TaskInterpretation"]


@dataclass(frozen=True)
class ReportSection:
    """One section of the HTML run report.

    Attributes:
        key: the section's ``id`` in the page (``"per-class"``); title: its heading; html: its body.
    """

    key: str
    title: str
    html: str


@runtime_checkable
class TaskInterpretation(Protocol):
    """What every task's interpretation answers (its predictions are computed once, when it is built).

    >>> isinstance(learn.interpret(), TaskInterpretation)  # doctest: +SKIP
    True
    """

    def scores(self) -> dict:
        """The task's scores (``learn.evaluate()``'s dict: accuracy, mIoU, mAP ...)."""
        ...

    def per_class(self) -> pd.DataFrame:
        """One row per class with the task's per-class measures."""
        ...

    def plot_top_losses(self, k: int) -> Figure:
        """The `k` images the model does worst on, with what it predicted."""
        ...

    def report_sections(self, top_k: int, learn=None) -> list[ReportSection]:
        """The task's own sections of the HTML report, in order (`learn`: the learner, for what only it knows)."""
        ...
