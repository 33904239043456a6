"""baseline plugin: metrics logger ``tensorboard``, training curves and diagnostics as
TensorBoard event files.

This module and the ones it imports hold the config class, the logger and the registration
hook; ``torch.utils.tensorboard`` and ``tensorboard`` are imported only when a run starts the
logger, so ``baseline plugins`` and ``baseline validate`` stay fast.
"""

from __future__ import annotations

from baseline.plugins.hookspecs import Register, hookimpl
from baseline_tensorboard.config import TensorBoardConfig
from baseline_tensorboard.logger import TensorBoardLogger, TensorBoardSession

__all__ = ["TensorBoardConfig", "TensorBoardLogger", "TensorBoardSession"]


@hookimpl
def baseline_register_loggers(register: Register) -> None:
    """Register the ``tensorboard`` logger."""
    register("tensorboard", TensorBoardConfig, TensorBoardLogger)
