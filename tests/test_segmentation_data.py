"""Tests of easytransfer/tasks/segmentation/data.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import pytest

from easytransfer import SegmentationData


def test_segmentation_batch_size_zero_is_refused():
    with pytest.raises(ValueError, match="bs .batch size. must be a whole number of at least 1, got 0"):
        SegmentationData.from_folders("images", "masks", bs=0)
