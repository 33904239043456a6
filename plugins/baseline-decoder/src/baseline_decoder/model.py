"""The decoder network (imports torch)."""

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


def make_norm(config: BaselineDecoderConfig, size: int) -> nn.Module:
    """The configured norm over the last ``size`` channels: LayerNorm (with a bias when
    ``bias``) or RMSNorm (never a bias)."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(size, eps=1e-5)
    return nn.LayerNorm(size, bias=config.bias)


class CausalSelfAttention(nn.Module):
    """Causal self-attention through ``scaled_dot_product_attention``.

    ``n_heads`` query heads share ``n_kv_heads`` key/value heads in groups of
    ``n_heads / n_kv_heads`` (query head ``i`` uses key/value head ``i // group``); with
    ``qk_norm`` queries and keys are normalised per head before RoPE.
    """

    def __init__(self, config: BaselineDecoderConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.kv_heads
        self.head_size = config.head_size
        kv_width = self.n_kv_heads * self.head_size
        # one projection for q (d_model wide), k and v (kv_width wide each), in that order
        self.qkv = nn.Linear(config.d_model, config.d_model + 2 * kv_width, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.q_norm: nn.Module | None = None
        self.k_norm: nn.Module | None = None
        if config.qk_norm:
            self.q_norm = make_norm(config, self.head_size)
            self.k_norm = make_norm(config, self.head_size)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def heads(
        self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries ``(B, n_heads, T, h)``, keys and values ``(B, n_kv_heads, T, h)``:
        projected, q/k-normalised and rotated as attention uses them."""
        batch, steps, width = x.shape
        kv_width = self.n_kv_heads * self.head_size
        q, k, v = self.qkv(x).split((width, kv_width, kv_width), dim=2)
        q = q.view(batch, steps, self.n_heads, self.head_size).transpose(1, 2)
        kv_shape = (batch, steps, self.n_kv_heads, self.head_size)
        k, v = (t.view(kv_shape).transpose(1, 2) for t in (k, v))
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        return q, k, v

    def forward(
        self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        batch, steps, width = x.shape
        q, k, v = self.heads(x, rotary)
        # enable_gqa lets the kernel share each k/v head with its group of query heads, without
        # materialising repeated k and v (faster than repeat_interleave on CPU, see the docs)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )
        y = y.transpose(1, 2).contiguous().view(batch, steps, width)
        return self.resid_dropout(self.proj(y))

    def probabilities(
        self, x: torch.Tensor, max_heads: int, rotary: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        """Causal attention probabilities ``(B, H, T, T)`` of the first ``max_heads`` query
        heads, each against the key head it shares."""
        heads = min(max_heads, self.n_heads)
        steps = x.size(1)
        q, k, _ = self.heads(x, rotary)
        q = q[:, :heads]
        # query head i attends with key head i // group
        group = self.n_heads // self.n_kv_heads
        k = k[:, :heads] if group == 1 else k[:, torch.arange(heads, device=x.device) // group]
        # fp32 scores and softmax, as the fused attention keeps them, even under bf16 autocast
        # (which would otherwise run the matmul and the softmax in bf16)
        with torch.autocast(x.device.type, enabled=False):
            scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(self.head_size)
            future = torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(1)
            return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


class MLP(nn.Module):
    """Position-wise feed-forward block: GELU, squared ReLU, or SwiGLU.

    ``fc`` maps to the hidden width (for SwiGLU to twice it: the gate's rows, then the
    up-projection's), ``proj`` back to ``d_model``.
    """

    def __init__(self, config: BaselineDecoderConfig) -> None:
        super().__init__()
        self.kind = config.mlp
        hidden = config.mlp_hidden
        inner = 2 * hidden if config.mlp == "swiglu" else hidden
        self.fc = nn.Linear(config.d_model, inner, bias=config.bias)
        self.proj = nn.Linear(hidden, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h, approximate="tanh")
        return self.dropout(self.proj(h))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: BaselineDecoderConfig) -> None:
        super().__init__()
        self.ln_attn = make_norm(config, config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_mlp = make_norm(config, config.d_model)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x), rotary)
        return x + self.mlp(self.ln_mlp(x))


class DecoderModel(nn.Module):
    """Decoder-only transformer: ``(batch, steps)`` token ids -> ``(batch, steps, vocab)`` logits.

    The defaults give a GPT-2 style model; ``norm``, ``mlp``, ``n_kv_heads``, ``qk_norm`` and
    ``position_encoding`` turn it into a Llama-style one piece by piece.
    """

    def __init__(self, config: BaselineDecoderConfig, *, vocab_size: int, max_seq_len: int) -> None:
        super().__init__()
        self.config = config
        self.max_seq_len = max_seq_len
        self.token_embedding = nn.Embedding(vocab_size, config.d_model)
        self.position_embedding: nn.Embedding | None = None
        if config.position_encoding == "learned":
            self.position_embedding = nn.Embedding(max_seq_len, config.d_model)
        else:
            cos, sin = rotary_tables(max_seq_len, config.head_size, config.rope_base)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_final = make_norm(config, config.d_model)
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
        """Training FLOPs per token (forward and backward): 6 per weight plus attention.

        The weights are every parameter but the position table (a tied head counts once);
        grouped-query attention shows up there as smaller key/value projections. The attention
        term, ``12 * layers * n_heads * head_size * seq_len``, counts the scores and the
        weighted sum of every query head, which grouping does not reduce.
        """
        weights = sum(p.numel() for p in self.parameters())
        if self.position_embedding is not None:
            weights -= self.position_embedding.weight.numel()
        config = self.config
        attention = 12 * config.layers * config.n_heads * config.head_size * seq_len
        return 6 * weights + attention

    def diagnostic_layers(self) -> Sequence[nn.Module]:
        """The transformer blocks, for the core's layer diagnostics."""
        return list(self.blocks)

    def fsdp_units(self) -> Sequence[nn.Module]:
        """The transformer blocks: under ``train.parallelism = "fsdp"`` each is sharded (and
        gathered for its forward pass) on its own; the rest of the model is one more unit."""
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
