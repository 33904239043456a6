"""A sweep's results: one row per trial point (its repeats together: mean and standard
deviation of the metric), sorted by the metric; written as a terminal table, Markdown, CSV or
JSON; the best trial's experiment file; and the metric drawn against each parameter."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from baseline.errors import ConfigError, DataError
from baseline.runs.layout import RunDirectory
from baseline_sweeps.plan import run_name
from baseline_sweeps.spec import SweepSpec, show
from baseline_sweeps.tomlout import dumps

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

FORMATS = ("table", "md", "csv", "json")
#: Order of the rows: finished points by the metric first.
_STATE_ORDER = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "failed": 4}


def latest_trials(trials: Iterable[FrozenTrial]) -> dict[tuple[int, int], FrozenTrial]:
    """The newest trial of each ``(point, repeat)`` (a failed stale trial's queued copy wins)."""
    latest: dict[tuple[int, int], FrozenTrial] = {}
    for trial in trials:
        key = (
            int(trial.user_attrs.get("point", trial.number)),
            int(trial.user_attrs.get("repeat", 0)),
        )
        if key not in latest or trial.number > latest[key].number:
            latest[key] = trial
    return latest


def trial_state(trial: FrozenTrial) -> str:
    return str(trial.state.name).lower().replace("fail", "failed")


@attrs.frozen
class Row:
    """One point of the sweep (all its repeats)."""

    trial: int
    run: str
    params: dict[str, Any]
    state: str
    #: Mean over the complete repeats (a pruned point: the value it was pruned at).
    value: float | None
    std: float | None
    repeats_done: int
    steps: int | None
    wall_s: float | None
    pruned_step: int | None
    error: str | None
    runs: tuple[str, ...]


def point_rows(trials: Iterable[FrozenTrial], spec: SweepSpec) -> list[Row]:
    """The rows of the sweep, sorted by the metric (complete points first)."""
    by_point: dict[int, list[FrozenTrial]] = {}
    for (point, _repeat), trial in sorted(latest_trials(trials).items()):
        by_point.setdefault(point, []).append(trial)
    rows = [_row(point, group, spec) for point, group in by_point.items()]
    sign = 1.0 if spec.goal == "minimize" else -1.0

    def order(row: Row) -> tuple[int, float, int]:
        value = row.value if row.value is not None and not math.isnan(row.value) else math.inf
        return (
            _STATE_ORDER.get(row.state, 5),
            sign * value if value != math.inf else value,
            row.trial,
        )

    return sorted(rows, key=order)


def _row(point: int, group: Sequence[FrozenTrial], spec: SweepSpec) -> Row:
    params: dict[str, Any] = {}
    for trial in group:
        params.update(trial.system_attrs.get("fixed_params", {}))
        params.update(trial.params)
    states = [trial_state(trial) for trial in group]
    complete = [t.value for t in group if trial_state(t) == "complete" and t.value is not None]
    pruned = [t for t in group if trial_state(t) == "pruned"]
    if all(state == "complete" for state in states) and len(group) >= spec.repeats:
        state = "complete"
    elif "running" in states:
        state = "running"
    elif "waiting" in states:
        state = "waiting"
    elif "failed" in states:
        state = "failed"
    else:
        state = "pruned" if pruned else states[0]
    value: float | None = statistics.fmean(complete) if complete else None
    if value is None and pruned and pruned[0].value is not None:
        value = pruned[0].value
    std = statistics.stdev(complete) if len(complete) > 1 else None
    steps = [int(t.user_attrs["steps"]) for t in group if "steps" in t.user_attrs]
    walls = [float(t.user_attrs["wall_s"]) for t in group if "wall_s" in t.user_attrs]
    errors = [
        str(t.user_attrs["error"])
        for t in group
        if trial_state(t) == "failed" and "error" in t.user_attrs
    ]
    pruned_steps = [
        int(t.user_attrs["pruned_step"]) for t in pruned if "pruned_step" in t.user_attrs
    ]
    runs = tuple(run_name(spec, point, int(t.user_attrs.get("repeat", 0))) for t in group)
    return Row(
        trial=point,
        run=runs[0] if spec.repeats == 1 else f"{spec.name}-{point}-r*",
        params=params,
        state=state,
        value=value,
        std=std,
        repeats_done=len(complete),
        steps=max(steps) if steps else None,
        wall_s=sum(walls) if walls else None,
        pruned_step=min(pruned_steps) if pruned_steps else None,
        error=errors[-1] if errors else None,
        runs=runs,
    )


# -- formats ---------------------------------------------------------------------------------


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _metric_cell(row: Row, spec: SweepSpec) -> str:
    if row.value is None:
        return "-"
    text = f"{row.value:.4f}"
    if row.std is not None:
        text += f" ± {row.std:.4f}"
    return text


def human_columns(spec: SweepSpec) -> list[str]:
    columns = ["trial", "run", *(param.key for param in spec.params), spec.metric]
    if spec.repeats > 1:
        columns.append("repeats")
    return [*columns, "state", "steps", "wall time", "error"]


def human_cells(row: Row, spec: SweepSpec) -> list[str]:
    cells = [str(row.trial), row.run]
    cells += [show(row.params[p.key]) if p.key in row.params else "-" for p in spec.params]
    cells.append(_metric_cell(row, spec))
    if spec.repeats > 1:
        cells.append(f"{row.repeats_done}/{spec.repeats}")
    state = row.state if row.pruned_step is None else f"pruned at step {row.pruned_step}"
    steps = "-" if row.steps is None else str(row.steps)
    return [*cells, state, steps, _wall(row.wall_s), row.error or ""]


def csv_columns(spec: SweepSpec) -> list[str]:
    return [
        "trial",
        "run",
        *(param.key for param in spec.params),
        spec.metric,
        f"{spec.metric}_std",
        "repeats_done",
        "state",
        "steps",
        "wall_s",
        "pruned_step",
        "error",
    ]


def _plain(value: Any) -> Any:
    return "" if value is None else value


def json_row(row: Row, spec: SweepSpec) -> dict[str, Any]:
    return {
        "trial": row.trial,
        "run": row.run,
        "runs": list(row.runs),
        "params": row.params,
        "metric": spec.metric,
        "value": row.value,
        "std": row.std,
        "repeats_done": row.repeats_done,
        "repeats": spec.repeats,
        "state": row.state,
        "steps": row.steps,
        "wall_s": row.wall_s,
        "pruned_step": row.pruned_step,
        "error": row.error,
    }


def render(rows: Sequence[Row], spec: SweepSpec, fmt: str, out: TextIO) -> None:
    """Write ``rows`` in ``fmt``: ``table`` (rich), ``md``, ``csv`` or ``json``."""
    if fmt == "json":
        out.write(json.dumps([json_row(row, spec) for row in rows], indent=2) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(csv_columns(spec))
        for row in rows:
            params = [_plain(row.params.get(param.key)) for param in spec.params]
            writer.writerow(
                [
                    row.trial,
                    row.run,
                    *params,
                    _plain(row.value),
                    _plain(row.std),
                    row.repeats_done,
                    row.state,
                    _plain(row.steps),
                    _plain(None if row.wall_s is None else round(row.wall_s, 3)),
                    _plain(row.pruned_step),
                    _plain(row.error),
                ]
            )
    elif fmt == "md":
        columns = human_columns(spec)
        out.write("| " + " | ".join(columns) + " |\n")
        out.write("|" + "|".join("---" for _ in columns) + "|\n")
        for row in rows:
            cells = [cell.replace("|", "\\|") for cell in human_cells(row, spec)]
            out.write("| " + " | ".join(cells) + " |\n")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"sweep {spec.name}: {spec.metric} ({spec.goal})")
        for column in human_columns(spec):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*human_cells(row, spec))
        terminal = out.isatty()
        width = None if terminal else max(shutil.get_terminal_size().columns, 200)
        Console(file=out, width=width, highlight=False).print(table)


