"""baseline: train small language models from a TOML experiment file.

The scripting API (a notebook's or a script's) is importable from here::

    from baseline import SamplingOptions, default_plugins, generate, load_experiment, load_run
    from baseline import model_pipeline

    config = load_experiment("experiment.toml", default_plugins().registry)
    result = model_pipeline(config)
    print(generate(load_run(result.run_dir), "ROMEO:", SamplingOptions(seed=1)))

The package imports nothing heavy at import time: each name is loaded on first use. The old
module paths (``baseline.training``, ``baseline.hookspecs``, ...) still import, with a
``DeprecationWarning`` naming the new path (:mod:`baseline._compat`). The public import paths
are listed in ``docs/writing-a-plugin.md`` (Public import paths).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from baseline import _compat

__version__ = "0.1.0"

_EXPORTS = {
    # running an experiment
    "model_pipeline": "baseline.pipeline",
    "RunResult": "baseline.pipeline",
    "load_experiment": "baseline.experiment.loading",
    "experiment_from_data": "baseline.experiment.loading",
    "validate_experiment_config": "baseline.experiment.validation",
    "default_plugins": "baseline.plugins.discovery",
    "ExperimentConfig": "baseline.config",
    "RunConfig": "baseline.config",
    "TrainConfig": "baseline.config",
    "LoggingConfig": "baseline.config",
    # using a trained run
    "load_run": "baseline.tools.inference",
    "LoadedRun": "baseline.tools.inference",
    "generate": "baseline.tools.generation",
    "SamplingOptions": "baseline.tools.generation",
    "evaluate_run": "baseline.tools.evaluation",
    "EvalResult": "baseline.tools.evaluation",
    "export_run": "baseline.tools.export",
    "ExportResult": "baseline.tools.export",
    # writing a plugin
    "hookimpl": "baseline.plugins.hookspecs",
}

__all__ = [*_EXPORTS, "__version__"]

_compat.install()

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
    from baseline.experiment.loading import experiment_from_data as experiment_from_data
    from baseline.experiment.loading import load_experiment as load_experiment
    from baseline.experiment.validation import (
        validate_experiment_config as validate_experiment_config,
    )
    from baseline.pipeline import RunResult as RunResult
    from baseline.pipeline import model_pipeline as model_pipeline
    from baseline.plugins.discovery import default_plugins as default_plugins
    from baseline.plugins.hookspecs import hookimpl as hookimpl
    from baseline.tools.evaluation import EvalResult as EvalResult
    from baseline.tools.evaluation import evaluate_run as evaluate_run
    from baseline.tools.export import ExportResult as ExportResult
    from baseline.tools.export import export_run as export_run
    from baseline.tools.generation import SamplingOptions as SamplingOptions
    from baseline.tools.generation import generate as generate
    from baseline.tools.inference import LoadedRun as LoadedRun
    from baseline.tools.inference import load_run as load_run


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'baseline' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    helpers = {"Any", "TYPE_CHECKING", "annotations", "import_module"}
    return sorted({*globals(), *_EXPORTS} - helpers)
