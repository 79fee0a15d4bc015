"""Bad input and slow starts found by issue 19's probe (defects 8-13 and 15): each case failed before its fix."""

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


# ------------------------------------------------------------------------------ 15: start-up without torch


HEAVY = ("torch", "fastai", "timm", "torchvision", "pandas")


def test_help_and_argument_errors_do_not_import_torch(tmp_path):
    code = ("import sys\nfrom easytransfer.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['train', 'x', '--bs', '0'], ['predict', '--nope']):\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        print('exit', e.code)\n"
            f"print('heavy', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = _python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    exits = [line for line in done.stdout.splitlines() if line.startswith("exit ")]
    assert exits == ["exit 0", "exit 0", "exit 2", "exit 2"] and "heavy []" in done.stdout, done.stdout


def test_import_easytransfer_is_light_and_emits_no_warning(tmp_path):
    done = _python("import sys, easytransfer\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))",
                   "-W", "error::FutureWarning", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


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
