"""The metrics wing: what is measured and who receives it.

- ``router``: the metrics plan (the union of the loggers' requests) and the router that gives
  each logger its keys on its cadence;
- ``diagnostics``: layer diagnostics (activation norms, norm gradients, attention entropy);
- ``sessions``: the loggers' sessions of a run, and what a logger's failure does to it
  (``logging.on_logger_error``);
- ``console_logger``: the built-in ``console`` logger.

May import: :mod:`baseline.config`, :mod:`baseline.plugins`, :mod:`baseline.distributed`,
:mod:`baseline.errors`.
"""

from __future__ import annotations

from typing import Any

#: Names of the old module ``baseline.metrics`` (now :mod:`baseline.metrics.router`),
#: importable from here with a ``DeprecationWarning``; the router is imported on first use.
_MOVED = {
    "LAYER_POSITIONS",
    "MetricsPlan",
    "MetricsRouter",
    "Sink",
    "diagnostic_of",
    "layer_indices",
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'baseline.metrics' has no attribute {name!r}")
    import warnings
    from importlib import import_module

    warnings.warn(
        f"baseline.metrics.{name} is deprecated: import it from baseline.metrics.router",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(import_module("baseline.metrics.router"), name)
