"""``baseline runs``: real run directories of every state, listed from their files only."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from core_support import write_toml

from baseline.cli import main
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.runs.locks import run_lock_path
from baseline.runs.table import (
    COLUMNS,
    RECENT_S,
    render_lines,
    render_table,
    summarize_run,
    summarize_runs,
)
from baseline.testing import tiny_experiment_data

BIN = Path(sys.executable).parent
HOUR = 3600.0


def train(workdir: Path, name: str, **train: Any) -> Path:
    data = tiny_experiment_data(workdir)
    data["run"]["run_name"] = name
    data["train"].update(num_threads=1, **train)
    registry = default_plugins().registry
    return model_pipeline(experiment_from_data(data, registry)).run_dir


def age(path: Path, seconds: float) -> None:
    """Make every file of ``path`` (and the directory) ``seconds`` old."""
    moment = time.time() - seconds
    for child in [path, *path.iterdir()]:
        os.utime(child, (moment, moment))


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts root with a run of each state.

    ``old`` and ``new`` are real complete runs (their lock files were released);
    ``stopped`` is ``old`` without its final files (a checkpoint is left: interrupted),
    ``crashed`` has no checkpoint (failed; its lock file names a process that ended),
    ``training`` has its lock held by a live process (see ``holder``), and ``starting`` has no
    lock file (a run of an older baseline) and was just written.
    """
    workdir = tmp_path_factory.mktemp("runs-table")
    old = train(workdir, "old")
    new = train(workdir, "new", learning_rate=1e-3, epochs=1)
    runs = old.parent
    stopped = runs / "stopped"
    shutil.copytree(old, stopped)
    (stopped / "inference_config.json").unlink()
    (stopped / "baseline_model.pt").unlink()
    crashed = runs / "crashed"
    crashed.mkdir()
    for name in ("run_config.json", "metrics.jsonl", "tokenizer.json"):
        shutil.copy(old / name, crashed / name)
    run_lock_path(crashed).write_text('{"pid": 999999999, "started": "2026-01-01T00:00:00"}\n')
    training = runs / "training"
    shutil.copytree(crashed, training)
    starting = runs / "starting"
    starting.mkdir()
    shutil.copy(old / "run_config.json", starting / "run_config.json")
    (runs / ".token_cache").mkdir(exist_ok=True)  # hidden: never a run
    (runs / "notes").mkdir()  # no run files: not a run
    for offset, directory in enumerate((old, stopped, crashed, training, new)):
        age(directory, 5 * HOUR - offset * HOUR)  # old is the oldest, new the newest
    return runs


@pytest.fixture(scope="module")
def holder(root: Path) -> Any:
    """A live process that holds the lock of ``training``, as the pipeline does for a run."""
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from baseline.runs.locks import run_directory_lock
        with run_directory_lock(Path({str(root / "training")!r})):
            print("locked", flush=True)
            time.sleep(600)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait()


def test_states_and_order(root: Path, holder: Any) -> None:
    summaries = summarize_runs(root)
    states = {s.name: s.state for s in summaries}
    assert states == {
        "old": "complete",
        "new": "complete",
        "stopped": "interrupted",
        "crashed": "failed",
        "training": "running",
        "starting": "running",
    }
    # Newest first: starting (now), then new, training, crashed, stopped, old.
    assert [s.name for s in summaries] == [
        "starting",
        "new",
        "training",
        "crashed",
        "stopped",
        "old",
    ]


def test_without_proc_locks_the_lock_files_process_must_be_alive(root: Path, holder: Any) -> None:
    assert summarize_run(root / "training", locks=None).state == "running"  # holder's pid
    assert summarize_run(root / "crashed", locks=None).state == "failed"  # pid 999999999
    assert summarize_run(root / "training", locks=frozenset()).state == "failed"


def test_runs_without_a_lock_file_are_running_while_recently_written(root: Path) -> None:
    now = time.time()
    assert summarize_run(root / "starting", now=now).state == "running"
    assert summarize_run(root / "starting", now=now + RECENT_S + 1).state == "failed"
    stale = summarize_run(root / "old", now=now)  # complete: never "running" by recency
    assert stale.state == "complete"


