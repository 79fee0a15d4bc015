"""Tests of easytransfer/__init__.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import easytransfer

ROOT = Path(easytransfer.__file__).resolve().parent.parent


def _python(code: str, *flags: str, cwd: Path) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter that imports this checkout's easytransfer."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "LD_PRELOAD")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["EASYTRANSFER_ALLOCATOR"] = "system"
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def test_import_easytransfer_is_light_and_emits_no_warning(tmp_path):
    done = _python("import sys, easytransfer\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))",
                   "-W", "error::FutureWarning", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


@pytest.mark.slow  # a fresh interpreter that loads torch and fastai: ~6 s on 2 idle cores
def test_public_names_load_without_a_future_warning(tmp_path):
    done = _python("from easytransfer import ImageData, transfer_learner, load_model, Interpretation\n"
                   "import easytransfer.train.learner, easytransfer.cli.demo\nprint('ok')",
                   "-W", "error::FutureWarning", cwd=tmp_path)
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
