"""baseline plugin: model ``baseline_decoder``, a GPT-style decoder-only transformer.

torch is imported only when a model is built, so listing plugins stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

from baseline.config import ExperimentConfig, ModelConfig, at_least, between
from baseline.errors import FieldError
from baseline.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    import torch

__all__ = ["BaselineDecoder", "BaselineDecoderConfig"]


@attrs.frozen(kw_only=True)
class BaselineDecoderConfig(ModelConfig):
    """Pre-norm decoder: token + learned position embeddings, ``layers`` blocks of causal
    self-attention (``scaled_dot_product_attention``) and a GELU MLP, final LayerNorm."""

    d_model: int = attrs.field(default=128, validator=at_least(1))
    n_heads: int = attrs.field(default=4, validator=at_least(1))
    layers: int = attrs.field(default=4, validator=at_least(1))
    #: Hidden width of the MLP as a multiple of ``d_model``.
    mlp_ratio: float = attrs.field(default=4.0, validator=at_least(0, exclusive=True))
    dropout: float = attrs.field(
        default=0.0, validator=between(0.0, 1.0, low_inclusive=True, high_inclusive=False)
    )
    bias: bool = False
    tie_embeddings: bool = True
    init_std: float = attrs.field(default=0.02, validator=at_least(0, exclusive=True))
    #: ``learned`` absolute position embeddings, or ``rope`` (rotary, applied to q and k).
    position_encoding: Literal["learned", "rope"] = "learned"
    rope_base: float = attrs.field(default=10000.0, validator=at_least(1))

    def validate(self, experiment: ExperimentConfig) -> None:
        """``n_heads`` must divide ``d_model``."""
        if self.d_model % self.n_heads:
            raise FieldError("n_heads", f"must divide d_model={self.d_model}, got {self.n_heads}")
        if self.position_encoding == "rope" and (self.d_model // self.n_heads) % 2:
            raise FieldError(
                "n_heads",
                f"rope needs an even head size; d_model / n_heads = {self.d_model // self.n_heads}",
            )


class BaselineDecoder:
    """Builds :class:`baseline_decoder.model.DecoderModel` modules."""

    #: Every layer diagnostic of the core: the blocks are the layers, and attention
    #: probabilities of a few heads are computed on request.
    diagnostics = frozenset({"activation_norms", "ln_grad_norms", "attention_entropy"})

    def __init__(self, config: BaselineDecoderConfig) -> None:
        self.config = config

    def build(self, vocab_size: int, seq_len: int) -> torch.nn.Module:
        """A freshly initialised decoder for ``vocab_size`` tokens and ``seq_len`` positions."""
        from baseline_decoder.model import DecoderModel

        return DecoderModel(self.config, vocab_size=vocab_size, max_seq_len=seq_len)


@hookimpl
def baseline_register_models(register: Register) -> None:
    """Register the ``baseline_decoder`` model."""
    register("baseline_decoder", BaselineDecoderConfig, BaselineDecoder)
