"""FSDP2 (``train.parallelism = "fsdp"``) with torchrun and gloo on CPU: equal to DDP, DCP
checkpoints resumed exactly and under another process count, crash safety of a DCP save, and a
two-node launch on one machine equal to the one-node run.

Every run is a real ``baseline-run`` (or ``torchrun``) process tree; the runs of one module
share the experiment file and one DDP and one FSDP reference run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from core_support import REPO_ROOT, validation_text, write_toml

from baseline.runs.source_run import load_source_weights, read_source_run
from baseline.testing import tiny_experiment_data
from baseline.tools.inference import load_run

BIN = Path(sys.executable).parent
#: Steps of the reference runs (the tiny experiment has 11 steps per epoch at batch 8).
STEPS = 12


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BASELINE_DEBUG", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run(
    workdir: Path, *args: str, nproc: int | None = 2, **env: str
) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "baseline-run"), "exp.toml", *args]
    if nproc is not None:
        command += ["--nproc", str(nproc)]
    return subprocess.run(
        command, cwd=workdir, env=_env(**env), capture_output=True, text=True, timeout=600
    )


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(run_dir / "baseline_model.pt", weights_only=True)
    return state


def losses(run_dir: Path) -> list[tuple[Any, ...]]:
    return [
        (m["step"], m["phase"], m.get("train_loss"), m.get("val_loss"), m.get("train_loss_epoch"))
        for m in metrics(run_dir)
    ]


def assert_close_runs(
    a: Path,
    b: Path,
    keys: tuple[str, ...] = ("train_loss", "val_loss"),
    weights_atol: float = 1e-4,
) -> None:
    ma, mb = metrics(a), metrics(b)
    assert [(m["step"], m["phase"]) for m in ma] == [(m["step"], m["phase"]) for m in mb]
    for x, y in zip(ma, mb, strict=True):
        assert x.keys() == y.keys()
        for key in keys:
            if key in x:
                assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-5), (key, x, y)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        difference = (wa[key] - wb[key]).abs().max().item()
        assert difference <= weights_atol, (key, difference)


def assert_identical_runs(a: Path, b: Path) -> None:
    assert losses(a) == losses(b)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The experiment: every diagnostic, periodic validation and samples, so that the rank 0
    only paths of DDP are exercised under FSDP too (they must not deadlock)."""
    path = tmp_path_factory.mktemp("fsdp")
    data = tiny_experiment_data(path)
    data["train"].update(
        batch_size=8,
        lr_schedule="constant",
        warmup_steps=0,
        num_threads=1,
        epochs=30,
        max_steps=STEPS,
        grad_accumulation_steps=2,  # gradient sync on the last micro-batch only
    )
    data["run"]["checkpoint_every_n_steps"] = 4
    data["logging"]["log_every_n_steps"] = 1
    data["logging"]["samples_per_validation"] = 1
    data["logging"]["sample_tokens"] = 4
    data["logging"]["console"] = {
        "enable_global_grad_norm": True,
        "enable_activation_norms": True,
        "enable_ln_grad_norms": True,
        "enable_attention_entropy": True,
        "diagnostics_every_n_steps": 2,
        "attention_entropy_every_n_steps": 3,
        "val_every_n_steps": 5,
    }
    write_toml(path / "exp.toml", data)
    return path


FSDP = ("--set", 'train.parallelism="fsdp"')


@pytest.fixture(scope="module")
def ddp_run(workdir: Path) -> Path:
    result = run(workdir, "--set", "run.run_name=ddp")
    assert result.returncode == 0, result.stderr
    return workdir / "runs" / "ddp"


@pytest.fixture(scope="module")
def fsdp_run(workdir: Path) -> Path:
    result = run(workdir, *FSDP, "--set", "run.run_name=fsdp")
    assert result.returncode == 0, result.stderr
    return workdir / "runs" / "fsdp"


def test_fsdp_matches_ddp(ddp_run: Path, fsdp_run: Path) -> None:
    # Gradient diagnostics are computed on the full gradients: equal to DDP's.
    assert_close_runs(
        fsdp_run,
        ddp_run,
        ("train_loss", "val_loss", "global_grad_norm", "ln_weight_grad_norm_last"),
    )
    diagnostics = [m for m in metrics(fsdp_run) if m["phase"] == "diagnostics"]
    assert any("attention_entropy_last" in m for m in diagnostics)
    assert any("activation_norm_first" in m for m in diagnostics)
    ranks = json.loads((fsdp_run / "ranks.json").read_text())
    assert ranks["parallelism"] == "fsdp" and ranks["world_size"] == 2
    # Sharded checkpoints (a DCP directory), a plain final model, samples from rank 0 only.
    assert (fsdp_run / "baseline_checkpoint.dcp" / ".metadata").is_file()
    assert (fsdp_run / "baseline_checkpoint.1.dcp" / ".metadata").is_file()
    assert not (fsdp_run / "baseline_checkpoint.pt").exists()
    samples = (fsdp_run / "samples.jsonl").read_text().splitlines()
    assert len(samples) == len([m for m in metrics(fsdp_run) if m["phase"] == "validation"])
    sample = subprocess.run(
        [str(BIN / "baseline"), "sample", str(fsdp_run), "--max-new-tokens", "3", "--seed", "1"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sample.returncode == 0, sample.stderr


@pytest.mark.parametrize("ns_precision, weights_atol", [("bf16", 1e-3), ("fp32", 1e-4)])
def test_fsdp_with_muon_matches_ddp(workdir: Path, ns_precision: str, weights_atol: float) -> None:
    # Muon steps the DTensor shards of the hidden matrices; its orthogonalisation must see
    # the whole matrix, as under DDP: torch's per-matrix step in bf16, ours in float32.
    muon = ("--set", 'train.optimizer="muon"', "--set", "train.max_steps=4")
    muon += ("--set", f'train.optimizer_precision="{ns_precision}"')
    ddp = run(workdir, *muon, "--set", f"run.run_name=ddp_muon_{ns_precision}")
    assert ddp.returncode == 0, ddp.stderr
    fsdp = run(workdir, *FSDP, *muon, "--set", f"run.run_name=fsdp_muon_{ns_precision}")
    assert fsdp.returncode == 0, fsdp.stderr
    # In bf16 the float differences of the two gradient reductions can round to neighbouring
    # bf16 values, so the weights get a looser bound there.
    runs = workdir / "runs"
    assert_close_runs(
        runs / f"fsdp_muon_{ns_precision}",
        runs / f"ddp_muon_{ns_precision}",
        weights_atol=weights_atol,
    )


def _interrupt(workdir: Path, name: str, *args: str) -> int:
    """Start a long FSDP run, SIGTERM torchrun after its first step; the step it stopped at."""
    process = subprocess.Popen(
        [
            str(BIN / "baseline-run"),
            "exp.toml",
            *FSDP,
            "--set",
            f"run.run_name={name}",
            "--set",
            "train.max_steps=100000",
            *args,
            "--nproc",
            "2",
        ],
        cwd=workdir,
        # Unbuffered, as on CI: each rank's error line must still arrive whole on the shared pipe.
        env=_env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = workdir / "runs" / name / "metrics.jsonl"
    deadline = time.time() + 300
    while not log.exists() or not log.read_text():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    stops = [line for line in stderr.splitlines() if "error: stopped by SIGTERM at step" in line]
    assert len(stops) == 2, stderr
    return int(stops[0].split("at step ")[1].split(";")[0])


#: The optimizer settings of the shipped default experiment (Muon, its weight decay, betas
#: and learning rate), so that the resume tests run what a user runs by default.
DEFAULT_OPTIMIZER = {
    key: value
    for key, value in tomllib.loads(
        (REPO_ROOT / "experiments" / "tiny_shakespeare.toml").read_text(encoding="utf-8")
    )["train"].items()
    if key in ("optimizer", "learning_rate", "weight_decay", "muon_momentum")
    or key.startswith("adam_")
}


def optimizer_settings(optimizer: str) -> tuple[str, ...]:
    """``--set`` options: the default experiment's optimizer settings with ``optimizer``."""
    settings = {**DEFAULT_OPTIMIZER, "optimizer": optimizer}
    return tuple(
        arg for key, value in settings.items() for arg in ("--set", f"train.{key}={value!r}")
    )


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_sigterm_resume_is_exact_and_resumes_under_one_process(
    workdir: Path, optimizer: str
) -> None:
    assert DEFAULT_OPTIMIZER["optimizer"] == "muon"  # the default experiment's
    # A train record every 5 steps: the loss sums pending at the stop (each rank's own, and
    # the epoch's) reach the records after the resume.
    settings = (*optimizer_settings(optimizer), "--set", "logging.log_every_n_steps=5")
    halves, to_one, straight = (f"{name}_{optimizer}" for name in ("halves", "to_one", "straight"))
    stopped_at = _interrupt(workdir, halves, *settings)
    steps = stopped_at + 3
    shutil.copytree(workdir / "runs" / halves, workdir / "runs" / to_one)
    limit = (*settings, "--set", f"train.max_steps={steps}")

    resumed = run(workdir, *FSDP, *limit, "--set", f"run.run_name={halves}", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {workdir / 'runs' / halves / 'baseline_checkpoint.dcp'}" in (
        resumed.stderr
    )
    one = run(workdir, *FSDP, *limit, "--set", f"run.run_name={to_one}", "--resume", nproc=None)
    assert one.returncode == 0, one.stderr
    uninterrupted = run(workdir, *FSDP, *limit, "--set", f"run.run_name={straight}")
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    runs = workdir / "runs"
    # Same process count: bit-identical to the uninterrupted run.
    assert_identical_runs(runs / halves, runs / straight)
    # 2 -> 1 process: the same global batches, resharded model and optimizer state (Muon
    # orthogonalises in bf16: the float differences of the reductions get a looser bound).
    assert_close_runs(
        runs / to_one, runs / straight, weights_atol=1e-3 if optimizer == "muon" else 1e-4
    )


def baseline_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "baseline"), *args], env=_env(), capture_output=True, text=True, timeout=300
    )


def test_the_tools_use_the_sharded_checkpoint_of_a_stopped_fsdp_run(workdir: Path) -> None:
    """``baseline runs``, ``eval``, ``sample``, ``export`` and ``run.init_from`` on an FSDP run
    stopped by SIGTERM: its newest DCP checkpoint, loaded in one process."""
    # Validation every step: the checkpoint's step has a logged val_loss to compare with.
    step = _interrupt(workdir, "stopped", "--set", "logging.console.val_every_n_steps=1")
    run_dir = workdir / "runs" / "stopped"
    assert (run_dir / "baseline_checkpoint.dcp" / ".metadata").is_file()
    assert not list(run_dir.glob("*.pt"))
    note = f"using the checkpoint at step {step} (the run did not finish)"

    listed = baseline_cli("runs", str(run_dir), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["state"] for row in json.loads(listed.stdout)] == ["interrupted"]

    text = workdir / "validation.txt"
    text.write_bytes(validation_text(tomllib.loads((workdir / "exp.toml").read_text())))
    evaluated = baseline_cli("eval", str(run_dir), "--data", str(text), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert note in evaluated.stderr
    figures = json.loads(evaluated.stdout)
    [logged] = [m for m in metrics(run_dir) if m["phase"] == "validation" and m["step"] == step]
    assert figures["checkpoint_step"] == step
    assert figures["loss"] == pytest.approx(logged["val_loss"], abs=1e-4)

    sampled = baseline_cli("sample", str(run_dir), "--max-new-tokens", "3", "--seed", "1")
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stderr.strip() == f"{run_dir}: {note}"

    run = load_run(run_dir)
    source = read_source_run(run_dir)
    assert source.from_checkpoint and source.weights == run_dir / "baseline_checkpoint.dcp"
    fresh = run.model_adapter.build(run.inference_config["vocab_size"], run.seq_len)
    assert note in load_source_weights(fresh, source, run.seq_len)
    expected = run.model.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in fresh.state_dict().items())

    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    exported = baseline_cli("export", str(run_dir), str(workdir / "stopped-hf"))
    assert exported.returncode == 0, exported.stderr
    assert note in exported.stderr
    hf = AutoModelForCausalLM.from_pretrained(
        workdir / "stopped-hf", local_files_only=True, dtype=torch.float32
    )
    tokens = torch.tensor([run.tokenizer.encode_batch(["ROMEO: " * 8])[0][: run.seq_len]])
    with torch.no_grad():
        torch.testing.assert_close(hf.eval()(tokens).logits, run.model(tokens), atol=1e-5, rtol=0)


def test_kill_during_a_dcp_save_leaves_the_previous_checkpoint(
    workdir: Path, fsdp_run: Path
) -> None:
    # Rank 0 is killed (SIGKILL) at step 8's save: after every shard was written, before the
    # new directory is renamed into place. The step 4 checkpoint must be the one resumed.
    killed = run(
        workdir,
        *FSDP,
        "--set",
        "run.run_name=killed",
        BASELINE_TEST_KILL_DURING_CHECKPOINT_AT_STEP="8",
    )
    assert killed.returncode != 0
    run_dir = workdir / "runs" / "killed"
    assert (run_dir / "baseline_checkpoint.dcp.tmp-dir").is_dir()
    state = torch.load(run_dir / "baseline_checkpoint.dcp" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 4

    resumed = run(workdir, *FSDP, "--set", "run.run_name=killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "at step 4 " in resumed.stderr
    assert not (run_dir / "baseline_checkpoint.dcp.tmp-dir").exists()
    assert_identical_runs(run_dir, fsdp_run)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_two_nodes_on_localhost_equal_one_node(workdir: Path, ddp_run: Path) -> None:
    port = _free_port()
    nodes = [
        subprocess.Popen(
            [
                str(BIN / "torchrun"),
                "--nnodes=2",
                f"--node-rank={rank}",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=baseline-test",
                "-m",
                "baseline.cli",
                "run",
                "exp.toml",
                "--set",
                "run.run_name=nodes",
            ],
            cwd=workdir,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stderr
    run_dir = workdir / "runs" / "nodes"
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2
    assert_identical_runs(run_dir, ddp_run)
