"""Real training runs with ``logging.provider = ["mlflow"]``, read back from the local store
with ``MlflowClient`` and compared with the run directory.

Needs the standard plugins (local_text, bpe, baseline_decoder, holdout); the nox ``plugin``
session installs this plugin alone with the core, and then these tests are skipped.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

pytest.importorskip("baseline_text")
pytest.importorskip("baseline_bpe")
pytest.importorskip("baseline_decoder")
pytest.importorskip("baseline_holdout")

from mlflow_store import MlflowRun, read_run, run_ids, seed_default_store

from baseline.cli import run_main
from baseline.config import LoggerConfig
from baseline.errors import RunInterrupted
from baseline.experiment.loading import experiment_from_data, load_experiment
from baseline.experiment.validation import validate_experiment_config
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.plugins.hookspecs import hookimpl
from baseline.plugins.protocols import MetricRecord, RunInfo
from baseline.testing import tiny_experiment_data, using_plugins
from baseline_mlflow import RUN_ID_FILENAME, MlflowConfig
from baseline_mlflow.logger import flatten_config

REPO = Path(__file__).resolve().parents[3]
EXPERIMENT = REPO / "experiments" / "tiny_shakespeare_mlflow.toml"
CADENCES = {
    "diagnostics_every_n_steps": 3,
    "attention_entropy_every_n_steps": 4,
    "val_every_n_steps": 5,
}
RECORD_FIELDS = ("step", "tokens_seen", "epoch", "phase")


def experiment(workdir: Path, **mlflow: Any) -> dict[str, Any]:
    """The tiny experiment (2 epochs) with MLflow as its only logger, default store."""
    data = tiny_experiment_data(workdir)
    data["train"]["num_threads"] = 1
    data["logging"] = {
        "provider": ["mlflow"],
        "log_every_n_steps": 2,
        "mlflow": {**CADENCES, **mlflow},
    }
    return data


def train(data: dict[str, Any], plugins: Any = None) -> Path:
    plugins = plugins or default_plugins()
    return model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins).run_dir


def metrics_jsonl(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def store_of(run_dir: Path) -> str:
    return f"sqlite:///{run_dir.parent / 'mlruns' / 'mlflow.db'}"


def mlflow_run(run_dir: Path) -> MlflowRun:
    return read_run(store_of(run_dir), (run_dir / RUN_ID_FILENAME).read_text().strip())


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)  # numbers, and strings as TOML basic strings

    lines: list[str] = []

    def table(prefix: str, content: dict[str, Any]) -> None:
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in content.items() if not isinstance(v, dict))
        for k, v in content.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> tuple[Path, MlflowRun]:
    """Two epochs of the tiny experiment, logged to the default store under the artifacts root."""
    workdir = tmp_path_factory.mktemp("straight")
    seed_default_store(workdir / "runs", empty_store)
    run_dir = train(experiment(workdir))
    return run_dir, mlflow_run(run_dir)


def test_every_metric_of_metrics_jsonl_is_in_the_mlflow_run(
    straight: tuple[Path, MlflowRun],
) -> None:
    run_dir, run = straight
    compared = 0
    for record in metrics_jsonl(run_dir):
        values = {k: v for k, v in record.items() if k not in RECORD_FIELDS}
        step = record["step"]
        if record["phase"] == "epoch":
            values = {k: v for k, v in values.items() if not k.startswith("val_")}
            assert run.value("epoch", step) == record["epoch"]
        if record["phase"] == "train":
            values.pop("global_grad_norm")  # logged from the diagnostics records
        if record["phase"] in ("train", "validation"):
            assert run.value("tokens_seen", step) == record["tokens_seen"]
        for key, value in values.items():
            assert run.value(key, step) == pytest.approx(value, rel=1e-6), (step, key)
            compared += 1
    assert compared > 100
    assert {"activation_norm_middle", "ln_weight_grad_norm_last", "attention_entropy_first"} <= set(
        run.metrics
    )
    assert not {"peak_memory_gib", "mfu"} & set(run.metrics)  # a CPU run


def test_params_artifacts_and_status(straight: tuple[Path, MlflowRun]) -> None:
    run_dir, run = straight
    saved = json.loads((run_dir / "run_config.json").read_text())
    assert run.params == dict(flatten_config(saved["config"]))
    assert run.params["model.name"] == "baseline_decoder"
    assert run.params["logging.provider"] == '["mlflow"]'
    assert json.loads(run.artifacts["run_config.json"]) == saved
    assert json.loads(run.artifacts["inference_config.json"]) == json.loads(
        (run_dir / "inference_config.json").read_text()
    )
    assert (run.status, run.name, run.experiment) == ("FINISHED", "tiny", "test")
    assert run.artifact_uri.startswith((run_dir.parent / "mlruns" / "artifacts").as_uri())


@attrs.frozen(kw_only=True)
class FaultConfig(LoggerConfig):
    #: Step whose train record triggers the fault (-1: never).
    step: int = -1
    #: ``sigterm`` (a graceful stop, exit 143) or ``raise`` (a crash, exit 1).
    action: str = "sigterm"


class Fault:
    """A logger that stops or crashes its own run at a chosen step."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> Fault:
        return self

    def log(self, record: MetricRecord) -> None:
        if record.phase == "train" and record.step == self.config.step:
            if self.config.action == "raise":
                raise RuntimeError("boom")
            os.kill(os.getpid(), signal.SIGTERM)

    def finish(self, exit_code: int) -> None:
        pass


