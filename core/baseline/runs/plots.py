"""``baseline plot``: one metric of several runs in one chart, from their ``metrics.jsonl``.

:func:`metric_series` reads the points of one run (no matplotlib needed);
:func:`build_figure` draws them with matplotlib's object-oriented API (no pyplot, no global
state, no display needed); :func:`plot_runs` does both and writes the file. matplotlib is an
optional dependency of the core: ``pip install "baseline[plot]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs

from baseline.errors import BaselineError, ConfigError, DataError
from baseline.runs.layout import RunDirectory
from baseline.runs.records import RECORD_FIELDS, read_metrics, training_clock

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "INSTALL_HINT",
    "X_AXES",
    "Series",
    "build_figure",
    "metric_series",
    "plot_runs",
    "require_matplotlib",
]

XAxis = Literal["tokens", "step", "time"]
#: ``--x`` choices and their axis labels.
X_AXES: dict[str, str] = {
    "tokens": "tokens seen",
    "step": "optimizer step",
    "time": "training time (s)",
}
INSTALL_HINT = (
    "baseline plot needs matplotlib, which is not installed; install it with: "
    'pip install "baseline[plot]" (from a checkout: pip install -c constraints.txt -e ".[plot]")'
)
#: Series with at most this many points are drawn with a marker on each point.
MARKER_LIMIT = 40


@attrs.frozen
class Series:
    """The points of one run's metric, in step order."""

    label: str
    run_dir: Path
    x: tuple[float, ...]
    y: tuple[float, ...]


def metric_series(run_dir: Path, metric: str, x: XAxis = "tokens", label: str = "") -> Series:
    """The ``(x, metric)`` points of one run, one per step.

    A key that appears both in its own records and in the epoch summaries (``val_loss`` is in
    ``validation`` and ``epoch`` records) is taken from its own records; for the others
    (``train_loss_epoch``) the epoch records are the points. ``x = "time"`` is the training
    time at each step (:func:`baseline.runs.records.training_clock`).
    """
    if x not in X_AXES:
        raise ConfigError(f"must be one of {', '.join(X_AXES)}, got {x!r}", key_path="--x")
    records = read_metrics(run_dir, required=True)
    having = [r for r in records if _is_number(r.get(metric))]
    if not having:
        available = sorted(
            {key for r in records for key, value in r.items() if key not in RECORD_FIELDS}
        )
        listed = ", ".join(available) if available else "none (no records yet)"
        raise DataError(f"{RunDirectory(run_dir).metrics}: no {metric!r} values; it has: {listed}")
    if any(r.get("phase") != "epoch" for r in having):
        having = [r for r in having if r.get("phase") != "epoch"]
    by_step = {int(r["step"]): r for r in having}  # a resumed run's repeated step: the last
    clock = training_clock(records) if x == "time" else None
    if x == "time" and (clock is None or clock.total_seconds is None):
        raise DataError(
            f"{RunDirectory(run_dir).metrics}: no step times to place points in time; "
            "use --x step or --x tokens"
        )
    xs: list[float] = []
    ys: list[float] = []
    for step in sorted(by_step):
        record = by_step[step]
        if x == "step":
            xs.append(float(step))
        elif x == "tokens":
            xs.append(float(record.get("tokens_seen", 0)))
        else:
            assert clock is not None
            xs.append(clock.at(step))
        ys.append(float(record[metric]))
    return Series(label or run_dir.name, run_dir, tuple(xs), tuple(ys))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_matplotlib() -> None:
    """Raise a one-line :class:`BaselineError` (exit 2) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BaselineError(INSTALL_HINT) from None


def build_figure(series: Sequence[Series], metric: str, x: XAxis = "tokens") -> Figure:
    """A figure with one line per series (matplotlib's Agg canvas; nothing is shown)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    for one in series:
        marker = "o" if len(one.x) <= MARKER_LIMIT else None
        axes.plot(one.x, one.y, label=one.label, marker=marker, markersize=3, linewidth=1.5)
    axes.set_xlabel(X_AXES[x])
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} against {X_AXES[x]}")
    axes.grid(True, alpha=0.3)
    axes.legend()
    return figure


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """Run directory names; parent/name where two runs share a name."""
    names = [path.name for path in run_dirs]
    return [
        f"{path.parent.name}/{path.name}" if names.count(path.name) > 1 else path.name
        for path in run_dirs
    ]


def plot_runs(
    run_dirs: Sequence[Path], metric: str, x: XAxis, output: Path
) -> tuple[Figure, list[Series]]:
    """Read every run's series, draw them and write ``output`` (format from its suffix)."""
    require_matplotlib()
    series = [
        metric_series(run_dir, metric, x, label)
        for run_dir, label in zip(run_dirs, _labels(run_dirs), strict=True)
    ]
    figure = build_figure(series, metric, x)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(output)
    except ValueError as error:  # an unknown format
        raise ConfigError(f"{error}", key_path="--output") from None
    except OSError as error:
        raise ConfigError(
            f"cannot write {output} ({error.strerror or error})", key_path="--output"
        ) from None
    return figure, series
