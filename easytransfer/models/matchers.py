"""Group matchers in timm's form, checked when they are written rather than when a model is split.

A group matcher is an ordered dict from a group name to either a regex over parameter names (``r"^layer(\\d+)"``:
the captured numbers order the groups) or a list of ``(regex, suffix)`` pairs, where `suffix` is ``None`` or a
tuple of ints appended to the group's ordinal; ``(99999,)`` joins the previous group. This is what
``timm.models.group_parameters`` takes and what every timm model's ``group_matcher(coarse=True)`` returns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping

import timm.models
from torch import nn

__all__ = ["MATCH_PREVIOUS", "matcher_stages", "validate_matcher"]

MATCH_PREVIOUS = (99999,)  # timm's MATCH_PREV_GROUP: a suffix that joins the group before


def _check_regex(entry: str, where: str, regex) -> None:
    if not isinstance(regex, str):
        raise ValueError(f"Group matcher entry {entry!r}: {where} is {regex!r}, not a regex string.")
    try:
        re.compile(regex)
    except re.error as exc:
        raise ValueError(f"Group matcher entry {entry!r}: {where} {regex!r} does not compile ({exc}).") from None


def _check_pair(entry: str, i: int, pair) -> None:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        hint = ""
        if isinstance(pair, str):
            hint = f" To give one regex with a suffix, write [({pair!r}, (99999,))], a list holding one pair."
        raise ValueError(f"Group matcher entry {entry!r}: item {i} is {pair!r}, not a (regex, suffix) pair.{hint}")
    regex, suffix = pair
    _check_regex(entry, f"item {i}'s regex", regex)
    if suffix is not None and not (isinstance(suffix, tuple) and all(isinstance(s, int) for s in suffix)):
        raise ValueError(f"Group matcher entry {entry!r}: item {i}'s suffix is {suffix!r}; use None or a tuple of "
                         "ints such as (99999,) (join the previous group).")


def validate_matcher(matcher: Mapping) -> dict:
    """Check a group matcher in timm's form and return it as a plain dict; `ValueError` names the bad entry.

    Args:
        matcher: group name -> ``None``, a regex string, or a list of ``(regex, None | tuple of ints)`` pairs.

    Returns:
        The same entries, as a dict (in their order).

    >>> validate_matcher({"stem": r"^conv1", "blocks": [(r"^layer(\\d+)", None), (r"^norm", (99999,))]})["stem"]
    '^conv1'
    >>> validate_matcher({"norm": (r"^norm", (99999,))})
    Traceback (most recent call last):
    ...
    ValueError: Group matcher entry 'norm': item 0 is '^norm', not a (regex, suffix) pair. To give one regex with \
a suffix, write [('^norm', (99999,))], a list holding one pair.
    """
    if not isinstance(matcher, Mapping) or not matcher:
        raise ValueError(f"A group matcher is a non-empty dict of group name -> regex, got {matcher!r}.")
    for entry, spec in matcher.items():
        if spec is None:
            continue
        if isinstance(spec, str):
            _check_regex(entry, "the regex", spec)
        elif isinstance(spec, (tuple, list)) and spec:
            for i, pair in enumerate(spec):
                _check_pair(entry, i, pair)
        else:
            raise ValueError(f"Group matcher entry {entry!r} is {spec!r}; use a regex string or a list of "
                             "(regex, suffix) pairs.")
    return dict(matcher)


def matcher_stages(model: nn.Module, matcher: Mapping | Callable, *,
                   exclude: Collection[str] = ()) -> list[list[str]]:
    """`model`'s parameter names grouped by a group matcher, stem first: its natural stages.

    The grouping is timm's own (``timm.models.group_parameters``), which also takes the callable matchers some
    timm models return (CaiT, Inception); names in `exclude` (a new head) are left out,
    and stages left empty are dropped. Every layer-group split (classification, segmentation encoders, detection
    bodies) starts here.

    >>> import timm
    >>> stages = matcher_stages(timm.create_model("test_resnet"), {"stem": r"^conv1|^bn1", "blocks": r"^layer(\\d+)"},
    ...                         exclude={"fc.weight", "fc.bias"})
    >>> len(stages), stages[0][0], stages[1][0]
    (5, 'conv1.0.weight', 'layer1.0.conv1.weight')
    """
    grouped = timm.models.group_parameters(model, matcher)
    stages = [[n for n in grouped[k] if n not in exclude] for k in sorted(grouped)]
    return [s for s in stages if s]
