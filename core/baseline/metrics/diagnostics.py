"""Layer-wise training diagnostics: activation norms, norm-layer gradient norms, attention entropy.

Each is measured on the first, middle and last layer of a
:class:`~baseline.plugins.protocols.LayeredModel` and only on the steps a logger's cadence
selects. Activation norms and attention entropy come from a separate forward pass without
gradients and in eval mode (no dropout, no RNG draws), so turning them on changes neither the
training step nor its reproducibility.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from baseline.distributed.wrapping import full_tensor
from baseline.errors import PluginError
from baseline.metrics.router import layer_indices
from baseline.plugins.protocols import AttentionProbe, LayeredModel

#: Sequences of the micro-batch whose attention entropy is measured (bounds its memory).
ENTROPY_MAX_SEQUENCES = 8

#: Module types whose parameters ``ln_grad_norms`` reports.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.RMSNorm)


class LayerDiagnostics:
    """Computes the diagnostics of one model; built once per run for the requested ones."""

    def __init__(
        self,
        model: nn.Module,
        requested: frozenset[str],
        *,
        model_name: str = "the model",
        autocast: Callable[[], Any] | None = None,
        gathered: Callable[[], Any] | None = None,
    ) -> None:
        self.model = model
        #: A context in which a sharded (FSDP) model's parameters are whole; the forward
        #: diagnostics run inside it, on every rank.
        self.gathered = gathered
        self.model_name = model_name
        self.autocast = autocast
        self.layers: dict[str, nn.Module] = {}
        self.norms: dict[str, list[nn.Module]] = {}
        if requested & {"activation_norms", "ln_grad_norms", "attention_entropy"}:
            if not isinstance(model, LayeredModel):
                raise PluginError(
                    f"{model_name} was asked for layer diagnostics but its module "
                    f"{type(model).__name__} has no diagnostic_layers() method; turn the "
                    "diagnostics off or implement baseline.plugins.protocols.LayeredModel"
                )
            stack = list(model.diagnostic_layers())
            if not stack:
                raise PluginError(f"{model_name}: diagnostic_layers() returned no layers")
            self.indices = layer_indices(len(stack))
            self.layers = {position: stack[i] for position, i in self.indices.items()}
        if "ln_grad_norms" in requested:
            self.norms = {
                position: _norm_modules(model, layer) for position, layer in self.layers.items()
            }
            empty = [position for position, norms in self.norms.items() if not norms]
            if empty:
                raise PluginError(
                    f"{model_name}: the {', '.join(empty)} layer(s) have no LayerNorm or "
                    "RMSNorm submodule, so ln_grad_norms cannot be measured; turn it off"
                )
        if "attention_entropy" in requested and not isinstance(model, AttentionProbe):
            raise PluginError(
                f"{model_name} was asked for attention entropy but its module "
                f"{type(model).__name__} has no attention_probabilities() method; turn "
                "enable_attention_entropy off or implement "
                "baseline.plugins.protocols.AttentionProbe"
            )

    def _eval_forward(self, run: Callable[[], Any]) -> Any:
        was_training = self.model.training
        self.model.eval()
        try:
            with (
                torch.no_grad(),
                self.gathered() if self.gathered else contextlib.nullcontext(),
                self.autocast() if self.autocast else contextlib.nullcontext(),
            ):
                return run()
        finally:
            self.model.train(was_training)

    def activation_norms(self, inputs: torch.Tensor) -> dict[str, float]:
        """Mean L2 norm over tokens of the hidden state after each reported layer."""
        captured: dict[str, torch.Tensor] = {}

        def capture(position: str) -> Callable[[nn.Module, Any, Any], None]:
            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                hidden = output[0] if isinstance(output, tuple | list) else output
                captured[position] = hidden.detach().float().norm(dim=-1).mean()

            return hook

        handles = [
            layer.register_forward_hook(capture(position))
            for position, layer in self.layers.items()
        ]
        try:
            self._eval_forward(lambda: self.model(inputs))
        finally:
            for handle in handles:
                handle.remove()
        missing = [p for p in self.layers if p not in captured]
        if missing:
            raise PluginError(
                f"{self.model_name}: the {', '.join(missing)} layer(s) of diagnostic_layers() "
                "did not run in the model's forward pass; return the modules forward() calls"
            )
        return {f"activation_norm_{p}": float(captured[p].item()) for p in self.layers}

    def ln_grad_norms(self) -> dict[str, float]:
        """L2 norm of the gradients of each reported layer's norm weights and biases.

        Call after the backward pass (and DDP's all-reduce) and before clipping. Biases are
        reported only when the layer's norms have them. Sharded (FSDP ``DTensor``) gradients
        are gathered whole first: every rank must call this.
        """
        values: dict[str, float] = {}
        for position, norms in self.norms.items():
            for kind in ("weight", "bias"):
                grads = [
                    grad
                    for module in norms
                    if (param := getattr(module, kind, None)) is not None
                    and (grad := param.grad) is not None
                ]
                if grads:
                    whole = [full_tensor(g.detach()) for g in grads]
                    total = torch.stack([g.float().norm() for g in whole]).norm()
                    values[f"ln_{kind}_grad_norm_{position}"] = float(total.item())
        return values

    def before_update(
        self, due: frozenset[str], batch: torch.Tensor, caps: tuple[int, int]
    ) -> dict[str, float]:
        """The forward-pass diagnostics ``due`` at this step (activation norms, attention
        entropy with ``caps`` = (heads, tokens)) of a step's first micro-batch (inputs and
        targets), measured before the update: the weights this step's forward uses."""
        values: dict[str, float] = {}
        if not due & {"activation_norms", "attention_entropy"}:
            return values
        device = next(iter(self.model.parameters())).device
        inputs = batch[:, :-1].to(device, non_blocking=True)
        if "activation_norms" in due:
            values.update(self.activation_norms(inputs))
        if "attention_entropy" in due:
            values.update(self.attention_entropy(inputs, *caps))
        return values

    def attention_entropy(
        self, inputs: torch.Tensor, head_cap: int, token_cap: int
    ) -> dict[str, float]:
        """Mean entropy (nats) of the attention distributions of the reported layers.

        Measured on the first ``token_cap`` positions of the first
        :data:`ENTROPY_MAX_SEQUENCES` sequences of ``inputs`` (causal attention over a prefix
        is exactly the attention those positions have in the full window) and the first
        ``head_cap`` heads, averaged over query positions, heads and sequences.
        """
        assert isinstance(self.model, AttentionProbe)
        probe = self.model
        prefix = inputs[:ENTROPY_MAX_SEQUENCES, :token_cap]
        wanted = sorted(set(self.indices.values()))
        maps = self._eval_forward(lambda: probe.attention_probabilities(prefix, wanted, head_cap))
        values = {}
        for position, index in self.indices.items():
            probabilities = maps.get(index)
            steps = prefix.size(1)
            if (
                probabilities is None
                or probabilities.dim() != 4
                or probabilities.shape[0] != prefix.size(0)
                or not 1 <= probabilities.shape[1] <= head_cap
                or probabilities.shape[2:] != (steps, steps)
            ):
                got = None if probabilities is None else tuple(probabilities.shape)
                raise PluginError(
                    f"{self.model_name}: attention_probabilities() returned {got} for layer "
                    f"{index}; expected a ({prefix.size(0)}, <= {head_cap}, {steps}, {steps}) map "
                    f"for each of the layers {wanted}"
                )
            values[f"attention_entropy_{position}"] = mean_entropy(probabilities)
        return values


def _norm_modules(model: nn.Module, layer: nn.Module) -> list[nn.Module]:
    """The norms of ``layer``: the model's ``diagnostic_norms(layer)`` when it has that
    method (norm classes of other libraries), else its ``LayerNorm``/``RMSNorm`` submodules."""
    custom = getattr(model, "diagnostic_norms", None)
    if callable(custom):
        return list(custom(layer))
    return [m for m in layer.modules() if isinstance(m, NORM_TYPES)]


def mean_entropy(probabilities: torch.Tensor) -> float:
    """Mean entropy in nats of the distributions along the last axis."""
    p = probabilities.detach().float()
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1)
    return float(entropy.mean().item())


def entropy_bounds(token_cap: int) -> tuple[float, float]:
    """Entropy range of causal attention over ``token_cap`` positions: 0 to the uniform mean."""
    return 0.0, sum(math.log(t) for t in range(1, token_cap + 1)) / token_cap


__all__ = ["LayerDiagnostics", "entropy_bounds", "mean_entropy"]
