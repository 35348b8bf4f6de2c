"""A faster dataclasses.replace, for the records copied on hot paths: the agent's executor makes
one ActionRecord per state of every node it drives, the controller's scheduler applies two
decisions to each of 20,000 rows when they start together."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

R = TypeVar("R")


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(field.name for field in dataclasses.fields(cls))


def replaced(record: R, **changes: Any) -> R:
    """dataclasses.replace(record, **changes), about five times faster, for a dataclass whose
    fields are all init fields and that has no __post_init__ (nothing to run again on a copy)
    and no __slots__ (the copy is made through __dict__). TypeError for a name that is not a
    field, as replace raises."""
    cls: type = type(record)
    unknown = changes.keys() - _field_names(cls)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
    copied: R = object.__new__(cls)
    copied.__dict__.update(record.__dict__)
    copied.__dict__.update(changes)
    return copied