def table_text(rows: Sequence[Row], spec: SweepSpec, fmt: str) -> str:
    buffer = io.StringIO()
    render(rows, spec, fmt, buffer)
    return buffer.getvalue()


# -- the best trial ---------------------------------------------------------------------------


def best_row(rows: Sequence[Row], spec: SweepSpec) -> Row:
    """The best complete point; a :class:`DataError` when none is complete."""
    for row in rows:
        if row.state == "complete" and row.value is not None:
            return row
    raise DataError(
        f"sweep {spec.name}: no trial is complete yet; see baseline sweep table {spec.name}"
    )


def best_experiment(
    row: Row, spec: SweepSpec, artifacts_root: Path, rebuild: Any
) -> tuple[str, dict[str, Any]]:
    """The TOML of the best point's experiment (its first repeat's config, as its run
    recorded it in ``run_config.json``; ``rebuild()`` gives it when the run is not here)."""
    run_dir = artifacts_root / run_name(spec, row.trial, 0)
    recorded = RunDirectory(run_dir).read_run_config() or {}
    config = recorded.get("config")
    data: dict[str, Any] = dict(config) if isinstance(config, Mapping) else rebuild()
    run = dict(data.get("run", {}))
    run.pop("run_name", None)
    run["resume_from_checkpoint"] = False
    run["overwrite"] = False
    data["run"] = run
    metric = f"{spec.metric} {row.value:.4f}" if row.value is not None else spec.metric
    if row.std is not None:
        metric += f" ± {row.std:.4f} over {row.repeats_done} repeats"
    point = " ".join(f"{key}={show(value)}" for key, value in row.params.items())
    header = [
        f"The best trial of sweep {spec.name} ({spec.goal} {spec.metric}): trial {row.trial}, "
        f"{metric}",
        f"  {point}",
        f"The complete config of {run_dir.name} (run_name left out); train it with: "
        "baseline-run FILE",
    ]
    return dumps(data, header), data


# -- plot -------------------------------------------------------------------------------------


def plot(trials: Iterable[FrozenTrial], spec: SweepSpec, output: Path) -> int:
    """Draw the metric against each parameter (a dot per complete run, a cross per pruned
    one) into ``output``; the number of runs drawn."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ConfigError(
            "baseline sweep plot needs matplotlib, which is not installed; install it with: "
            'pip install "baseline[plot]"',
            source="plot",
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latest = list(latest_trials(trials).values())
    count = len(spec.params)
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False)
    drawn = 0
    for axis, param in zip(axes.flat, spec.params, strict=False):
        numeric = not param.values or all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in param.values
        )
        order = [show(v) for v in param.values]

        def position(value: Any, numeric: bool = numeric, order: list[str] = order) -> float:
            return float(value) if numeric else float(order.index(show(value)))

        for state, marker, color in (("complete", "o", "tab:blue"), ("pruned", "x", "tab:gray")):
            points = [
                (position(t.params[param.key]), t.value)
                for t in latest
                if trial_state(t) == state and param.key in t.params and t.value is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.scatter(xs, ys, marker=marker, color=color, label=state)
                drawn += len(points) if param is spec.params[0] else 0
        if param.log:
            axis.set_xscale("log")
        if not numeric:
            axis.set_xticks(range(len(order)), order)
        axis.set_xlabel(param.key)
        axis.set_ylabel(spec.metric)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[count:]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize="small")
    figure.suptitle(f"sweep {spec.name}: {spec.metric} ({spec.goal})")
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    plt.close(figure)
    return drawn


def write_text(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
