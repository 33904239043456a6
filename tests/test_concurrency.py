"""Several real processes at once: one run per run directory, shared vocab files and token-cache
entries built once, ``--resume`` without a run name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core_support import write_toml

from baseline.data.measured import RECORDS_DIRNAME

BIN = Path(sys.executable).parent

HOLD_LOCK = """
import sys, time
from pathlib import Path
from baseline.runs.locks import run_directory_lock
with run_directory_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "BASELINE_DEBUG"}
    return subprocess.Popen(
        [str(BIN / "baseline-run"), *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def hold_lock(run_dir: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)], text=True, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


def test_a_second_process_in_a_run_dir_fails_at_once_and_sigkill_frees_it(
    tmp_path: Path, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"]["epochs"] = 1
    write_toml(tmp_path / "exp.toml", tiny_data)
    run_dir = tmp_path / "runs" / "tiny"
    code, stderr = finish(start(["exp.toml"], tmp_path))
    assert code == 0, stderr
    model_bytes = (run_dir / "baseline_model.pt").read_bytes()

    holder = hold_lock(run_dir)  # a real process holds the run directory
    try:
        for flag in ("--resume", "--overwrite"):
            code, stderr = finish(start(["exp.toml", flag], tmp_path))
            last = stderr.strip().splitlines()[-1]
            assert code == 2 and "Traceback" not in stderr, stderr
            assert last.startswith(f"error: run dir {run_dir} is in use by process {holder.pid} ")
            assert "(started 20" in last, last
            # --overwrite deletes nothing while another process holds the directory
            assert (run_dir / "baseline_model.pt").read_bytes() == model_bytes
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "runs" / ".tiny.lock").is_file()  # left behind, but not locked
    code, stderr = finish(start(["exp.toml", "--resume", "--set", "train.epochs=2"], tmp_path))
    assert code == 0, stderr


def test_four_resumes_started_together_train_one_at_a_time(
    tmp_path: Path, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"]["epochs"] = 20  # seconds of training: the others start meanwhile
    write_toml(tmp_path / "exp.toml", tiny_data)
    processes = [start(["exp.toml", "--resume"], tmp_path) for _ in range(4)]
    outcomes = [finish(process) for process in processes]
    codes = [code for code, _ in outcomes]
    assert 0 in codes, outcomes
    for code, stderr in outcomes:
        if code != 0:
            assert code == 2 and "Traceback" not in stderr, stderr
            assert "is in use by process" in stderr.strip().splitlines()[-1], stderr
    assert 2 in codes  # started together: at least one found the directory in use
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps)  # one writer at a time: never interleaved


def test_two_runs_sharing_a_new_vocab_and_cache_fit_and_tokenize_once(
    tmp_path: Path, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"]["epochs"] = 1
    write_toml(tmp_path / "exp.toml", tiny_data)
    processes = [start(["exp.toml", "--set", f'run.run_name="run{i}"'], tmp_path) for i in range(2)]
    outcomes = [finish(process) for process in processes]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    logs = "\n".join(stderr for _, stderr in outcomes)
    assert logs.count("tokenizer: trained and written to") == 1, logs
    assert logs.count("tokenized and cached") == 1, logs
    assert logs.count("loaded from the token cache") == 1, logs
    runs = tmp_path / "runs"
    assert (runs / "run0" / "tokenizer.json").read_bytes() == (
        runs / "run1" / "tokenizer.json"
    ).read_bytes()
    assert json.loads((tmp_path / "bpe.json.fit.json").read_text())["tokenizer"] == "bpe"
    cache = runs / ".token_cache"
    entries = [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]
    assert sorted(entries)[0] == RECORDS_DIRNAME, entries  # the segment sizes measured
    assert len(entries) == 2, entries  # and one entry, no staging directory left
    assert len(list((cache / RECORDS_DIRNAME).iterdir())) == 1  # one record of one dataset


def test_resume_without_a_run_name_continues_the_newest_run(
    tmp_path: Path, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"]["epochs"] = 1
    del tiny_data["run"]["run_name"]
    write_toml(tmp_path / "exp.toml", tiny_data)
    code, stderr = finish(start(["exp.toml", "--resume"], tmp_path))
    assert code == 2 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"error: exp.toml: run.resume_from_checkpoint: no run of project 'test' in "
        f"{tmp_path / 'runs'} to resume; start one without --resume, or set run.run_name to "
        "the run directory's name"
    )
    for name in ("older", "newer"):
        code, stderr = finish(start(["exp.toml", "--set", f'run.run_name="{name}"'], tmp_path))
        assert code == 0, stderr
        time.sleep(0.05)
    other = {**tiny_data, "run": {**tiny_data["run"], "project_name": "other"}}
    write_toml(tmp_path / "other.toml", other)
    code, stderr = finish(start(["other.toml", "--set", 'run.run_name="zz-other"'], tmp_path))
    assert code == 0, stderr

    code, stderr = finish(start(["exp.toml", "--resume", "--set", "train.epochs=2"], tmp_path))
    assert code == 0, stderr
    assert "resuming run 'newer', the newest of 2 runs of project 'test'" in stderr
    assert "(others: older)" in stderr
    config = json.loads((tmp_path / "runs" / "newer" / "run_config.json").read_text())
    assert config["config"]["train"]["epochs"] == 2
