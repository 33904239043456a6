"""Shared helpers for the benchmarks: paths and a results table."""

from __future__ import annotations

import os
import platform
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


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """Print a rich table to stdout."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
