"""The config wing: typed experiment configuration, attrs classes frozen and validated on
construction.

The core owns the sections every experiment has (``run``, ``train``, ``logging``) and the
base classes that plugins subclass for their own component configs (``dataset``,
``tokenizer``, ``model``, ``split`` and one ``[logging.<provider>]`` table per logger).
Per-field rules (types, ranges) run when a config is constructed; rules that relate
fields to each other run in :func:`baseline.experiment.validation.validate_experiment_config`.

This wing holds the schema (``fields``, ``sections``, ``experiment``), the strict cattrs
``converter``, ``requirements`` (plugin requirement strings) and ``diff`` (flattened configs
and the keys that differ). It imports only :mod:`baseline.errors`; every other wing may
import it. ``baseline.config`` is the public path of the config classes.

May import: :mod:`baseline.errors` only.
"""

from __future__ import annotations

from baseline.config.experiment import (
    DIAGNOSTICS,
    MODEL_DIAGNOSTICS,
    ComponentConfig,
    DatasetConfig,
    DiagnosticsLoggerConfig,
    ExperimentConfig,
    LoggerConfig,
    LoggingConfig,
    MetricsRequest,
    ModelConfig,
    SplitConfig,
    TokenizerConfig,
)
from baseline.config.fields import PATH_METADATA_KEY, at_least, between, path_field
from baseline.config.sections import RunConfig, TrainConfig

__all__ = [
    "DIAGNOSTICS",
    "MODEL_DIAGNOSTICS",
    "PATH_METADATA_KEY",
    "ComponentConfig",
    "DatasetConfig",
    "DiagnosticsLoggerConfig",
    "ExperimentConfig",
    "LoggerConfig",
    "LoggingConfig",
    "MetricsRequest",
    "ModelConfig",
    "RunConfig",
    "SplitConfig",
    "TokenizerConfig",
    "TrainConfig",
    "at_least",
    "between",
    "path_field",
]
