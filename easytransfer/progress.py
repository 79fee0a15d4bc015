"""Progress bars that never mix with results: fastprogress's in a notebook, tqdm on standard error in a terminal,
none otherwise (output piped to a file or another program stays clean)."""

from __future__ import annotations

import sys
from collections.abc import Iterable

__all__ = ["progress_bar", "show_progress"]


def show_progress() -> bool:
    """Whether a bar can be seen: in a notebook, or when standard error is a terminal.

    >>> import sys; show_progress() == (sys.stderr.isatty() or _in_notebook())
    True
    """
    return _in_notebook() or _stderr_is_terminal()


def progress_bar(items: Iterable, *, total: int | None = None, comment: str = "", enabled: bool = True) -> Iterable:
    """`items`, wrapped in a progress bar when one can be seen (`show_progress`) and `enabled`.

    In a notebook: fastprogress's HTML bar; in a terminal: tqdm writing to standard error (results on standard
    output stay one line each); otherwise `items` unchanged.

    >>> list(progress_bar(range(3), enabled=False))
    [0, 1, 2]
    """
    if not enabled:
        return items
    if _in_notebook():
        from fastprogress.fastprogress import progress_bar as notebook_bar

        bar = notebook_bar(items, total=total, leave=False)
        bar.comment = comment
        return bar
    if _stderr_is_terminal():
        from tqdm import tqdm

        return tqdm(items, total=total, desc=comment or None, leave=False, file=sys.stderr)
    return items


def _in_notebook() -> bool:
    from fastprogress.fastprogress import IN_NOTEBOOK

    return bool(IN_NOTEBOOK)


def _stderr_is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())
