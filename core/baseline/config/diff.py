"""Flattened configs and the keys that differ between two of them.

Resume (``--resume``: a checkpoint's config against this run's) and ``run.init_from`` (the
source run's model and tokenizer against this run's) both ask the same question, answered
here once: which ``section.key`` paths differ, where a key the older config lacks (written
before the option existed) matches a current value equal to the option's default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def field_defaults(section_config: Any, section: str) -> dict[str, Any]:
    """``section.key`` -> the plain default of each field of an attrs config (no factories)."""
    if section_config is None or not attrs.has(type(section_config)):
        return {}
    defaults: dict[str, Any] = {}
    for field in attrs.fields(type(section_config)):
        if field.default is not attrs.NOTHING and not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            defaults[f"{section}.{field.name}"] = field.default
    return defaults


def _with_defaults(
    old: Mapping[str, Any], new: Mapping[str, Any], defaults: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    before, after = flatten(old), flatten(new)
    for key, value in defaults.items():
        if key not in before and after.get(key) == value:
            before[key] = value
    return before, after


def differing_keys(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any] | None = None,
    only: Iterable[str] | None = None,
    ignore: Iterable[str] = (),
) -> list[str]:
    """Sorted ``section.key`` paths whose values differ between two nested config dicts.

    ``only`` keeps the paths that equal or start with one of its entries (``"model"`` keeps
    every ``model.*`` key; ``"run.seed"`` that key alone); ``ignore`` drops exact paths.
    """
    before, after = _with_defaults(old, new, defaults or {})
    selected = tuple(only) if only is not None else None
    skipped = frozenset(ignore)

    def wanted(key: str) -> bool:
        if key in skipped:
            return False
        return selected is None or any(
            key == item or key.startswith(f"{item}.") for item in selected
        )

    return [
        key
        for key in sorted(set(before) | set(after))
        if wanted(key) and before.get(key) != after.get(key)
    ]


def describe_differences(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    keys: Iterable[str],
    *,
    old_name: str,
    defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """``key (<old_name> X, this run Y)`` for each of ``keys`` (``unset`` where absent)."""
    before, after = _with_defaults(old, new, defaults or {})

    def shown(values: Mapping[str, Any], key: str) -> str:
        return repr(values[key]) if key in values else "unset"

    return [
        f"{key} ({old_name} {shown(before, key)}, this run {shown(after, key)})" for key in keys
    ]
