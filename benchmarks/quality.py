"""The tiny Shakespeare run end to end against a bare PyTorch reference, in one invocation.

1. `baseline-run experiments/tiny_shakespeare.toml` as a new user runs it, in a fresh
   artifacts directory (the tokenizer is fitted on the training segments, the token cache
   is cold), the whole process timed.
2. `reference_gpt.py`: a bare PyTorch loop with nanoGPT's CPU recipe on a BPE of the same
   vocabulary, also fitted on the training segments only, for the same training time, on
   the same validation segments and the same bits-per-byte definition.

Targets: val_bpb <= 2.15 within 120 s for the whole command, and below the reference.
Pass `--skip-reference` to run only baseline; other arguments go to `baseline-run`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from _common import EXPERIMENT, machine, print_table, run_command

TARGET_BPB = 2.15
TARGET_S = 120.0
REFERENCE = Path(__file__).with_name("reference_gpt.py")


def run_baseline(extra: list[str]) -> tuple[dict[str, float], dict[str, int], float]:
    """The final validation record, the run's data sizes and the wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        subprocess.run(
            [*run_command(root, "quality"), *extra], check=True, stdout=subprocess.DEVNULL
        )
        wall = time.perf_counter() - started
        run_dir = root / "runs" / "quality"
        records = [
            json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]
        data = json.loads((run_dir / "run_config.json").read_text())["data"]
    final = [r for r in records if r["phase"] == "validation"][-1]
    return final, data, wall


def run_reference(vocab: int, seconds: float) -> tuple[dict[str, float], float]:
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, str(REFERENCE), "--vocab", str(vocab), "--seconds", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def main() -> None:
    """Run both and print the figures side by side with their ratio."""
    extra = [a for a in sys.argv[1:] if a != "--skip-reference"]
    experiment = tomllib.loads(EXPERIMENT.read_text())
    vocab = int(experiment["tokenizer"]["base_vocab_size"])
    seconds = float(experiment["train"]["max_time_s"])
    final, data, wall = run_baseline(extra)
    rows = [
        [
            "val bits per byte",
            f"{final['val_bpb']:.4f}",
            f"<= {TARGET_BPB}",
            f"{final['val_bpb'] / TARGET_BPB:.3f}",
        ],
        ["whole command", f"{wall:.1f} s", f"<= {TARGET_S:.0f} s", f"{wall / TARGET_S:.3f}"],
        ["steps / tokens seen", f"{final['step']} / {final['tokens_seen']:,}", "-", "-"],
        [
            "validation",
            f"{data['validation_segments']:,} segments, {data['validation_bytes']:,} bytes",
            "-",
            "-",
        ],
    ]
    print(machine())
    print_table(
        "tiny Shakespeare: baseline-run (cold tokenizer and cache) against its targets",
        ["figure", "baseline", "target", "ratio"],
        rows,
    )
    if "--skip-reference" in sys.argv:
        return
    reference, reference_wall = run_reference(vocab, seconds)
    print_table(
        f"same corpus, split and bits-per-byte definition; {seconds:.0f} s of training each",
        [
            "figure",
            "baseline",
            "bare PyTorch reference (nanoGPT CPU recipe)",
            "baseline / reference",
        ],
        [
            [
                "val bits per byte",
                f"{final['val_bpb']:.4f}",
                f"{reference['val_bpb']:.4f}",
                f"{final['val_bpb'] / reference['val_bpb']:.3f}",
            ],
            [
                "tokens seen",
                f"{final['tokens_seen']:,}",
                f"{reference['tokens_seen']:,}",
                f"{final['tokens_seen'] / reference['tokens_seen']:.2f}",
            ],
            [
                "whole process",
                f"{wall:.1f} s",
                f"{reference_wall:.1f} s",
                f"{wall / reference_wall:.2f}",
            ],
            [
                "validation",
                f"{data['validation_segments']:,} seg, {data['validation_bytes']:,} B",
                f"{reference['validation_segments']:,} seg, {reference['validation_bytes']:,} B",
                "-",
            ],
        ],
    )


if __name__ == "__main__":
    main()
