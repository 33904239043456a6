"""``baseline runs``: one row per run directory under an artifacts root.

Everything comes from the run directories' files (``run_config.json``, ``metrics.jsonl``,
``inference_config.json`` and which checkpoint and model files exist); nothing imports torch,
so listing hundreds of runs takes well under a second.

A run's state:

- ``complete``: ``inference_config.json`` and the final model file exist (training ended
  and the artifacts were written);
- ``running``: not complete, and a process on this machine has its ``metrics.jsonl`` open
  (read from ``/proc`` on Linux), or, where that cannot be checked or before the file is
  opened, one of its files changed in the last :data:`RECENT_S` seconds and it has no
  checkpoint or final model yet;
- ``interrupted``: not complete, not running, and a checkpoint exists: stopped by Ctrl-C or
  SIGTERM, or crashed after a checkpoint; ``--resume`` continues it;
- ``failed``: anything else (it ended before its first checkpoint).
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from baseline.artifacts import INFERENCE_CONFIG_FILENAME, METRICS_FILENAME, RUN_CONFIG_FILENAME
from baseline.errors import DataError
from baseline.run_files import read_json, read_metrics, training_clock

__all__ = [
    "COLUMNS",
    "RECENT_S",
    "STATES",
    "RunSummary",
    "find_runs",
    "open_files",
    "render_lines",
    "render_table",
    "summarize_run",
    "summarize_runs",
]

#: A run without an open metrics file still counts as running this long after its last write.
RECENT_S = 120.0
STATES = ("complete", "running", "interrupted", "failed")
DEFAULT_CHECKPOINT = "baseline_checkpoint.pt"
DEFAULT_FINAL_MODEL = "baseline_model.pt"
#: Column titles of the table, in order.
COLUMNS = (
    "run",
    "state",
    "model",
    "params",
    "steps",
    "tokens",
    "train time",
    "val bpb",
    "best bpb",
    "loggers",
    "updated",
)


@attrs.frozen(kw_only=True)
class RunSummary:
    """One row of ``baseline runs``."""

    name: str
    path: Path
    state: str
    project: str | None = None
    model: str | None = None
    parameters: int | None = None
    #: The last step in ``metrics.jsonl``.
    steps: int | None = None
    tokens_seen: int | None = None
    #: Seconds of training steps (validation and data preparation excluded).
    train_time_s: float | None = None
    #: ``val_bpb`` of the last validation, and the lowest of all.
    final_val_bpb: float | None = None
    best_val_bpb: float | None = None
    loggers: tuple[str, ...] = ()
    #: Last modification of the run's files (seconds since the epoch).
    updated: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``--json`` (``updated`` as local ISO 8601 time)."""
        data = attrs.asdict(self, recurse=False)
        data["path"] = str(self.path)
        data["loggers"] = list(self.loggers)
        data["updated"] = _iso(self.updated)
        return data

    def cells(self) -> tuple[str, ...]:
        """The row's text, one string per column of :data:`COLUMNS`."""
        return (
            self.name,
            self.state,
            self.model or "-",
            _count(self.parameters),
            "-" if self.steps is None else str(self.steps),
            _count(self.tokens_seen),
            _duration(self.train_time_s),
            _number(self.final_val_bpb),
            _number(self.best_val_bpb),
            ",".join(self.loggers) or "-",
            _iso(self.updated, minutes=True),
        )


def find_runs(root: Path) -> list[Path]:
    """Run directories under ``root`` (those holding ``run_config.json`` or
    ``metrics.jsonl``), or ``[root]`` when ``root`` is itself one."""
    if not root.is_dir():
        raise DataError(
            f"{root}: no such directory; pass the artifacts root of your runs (run.artifacts_root)"
        )
    if _is_run(root):
        return [root]
    return sorted(
        child
        for child in root.iterdir()
        if not child.name.startswith(".") and child.is_dir() and _is_run(child)
    )


def _is_run(directory: Path) -> bool:
    return (directory / RUN_CONFIG_FILENAME).is_file() or (directory / METRICS_FILENAME).is_file()


def open_files() -> frozenset[Path] | None:
    """Files that processes on this machine hold open, from ``/proc/<pid>/fd`` (Linux).

    Processes of other users are skipped. ``None`` when ``/proc`` cannot be read.
    """
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    found: set[Path] = set()
    try:
        pids = [entry for entry in os.listdir(proc) if entry.isdigit()]
    except OSError:
        return None
    for pid in pids:
        fd_dir = proc / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # another user's process, or one that just ended
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target.startswith("/"):
                found.add(Path(target))
    return frozenset(found)


