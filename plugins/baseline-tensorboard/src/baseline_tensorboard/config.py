"""``TensorBoardConfig``: the ``[logging.tensorboard]`` table."""

from __future__ import annotations

import attrs

from baseline.config import DiagnosticsLoggerConfig, at_least, path_field

__all__ = ["TensorBoardConfig"]


@attrs.frozen(kw_only=True)
class TensorBoardConfig(DiagnosticsLoggerConfig):
    """Settings of the ``[logging.tensorboard]`` table.

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

    # -- where and how events are written --
    #: Parent directory of the event files; the run's events go to ``<log_dir>/<run_name>``.
    #: Unset: ``<run dir>/tensorboard``. Relative paths are resolved against the experiment
    #: file's directory.
    log_dir: str | None = path_field(default=None)
    #: Seconds between flushes of the event files to disk (they are also flushed after each
    #: validation and when the run ends).
    flush_secs: int = attrs.field(default=30, validator=at_least(1))
