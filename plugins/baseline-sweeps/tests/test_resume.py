"""A sweep killed with SIGTERM or SIGKILL (real processes) and started again ends with the same
finished trials as one never stopped: each point once, each run resumed from its checkpoint."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sweep_support import (
    SIGNALS,
    attempts,
    baseline,
    experiment,
    no_trial_processes,
    rows,
    start,
    stop,
    wait_for,
)

from baseline.runs.layout import RunDirectory
from baseline.runs.table import summarize_run

# Long enough that neither trial can finish before the other's first checkpoint, however
# loaded the machine is (their starts can be seconds apart).
STEPS = 1000


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGKILL"])
def test_a_killed_sweep_continues_to_the_same_finished_trials(tmp_path: Path, signame: str) -> None:
    exp = experiment(tmp_path, max_steps=STEPS, val_every=250, checkpoint_every=5)
    command = (
        "sweep", str(exp), "--name", "res", "--param", "train.learning_rate=3e-3,8e-3",
        "--workers", "2",
    )  # fmt: skip
    runs = [tmp_path / "runs" / f"res-{point}" for point in (0, 1)]
    process = start(*command, cwd=tmp_path)
    wait_for(
        lambda: all(RunDirectory(run).newest_checkpoint() for run in runs),
        what="a checkpoint of both trials",
    )
    output = stop(process, SIGNALS[signame])
    if signame == "SIGTERM":
        assert process.returncode == 143, output
        assert "error: stopped by SIGTERM: the running trials stopped after a checkpoint" in output
    else:
        assert process.returncode == -signal.SIGKILL
    # the trials die with their worker, after a checkpoint (a SIGKILLed sweep's children get
    # SIGTERM from the kernel). An exiting process leaves `ps` (its memory is released first)
    # a moment before the kernel releases its run lock, so both are waited for.
    wait_for(
        lambda: (
            no_trial_processes(tmp_path)
            and all(summarize_run(run).state != "running" for run in runs)
        ),
        timeout=60,
        what="the trials to stop and release their run locks",
    )
    for run in runs:
        summary = summarize_run(run)
        assert summary.state == "interrupted" and summary.steps is not None, (summary, output)
        assert summary.steps < STEPS, (summary, output)
    # the store still has them running: the next run finds their workers dead
    states = [row["state"] for row in rows("res", tmp_path / "sweeps")]
    assert states == ["running", "running"], (states, output)

    result = baseline(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "res-0 resumes" in result.stdout and "res-1 resumes" in result.stdout
    finished = rows("res", tmp_path / "sweeps")
    assert sorted((row["trial"], row["state"]) for row in finished) == [
        (0, "complete"),
        (1, "complete"),
    ]
    assert sorted(row["params"]["train.learning_rate"] for row in finished) == [3e-3, 8e-3]
    for run in runs:
        summary = summarize_run(run)
        assert summary.state == "complete" and summary.steps == STEPS
        log = attempts(tmp_path / "sweeps" / "res" / "logs" / f"{run.name}.log")
        assert len(log) == 2 and log[1].endswith("--resume")
    directories = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert [name for name in directories if not name.startswith(".")] == ["res-0", "res-1"]
