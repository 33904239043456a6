"""Offline settings for the TensorBoard logger's tests: nothing here needs the network, and
nothing else may try (Hugging Face libraries of the standard plugins included)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
