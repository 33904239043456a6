"""The ``mlflow`` logger against real local tracking stores, read back with ``MlflowClient``.

These tests need only the core and this plugin. Records are fed the way the trainer feeds
them: through :class:`baseline.metrics.router.MetricsRouter`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow_store import MlflowRun, read_run, run_ids, seed_default_store

import baseline_mlflow
from baseline.errors import ConfigError, PluginError
from baseline.metrics.router import diagnostic_of
from baseline.plugins.protocols import LoggerAdapter, LoggerSession, MetricRecord, RunInfo
from baseline.testing import check_logger_adapter, in_process_plugins
from baseline.testing.synthetic import (
    CADENCES,
    CUDA_EXTRAS,
    DIAGNOSTICS,
    STEPS,
    TOKENS_PER_STEP,
    TRAIN,
    VALIDATION,
    feed_epoch,
)
from baseline_mlflow import RUN_ID_FILENAME, MlflowConfig, MlflowLogger
from baseline_mlflow.logger import (
    RESUME_CHANGES_TAG,
    flatten_config,
    mlflow_values,
    resolve_tracking_uri,
    run_status,
)

DIAGNOSTIC_TOGGLES = sorted({f"enable_{diagnostic_of(key)}" for key in DIAGNOSTICS})
TRAIN_KEYS = {k for k in TRAIN if k != "global_grad_norm"} | {"tokens_seen"}
LAYER_KEYS = {k for k in DIAGNOSTICS if not k.startswith("attention_entropy")}
ENTROPY_KEYS = {k for k in DIAGNOSTICS if k.startswith("attention_entropy")}
ALL_ON = {
    2: TRAIN_KEYS,
    3: LAYER_KEYS,
    4: TRAIN_KEYS | set(CUDA_EXTRAS) | ENTROPY_KEYS,
    5: set(VALIDATION) | {"tokens_seen"},
    6: TRAIN_KEYS
    | LAYER_KEYS
    | set(VALIDATION)
    | {"train_loss_epoch", "train_perplexity_epoch"}
    | {"epoch"},
}
CONFIG: dict[str, Any] = {
    "run": {"project_name": "baseline-mlflow-tests", "seed": 7, "requires": []},
    "train": {"learning_rate": 0.001, "batch_size": 8, "seq_len": 16, "compile": False},
    "model": {"name": "tiny", "d_model": 32, "bias": False},
    "logging": {"provider": ["console", "mlflow"], "mlflow": {"log_artifacts": True}},
}
FLAT_CONFIG = {
    "run.project_name": "baseline-mlflow-tests",
    "run.seed": "7",
    "run.requires": "[]",
    "train.learning_rate": "0.001",
    "train.batch_size": "8",
    "train.seq_len": "16",
    "train.compile": "false",
    "model.name": "tiny",
    "model.d_model": "32",
    "model.bias": "false",
    "logging.provider": '["console", "mlflow"]',
    "logging.mlflow.log_artifacts": "true",
}


def run_info(run_dir: Path, *, start_step: int = 0, config: Any = None) -> RunInfo:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_config.json").write_text(json.dumps({"config": config or CONFIG}))
    return RunInfo(
        project_name="baseline-mlflow-tests",
        run_name=run_dir.name,
        run_dir=run_dir,
        config=config or CONFIG,
        epochs=1,
        steps_per_epoch=STEPS,
        total_steps=STEPS,
        start_step=start_step,
    )


def feed(session: LoggerSession, config: MlflowConfig) -> None:
    """One epoch of ``STEPS`` steps, routed as the trainer routes its records."""
    feed_epoch("mlflow", config, session.log, range(1, STEPS + 1))


def logged(store: str, run_dir: Path, exit_code: int = 0, **fields: Any) -> MlflowRun:
    """An MLflow run fed one epoch, finished with ``exit_code``, read back."""
    config = MlflowConfig(**{**CADENCES, "tracking_uri": store, **fields})
    session = MlflowLogger(config).start(run_info(run_dir))
    (run_dir / "inference_config.json").write_text('{"format_version": 1}')
    feed(session, config)
    session.finish(exit_code)
    return read_run(store, session.run_id)


# -- params, metrics, artifacts, status --------------------------------------------------------


def test_every_metric_lands_on_its_step_with_the_core_values(store: str, tmp_path: Path) -> None:
    run = logged(store, tmp_path / "r")
    assert run.by_step() == ALL_ON
    for step in (2, 4, 6):
        assert run.value("train_loss", step) == pytest.approx(3.0)
        assert run.value("step_time_ms", step) == pytest.approx(12.5)
        assert run.value("tokens_seen", step) == step * TOKENS_PER_STEP
    assert run.value("peak_memory_gib", 4) == pytest.approx(1.25)
    assert run.value("mfu", 4) == pytest.approx(0.31)
    assert run.value("val_bpb", 5) == pytest.approx(1.5)
    assert run.value("tokens_seen", 5) == 5 * TOKENS_PER_STEP
    assert run.value("train_loss_epoch", 6) == pytest.approx(3.1)
    assert run.value("epoch", 6) == 1
    for key, value in DIAGNOSTICS.items():
        assert run.value(key, 4 if key in ENTROPY_KEYS else 3) == pytest.approx(value), key
    assert run.steps("global_grad_norm") == [3, 6]  # from the diagnostics records only


def test_params_are_the_flattened_config(store: str, tmp_path: Path) -> None:
    run = logged(store, tmp_path / "r")
    assert run.params == FLAT_CONFIG
    assert run.name == "r"
    assert run.experiment == "baseline-mlflow-tests"
    assert run.tags["baseline.run_dir"] == str(tmp_path / "r")


def test_the_run_artifacts_are_logged(store: str, tmp_path: Path) -> None:
    run = logged(store, tmp_path / "r")
    assert json.loads(run.artifacts["run_config.json"]) == {"config": CONFIG}
    assert json.loads(run.artifacts["inference_config.json"]) == {"format_version": 1}
    # A failed run has no inference config to log.
    failed = logged(store, tmp_path / "failed", exit_code=1)
    assert set(failed.artifacts) == {"run_config.json"}
    none = logged(store, tmp_path / "none", log_artifacts=False)
    assert none.artifacts == {}


@pytest.mark.parametrize(
    ("exit_code", "status"),
    [(0, "FINISHED"), (1, "FAILED"), (2, "FAILED"), (130, "KILLED"), (143, "KILLED")],
)
def test_the_status_comes_from_the_exit_code(
    store: str, tmp_path: Path, exit_code: int, status: str
) -> None:
    assert run_status(exit_code) == status
    session = MlflowLogger(MlflowConfig(tracking_uri=store)).start(run_info(tmp_path / "r"))
    assert read_run(store, session.run_id).status == "RUNNING"
    session.finish(exit_code)
    session.finish(0)  # finishing twice finishes once
    assert read_run(store, session.run_id).status == status


@pytest.mark.parametrize("toggle", DIAGNOSTIC_TOGGLES)
def test_a_diagnostic_toggle_off_removes_its_metrics(
    store: str, tmp_path: Path, toggle: str
) -> None:
    run = logged(store, tmp_path / "r", **{toggle: False})
    gone = {key for key in DIAGNOSTICS if f"enable_{diagnostic_of(key)}" == toggle}
    assert gone and not gone & set(run.metrics)


def test_names_and_description(store: str, tmp_path: Path) -> None:
    config = MlflowConfig(
        tracking_uri=store, experiment_name="other", run_name="shown", description="why"
    )
    session = MlflowLogger(config).start(run_info(tmp_path / "r"))
    session.finish(0)
    run = read_run(store, session.run_id)
    assert (run.experiment, run.name, run.tags["mlflow.note.content"]) == ("other", "shown", "why")


def test_contract(store: str, tmp_path: Path) -> None:
    adapter = MlflowLogger(MlflowConfig(tracking_uri=store, experiment_name="contract"))
    assert isinstance(adapter, LoggerAdapter)
    check_logger_adapter(adapter, tmp_path / "contract")
    runs = [read_run(store, run_id) for run_id in run_ids(store, "contract")]
    assert [run.status for run in runs] == ["FINISHED", "FAILED"]
    assert all(run.value("val_bpb", 4) == pytest.approx(1.5) for run in runs)


# -- where the store is ------------------------------------------------------------------------


def test_the_default_store_is_sqlite_under_the_artifacts_root(
    tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's own defaults would write ./mlruns here
    root = tmp_path / "artifacts"
    database = seed_default_store(root, empty_store)
    run = logged(f"sqlite:///{database}", root / "r", tracking_uri=None)
    assert resolve_tracking_uri(MlflowConfig(), run_info(root / "r")) == f"sqlite:///{database}"
    assert run.params == FLAT_CONFIG
    assert run.artifact_uri.startswith((root / "mlruns" / "artifacts").as_uri())
    assert (root / "mlruns" / "artifacts").is_dir()
    assert not (tmp_path / "mlruns").exists()


def test_a_new_default_store_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "artifacts"
    session = MlflowLogger(MlflowConfig()).start(run_info(root / "r"))
    session.finish(0)
    assert (root / "mlruns" / "mlflow.db").is_file()
    run = read_run(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}", session.run_id)
    assert run.status == "FINISHED"
    assert set(run.artifacts) == {"run_config.json"}
    assert not (tmp_path / "mlruns").exists()


STARTER = """
import json, sys
from pathlib import Path
from baseline.plugins.protocols import RunInfo
from baseline_mlflow import MlflowConfig, MlflowLogger

