"""Shared fixtures. Network access is switched off before anything imports wandb or datasets."""

from __future__ import annotations

import os
import tempfile

_offline_dir = tempfile.mkdtemp(prefix="baseline-tests-")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_DIR", _offline_dir)
os.environ.setdefault("WANDB_CACHE_DIR", _offline_dir)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from baseline.plugins import default_plugins  # noqa: E402
from baseline.registry import ComponentRegistry  # noqa: E402
from baseline.testing import tiny_experiment_data  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registry() -> ComponentRegistry:
    """The registry of the installed plugins."""
    return default_plugins().registry


@pytest.fixture
def tiny_data(tmp_path: Path) -> dict[str, Any]:
    """Experiment data for a run of a few seconds, its corpus written under ``tmp_path``."""
    return tiny_experiment_data(tmp_path)


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
