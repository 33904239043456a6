"""The tiny Shakespeare run end to end: validation bits per byte and wall time vs target.

Runs `baseline-run experiments/tiny_shakespeare.toml` as a new user would, in a fresh
artifacts directory (so the tokenizer is trained and the token cache is cold), and times the
whole process. Target: val_bpb <= 2.15 within 120 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, print_table, run_command

TARGET_BPB = 2.15
TARGET_S = 120.0


def main() -> None:
    """Run the experiment and print the figures beside the targets."""
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        command = [*run_command(root, "quality"), *extra]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        records = [
            json.loads(line)
            for line in (root / "runs/quality/metrics.jsonl").read_text().splitlines()
        ]
    validation = [r for r in records if r["phase"] == "validation"]
    final = validation[-1]
    print(machine())
    print_table(
        "tiny Shakespeare quality (whole baseline-run process, cold tokenizer and cache)",
        ["figure", "measured", "target", "ratio"],
        [
            [
                "val bits per byte",
                f"{final['val_bpb']:.4f}",
                f"<= {TARGET_BPB}",
                f"{final['val_bpb'] / TARGET_BPB:.3f}",
            ],
            ["wall time", f"{wall:.1f} s", f"<= {TARGET_S:.0f} s", f"{wall / TARGET_S:.3f}"],
            ["val loss (nats/token)", f"{final['val_loss']:.4f}", "-", "-"],
            ["steps / tokens seen", f"{final['step']} / {final['tokens_seen']:,}", "-", "-"],
        ],
    )


if __name__ == "__main__":
    main()
