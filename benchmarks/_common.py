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


def machine() -> str:
    """A one-line description of where the figures come from."""
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
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
    Console().print(table)
