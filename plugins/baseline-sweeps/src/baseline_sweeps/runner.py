"""``baseline sweep``: K workers (threads of this process), each claiming trials from the store
and running them one at a time as child processes, until no trial is left to claim.

Each worker's children get ``OMP_NUM_THREADS`` (and ``MKL_NUM_THREADS``): the CPUs (or the
``OMP_NUM_THREADS`` the sweep was started with) divided by the workers, and, when the machine
has GPUs, one of them (``CUDA_VISIBLE_DEVICES``). SIGTERM or Ctrl-C stops the sweep: every
running trial gets SIGTERM (its run stops after a checkpoint and stays claimable), and the
command ends with status 143 (130) naming the command that continues it. A line is printed
per finished trial; on a terminal a live table shows the running trials.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from baseline.errors import RunInterrupted, TrainingError
from baseline_sweeps.plan import Plan, describe_point, run_name
from baseline_sweeps.spec import SweepSpec
from baseline_sweeps.store import Claim, Store
from baseline_sweeps.trial import TrialRunner


def gpus() -> list[str]:
    """The GPUs the workers share out: ``CUDA_VISIBLE_DEVICES`` when set, else what
    ``nvidia-smi -L`` lists (none without it)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [item.strip() for item in visible.split(",") if item.strip() not in ("", "-1")]
    try:
        listed = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listed.stdout.splitlines()) if line.startswith("GPU ")]


def worker_env(index: int, workers: int, devices: Sequence[str]) -> dict[str, str]:
    """The environment of worker ``index``'s trial processes."""
    env = dict(os.environ)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    given = os.environ.get("OMP_NUM_THREADS", "")
    total = int(given) if given.isdigit() and int(given) > 0 else cpus
    threads = str(max(1, total // workers))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1")
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = devices[index % len(devices)]
    return env


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s"


class Progress:
    """What the sweep prints: whole lines (a terminal also gets a live table of the trials)."""

    def __init__(self, spec: SweepSpec, total: int, finished: int) -> None:
        self.spec = spec
        self.total = total
        self.finished = finished
        self.lock = threading.Lock()
        #: trial number -> what the live table shows.
        self.active: dict[int, dict[str, Any]] = {}
        self.done: list[dict[str, Any]] = []
        self.live: Any = None
        self.console: Any = None
        if sys.stdout.isatty():
            from rich.console import Console
            from rich.live import Live

            self.console = Console()
            self.live = Live(self._table(), console=self.console, refresh_per_second=2)

    def line(self, text: str) -> None:
        with self.lock:
            if self.console is not None:
                self.console.print(text, highlight=False, markup=False, soft_wrap=True)
            else:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()

    def event(self, kind: str, claim: Claim, data: dict[str, Any]) -> None:
        spec = self.spec
        name = run_name(spec, claim.point, claim.repeat)
        point = describe_point(claim.params)
        row = self.active.setdefault(
            claim.number, {"run": name, "params": point, "state": "running", "step": 0}
        )
        if kind == "progress":
            row["step"] = max(row["step"], data.get("step", 0))
            row["value"] = claim.user_attrs.get("last_value")
        elif kind == "started":
            verb = "resumes" if "--resume" in data["flags"] else "starts"
            self.line(f"{name} {verb}: {point}")
        elif kind == "retry":
            self.line(f"{name} failed (attempt {data['attempt']}), retrying: {data['error']}")
        elif kind == "finished":
            self.active.pop(claim.number, None)
            self.finished += 1
            self.done.append({"run": name, "params": point, **data})
            state, value = data["state"], data.get("value")
            parts = [f"[{self.finished}/{self.total}] {name} {state}"]
            if value is not None:
                parts.append(f"{spec.metric} {value:.4f}")
            if state == "pruned":
                parts.append(f"at step {data['pruned_step']}")
            elif data.get("steps"):
                parts.append(f"{data['steps']} steps")
            parts.append(_duration(data.get("wall_s")))
            parts.append(point)
            if state == "failed":
                parts.append(f"error: {data.get('error')}")
            self.line("  ".join(parts))

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title=f"sweep {self.spec.name}: {self.finished}/{self.total} finished")
        for column in ("run", "state", "step", self.spec.metric, "parameters"):
            table.add_column(column)
        for row in list(self.active.values()):
            value = row.get("value")
            table.add_row(
                row["run"],
                row["state"],
                str(row["step"]),
                "-" if value is None else f"{value:.4f}",
                row["params"],
            )
        return table

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._table())


def run_sweep(plan: Plan, store: Store, workers: int) -> int:
    """Run the sweep's trials with ``workers`` workers until none is left; the exit status."""
    from baseline_sweeps.results import latest_trials

    spec = plan.spec
    latest = latest_trials(store.trials())
    finished = sum(1 for trial in latest.values() if trial.state.is_finished())
    progress = Progress(spec, max(len(latest), spec.trials * spec.repeats), finished)
    stop = threading.Event()
    received: list[int] = []
    failures: list[BaseException] = []
    devices = gpus()

    def work(index: int) -> None:
        try:
            study = store.study(spec)
            runner = TrialRunner(
                plan, store, worker_env(index, workers, devices), stop, progress.event
            )
            while not stop.is_set():
                claim = store.claim(study, spec)
                if claim is None:
                    return
                runner.run(claim)
        except BaseException as error:  # reported by the main thread
            failures.append(error)
            stop.set()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    threads = [
        threading.Thread(target=work, args=(index,), name=f"sweep-worker-{index}", daemon=True)
        for index in range(workers)
    ]
    try:
        if progress.live is not None:
            progress.live.start()
        for thread in threads:
            thread.start()
            time.sleep(0.05)  # the first claims do not all wait on one lock at once
        while any(thread.is_alive() for thread in threads):
            progress.refresh()
            for thread in threads:
                thread.join(timeout=0.5)
    finally:
        if progress.live is not None:
            progress.refresh()
            progress.live.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failures:
        raise failures[0]
    if received:
        signum = received[0]
        name = signal.Signals(signum).name
        raise RunInterrupted(
            f"stopped by {name}: the running trials stopped after a checkpoint; run the same "
            "command again to continue the sweep",
            128 + signum,
        )
    return _summary(plan, store, progress)


def _summary(plan: Plan, store: Store, progress: Progress) -> int:
    from baseline_sweeps.results import point_rows

    spec = plan.spec
    rows = point_rows(store.trials(), spec)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    described = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    best = next((row for row in rows if row.state == "complete"), None)
    text = f"sweep {spec.name}: {described}"
    if best is not None and best.value is not None:
        text += f"; best {spec.metric} {best.value:.4f}: {best.run} ({describe_point(best.params)})"
    progress.line(text)
    progress.line(f"results: baseline sweep table {store.directory}")
    if rows and all(row.state == "failed" for row in rows):
        raise TrainingError(f"every trial failed; the last error: {rows[-1].error}")
    return 0
