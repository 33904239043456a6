"""A logger that raises is reported once, switched off, and the run goes on; or, with
``logging.on_logger_error = "stop"``, the run stops at that step with one line.

The runs are real: ``baseline-run`` in a subprocess (its stderr is what a user sees) on the
``contract_*`` components (2 epochs of 11 steps, train records every 2 steps), with the
``flaky`` logger defined here raising ``KeyError('x')`` in ``start``, in ``log`` at one step,
or in ``finish``, and the ``tally`` logger beside it, which never fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest

from baseline.config import LoggerConfig
from baseline.errors import ConfigError
from baseline.experiment.loading import experiment_from_data
from baseline.metrics.router import MetricsPlan, MetricsRouter
from baseline.metrics.sessions import LoggerFailure
from baseline.plugins.hookspecs import Register, hookimpl
from baseline.plugins.protocols import MetricRecord, RunInfo
from baseline.runs.layout import RunDirectory
from baseline.testing import ContractPlugin, contract_experiment_data, in_process_plugins
from baseline.testing.components import write_experiment

TESTS = Path(__file__).resolve().parent
#: ``baseline run`` with this module's plugin and the contract components active (argv: the
#: experiment file).
DRIVER = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from test_logger_failures import FlakyPlugin
from baseline.cli import main
from baseline.testing import ContractPlugin, using_plugins

with using_plugins(ContractPlugin(), FlakyPlugin()):
    sys.exit(main(["run", *sys.argv[1:]]))
"""
FAIL_STEP = 4
LAST_STEP = 22  # 2 epochs of 11 steps
LINE = "logger 'flaky' from test-plugins failed at step 4 (KeyError: 'x')"


# -- the loggers -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FlakyConfig(LoggerConfig):
    """``flaky``: raises ``KeyError('x')`` in ``phase`` (``log``: on ``step``'s train record)."""

    phase: Literal["start", "log", "finish", "never"] = "log"
    step: int = FAIL_STEP
    #: JSON lines: every call this logger receives.
    journal: str = ""
    #: Seconds ``finish`` takes (a logger that uploads at the end, as W&B does).
    finish_delay_s: float = 0.0


@attrs.frozen(kw_only=True)
class TallyConfig(FlakyConfig):
    """``tally``: the same, failing never."""

    phase: Literal["start", "log", "finish", "never"] = "never"


