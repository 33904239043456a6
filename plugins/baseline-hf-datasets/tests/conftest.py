"""Offline Hugging Face settings, made before anything imports ``datasets``, and the sources.

The ``sources`` fixture builds every source kind the plugin reads for real, once per session
(see ``hf_sources.py``): a text file (builder ``text``), JSON Lines (``json``), Parquet
(``parquet``), CSV (``csv``), a local data directory, a saved ``DatasetDict`` and a saved
``Dataset``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_hf_home = tempfile.mkdtemp(prefix="baseline-hf-tests-")
atexit.register(shutil.rmtree, _hf_home, ignore_errors=True)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = _hf_home
os.environ["HF_DATASETS_CACHE"] = os.path.join(_hf_home, "datasets")
os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hf_sources import Source, build_sources  # noqa: E402


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Source]:
    """Every source kind, built on disk once per session."""
    root: Path = tmp_path_factory.mktemp("hf-sources")
    return build_sources(root)