def summarize_run(
    run_dir: Path, *, held_open: frozenset[Path] | None = None, now: float | None = None
) -> RunSummary:
    """The :class:`RunSummary` of one run directory.

    ``held_open`` is :func:`open_files`'s result (``None``: unknown, the state then relies on
    modification times); ``now`` the current time.
    """
    now = time.time() if now is None else now
    run_config = read_json(run_dir / RUN_CONFIG_FILENAME) or {}
    config = run_config.get("config")
    config = config if isinstance(config, Mapping) else {}
    run_section = _section(config, "run")
    records = read_metrics(run_dir)
    checkpoint = str(run_section.get("checkpoint_filename") or DEFAULT_CHECKPOINT)
    final_model = str(run_section.get("final_model_filename") or DEFAULT_FINAL_MODEL)
    files = [run_dir / name for name in (RUN_CONFIG_FILENAME, METRICS_FILENAME)]
    files += [run_dir / INFERENCE_CONFIG_FILENAME, run_dir / final_model]
    files += _checkpoints(run_dir, checkpoint)
    updated = max((_mtime(path) for path in files), default=0.0) or _mtime(run_dir)
    validations = [
        float(r["val_bpb"])
        for r in records
        if r.get("phase") == "validation" and _is_number(r.get("val_bpb"))
    ]
    clock = training_clock(records)
    return RunSummary(
        name=run_dir.absolute().name,
        path=run_dir.absolute(),
        state=_state(run_dir, final_model, checkpoint, held_open, updated, now),
        project=_text(run_section.get("project_name")),
        model=_text(_section(config, "model").get("name")),
        parameters=_integer(run_config.get("parameters")),
        steps=max((int(r["step"]) for r in records), default=None),
        tokens_seen=max((_integer(r.get("tokens_seen")) or 0 for r in records), default=None),
        train_time_s=clock.total_seconds if clock else None,
        final_val_bpb=validations[-1] if validations else None,
        best_val_bpb=min(validations) if validations else None,
        loggers=_providers(_section(config, "logging").get("provider")),
        updated=updated,
    )


def _state(
    run_dir: Path,
    final_model: str,
    checkpoint: str,
    held_open: frozenset[Path] | None,
    updated: float,
    now: float,
) -> str:
    if (run_dir / INFERENCE_CONFIG_FILENAME).is_file() and (run_dir / final_model).is_file():
        return "complete"
    metrics = run_dir / METRICS_FILENAME
    if held_open is not None and _resolved(metrics) in held_open:
        return "running"
    has_checkpoint = bool(_checkpoints(run_dir, checkpoint))
    if now - updated < RECENT_S:
        if held_open is None:  # no /proc: recent activity is the only sign
            return "running"
        if not metrics.exists() and not has_checkpoint:  # starting: the file is not open yet
            return "running"
    return "interrupted" if has_checkpoint else "failed"


def _checkpoints(run_dir: Path, checkpoint: str) -> list[Path]:
    """The newest checkpoint and its rotated predecessors (``<stem>.N<suffix>``) that exist."""
    newest = run_dir / checkpoint
    stem, suffix = newest.stem, newest.suffix
    found = [newest] if newest.is_file() else []
    found += sorted(run_dir.glob(f"{stem}.[0-9]*{suffix}"))
    return found


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name)
    return section if isinstance(section, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> int | None:
    return int(value) if _is_number(value) else None


def _providers(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return ()


def _count(value: int | None) -> str:
    if value is None:
        return "-"
    for limit, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= limit:
            return f"{value / limit:.1f}{unit}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _iso(timestamp: float, *, minutes: bool = False) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M") if minutes else moment.isoformat(timespec="seconds")


def summarize_runs(root: Path, *, now: float | None = None) -> list[RunSummary]:
    """Every run under ``root``, newest first (by last modification)."""
    directories = find_runs(root)
    held = open_files() if directories else None
    summaries = [summarize_run(d, held_open=held, now=now) for d in directories]
    return sorted(summaries, key=lambda s: (-s.updated, s.name))


def render_lines(summaries: Sequence[RunSummary], out: TextIO) -> None:
    """Plain aligned columns, one whole line per run (for pipes and files)."""
    rows = [COLUMNS, *(summary.cells() for summary in summaries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")


def render_table(
    summaries: Iterable[RunSummary],
    root: Path,
    out: TextIO | None = None,
    *,
    width: int | None = None,
) -> None:
    """A rich table (on a terminal; ``width`` defaults to the terminal's)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs in {root}")
    right = {"params", "steps", "tokens", "train time", "val bpb", "best bpb"}
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in right else "left")
    colour = {"complete": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}
    for summary in summaries:
        cells = list(summary.cells())
        cells[1] = f"[{colour[summary.state]}]{summary.state}[/]"
        table.add_row(*cells)
    Console(file=out, width=width).print(table)
