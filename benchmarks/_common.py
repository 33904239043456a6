"""Shared helpers for the benchmarks: paths and a results table."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "tiny_shakespeare.toml"
CORPUS = ROOT / "data" / "tinyshakespeare.txt"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def cpu_description(env: dict[str, str] | None = None) -> str:
    """The CPU model and the instruction sets that decide bf16's speed, from /proc/cpuinfo,
    with the kernels PyTorch uses (in ``env``: ``ATEN_CPU_CAPABILITY`` lowers them)."""
    import subprocess

    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    present = [name for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if name in flags]
    kernels = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    return f"{model} ({', '.join(present) or 'no AVX2'}; torch kernels {kernels})"


def machine(env: dict[str, str] | None = None) -> str:
    """A one-line description of where the figures come from."""
    import torch

    return (
        f"{cpu_description(env)}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python "
        f"{platform.python_version()}"
    )


def run_command(root: Path, run_name: str, *overrides: str) -> list[str]:
    """``baseline-run`` of the tiny Shakespeare experiment with its run directory and
    tokenizer file under ``root``, plus ``--set`` for each ``KEY=VALUE`` of ``overrides``."""
    command = [
        str(Path(sys.executable).parent / "baseline-run"),
        str(EXPERIMENT),
        "--set",
        f"run.artifacts_root={json.dumps(str(root / 'runs'))}",
        "--set",
        f"run.run_name={json.dumps(run_name)}",
        "--set",
        f"tokenizer.vocab_path={json.dumps(str(root / 'bpe.json'))}",
    ]
    for override in overrides:
        command += ["--set", override]
    return command


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """Print a rich table to stdout."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*row)
    # A file or pipe gets whole rows, not a table wrapped at 80 columns.
    Console(width=None if sys.stdout.isatty() else 240).print(table)
