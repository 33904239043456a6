"""The loggers' sessions of one run: started, fed through the router, finished, and contained.

A logger observes a run; it must not take the run down. What a logger raises while its
adapter is built and its session opened (``start``), in its session's ``log`` or in its
``finish`` is, with ``logging.on_logger_error = "continue"`` (the default), reported once as
one line naming the logger, its distribution and the step; the traceback is appended to the
run directory's ``logger_errors.log``; the logger is switched off (finished as failed, the
router no longer calls it) and training goes on with the other loggers and ``metrics.jsonl``.
Every failure is kept in :attr:`LoggerSessions.failures` (``run_config.json`` records them
as ``logger_failures``).

With ``"stop"`` the same line is a :class:`~baseline.errors.PluginError` with exit status 1
that ends the run: raised on rank 0 when the trainer next agrees on stopping
(:meth:`baseline.metrics.router.MetricsRouter.raise_stop`), so that every rank stops at the
same step.

A :class:`~baseline.errors.BaselineError` raised by ``start`` (a logger refusing its settings,
an unreachable server) is not contained: it stops the run before anything is trained, as any
other bad input does.

Only rank 0 has sessions: switching a logger off involves no other rank.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import attrs

from baseline.config import ComponentConfig
from baseline.config.experiment import OnLoggerError
from baseline.errors import BaselineError, PluginError
from baseline.metrics.router import MetricsPlan, MetricsRouter, Sink
from baseline.plugins.protocols import LoggerSession, MetricRecord, RunInfo
from baseline.plugins.registry import Component

log = logging.getLogger("baseline")

#: Where a logger failed: opening its session, logging a record, or closing the session.
FailurePhase = Literal["start", "log", "finish"]
#: The exit status of a run that a logger's failure stopped (``on_logger_error = "stop"``).
LOGGER_FAILURE_EXIT_CODE = 1

_WHERE = {
    "start": "failed to start at step",
    "log": "failed at step",
    "finish": "failed to finish at step",
}


@attrs.frozen
class LoggerFailure:
    """One logger's failure, as ``run_config.json`` records it (``logger_failures``)."""

    logger: str
    distribution: str
    step: int
    phase: FailurePhase
    #: ``KeyError: 'x'``: the exception's type and the first line of its message.
    error: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def describe(self) -> str:
        """``logger 'csv' from my-loggers failed at step 12 (KeyError: 'x')``."""
        where = _WHERE[self.phase]
        return f"logger {self.logger!r} from {self.distribution} {where} {self.step} ({self.error})"


