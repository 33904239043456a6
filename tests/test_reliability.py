"""Exact resume after SIGTERM, SIGINT and SIGKILL; checkpoint rotation and corruption; NaN."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from core_support import write_toml

from baseline.config import LoggerConfig, ModelConfig
from baseline.errors import ConfigError, DataError, RunInterrupted, TrainingError
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.hookspecs import hookimpl
from baseline.plugins.protocols import MetricRecord, RunInfo
from baseline.runs.artifacts import atomic_write_with
from baseline.runs.layout import RunDirectory
from baseline.testing import using_plugins
from baseline.train.checkpointer import writing
from baseline.train.signals import graceful_stop

BIN = Path(sys.executable).parent


def read_metrics(run_dir: Path) -> list[tuple[Any, ...]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [(r["step"], r["phase"], r.get("train_loss"), r.get("val_loss")) for r in records]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = weights(a), weights(b)
    assert left.keys() == right.keys()
    assert all(torch.equal(left[k], right[k]) for k in left)


# -- an in-process logger that signals its own process at a chosen step ----------------------


@attrs.frozen(kw_only=True)
class SignalAtStepConfig(LoggerConfig):
    step: int = 1
    signum: int = int(signal.SIGTERM)
    times: int = 1


class SignalAtStep:
    def __init__(self, config: SignalAtStepConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> SignalAtStep:
        return self

    def log(self, record: MetricRecord) -> None:
        if record.phase == "train" and record.step == self.config.step:
            for _ in range(self.config.times):
                os.kill(os.getpid(), self.config.signum)

    def finish(self, exit_code: int) -> None:
        pass


class SignalPlugin:
    @hookimpl
    def baseline_register_loggers(self, register: Any) -> None:
        register("signal_at_step", SignalAtStepConfig, SignalAtStep)


EPOCH_BOUNDARY = -2  # resolved to the last step of epoch 1


def straight_and_interrupted(
    tiny_data: dict[str, Any], stop_step: int, signum: int
) -> tuple[Path, Path, RunInterrupted]:
    tiny_data["model"]["dropout"] = 0.1  # the RNG state must be restored too
    tiny_data["logging"]["log_every_n_steps"] = 1
    with using_plugins(SignalPlugin()) as plugins:
        registry = plugins.registry
        straight = model_pipeline(experiment_from_data(tiny_data, registry)).run_dir
        if stop_step == EPOCH_BOUNDARY:
            stop_step = next(r[0] for r in read_metrics(straight) if r[1] == "epoch")
        tiny_data["run"]["run_name"] = "interrupted"
        tiny_data["logging"]["provider"] = ["console", "signal_at_step"]
        tiny_data["logging"]["signal_at_step"] = {"step": stop_step, "signum": int(signum)}
        with pytest.raises(RunInterrupted) as caught:
            model_pipeline(experiment_from_data(tiny_data, registry))
        tiny_data["logging"]["signal_at_step"]["step"] = -1
        tiny_data["run"]["resume_from_checkpoint"] = True
        resumed = model_pipeline(experiment_from_data(tiny_data, registry)).run_dir
    return straight, resumed, caught.value


@pytest.mark.parametrize(
    ("stop_step", "signum"),
    [(7, signal.SIGTERM), (EPOCH_BOUNDARY, signal.SIGTERM), (50, signal.SIGINT)],
    ids=["mid-epoch-1", "epoch-boundary", "mid-epoch-2-sigint"],
)
def test_signal_stops_with_checkpoint_and_resume_is_exact(
    tiny_data: dict[str, Any], stop_step: int, signum: int
) -> None:
    straight, resumed, error = straight_and_interrupted(tiny_data, stop_step, signum)
    assert error.exit_code == 128 + signum
    assert "; checkpoint saved to" in str(error)
    if stop_step != EPOCH_BOUNDARY:
        assert f"at step {stop_step};" in str(error)
    assert read_metrics(resumed) == read_metrics(straight)
    assert_same_weights(straight / "baseline_model.pt", resumed / "baseline_model.pt")


def test_checkpoints_rotate_and_a_corrupt_one_falls_back(
    tiny_data: dict[str, Any], registry: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tiny_data["run"].update(checkpoint_every_n_steps=5, keep_last_checkpoints=3)
    run_dir = model_pipeline(experiment_from_data(tiny_data, registry)).run_dir
    names = sorted(p.name for p in run_dir.glob("baseline_checkpoint*"))
    assert names == [
        "baseline_checkpoint.1.pt",
        "baseline_checkpoint.2.pt",
        "baseline_checkpoint.pt",
    ]
    steps = [
        torch.load(run_dir / n, weights_only=True)["step"]
        for n in ("baseline_checkpoint.pt", "baseline_checkpoint.1.pt", "baseline_checkpoint.2.pt")
    ]
    assert steps[0] > steps[1] > steps[2]

    newest = run_dir / "baseline_checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    tiny_data["run"]["resume_from_checkpoint"] = True
    tiny_data["train"]["epochs"] = 3
    with caplog.at_level("INFO", logger="baseline"):
        model_pipeline(experiment_from_data(tiny_data, registry))
    assert "baseline_checkpoint.pt: checkpoint is corrupt or unreadable" in caplog.text
    assert f"resumed from {run_dir / 'baseline_checkpoint.1.pt'} at step {steps[1]}" in caplog.text

    for path in run_dir.glob("baseline_checkpoint*"):
        path.write_bytes(b"garbage")
    tiny_data["train"]["epochs"] = 4
    with pytest.raises(DataError, match="no usable checkpoint"):
        model_pipeline(experiment_from_data(tiny_data, registry))


def test_checkpoints_load_without_pickle(
    tiny_data: dict[str, Any], registry: Any, tmp_path: Path
) -> None:
    run_dir = model_pipeline(experiment_from_data(tiny_data, registry)).run_dir
    state = torch.load(run_dir / "baseline_checkpoint.pt", weights_only=True)
    assert {
        "model",
        "optimizer",
        "step",
        "epoch",
        "step_in_epoch",
        "tokens_seen",
        "best_val_loss",
        "rng",
        "config",
        "tokenizer_fingerprint",
        "train_time_s",
    } <= set(state)

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"format": 1, "evil": Evil()}, run_dir / "baseline_checkpoint.pt")
    torch.save({"format": 1, "evil": Evil()}, run_dir / "baseline_checkpoint.1.pt")
    tiny_data["run"]["resume_from_checkpoint"] = True
    with pytest.raises(DataError, match="no usable checkpoint"):
        model_pipeline(experiment_from_data(tiny_data, registry))
    assert not (tmp_path / "pwned").exists()


# -- NaN loss ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ExplodingConfig(ModelConfig):
    nan_after_steps: int = 8


class ExplodingModel:
    def __init__(self, config: ExplodingConfig) -> None:
        self.config = config

    def build(self, vocab_size: int, seq_len: int) -> torch.nn.Module:
        limit = self.config.nan_after_steps

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embedding = torch.nn.Embedding(vocab_size, vocab_size)
                self.calls = 0

            def forward(self, tokens: torch.Tensor) -> torch.Tensor:
                if self.training:
                    self.calls += 1
                logits = self.embedding(tokens)
                return logits * float("nan") if self.calls > limit else logits

        return Net()


class ExplodingPlugin:
    @hookimpl
    def baseline_register_models(self, register: Any) -> None:
        register("exploding", ExplodingConfig, ExplodingModel)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data: dict[str, Any]) -> None:
    tiny_data["model"] = {"name": "exploding", "nan_after_steps": 8}
    tiny_data["run"]["checkpoint_every_n_steps"] = 5
    with (
        using_plugins(ExplodingPlugin()) as plugins,
        pytest.raises(
            TrainingError, match=r"training loss became nan at step 1\d; the last checkpoint"
        ),
    ):
        model_pipeline(experiment_from_data(tiny_data, plugins.registry))
    run_dir = Path(tiny_data["run"]["artifacts_root"]) / "tiny"
    state = torch.load(run_dir / "baseline_checkpoint.pt", weights_only=True)
    assert state["step"] == 5
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert not (run_dir / "baseline_model.pt").exists()


# -- real processes: SIGKILL at random points, SIGTERM, double Ctrl-C ------------------------


#: A run a signal is sure to reach before its end on any machine (about 1,300 steps).
LONG_EPOCHS = 40


def long_experiment(tmp_path: Path, tiny_data: dict[str, Any], epochs: int = 4) -> Path:
    tiny_data["train"]["epochs"] = epochs
    tiny_data["run"]["checkpoint_every_n_steps"] = 1
    tiny_data["model"]["dropout"] = 0.1
    # One thread: with several, a loaded machine's BLAS may split its sums differently in two
    # processes, and the runs compared below are separate processes.
    tiny_data["train"]["num_threads"] = 1
    return write_toml(tmp_path / "exp.toml", tiny_data)


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("BASELINE_DEBUG", None)
    return subprocess.Popen(
        [str(BIN / "baseline-run"), *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_sigkill_at_twenty_points_then_resume_matches(
    tmp_path: Path, tiny_data: dict[str, Any]
) -> None:
    long_experiment(tmp_path, tiny_data, epochs=12)
    uninterrupted = start(["exp.toml", "--set", "run.run_name=straight"], tmp_path)
    _, stderr = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, stderr
    straight = tmp_path / "runs" / "straight"
    run_dir = tmp_path / "runs" / "tiny"
    rng = random.Random(20261124)
    kills = during_training = 0
    finished = False
    while kills < 20:
        process = start(["exp.toml", "--resume"], tmp_path)
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.1, 1.0))  # during start-up, before any checkpoint
        else:
            # a few steps on (counted, not timed: a fast machine must not finish the run in
            # the kills), then a moment inside a step or a checkpoint write
            wait_for_step(process, run_dir, previous=read_step(run_dir) + rng.randint(0, 3))
            time.sleep(rng.uniform(0.0, 0.01))
            during_training += 1
        if process.poll() is not None:
            finished = process.returncode == 0
            assert finished, process.stderr.read() if process.stderr else ""
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        for stray in run_dir.glob(".*.tmp"):
            stray.unlink()  # a killed writer leaves its temp file, never a partial final file
    if not finished:
        final = start(["exp.toml", "--resume"], tmp_path)
        _, stderr = final.communicate(timeout=300)
        assert final.returncode == 0, stderr
    assert kills >= 15 and during_training >= 10, (kills, during_training)
    assert read_metrics(run_dir) == read_metrics(straight)
    assert_same_weights(straight / "baseline_model.pt", run_dir / "baseline_model.pt")


def read_step(run_dir: Path) -> int:
    """Step of the newest checkpoint, or -1. A checkpoint being rotated or written is missing
    or partial for a moment: it is read again while an older one exists."""
    for _ in range(50):
        try:
            return int(torch.load(run_dir / "baseline_checkpoint.pt", weights_only=True)["step"])
        except Exception:
            if not any(run_dir.glob("baseline_checkpoint*.pt")):
                return -1
            time.sleep(0.01)
    return -1


def wait_for_step(process: subprocess.Popen[str], run_dir: Path, previous: int) -> None:
    """Wait until the process has checkpointed past ``previous`` (or exited)."""
    deadline = time.time() + 120
    while process.poll() is None and time.time() < deadline:
        if read_step(run_dir) > previous:
            return
        time.sleep(0.05)


def wait_for_training(process: subprocess.Popen[str], run_dir: Path) -> None:
    deadline = time.time() + 60
    while not (run_dir / "baseline_checkpoint.pt").exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)


def test_sigterm_to_the_process_checkpoints_and_exits_143(
    tmp_path: Path, tiny_data: dict[str, Any]
) -> None:
    long_experiment(tmp_path, tiny_data, epochs=LONG_EPOCHS)
    run_dir = tmp_path / "runs" / "tiny"
    process = start(["exp.toml"], tmp_path)
    wait_for_training(process, run_dir)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert "error: stopped by SIGTERM at step" in stderr.strip().splitlines()[-1]
    stopped = read_step(run_dir)
    resumed = start(["exp.toml", "--resume", "--set", f"train.max_steps={stopped + 10}"], tmp_path)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "resumed from" in stderr


def test_double_ctrl_c_aborts_at_once(tmp_path: Path, tiny_data: dict[str, Any]) -> None:
    long_experiment(tmp_path, tiny_data, epochs=LONG_EPOCHS)
    process = start(["exp.toml"], tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    wait_for_training(process, run_dir)
    process.send_signal(signal.SIGINT)
    assert process.stderr is not None
    seen = []  # the second Ctrl-C only once the first is handled (two at once merge into one)
    while not any("SIGINT received" in line for line in seen):
        line = process.stderr.readline()
        assert line, "".join(seen)
        seen.append(line)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    stderr = "".join(seen) + rest
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "interrupted"  # aborted, not stopped after a step
    assert not list(run_dir.glob("*.tmp"))
    newest = RunDirectory(run_dir).newest_checkpoint()
    assert newest is not None
    torch.load(newest.path, weights_only=True)  # still complete


def test_full_disk_while_checkpointing_is_one_line_and_keeps_old_files(
    tmp_path: Path, tiny_data: dict[str, Any], registry: Any
) -> None:
    import resource

    long_experiment(tmp_path, tiny_data)

    def limit_file_size() -> None:  # writes past 40 kB fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    env = {k: v for k, v in os.environ.items() if k != "BASELINE_DEBUG"}
    result = subprocess.run(
        [str(BIN / "baseline-run"), "exp.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: cannot write the checkpoint") and "continue with --resume" in last
    )
    run_dir = tmp_path / "runs" / "tiny"
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))
    assert (run_dir / "run_config.json").is_file()
    json.loads((run_dir / "run_config.json").read_text())

    # With space again, --resume finishes exactly like a run that never hit the limit.
    resumed = subprocess.run(
        [str(BIN / "baseline-run"), "exp.toml", "--resume"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    straight = model_pipeline(
        experiment_from_data(
            {**tiny_data, "run": {**tiny_data["run"], "run_name": "straight"}}, registry
        )
    ).run_dir
    assert read_metrics(run_dir) == read_metrics(straight)
    assert_same_weights(straight / "baseline_model.pt", run_dir / "baseline_model.pt")


def test_muon_resume_is_exact(tiny_data: dict[str, Any]) -> None:
    tiny_data["train"]["optimizer"] = "muon"
    straight, resumed, error = straight_and_interrupted(tiny_data, 7, signal.SIGTERM)
    assert error.exit_code == 128 + signal.SIGTERM
    assert read_metrics(resumed) == read_metrics(straight)
    assert_same_weights(straight / "baseline_model.pt", resumed / "baseline_model.pt")


def test_resume_of_a_checkpoint_written_before_a_config_key_existed(
    tiny_data: dict[str, Any], registry: Any
) -> None:
    """A key the checkpoint's config lacks matches its default (what the older run did)."""
    tiny_data["train"]["max_steps"] = 4
    run_dir = model_pipeline(experiment_from_data(tiny_data, registry)).run_dir
    checkpoint = run_dir / "baseline_checkpoint.pt"
    state = torch.load(checkpoint, weights_only=False)
    del state["config"]["train"]["optimizer"], state["config"]["model"]["norm"]
    torch.save(state, checkpoint)
    tiny_data["run"]["resume_from_checkpoint"] = True
    tiny_data["train"]["max_steps"] = 6
    assert model_pipeline(experiment_from_data(tiny_data, registry)).steps == 6
    tiny_data["train"]["optimizer"] = "muon"  # not the default: the run used AdamW
    with pytest.raises(ConfigError, match=r"these keys differ .*: train\.optimizer"):
        model_pipeline(experiment_from_data(tiny_data, registry))