def _note(config: FlakyConfig, *event: Any) -> None:
    if config.journal:
        with open(config.journal, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")


class FlakyLogger:
    def __init__(self, config: FlakyConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> FlakySession:
        _note(self.config, "start", run.start_step)
        if self.config.phase == "start":
            raise KeyError("x")
        return FlakySession(self.config)


class FlakySession:
    def __init__(self, config: FlakyConfig) -> None:
        self.config = config

    def log(self, record: MetricRecord) -> None:
        _note(self.config, "log", record.step, record.phase)
        if self.config.phase == "log" and (record.phase, record.step) == (
            "train",
            self.config.step,
        ):
            raise KeyError("x")

    def finish(self, exit_code: int) -> None:
        time.sleep(self.config.finish_delay_s)
        _note(self.config, "finish", exit_code)
        if self.config.phase == "finish":
            raise KeyError("x")


class FlakyPlugin:
    @staticmethod
    @hookimpl
    def baseline_register_loggers(register: Register) -> None:
        register("flaky", FlakyConfig, FlakyLogger)
        register("tally", TallyConfig, FlakyLogger)


# -- running ---------------------------------------------------------------------------------


@attrs.frozen
class Outcome:
    code: int
    stderr: str
    run: RunDirectory
    workdir: Path

    def journal(self, name: str) -> list[list[Any]]:
        path = self.workdir / f"{name}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def records(self) -> list[dict[str, Any]]:
        lines = self.run.metrics.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def run_config(self) -> dict[str, Any]:
        data = self.run.read_run_config()
        assert data is not None
        return data


def experiment(workdir: Path, phase: str, on_error: str | None = None) -> dict[str, Any]:
    data = contract_experiment_data(workdir, provider=["console", "flaky", "tally"])
    data["logging"]["flaky"] = {"phase": phase, "journal": str(workdir / "flaky.jsonl")}
    data["logging"]["tally"] = {"journal": str(workdir / "tally.jsonl")}
    if on_error is not None:
        data["logging"]["on_logger_error"] = on_error
    return data


def run_cli(workdir: Path, data: dict[str, Any], *, nproc: int = 1) -> Outcome:
    write_experiment(workdir / "exp.toml", data)
    (workdir / "driver.py").write_text(DRIVER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("BASELINE_DEBUG", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "driver.py", "exp.toml"]
    if nproc > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    completed = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    return Outcome(
        completed.returncode, completed.stderr, RunDirectory(workdir / "runs" / "tiny"), workdir
    )


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# -- continue (the default) ------------------------------------------------------------------


def test_a_logger_raising_in_log_is_switched_off_and_the_run_completes(tmp_path: Path) -> None:
    outcome = run_cli(tmp_path, experiment(tmp_path, "log"))
    assert outcome.code == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr
    [line] = lines_with(outcome.stderr, LINE)  # once
    assert line == (
        f"warning: {LINE}; it is switched off, training goes on; "
        f"traceback in {outcome.run.logger_errors}"
    )
    # The traceback is in the run directory.
    tracebacks = outcome.run.logger_errors.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in tracebacks
    assert "KeyError: 'x'" in tracebacks and "in log" in tracebacks
    # Training went on: final weights, the whole metrics.jsonl, the other loggers.
    assert outcome.run.finished and outcome.run.final_model.is_file()
    records = outcome.records()
    assert max(r["step"] for r in records) == LAST_STEP
    assert {r["step"] for r in records if r["phase"] == "epoch"} == {11, LAST_STEP}
    tally = outcome.journal("tally")
    assert ["log", LAST_STEP, "epoch"] in tally and tally[-1] == ["finish", 0]
    # The failed logger was never called again, and was finished as failed.
    flaky = outcome.journal("flaky")
    assert flaky[-2:] == [["log", FAIL_STEP, "train"], ["finish", 1]]
    # The run's summary and run_config.json record the failure.
    [summary] = lines_with(outcome.stderr, "1 logger failure during the run")
    assert "'flaky' from test-plugins (log, step 4)" in summary
    assert outcome.run_config()["logger_failures"] == [
        {
            "logger": "flaky",
            "distribution": "test-plugins",
            "step": FAIL_STEP,
            "phase": "log",
            "error": "KeyError: 'x'",
        }
    ]


@pytest.mark.parametrize(("phase", "step"), [("start", 0), ("finish", LAST_STEP)])
def test_a_logger_raising_in_start_or_finish_does_not_fail_the_run(
    tmp_path: Path, phase: str, step: int
) -> None:
    outcome = run_cli(tmp_path, experiment(tmp_path, phase))
    assert outcome.code == 0, outcome.stderr
    where = "failed to start" if phase == "start" else "failed to finish"
    line = f"logger 'flaky' from test-plugins {where} at step {step} (KeyError: 'x')"
    assert len(lines_with(outcome.stderr, line)) == 1, outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert outcome.run.finished
    assert max(r["step"] for r in outcome.records()) == LAST_STEP
    assert outcome.journal("tally")[-1] == ["finish", 0]
    if phase == "start":
        assert outcome.journal("flaky") == [["start", 0]]  # never logged to
    [failure] = outcome.run_config()["logger_failures"]
    assert (failure["phase"], failure["step"]) == (phase, step)
    assert f"in {phase}" in outcome.run.logger_errors.read_text(encoding="utf-8")


# -- stop ------------------------------------------------------------------------------------


def test_on_logger_error_stop_ends_the_run_at_that_step_with_one_line(tmp_path: Path) -> None:
    outcome = run_cli(tmp_path, experiment(tmp_path, "log", on_error="stop"))
    assert outcome.code == 1, outcome.stderr
    assert "Traceback" not in outcome.stderr
    [line] = lines_with(outcome.stderr, LINE)
    assert line == (
        f'error: {LINE}; the run stops (logging.on_logger_error = "stop"); '
        f"traceback in {outcome.run.logger_errors}"
    )
    assert "KeyError: 'x'" in outcome.run.logger_errors.read_text(encoding="utf-8")
    assert not outcome.run.finished
    assert max(r["step"] for r in outcome.records()) == FAIL_STEP
    # Both loggers are finished as failed; the run's record says why.
    assert outcome.journal("flaky")[-1] == ["finish", 1]
    assert outcome.journal("tally")[-1] == ["finish", 1]
    assert outcome.run_config()["logger_failures"][0]["step"] == FAIL_STEP


def test_on_logger_error_stop_at_start(tmp_path: Path) -> None:
    outcome = run_cli(tmp_path, experiment(tmp_path, "start", on_error="stop"))
    assert outcome.code == 1, outcome.stderr
    [line] = lines_with(outcome.stderr, "logger 'flaky' from test-plugins failed to start")
    assert line.startswith("error: ") and "KeyError: 'x'" in line
    assert not outcome.run.path.exists()  # nothing trained: no directory blocks the retry


def test_on_logger_error_is_validated(tmp_path: Path) -> None:
    data = experiment(tmp_path, "log", on_error="ignore")
    plugins = in_process_plugins(ContractPlugin(), FlakyPlugin())
    with pytest.raises(ConfigError, match=r"logging.on_logger_error: .*'continue', 'stop'"):
        experiment_from_data(data, plugins.registry)
    data["logging"]["on_logger_error"] = "stop"
    assert experiment_from_data(data, plugins.registry).logging.on_logger_error == "stop"


# -- the router ------------------------------------------------------------------------------


def test_the_router_stops_calling_a_failed_sink_and_keeps_the_stop_error() -> None:
    from baseline.config import MetricsRequest
    from baseline.errors import PluginError

    calls: list[str] = []

    def broken(record: MetricRecord) -> None:
        calls.append("broken")
        raise ValueError("no")

    failures: list[tuple[str, int]] = []

    def on_failure(name: str, record: MetricRecord, error: Exception) -> PluginError | None:
        failures.append((name, record.step))
        return PluginError("stop") if name == "broken" else None

    requests = {name: MetricsRequest(log_every_n_steps=1) for name in ("broken", "fine")}
    router = MetricsRouter(
        MetricsPlan(requests, 1),
        {"broken": broken, "fine": lambda record: calls.append("fine")},
        on_failure=on_failure,
    )
    for step in (1, 2):
        router.train(MetricRecord(step, 0, 1, "train", {"train_loss": 1.0}), 1)
    assert calls == ["broken", "fine", "fine"]
    assert failures == [("broken", 1)]
    assert router.stopping
    with pytest.raises(PluginError, match="stop"):
        router.raise_stop()


def test_failures_record_as_json() -> None:
    failure = LoggerFailure("csv", "my-loggers", 12, "log", "KeyError: 'x'")
    assert failure.describe() == "logger 'csv' from my-loggers failed at step 12 (KeyError: 'x')"
    assert failure.to_json()["phase"] == "log"


# -- two processes ---------------------------------------------------------------------------


@pytest.mark.parametrize("on_error", ["continue", "stop"])
def test_under_ddp_rank_zero_failures_keep_the_ranks_together(
    tmp_path: Path, on_error: str
) -> None:
    data = experiment(tmp_path, "log", on_error=on_error)
    data["logging"]["tally"]["finish_delay_s"] = 2.0  # rank 0's cleanup takes a while
    outcome = run_cli(tmp_path, data, nproc=2)
    if on_error == "continue":
        assert outcome.code == 0, outcome.stderr[-3000:]
        assert outcome.run.finished
        assert len(lines_with(outcome.stderr, LINE)) == 1  # rank 0 alone logs
        assert max(r["step"] for r in outcome.records()) == LAST_STEP
    else:
        assert outcome.code != 0
        # Both ranks stop with the same line (the other rank's is rank 0's error).
        lines = lines_with(outcome.stderr, LINE)
        assert len(lines) == 2 and len(set(lines)) == 1, outcome.stderr[-3000:]
        assert max(r["step"] for r in outcome.records()) == FAIL_STEP
        # rank 0's cleanup was not cut short by rank 1's exit (torchrun stops the workers as
        # soon as one fails): the ranks part together once it has finished its loggers and
        # recorded the failure
        assert outcome.journal("tally")[-1] == ["finish", 1]
        assert outcome.run_config()["logger_failures"][0]["step"] == FAIL_STEP
