"""Argument types shared by the ``easytransfer`` subcommands."""

from __future__ import annotations

import argparse

__all__ = ["non_negative_int", "positive_int"]


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
