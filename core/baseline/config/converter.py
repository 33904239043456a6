"""The cattrs converter that turns TOML data into config classes, strictly.

cattrs is lenient by default (``"5"`` becomes ``5``, ``3.7`` becomes ``3``); an experiment
file with a wrong type must fail instead, so scalars get strict hooks here.
"""

from __future__ import annotations

import functools
from typing import Any

import cattrs


def _strict_int(value: Any, _type: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {_describe(value)}")
    return int(value)


def _strict_float(value: Any, _type: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {_describe(value)}")
    return float(value)


def _strict_str(value: Any, _type: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_describe(value)}")
    return value


def _strict_bool(value: Any, _type: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_describe(value)}")
    return value


def _strict_str_tuple(value: Any, _type: type) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TypeError(f"expected a list of strings, got {_describe(value)}")
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"expected a list of strings, one item is {_describe(item)}")
    return tuple(value)


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kind = kinds.get(type(value))
    if kind is None:
        kind = (
            "a table"
            if isinstance(value, dict)
            else "a list"
            if isinstance(value, list)
            else type(value).__name__
        )
    text = repr(value)
    return f"{kind} {text}" if len(text) <= 40 else kind


@functools.cache
def config_converter() -> cattrs.Converter:
    """The shared converter: strict scalars, no extra keys, detailed errors."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _strict_str_tuple)
    return converter
