"""easytransfer/cli/arguments.py: the argument types of the subcommands, and the tasks `--task` offers."""

from __future__ import annotations

import argparse

import pytest

from easytransfer.cli.arguments import learning_rate, name_list, non_negative_int, positive_int, task_names
from easytransfer.tasks import available_tasks


def test_task_choices_are_the_registered_tasks():
    assert set(task_names()) == {task.name for task in available_tasks()}


def test_values_that_parse():
    assert positive_int("3") == 3 and non_negative_int("0") == 0
    assert learning_rate("find") == "find" and learning_rate("1e-3") == 1e-3
    assert name_list(" bg , crack ") == ["bg", "crack"]


@pytest.mark.parametrize(("parse", "text", "match"), [
    (positive_int, "0", "at least 1, got 0"),
    (non_negative_int, "-1", "0 or more, got -1"),
    (learning_rate, "abc", "expected a number such as 1e-3, or 'find'"),
    (learning_rate, "0", "must be a positive number"),
    (learning_rate, "inf", "must be a positive number"),
    (name_list, "bg,,crack", "comma-separated names"),
])
def test_bad_values_say_what_is_expected(parse, text, match):
    with pytest.raises(argparse.ArgumentTypeError, match=match):
        parse(text)
