"""Field helpers for config classes: paths resolved against the experiment file, range
validators, and the name checks of the core sections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from baseline.errors import FieldError

PATH_METADATA_KEY = "baseline_path"


def path_field(default: Any = attrs.NOTHING, **kwargs: Any) -> Any:
    """An attrs field holding a filesystem path.

    Relative paths in an experiment file are resolved against the directory of that file,
    so an experiment runs the same from any working directory.
    """
    metadata = {**kwargs.pop("metadata", {}), PATH_METADATA_KEY: True}
    return attrs.field(default=default, metadata=metadata, **kwargs)


def at_least(minimum: float, *, exclusive: bool = False) -> Callable[[Any, Any, Any], None]:
    """Validator: the value is ``>= minimum`` (``> minimum`` when ``exclusive``)."""

    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if value < minimum or (exclusive and value == minimum):
            op = ">" if exclusive else ">="
            raise FieldError(attribute.name, f"must be {op} {minimum}, got {value!r}")

    return check


def between(
    low: float, high: float, *, low_inclusive: bool = False, high_inclusive: bool = True
) -> Callable[[Any, Any, Any], None]:
    """Validator: the value lies in the interval from ``low`` to ``high``."""

    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        above = value >= low if low_inclusive else value > low
        below = value <= high if high_inclusive else value < high
        if not (above and below):
            left = "[" if low_inclusive else "("
            right = "]" if high_inclusive else ")"
            raise FieldError(
                attribute.name, f"must be in {left}{low}, {high}{right}, got {value!r}"
            )

    return check


def _non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "must not be empty")


def _file_name(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip() or "/" in value or "\\" in value or value in {".", ".."}:
        raise FieldError(attribute.name, f"must be a plain file name, got {value!r}")


def _run_name(_instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None:
        _file_name(_instance, attribute, value)
