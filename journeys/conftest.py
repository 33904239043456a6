"""The journeys run offline: W&B, the Hugging Face hub and datasets never reach the network,
whether pytest is started by ``nox -s journeys`` (which sets the same variables) or by hand."""

from __future__ import annotations

import os

for _key, _value in {
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)
