"""The torch module of the ``contract_decoder`` model (imported when a model is built)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn


class _Block(nn.Module):
    """Pre-norm block: causal self-attention written out (so its probabilities can be
    reported), then a GELU MLP."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln_attn = nn.LayerNorm(d_model, bias=False)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.ln_mlp = nn.LayerNorm(d_model, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(attention output (B, T, D), probabilities (B, H, T, T))`` of the normed ``x``."""
        batch, steps, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)
        shape = (batch, steps, self.n_heads, width // self.n_heads)
        q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(shape[-1])
        future = torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(1)
        probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        out = (probs @ v).transpose(1, 2).reshape(batch, steps, width)
        projected: torch.Tensor = self.proj(out)
        return projected, probs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.probabilities(self.ln_attn(x))[0]
        out: torch.Tensor = x + self.mlp(self.ln_mlp(x))
        return out


class ContractDecoderModule(nn.Module):
    """Token and position embeddings, ``layers`` blocks, a final norm and a tied head."""

    def __init__(self, vocab_size: int, seq_len: int, d_model: int, n_heads: int, layers: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads) for _ in range(layers))
        self.ln_final = nn.LayerNorm(d_model, bias=False)
        for embedding in (self.token_embedding, self.position_embedding):
            nn.init.normal_(embedding.weight, std=0.02)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.size(1), device=tokens.device)
        out: torch.Tensor = self.token_embedding(tokens) + self.position_embedding(positions)
        return out

    def diagnostic_layers(self) -> Sequence[nn.Module]:
        """The blocks, in order (:class:`~baseline.plugins.protocols.LayeredModel`)."""
        return list(self.blocks)

    def attention_probabilities(
        self, tokens: torch.Tensor, layers: Sequence[int], max_heads: int
    ) -> dict[int, torch.Tensor]:
        """The causal attention maps of ``layers`` (an ``AttentionProbe``)."""
        maps: dict[int, torch.Tensor] = {}
        x = self._embed(tokens)
        for index, block in enumerate(cast("list[_Block]", list(self.blocks))):
            if index in layers:
                maps[index] = block.probabilities(block.ln_attn(x))[1][:, :max_heads]
            x = block(x)
        return maps

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self._embed(tokens)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.ln_final(x) @ self.token_embedding.weight.T
        return logits
