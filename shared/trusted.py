"""Pydantic models built from values their maker has checked already, unvalidated.

The parser checks every value it takes from a CLI line itself (`_str_or_none` and the
like, blocks through their own models), then built each event's models with pydantic's
validation, or `model_construct`: ~4 us each for a stream event's data and its Event,
a fifth of a work horse's time per event. `trusted` sets what pydantic's validation
sets, directly: the instance equals `model(**values)` and dumps the same JSON.

The caller's contract: `values` holds every field of the model, in the order the model
declares them, each already of its field's type; the model allows no extra fields and
has no private attributes. tests/unit/test_trusted.py holds the parser's every model
to `model(**values)` and to pydantic's validation of its dump.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__


def trusted(model: type[M], values: dict[str, Any]) -> M:
    """`model(**values)` without validation (see the module's contract)."""
    instance = model.__new__(model)
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_fields_set__", set(values))
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance
