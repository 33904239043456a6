"""One synthetic epoch of metric records, routed to a logger exactly as the trainer routes them.

A logger plugin's unit tests feed its session with :func:`feed_epoch` and read back what the
backend stored, without training anything: every train, diagnostics, validation and epoch
record of ``STEPS`` steps, on the cadences the logger's own settings request. The values are
fixed (:data:`TRAIN`, :data:`VALIDATION`, :data:`DIAGNOSTICS`; a CUDA run's extras on step 4)
so that a test can compare what it reads with what was sent.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import attrs

from baseline.config import LoggerConfig, LoggingConfig
from baseline.metrics.router import LAYER_POSITIONS, MetricsPlan, MetricsRouter, diagnostic_of
from baseline.plugins.protocols import MetricRecord

#: Tokens of one step (batch 8 of 16 tokens) and steps of the one epoch fed.
TOKENS_PER_STEP = 128
STEPS = 6
#: Cadences that make every kind of record appear within :data:`STEPS` steps.
CADENCES = {
    "diagnostics_every_n_steps": 3,
    "attention_entropy_every_n_steps": 4,
    "val_every_n_steps": 5,
}
LOGGING = LoggingConfig(log_every_n_steps=2)
TRAIN = {
    "train_loss": 3.0,
    "train_perplexity": math.exp(3.0),
    "tokens_per_second": 1000.0,
    "learning_rate": 1e-3,
    "step_time_ms": 12.5,
    "global_grad_norm": 0.7,
}
#: Only on step 4: a CUDA run's extras.
CUDA_EXTRAS = {"peak_memory_gib": 1.25, "mfu": 0.31}
VALIDATION = {"val_loss": 2.5, "val_perplexity": math.exp(2.5), "val_bpb": 1.5}
DIAGNOSTICS = {
    "global_grad_norm": 0.7,
    **{f"activation_norm_{p}": 10.0 + i for i, p in enumerate(LAYER_POSITIONS)},
    **{f"ln_weight_grad_norm_{p}": 0.1 + i for i, p in enumerate(LAYER_POSITIONS)},
    **{f"ln_bias_grad_norm_{p}": 0.01 + i for i, p in enumerate(LAYER_POSITIONS)},
    **{f"attention_entropy_{p}": 2.0 + i for i, p in enumerate(LAYER_POSITIONS)},
}
EPOCH = {"train_loss_epoch": 3.1, "train_perplexity_epoch": math.exp(3.1), **VALIDATION}

Phase = Literal["train", "diagnostics", "validation", "epoch"]


def feed_epoch(
    provider: str,
    settings: LoggerConfig,
    log: Callable[[MetricRecord], None],
    steps: Iterable[int] = range(1, STEPS + 1),
    logging: LoggingConfig = LOGGING,
) -> None:
    """Send ``steps`` of one epoch of :data:`STEPS` steps to ``log`` (a session's ``log``),
    through a :class:`MetricsRouter` planned from ``settings``' metrics request."""
    plan = MetricsPlan({provider: settings.metrics_request(logging)}, logging.log_every_n_steps)
    router = MetricsRouter(plan, {provider: log})
    cadence = plan.requests[provider].log_every_n_steps
    for step in steps:

        def record(phase: Phase, values: dict[str, float], step: int = step) -> MetricRecord:
            return MetricRecord(step, step * TOKENS_PER_STEP, 1, phase, values)

        last = step == STEPS
        if step % cadence == 0 or last:
            router.train(record("train", {**TRAIN, **(CUDA_EXTRAS if step == 4 else {})}), cadence)
        due = plan.diagnostics_due(step)
        if due:
            values = {k: v for k, v in DIAGNOSTICS.items() if diagnostic_of(k) in due}
            router.diagnostics(record("diagnostics", values))
        if plan.validation_due(step) and not last:
            router.validation(record("validation", VALIDATION), periodic=True)
        if last:
            router.validation(record("validation", VALIDATION), periodic=False)
            router.epoch(record("epoch", EPOCH))


def unlisted_fields(experiment: Path, provider: str, config_class: type[Any]) -> list[str]:
    """The fields of ``config_class`` that the ``[logging.<provider>]`` table of a shipped
    experiment file neither sets nor shows in a comment (``# field = ...``): a shipped
    logger experiment lists every setting a user can change."""
    text = experiment.read_text(encoding="utf-8")
    table = tomllib.loads(text).get("logging", {}).get(provider, {})
    return [
        field.name
        for field in attrs.fields(config_class)
        if field.name not in table and not re.search(rf"^#\s*{field.name}\s*=", text, re.MULTILINE)
    ]
