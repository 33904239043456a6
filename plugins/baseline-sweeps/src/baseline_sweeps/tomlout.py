"""Writing an experiment's plain data back as a TOML file (``baseline sweep best``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from baseline_sweeps.spec import toml_value

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def dumps(data: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """``data`` (tables of strings, numbers, booleans and lists) as TOML, after ``header``
    written as comment lines. ``None`` values are left out (TOML has no null)."""
    lines = [f"# {line}" if line else "#" for line in header]

    def table(prefix: str, content: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in content.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in content.items() if isinstance(v, Mapping)]
        if prefix:
            if lines:
                lines.append("")
            lines.append(f"[{prefix}]")
        for key, value in scalars:
            if value is not None:
                lines.append(f"{_key(key)} = {toml_value(value)}")
        for key, value in tables:
            table(f"{prefix}.{_key(key)}" if prefix else _key(key), value)

    table("", data)
    return "\n".join(lines) + "\n"
