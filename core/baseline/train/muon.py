"""``torch.optim.Muon`` with the Newton-Schulz iterations batched over same-shape matrices.

``torch.optim.Muon`` orthogonalises one matrix at a time: for a small model that is many
small bf16 matmuls, and on 2 CPU cores the optimizer step took about 18 ms of a 102 ms
training step. Stacking the matrices of one shape (every layer's ``qkv``, every layer's MLP
input, ...) and iterating on the stack does the same arithmetic in a few batched matmuls
(``benchmarks/muon_step.py`` measures both). The update is torch's: the same momentum and
Nesterov blend, the same quintic coefficients, the same learning-rate adjustment and
decoupled weight decay; the state (``momentum_buffer`` per parameter) and ``state_dict`` are
torch's, so checkpoints move between the two. The iterations run in bf16 as torch's do, or in
float32 (``ns_dtype``) where bf16 is emulated and so far slower (``train.precision``'s plan).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.distributed.tensor import DTensor


def _adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's learning-rate adjustment for a ``(rows, columns)`` matrix."""
    rows, columns = shape[0], shape[1]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, rows / columns))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, columns))
    return lr


def orthogonalize(
    stacked: torch.Tensor,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Newton-Schulz orthogonalisation of a ``(count, rows, columns)`` stack, rows <= columns,
    in ``dtype``, as torch's ``_zeropower_via_newtonschulz`` does for each matrix in bf16."""
    a, b, c = coefficients
    matrices = stacked.to(dtype)
    norms = torch.linalg.matrix_norm(matrices, keepdim=True).clamp(min=eps)
    matrices = matrices / norms
    for _ in range(steps):
        gram = torch.bmm(matrices, matrices.mT)
        gram_update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        matrices = torch.baddbmm(matrices, gram_update, matrices, beta=a)
    return matrices


class BatchedMuon(torch.optim.Muon):
    """``torch.optim.Muon`` whose step orthogonalises same-shape updates together.

    Parameters that are ``DTensor`` shards (FSDP) take torch's own per-matrix step, which
    gathers each whole matrix through DTensor's operators (bf16), or, with ``ns_dtype``
    float32, a per-matrix step that gathers each update and keeps this rank's shard.
    ``ns_dtype`` is not part of the state: checkpoints load under either.
    """

    def __init__(self, *args: Any, ns_dtype: torch.dtype = torch.bfloat16, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimisation step over every parameter group."""
        sharded = any(isinstance(p, DTensor) for g in self.param_groups for p in g["params"])
        if sharded and self.ns_dtype == torch.bfloat16:
            return super().step(closure)  # type: ignore[no-any-return, no-untyped-call]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group, sharded)
        return loss

    def _step_group(self, group: dict[str, object], sharded: bool) -> None:
        lr = float(group["lr"])  # type: ignore[arg-type]
        weight_decay = float(group["weight_decay"])  # type: ignore[arg-type]
        momentum = float(group["momentum"])  # type: ignore[arg-type]
        params: list[torch.Tensor] = []
        updates: list[torch.Tensor] = []
        for param in group["params"]:  # type: ignore[attr-defined]
            if param.grad is None:
                continue
            if param.grad.is_complex():
                raise ValueError("Complex parameters are not supported")
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(
                    param.grad, memory_format=torch.preserve_format
                )
            buffer = state["momentum_buffer"]
            buffer.lerp_(param.grad, 1 - momentum)
            params.append(param)
            updates.append(param.grad.lerp(buffer, momentum) if group["nesterov"] else buffer)

        if sharded:
            updates = [self._gathered_orthogonal(update, group) for update in updates]
            for param, update in zip(params, updates, strict=True):
                _apply(param, update, lr, weight_decay, group)
            return
        by_shape: dict[tuple[int, int], list[int]] = {}
        for index, update in enumerate(updates):
            rows, columns = update.shape
            by_shape.setdefault((min(rows, columns), max(rows, columns)), []).append(index)
        for indices in by_shape.values():
            wide = [
                updates[i] if updates[i].size(0) <= updates[i].size(1) else updates[i].mT
                for i in indices
            ]
            orthogonal = _orthogonalize_group(torch.stack(wide), group, self.ns_dtype)
            for position, index in enumerate(indices):
                param = params[index]
                update = orthogonal[position]
                if param.size(0) > param.size(1):
                    update = update.mT
                _apply(param, update, lr, weight_decay, group)

    def _gathered_orthogonal(self, update: torch.Tensor, group: dict[str, object]) -> torch.Tensor:
        """A sharded update orthogonalised whole (every rank gathers it), as this rank's shard."""
        from torch.distributed.tensor import distribute_tensor

        assert isinstance(update, DTensor)
        whole = update.full_tensor()
        wide = whole if whole.size(0) <= whole.size(1) else whole.mT
        orthogonal = _orthogonalize_group(wide.unsqueeze(0), group, self.ns_dtype)[0]
        if whole.size(0) > whole.size(1):
            orthogonal = orthogonal.mT
        # Every rank holds the same whole matrix: each keeps its own shard, nothing is sent.
        return distribute_tensor(
            orthogonal.to(update.dtype).contiguous(),
            update.device_mesh,
            update.placements,
            src_data_rank=None,
        )


def _orthogonalize_group(
    stacked: torch.Tensor, group: dict[str, object], dtype: torch.dtype
) -> torch.Tensor:
    return orthogonalize(
        stacked,
        group["ns_coefficients"],  # type: ignore[arg-type]
        int(group["ns_steps"]),  # type: ignore[call-overload]
        float(group["eps"]),  # type: ignore[arg-type]
        dtype,
    )


def _apply(
    param: torch.Tensor,
    update: torch.Tensor,
    lr: float,
    weight_decay: float,
    group: dict[str, object],
) -> None:
    """Decoupled weight decay, then the update at torch's adjusted learning rate."""
    param.mul_(1 - lr * weight_decay)
    param.add_(
        update,
        alpha=-_adjusted_lr(lr, group["adjust_lr_fn"], param.shape),  # type: ignore[arg-type]
    )
