"""The metrics wing: what is measured and who receives it.

- ``router``: the metrics plan (the union of the loggers' requests) and the router that gives
  each logger its keys on its cadence;
- ``diagnostics``: layer diagnostics (activation norms, norm gradients, attention entropy);
- ``console_logger``: the built-in ``console`` logger.

May import: :mod:`baseline.config`, :mod:`baseline.plugins`, :mod:`baseline.distributed`,
:mod:`baseline.errors`.
"""
