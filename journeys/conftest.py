"""The journeys run offline: W&B, the Hugging Face hub and datasets never reach the network,
whether pytest is started by ``nox -s journeys`` (which sets the same variables) or by hand."""

from __future__ import annotations

import os
import tempfile

import torch

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
# `baseline eval --dataset` of an hf_text experiment prepares its Arrow copy here, not in ~/.cache.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="baseline-journeys-"))
# The commands run in this process (eval, sample, export) use one thread, as the training
# processes do (OMP_NUM_THREADS=1): on 2 shared cores more threads only contend.
torch.set_num_threads(1)
