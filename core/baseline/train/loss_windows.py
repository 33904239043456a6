"""The loss sums behind each train record: one window per logging cadence plus the epoch's.

They are part of the checkpoint, so that a resumed run logs exactly the means an
uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch


def perplexity(loss: float) -> float:
    """``exp(loss)``, capped so that a diverging loss prints a number, not an overflow."""
    return math.exp(min(loss, 50.0))


class LossWindow:
    """Loss sum, step count, clock and token count since one cadence's last train record."""

    def __init__(self, loss_sum: torch.Tensor, steps: int, tokens: int) -> None:
        self.loss_sum = loss_sum
        self.steps = steps
        #: Steps and tokens since the clock started (after a resume, fewer than ``steps``).
        self.timed_steps = 0
        self.tokens = tokens
        self.clock = time.perf_counter()

    @classmethod
    def restore(
        cls, saved: Mapping[str, Any] | None, device: torch.device, tokens: int
    ) -> LossWindow:
        """A window from its checkpointed sums (empty when the cadence is new)."""
        saved = saved or {"sum": 0.0, "steps": 0}
        return cls(torch.tensor(float(saved["sum"]), device=device), int(saved["steps"]), tokens)

    def add(self, step_loss: torch.Tensor) -> None:
        """Count one optimizer step."""
        self.loss_sum += step_loss
        self.steps += 1
        self.timed_steps += 1

    def reset(self, now: float, tokens: int) -> None:
        """Start the next window after a record."""
        self.loss_sum.zero_()
        self.steps = self.timed_steps = 0
        self.clock, self.tokens = now, tokens

    def pause(self, seconds: float) -> None:
        """Leave ``seconds`` (spent validating) out of this window's throughput."""
        self.clock += seconds

    def record(
        self, mean_loss: float, tokens_seen: int, lr: float, grad_norm: float
    ) -> dict[str, float]:
        """A train record's values over this window (then the next window starts): mean loss,
        throughput and step time since the last record."""
        now = time.perf_counter()
        elapsed = max(now - self.clock, 1e-9)
        values = {
            "train_loss": mean_loss,
            "train_perplexity": perplexity(mean_loss),
            "tokens_per_second": (tokens_seen - self.tokens) / elapsed,
            "step_time_ms": 1000.0 * elapsed / max(self.timed_steps, 1),
            "learning_rate": lr,
            "global_grad_norm": grad_norm,
        }
        self.reset(now, tokens_seen)
        return values

    def pending(self) -> dict[str, Any]:
        """What a checkpoint keeps of this window."""
        return {"sum": self.loss_sum, "steps": self.steps}


class LossWindows:
    """The windows of every train cadence and the running sum of the current epoch."""

    def __init__(
        self,
        pending: Mapping[str, Any],
        cadences: Iterable[int],
        device: torch.device,
        tokens_seen: int,
    ) -> None:
        self.by_cadence = {
            cadence: LossWindow.restore(pending["log"].get(cadence), device, tokens_seen)
            for cadence in cadences
        }
        self.epoch_sum = torch.tensor(float(pending["epoch_sum"]), device=device)
        self.epoch_steps = int(pending["epoch_steps"])

    def add(self, step_loss: torch.Tensor) -> None:
        """Count one optimizer step in every window and in the epoch."""
        for window in self.by_cadence.values():
            window.add(step_loss)
        self.epoch_sum += step_loss
        self.epoch_steps += 1

    def pause(self, seconds: float) -> None:
        """Leave validation time out of every window's throughput."""
        for window in self.by_cadence.values():
            window.pause(seconds)

    def end_epoch(self) -> None:
        """Start the next epoch's sum."""
        self.epoch_sum.zero_()
        self.epoch_steps = 0

    def pending(self) -> dict[str, Any]:
        """What a checkpoint keeps of the windows (tensors; see :func:`plain`)."""
        return {
            "log": {cadence: window.pending() for cadence, window in self.by_cadence.items()},
            "epoch_sum": self.epoch_sum,
            "epoch_steps": self.epoch_steps,
        }


def empty_pending() -> dict[str, Any]:
    """The windows of a run that has not trained yet."""
    return {"log": {}, "epoch_sum": 0.0, "epoch_steps": 0}


def pending_by_cadence(saved: Mapping[str, Any], core_cadence: int) -> dict[str, Any]:
    """Checkpointed loss sums, converting the single-cadence layout of earlier versions."""
    if "log" in saved:
        return {**saved, "log": {int(c): window for c, window in saved["log"].items()}}
    return {
        "log": {core_cadence: {"sum": saved["log_sum"], "steps": saved["log_steps"]}},
        "epoch_sum": saved["epoch_sum"],
        "epoch_steps": saved["epoch_steps"],
    }


def mean_pending(ranked: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of several ranks' loss sums (a resume under another process count)."""
    count = len(ranked)
    cadences = {cadence for pending in ranked for cadence in pending["log"]}
    log = {}
    for cadence in cadences:
        windows = [pending["log"].get(cadence, {"sum": 0.0, "steps": 0}) for pending in ranked]
        log[cadence] = {
            "sum": sum(float(w["sum"]) for w in windows) / count,
            "steps": max(int(w["steps"]) for w in windows),
        }
    return {
        "log": log,
        "epoch_sum": sum(float(p["epoch_sum"]) for p in ranked) / count,
        "epoch_steps": max(int(p["epoch_steps"]) for p in ranked),
    }


def plain(value: Any) -> Any:
    """Tensors to floats, recursively (checkpoints hold plain numbers)."""
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    return value
