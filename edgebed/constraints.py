"""Constraints on action property values, shared by the agent (which declares them in its node
types and enforces them at StartAction) and the controller (which gets them from
DescribeNodeType and applies them when a user sets a value, long before the deploy).

A constraint is a list of allowed values, length bounds and a pattern. The pattern crosses a
trust boundary: the controller runs what an agent sent on every value users type. Python's `re`
backtracks, and a pattern such as `(a+)+$` takes exponential time on a short value, which would
stall the controller's event loop. So a pattern is accepted only when `compile_pattern` can
bound the work of matching it:

- at most 256 characters, and a valid Python regular expression;
- no backreferences, lookaheads, lookbehinds or conditionals;
- no repeated part (`*`, `+`, `{m,n}` with n > 1) that itself contains a repeat or an
  alternation with choices: `(a+)+`, `(a|ab)*` are refused, `([a-z]{2})*` is fine;
- the product over the pattern's repeats and alternations of their number of choices, with
  every repeat bounded by the longest value allowed, at most MAX_MATCH_COST: that bounds how
  many ways a match can split the value, so `.*.*` is refused for values of 16384 characters
  and accepted when max_length is 128.

Values are always matched whole (`fullmatch`). The agent refuses to define a node type with a
pattern outside this subset (ValueError at import), so its own patterns always reach the
controller usable; the controller ignores one it cannot accept (and says so on the agents page),
leaving that check to the agent at StartAction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

try:
    # The stdlib's own parser of regular expressions (sre_parse); private, hence the guard: on a
    # Python without it no pattern can be bounded, and the controller applies none.
    from re import _parser as _sre_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - every Python edgebed supports (3.11-3.13) has it
    _sre_parser = None

MAX_PATTERN_LENGTH = 256
# The longest value the controller stores for a property (controller/validation.py), which bounds
# a repeat when the property has no max_length.
MAX_VALUE_LENGTH = 16384
# Ways a match may split a value, at most (see the module's docstring): a single `.*` over the
# longest value is 16385; the match itself then stays in the milliseconds.
MAX_MATCH_COST = 100_000


class UnsafePattern(ValueError):
    """A pattern that is not a regular expression, or whose matching time cannot be bounded.
    str() says why, starting with a verb ("uses a backreference")."""


_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})
# One character (or none, for the anchors): no choice in how they match.
_SIMPLE = frozenset({"LITERAL", "NOT_LITERAL", "ANY", "IN", "AT", "CATEGORY"})
_REFUSED = {
    "GROUPREF": "uses a backreference",
    "GROUPREF_EXISTS": "uses a conditional group",
    "ASSERT": "uses a lookahead or lookbehind",
    "ASSERT_NOT": "uses a lookahead or lookbehind",
}


def _choices(items: Iterable[tuple[Any, Any]], longest: int) -> int:
    """How many ways `items` (a parsed pattern) can split a value of at most `longest`
    characters, as an upper bound; UnsafePattern for what cannot be bounded."""
    total = 1
    for op, arg in items:
        name = str(op)
        if name in _SIMPLE:
            continue
        if name == "SUBPATTERN":
            total *= _choices(arg[-1], longest)
        elif name == "ATOMIC_GROUP":
            total *= _choices(arg, longest)
        elif name == "BRANCH":
            total *= sum(_choices(branch, longest) for branch in arg[1])
        elif name in _REPEATS:
            low, high, body = arg
            inner = _choices(body, longest)
            most = min(int(high), longest)
            if most > 1 and inner > 1:
                raise UnsafePattern("repeats a part that itself repeats or has alternatives")
            total *= max(1, most - low + 1) * inner
        else:
            raise UnsafePattern(_REFUSED.get(name, f"uses {name.lower()}, which is not allowed"))
        if total > MAX_MATCH_COST:
            # Stop early: a long chain of repeats would otherwise build a huge number.
            break
    return total


def compile_pattern(pattern: str, max_value_length: int = 0) -> re.Pattern[str]:
    """The compiled pattern, for `fullmatch` on values of at most `max_value_length` characters
    (0: MAX_VALUE_LENGTH). UnsafePattern when it is too long, not a regular expression, or
    outside the subset whose matching time is bounded (see the module's docstring)."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafePattern(f"is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        compiled = re.compile(pattern)
        parsed = _sre_parser.parse(pattern) if _sre_parser is not None else None
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise UnsafePattern(f"is not a regular expression: {exc}") from None
    if parsed is None:
        raise UnsafePattern("cannot be checked on this Python (no re._parser)")
    longest = max_value_length if 0 < max_value_length <= MAX_VALUE_LENGTH else MAX_VALUE_LENGTH
    if _choices(parsed, longest) > MAX_MATCH_COST:
        raise UnsafePattern(
            f"could take too long on a value of {longest} characters (too many repeats; "
            "set a smaller max_length or simplify it)"
        )
    return compiled


def length_problem(length: int, min_length: int, max_length: int) -> str | None:
    """What is wrong with a value of `length` characters ("must be 8 to 128 characters long"),
    None when it fits; a bound of 0 is no bound."""
    if min_length and max_length and not min_length <= length <= max_length:
        if min_length == max_length:
            return f"must be exactly {min_length} characters long"
        return f"must be {min_length} to {max_length} characters long"
    if min_length and length < min_length:
        return f"must be at least {min_length} characters long"
    if max_length and length > max_length:
        return f"must be at most {max_length} characters long"
    return None


def value_problem(
    value: str,
    *,
    values: Sequence[str] = (),
    min_length: int = 0,
    max_length: int = 0,
    pattern: re.Pattern[str] | None = None,
    help: str = "",
    secret: bool = False,
) -> str | None:
    """What is wrong with `value` under these constraints, as a phrase to put after the
    property's name ("must be 8 to 128 characters long"), or None. A secret value is never
    repeated in the phrase. Checked in order: allowed values, length, pattern; `help` (what a
    valid value looks like, in words, to follow "must be") explains a pattern mismatch."""
    if values and value not in values:
        shown = ", ".join(values[:20]) + (", ..." if len(values) > 20 else "")
        got = "" if secret else f"; got {value[:64]!r}"
        return f"must be one of {shown}{got}"
    problem = length_problem(len(value), min_length, max_length)
    if problem:
        return problem
    if pattern is not None and pattern.fullmatch(value) is None:
        if help:
            return f"must be {help}"
        return f"does not match the pattern {pattern.pattern}"
    return None