class InterruptedFile:
    """A checkpoint file whose first write is interrupted by a second Ctrl-C, which then
    surfaces as torch.save's C++ writer reported it in CI: a RuntimeError ("unexpected pos"),
    the KeyboardInterrupt swallowed."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.interrupted = False

    def write(self, data: bytes) -> int:
        if not self.interrupted:
            self.interrupted = True
            try:
                os.kill(os.getpid(), signal.SIGINT)  # the second one: the handler raises
                time.sleep(1)
            except KeyboardInterrupt:
                raise RuntimeError(
                    "[enforce fail at inline_container.cc:672] . unexpected pos"
                ) from None
        return int(self.handle.write(data))

    def flush(self) -> None:
        self.handle.flush()


def test_a_second_ctrl_c_swallowed_by_torch_save_still_aborts(tmp_path: Path) -> None:
    path = tmp_path / "baseline_checkpoint.pt"
    with graceful_stop(), pytest.raises(KeyboardInterrupt):  # not "cannot write ...; free disk"
        os.kill(os.getpid(), signal.SIGINT)  # the first: stop after this step
        with writing("checkpoint", path):
            atomic_write_with(
                path, lambda handle: torch.save({"w": torch.zeros(4)}, InterruptedFile(handle))
            )
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    # a failed write with no abort under way is still the one-line error it was
    with (
        pytest.raises(TrainingError, match="cannot write the checkpoint"),
        writing("checkpoint", path),
    ):
        raise RuntimeError("unexpected pos 0 vs 64")
