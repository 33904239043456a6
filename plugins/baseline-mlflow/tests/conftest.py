"""MLflow settings made before anything imports ``mlflow``, and a ready tracking store.

Every MLflow run of these tests is a real run in a real local store (an SQLite database under
``tmp_path``, as the logger creates by default), read back with ``MlflowClient``. No tracking
server is configured, telemetry is off, and nothing can reach the network.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

for _name in (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_RUN_ID",
    "MLFLOW_REGISTRY_URI",
):
    os.environ.pop(_name, None)
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite tracking store with MLflow's tables and no runs.

    Creating the tables runs MLflow's database migrations (seconds); tests copy this file
    instead of creating a store each.
    """
    from mlflow.tracking import MlflowClient

    database = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments()
    return database


@pytest.fixture
def store(tmp_path: Path, empty_store: Path) -> str:
    """The tracking URI of a fresh store of this test (a copy of ``empty_store``)."""
    database = tmp_path / "store" / "mlflow.db"
    database.parent.mkdir()
    shutil.copyfile(empty_store, database)
    return f"sqlite:///{database}"
