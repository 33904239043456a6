"""Workers in several processes claim each trial once: two processes racing over a store (real
Optuna, real SQLite), and two ``baseline sweep`` processes sharing one sweep (``--join``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sweep_support import attempts, experiment, rows, start, wait_for

from baseline_sweeps.store import default_url

HERE = Path(__file__).parent
POINTS = 16


def race(url: str, directories: tuple[Path, Path], name: str, hosts: tuple[str, str]) -> None:
    """Two processes claim the trials of one sweep at once: every point once, none twice."""
    worker = [sys.executable, str(HERE / "claim_worker.py")]
    go = directories[0].parent / "go"
    created = subprocess.run(
        [*worker, "create", url, str(directories[0]), name, str(POINTS), str(go)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    processes = [
        subprocess.Popen(
            [*worker, "claim", url, str(directory), name, str(POINTS), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "BASELINE_SWEEP_HOST": host},
        )
        for directory, host in zip(directories, hosts, strict=True)
    ]
    wait_for(lambda: len(list(go.parent.glob("go.ready-*"))) == 2, what="both workers ready")
    go.touch()
    claimed = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        claimed.append([int(line) for line in out.split()])
    first, second = claimed
    assert sorted(first + second) == list(range(POINTS))  # each point once
    assert first and second  # both took part


def test_two_processes_racing_for_trials_claim_each_once(tmp_path: Path) -> None:
    directory = tmp_path / "sweeps" / "race"
    race(default_url(directory), (directory, directory), "race", ("here", "here"))


def test_a_second_sweep_process_joins_and_no_point_runs_twice(tmp_path: Path) -> None:
    exp = experiment(tmp_path, max_steps=400)  # seconds per trial: the joiner starts meanwhile
    first = start(
        "sweep", str(exp), "--name", "join", "--param",
        "train.learning_rate=1e-3,2e-3,3e-3,4e-3", cwd=tmp_path,
    )  # fmt: skip
    wait_for((tmp_path / "sweeps" / "join" / "sweep.json").is_file, what="the sweep's store")
    second = start("sweep", "--join", "join", "--root", "sweeps", cwd=tmp_path)
    outputs = [process.communicate(timeout=300)[0] for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert "joining" in outputs[1]
    started = [
        [line.split()[0] for line in output.splitlines() if " starts: " in line]
        for output in outputs
    ]
    assert sorted(started[0] + started[1]) == [f"join-{point}" for point in range(4)]
    assert started[0] and started[1]
    finished = rows("join", tmp_path / "sweeps")
    assert sorted((row["trial"], row["state"]) for row in finished) == [
        (point, "complete") for point in range(4)
    ]
    for point in range(4):
        assert len(attempts(tmp_path / "sweeps" / "join" / "logs" / f"join-{point}.log")) == 1
