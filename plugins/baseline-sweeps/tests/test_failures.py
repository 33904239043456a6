"""A trial whose run fails (here: its seq_len is longer than the data, which only training
finds out) is recorded with the one-line error the command printed, and run again ``retries``
times; the other trials are not disturbed."""

from __future__ import annotations

from pathlib import Path

from sweep_support import attempts, baseline, experiment, rows

from baseline_sweeps.store import Store, connect, default_url


def test_a_failing_trial_is_recorded_with_its_error_and_retried(tmp_path: Path) -> None:
    exp = experiment(tmp_path, max_steps=20)
    assert (
        baseline("validate", str(exp), "--set", "train.seq_len=100000", cwd=tmp_path).returncode
        == 0
    )
    result = baseline(
        "sweep", str(exp), "--name", "fail", "--param", "train.seq_len=16,100000",
        "--retries", "1", "--workers", "2", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    expected = f"{exp}: train.seq_len: the training split has"
    retries = [line for line in result.stdout.splitlines() if line.startswith("fail-1 failed")]
    assert len(retries) == 1 and expected in retries[0]
    assert "[2/2] fail-1 failed" in result.stdout or "[1/2] fail-1 failed" in result.stdout

    by_trial = {row["trial"]: row for row in rows("fail", tmp_path / "sweeps")}
    assert by_trial[0]["state"] == "complete"
    assert by_trial[1]["state"] == "failed" and by_trial[1]["error"].startswith(expected)
    assert "\n" not in by_trial[1]["error"]
    assert len(attempts(tmp_path / "sweeps" / "fail" / "logs" / "fail-1.log")) == 2
    assert len(attempts(tmp_path / "sweeps" / "fail" / "logs" / "fail-0.log")) == 1

    directory = tmp_path / "sweeps" / "fail"
    store = Store(directory, connect(default_url(directory)), "fail")
    [failed] = [t for t in store.trials() if t.user_attrs.get("point") == 1]
    assert failed.user_attrs["attempts"] == 2
    assert len(failed.user_attrs["errors"]) == 2
    assert all(error.startswith(expected) for error in failed.user_attrs["errors"])

    again = baseline(
        "sweep", str(exp), "--name", "fail", "--param", "train.seq_len=16,100000", cwd=tmp_path
    )
    assert again.returncode == 0 and "starts" not in again.stdout  # a failed trial is finished
