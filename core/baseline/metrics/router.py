"""Which metrics the trainer computes on which step, and which logger receives which values.

Every logger states a :class:`~baseline.config.MetricsRequest`. The trainer computes the
union (:class:`MetricsPlan`): train records at each distinct cadence, each diagnostic only
on the steps some logger's cadence selects, periodic validation when some logger asks for
it. The :class:`MetricsRouter` then hands each logger exactly what it asked for, and
``metrics.jsonl`` everything that was computed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from baseline.config import MetricsRequest
from baseline.errors import BaselineError
from baseline.plugins.protocols import MetricRecord

Sink = Callable[[MetricRecord], None]
#: Called with a logger's name, the record and what its sink raised; returns the error that
#: stops the run, or ``None`` (the logger is switched off and training goes on).
FailureHandler = Callable[[str, MetricRecord, Exception], BaselineError | None]

#: Layers whose diagnostics are reported, by the suffix of their metric keys.
LAYER_POSITIONS = ("first", "middle", "last")

#: Metric key prefix -> the diagnostic that produces it.
_DIAGNOSTIC_BY_PREFIX = {
    "global_grad_norm": "global_grad_norm",
    "activation_norm_": "activation_norms",
    "ln_weight_grad_norm_": "ln_grad_norms",
    "ln_bias_grad_norm_": "ln_grad_norms",
    "attention_entropy_": "attention_entropy",
}


def diagnostic_of(key: str) -> str:
    """The diagnostic (a name from :data:`~baseline.config.DIAGNOSTICS`) a metric key is from."""
    for prefix, diagnostic in _DIAGNOSTIC_BY_PREFIX.items():
        if key.startswith(prefix):
            return diagnostic
    raise KeyError(f"{key!r} is not a diagnostics key")


def layer_indices(num_layers: int) -> dict[str, int]:
    """``first``, ``middle`` and ``last`` layer indices of a stack of ``num_layers``."""
    return {"first": 0, "middle": num_layers // 2, "last": num_layers - 1}


@attrs.frozen
class MetricsPlan:
    """The union of the loggers' requests: what the trainer computes, and when."""

    #: Requests by logger name.
    requests: Mapping[str, MetricsRequest]
    #: Cadence of the train records in ``metrics.jsonl`` (``logging.log_every_n_steps``).
    core_log_every_n_steps: int = 10

    @property
    def train_cadences(self) -> tuple[int, ...]:
        """Every distinct train-record cadence, the core's included."""
        cadences = {self.core_log_every_n_steps}
        cadences.update(request.log_every_n_steps for request in self.requests.values())
        return tuple(sorted(cadences))

    @property
    def diagnostics(self) -> frozenset[str]:
        """Diagnostics some logger requests."""
        return frozenset().union(*(r.diagnostics for r in self.requests.values()))

    def diagnostics_due(self, step: int) -> frozenset[str]:
        """Diagnostics to compute at ``step``."""
        return frozenset().union(*(r.diagnostics_due(step) for r in self.requests.values()))

    def validation_due(self, step: int) -> bool:
        """Whether some logger asks for periodic validation at ``step``."""
        return any(r.validation_due(step) for r in self.requests.values())

    @property
    def attention_entropy_caps(self) -> tuple[int, int]:
        """``(heads, tokens)``: the largest caps among the loggers that request entropy."""
        asking = [r for r in self.requests.values() if "attention_entropy" in r.diagnostics]
        if not asking:
            return (0, 0)
        return (
            max(r.attention_entropy_head_cap for r in asking),
            max(r.attention_entropy_token_cap for r in asking),
        )


class MetricsRouter:
    """Delivers records to each logger's sink according to its request.

    ``everything`` (the ``metrics.jsonl`` writer) receives every record computed, with train
    records at the core cadence only. With ``on_failure``, a sink that raises is removed (it
    is never called again) and the handler decides: an error it returns is kept for
    :meth:`raise_stop`; without it, what a sink raises propagates.
    """

    def __init__(
        self,
        plan: MetricsPlan,
        sinks: Mapping[str, Sink] | None = None,
        everything: Sink | None = None,
        on_failure: FailureHandler | None = None,
    ) -> None:
        self.plan = plan
        self.sinks = dict(sinks or {})
        self.everything = everything
        self.on_failure = on_failure
        #: The error that stops the run, once a failed logger asked for it.
        self.stop_error: BaselineError | None = None

    @property
    def stopping(self) -> bool:
        """Whether a logger's failure stops the run (see :meth:`raise_stop`)."""
        return self.stop_error is not None

    def raise_stop(self) -> None:
        """Raise the error that stops the run, if any (the trainer calls it where the ranks
        agree on stopping, so that every rank stops at the same step)."""
        if self.stop_error is not None:
            raise self.stop_error

    def _send(self, name: str, record: MetricRecord) -> None:
        sink = self.sinks.get(name)
        if sink is None:  # switched off earlier in this record's delivery
            return
        if self.on_failure is None:
            sink(record)
            return
        try:
            sink(record)
        except Exception as error:
            del self.sinks[name]
            stop = self.on_failure(name, record, error)
            if stop is not None and self.stop_error is None:
                stop.__cause__ = error
                self.stop_error = stop

    def train(self, record: MetricRecord, cadence: int) -> None:
        """A train record whose means cover the last ``cadence`` steps (or fewer, at an end).

        Loggers get ``global_grad_norm`` through diagnostics records only (when they enable
        it, on its cadence); ``metrics.jsonl`` also keeps it in every train record.
        """
        if self.everything is not None and cadence == self.plan.core_log_every_n_steps:
            self.everything(record)
        listeners = [
            name for name in self.sinks if self.plan.requests[name].log_every_n_steps == cadence
        ]
        if listeners:
            values = {k: v for k, v in record.values.items() if k != "global_grad_norm"}
            for name in listeners:
                self._send(name, attrs.evolve(record, values=values))

    def diagnostics(self, record: MetricRecord) -> None:
        """A diagnostics record; each logger gets the keys it asked for at this step."""
        if self.everything is not None:
            self.everything(record)
        for name in list(self.sinks):
            due = self.plan.requests[name].diagnostics_due(record.step)
            values = {k: v for k, v in record.values.items() if diagnostic_of(k) in due}
            if values:
                self._send(name, attrs.evolve(record, values=values))

    def validation(self, record: MetricRecord, *, periodic: bool) -> None:
        """Validation results: periodic ones go to the loggers whose cadence asked for them."""
        if self.everything is not None:
            self.everything(record)
        for name in list(self.sinks):
            if not periodic or self.plan.requests[name].validation_due(record.step):
                self._send(name, record)

    def epoch(self, record: MetricRecord) -> None:
        """An end-of-epoch (or end-of-training) summary, for every logger."""
        if self.everything is not None:
            self.everything(record)
        for name in list(self.sinks):
            self._send(name, record)