def error_summary(error: BaseException) -> str:
    """``KeyError: 'x'``: the type and the first non-empty line of the message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class LoggerSessions:
    """The enabled loggers of one run on rank 0 (see the module docstring).

    ``loggers`` maps each provider to its registered component and settings, in
    ``logging.provider`` order; ``error_log`` is the run directory's ``logger_errors.log``.
    """

    def __init__(
        self,
        loggers: Mapping[str, tuple[Component, ComponentConfig]],
        *,
        on_error: OnLoggerError,
        error_log: Path,
    ) -> None:
        self.loggers = dict(loggers)
        self.on_error = on_error
        self.error_log = error_log
        #: The sessions that are on (a failed logger's is removed).
        self.sessions: dict[str, LoggerSession] = {}
        self.failures: list[LoggerFailure] = []
        #: With ``"stop"``: the error of a ``finish`` that failed (see :meth:`raise_finish_error`).
        self.finish_error: PluginError | None = None

    def start(self, run: RunInfo) -> None:
        """Build each logger's adapter and open its session.

        A :class:`BaselineError`, and with ``"stop"`` any failure, finishes the sessions
        already open (exit status 1) and is raised.
        """
        for name, (component, config) in self.loggers.items():
            try:
                self.sessions[name] = component.create(config).start(run)
            except BaselineError:
                self.finish(1, run.start_step)
                raise
            except Exception as error:
                stop = self._failed(name, run.start_step, "start", error)
                if stop is not None:
                    self.finish(stop.exit_code, run.start_step)
                    raise stop from error
            except BaseException:
                self.finish(1, run.start_step)
                raise

    def router(self, plan: MetricsPlan, everything: Sink | None = None) -> MetricsRouter:
        """A router feeding the open sessions; a session whose ``log`` raises is switched off."""
        sinks = {name: session.log for name, session in self.sessions.items()}
        return MetricsRouter(plan, sinks, everything=everything, on_failure=self._log_failed)

    def finish(self, exit_code: int, step: int) -> None:
        """Finish every open session with ``exit_code``; a failure is contained (with
        ``"stop"`` it is kept for :meth:`raise_finish_error`)."""
        sessions, self.sessions = self.sessions, {}
        for name, session in sessions.items():
            try:
                session.finish(exit_code)
            except Exception as error:
                stop = self._failed(name, step, "finish", error, session_open=False)
                if stop is not None and self.finish_error is None:
                    stop.__cause__ = error
                    self.finish_error = stop

    def raise_finish_error(self) -> None:
        """With ``"stop"``: raise the error of a session whose ``finish`` failed."""
        if self.finish_error is not None:
            raise self.finish_error

    def summary(self, record: str) -> str:
        """One line for the end of the run (empty when no logger failed); ``record`` names the
        file that records the failures (``run_config.json``)."""
        if not self.failures:
            return ""
        each = ", ".join(
            f"{f.logger!r} from {f.distribution} ({f.phase}, step {f.step})" for f in self.failures
        )
        count = len(self.failures)
        return (
            f"{count} logger failure{'s' if count > 1 else ''} during the run: {each}; "
            f"recorded in {record} (logger_failures), tracebacks in {self.error_log}"
        )

    # -- failures --------------------------------------------------------------------------

    def _log_failed(
        self, name: str, record: MetricRecord, error: Exception
    ) -> BaselineError | None:
        """The router's failure handler: a session whose ``log`` raised."""
        return self._failed(name, record.step, "log", error)

    def _failed(
        self,
        name: str,
        step: int,
        phase: FailurePhase,
        error: BaseException,
        *,
        session_open: bool = True,
    ) -> PluginError | None:
        """Record and report a failure; return the error that stops the run (``"stop"``)."""
        component, _ = self.loggers[name]
        failure = LoggerFailure(name, component.distribution, step, phase, error_summary(error))
        self.failures.append(failure)
        stops = self.on_error == "stop"
        # A start that stops the run leaves no run directory behind to hold the traceback
        # (the error chains the original exception: BASELINE_DEBUG=1 shows it).
        written = not (stops and phase == "start") and self._write_traceback(failure, error)
        where = f"; traceback in {self.error_log}" if written else ""
        session = self.sessions.pop(name, None) if session_open else None
        if session is not None:  # switched off: closed as failed, never called again
            try:
                session.finish(LOGGER_FAILURE_EXIT_CODE)
            except Exception as again:
                self._write_traceback(attrs.evolve(failure, phase="finish"), again)
        if stops:
            stop = PluginError(
                f'{failure.describe()}; the run stops (logging.on_logger_error = "stop"){where}'
            )
            stop.exit_code = LOGGER_FAILURE_EXIT_CODE
            return stop
        log.warning(
            "warning: %s; it is switched off, training goes on%s", failure.describe(), where
        )
        return None

    def _write_traceback(self, failure: LoggerFailure, error: BaseException) -> bool:
        """Append the failure and its traceback to :attr:`error_log`; ``False`` when it
        cannot be written."""
        text = "".join(traceback.format_exception(error))
        header = (
            f"{datetime.now().isoformat(timespec='seconds')} {failure.describe()} [{failure.phase}]"
        )
        with contextlib.suppress(OSError):
            with self.error_log.open("a", encoding="utf-8") as handle:
                handle.write(f"{header}\n{text}\n")
            return True
        return False