run_dir = Path(sys.argv[2])
run_dir.mkdir(parents=True)
(run_dir / "run_config.json").write_text(json.dumps({"config": {}}))
info = RunInfo(project_name="racing", run_name=run_dir.name, run_dir=run_dir, config={},
               epochs=1, steps_per_epoch=1, total_steps=1, start_step=0)
sys.stdin.readline()  # every process is started before any touches the store
MlflowLogger(MlflowConfig(tracking_uri=sys.argv[1])).start(info).finish(0)
"""


def test_runs_starting_at_once_on_a_new_store_all_start(tmp_path: Path) -> None:
    # Sweep workers do this: each process would create the store's tables and migrate them.
    store = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, store, str(tmp_path / f"run-{i}")],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert len(run_ids(store, "racing")) == 3


def test_mlflow_environment_variables_are_honoured(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    session = MlflowLogger(MlflowConfig()).start(run_info(tmp_path / "runs" / "r"))
    session.finish(0)
    assert read_run(store, session.run_id).experiment == "from-env"
    assert not (tmp_path / "runs" / "mlruns").exists()
    # The table wins over the environment.
    other = tmp_path / "other.db"
    config = MlflowConfig(tracking_uri=f"sqlite:///{other}", experiment_name="from-table")
    assert resolve_tracking_uri(config, run_info(tmp_path / "runs" / "r")) == f"sqlite:///{other}"


# -- resuming ----------------------------------------------------------------------------------


def test_a_resumed_run_continues_the_same_mlflow_run(store: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    config = MlflowConfig(tracking_uri=store)
    first = MlflowLogger(config).start(run_info(run_dir))
    assert (run_dir / RUN_ID_FILENAME).read_text().strip() == first.run_id
    first.log(MetricRecord(2, 256, 1, "train", TRAIN))
    first.finish(143)
    assert read_run(store, first.run_id).status == "KILLED"

    changed = {**CONFIG, "train": {**CONFIG["train"], "learning_rate": 0.002}, "extra": {"k": 1}}
    second = MlflowLogger(config).start(run_info(run_dir, start_step=2, config=changed))
    assert second.run_id == first.run_id
    assert read_run(store, second.run_id).status == "RUNNING"
    second.log(MetricRecord(4, 512, 1, "train", TRAIN))
    second.finish(0)

    run = read_run(store, first.run_id)
    assert run.status == "FINISHED"
    assert run.steps("train_loss") == [2, 4]
    assert run_ids(store, "baseline-mlflow-tests") == [first.run_id]
    # Params are immutable in MLflow: new keys are added, changed values go to a tag.
    assert run.params["train.learning_rate"] == "0.001"
    assert run.params["extra.k"] == "1"
    assert json.loads(run.tags[RESUME_CHANGES_TAG]) == {"train.learning_rate": ["0.001", "0.002"]}

    # A run that starts from step 0 in the same directory (--overwrite) is a new MLflow run.
    fresh = MlflowLogger(config).start(run_info(run_dir))
    fresh.finish(0)
    assert fresh.run_id != first.run_id
    assert (run_dir / RUN_ID_FILENAME).read_text().strip() == fresh.run_id


def test_resuming_with_an_unknown_run_id_starts_a_new_run(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "unknown"
    run_dir.mkdir()
    (run_dir / RUN_ID_FILENAME).write_text("0123456789abcdef0123456789abcdef\n")
    with caplog.at_level(logging.WARNING, logger="baseline"):
        session = MlflowLogger(MlflowConfig(tracking_uri=store)).start(
            run_info(run_dir, start_step=4)
        )
    session.finish(0)
    assert session.run_id != "0123456789abcdef0123456789abcdef"
    assert (run_dir / RUN_ID_FILENAME).read_text().strip() == session.run_id
    assert "logging the resumed run as a new MLflow run" in caplog.text


def test_a_store_failing_mid_run_does_not_stop_training(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = MlflowLogger(MlflowConfig(tracking_uri=store)).start(run_info(tmp_path / "r"))
    session.log(MetricRecord(2, 256, 1, "train", TRAIN))
    working = session.client.log_batch

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database is locked\nmore detail")

    monkeypatch.setattr(session.client, "log_batch", refuse)
    with caplog.at_level(logging.WARNING, logger="baseline"):
        session.log(MetricRecord(4, 512, 1, "train", TRAIN))
        session.log(MetricRecord(6, 768, 1, "train", TRAIN))
        monkeypatch.setattr(session.client, "log_batch", working)
        session.log(MetricRecord(8, 1024, 1, "train", TRAIN))
        session.finish(0)
    assert caplog.messages == [
        "mlflow: the metrics of step 4 were not logged (database is locked); training goes on, "
        "metrics.jsonl has every value",
        f"mlflow: 2 metric records of run {session.run_id} were not logged (see the first warning)",
    ]
    run = read_run(store, session.run_id)
    assert run.steps("train_loss") == [2, 8]
    assert run.status == "FINISHED"


def test_a_store_locked_by_another_process_for_a_while_loses_no_record(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer (a sweep's other trial) holds the SQLite store for 6 s, longer than
    SQLite's default wait (5 s): MLflow's store waits longer (its busy timeout, 20 s), and the
    record is written once the store is free, not dropped."""
    session = MlflowLogger(MlflowConfig(tracking_uri=store)).start(run_info(tmp_path / "r"))
    session.log(MetricRecord(2, 256, 1, "train", TRAIN))
    holder = sqlite3.connect(
        store.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
    )
    holder.execute("BEGIN EXCLUSIVE")  # a real lock, in a real other connection
    try:
        released = threading.Timer(6.0, holder.execute, ("ROLLBACK",))
        with caplog.at_level(logging.WARNING, logger="baseline"):
            released.start()
            session.log(MetricRecord(4, 512, 1, "train", TRAIN))
        released.join()
    finally:
        holder.close()
    session.finish(0)
    assert caplog.messages == []
    assert read_run(store, session.run_id).steps("train_loss") == [2, 4]


