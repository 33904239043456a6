"""The logger contract of ``baseline.testing`` (cadence, validation, resume, failures, two
processes) on real offline W&B runs, read back from their ``.wandb`` transaction logs. Needs
only the core and this plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wandb_transaction_log import read_runs

from baseline.testing.loggers import LoggedRun, LoggerContract

#: W&B's train cadence differs from ``[logging] log_every_n_steps`` (2) on purpose.
CADENCES = {
    "log_every_n_steps": 3,
    "diagnostics_every_n_steps": 3,
    "attention_entropy_every_n_steps": 4,
    "val_every_n_steps": 5,
}


class TestWandbContract(LoggerContract):
    provider = "wandb"
    # W&B marks a run by its exit code (non-zero: failed).
    finished_status, stopped_status, failed_status = "0", "143", "1"
    # Each process writes its own offline run (same id). After a crash the resumed process
    # logs the steps since the last checkpoint again: both logs hold them, W&B keeps the first.
    keeps_relogged_steps = True

    def logger_table(self, workdir: Path) -> dict[str, Any]:
        return dict(CADENCES)

    def read_back(self, run_dir: Path) -> LoggedRun:
        runs = read_runs(run_dir)  # oldest first, each with its exit record
        metrics: dict[str, list[tuple[int, float]]] = {}
        for run in runs:
            for step, row in sorted(run.rows.items()):
                for key, value in row.items():
                    if isinstance(value, int | float):
                        metrics.setdefault(key, []).append((step, float(value)))
        return LoggedRun(
            metrics=metrics,
            run_ids=[run.run_id for run in runs],
            status=str(runs[-1].exit_code),
        )
