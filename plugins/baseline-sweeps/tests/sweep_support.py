"""Helpers of the sweep tests (a unique module name: each test folder has its own conftest)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baseline.testing import tiny_experiment_data, write_experiment

BIN = Path(sys.executable).parent
#: The PostgreSQL server of ``nox -s sweeps_postgres``.
POSTGRES_ENV = "BASELINE_SWEEPS_POSTGRES_URL"


def experiment(
    workdir: Path, *, max_steps: int = 30, val_every: int = 5, checkpoint_every: int = 5
) -> Path:
    """A tiny experiment (d_model 32, 2 layers, byte-level BPE of 302 ids) training
    ``max_steps`` steps of 8 windows of 16 tokens, validating every ``val_every`` steps."""
    data = tiny_experiment_data(workdir)
    data["train"].pop("epochs")
    data["train"]["max_steps"] = max_steps
    data["train"]["num_threads"] = 1
    data["run"]["checkpoint_every_n_steps"] = checkpoint_every
    data["logging"]["console"] = {"val_every_n_steps": val_every}
    return write_experiment(workdir / "exp.toml", data)


def env() -> dict[str, str]:
    """The tests' environment: one thread per trial (the test machine is small and shared:
    several threads per process only wait for each other there)."""
    variables = {
        k: v for k, v in os.environ.items() if k not in ("BASELINE_DEBUG", "MLFLOW_EXPERIMENT_NAME")
    }
    return {**variables, "OMP_NUM_THREADS": "1"}


def baseline(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``baseline ARGS`` run to its end."""
    return subprocess.run(
        [str(BIN / "baseline"), *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """``baseline ARGS`` started in the background (stdout and stderr together)."""
    return subprocess.Popen(
        [str(BIN / "baseline"), *args],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.1)


def table(name: str, cwd: Path, root: Path, *extra: str) -> list[dict[str, Any]]:
    """``baseline sweep table NAME --format json``, parsed."""
    result = baseline(
        "sweep", "table", name, "--root", str(root), "--format", "json", *extra, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def rows(name: str, root: Path) -> list[dict[str, Any]]:
    """The rows ``baseline sweep table NAME --format json`` prints, read in this process."""
    from baseline_sweeps.results import json_row, point_rows
    from baseline_sweeps.store import Store, connect, default_url

    directory = root / name
    store = Store(directory, connect(default_url(directory)), name)
    record = store.record()
    assert record is not None
    return [json_row(row, record.spec) for row in point_rows(store.trials(), record.spec)]


def attempts(log: Path) -> list[str]:
    """The command lines a trial's log records, one per run of its child."""
    return [
        line for line in log.read_text(encoding="utf-8").splitlines() if line.startswith("=== ")
    ]


def stop(process: subprocess.Popen[str], signum: int) -> str:
    """Send ``signum`` to a started command and return what it printed."""
    process.send_signal(signum)
    output, _ = process.communicate(timeout=180)
    return output


def no_trial_processes(root: Path) -> bool:
    """Whether no trial of a sweep under ``root`` runs any more (children of a killed sweep
    stop after their checkpoint)."""
    listed = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return not any(
        "baseline_sweeps.launch" in line and str(root) in line
        for line in listed.stdout.splitlines()
    )


SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}
