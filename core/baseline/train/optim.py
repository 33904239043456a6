"""Optimizer and learning-rate schedule built from :class:`TrainConfig`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from baseline.config import TrainConfig
from baseline.errors import ConfigError
from baseline.train.muon import BatchedMuon
from baseline.train.precision import PrecisionPlan

_NO_DECAY_MODULES = (torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.RMSNorm)


class OptimizerGroup:
    """Several optimizers stepped as one (Muon for hidden matrices, AdamW for the rest).

    It offers what the trainer uses of an optimizer: ``param_groups`` (all of them, so the
    learning-rate schedule reaches every group), ``zero_grad``, ``step``, ``state_dict`` and
    ``load_state_dict``.
    """

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every optimizer's parameter groups, in order."""
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every gradient."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        """Step every optimizer."""
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """The optimizers' states, in order."""
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        saved = state.get("optimizers")
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            raise ValueError("the checkpoint's optimizer state is not this optimizer's")
        for optimizer, optimizer_state in zip(self.optimizers, saved, strict=True):
            optimizer.load_state_dict(_without_empty_groups(optimizer_state, optimizer))


def _without_empty_groups(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> Any:
    """A state saved before empty parameter groups were left out, without its empty groups
    (so that checkpoints of earlier versions resume)."""
    groups = state.get("param_groups")
    if not isinstance(groups, list) or len(groups) == len(optimizer.param_groups):
        return state
    return {**state, "param_groups": [group for group in groups if group.get("params")]}


def _output_features(module: torch.nn.Module) -> int | None:
    """Output width of a matrix layer: ``nn.Linear``, or a ``Conv1D`` (GPT-2's transposed
    linear layer in transformers, weight ``(in, out)``, width ``nf``); ``None`` otherwise."""
    if isinstance(module, torch.nn.Linear):
        return module.out_features
    width = getattr(module, "nf", None)
    if type(module).__name__ == "Conv1D" and isinstance(width, int):
        return width
    return None


def muon_parameters(model: torch.nn.Module, vocab_size: int) -> list[torch.nn.Parameter]:
    """The hidden weight matrices: 2-D weights of ``Linear`` (and transformers ``Conv1D``)
    layers, except an output layer (``out_features == vocab_size``). Embeddings, norms and
    biases are left to AdamW. Newton-Schulz orthogonalises a matrix and its transpose alike,
    so a ``Conv1D``'s ``(in, out)`` weight is taken as it is."""
    chosen: list[torch.nn.Parameter] = []
    for module in model.modules():
        width = _output_features(module)
        if width is None or width == vocab_size:
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.nn.Parameter) and weight.ndim == 2 and weight.requires_grad:
            chosen.append(weight)
    embedding_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)
    }  # a tied output layer shares the embedding's weight
    return [p for p in chosen if id(p) not in embedding_ids]


def build_optimizer(
    model: torch.nn.Module,
    train: TrainConfig,
    vocab_size: int | None = None,
    *,
    precision: PrecisionPlan | None = None,
) -> torch.optim.Optimizer | OptimizerGroup:
    """``train.optimizer``: AdamW, or Muon for the hidden matrices with AdamW for the rest.

    AdamW applies decoupled weight decay to weight matrices only; biases, normalisation
    weights and embeddings are not decayed. Muon (``torch.optim.Muon``'s update, Newton-Schulz
    orthogonalised momentum, batched over same-shape matrices by :class:`BatchedMuon`) takes
    the same learning rate and weight decay: its update is scaled to AdamW's RMS
    (``adjust_lr_fn="match_rms_adamw"``). Its Newton-Schulz iterations run in the dtype of
    ``precision`` (by default, the plan for the device of the model's parameters).
    """
    if train.optimizer == "adamw":
        return _adamw(model, train, exclude=set())
    muon_params = muon_parameters(model, vocab_size if vocab_size is not None else -1)
    if not muon_params:
        raise ConfigError(
            f"the model ({type(model).__name__}) has no hidden weight matrices (nn.Linear or "
            'Conv1D layers) for Muon; set train.optimizer = "adamw"',
            key_path="train.optimizer",
        )
    muon = BatchedMuon(
        muon_params,
        lr=train.learning_rate,
        weight_decay=train.weight_decay,
        momentum=train.muon_momentum,
        nesterov=True,
        adjust_lr_fn="match_rms_adamw",
        ns_dtype=(precision or _plan_for(model, train)).newton_schulz_dtype,
    )
    return OptimizerGroup([muon, _adamw(model, train, exclude={id(p) for p in muon_params})])


def _plan_for(model: torch.nn.Module, train: TrainConfig) -> PrecisionPlan:
    device = next(model.parameters()).device
    return PrecisionPlan.decide(train.precision, train.optimizer_precision, device)


def _adamw(model: torch.nn.Module, train: TrainConfig, exclude: set[int]) -> torch.optim.AdamW:
    no_decay: set[int] = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if isinstance(module, _NO_DECAY_MODULES) or name.endswith("bias") or parameter.ndim < 2:
                no_decay.add(id(parameter))
    decay_params: list[torch.nn.Parameter] = []
    plain_params: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for parameter in model.parameters():
        if id(parameter) in seen or id(parameter) in exclude or not parameter.requires_grad:
            continue
        seen.add(id(parameter))
        (plain_params if id(parameter) in no_decay else decay_params).append(parameter)
    # An empty group is left out: DCP's optimizer state dict (FSDP checkpoints) refuses a
    # parameter group without parameters when several optimizers are stepped together.
    groups = [
        {"params": params, "weight_decay": decay}
        for params, decay in ((decay_params, train.weight_decay), (plain_params, 0.0))
        if params
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
