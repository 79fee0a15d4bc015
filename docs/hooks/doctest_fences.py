"""mkdocs hook: the bare ``>>>`` examples of our docstrings and pages render as Python console code blocks.

Our docstrings show a call as doctest lines right after the summary (they run in the test suite); Markdown
would read ``>>>`` as three nested quotes. This adds one Markdown preprocessor, used for the pages and for the
docstrings mkdocstrings renders, that fences each run of ``>>>`` lines and their output as ``pycon`` and drops
the ``# doctest: +SKIP``-style flags a reader does not need.
"""

from __future__ import annotations

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority

_FLAGS = re.compile(r"\s*#\s*doctest:.*$")


def fence_doctests(lines: list[str]) -> list[str]:
    """`lines` with each run of ``>>>`` lines (and the output lines after them) fenced as ``pycon``.

    >>> fence_doctests([">>> 1 + 1  # doctest: +SKIP", "2", "", "text"])
    ['```pycon', '>>> 1 + 1', '2', '```', '', 'text']
    """
    out: list[str] = []
    in_fence = in_example = False
    indent = ""
    for line in lines:
        stripped = line.lstrip()
        if in_example and (not stripped or not line.startswith(indent)):
            out.append(f"{indent}```")
            in_example = False
        if stripped.startswith(("```", "~~~")) and not in_example:
            in_fence = not in_fence
        elif not in_fence and not in_example and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            in_example = True
        out.append(_FLAGS.sub("", line) if in_example else line)
    if in_example:
        out.append(f"{indent}```")
    return out


class _DoctestFencePreprocessor(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        return fence_doctests(lines)


class DoctestFenceExtension(Extension):
    """Registers the preprocessor before the fenced-code one, so the fences it adds are read as code."""

    def extendMarkdown(self, md) -> None:  # noqa: N802 (Python-Markdown's name)
        md.preprocessors.register(_DoctestFencePreprocessor(md), "doctest_fences", 40)


@event_priority(100)  # before mkdocstrings keeps a reference to the extension list
def on_config(config):
    config.markdown_extensions.append(DoctestFenceExtension())
    return config
