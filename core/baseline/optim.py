"""Optimizer and learning-rate schedule built from :class:`TrainConfig`."""

from __future__ import annotations

import math

import torch

from baseline.config import TrainConfig

_NO_DECAY_MODULES = (torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.RMSNorm)


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on weight matrices only.

    Biases, normalisation weights and embeddings are not decayed.
    """
    no_decay: set[int] = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if isinstance(module, _NO_DECAY_MODULES) or name.endswith("bias") or parameter.ndim < 2:
                no_decay.add(id(parameter))
    decay_params: list[torch.nn.Parameter] = []
    plain_params: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for parameter in model.parameters():
        if id(parameter) in seen or not parameter.requires_grad:
            continue
        seen.add(id(parameter))
        (plain_params if id(parameter) in no_decay else decay_params).append(parameter)
    groups = [
        {"params": decay_params, "weight_decay": train.weight_decay},
        {"params": plain_params, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=train.learning_rate,
        betas=(train.adam_beta1, train.adam_beta2),
        foreach=True,
    )


def learning_rate_factor(step: int, progress: float, train: TrainConfig) -> float:
    """Multiplier of ``learning_rate`` at optimizer step ``step`` (0-based).

    Linear warmup over ``warmup_steps``, then constant, or cosine decay to ``min_lr_ratio``
    as ``progress`` (the fraction of training done, by steps or by time) goes from 0 to 1.
    """
    if train.warmup_steps and step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    if train.lr_schedule == "constant":
        return 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return train.min_lr_ratio + (1.0 - train.min_lr_ratio) * cosine
