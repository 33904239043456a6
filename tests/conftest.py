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

from baseline.plugins.discovery import default_plugins  # noqa: E402
from baseline.plugins.registry import ComponentRegistry  # noqa: E402
from baseline.testing import tiny_experiment_data  # noqa: E402


@pytest.fixture
def registry() -> ComponentRegistry:
    """The registry of the installed plugins."""
    return default_plugins().registry


@pytest.fixture
def tiny_data(tmp_path: Path) -> dict[str, Any]:
    """Experiment data for a run of a few seconds, its corpus written under ``tmp_path``."""
    return tiny_experiment_data(tmp_path)
