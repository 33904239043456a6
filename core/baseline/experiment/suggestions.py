"""Did-you-mean for experiment files: a misspelt key next to the required key it stands for,
and problems that a ``--set`` assignment (not the file) caused.

The suggestions themselves come from :func:`baseline.plugins.registry.did_you_mean`
(:func:`difflib.get_close_matches`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

OVERRIDE_SOURCE = "--set"


def misspelt_required(unknown: Iterable[str], missing: Sequence[str]) -> dict[str, str]:
    """Each unknown key that is probably a missing required key (``lenght`` -> ``length``).

    A required key is claimed by one unknown key at most: the closest one, in sorted order.
    """
    pairs: dict[str, str] = {}
    remaining = list(missing)
    for key in sorted(unknown):
        close = difflib.get_close_matches(key, remaining, n=1)
        if close:
            pairs[key] = close[0]
            remaining.remove(close[0])
    return pairs


def misspelt_required_message(required: str) -> str:
    """The message for an unknown key that stands for the missing required key ``required``."""
    return f"unknown key; did you mean {required!r}? (a required key, and it is missing)"


def set_by_override(key_path: str, override_keys: Iterable[str], file_data: Any) -> bool:
    """Whether the problem at ``key_path`` comes from a ``--set`` assignment rather than the
    file: the assignment set that key (or a key under it), or created the table it names."""
    if not key_path:
        return False
    for key in override_keys:
        if key_path == key or key_path.startswith((f"{key}.", f"{key}[")):
            return True
        if key.startswith(f"{key_path}.") and not _present(file_data, key_path.split(".")):
            return True
    return False


def _present(data: Any, parts: Sequence[str]) -> bool:
    for part in parts:
        if not isinstance(data, Mapping) or part not in data:
            return False
        data = data[part]
    return True
