"""Tests of easytransfer/progress.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import io
import sys


def test_notebook_progress_bars_have_their_widgets():
    """tqdm.auto (imported by huggingface_hub, through timm) warns "IProgress not found" in Jupyter without
    ipywidgets; it is installed with easytransfer."""
    from tqdm.notebook import IProgress

    assert IProgress is not None


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_only_where_it_can_be_seen(monkeypatch):
    from easytransfer.progress import progress_bar, show_progress

    items = [1, 2, 3]
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # piped: results stay clean, no bar
    assert not show_progress() and progress_bar(items) is items
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert show_progress()
    bar = progress_bar(items, comment="predicting")
    assert bar is not items and list(bar) == items and "predicting" in sys.stderr.getvalue()
    assert progress_bar(items, enabled=False) is items
