"""The mixture schedule: which source each training window is drawn from, and which of its
windows.

What a weight means: the fraction of training tokens drawn from that source. Every window
has ``seq_len`` targets, so it is the fraction of windows. Global window ``k`` (windows
numbered over all steps, micro-batches and ranks: ``k = step * windows_per_step + j``) is
drawn from the source furthest behind its target, the one with the largest
``weight * (k + 1) - drawn``; ties go to the source listed first. After ``K`` windows each
source has given ``weight * K`` windows, within one window: the realized fractions approach
the weights as ``1 / K``, and they depend on nothing but the weights and ``k``.

A source's ``d``-th window is window ``order(pass)[d % n]`` of its ``n`` training windows,
where ``pass = d // n`` and ``order(pass)`` is a permutation drawn from the run's seed, the
source's position and the pass: a source that runs out starts a new pass in a new order
(``dataset.on_exhausted = "repeat"``), or training ends at the last step before any source
would repeat (``"stop"``). The position of every source after any step is a function of the
step, so resuming needs the saved step only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class MixtureSchedule:
    """The deficit schedule of a mixture (see the module docstring).

    ``weights`` are normalized (they sum to 1); a source of weight 0 is never drawn.
    """

    def __init__(self, weights: Sequence[float]) -> None:
        total = float(sum(weights))
        if total <= 0 or any(w < 0 for w in weights):
            raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
        self.weights = [float(w) / total for w in weights]
        self._position = 0
        self._drawn = [0] * len(self.weights)

    def counts(self, windows: int) -> np.ndarray:
        """Windows drawn from each source after the first ``windows`` windows."""
        self._advance(windows)
        return np.array(self._drawn, dtype=np.int64)

    def assign(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``(source, draw)`` of windows ``first`` to ``first + count - 1``: each window's
        source and how many windows that source had given before it."""
        self._advance(first)
        sources = np.empty(count, dtype=np.int64)
        draws = np.empty(count, dtype=np.int64)
        weights, drawn = self.weights, self._drawn
        for offset in range(count):
            target = self._position + 1
            best, best_deficit = 0, -np.inf
            for index, weight in enumerate(weights):
                if weight <= 0:
                    continue
                deficit = weight * target - drawn[index]
                if deficit > best_deficit:
                    best, best_deficit = index, deficit
            sources[offset], draws[offset] = best, drawn[best]
            drawn[best] += 1
            self._position += 1
        return sources, draws

    def windows_before_exhaustion(self, available: Sequence[int]) -> int:
        """How many windows can be drawn before some source would give more windows than it
        has (``available``, each source's training windows): the length of one pass of the
        mixture when ``on_exhausted = "stop"``."""
        self._reset()
        while True:
            sources, _ = self.assign(self._position, 1)
            if self._drawn[int(sources[0])] > available[int(sources[0])]:
                position = self._position - 1
                self._reset()
                return position

    def restore(self, windows: int, drawn: Sequence[int]) -> None:
        """Continue after ``windows`` windows of which ``drawn[i]`` came from source ``i`` (a
        checkpoint's positions): no replay."""
        if len(drawn) != len(self.weights) or sum(drawn) != windows:
            raise ValueError(f"{list(drawn)} are not the positions after {windows} windows")
        self._position = windows
        self._drawn = [int(count) for count in drawn]

    def _advance(self, windows: int) -> None:
        if windows < self._position:
            self._reset()
        if windows > self._position:
            self.assign(self._position, windows - self._position)

    def _reset(self) -> None:
        self._position = 0
        self._drawn = [0] * len(self.weights)


def pass_order(seed: int, source_index: int, pass_number: int, size: int) -> np.ndarray:
    """The order in which a source's ``size`` windows are drawn in pass ``pass_number``."""
    return np.random.default_rng([seed, 7919, source_index, pass_number]).permutation(size)


class MixtureProgress:
    """Training tokens drawn from each source and passes over it after a step: what the
    train records carry (``train_tokens/<name>``, ``passes/<name>``)."""

    def __init__(
        self,
        names: Sequence[str],
        weights: Sequence[float],
        windows_per_source: Sequence[int] | None,
        *,
        windows_per_step: int,
        seq_len: int,
    ) -> None:
        self.names = list(names)
        #: ``None`` before the sources are tokenized (``baseline validate``): no passes.
        self.windows_per_source = None if windows_per_source is None else list(windows_per_source)
        self.windows_per_step = windows_per_step
        self.seq_len = seq_len
        self.schedule = MixtureSchedule(weights)

    @classmethod
    def of(cls, windows: Any, data: Any, train: Any) -> MixtureProgress:
        """The progress of a trainer's :class:`~baseline.data.mixture_windows.MixtureTrainWindows`
        over ``data``'s sources under ``[train]``."""
        return cls(
            [source.name for source in data.sources],
            [source.weight for source in data.sources],
            windows.windows_per_source,
            windows_per_step=train.batch_size * train.grad_accumulation_steps,
            seq_len=train.seq_len,
        )

    def values(self, step: int) -> dict[str, float]:
        """``train_tokens/<name>`` and ``passes/<name>`` after ``step`` optimizer steps."""
        counts = self.schedule.counts(step * self.windows_per_step)
        available_windows = self.windows_per_source or [0] * len(self.names)
        values: dict[str, float] = {}
        for name, drawn, available in zip(
            self.names, counts.tolist(), available_windows, strict=True
        ):
            values[f"train_tokens/{name}"] = float(drawn * self.seq_len)
            values[f"passes/{name}"] = drawn / available if available else 0.0
        return values

    def restore(self, step: int, drawn: Sequence[int]) -> None:
        """Continue after ``step`` steps from a checkpoint's positions (``drawn``)."""
        self.schedule.restore(step * self.windows_per_step, drawn)

    def drawn(self, step: int) -> list[int]:
        """The positions after ``step`` steps: windows drawn from each source."""
        return [int(count) for count in self.schedule.counts(step * self.windows_per_step)]

    def plan(self, total_steps: int | None, *, per_steps: int = 1000) -> list[str]:
        """The plan, one line per source: its weight, and the tokens and passes it gives in
        ``total_steps`` steps (per ``per_steps`` steps when only time bounds training). The
        windows of a source are ``weight * windows`` rounded, within one window of what the
        schedule draws (no replay: a plan of any length is printed at once)."""
        steps = total_steps if total_steps is not None else per_steps
        what = f"in {steps:,} steps" if total_steps is not None else f"per {steps:,} steps"
        windows = steps * self.windows_per_step
        counts = np.array([round(w * windows) for w in self.schedule.weights], dtype=np.int64)
        lines = []
        for index, (name, weight, drawn) in enumerate(
            zip(self.names, self.schedule.weights, counts.tolist(), strict=True)
        ):
            if self.windows_per_source is None:
                passes = "passes: known once the sources are tokenized, printed at start"
            else:
                available = self.windows_per_source[index]
                share = drawn / available if available else 0.0
                passes = f"{share:.2f} passes over its {available:,} windows"
            lines.append(
                f"mixture plan: {name}: weight {weight:.3f}, {drawn * self.seq_len:,} training "
                f"tokens {what} ({passes})"
            )
        return lines
