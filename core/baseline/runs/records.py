"""Reading a run directory's files without torch: its run config and its metrics.

Shared by ``baseline runs`` (:mod:`baseline.runs.table`) and ``baseline plot``
(:mod:`baseline.runs.plots`). Both read runs that may still be training or that crashed, so a
line cut short at the end of ``metrics.jsonl`` is skipped, not an error.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from baseline.errors import DataError
from baseline.runs.layout import RunDirectory, read_json

__all__ = [
    "RECORD_FIELDS",
    "TrainingClock",
    "read_json",
    "read_metrics",
    "training_clock",
]

#: Keys of a ``metrics.jsonl`` line that are not metric values.
RECORD_FIELDS = frozenset({"step", "tokens_seen", "epoch", "phase"})


def read_metrics(run_dir: Path, *, required: bool = False) -> list[dict[str, Any]]:
    """The records of the run's metrics file, in file order.

    Lines that are not a JSON object with an integer ``step`` (a line cut short by a crash)
    are skipped. A missing file gives ``[]``, or a :class:`DataError` when ``required``.
    """
    run = RunDirectory(run_dir)
    path = run.metrics
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if required:
            hint = "" if run.run_config.is_file() else "; is it a run directory?"
            raise DataError(f"{path}: not found{hint}") from None
        return []
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def _window_seconds(record: Mapping[str, Any], steps: int, tokens: int) -> float | None:
    step_time_ms = record.get("step_time_ms")
    if isinstance(step_time_ms, int | float):
        return steps * float(step_time_ms) / 1000.0
    rate = record.get("tokens_per_second")
    if isinstance(rate, int | float) and rate > 0:
        return tokens / float(rate)
    return None


class TrainingClock:
    """Training time (seconds of training steps, validation excluded) at any step.

    Built from the ``train`` records: each covers the steps since the previous one, at its
    mean ``step_time_ms`` (or, without it, its tokens at ``tokens_per_second``). Between two
    records the time is interpolated linearly.
    """

    def __init__(self, steps: Sequence[int], seconds: Sequence[float]) -> None:
        self.steps = list(steps)
        self.seconds = list(seconds)

    @property
    def total_seconds(self) -> float | None:
        """Training time up to the last train record; ``None`` without train records."""
        return self.seconds[-1] if len(self.steps) > 1 else None

    def at(self, step: int) -> float:
        """Training seconds at the end of ``step`` (interpolated; held after the last record)."""
        index = bisect.bisect_left(self.steps, step)
        if index < len(self.steps) and self.steps[index] == step:
            return self.seconds[index]
        if index >= len(self.steps):
            return self.seconds[-1]
        low_step, high_step = self.steps[index - 1], self.steps[index]
        low, high = self.seconds[index - 1], self.seconds[index]
        return low + (high - low) * (step - low_step) / (high_step - low_step)


def training_clock(records: Iterable[Mapping[str, Any]]) -> TrainingClock | None:
    """The :class:`TrainingClock` of a run's records; ``None`` when some train record has
    neither ``step_time_ms`` nor ``tokens_per_second``."""
    steps, seconds = [0], [0.0]
    previous_tokens = 0
    for record in records:
        if record.get("phase") != "train":
            continue
        step = int(record["step"])
        tokens = int(record.get("tokens_seen", 0))
        if step <= steps[-1]:
            continue
        window = _window_seconds(record, step - steps[-1], tokens - previous_tokens)
        if window is None:
            return None
        steps.append(step)
        seconds.append(seconds[-1] + window)
        previous_tokens = tokens
    return TrainingClock(steps, seconds)
