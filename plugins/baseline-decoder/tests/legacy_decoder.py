"""The decoder exactly as it was before the norm, MLP, grouped-query and q/k-norm variants.

A verbatim copy of ``baseline_decoder/model.py`` at commit 5a49662, kept only for the test
that a default config still builds the same weights and computes the same logits, bit for
bit. Do not edit it to follow the real model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from baseline_decoder import BaselineDecoderConfig


def rotary_tables(seq_len: int, head_size: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables ``(seq_len, head_size // 2)`` for rotary position embeddings."""
    inverse = 1.0 / base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inverse)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x[..., :h/2], x[..., h/2:])`` of ``(B, H, T, h)`` by position."""
    half = x.size(-1) // 2
    first, second = x[..., :half], x[..., half:]
    steps = x.size(-2)
    cos, sin = cos[:steps], sin[:steps]
    return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, config: BaselineDecoderConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        batch, steps, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        shape = (batch, steps, self.n_heads, width // self.n_heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(batch, steps, width)
        return self.resid_dropout(self.proj(y))

    def probabilities(
        self, x: torch.Tensor, max_heads: int, rotary: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        """Causal attention probabilities ``(B, H, T, T)`` of the first ``max_heads`` heads."""
        batch, steps, width = x.shape
        head_size = width // self.n_heads
        heads = min(max_heads, self.n_heads)
        q, k, _ = self.qkv(x).split(width, dim=2)
        shape = (batch, steps, self.n_heads, head_size)
        q, k = (t.view(shape)[:, :, :heads].transpose(1, 2) for t in (q, k))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        # fp32 scores, as the fused attention keeps them, even under bf16 autocast
        scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(head_size)
        future = torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(1)
        return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


class MLP(nn.Module):
    """Position-wise feed-forward block with GELU."""

    def __init__(self, config: BaselineDecoderConfig) -> None:
        super().__init__()
        hidden = int(config.mlp_ratio * config.d_model)
        self.fc = nn.Linear(config.d_model, hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: BaselineDecoderConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_mlp = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x), rotary)
        return x + self.mlp(self.ln_mlp(x))


class DecoderModel(nn.Module):
    """GPT-style decoder: ``(batch, steps)`` token ids -> ``(batch, steps, vocab)`` logits."""

    def __init__(self, config: BaselineDecoderConfig, *, vocab_size: int, max_seq_len: int) -> None:
        super().__init__()
        self.config = config
        self.max_seq_len = max_seq_len
        self.token_embedding = nn.Embedding(vocab_size, config.d_model)
        self.position_embedding: nn.Embedding | None = None
        if config.position_encoding == "learned":
            self.position_embedding = nn.Embedding(max_seq_len, config.d_model)
        else:
            cos, sin = rotary_tables(
                max_seq_len, config.d_model // config.n_heads, config.rope_base
            )
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_final = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
        # GPT-2: scale the residual projections by depth so the residual stream stays bounded.
        residual_std = std / math.sqrt(2 * self.config.layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=residual_std)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward and backward): 6 per weight plus attention."""
        weights = sum(p.numel() for p in self.parameters())
        if self.position_embedding is not None:
            weights -= self.position_embedding.weight.numel()
        attention = 12 * self.config.layers * self.config.d_model * seq_len
        return 6 * weights + attention

    def diagnostic_layers(self) -> Sequence[nn.Module]:
        """The transformer blocks, for the core's layer diagnostics."""
        return list(self.blocks)

    def attention_probabilities(
        self, tokens: torch.Tensor, layers: Sequence[int], max_heads: int
    ) -> dict[int, torch.Tensor]:
        """Attention maps ``(B, H, T, T)`` of the first ``max_heads`` heads of ``layers``.

        Only the requested heads' maps are materialised; the forward pass itself is the
        normal (fused) one.
        """
        wanted = set(layers)
        maps: dict[int, torch.Tensor] = {}
        x, rotary = self._embed(tokens)
        for index, block in enumerate(self.blocks):
            if index in wanted:
                maps[index] = block.attn.probabilities(block.ln_attn(x), max_heads, rotary)
            x = block(x, rotary)
            if len(maps) == len(wanted):
                break
        return maps

    def _embed(
        self, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        steps = tokens.size(1)
        if steps > self.max_seq_len:
            raise ValueError(
                f"sequence of {steps} tokens exceeds the model's {self.max_seq_len} positions"
            )
        x = self.token_embedding(tokens)
        rotary = None
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(steps, device=tokens.device))
        else:
            rotary = (self.rotary_cos, self.rotary_sin)
        return self.dropout(x), rotary

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x, rotary = self._embed(tokens)
        for block in self.blocks:
            x = block(x, rotary)
        return self.lm_head(self.ln_final(x))
