"""Wall time of `baseline --help`, `baseline plugins` and `baseline runs` (target: under 0.5 s
each), and the heavy libraries `baseline plugins` imports (target: none).

`baseline plugins` imports every plugin's entry-point module; the plugins must keep their
heavy libraries (torch, wandb, datasets, tensorboard, mlflow, transformers) for when a run
uses them. Run it with those plugins installed (`nox -s "bench(benchmark='startup')"`
installs them) for the import check to mean something.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_table

TARGET_S = 0.5
RUNS = 7
#: Libraries that `baseline plugins` must not import.
HEAVY = ("torch", "wandb", "datasets", "tensorboard", "mlflow", "matplotlib", "transformers")
IMPORT_CHECK = (
    "import sys\n"
    "from baseline.cli import main\n"
    "main(['plugins'])\n"
    f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n"
)


def wall_time(command: list[str]) -> float:
    """Median wall time of ``command`` over a few runs (after one warm-up run)."""
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def heavy_imports() -> str:
    """The heavy libraries `baseline plugins` imported, and which plugins were installed."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], check=True, capture_output=True, text=True
    )
    line = next(line for line in result.stderr.splitlines() if line.startswith("HEAVY "))
    found = line.removeprefix("HEAVY ")
    return "none" if found == "[]" else found


def installed_plugins() -> str:
    from importlib.metadata import entry_points

    names = sorted(ep.name for ep in entry_points(group="baseline.plugins"))
    return ", ".join(names)


def main() -> None:
    """Measure and print the table."""
    baseline = str(Path(sys.executable).parent / "baseline")
    python_only = wall_time([sys.executable, "-c", "pass"])
    rows = []
    with tempfile.TemporaryDirectory() as empty_root:
        commands = (
            ("baseline --help", ["--help"]),
            ("baseline plugins", ["plugins"]),
            ("baseline runs (no runs)", ["runs", empty_root]),
        )
        for label, args in commands:
            seconds = wall_time([baseline, *args])
            rows.append(
                [label, f"{seconds:.3f} s", f"{TARGET_S:.1f} s", f"{seconds / TARGET_S:.2f}"]
            )
    rows.append(["python -c pass (floor)", f"{python_only:.3f} s", "-", "-"])
    print_table(f"startup (median of {RUNS})", ["command", "wall time", "target", "ratio"], rows)
    print(f"heavy libraries imported by `baseline plugins`: {heavy_imports()} (target: none)")
    print(f"plugins installed: {installed_plugins()}")


if __name__ == "__main__":
    main()
