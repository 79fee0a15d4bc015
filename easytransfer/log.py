"""easytransfer's own messages go through `logging`, to the ``"easytransfer"`` logger.

They say what the library did on its own: restored the best epoch, kept the frozen stage, stopped on a NaN
loss, used the LR finder's suggestion. By default they show, one line each, on standard error (in a notebook:
under the cell); results stay alone on standard output. To silence them:

>>> import logging
>>> logging.getLogger("easytransfer").setLevel(logging.WARNING)
>>> logging.getLogger("easytransfer").setLevel(logging.INFO)  # and back
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["get_logger", "messages_off"]

ROOT = "easytransfer"


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (Jupyter and pytest replace it after import)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property always reads sys.stderr
        pass


def _configure_root() -> logging.Logger:
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _CurrentStderrHandler) for h in root.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False  # one copy of each message, even when the application configured the root logger
    return root


_configure_root()


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name` (pass ``__name__``), under the ``"easytransfer"`` logger.

    >>> get_logger("easytransfer.train.learner").getEffectiveLevel() == logging.INFO
    True
    """
    return logging.getLogger(name)


@contextmanager
def messages_off() -> Iterator[None]:
    """A block in which easytransfer's informational messages are not shown (warnings and errors still are):
    what the ranks other than 0 of a distributed run use, so that each message shows once.

    >>> with messages_off():
    ...     get_logger("easytransfer.train").info("not shown")
    """
    root = logging.getLogger(ROOT)
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)
