"""easytransfer/choices.py: the names a user picks from, torch-free, agree with the modules that build them."""

from __future__ import annotations

import subprocess
import sys

from easytransfer import choices


def test_head_names_are_the_heads_the_task_modules_build():
    from easytransfer import detection_heads, segmentation_heads
    from easytransfer.tasks.detection.model import DETECTION_HEADS
    from easytransfer.tasks.segmentation.model import SEGMENTATION_HEADS

    assert tuple(h.head for h in detection_heads()) == choices.DETECTION_HEADS == tuple(DETECTION_HEADS)
    assert {h.head for h in segmentation_heads()} == set(choices.SEGMENTATION_HEADS) == set(SEGMENTATION_HEADS)


def test_augmentation_presets_are_the_presets_data_builds():
    from easytransfer.data.augment import AUG_PRESETS

    assert tuple(AUG_PRESETS) == choices.AUG_PRESETS == ("none", "flips", "light", "strong")


def test_importing_the_choices_loads_no_torch():
    code = "import sys, easytransfer.choices; print(sorted(m for m in ('torch', 'fastai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
