"""Tests of easytransfer/__init__.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import ast

import pytest
from helpers import ROOT, python_in_checkout

import easytransfer


def test_import_easytransfer_is_light_and_emits_no_warning(tmp_path):
    code = "import sys, easytransfer\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    done = python_in_checkout(code, "-W", "error::FutureWarning", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


@pytest.mark.slow  # a fresh interpreter that loads torch and fastai: ~6 s on 2 idle cores
def test_public_names_load_without_a_future_warning(tmp_path):
    code = ("from easytransfer import ImageData, transfer_learner, load_model, Interpretation\n"
            "import easytransfer.train.learner, easytransfer.cli.demo\nprint('ok')")
    done = python_in_checkout(code, "-W", "error::FutureWarning", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_every_public_name_resolves_and_the_type_checking_block_agrees():
    for name in easytransfer.PUBLIC_NAMES:
        assert getattr(easytransfer, name) is not None
    tree = ast.parse((ROOT / "easytransfer" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If))
    typed = {alias.asname: "." * node.level + node.module for node in block.body for alias in node.names}
    assert typed == easytransfer.PUBLIC_NAMES
    with pytest.raises(AttributeError, match="no attribute 'ImageDta'"):
        easytransfer.ImageDta  # noqa: B018
    assert easytransfer.models.block_layer_groups is not None  # sub-packages load on first use too
