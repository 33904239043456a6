"""FSDP2 wrapping with PyTorch's own ``fully_shard``: which modules are sharded, the mixed
precision policy, and the helpers that see the full model or full gradients of a sharded one.

Each module a model names in its optional ``fsdp_units()`` method (``baseline_decoder``: its
blocks) becomes one FSDP unit, then the whole model (the embeddings, final norm and head, plus
anything not in a unit). A model without the method is one unit. Parameters become ``DTensor``
shards; a forward pass all-gathers a unit's parameters just before it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from baseline.errors import PluginError


def fsdp_units(model: nn.Module, model_name: str = "the model") -> list[nn.Module]:
    """The submodules ``model.fsdp_units()`` names (none when it has no such method)."""
    method = getattr(model, "fsdp_units", None)
    if not callable(method):
        return []
    units = list(method())
    inside = {id(module) for module in model.modules()}
    for index, unit in enumerate(units):
        if not isinstance(unit, nn.Module) or id(unit) not in inside or unit is model:
            raise PluginError(
                f"{model_name}: fsdp_units() item {index} is "
                f"{type(unit).__name__}, not a submodule of the model; return its layers "
                "(for example its transformer blocks)"
            )
    return units


def mixed_precision(precision: str, device: torch.device) -> Any:
    """``MixedPrecisionPolicy``: bf16 parameters for compute and fp32 gradient reduction when
    the run trains in bf16 (``train.precision``), full fp32 otherwise."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard_model(
    model: nn.Module,
    *,
    precision: str,
    device: torch.device,
    reshard_after_forward: bool,
    model_name: str = "the model",
) -> nn.Module:
    """Apply ``fully_shard`` to each of the model's FSDP units, then to the whole model.

    The model is changed in place (its parameters become ``DTensor`` shards over the default
    process group) and returned. Build the optimizer afterwards.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    policy = mixed_precision(precision, device)
    for unit in fsdp_units(model, model_name):
        fully_shard(unit, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    # The root's parameters are needed again first in the backward pass: keep them gathered.
    fully_shard(model, reshard_after_forward=False, mp_policy=policy)
    # The attention probe is a forward pass too: FSDP must see the root enter it first (and
    # initialise itself there) even when it is the first pass after a resume.
    if callable(getattr(model, "attention_probabilities", None)):
        register_fsdp_forward_method(model, "attention_probabilities")
    return model


def sharded_modules(model: nn.Module) -> list[Any]:
    """The ``FSDPModule`` s inside ``model`` (the root first)."""
    from torch.distributed.fsdp import FSDPModule

    return [module for module in model.modules() if isinstance(module, FSDPModule)]


@contextlib.contextmanager
def unsharded(model: nn.Module) -> Iterator[None]:
    """All parameters gathered for the duration (a collective: every rank must enter).

    Lets code that calls submodules directly (attention probes, layer hooks) see plain
    tensors; the parameters are sharded again on exit.
    """
    modules = sharded_modules(model)
    for module in modules:
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """FSDP's counterpart of DDP's ``no_sync()``: without sync, gradients accumulate locally
    and are reduce-scattered on the next micro-batch that syncs."""
    set_sync = getattr(model, "set_requires_gradient_sync", None)
    if set_sync is None:
        yield
        return
    set_sync(enabled)
    try:
        yield
    finally:
        set_sync(True)


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a ``DTensor`` (a collective), or ``value`` itself."""
    gather = getattr(value, "full_tensor", None)
    return gather() if callable(gather) else value


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on CPU, on rank 0 (empty elsewhere). Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


__all__ = [
    "fsdp_units",
    "full_model_state_dict",
    "full_tensor",
    "gradient_sync",
    "mixed_precision",
    "shard_model",
    "sharded_modules",
    "unsharded",
]


def wrap_for_training(
    model: nn.Module,
    *,
    parallelism: str,
    distributed: bool,
    precision: str,
    device: torch.device,
    reshard_after_forward: bool,
    compile_model: bool,
    model_name: str,
) -> tuple[nn.Module, nn.Module, DistributedDataParallel | None]:
    """``(model, train_model, ddp)``: the model (FSDP2 shards under ``parallelism = "fsdp"``,
    else the module itself), the module the training forward calls (DDP's wrapper when
    ``distributed``; ``torch.compile``d when asked) and the DDP wrapper, if any."""
    ddp: DistributedDataParallel | None = None
    train_model = model
    if parallelism == "fsdp":
        model = train_model = shard_model(
            model,
            precision=precision,
            device=device,
            reshard_after_forward=reshard_after_forward,
            model_name=model_name,
        )
    elif distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        ddp = train_model = DistributedDataParallel(model, device_ids=device_ids)
    if compile_model:  # only the training forward; state dicts come from the plain module
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    return model, train_model, ddp


def accumulation_sync(
    model: nn.Module, ddp: DistributedDataParallel | None, *, sharded: bool, sync: bool
) -> contextlib.AbstractContextManager[Any]:
    """Gradient synchronisation for one micro-batch: on the last one of a step (``sync``), off
    for those that only accumulate (DDP's ``no_sync()``, FSDP's counterpart)."""
    if sharded:
        return gradient_sync(model, sync)
    if sync or ddp is None:
        return contextlib.nullcontext()
    return ddp.no_sync()
