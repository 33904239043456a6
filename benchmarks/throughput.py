"""Pipeline tokens/s against a bare PyTorch loop over the same model and batches.

Target: model_pipeline (console logging on) keeps at least 95% of the bare loop's tokens/s.
Both run the tiny Shakespeare experiment's model, optimizer settings and training windows
for the same number of steps; the first steps are excluded from both as warm-up.
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
        ],
    )
    result = model_pipeline(config)
    records = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in records if r["phase"] == "train" and WARMUP_STEPS < r["step"] <= STEPS]
    # Each record's rate covers the steps since the previous record; weight by steps.
    tokens = sum(r["tokens_per_second"] for r in train)
    return tokens / len(train)


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
    """Run both and print the comparison."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bare = bare_rate(workdir)
        pipeline = pipeline_rate(workdir)
        bare_again = bare_rate(workdir)  # bracket the pipeline run against drift
    reference = (bare + bare_again) / 2
    print(machine())
    print_table(
        f"training throughput, tiny Shakespeare model, steps {WARMUP_STEPS}-{STEPS}",
        ["loop", "tokens/s", "ratio to bare"],
        [
            ["bare PyTorch loop (mean of 2)", f"{reference:,.0f}", "1.00"],
            [
                "model_pipeline + console",
                f"{pipeline:,.0f}",
                f"{pipeline / reference:.3f} (target >= 0.95)",
            ],
        ],
    )


if __name__ == "__main__":
    main()
