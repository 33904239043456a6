"""Read MLflow runs back from a tracking store with MLflow's own client."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import attrs


@attrs.frozen
class MlflowRun:
    """What the tracking store holds for one run."""

    run_id: str
    name: str
    status: str
    experiment: str
    params: dict[str, str]
    tags: dict[str, str]
    #: key -> [(step, value), ...], in logging order (the whole history, not the last value).
    metrics: dict[str, list[tuple[int, float]]]
    #: artifact path -> its text
    artifacts: dict[str, str]
    artifact_uri: str

    def steps(self, key: str) -> list[int]:
        return [step for step, _ in self.metrics[key]]

    def value(self, key: str, step: int) -> float:
        found = [value for s, value in self.metrics[key] if s == step]
        assert len(found) == 1, (key, step, found)
        return found[0]

    def by_step(self) -> dict[int, set[str]]:
        rows: dict[int, set[str]] = {}
        for key, points in self.metrics.items():
            for step, _ in points:
                rows.setdefault(step, set()).add(key)
        return rows


def read_run(tracking_uri: str, run_id: str) -> MlflowRun:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    metrics = {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in run.data.metrics
    }
    artifacts: dict[str, str] = {}
    listing = [a.path for a in client.list_artifacts(run_id) if not a.is_dir]
    if listing:
        target = Path(tempfile.mkdtemp(prefix="mlflow-artifacts-"))
        try:
            for path in listing:
                local = client.download_artifacts(run_id, path, str(target))
                artifacts[path] = Path(local).read_text(encoding="utf-8")
        finally:
            shutil.rmtree(target, ignore_errors=True)
    experiment = client.get_experiment(run.info.experiment_id)
    return MlflowRun(
        run_id=run_id,
        name=run.info.run_name,
        status=run.info.status,
        experiment=experiment.name,
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        metrics=metrics,
        artifacts=artifacts,
        artifact_uri=run.info.artifact_uri,
    )


def run_ids(tracking_uri: str, experiment_name: str) -> list[str]:
    """The ids of an experiment's runs, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    runs: list[Any] = client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])
    return [run.info.run_id for run in runs]


def seed_default_store(artifacts_root: Path, empty_store: Path) -> Path:
    """Put a ready store where the logger's default store goes (``<root>/mlruns/mlflow.db``),
    so a test of the default skips MLflow's table creation."""
    database = artifacts_root / "mlruns" / "mlflow.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_store, database)
    return database
