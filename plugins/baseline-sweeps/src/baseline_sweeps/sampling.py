"""Optuna's side of a sweep: a parameter's distribution, the sampler of each trial, the pruner.

Each trial gets a sampler seeded with the sweep's seed and the trial's point, so ``random``
draws the same point ``k`` whichever worker claims it and however often the sweep was stopped,
and ``--dry-run`` can print those points before anything runs. ``tpe`` starts the same way
(its first ``startup_trials`` points are random) and then follows the finished trials.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import TYPE_CHECKING, Any, cast

from baseline_sweeps.spec import Param, Scalar, SweepSpec

if TYPE_CHECKING:
    import optuna


def quiet_optuna() -> None:
    """Optuna's INFO lines and experimental-feature warnings off (the sweep prints its own)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def trial_seed(seed: int, point: int) -> int:
    """The seed of point ``point``'s sampler: a hash, since the generators' first draws from
    consecutive seeds are correlated."""
    digest = hashlib.sha256(f"baseline-sweep:{seed}:{point}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def sampler_for(spec: SweepSpec, point: int) -> optuna.samplers.BaseSampler:
    """The sampler of trial ``point``: seeded by the sweep's seed and the point."""
    import optuna

    seed = trial_seed(spec.seed, point)
    if spec.method == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=spec.startup_trials, constant_liar=True
        )
    return optuna.samplers.RandomSampler(seed=seed)


def pruner_for(spec: SweepSpec) -> optuna.pruners.BasePruner:
    import optuna

    pruner = spec.pruner
    if pruner.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.warmup_steps
        )
    if pruner.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner.min_resource if pruner.min_resource is not None else "auto",
            reduction_factor=pruner.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, param: Param) -> Scalar:
    """The trial's value of ``param`` (its fixed value when the trial was enqueued with one)."""
    if param.values:
        return cast(Scalar, trial.suggest_categorical(param.key, list(param.values)))
    assert param.low is not None and param.high is not None
    if param.integer:
        return trial.suggest_int(
            param.key, int(param.low), int(param.high), step=int(param.step or 1), log=param.log
        )
    return trial.suggest_float(
        param.key, float(param.low), float(param.high), step=param.step, log=param.log
    )


def suggest_all(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Scalar]:
    """Every parameter's value for ``trial``, in the sweep's order."""
    return {param.key: suggest(trial, param) for param in spec.params}


def sampled_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The points a ``random`` sweep will run (for ``tpe``, its random first points), drawn
    exactly as the workers draw them; none for a grid."""
    if spec.method == "grid":
        return []
    import optuna

    quiet_optuna()
    count = spec.trials if spec.method == "random" else min(spec.trials, spec.startup_trials)
    study = optuna.create_study(direction=cast(Any, spec.goal))
    points = []
    for point in range(count):
        study.sampler = sampler_for(spec, point)
        trial = study.ask()
        points.append(suggest_all(trial, spec))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return points