# -- start failures ----------------------------------------------------------------------------


def test_an_unreachable_tracking_server_is_one_line_at_once(tmp_path: Path) -> None:
    # Nothing listens on port 9 of this host, so no request leaves the machine.
    config = MlflowConfig(tracking_uri="http://127.0.0.1:9", start_timeout_s=3)
    began = time.perf_counter()
    with pytest.raises(PluginError) as caught:
        MlflowLogger(config).start(run_info(tmp_path / "r"))
    assert time.perf_counter() - began < 5
    message = str(caught.value)
    assert message.startswith(
        "logging.mlflow: cannot reach the MLflow tracking server http://127.0.0.1:9 ("
    )
    assert message.endswith(
        "); start it, or unset tracking_uri (and MLFLOW_TRACKING_URI) to log to a local store"
    )
    assert "\n" not in message
    assert not (tmp_path / "r" / RUN_ID_FILENAME).exists()


def test_a_server_behind_a_proxy_is_not_probed_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    from baseline_mlflow.logger import _check_server_reachable

    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    _check_server_reachable("http://tracking.invalid:5000", 1.0)  # no connection attempted
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with pytest.raises(PluginError):
        _check_server_reachable("http://127.0.0.1:9", 1.0)


def test_a_store_that_cannot_be_created_is_one_config_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("in the way")
    config = MlflowConfig(tracking_uri=f"sqlite:///{tmp_path}/a-file/mlflow.db")
    with pytest.raises(ConfigError) as caught:
        MlflowLogger(config).start(run_info(tmp_path / "r"))
    assert caught.value.key_path == "logging.mlflow.tracking_uri"
    assert f"cannot create the MLflow store {tmp_path}/a-file" in str(caught.value)


