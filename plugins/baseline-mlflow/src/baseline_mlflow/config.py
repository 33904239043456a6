"""``MlflowConfig``: the ``[logging.mlflow]`` table."""

from __future__ import annotations

from typing import Any

import attrs

from baseline.config import DiagnosticsLoggerConfig, at_least
from baseline.errors import FieldError

__all__ = ["MlflowConfig"]


def _optional_non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.strip():
        raise FieldError(attribute.name, "must not be empty")


@attrs.frozen(kw_only=True)
class MlflowConfig(DiagnosticsLoggerConfig):
    """Settings of the ``[logging.mlflow]`` table.

    Every diagnostic is on by default, as for ``wandb``; the core computes each one only on
    the steps its cadence selects.
    """

    # -- diagnostics computed by the core (fields of DiagnosticsLoggerConfig) --
    #: Log ``global_grad_norm`` (L2 norm of all gradients, before clipping).
    enable_global_grad_norm: bool = True
    #: Log ``activation_norm_first|middle|last``.
    enable_activation_norms: bool = True
    #: Log ``ln_weight_grad_norm_*`` (and ``ln_bias_grad_norm_*`` when the norms have biases).
    enable_ln_grad_norms: bool = True
    #: Log ``attention_entropy_first|middle|last`` (sampled; the model must support it).
    enable_attention_entropy: bool = True
    #: Periodic validation every N steps (0 disables it; epoch-end validation remains).
    val_every_n_steps: int = attrs.field(default=250, validator=at_least(0))

    # -- the MLflow run --
    #: Tracking store. Unset: the ``MLFLOW_TRACKING_URI`` environment variable, else a local
    #: SQLite store ``<artifacts_root>/mlruns/mlflow.db`` (artifacts beside it).
    tracking_uri: str | None = attrs.field(default=None, validator=_optional_non_empty)
    #: MLflow experiment (created when missing). Unset: the ``MLFLOW_EXPERIMENT_NAME``
    #: environment variable, else ``run.project_name``.
    experiment_name: str | None = attrs.field(default=None, validator=_optional_non_empty)
    #: Name of the MLflow run; unset: the baseline run name (the run directory's name).
    run_name: str | None = attrs.field(default=None, validator=_optional_non_empty)
    #: Description of the run (the MLflow note shown on the run's page).
    description: str | None = None
    #: Log ``run_config.json`` (at the start) and ``inference_config.json`` (at the end of a
    #: successful run) as artifacts of the MLflow run.
    log_artifacts: bool = True
    #: Seconds to wait for an HTTP tracking server to accept a connection before the run
    #: fails.
    start_timeout_s: float = attrs.field(default=10.0, validator=at_least(0, exclusive=True))
