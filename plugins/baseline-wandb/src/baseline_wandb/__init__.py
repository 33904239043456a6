"""baseline plugin: metrics logger ``wandb``, training curves and diagnostics in Weights & Biases.

This module and the ones it imports hold the config class, the logger and the registration
hook; ``wandb`` itself is imported only when a run starts the logger, so ``baseline plugins``
and ``baseline validate`` stay fast.
"""

from __future__ import annotations

from baseline.plugins.hookspecs import Register, hookimpl
from baseline_wandb.config import WandbMetricsConfig
from baseline_wandb.logger import RUN_ID_FILENAME, WandbLogger, WandbSession

__all__ = ["RUN_ID_FILENAME", "WandbLogger", "WandbMetricsConfig", "WandbSession"]


@hookimpl
def baseline_register_loggers(register: Register) -> None:
    """Register the ``wandb`` logger."""
    register("wandb", WandbMetricsConfig, WandbLogger)
