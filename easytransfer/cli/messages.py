"""Error messages in the command line's words: flags (``--weights FILE``, ``--fn-col``) and commands
(``easytransfer models``) instead of the Python arguments and functions the library's messages name."""

from __future__ import annotations

from ..errors import MissingColumnError, UnknownModelError, WeightsUnavailableError

__all__ = ["cli_message"]


def cli_message(exc: BaseException) -> str:
    """The one-line message a command-line user reads for `exc`.

    >>> print(cli_message(UnknownModelError("efficientnet_lite7", ["efficientnet_lite0"])))  # doctest: +ELLIPSIS
    Unknown architecture 'efficientnet_lite7'. Closest known names: efficientnet_lite0. See ... easytransfer models ...
    """
    if isinstance(exc, UnknownModelError):
        hint = f" Closest known names: {', '.join(exc.close_matches)}." if exc.close_matches else ""
        return (f"Unknown architecture {exc.name!r}.{hint} See what is available with: easytransfer models "
                "'*pattern*' (e.g. easytransfer models '*lite*').")
    if isinstance(exc, WeightsUnavailableError):
        tried = "; ".join(f"{source}: {reason}" for source, reason in exc.tried)
        way_out = exc.fix or "give a local file with --weights FILE (.safetensors, .pth or .pt)"
        return (f"No pre-trained weights could be loaded for {exc.arch!r} (tried {tried}). To fix it: connect to "
                f"the internet once (weights are cached afterwards), or {way_out}, or add --random-init to start "
                "from random weights.")
    if isinstance(exc, MissingColumnError):
        return (f"Column {exc.column!r} is not in {exc.source}; its columns are {exc.columns}. Name the right ones "
                "with --fn-col (the image files) and --label-col (the labels).")
    return " ".join(str(exc).split("\n"))
