"""Muon's optimizer step: ``BatchedMuon`` against ``torch.optim.Muon`` on the same matrices.

Both step the hidden matrices of the tiny Shakespeare experiment's model (built from
``experiments/tiny_shakespeare.toml``) with the same gradients; the figure is milliseconds
per step, interleaved rounds so that drift of a shared machine hits both alike.
"""

from __future__ import annotations

import statistics
import time
import tomllib

import torch
from _common import EXPERIMENT, machine, print_table

from baseline.config import TrainConfig
from baseline.train.muon import BatchedMuon
from baseline.train.optim import muon_parameters

ROUNDS = 5
STEPS = 40


def step_ms(optimizer: torch.optim.Optimizer) -> float:
    """Mean milliseconds of one ``step`` over STEPS steps."""
    started = time.perf_counter()
    for _ in range(STEPS):
        optimizer.step()
    return (time.perf_counter() - started) / STEPS * 1000


def main() -> None:
    """Time both optimizers on the experiment's model and print the comparison."""
    from baseline_decoder import BaselineDecoder, BaselineDecoderConfig

    experiment = tomllib.loads(EXPERIMENT.read_text())
    model_keys = {k: v for k, v in experiment["model"].items() if k != "name"}
    vocab = int(experiment["tokenizer"]["base_vocab_size"]) + 1
    torch.manual_seed(0)
    model = BaselineDecoder(BaselineDecoderConfig(**model_keys)).build(
        vocab, int(experiment["train"]["seq_len"])
    )
    matrices = muon_parameters(model, vocab)
    for matrix in matrices:
        matrix.grad = torch.randn_like(matrix)
    train = TrainConfig(**{k: experiment["train"][k] for k in ("learning_rate", "weight_decay")})
    settings = {  # as build_optimizer gives them
        "lr": train.learning_rate,
        "weight_decay": train.weight_decay,
        "momentum": train.muon_momentum,
        "nesterov": True,
        "adjust_lr_fn": "match_rms_adamw",
    }
    reference = torch.optim.Muon(matrices, **settings)
    batched = BatchedMuon(matrices, **settings)
    step_ms(reference), step_ms(batched)  # warm up
    torch_times, batched_times = [], []
    for _ in range(ROUNDS):
        torch_times.append(step_ms(reference))
        batched_times.append(step_ms(batched))
    torch_ms, batched_ms = statistics.median(torch_times), statistics.median(batched_times)
    shapes = sorted({tuple(m.shape) for m in matrices})
    print(machine())
    print_table(
        f"Muon step, {len(matrices)} matrices of shapes {shapes}, median of {ROUNDS} rounds",
        ["optimizer", "ms per step", "ratio to torch.optim.Muon"],
        [
            ["torch.optim.Muon (reference)", f"{torch_ms:.1f}", "1.00"],
            ["BatchedMuon", f"{batched_ms:.1f}", f"{batched_ms / torch_ms:.2f}"],
        ],
    )


if __name__ == "__main__":
    main()
