"""How long a run trains (epochs, steps, tokens or wall time, whichever comes first), how far
along it is, and the learning rate that follows from that."""

from __future__ import annotations

import math

from baseline.config import TrainConfig
from baseline.train.optim import learning_rate_factor


class TrainingBudget:
    """The limits of ``[train]`` against a run's steps per epoch and tokens per step."""

    def __init__(self, train: TrainConfig, steps_per_epoch: int, tokens_per_step: int) -> None:
        self.train = train
        limits = []
        if train.effective_epochs is not None:
            limits.append(train.effective_epochs * steps_per_epoch)
        if train.max_steps is not None:
            limits.append(train.max_steps)
        if train.max_tokens is not None:
            limits.append(math.ceil(train.max_tokens / tokens_per_step))
        #: Steps until the first step- or token-based limit; ``None`` if only time bounds it.
        self.total_steps = min(limits) if limits else None

    def progress(self, step: int, elapsed_s: float) -> float:
        """Fraction of training done: the furthest of steps and time against their limits."""
        fractions = [0.0]
        if self.total_steps:
            fractions.append(step / self.total_steps)
        if self.train.max_time_s:
            fractions.append(elapsed_s / self.train.max_time_s)
        return min(1.0, max(fractions))

    def reached(self, step: int, elapsed_s: float) -> bool:
        """Whether training is over after ``step`` steps and ``elapsed_s`` seconds."""
        max_time = self.train.max_time_s
        return (self.total_steps is not None and step >= self.total_steps) or (
            max_time is not None and elapsed_s >= max_time
        )

    def learning_rate(self, step: int, elapsed_s: float) -> float:
        """Warmup, then constant or cosine decay by the progress (see ``learning_rate_factor``)."""
        factor = learning_rate_factor(step, self.progress(step, elapsed_s), self.train)
        return self.train.learning_rate * factor
