"""``baseline runs``: one row per run directory under an artifacts root.

Everything comes from the run directories' files (the run config, the metrics, the inference
config, which checkpoints and model files exist, and the run's lock file beside the
directory: :class:`baseline.runs.layout.RunDirectory`); nothing imports torch, so listing
hundreds of runs takes well under a second.

A run's state (:meth:`RunDirectory.state <baseline.runs.layout.RunDirectory.state>`):

- ``running``: a process holds the run's lock, which the pipeline holds (``flock``) from start
  to end (:mod:`baseline.runs.locks`). On Linux the held locks are read from ``/proc/locks``,
  which disturbs nothing; elsewhere the process named in the lock file must be alive. A run
  without a lock file (written by an older baseline) counts as running while one of its
  files changed in the last :data:`RECENT_S` seconds;
- ``complete``: not running, and the inference config and the final model file exist
  (training ended and the artifacts were written);
- ``interrupted``: not complete, not running, and a complete checkpoint of either kind (a
  file, or an FSDP run's DCP directory) exists: stopped by Ctrl-C or SIGTERM, or crashed
  after a checkpoint; ``--resume`` continues it;
- ``failed``: anything else (it ended before its first checkpoint).
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

import attrs

from baseline.errors import DataError
from baseline.runs.layout import STATES, RunDirectory
from baseline.runs.records import read_json, read_metrics, training_clock

__all__ = [
    "COLUMNS",
    "RECENT_S",
    "STATES",
    "RunSummary",
    "columns",
    "find_runs",
    "held_locks",
    "render_lines",
    "render_table",
    "summarize_run",
    "summarize_runs",
]

#: A run without a lock file counts as running this long after its last write.
RECENT_S = 120.0
#: ``(device major, device minor, inode)`` of a file.
FileKey = tuple[int, int, int]
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
    #: A mixture's ``val_bpb/<source>`` of the last validation, by source.
    source_val_bpb: Mapping[str, float] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``--json`` (``updated`` as local ISO 8601 time)."""
        data = attrs.asdict(self, recurse=False)
        data["path"] = str(self.path)
        data["loggers"] = list(self.loggers)
        data["updated"] = _iso(self.updated)
        if self.source_val_bpb:  # a mixture's; one dataset's rows keep their keys
            data["source_val_bpb"] = dict(self.source_val_bpb)
        else:
            del data["source_val_bpb"]
        return data

    def cells(self, sources: Sequence[str] = ()) -> tuple[str, ...]:
        """The row's text, one string per column of :func:`columns` of ``sources`` (the
        columns of :data:`COLUMNS` and, after ``best bpb``, one per mixture source)."""
        cells = self._cells()
        per_source = tuple(_number(self.source_val_bpb.get(name)) for name in sources)
        at = COLUMNS.index("best bpb") + 1
        return (*cells[:at], *per_source, *cells[at:])

    def _cells(self) -> tuple[str, ...]:
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


def columns(summaries: Sequence[RunSummary]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The column titles of a table of ``summaries`` and the mixture sources among them (in
    order of appearance): ``val bpb/<source>`` after ``best bpb`` for each."""
    sources: list[str] = []
    for summary in summaries:
        sources.extend(name for name in summary.source_val_bpb if name not in sources)
    at = COLUMNS.index("best bpb") + 1
    titles = (*COLUMNS[:at], *(f"val bpb/{name}" for name in sources), *COLUMNS[at:])
    return titles, tuple(sources)


def find_runs(root: Path) -> list[Path]:
    """Run directories under ``root`` (those holding a run config or metrics), or ``[root]``
    when ``root`` is itself one."""
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
    return RunDirectory(directory).is_run()


def held_locks() -> frozenset[FileKey] | None:
    """The files on which some process of this machine holds a ``flock`` (Linux
    ``/proc/locks``; waiters are left out). ``None`` when ``/proc/locks`` cannot be read."""
    try:
        text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    held: set[FileKey] = set()
    for line in text.splitlines():
        # "3: FLOCK  ADVISORY  WRITE 29726 fe:00:2146331 0 EOF"; waiters read "3: -> FLOCK ..."
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            held.add((int(major, 16), int(minor, 16), int(inode)))
        except ValueError:
            continue
    return frozenset(held)


def _file_key(path: Path) -> FileKey | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return os.major(status.st_dev), os.minor(status.st_dev), status.st_ino


def _holder_alive(lock: Path) -> bool:
    """Whether the process named in a lock file is alive (where ``/proc/locks`` is missing).

    The file is kept after the run, so its process may be gone, or its pid reused.
    """
    holder = read_json(lock)
    pid = holder.get("pid") if holder else None
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # alive, another user's
    except OSError:
        return False
    return True


def summarize_run(
    run_dir: Path,
    *,
    locks: frozenset[FileKey] | Literal["read"] | None = "read",
    now: float | None = None,
) -> RunSummary:
    """The :class:`RunSummary` of one run directory.

    ``locks`` is :func:`held_locks`'s result (``"read"``: read it now; ``None``: unknown, the
    lock file's process is checked instead, which is wrong when that process lives on after
    its run, as a notebook does); ``now`` the current time.
    """
    now = time.time() if now is None else now
    if locks == "read":
        locks = held_locks()
    run = RunDirectory.read(run_dir)
    run_config = run.read_run_config() or {}
    config = run_config.get("config")
    config = config if isinstance(config, Mapping) else {}
    run_section = _section(config, "run")
    records = read_metrics(run_dir)
    updated = max((_mtime(path) for path in run.files()), default=0.0) or _mtime(run_dir)
    validations = [
        float(r["val_bpb"])
        for r in records
        if r.get("phase") == "validation" and _is_number(r.get("val_bpb"))
    ]
    clock = training_clock(records)
    last_validation: Mapping[str, Any] = next(
        (r for r in reversed(records) if r.get("phase") == "validation"), {}
    )
    per_source = {
        key.removeprefix("val_bpb/"): float(value)
        for key, value in last_validation.items()
        if key.startswith("val_bpb/") and _is_number(value)
    }
    return RunSummary(
        name=run_dir.absolute().name,
        path=run_dir.absolute(),
        state=run.state(
            lock_held=lambda lock: (
                _file_key(lock) in locks if locks is not None else _holder_alive(lock)
            ),
            recently_written=now - updated < RECENT_S,
        ),
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
        source_val_bpb=per_source,
    )


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
    locks = held_locks() if directories else None
    summaries = [summarize_run(d, locks=locks, now=now) for d in directories]
    return sorted(summaries, key=lambda s: (-s.updated, s.name))


def render_lines(summaries: Sequence[RunSummary], out: TextIO) -> None:
    """Plain aligned columns, one whole line per run (for pipes and files)."""
    titles, sources = columns(summaries)
    rows = [titles, *(summary.cells(sources) for summary in summaries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(titles))]
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

    summaries = list(summaries)
    titles, sources = columns(summaries)
    table = Table(title=f"runs in {root}")
    right = {"params", "steps", "tokens", "train time", "val bpb", "best bpb"}
    for column in titles:
        numeric = column in right or column.startswith("val bpb/")
        table.add_column(column, justify="right" if numeric else "left")
    colour = {"complete": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}
    for summary in summaries:
        cells = list(summary.cells(sources))
        cells[1] = f"[{colour[summary.state]}]{summary.state}[/]"
        table.add_row(*cells)
    Console(file=out, width=width).print(table)
