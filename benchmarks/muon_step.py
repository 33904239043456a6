"""Muon's optimizer step: ``BatchedMuon`` against ``torch.optim.Muon`` on the same matrices.

Both step the hidden matrices of the tiny Shakespeare experiment's model (built from
``experiments/tiny_shakespeare.toml``) with the same gradients; the figure is milliseconds
per step, interleaved rounds so that drift of a shared machine hits both alike. BatchedMuon
runs its Newton-Schulz iterations in bf16 (as torch's) and in float32: on a CPU without native
bf16 (no AVX512-BF16 or AMX) float32 is far faster, which is why ``train.optimizer_precision``
chooses by the hardware (the last line says what this machine's plan picks).
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
from baseline.train.precision import PrecisionPlan

ROUNDS = 5
STEPS = 40


def step_ms(optimizer: torch.optim.Optimizer) -> float:
    """Mean milliseconds of one ``step``: STEPS steps, or fewer (at least 3) once 2 s have
    passed (emulated bf16 takes seconds a step)."""
    started = time.perf_counter()
    steps = 0
    while steps < STEPS and (steps < 3 or time.perf_counter() - started < 2.0):
        optimizer.step()
        steps += 1
    return (time.perf_counter() - started) / steps * 1000


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
    batched = {
        name: BatchedMuon(matrices, ns_dtype=dtype, **settings)
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))
    }
    optimizers = {"torch": reference, **batched}
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for optimizer in optimizers.values():
        step_ms(optimizer)  # warm up
    for _ in range(ROUNDS):
        for name, optimizer in optimizers.items():
            times[name].append(step_ms(optimizer))
    ms = {name: statistics.median(values) for name, values in times.items()}
    shapes = sorted({tuple(m.shape) for m in matrices})
    plan = PrecisionPlan.decide("auto", "auto", torch.device("cpu"))
    print(machine())
    print_table(
        f"Muon step, {len(matrices)} matrices of shapes {shapes}, median of {ROUNDS} rounds",
        ["optimizer", "ms per step", "ratio to torch.optim.Muon"],
        [
            ["torch.optim.Muon, bf16 (reference)", f"{ms['torch']:.1f}", "1.00"],
            ["BatchedMuon, bf16", f"{ms['bf16']:.1f}", f"{ms['bf16'] / ms['torch']:.2f}"],
            ["BatchedMuon, float32", f"{ms['fp32']:.1f}", f"{ms['fp32'] / ms['torch']:.2f}"],
        ],
    )
    print(f"auto on this machine: Newton-Schulz {plan.newton_schulz} ({plan.hardware})")


if __name__ == "__main__":
    main()
