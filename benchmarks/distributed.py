"""Throughput of the tiny Shakespeare model with 2 processes (DDP, gloo) against 1 process.

Both runs use the same global batch and the same number of steps; tokens/s is the global
rate logged by the pipeline, averaged over the records after the first WARMUP_STEPS.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from _common import machine, print_table, run_command

STEPS = 80
WARMUP_STEPS = 20


def rate(nproc: int, root: Path) -> float:
    """Mean global tokens/s of a run with ``nproc`` processes."""
    name = f"procs{nproc}"
    command = run_command(root, name, f"train.max_steps={STEPS}", "logging.log_every_n_steps=10")
    env = dict(os.environ)
    if nproc > 1:
        command += ["--nproc", str(nproc)]
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    subprocess.run(
        command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    lines = (root / "runs" / name / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    rates = [
        r["tokens_per_second"]
        for r in records
        if r["phase"] == "train" and r["step"] > WARMUP_STEPS
    ]
    return sum(rates) / len(rates)


def main() -> None:
    """Run 1 and 2 processes and print the comparison."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one = rate(1, root)
        two = rate(2, root)
    print(machine())
    print_table(
        f"DDP throughput, tiny Shakespeare model, steps {WARMUP_STEPS}-{STEPS}",
        ["processes", "global tokens/s", "ratio to 1 process"],
        [["1", f"{one:,.0f}", "1.00"], ["2 (gloo)", f"{two:,.0f}", f"{two / one:.2f}"]],
    )


if __name__ == "__main__":
    main()