class FaultPlugin:
    @hookimpl
    def baseline_register_loggers(self, register: Any) -> None:
        register("fault", FaultConfig, Fault)


def with_fault(data: dict[str, Any], step: int, action: str) -> dict[str, Any]:
    data = copy.deepcopy(data)
    data["logging"]["provider"] = ["mlflow", "fault"]
    data["logging"]["fault"] = {"step": step, "action": action}
    return data


def test_sigterm_is_killed_and_resume_finishes_the_same_run(
    tmp_path: Path, empty_store: Path, straight: tuple[Path, MlflowRun]
) -> None:
    seed_default_store(tmp_path / "runs", empty_store)
    data = with_fault(experiment(tmp_path), 8, "sigterm")
    with using_plugins(FaultPlugin()) as plugins:
        with pytest.raises(RunInterrupted) as caught:
            train(data, plugins)
        assert caught.value.exit_code == 143
        run_dir = tmp_path / "runs" / "tiny"
        stopped = mlflow_run(run_dir)
        assert stopped.status == "KILLED"
        assert max(stopped.steps("train_loss")) == 8
        assert "inference_config.json" not in stopped.artifacts
        data["logging"]["fault"]["step"] = -1
        data["run"]["resume_from_checkpoint"] = True
        train(data, plugins)
    resumed = mlflow_run(run_dir)
    assert resumed.run_id == stopped.run_id
    assert run_ids(store_of(run_dir), "test") == [stopped.run_id]
    assert resumed.status == "FINISHED"
    assert "inference_config.json" in resumed.artifacts
    # The stop saved a checkpoint at step 8: nothing is logged twice, and the curves are the
    # uninterrupted run's.
    _, whole = straight
    assert set(resumed.metrics) == set(whole.metrics)
    for key, points in whole.metrics.items():
        assert resumed.steps(key) == [step for step, _ in points], key
    for step, value in whole.metrics["val_loss"]:
        assert resumed.value("val_loss", step) == pytest.approx(value, rel=1e-5)
    # Params are immutable: the keys the resume changed are in a tag, the first values stay.
    assert json.loads(resumed.tags["baseline.resume_changes"]) == {
        "run.resume_from_checkpoint": ["false", "true"],
        "logging.fault.step": ["8", "-1"],
    }
    assert resumed.params["run.resume_from_checkpoint"] == "false"


def test_a_crash_marks_the_run_failed(tmp_path: Path, empty_store: Path) -> None:
    seed_default_store(tmp_path / "runs", empty_store)
    data = with_fault(experiment(tmp_path), 6, "raise")
    with using_plugins(FaultPlugin()) as plugins, pytest.raises(RuntimeError, match="boom"):
        train(data, plugins)
    run = mlflow_run(tmp_path / "runs" / "tiny")
    assert run.status == "FAILED"
    assert max(run.steps("train_loss")) == 6


def test_an_unreachable_server_stops_the_run_with_one_line_and_no_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = experiment(tmp_path, tracking_uri="http://127.0.0.1:9", start_timeout_s=3)
    write_toml(tmp_path / "exp.toml", data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASELINE_DEBUG", raising=False)
    assert run_main(["exp.toml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(
        r"error: logging\.mlflow: cannot reach the MLflow tracking server http://127\.0\.0\.1:9 "
        r"\(.+\); start it, or unset tracking_uri \(and MLFLOW_TRACKING_URI\) to log to a local "
        r"store",
        err[-1],
    ), err[-1]
    assert not (tmp_path / "runs" / "tiny").exists()  # the retry is not refused


@pytest.mark.skipif(not EXPERIMENT.is_file(), reason="runs from a checkout of the repository")
def test_the_shipped_mlflow_experiment_lists_every_field_with_the_defaults() -> None:
    registry = default_plugins().registry
    config = load_experiment(EXPERIMENT, registry)
    validate_experiment_config(config, registry)
    assert config.logging.provider == ("console", "mlflow")
    assert config.logging.loggers["mlflow"] == MlflowConfig()
    assert "baseline-mlflow>=0.1" in config.run.requires
    text = EXPERIMENT.read_text(encoding="utf-8")
    table = tomllib.loads(text)["logging"]["mlflow"]
    for field in attrs.fields(MlflowConfig):
        written = field.name in table
        commented = re.search(rf"^#\s*{field.name}\s*=", text, re.MULTILINE)
        assert written or commented, f"{field.name} is not listed in {EXPERIMENT.name}"
