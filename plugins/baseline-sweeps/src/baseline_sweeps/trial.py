"""Running one trial: an ordinary ``baseline-run`` of the experiment with the trial's overrides
in a child process (``python -m baseline_sweeps.launch``), watched through its run directory.

While the child trains, the worker reads the run's ``metrics.jsonl`` as it grows, reports each
value of the sweep's metric to Optuna (``trial.report(value, step)``), and when the pruner says
so sends the child SIGTERM: the core stops the run after a checkpoint (state
``interrupted``), and the trial is recorded as pruned at that step. A failed run is recorded
with the one-line error the command printed and run again (resumed from its checkpoint when
it has one) up to ``retries`` times. When the sweep stops (SIGTERM, Ctrl-C) the child is
stopped the same way and the trial stays running in the store, to be resumed by the next run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from baseline.errors import ConfigError
from baseline.runs.layout import RunDirectory
from baseline.runs.table import summarize_run
from baseline_sweeps.plan import Plan, run_name
from baseline_sweeps.store import HEARTBEAT_S, Claim, Store

#: Seconds between looks at a running child's metrics.
POLL_S = 0.2
#: Seconds a child may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 120.0
#: Seconds to wait for an earlier process of the same run (a child left by a killed sweep,
#: still saving its checkpoint) to let go of the run.
RUN_LOCK_WAIT_S = 120.0


@attrs.frozen
class Outcome:
    """How a trial ended in this worker: ``complete``, ``pruned``, ``failed`` or ``stopped``
    (the sweep is stopping; the trial stays running in the store)."""

    state: str
    value: float | None = None
    steps: int | None = None
    wall_s: float = 0.0
    error: str | None = None
    pruned_step: int | None = None
    attempts: int = 0
    #: A failure that running again cannot change (the run logged no value of the metric).
    final: bool = False


class MetricsTail:
    """The records appended to a ``metrics.jsonl`` since the last look (a file replaced by a
    resumed run, which keeps the lines up to its checkpoint, is read again from its start)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""

    def records(self) -> Iterator[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                status = os.fstat(handle.fileno())
                if status.st_ino != self._inode or status.st_size < self._offset:
                    self._inode, self._offset, self._partial = status.st_ino, 0, b""
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                yield record


def error_line(log: Path, offset: int) -> str | None:
    """The last ``error: ...`` line the command printed (after ``offset`` of its log)."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.startswith("error: ")]
    return lines[-1].removeprefix("error: ") if lines else None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class TrialRunner:
    """Runs claimed trials for one worker (one child process at a time)."""

    def __init__(
        self,
        plan: Plan,
        store: Store,
        env: dict[str, str],
        stop: threading.Event,
        notify: Callable[[str, Claim, dict[str, Any]], None],
    ) -> None:
        self.plan = plan
        self.spec = plan.spec
        self.store = store
        self.env = env
        self.stop = stop
        self.notify = notify
        self.logs = store.directory / "logs"

    # -- one trial ---------------------------------------------------------------------------

    def run(self, claim: Claim) -> Outcome:
        """Run ``claim`` to its end (retrying failures) and record the result in the store."""
        from optuna.trial import TrialState

        spec = self.spec
        try:
            self.plan.check(claim.params, claim.point, claim.repeat)
        except ConfigError as error:  # a sampled value the config rejects: no retry helps
            outcome = Outcome("failed", error=str(error), attempts=1)
            self._finish(claim, outcome, TrialState.FAIL)
            return outcome
        attempts = int(claim.user_attrs.get("attempts", 0))
        errors = list(claim.user_attrs.get("errors", []))
        wall = float(claim.user_attrs.get("wall_s", 0.0))
        # A run directory of this name left by an earlier sweep (its store deleted) is
        # replaced; the trial's own run (taken over, queued again, retried) continues.
        continuing = claim.resumed or "copy_of" in claim.user_attrs
        while True:
            outcome = self._attempt(claim, continuing)
            continuing = True
            wall += outcome.wall_s
            outcome = attrs.evolve(outcome, wall_s=wall, attempts=attempts + 1)
            if outcome.state == "stopped":
                self.store.set_attrs(claim, wall_s=wall)
                self.store.release(claim)
                return outcome
            if outcome.state == "complete":
                self._finish(claim, outcome, TrialState.COMPLETE)
                return outcome
            if outcome.state == "pruned":
                self._finish(claim, outcome, TrialState.PRUNED)
                return outcome
            attempts += 1
            errors.append(outcome.error or "failed")
            self.store.set_attrs(claim, attempts=attempts, errors=errors, wall_s=wall)
            if attempts > spec.retries or outcome.final:
                self._finish(claim, outcome, TrialState.FAIL)
                return outcome
            self.notify("retry", claim, {"error": outcome.error, "attempt": attempts})

    def _finish(self, claim: Claim, outcome: Outcome, state: Any) -> None:
        values: dict[str, Any] = {"wall_s": outcome.wall_s, "attempts": outcome.attempts}
        if outcome.steps is not None and outcome.steps >= 0:
            values["steps"] = outcome.steps
        if outcome.error is not None:
            values["error"] = outcome.error
        if outcome.pruned_step is not None:
            values["pruned_step"] = outcome.pruned_step
        self.store.set_attrs(claim, **values)
        study = claim.trial.study
        value = outcome.value if outcome.state == "complete" else None
        study.tell(claim.trial, value, state=state, skip_if_finished=True)
        self.store.release(claim)
        self.notify("finished", claim, attrs.asdict(outcome))

    # -- one run of the child ----------------------------------------------------------------

    def _wait_for_run(self, claim: Claim, run_dir: Path) -> None:
        """An earlier process of this run (a child of a killed sweep finishing its checkpoint)
        must let go of the run first."""
        started = time.monotonic()
        next_beat = started + HEARTBEAT_S
        while run_dir.is_dir() and not self.stop.is_set():
            if summarize_run(run_dir).state != "running":
                return
            now = time.monotonic()
            if now - started > RUN_LOCK_WAIT_S:
                return  # the run refuses to start, with its own error line
            if now >= next_beat:
                self.store.beat(claim)
                next_beat = now + HEARTBEAT_S
            time.sleep(0.5)

    def _attempt(self, claim: Claim, continuing: bool) -> Outcome:
        spec = self.spec
        run_dir = self.plan.run_dir(claim.point, claim.repeat)
        if self.stop.is_set():
            return Outcome("stopped")
        self._wait_for_run(claim, run_dir)
        directory = RunDirectory.read(run_dir)
        tail = MetricsTail(directory.metrics)
        complete = directory.finished and summarize_run(run_dir).state == "complete"
        if continuing and complete:  # the run ended, but its worker died before recording it
            return self._ended(claim, 0, time.monotonic())
        flags: list[str] = []
        if continuing and directory.newest_checkpoint() is not None:
            flags.append("--resume")
        elif run_dir.is_dir() and any(run_dir.iterdir()):
            flags.append("--overwrite")
        command = [sys.executable, "-m", "baseline_sweeps.launch", self.plan.experiment]
        for assignment in self.plan.overrides(claim.params, claim.point, claim.repeat):
            command += ["--set", assignment]
        command += flags
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{run_name(spec, claim.point, claim.repeat)}.log"
        with log_path.open("ab") as log:
            offset = log.tell()
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            env = {**self.env, "BASELINE_SWEEP_WORKER_PID": str(os.getpid())}
            started = time.monotonic()
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.notify("started", claim, {"flags": flags, "pid": child.pid})
        try:
            return self._watch(claim, child, tail, started, log_path, offset)
        finally:
            if child.poll() is None:  # an exception in this worker: the child goes too
                _signal(child, signal.SIGKILL)
                child.wait()

    def _watch(
        self,
        claim: Claim,
        child: subprocess.Popen[bytes],
        tail: MetricsTail,
        started: float,
        log_path: Path,
        log_offset: int,
    ) -> Outcome:
        reported = set(claim.storage.get_trial(claim.trial_id).intermediate_values)
        pruned_step: int | None = None
        stopping_since: float | None = None
        next_beat = time.monotonic() + HEARTBEAT_S
        steps = 0
        while True:
            returncode = child.poll()
            for record in tail.records():
                steps = max(steps, record["step"])
                if pruned_step is None and self._report(claim, record, reported):
                    pruned_step = record["step"]
                    self.notify("pruning", claim, {"step": pruned_step})
                    _signal(child, signal.SIGTERM)
                    stopping_since = time.monotonic()
            if returncode is not None:
                break
            now = time.monotonic()
            if self.stop.is_set() and stopping_since is None:
                _signal(child, signal.SIGTERM)
                stopping_since = now
            if stopping_since is not None and now - stopping_since > STOP_TIMEOUT_S:
                _signal(child, signal.SIGKILL)
            if now >= next_beat:
                self.store.beat(claim)
                next_beat = now + HEARTBEAT_S
            self.notify("progress", claim, {"step": steps})
            time.sleep(POLL_S)
        wall = time.monotonic() - started
        if pruned_step is not None:
            return Outcome("pruned", steps=steps, wall_s=wall, pruned_step=pruned_step)
        if self.stop.is_set() and returncode != 0:
            return Outcome("stopped", steps=steps, wall_s=wall)
        return self._ended(claim, returncode, started, log_path, log_offset, steps)

    def _report(self, claim: Claim, record: dict[str, Any], reported: set[int]) -> bool:
        """Report a record's metric value to Optuna; whether the pruner stops the trial."""
        value = _number(record.get(self.spec.metric))
        step = record["step"]
        if value is None or step in reported:
            return False
        reported.add(step)
        claim.user_attrs["last_value"] = value
        claim.trial.report(value, step)
        if self.spec.pruner.name == "none":
            return False
        return bool(claim.trial.should_prune())

    def _ended(
        self,
        claim: Claim,
        returncode: int,
        started: float,
        log_path: Path | None = None,
        log_offset: int = 0,
        steps: int = 0,
    ) -> Outcome:
        """The outcome of a child that exited (or of a run that had already ended)."""
        metric = self.spec.metric
        wall = time.monotonic() - started
        if returncode != 0:
            message = error_line(log_path, log_offset) if log_path else None
            if message is None:
                message = (
                    f"killed by signal {-returncode}"
                    if returncode < 0
                    else f"exited with status {returncode}"
                )
            return Outcome("failed", steps=steps, wall_s=wall, error=message)
        values: list[float] = []
        keys: set[str] = set()
        run_dir = self.plan.run_dir(claim.point, claim.repeat)
        full = MetricsTail(RunDirectory.read(run_dir).metrics)
        for record in full.records():
            steps = max(steps, record["step"])
            keys.update(record)
            value = _number(record.get(metric))
            if value is not None:
                values.append(value)
        if not values:
            present = ", ".join(sorted(keys - {"step", "tokens_seen", "epoch", "phase"}))
            return Outcome(
                "failed",
                steps=steps,
                wall_s=wall,
                error=f"{run_dir.name} logged no {metric!r}; it has: {present or 'nothing'}",
                final=True,
            )
        value = values[-1]
        if math.isnan(value):
            return Outcome("failed", steps=steps, wall_s=wall, error=f"{metric} is nan", final=True)
        return Outcome("complete", value=value, steps=steps, wall_s=wall)


def _signal(child: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the child's process group (it is a session leader)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)
