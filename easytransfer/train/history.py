"""Plotting a learner's per-epoch history (``learn.history``)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["metric_columns", "plot_history"]

_NOT_METRICS = {"phase", "epoch", "train_loss", "valid_loss", "train_accuracy", "seconds"}


def metric_columns(history: pd.DataFrame) -> list[str]:
    """The validation metrics in a history table (``accuracy``, ``f1_score`` ...), in column order."""
    return [c for c in history.columns if c not in _NOT_METRICS and not c.startswith("lr_")]


def _phase_spans(history: pd.DataFrame):
    """(phase, first epoch, last epoch) for each run of consecutive rows with the same phase."""
    spans, start = [], 0
    phases = history["phase"].tolist()
    for i in range(1, len(phases) + 1):
        if i == len(phases) or phases[i] != phases[start]:
            spans.append((phases[start], history["epoch"].iloc[start], history["epoch"].iloc[i - 1]))
            start = i
    return spans


def _mark_phases(ax, history: pd.DataFrame):
    for k, (phase, first, last) in enumerate(_phase_spans(history)):
        if k % 2:
            ax.axvspan(first - 0.5, last + 0.5, color="0.93", zorder=0)
        ax.text((first + last) / 2, 1.0, phase, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=8, color="0.35")


def plot_history(history: pd.DataFrame, axes=None, title: str | None = None) -> Figure:
    """Train and valid loss (left) and accuracy / metrics (right) per epoch, with the phases shaded.

    Args:
        history: ``learn.history``.
        axes: two matplotlib axes to draw on (e.g. one row of a grid); a new Figure when omitted.
        title: drawn above the figure (or above the left axes when `axes` are given).

    >>> fig = plot_history(learn.history)  # doctest: +SKIP
    """
    if history is None or len(history) == 0:
        raise ValueError("The history is empty: train first (learn.fit_frozen(3)), then plot.")
    if axes is None:
        fig = Figure(figsize=(11, 4), layout="constrained")
        axes = fig.subplots(1, 2)
        if title:
            fig.suptitle(title)
    else:
        fig = axes[0].figure
        if title:
            axes[0].set_title(title, loc="left", pad=14)
    loss_ax, metric_ax = axes
    epochs = history["epoch"]
    loss_ax.plot(epochs, history["train_loss"], "o-", label="train loss")
    loss_ax.plot(epochs, history["valid_loss"], "o-", label="valid loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    if "train_accuracy" in history and history["train_accuracy"].notna().any():
        metric_ax.plot(epochs, history["train_accuracy"], "o--", label="train accuracy (augmented batches)")
    for name in metric_columns(history):
        metric_ax.plot(epochs, history[name], "o-", label=f"valid {name}")
    metric_ax.set_xlabel("epoch")
    metric_ax.set_ylabel("metric")
    metric_ax.legend()
    for ax in axes:
        _mark_phases(ax, history)
        ax.set_xticks(list(epochs))
    return fig
