"""A sweep logged to TensorBoard, W&B (offline) and MLflow (a local SQLite store) at once,
read back from what each library wrote: the trials are grouped by the sweep in each logger
(``SweepPlan._grouping``), and they are ordinary runs that ``baseline runs`` lists.

Needs the logger plugins ``baseline-tensorboard``, ``baseline-wandb`` and ``baseline-mlflow``
(the nox ``plugin`` session installs them with this plugin); without one the test is skipped.
W&B runs offline with its own directories under ``tmp_path`` and no credentials; the W&B
transaction logs are decoded with the reader of the W&B plugin's tests.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sweep_support import attempts, baseline, experiment

from baseline.testing import write_experiment

for _plugin in ("baseline_tensorboard", "baseline_wandb", "baseline_mlflow"):
    pytest.importorskip(
        _plugin, reason=f"{_plugin} is not installed (nox -s plugin installs it for these tests)"
    )

NAME = "lr-grid"
TRIALS = {f"{NAME}-0": 3e-3, f"{NAME}-1": 8e-3}
PROVIDERS = ["console", "tensorboard", "wandb", "mlflow"]
#: The W&B plugin's reader of ``.wandb`` transaction logs (a helper of its tests).
WANDB_READER = Path(__file__).resolve().parents[2] / "baseline-wandb/tests/wandb_transaction_log.py"

if not WANDB_READER.is_file():
    pytest.skip(
        f"runs from a checkout of the repository (needs {WANDB_READER})", allow_module_level=True
    )


def wandb_reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sweeps_wandb_transaction_log", WANDB_READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``baseline sweep`` of 2 trials (2 workers) with the three loggers, run to its end."""
    work = tmp_path_factory.mktemp("grouping")
    home = work / "wandb-home"
    store = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
    exp = experiment(work, max_steps=10, val_every=5, checkpoint_every=10)
    data = tomllib.loads(exp.read_text(encoding="utf-8"))
    cadence = {"val_every_n_steps": 5}
    data["logging"].update(
        provider=PROVIDERS,
        tensorboard={**cadence, "flush_secs": 1},
        wandb={**cadence, "mode": "offline"},
        mlflow={**cadence, "tracking_uri": store},
    )
    write_experiment(exp, data)
    with pytest.MonkeyPatch.context() as env:
        # W&B: offline, no credentials, every directory of its own under the test's folder;
        # without WANDB_DIR each trial's W&B run is in its run directory.
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        env.delenv("WANDB_DIR", raising=False)
        for variable, folder in [
            ("WANDB_CACHE_DIR", "cache"),
            ("WANDB_CONFIG_DIR", "config"),
            ("WANDB_DATA_DIR", "data"),
            ("WANDB_ARTIFACT_DIR", "artifacts"),
        ]:
            env.setenv(variable, str(home / folder))
        env.setenv("NETRC", str(home / "no-netrc"))
        for variable in (
            "WANDB_API_KEY",
            "WANDB_IDENTITY_TOKEN_FILE",
            "WANDB_RUN_ID",
            "WANDB_RESUME",
            "WANDB_RUN_GROUP",
            "MLFLOW_TRACKING_URI",
            "MLFLOW_EXPERIMENT_NAME",
            "MLFLOW_EXPERIMENT_ID",
            "MLFLOW_RUN_ID",
        ):
            env.delenv(variable, raising=False)
        env.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        env.setenv("DO_NOT_TRACK", "true")
        # A new store: the two trials start on it at once (the MLflow logger creates its
        # tables one process at a time, and each trial must run exactly once).
        (work / "mlflow").mkdir()
        result = baseline(
            "sweep",
            str(exp),
            "--name",
            NAME,
            "--param",
            "train.learning_rate=3e-3,8e-3",
            "--workers",
            "2",
            cwd=work,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        listed = baseline("runs", str(work / "runs"), cwd=work)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return {"work": work, "store": store, "output": result.stdout, "runs": listed.stdout}


def final_val_bpb(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return float([r["val_bpb"] for r in records if r["phase"] == "validation"][-1])


def test_the_loggers_group_the_trials_by_the_sweep(sweep: dict[str, Any]) -> None:
    work: Path = sweep["work"]
    runs = work / "runs"
    assert f"sweep {NAME}: 2 complete" in sweep["output"], sweep["output"]
    for trial in TRIALS:  # each trial ran once: nothing below comes from a retry
        log = work / "sweeps" / NAME / "logs" / f"{trial}.log"
        assert len(attempts(log)) == 1, log.read_text(encoding="utf-8")
    final = {trial: final_val_bpb(runs / trial) for trial in TRIALS}

    # TensorBoard: one directory for the sweep, which `tensorboard --logdir` shows as one run
    # per trial (and its tokens_seen axis); nothing in the run directories.
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    logdir = work / "sweeps" / NAME / "tensorboard"
    multiplexer = EventMultiplexer(size_guidance={"scalars": 0, "tensors": 0})
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    expected = {*TRIALS, *(f"{trial}/tokens_seen" for trial in TRIALS)}
    assert set(multiplexer.Runs()) == expected
    for trial in TRIALS:
        assert not (runs / trial / "tensorboard").exists()
        points = multiplexer.Scalars(trial, "val/val_bpb")
        assert [p.step for p in points] == [5, 10]
        assert points[-1].value == pytest.approx(final[trial], rel=1e-6)
        assert multiplexer.Scalars(f"{trial}/tokens_seen", "val_vs_tokens/val_bpb")

    # W&B: each trial's offline run is in the group named after the sweep.
    reader = wandb_reader()
    for trial, learning_rate in TRIALS.items():
        files = reader.wandb_files(runs / trial)
        assert len(files) == 1, files
        wandb_run = reader.read_finished(files[0])
        start = next(r.run for r in wandb_run.records if r.WhichOneof("record_type") == "run")
        assert (start.run_group, wandb_run.display_name) == (NAME, trial)
        assert wandb_run.exit_code == 0
        assert wandb_run.project == "test"  # the project is the experiment's; the group is new
        assert wandb_run.config["train"]["learning_rate"] == learning_rate
        assert wandb_run.rows[10]["val_bpb"] == pytest.approx(final[trial], rel=1e-6)

    # MLflow: one experiment named after the sweep holds both trials' runs.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sweep["store"])
    experiment = client.get_experiment_by_name(NAME)
    assert experiment is not None
    assert client.get_experiment_by_name("test") is None  # not the project's experiment
    mlflow_runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(mlflow_runs) == set(TRIALS)
    for trial, learning_rate in TRIALS.items():
        run = mlflow_runs[trial]
        assert run.info.status == "FINISHED"
        assert float(run.data.params["train.learning_rate"]) == learning_rate
        assert run.data.tags["baseline.run_dir"] == str(runs / trial)
        history = client.get_metric_history(run.info.run_id, "val_bpb")
        assert [m.step for m in history] == [5, 10]
        assert history[-1].value == pytest.approx(final[trial], rel=1e-6)


def test_the_trials_are_runs_that_baseline_runs_lists(sweep: dict[str, Any]) -> None:
    header, *lines = sweep["runs"].splitlines()
    assert header.split()[:3] == ["run", "state", "model"]
    rows = {line.split()[0]: line.split() for line in lines}
    assert set(rows) == set(TRIALS)  # only the trials: nothing else under the root is a run
    for trial in TRIALS:
        row = rows[trial]
        assert row[1:3] == ["complete", "baseline_decoder"]
        assert row[4] == "10"  # steps
        assert f"{final_val_bpb(sweep['work'] / 'runs' / trial):.4f}" in row
        assert ",".join(PROVIDERS) in row
