"""The logger contract of ``baseline.testing`` (cadence, validation, resume, failures, two
processes) on real runs in a local SQLite tracking store, read back with ``MlflowClient``.
Needs only the core and this plugin."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlflow_store import read_run, run_ids

from baseline.testing.loggers import LoggedRun, LoggerContract
from baseline_mlflow import RUN_ID_FILENAME

CADENCES = {
    "diagnostics_every_n_steps": 3,
    "attention_entropy_every_n_steps": 4,
    "val_every_n_steps": 5,
}


@functools.cache
def empty_store() -> Path:
    """A store with MLflow's tables and no runs (creating the tables takes seconds)."""
    from mlflow.tracking import MlflowClient

    directory = Path(tempfile.mkdtemp(prefix="baseline-mlflow-contract-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    MlflowClient(tracking_uri=f"sqlite:///{directory / 'mlflow.db'}").search_experiments()
    return directory / "mlflow.db"


def tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'store' / 'mlflow.db'}"


class TestMlflowContract(LoggerContract):
    provider = "mlflow"
    finished_status, stopped_status, failed_status = "FINISHED", "KILLED", "FAILED"
    # After a crash the resumed run logs the steps since the last checkpoint again, and
    # MLflow keeps both points of each (see the README).
    keeps_relogged_steps = True

    def logger_table(self, workdir: Path) -> dict[str, Any]:
        database = workdir / "store" / "mlflow.db"
        if not database.exists():
            database.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(empty_store(), database)
        return {**CADENCES, "tracking_uri": tracking_uri(workdir)}

    def read_back(self, run_dir: Path) -> LoggedRun:
        uri = tracking_uri(run_dir.parent.parent)
        run = read_run(uri, (run_dir / RUN_ID_FILENAME).read_text(encoding="utf-8").strip())
        return LoggedRun(metrics=run.metrics, run_ids=run_ids(uri, "test"), status=run.status)
