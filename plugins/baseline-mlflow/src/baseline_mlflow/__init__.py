"""baseline plugin: metrics logger ``mlflow``, params, metrics, artifacts and status of each
run in MLflow tracking.

This module and the ones it imports hold the config class, the logger and the registration
hook; ``mlflow`` itself is imported only when a run starts the logger, so ``baseline plugins``
and ``baseline validate`` stay fast.
"""

from __future__ import annotations

from baseline.plugins.hookspecs import Register, hookimpl
from baseline_mlflow.config import MlflowConfig
from baseline_mlflow.logger import RUN_ID_FILENAME, MlflowLogger, MlflowSession

__all__ = ["RUN_ID_FILENAME", "MlflowConfig", "MlflowLogger", "MlflowSession"]


@hookimpl
def baseline_register_loggers(register: Register) -> None:
    """Register the ``mlflow`` logger."""
    register("mlflow", MlflowConfig, MlflowLogger)
