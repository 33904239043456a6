"""Helpers shared by the core's tests (a unique module name: plugin test folders have their own
conftest.py, so helpers are not imported from ``conftest``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def validation_text(data: dict[str, Any]) -> bytes:
    """The validation segments of an experiment's ``local_text`` dataset and ``holdout`` split
    joined by the dataset's delimiter: ``baseline eval`` of this text scores ``val_loss``."""
    import numpy as np

    from baseline.experiment.loading import experiment_from_data
    from baseline.plugins.discovery import default_plugins

    registry = default_plugins().registry
    config = experiment_from_data(data, registry)
    dataset = registry.get("dataset", "local_text").create(config.dataset)
    segments = list(dataset.segments())
    sizes = np.array([len(s.encode("utf-8")) for s in segments], dtype=np.int64)
    plan = registry.get("split", "holdout").create(config.split).split(sizes)
    return dataset.segment_delimiter.join(segments[i] for i in plan.validation).encode("utf-8")


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Serialize plain experiment data as TOML (enough of TOML for experiment files)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(type(v))

    def table(prefix: str, data: dict[str, Any]) -> None:
        scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in data.items() if isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in tables.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
