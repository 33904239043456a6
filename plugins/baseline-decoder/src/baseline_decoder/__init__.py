"""baseline plugin: model ``baseline_decoder``, a decoder-only transformer (GPT- or Llama-style).

torch is imported only when a model is built, so listing plugins stays fast.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import attrs

from baseline.config import ExperimentConfig, ModelConfig, at_least, between
from baseline.errors import FieldError
from baseline.plugins.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from baseline.plugins.protocols import ExportInfo

__all__ = ["SWIGLU_MULTIPLE", "BaselineDecoder", "BaselineDecoderConfig"]


#: SwiGLU's hidden width is rounded to a multiple of this.
SWIGLU_MULTIPLE = 8


@attrs.frozen(kw_only=True)
class BaselineDecoderConfig(ModelConfig):
    """Pre-norm decoder: token embeddings (plus learned positions, or RoPE on q and k),
    ``layers`` blocks of causal self-attention (``scaled_dot_product_attention``, optionally
    grouped-query, optionally with q/k normalisation) and an MLP, then a final norm.

    The defaults build the original GPT-style block: LayerNorm, GELU MLP, one key/value head
    per query head, no q/k norm, learned positions.
    """

    d_model: int = attrs.field(default=128, validator=at_least(1))
    n_heads: int = attrs.field(default=4, validator=at_least(1))
    layers: int = attrs.field(default=4, validator=at_least(1))
    #: Hidden width of the MLP as a multiple of ``d_model`` (see :attr:`mlp_hidden`).
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
    #: ``layernorm`` or ``rmsnorm`` (no bias, no mean subtraction), for every norm of the model.
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    #: ``gelu`` (tanh approximation), ``swiglu`` (SiLU-gated, three matrices) or ``relu2``
    #: (squared ReLU).
    mlp: Literal["gelu", "swiglu", "relu2"] = "gelu"
    #: Key/value heads; each serves ``n_heads / n_kv_heads`` query heads (grouped-query
    #: attention, multi-query with 1). Unset: ``n_heads`` (ordinary multi-head attention).
    n_kv_heads: int | None = attrs.field(default=None, validator=at_least(1))
    #: Normalise queries and keys per head (with ``norm``) before RoPE and attention.
    qk_norm: bool = False

    @property
    def head_size(self) -> int:
        """Width of one attention head, ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_heads``, or ``n_heads`` when unset."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the MLP.

        ``int(mlp_ratio * d_model)`` for ``gelu`` and ``relu2`` (two matrices). For ``swiglu``
        (three matrices) ``2/3 * mlp_ratio * d_model`` rounded to the nearest multiple of
        :data:`SWIGLU_MULTIPLE` (at least one multiple), so that its parameters stay close to
        the two-matrix MLPs' at the same ``mlp_ratio``.
        """
        if self.mlp == "swiglu":
            target = 2 / 3 * self.mlp_ratio * self.d_model
            return SWIGLU_MULTIPLE * max(1, math.floor(target / SWIGLU_MULTIPLE + 0.5))
        return int(self.mlp_ratio * self.d_model)

    def validate(self, experiment: ExperimentConfig) -> None:
        """Head counts and sizes fit together, and the MLP has at least one hidden unit."""
        if self.d_model % self.n_heads:
            raise FieldError("n_heads", f"must divide d_model={self.d_model}, got {self.n_heads}")
        if self.n_kv_heads is not None:
            if self.n_kv_heads > self.n_heads:
                raise FieldError(
                    "n_kv_heads", f"must be <= n_heads={self.n_heads}, got {self.n_kv_heads}"
                )
            if self.n_heads % self.n_kv_heads:
                raise FieldError(
                    "n_kv_heads", f"must divide n_heads={self.n_heads}, got {self.n_kv_heads}"
                )
        if self.position_encoding == "rope" and self.head_size % 2:
            raise FieldError(
                "n_heads",
                f"rope needs an even head size; d_model / n_heads = {self.head_size}",
            )
        if self.qk_norm and self.norm == "layernorm" and self.head_size < 2:
            raise FieldError(
                "qk_norm",
                'with norm = "layernorm" needs a head size >= 2 (a LayerNorm of one channel '
                f'is always 0), got d_model / n_heads = {self.head_size}; use norm = "rmsnorm"',
            )
        if self.mlp_hidden < 1:
            raise FieldError(
                "mlp_ratio",
                f"must give at least 1 hidden unit (int(mlp_ratio * d_model) with "
                f"d_model={self.d_model}), got {self.mlp_ratio}",
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

    def export_hf(self, model: torch.nn.Module, directory: Path, info: ExportInfo) -> None:
        """Write ``model`` as the equivalent ``transformers`` model (``baseline export``):
        GPT-2, Persimmon, Llama or Qwen3 by the variant (:mod:`baseline_decoder.hf_export`, which
        imports ``transformers``)."""
        from baseline_decoder.hf_export import export_decoder

        export_decoder(model, self.config, directory, info)


@hookimpl
def baseline_register_models(register: Register) -> None:
    """Register the ``baseline_decoder`` model."""
    register("baseline_decoder", BaselineDecoderConfig, BaselineDecoder)
