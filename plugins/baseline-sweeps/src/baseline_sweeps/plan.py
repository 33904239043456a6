"""From a sweep to its trials: each trial's ``--set`` overrides and run name, and every trial's
config built and validated with the core's validation (as ``baseline validate`` does) before
the first trial starts, so a typo fails in a second naming the sweep file and the key."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from baseline.errors import ConfigError
from baseline.experiment.loading import load_experiment
from baseline.experiment.validation import validate_experiment_config
from baseline.plugins.discovery import default_plugins
from baseline_sweeps.spec import Param, Scalar, SweepSpec, show, toml_value

#: The directory of every sweep's store, beside the runs root: ``<artifacts_root>/../sweeps``.
SWEEPS_DIRNAME = "sweeps"
#: The source the core gives an error caused by a ``--set`` override.
_OVERRIDE_SOURCE = "--set"


def sweeps_root(artifacts_root: Path) -> Path:
    """Where the stores of the sweeps of runs under ``artifacts_root`` live."""
    return artifacts_root.parent / SWEEPS_DIRNAME


def run_name(spec: SweepSpec, point: int, repeat: int) -> str:
    """``<sweep>-<point>``, and ``<sweep>-<point>-r<repeat>`` when points repeat."""
    return f"{spec.name}-{point}" if spec.repeats == 1 else f"{spec.name}-{point}-r{repeat}"


def base_point(spec: SweepSpec) -> dict[str, Scalar]:
    """Each parameter at its first value (a range at its low end)."""
    point: dict[str, Scalar] = {}
    for param in spec.params:
        if param.values:
            point[param.key] = param.values[0]
        else:
            assert param.low is not None
            point[param.key] = int(param.low) if param.integer else param.low
    return point


def describe_point(params: Mapping[str, Any]) -> str:
    """``train.learning_rate=0.003 model.d_model=96``."""
    return " ".join(f"{key}={show(value)}" for key, value in params.items())


class Plan:
    """The sweep's trials against one experiment file: overrides, run names, validation."""

    def __init__(self, experiment: str, spec: SweepSpec) -> None:
        self.experiment = experiment
        self.spec = spec
        self.registry = default_plugins().registry
        #: The experiment with the sweep's fixed overrides (no parameter set).
        self.base: Any = self._validate(list(spec.fixed), None)
        self.artifacts_root = Path(self.base.config.run.artifacts_root)
        self.directory = sweeps_root(self.artifacts_root) / spec.name
        self.base_seed: int = self.base.config.run.seed
        self.grouping = self._grouping()

    # -- overrides ---------------------------------------------------------------------------

    def _grouping(self) -> list[str]:
        """Overrides that group the trials in the loggers that can: a W&B group, an MLflow
        experiment and a TensorBoard directory per sweep (unless the experiment sets them)."""
        data = self.base.config_data.get("logging", {})
        providers = self.base.config.logging.provider
        name = toml_value(self.spec.name)
        grouping = []
        if "wandb" in providers and "group" not in data.get("wandb", {}):
            grouping.append(f"logging.wandb.group={name}")
        if (
            "mlflow" in providers
            and "experiment_name" not in data.get("mlflow", {})
            and not os.environ.get("MLFLOW_EXPERIMENT_NAME")
        ):
            grouping.append(f"logging.mlflow.experiment_name={name}")
        if "tensorboard" in providers and "log_dir" not in data.get("tensorboard", {}):
            log_dir = toml_value(str(self.directory / "tensorboard"))
            grouping.append(f"logging.tensorboard.log_dir={log_dir}")
        return grouping

    def overrides(self, params: Mapping[str, Any], point: int, repeat: int) -> list[str]:
        """Every ``--set`` of the trial ``point`` (repeat ``repeat``)."""
        assignments = [*self.spec.fixed]
        assignments += [f"{key}={toml_value(value)}" for key, value in params.items()]
        assignments += self.grouping
        assignments.append(f"run.run_name={toml_value(run_name(self.spec, point, repeat))}")
        if repeat:
            assignments.append(f"run.seed={self.base_seed + repeat}")
        return assignments

    def run_dir(self, point: int, repeat: int) -> Path:
        return self.artifacts_root / run_name(self.spec, point, repeat)

    # -- validation --------------------------------------------------------------------------

    def check(self, params: Mapping[str, Any], point: int = 0, repeat: int = 0) -> Any:
        """Build and validate one trial's config (the core's validation); a problem is a
        :class:`ConfigError` naming the sweep file and the parameter."""
        return self._validate(self.overrides(params, point, repeat), params)

    def _validate(self, overrides: Sequence[str], params: Mapping[str, Any] | None) -> Any:
        try:
            config = load_experiment(self.experiment, self.registry, overrides)
            return validate_experiment_config(config, self.registry, source=self.experiment)
        except ConfigError as error:
            raise self._blame(error, params) from None

    def _blame(self, error: ConfigError, params: Mapping[str, Any] | None) -> ConfigError:
        """The error as the sweep's: the parameter (or fixed override) that caused it."""
        spec = self.spec
        if error.source == _OVERRIDE_SOURCE:
            key = error.key_path
            for param in spec.params:
                if _covers(param.key, key):
                    return ConfigError(
                        error.message, key_path=param.origin[1], source=param.origin[0]
                    )
            for assignment in spec.fixed:
                fixed_key = assignment.partition("=")[0].strip()
                if _covers(fixed_key, key):
                    source, key_path = (
                        (spec.source, "sweep.set") if spec.from_file else ("--set", "")
                    )
                    return ConfigError(f"{key}: {error.message}", key_path=key_path, source=source)
        if not params:
            return error
        culprit = _culprit(spec.params, params, error.key_path)
        return ConfigError(
            f"{culprit.key} = {show(params.get(culprit.key))} is rejected: {error}",
            key_path=culprit.origin[1],
            source=culprit.origin[0],
        )

    def candidates(self) -> list[dict[str, Scalar]]:
        """The configs checked before the first trial: every point of a grid; for a sampled
        sweep the points ``random`` will draw (the first ones of ``tpe``) and each parameter's
        every value and both ends of its range, the others at their first value."""
        from baseline_sweeps.sampling import sampled_points

        spec = self.spec
        if spec.method == "grid":
            return spec.points()
        base = base_point(spec)
        points = [base]
        for param in spec.params:
            for value in _extremes(param):
                points.append({**base, param.key: value})
        points += sampled_points(spec)
        unique: list[dict[str, Scalar]] = []
        for point in points:
            if point not in unique:
                unique.append(point)
        return unique

    def check_all(self) -> int:
        """Validate every candidate; the number of configs checked."""
        candidates = self.candidates()
        for params in candidates:
            self.check(params)
        return len(candidates)


def _covers(key: str, error_key: str) -> bool:
    return bool(error_key) and (
        error_key == key or error_key.startswith(f"{key}.") or key.startswith(f"{error_key}.")
    )


def _culprit(params: Sequence[Param], point: Mapping[str, Any], error_key: str) -> Param:
    """The parameter most likely behind a cross-field error: one of the error's section."""
    section = error_key.partition(".")[0]
    swept = [param for param in params if param.key in point]
    for param in swept:
        if _covers(param.key, error_key):
            return param
    for param in swept:
        if section and param.key.partition(".")[0] == section:
            return param
    return swept[0] if swept else params[0]


def _extremes(param: Param) -> list[Scalar]:
    if param.values:
        return list(param.values)
    grid = param.grid_values()
    if grid:
        return [grid[0], grid[-1]]
    assert param.low is not None and param.high is not None
    return [param.low, param.high]
