"""Wall time of `baseline --help` and `baseline plugins` (target: under 0.5 s each)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import print_table

TARGET_S = 0.5
RUNS = 7


def wall_time(command: list[str]) -> float:
    """Median wall time of ``command`` over a few runs (after one warm-up run)."""
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Measure and print the table."""
    baseline = str(Path(sys.executable).parent / "baseline")
    python_only = wall_time([sys.executable, "-c", "pass"])
    rows = []
    for label, args in (("baseline --help", ["--help"]), ("baseline plugins", ["plugins"])):
        seconds = wall_time([baseline, *args])
        rows.append([label, f"{seconds:.3f} s", f"{TARGET_S:.1f} s", f"{seconds / TARGET_S:.2f}"])
    rows.append(["python -c pass (floor)", f"{python_only:.3f} s", "-", "-"])
    print_table(f"startup (median of {RUNS})", ["command", "wall time", "target", "ratio"], rows)


if __name__ == "__main__":
    main()
