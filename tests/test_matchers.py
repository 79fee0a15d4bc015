"""easytransfer/models/matchers.py: group matchers in timm's form, checked when written, naming the bad entry."""

from __future__ import annotations

import pytest

from easytransfer.models.matchers import MATCH_PREVIOUS, validate_matcher


def test_a_timm_matcher_passes_through_in_order():
    matcher = {"stem": r"^conv1|bn1", "blocks": [(r"^layer(\d+)", None), (r"^norm", MATCH_PREVIOUS)], "skip": None}
    assert list(validate_matcher(matcher).items()) == list(matcher.items())


@pytest.mark.parametrize(("matcher", "match"), [
    ({}, "non-empty dict"),
    ({"stem": r"^conv1("}, "'stem': the regex '\\^conv1\\(' does not compile"),
    ({"stem": 3}, "use a regex string or a list"),
    ({"norm": (r"^norm", (99999,))}, r"write \[\('\^norm', \(99999,\)\)\]"),
    ({"blocks": [(r"^layer", "last")]}, "suffix is 'last'; use None or a tuple of ints"),
    ({"blocks": [(1, None)]}, "not a regex string"),
])
def test_a_bad_entry_is_named_with_the_fix(matcher, match):
    with pytest.raises(ValueError, match=match):
        validate_matcher(matcher)
