"""Overhead of each training diagnostic at its default cadence, against a run with none.

Trains the tiny Shakespeare model for a fixed number of steps once per variant (each in its
own ``baseline-run`` process, tokenizer and token cache warm), with the console logger asking
for one diagnostic at a time at the W&B defaults (diagnostics every 50 steps, attention
entropy every 200 with 2 heads x 128 tokens, validation every 250), then all of them, then
all of them through the ``wandb`` logger in offline mode when it is installed.

Two figures per variant: the whole process's wall time, and the training-loop time (the sum
of the step times, which includes the diagnostics but not validation). Target: all
diagnostics on at default cadences cost at most 10% of the run with none.

    python benchmarks/diagnostics.py [--steps 300] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from _common import machine, print_table, run_command

TARGET_RATIO = 1.10
DIAGNOSTICS = ("global_grad_norm", "activation_norms", "ln_grad_norms", "attention_entropy")
CADENCES = {
    "diagnostics_every_n_steps": 50,
    "attention_entropy_every_n_steps": 200,
    "attention_entropy_head_cap": 2,
    "attention_entropy_token_cap": 128,
}


def console(**fields: object) -> list[str]:
    """Overrides of the console logger's table."""
    return [f"logging.console.{key}={json.dumps(value)}" for key, value in fields.items()]


def variants(with_wandb: bool) -> dict[str, list[str]]:
    """Variant name -> ``--set`` overrides."""
    base = console(progress_bar=False, **CADENCES)
    every = console(**{f"enable_{d}": True for d in DIAGNOSTICS}, val_every_n_steps=250)
    found: dict[str, list[str]] = {"none": base}
    for diagnostic in DIAGNOSTICS:
        found[diagnostic] = base + console(**{f"enable_{diagnostic}": True})
    found["periodic validation"] = base + console(val_every_n_steps=250)
    found["all of them"] = base + every
    if with_wandb:
        found["all, wandb offline"] = [
            'logging.provider=["console", "wandb"]',
            *console(progress_bar=False),
            'logging.wandb.mode="offline"',
        ]
    found["none (again)"] = base
    return found


def run_once(overrides: list[str], root: Path, name: str, steps: int) -> tuple[float, float]:
    """Wall time of the process and the training-loop time from its step times."""
    command = run_command(
        root,
        name,
        f"run.token_cache_dir={json.dumps(str(root / 'cache'))}",
        "train.max_time_s=100000",
        f"train.max_steps={steps}",
        "run.checkpoint_every_n_steps=0",
        *overrides,
    )
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_DIR": str(root)}
    started = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    wall = time.perf_counter() - started
    records = [
        json.loads(line)
        for line in (root / "runs" / name / "metrics.jsonl").read_text().splitlines()
    ]
    loop_s, previous = 0.0, 0
    for record in records:
        if record["phase"] == "train":
            loop_s += record["step_time_ms"] / 1000 * (record["step"] - previous)
            previous = record["step"]
    return wall, loop_s


def per_call_costs(repeats: int = 30) -> list[list[str]]:
    """Each diagnostic's own cost against one training step of the experiment's model.

    Timed in-process on the experiment's model (vocab 8192, batch 16 x 64), so the figure
    does not drown in the run-to-run noise of whole runs.
    """
    import time as clock

    import torch

    from baseline.metrics.diagnostics import LayerDiagnostics
    from baseline_decoder import BaselineDecoder, BaselineDecoderConfig

    torch.manual_seed(0)
    model = BaselineDecoder(BaselineDecoderConfig(d_model=128, n_heads=4, layers=4)).build(8192, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 8192, (16, 65))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    probe = LayerDiagnostics(model, frozenset(DIAGNOSTICS))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 8192), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    def timed(work: object) -> float:
        assert callable(work)
        for _ in range(3):
            work()
        started = clock.perf_counter()
        for _ in range(repeats):
            work()
        return (clock.perf_counter() - started) / repeats

    step_s = timed(step)
    step()  # leaves gradients for the layer-norm diagnostic
    costs = {
        "global_grad_norm": (0.0, CADENCES["diagnostics_every_n_steps"]),
        "activation_norms": (
            timed(lambda: probe.activation_norms(inputs)),
            CADENCES["diagnostics_every_n_steps"],
        ),
        "ln_grad_norms": (timed(probe.ln_grad_norms), CADENCES["diagnostics_every_n_steps"]),
        "attention_entropy": (
            timed(lambda: probe.attention_entropy(inputs, 2, 128)),
            CADENCES["attention_entropy_every_n_steps"],
        ),
    }
    rows = [["training step", f"{step_s * 1000:.1f} ms", "every step", "-"]]
    total = 0.0
    for name, (cost_s, every) in costs.items():
        share = cost_s / (every * step_s)
        total += share
        rows.append([name, f"{cost_s * 1000:.2f} ms", f"every {every}", f"{share:.2%}"])
    rows.append(["all four", "-", "-", f"{total:.2%}"])
    return rows


def main() -> None:
    """Run every variant and print the overhead table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    try:
        import baseline_wandb  # noqa: F401

        with_wandb = True
    except ImportError:
        with_wandb = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Warm-up: trains the tokenizer and fills the token cache.
        run_once(console(progress_bar=False), root, "warmup", 5)
        results: dict[str, list[tuple[float, float]]] = {}
        for repeat in range(args.repeats):
            for index, (name, overrides) in enumerate(variants(with_wandb).items()):
                run_name = f"v{index}-r{repeat}"
                results.setdefault(name, []).append(run_once(overrides, root, run_name, args.steps))
    best = {
        name: (min(w for w, _ in runs), min(t for _, t in runs)) for name, runs in results.items()
    }
    none_wall = min(best["none"][0], best["none (again)"][0])
    none_loop = min(best["none"][1], best["none (again)"][1])
    rows = []
    for name, (wall, loop) in best.items():
        rows.append(
            [
                name,
                f"{wall:.1f} s",
                f"{wall / none_wall:.3f}",
                f"{loop:.1f} s",
                f"{loop / none_loop:.3f}",
            ]
        )
    print(machine())
    print_table(
        "cost of each diagnostic per measured step, and its share of training at its cadence",
        ["diagnostic", "cost per call", "cadence", "overhead"],
        per_call_costs(),
    )
    print(f"{args.steps} steps of experiments/tiny_shakespeare.toml, best of {args.repeats}")
    print_table(
        f"diagnostics overhead at default cadences (target: all of them <= {TARGET_RATIO:.2f}x)",
        ["variant", "wall", "wall / none", "training loop", "loop / none"],
        rows,
    )


if __name__ == "__main__":
    main()
