"""The store on a real PostgreSQL server (``nox -s sweeps_postgres`` starts one and gives its
URL in ``BASELINE_SWEEPS_POSTGRES_URL``; without it these tests are skipped): workers of two
"machines" (two processes, each with its own sweep directory and host name, sharing only the
database) claim each trial once, and a sweep run by one is joined by the other with
``--join NAME --storage URL``."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sweep_support import POSTGRES_ENV, attempts, baseline, experiment, start, wait_for
from test_claiming import race

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"{POSTGRES_ENV} is not set"),
]


def url() -> str:
    return os.environ[POSTGRES_ENV]


def test_workers_of_two_machines_claim_each_trial_once(tmp_path: Path) -> None:
    name = f"race-{uuid.uuid4().hex[:8]}"
    machines = (tmp_path / "a" / "sweeps" / name, tmp_path / "b" / "sweeps" / name)
    race(url(), machines, name, ("machine-a", "machine-b"))


def test_a_sweep_on_postgres_joined_from_another_machine(tmp_path: Path) -> None:
    name = f"pg-{uuid.uuid4().hex[:8]}"
    exp = experiment(tmp_path, max_steps=20)
    first = start(
        "sweep", str(exp), "--name", name, "--storage", url(), "--param",
        "train.learning_rate=1e-3,2e-3,3e-3,4e-3", cwd=tmp_path,
    )  # fmt: skip
    described = tmp_path / "sweeps" / name / "sweep.json"
    wait_for(described.is_file, what="the sweep's store")
    elsewhere = tmp_path / "elsewhere"  # no sweep.json there: the store is found by its URL
    elsewhere.mkdir()
    second = start(
        "sweep", "--join", name, "--storage", url(), "--root", str(elsewhere), cwd=elsewhere
    )
    outputs = [process.communicate(timeout=300)[0] for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    started = [
        [line.split()[0] for line in output.splitlines() if " starts: " in line]
        for output in outputs
    ]
    assert sorted(started[0] + started[1]) == [f"{name}-{point}" for point in range(4)]
    for point in range(4):
        assert len(attempts(tmp_path / "sweeps" / name / "logs" / f"{name}-{point}.log")) == 1
    result = baseline("sweep", "table", name, "--storage", url(), "--format", "csv", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    states = [line.split(",")[-5] for line in result.stdout.splitlines()[1:]]
    assert states == ["complete"] * 4
    assert '"storage": "postgresql' in described.read_text()  # no password in the URL: kept
