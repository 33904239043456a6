"""baseline plugin: the command ``baseline sweep``, hyperparameter sweeps of an experiment.

Each trial is an ordinary run of the experiment with the trial's overrides; the search
(grid, random, TPE), the pruning and the store (an SQLite file, or a shared SQL database) are
Optuna's. This module registers the command through ``baseline_register_commands``; it and the
argument parser (:mod:`baseline_sweeps.cli`) import nothing heavy, so ``baseline --help``
stays fast: optuna is imported when the command runs, torch only by the trials.
"""

from __future__ import annotations

from baseline.plugins.hookspecs import RegisterCommand, hookimpl


@hookimpl
def baseline_register_commands(register: RegisterCommand) -> None:
    """Register ``baseline sweep``."""
    from baseline_sweeps.cli import HELP, build, run

    register("sweep", build, run, help=HELP)
