"""The module the core trains: a ``transformers`` causal LM behind baseline's interface."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def is_norm(module: nn.Module) -> bool:
    """A normalisation layer: torch's, or a library's ``...RMSNorm``/``...LayerNorm`` class."""
    if isinstance(module, nn.LayerNorm | nn.RMSNorm):
        return True
    name = type(module).__name__.lower()
    return name.endswith(("rmsnorm", "layernorm")) and isinstance(
        getattr(module, "weight", None), nn.Parameter
    )


class HFCausalLMModule(nn.Module):
    """Maps token ids ``(B, T)`` to logits ``(B, T, vocab)`` with the wrapped model ``hf``.

    Implements the core's ``LayeredModel`` (the decoder layers) and ``AttentionProbe`` (the
    eager attention maps of ``output_attentions``).
    """

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=tokens, use_cache=False).logits  # type: ignore[no-any-return]

    def diagnostic_layers(self) -> Sequence[nn.Module]:
        """The decoder layers: the modules of the class whose outputs the architecture records
        as hidden states, else the longest ``ModuleList`` of the model."""
        recorded = getattr(self.hf, "_can_record_outputs", None) or {}
        layer_cls = recorded.get("hidden_states")
        if isinstance(layer_cls, type):
            layers = [m for m in self.hf.modules() if isinstance(m, layer_cls)]
            if layers:
                return layers
        lists = [m for m in self.hf.modules() if isinstance(m, nn.ModuleList)]
        return list(max(lists, key=len)) if lists else []

    def diagnostic_norms(self, layer: nn.Module) -> Sequence[nn.Module]:
        """The normalisation layers inside ``layer`` (``transformers`` has its own classes)."""
        return [m for m in layer.modules() if is_norm(m)]

    def attention_probabilities(
        self, tokens: torch.Tensor, layers: Sequence[int], max_heads: int
    ) -> dict[int, torch.Tensor]:
        """The causal attention maps ``(B, H, T, T)`` of the first ``max_heads`` heads of
        ``layers``, from one forward pass with the eager kernel (which returns them)."""
        config = self.hf.config
        previous = config._attn_implementation
        self.hf.set_attn_implementation("eager")
        try:
            output = self.hf(input_ids=tokens, use_cache=False, output_attentions=True)
        finally:
            self.hf.set_attn_implementation(previous)
        attentions = output.attentions
        return {index: attentions[index][:, :max_heads].float() for index in layers}
