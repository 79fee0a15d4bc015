"""Tests of easytransfer/cli/main.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import easytransfer
from easytransfer.cli import COMMANDS, build_parser, main

ROOT = Path(easytransfer.__file__).resolve().parent.parent


def _python(code: str, *flags: str, cwd: Path) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter that imports this checkout's easytransfer."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "LD_PRELOAD")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["EASYTRANSFER_ALLOCATOR"] = "system"
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


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


def _registered_commands() -> set[str]:
    # argparse has no public accessor for the sub-commands: read the sub-parsers action of the parser
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return set(actions[0].choices)


def test_every_registered_command_has_a_handler_and_every_handler_a_command():
    assert _registered_commands() == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_exits_0_and_prints_its_usage(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith(f"usage: easytransfer {command}")
