"""Tests of easytransfer/progress.py (moved here from the history-named test files: faults, student, contracts ...)."""




























from __future__ import annotations


def test_notebook_progress_bars_have_their_widgets():
    """tqdm.auto (imported by huggingface_hub, through timm) warns "IProgress not found" in Jupyter without
    ipywidgets; it is installed with easytransfer."""
    from tqdm.notebook import IProgress

    assert IProgress is not None
