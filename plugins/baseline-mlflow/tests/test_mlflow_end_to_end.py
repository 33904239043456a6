"""Real training runs with ``logging.provider = ["mlflow"]``, read back from the local store
with ``MlflowClient`` and compared with the run directory: what only MLflow records. The
logger contract (cadence, validation, resume, crashes, two processes) is in
``test_mlflow_contract.py``, which needs only the core.

Needs the standard plugins (local_text, bpe, baseline_decoder, holdout); the nox ``plugin``
session installs this plugin alone with the core, and then these tests are skipped.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("baseline_text")
pytest.importorskip("baseline_bpe")
pytest.importorskip("baseline_decoder")
pytest.importorskip("baseline_holdout")

from mlflow_store import MlflowRun, read_run, seed_default_store

from baseline.cli import run_main
from baseline.errors import RunInterrupted
from baseline.experiment.loading import experiment_from_data, load_experiment
from baseline.experiment.validation import validate_experiment_config
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.testing import (
    ContractPlugin,
    tiny_experiment_data,
    using_plugins,
    write_experiment,
)
from baseline.testing.synthetic import CADENCES, unlisted_fields
from baseline_mlflow import RUN_ID_FILENAME, MlflowConfig
from baseline_mlflow.logger import flatten_config

REPO = Path(__file__).resolve().parents[3]
EXPERIMENT = REPO / "experiments" / "tiny_shakespeare_mlflow.toml"
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


def test_a_stopped_run_resumed_keeps_its_params_and_logs_its_artifacts_at_the_end(
    tmp_path: Path, empty_store: Path
) -> None:
    """What only MLflow records of a resume (the same-run, status and curve rules are the
    logger contract's, in ``test_mlflow_contract.py``)."""
    seed_default_store(tmp_path / "runs", empty_store)
    data = experiment(tmp_path)
    data["logging"]["provider"] = ["mlflow", "contract_fault"]
    data["logging"]["contract_fault"] = {"step": 8, "action": "sigterm"}
    with using_plugins(ContractPlugin()) as plugins:
        with pytest.raises(RunInterrupted):
            train(copy.deepcopy(data), plugins)
        run_dir = tmp_path / "runs" / "tiny"
        assert "inference_config.json" not in mlflow_run(run_dir).artifacts
        data["logging"]["contract_fault"]["step"] = -1
        data["run"]["resume_from_checkpoint"] = True
        train(data, plugins)
    resumed = mlflow_run(run_dir)
    assert "inference_config.json" in resumed.artifacts
    # Params are immutable: the keys the resume changed are in a tag, the first values stay.
    assert json.loads(resumed.tags["baseline.resume_changes"]) == {
        "run.resume_from_checkpoint": ["false", "true"],
        "logging.contract_fault.step": ["8", "-1"],
    }
    assert resumed.params["run.resume_from_checkpoint"] == "false"


def test_an_unreachable_server_stops_the_run_with_one_line_and_no_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = experiment(tmp_path, tracking_uri="http://127.0.0.1:9", start_timeout_s=3)
    write_experiment(tmp_path / "exp.toml", data)
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
    assert unlisted_fields(EXPERIMENT, "mlflow", MlflowConfig) == []
