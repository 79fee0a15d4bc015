"""``easytransfer models`` and ``describe``: the commands that tell what architectures there are."""

from __future__ import annotations

__all__ = ["HANDLERS", "add_parsers"]


def add_parsers(commands) -> None:
    """Add ``models`` and ``describe`` to `commands` (the sub-parsers of `build_parser`)."""
    models = commands.add_parser("models", help="list architecture names", description="List the architecture "
                                 "names easytransfer accepts, filtered by a shell-style pattern.")
    models.add_argument("pattern", nargs="?", default="*", help="e.g. '*convnext*' (default all)")
    models.add_argument("--offline", action="store_true", help="only those whose weights are on this machine")

    describe = commands.add_parser("describe", help="facts about an architecture", description="Print an "
                                   "architecture's source, preprocessing, size and notes.")
    describe.add_argument("arch")


def _models(args) -> None:
    from ..models.factory import list_models

    names = list_models(args.pattern, offline_only=args.offline)
    print("\n".join(names) if names else f"no architecture matches {args.pattern!r}")


def _describe(args) -> None:
    from ..models.factory import describe_model

    describe_model(args.arch)


HANDLERS = {"models": _models, "describe": _describe}