def test_values_come_from_the_run_files(root: Path) -> None:
    summary = summarize_run(root / "old", locks=frozenset())
    records = metrics(root / "old")
    run_config = json.loads((root / "old" / "run_config.json").read_text())
    validations = [r["val_bpb"] for r in records if r["phase"] == "validation"]
    train = [r for r in records if r["phase"] == "train"]
    assert summary.steps == records[-1]["step"] == train[-1]["step"]
    assert summary.tokens_seen == train[-1]["tokens_seen"]
    assert summary.final_val_bpb == validations[-1]
    assert summary.best_val_bpb == min(validations)
    assert summary.parameters == run_config["parameters"]
    assert (summary.model, summary.project, summary.loggers) == (
        "baseline_decoder",
        "test",
        ("console",),
    )
    # Training time: each train record's window of steps at its mean step time.
    expected, previous = 0.0, 0
    for record in train:
        expected += (record["step"] - previous) * record["step_time_ms"] / 1000
        previous = record["step"]
    assert summary.train_time_s == pytest.approx(expected)
    assert 0 < expected < 120


def test_json_output(root: Path, holder: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == [
        "starting",
        "new",
        "training",
        "crashed",
        "stopped",
        "old",
    ]
    old = rows[-1]
    assert old == {
        **old,
        "state": "complete",
        "path": str(root / "old"),
        "model": "baseline_decoder",
        "loggers": ["console"],
        "steps": metrics(root / "old")[-1]["step"],
    }
    assert set(old) == {
        "name", "path", "state", "project", "model", "parameters", "steps", "tokens_seen",
        "train_time_s", "final_val_bpb", "best_val_bpb", "loggers", "updated",
    }  # fmt: skip
    assert rows[0]["steps"] is None and rows[0]["final_val_bpb"] is None


def test_piped_output_is_whole_aligned_lines_without_torch(root: Path, holder: Any) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from baseline.cli import main
        code = main(["runs", {str(root)!r}])
        heavy = [m for m in ("torch", "matplotlib", "tensorboard", "mlflow") if m in sys.modules]
        print("HEAVY", heavy, file=sys.stderr)
        sys.exit(code)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [word for column in COLUMNS for word in column.split()]
    assert [line.split()[0] for line in lines[1:]] == [
        "starting", "new", "training", "crashed", "stopped", "old",
    ]  # fmt: skip
    state_column = lines[0].index("state")
    assert [line[state_column:].split()[0] for line in lines[1:]] == [
        "running", "complete", "running", "failed", "interrupted", "complete",
    ]  # fmt: skip
    old = lines[-1].split()
    assert old[2] == "baseline_decoder" and old[-3] == "console"
    assert not set("┏┃│━") & set(result.stdout)


def test_the_real_command_line(root: Path) -> None:
    result = subprocess.run(
        [str(BIN / "baseline"), "runs", str(root)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 7  # the header and six runs


def test_a_terminal_gets_a_rich_table(root: Path) -> None:
    out = io.StringIO()
    render_table(summarize_runs(root), root, out, width=200)
    text = out.getvalue()
    assert "runs in" in text and "┃" in text and "baseline_decoder" in text
    plain = io.StringIO()
    render_lines(summarize_runs(root), plain)
    assert "┃" not in plain.getvalue()


def test_a_missing_root_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'nope'}: no such directory; pass the artifacts root of your runs "
        "(run.artifacts_root)\n"
    )


def test_an_empty_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", str(tmp_path)]) == 0
    assert capsys.readouterr().err == f"no runs in {tmp_path}\n"
    assert main(["runs", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_run_directory_as_the_root_lists_that_run(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", str(root / "old"), "--json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["old"]


def test_a_real_run_is_running_then_interrupted(tmp_path: Path) -> None:
    """``baseline runs`` beside a real training process: running while it trains (it holds
    its lock), interrupted once Ctrl-C stopped it after a checkpoint, complete after a
    resume."""
    data = tiny_experiment_data(tmp_path)
    data["train"].update(num_threads=1, epochs=200)
    data["run"]["checkpoint_every_n_steps"] = 2
    write_toml(tmp_path / "exp.toml", data)
    env = {k: v for k, v in os.environ.items() if k != "BASELINE_DEBUG"}
    process = subprocess.Popen(
        [str(BIN / "baseline-run"), "exp.toml"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = tmp_path / "runs" / "tiny"

    def state() -> str:
        listed = subprocess.run(
            [str(BIN / "baseline"), "runs", str(run_dir.parent), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        (row,) = json.loads(listed.stdout)
        return str(row["state"])

    try:
        deadline = time.time() + 120
        while not (run_dir / "baseline_checkpoint.pt").exists():
            assert process.poll() is None and time.time() < deadline, process.communicate()
            time.sleep(0.1)
        assert state() == "running"
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert state() == "interrupted"


def test_a_truncated_metrics_line_is_skipped(tmp_path: Path, root: Path) -> None:
    run_dir = tmp_path / "cut"
    shutil.copytree(root / "crashed", run_dir)
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 999, "tokens_')
    assert summarize_run(run_dir).steps == metrics(root / "crashed")[-1]["step"]
