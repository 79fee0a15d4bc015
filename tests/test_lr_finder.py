"""Tests of easytransfer/train/lr_finder.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from easytransfer.train.lr_finder import LRFinderResult, _suggest


def test_lr_finder_legend_shows_the_suggestions_and_the_x_label_fits():
    lrs = np.geomspace(1e-7, 10, 100)
    losses = 2 - np.exp(-((np.log10(lrs) + 1.5) ** 2)) + np.where(lrs > 0.3, (lrs - 0.3) * 5, 0)
    suggestions, points = _suggest(lrs, losses, 100)
    result = LRFinderResult(lrs, losses, suggestions, points)
    fig = result.plot()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"{name}: {value:.1e}" for name, value in suggestions.items()]
    assert "minimum" in suggestions
    FigureCanvasAgg(fig).draw()
    label_box = fig.axes[0].xaxis.label.get_window_extent()
    assert label_box.y0 >= 0  # inside the figure, not clipped at its bottom
