"""Argument types and task look-ups shared by the ``easytransfer`` subcommands.

The tasks, their defaults and their command-line modules come from the task registry (torch-free records):
`task_names` for ``--task``, `task_cli` for the module that adds a task's flags and runs its part.
"""

from __future__ import annotations

import argparse
import importlib
import math
from types import ModuleType

from ..tasks.command_line import name_list as name_list  # kept importable from here
from ..tasks.registry import available_tasks, get_task

__all__ = ["flag", "learning_rate", "name_list", "non_negative_int", "positive_int", "task_cli", "task_names"]


def task_names() -> tuple[str, ...]:
    """The registered tasks' names, for ``--task`` (the first is the default).

    >>> task_names()[0]
    'classification'
    """
    return tuple(task.name for task in available_tasks())


def task_cli(name: str) -> ModuleType:
    """The command-line module of task `name` (its registry record's ``cli``), imported on first use.

    >>> task_cli("segmentation").__name__
    'easytransfer.tasks.segmentation.cli'
    """
    return importlib.import_module(get_task(name).cli)


def flag(dest: str) -> str:
    """The flag of an argparse destination: ``flag("ignore_index") == "--ignore-index"``.

    >>> flag("ignore_index")
    '--ignore-index'
    """
    return "--" + dest.replace("_", "-")


def positive_int(text: str) -> int:
    """An integer of at least 1, for argparse's ``type=``.

    >>> positive_int("3")
    3
    """
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of 0 or more, for argparse's ``type=``.

    >>> non_negative_int("0")
    0
    """
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def learning_rate(text: str) -> float | str:
    """A positive learning rate, or ``"find"`` (run the LR finder), for argparse's ``type=``.

    >>> learning_rate("3e-3"), learning_rate("find")
    (0.003, 'find')
    """
    if text == "find":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1e-3, or 'find'; got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number such as 1e-3, got {text!r}")
    return value
