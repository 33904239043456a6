"""Pipeline tokens/s against a bare PyTorch loop over the same model and batches.

Target: model_pipeline (console logging on) keeps at least 97% of the bare loop's tokens/s.
Both run the tiny Shakespeare experiment's model, optimizer settings (and its precision plan)
and training windows for the same number of steps; the first steps are excluded from both as
warm-up. ROUNDS interleaved rounds (bare, pipeline, bare, ...) so that drift of a shared
machine hits both alike; each round's pipeline figure is compared with the mean of the bare
runs on either side of it.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import EXPERIMENT, machine, print_table

from baseline.data.windows import TrainWindows
from baseline.experiment.loading import load_experiment
from baseline.experiment.validation import validate_experiment_config
from baseline.pipeline import model_pipeline, prepare_data, seed_everything
from baseline.plugins.discovery import default_plugins
from baseline.train.optim import build_optimizer

STEPS = 120
WARMUP_STEPS = 20
ROUNDS = 3


def pipeline_rate(workdir: Path) -> float:
    """Tokens/s of model_pipeline over steps WARMUP_STEPS..STEPS, from metrics.jsonl."""
    registry = default_plugins().registry
    config = load_experiment(
        EXPERIMENT,
        registry,
        [
            f"run.artifacts_root={json.dumps(str(workdir))}",
            "run.run_name=throughput",
            f"train.max_steps={STEPS}",
            "logging.log_every_n_steps=10",
            "train.max_time_s=100000",
        ],
    )
    result = model_pipeline(config)
    records = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in records if r["phase"] == "train" and WARMUP_STEPS < r["step"] <= STEPS]
    # Each record's rate covers the steps since the previous one: total tokens / total time.
    previous = [r for r in records if r["phase"] == "train" and r["step"] <= WARMUP_STEPS][-1]
    tokens = train[-1]["tokens_seen"] - previous["tokens_seen"]
    seconds, last = 0.0, previous["tokens_seen"]
    for record in train:
        seconds += (record["tokens_seen"] - last) / record["tokens_per_second"]
        last = record["tokens_seen"]
    return tokens / seconds


def bare_rate(workdir: Path) -> float:
    """Tokens/s of a plain loop: same model, AdamW groups, LR, clipping and batches."""
    registry = default_plugins().registry
    config = load_experiment(
        EXPERIMENT, registry, [f"run.artifacts_root={json.dumps(str(workdir))}"]
    )
    resolved = validate_experiment_config(config, registry)
    seed_everything(config.run.seed)
    components = resolved.build_components()
    data = prepare_data(config, components, dict(resolved.config_data))
    train = config.train
    windows = TrainWindows(
        data.tokens,
        data.train_ranges,
        seq_len=train.seq_len,
        stride=train.effective_stride,
        batch_size=train.batch_size,
        data_fraction=train.data_fraction,
        seed=config.run.seed,
    )
    model = components.model.build(components.tokenizer.vocab_size, train.seq_len)
    optimizer = build_optimizer(model, train)
    batches = windows.batches(0)
    started = 0.0
    for step in range(STEPS):
        if step == WARMUP_STEPS:
            started = time.perf_counter()
        batch = next(batches)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip_norm)
        optimizer.step()
    elapsed = time.perf_counter() - started
    return (STEPS - WARMUP_STEPS) * train.batch_size * train.seq_len / elapsed


def main() -> None:
    """Run the interleaved rounds and print the comparison."""
    bare: list[float] = []
    pipeline: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bare.append(bare_rate(workdir / "bare-0"))
        for round_ in range(ROUNDS):
            pipeline.append(pipeline_rate(workdir / f"pipeline-{round_}"))
            bare.append(bare_rate(workdir / f"bare-{round_ + 1}"))
    print(machine())
    rows = []
    for round_, rate in enumerate(pipeline):
        reference = (bare[round_] + bare[round_ + 1]) / 2
        rows.append(
            [f"round {round_ + 1}", f"{reference:,.0f}", f"{rate:,.0f}", f"{rate / reference:.3f}"]
        )
    reference = sum(bare) / len(bare)
    mean = sum(pipeline) / len(pipeline)
    rows.append(["all rounds", f"{reference:,.0f}", f"{mean:,.0f}", f"{mean / reference:.3f}"])
    print_table(
        f"training throughput, tiny Shakespeare model, steps {WARMUP_STEPS}-{STEPS}, tokens/s "
        "(target: pipeline >= 0.97 of bare in every round)",
        [
            "round",
            "bare PyTorch loop (mean of the two around it)",
            "model_pipeline + console",
            "ratio",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
