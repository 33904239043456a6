"""Two processes with torchrun (gloo on CPU): sync, equivalence to one process, exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from core_support import write_toml

BIN = Path(sys.executable).parent


def run(tmp_path: Path, *args: str, nproc: int | None = 2) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BASELINE_DEBUG", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    command = [str(BIN / "baseline-run"), "exp.toml", *args]
    if nproc is not None:
        command += ["--nproc", str(nproc)]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def experiment(tmp_path: Path, tiny_data: dict[str, Any]) -> dict[str, Any]:
    tiny_data["train"].update(batch_size=8, lr_schedule="constant", warmup_steps=0, num_threads=1)
    tiny_data["logging"]["log_every_n_steps"] = 1
    # Diagnostics on rank 0 and periodic validation on all ranks must not desynchronize them.
    tiny_data["logging"]["console"] = {
        "enable_global_grad_norm": True,
        "enable_activation_norms": True,
        "enable_ln_grad_norms": True,
        "enable_attention_entropy": True,
        "diagnostics_every_n_steps": 2,
        "attention_entropy_every_n_steps": 3,
        "val_every_n_steps": 3,
    }
    write_toml(tmp_path / "exp.toml", tiny_data)
    return tiny_data


def test_two_processes_stay_in_sync_and_match_one_process(
    tmp_path: Path, experiment: dict[str, Any]
) -> None:
    two = run(tmp_path, "--set", "run.run_name=two")
    assert two.returncode == 0, two.stderr
    one = run(tmp_path, "--set", "run.run_name=one", nproc=None)
    assert one.returncode == 0, one.stderr
    two_dir, one_dir = tmp_path / "runs" / "two", tmp_path / "runs" / "one"

    ranks = json.loads((two_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["backend"] == "gloo"
    assert len(set(ranks["parameter_digests"])) == 1  # identical parameters on both ranks
    config = json.loads((two_dir / "run_config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "gloo"}

    two_metrics, one_metrics = metrics(two_dir), metrics(one_dir)
    assert [(m["step"], m["phase"], m["tokens_seen"]) for m in two_metrics] == [
        (m["step"], m["phase"], m["tokens_seen"]) for m in one_metrics
    ]
    for a, b in zip(two_metrics, one_metrics, strict=True):
        # Gradients are all-reduced, so their diagnostics match one process; activation
        # norms and attention entropy come from rank 0's half of the batch.
        assert a.keys() == b.keys()
        for key in ("train_loss", "val_loss", "global_grad_norm", "ln_weight_grad_norm_last"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a, b)
    a = torch.load(two_dir / "baseline_model.pt", weights_only=True)
    b = torch.load(one_dir / "baseline_model.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_resume_under_two_processes_is_exact(tmp_path: Path, experiment: dict[str, Any]) -> None:
    straight = run(tmp_path, "--set", "run.run_name=straight")
    assert straight.returncode == 0, straight.stderr
    first_half = run(tmp_path, "--set", "run.run_name=halves", "--set", "train.epochs=1")
    assert first_half.returncode == 0, first_half.stderr

    other_size = run(tmp_path, "--set", "run.run_name=halves", "--resume", nproc=None)
    assert other_size.returncode == 2
    assert "it was saved by 2 process(es) and this run has 1" in other_size.stderr

    resumed = run(tmp_path, "--set", "run.run_name=halves", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = tmp_path / "runs" / "straight", tmp_path / "runs" / "halves"
    strip = lambda ms: [(m["step"], m["phase"], m.get("train_loss"), m.get("val_loss")) for m in ms]
    assert strip(metrics(b)) == strip(metrics(a))
    wa = torch.load(a / "baseline_model.pt", weights_only=True)
    wb = torch.load(b / "baseline_model.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_batch_must_split_over_processes(tmp_path: Path, experiment: dict[str, Any]) -> None:
    result = run(tmp_path, "--set", "train.batch_size=7")
    assert result.returncode != 0
    assert "the global batch of 7 windows does not split evenly over 2 processes" in result.stderr


def test_sigterm_to_torchrun_stops_all_ranks_at_one_step(
    tmp_path: Path, experiment: dict[str, Any]
) -> None:
    import signal
    import time

    experiment["train"]["epochs"] = 30
    experiment["run"]["checkpoint_every_n_steps"] = 1000
    write_toml(tmp_path / "exp.toml", experiment)
    env = {k: v for k, v in os.environ.items() if k not in ("BASELINE_DEBUG", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    process = subprocess.Popen(
        [str(BIN / "baseline-run"), "exp.toml", "--nproc", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = tmp_path / "runs" / "tiny"
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").read_text():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    stops = [line for line in stderr.splitlines() if "error: stopped by SIGTERM at step" in line]
    assert len(stops) == 2, stderr  # both ranks, at the same step
    assert len({line.split("at step ")[1].split(";")[0] for line in stops}) == 1
    state = torch.load(run_dir / "baseline_checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert f"at step {state['step']};" in stops[0]
