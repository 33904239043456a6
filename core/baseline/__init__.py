"""baseline: train small language models from a TOML experiment file.

The package imports nothing heavy at import time; ``model_pipeline`` and the config classes
are loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "model_pipeline": "baseline.pipeline",
    "RunResult": "baseline.pipeline",
    "ExperimentConfig": "baseline.config",
    "RunConfig": "baseline.config",
    "TrainConfig": "baseline.config",
    "LoggingConfig": "baseline.config",
    "validate_experiment_config": "baseline.experiment.validation",
    "load_experiment": "baseline.experiment.loading",
    "hookimpl": "baseline.plugins.hookspecs",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from baseline.config import (
        ExperimentConfig as ExperimentConfig,
    )
    from baseline.config import (
        LoggingConfig as LoggingConfig,
    )
    from baseline.config import (
        RunConfig as RunConfig,
    )
    from baseline.config import (
        TrainConfig as TrainConfig,
    )
    from baseline.experiment.loading import load_experiment as load_experiment
    from baseline.experiment.validation import (
        validate_experiment_config as validate_experiment_config,
    )
    from baseline.pipeline import RunResult as RunResult
    from baseline.pipeline import model_pipeline as model_pipeline
    from baseline.plugins.hookspecs import hookimpl as hookimpl


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'baseline' has no attribute {name!r}")
    return getattr(import_module(module), name)