def test_a_broken_store_is_one_plugin_error(tmp_path: Path) -> None:
    (tmp_path / "broken.db").write_text("this is not an SQLite database")
    config = MlflowConfig(tracking_uri=f"sqlite:///{tmp_path}/broken.db")
    with pytest.raises(PluginError) as caught:
        MlflowLogger(config).start(run_info(tmp_path / "r"))
    message = str(caught.value)
    assert message.startswith(
        f"logging.mlflow: MLflow could not start the run in sqlite:///{tmp_path}/broken.db: "
    )
    assert "\n" not in message


def test_a_deleted_experiment_is_one_config_error(store: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    client.delete_experiment(client.create_experiment("gone"))
    config = MlflowConfig(tracking_uri=store, experiment_name="gone")
    with pytest.raises(ConfigError) as caught:
        MlflowLogger(config).start(run_info(tmp_path / "r"))
    assert caught.value.key_path == "logging.mlflow.experiment_name"
    assert "MLflow experiment 'gone' is deleted in" in str(caught.value)


# -- helpers and registration ------------------------------------------------------------------


def test_flatten_config_writes_json_for_non_strings_and_cuts_long_values() -> None:
    data = {"a": {"b": True, "c": [1, "x"], "d": "text", "e": {"f": 1.5}}, "long": "y" * 7000}
    flat = dict(flatten_config(data))
    assert flat["a.b"] == "true" and flat["a.c"] == '[1, "x"]' and flat["a.d"] == "text"
    assert flat["a.e.f"] == "1.5"
    assert len(flat["long"]) == 6000 and flat["long"].endswith("...")


def test_values_of_an_epoch_record() -> None:
    record = MetricRecord(7, 896, 2, "epoch", {"train_loss_epoch": 1.0, "val_loss": 2.0})
    assert mlflow_values(record) == {"train_loss_epoch": 1.0, "epoch": 2.0}


def test_registers_the_mlflow_logger() -> None:
    plugin_set = in_process_plugins(baseline_mlflow, installed=False)
    assert plugin_set.registry.get("logger", "mlflow").config_cls is MlflowConfig
    assert not plugin_set.failures


def test_importing_the_plugin_imports_neither_mlflow_nor_torch() -> None:
    code = (
        "import sys, baseline_mlflow; "
        "print(sorted(m for m in ('mlflow', 'sqlalchemy', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
