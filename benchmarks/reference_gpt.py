"""The references for `quality.py`: bare PyTorch GPT loops on tiny Shakespeare, no baseline code.

Two recipes, each trained for the same wall-clock budget as the experiment:

- ``nanogpt``: nanoGPT's CPU recipe (4 layers, 4 heads, 128 wide, context 64, batch 12, AdamW
  with betas (0.9, 0.99), weight decay 0.1, 100 warmup steps, cosine decay to lr/10, learned
  positions, GELU), with the learning rate and BPE vocabulary given on the command line
  (``quality.py --tune`` chooses them on the machine at hand; nanoGPT's own lr is 1e-3).
- ``modern``: RoPE, RMS-normalised queries and keys, ReLU² MLP, untied output layer,
  ``torch.optim.Muon`` (weight decay 0.3) for the hidden matrices and AdamW for the rest,
  batch 16, 100 warmup steps, cosine decay by time.

Both are as honest as baseline must be: the corpus is split into the same segments by
cumulative UTF-8 bytes (the first 90% train), the tokenizer learns from the training segments
only, and bits per byte divide the validation nats by the validation bytes including one
delimiter per segment (what each end-of-segment token stands for).

Run: ``python benchmarks/reference_gpt.py --recipe nanogpt --vocab 2048 --lr 3e-3 --seconds 100``
prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn

CORPUS = Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare.txt"
DELIMITER = "\n\n"


class Block(nn.Module):
    """Pre-norm attention and GELU MLP, as in nanoGPT."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln2(x))


def rotate(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding of ``(batch, heads, time, head_dim)`` queries or keys."""
    t, half = x.size(2), x.size(3) // 2
    frequencies = base ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = torch.outer(torch.arange(t, dtype=torch.float32), frequencies)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class ModernBlock(nn.Module):
    """Pre-norm (RMSNorm) attention with RoPE and RMS QK-norm, and a ReLU² MLP, no biases."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads, head_dim = heads, width // heads
        self.norm1, self.norm2 = nn.RMSNorm(width), nn.RMSNorm(width)
        self.q_norm, self.k_norm = nn.RMSNorm(head_dim), nn.RMSNorm(head_dim)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.up = nn.Linear(width, 4 * width, bias=False)
        self.down = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        q, k = rotate(self.q_norm(q)), rotate(self.k_norm(k))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.down(F.relu(self.up(self.norm2(x))).square())


class ModernGPT(nn.Module):
    """Token embeddings (no positions: RoPE), modern blocks, final RMSNorm, untied head."""

    def __init__(self, vocab: int, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(ModernBlock(width, heads) for _ in range(layers))
        self.norm = nn.RMSNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class GPT(nn.Module):
    """Token and position embeddings, blocks, final LayerNorm, tied output layer."""

    def __init__(self, vocab: int, context: int, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.size(1)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def split_segments(text: str, fraction: float) -> tuple[list[str], list[str]]:
    """Non-blank segments; the first ones up to ``fraction`` of the bytes train."""
    segments = [s for s in text.split(DELIMITER) if s.strip()]
    cumulative = np.cumsum([len(s.encode("utf-8")) for s in segments])
    cut = int(np.searchsorted(cumulative, fraction * cumulative[-1], side="left")) + 1
    cut = min(max(cut, 1), len(segments) - 1)
    return segments[:cut], segments[cut:]


def tokenize(tokenizer: Tokenizer, segments: list[str], eos: int) -> np.ndarray:
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(segments):
        ids.extend(encoding.ids)
        ids.append(eos)
    return np.asarray(ids, dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", choices=["nanogpt", "modern"], default="nanogpt")
    parser.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary (without EOS)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--seconds", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    train_segments, val_segments = split_segments(CORPUS.read_text(encoding="utf-8"), 0.9)

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(train_segments, trainer=trainer)  # training text only
    eos = args.vocab
    train_ids = torch.from_numpy(tokenize(tokenizer, train_segments, eos))
    val_ids = torch.from_numpy(tokenize(tokenizer, val_segments, eos))
    val_bytes = sum(len(s.encode("utf-8")) + len(DELIMITER) for s in val_segments)

    context, warmup = 64, 100
    model: nn.Module
    optimizers: list[torch.optim.Optimizer]
    if args.recipe == "nanogpt":
        batch, lr = 12, args.lr or 1e-3
        model = GPT(args.vocab + 1, context, width=128, heads=4, layers=4)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        optimizers = [
            torch.optim.AdamW(
                [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                lr=lr,
                betas=(0.9, 0.99),
            )
        ]
    else:
        batch, lr = 16, args.lr or 8e-3
        model = ModernGPT(args.vocab + 1, width=128, heads=4, layers=4)
        hidden = [p for name, p in model.named_parameters() if p.dim() == 2 and "blocks" in name]
        hidden_ids = {id(p) for p in hidden}
        rest = [p for p in model.parameters() if id(p) not in hidden_ids]
        optimizers = [
            torch.optim.Muon(
                hidden, lr=lr, weight_decay=0.3, momentum=0.95, adjust_lr_fn="match_rms_adamw"
            ),
            torch.optim.AdamW(rest, lr=lr, betas=(0.9, 0.99), weight_decay=0.0),
        ]
    min_lr = lr / 10
    generator = torch.Generator().manual_seed(args.seed)
    train_started = time.perf_counter()
    step = 0
    while (elapsed := time.perf_counter() - train_started) < args.seconds:
        progress = elapsed / args.seconds
        factor = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * progress))
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = min_lr + (lr - min_lr) * factor if step >= warmup else lr * factor
        starts = torch.randint(len(train_ids) - context - 1, (batch,), generator=generator)
        rows = torch.stack([train_ids[s : s + context + 1] for s in starts.tolist()])
        logits = model(rows[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1))
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for optimizer in optimizers:
            optimizer.step()
        step += 1
    train_seconds = time.perf_counter() - train_started

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        starts = list(range(0, len(val_ids) - context - 1 + 1, context))
        for first in range(0, len(starts), 64):
            rows = torch.stack([val_ids[s : s + context + 1] for s in starts[first : first + 64]])
            logits = model(rows[:, :-1])
            total += F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1), reduction="sum"
            ).item()
            count += rows[:, 1:].numel()
    val_loss = total / count
    val_bpb = val_loss / math.log(2) * len(val_ids) / val_bytes
    print(
        json.dumps(
            {
                "recipe": args.recipe,
                "vocab": args.vocab,
                "lr": lr,
                "val_bpb": val_bpb,
                "val_loss": val_loss,
                "steps": step,
                "tokens_seen": step * batch * context,
                "train_seconds": train_seconds,
                "wall_seconds": time.perf_counter() - started,
                "validation_segments": len(val_segments),
                "validation_bytes": val_bytes,
            }
        )
    )


if __name__ == "__main__":
    main()
