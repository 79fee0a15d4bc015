"""Argument types shared by the ``easytransfer`` subcommands."""

from __future__ import annotations

import argparse
import math

__all__ = ["TASKS", "learning_rate", "name_list", "non_negative_int", "positive_int"]

TASKS = ("classification", "segmentation", "detection")


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


def name_list(text: str) -> list[str]:
    """Comma-separated names (class names in id order), for argparse's ``type=``.

    >>> name_list("background, crack")
    ['background', 'crack']
    """
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names such as 'background,crack', got {text!r}")
    return names
