"""Tests of easytransfer/cli/main.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import argparse

import pytest
from helpers import python_in_checkout

from easytransfer.cli import COMMANDS, build_parser, main

HEAVY = ("torch", "fastai", "timm", "torchvision", "pandas")


def test_help_and_argument_errors_do_not_import_torch(tmp_path):
    code = ("import sys\nfrom easytransfer.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['train', 'x', '--bs', '0'], ['predict', '--nope']):\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        print('exit', e.code)\n"
            f"print('heavy', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = python_in_checkout(code, cwd=tmp_path)
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
