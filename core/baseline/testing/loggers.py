"""A contract test suite for metrics loggers: real tiny runs, read back from the backend.

A logger plugin subclasses :class:`LoggerContract` in its tests (the class name must start
with ``Test`` for pytest to collect it), names its provider, says how to read back what its
backend recorded, and pytest runs the inherited ``test_*`` methods::

    from baseline.testing.loggers import LoggedRun, LoggerContract

    class TestMyLoggerContract(LoggerContract):
        provider = "my_logger"
        finished_status, stopped_status, failed_status = "FINISHED", "KILLED", "FAILED"

        def logger_table(self, workdir):
            return {"directory": str(workdir / "store")}

        def read_back(self, run_dir):
            return LoggedRun(metrics=..., run_ids=[...], status=...)

The runs train the real ``contract_*`` components of :mod:`baseline.testing.components`
(a byte tokenizer and a small transformer on a text file), so the suite needs only the core
and the plugin under test, installed (its entry point is what the multi-process run finds).
"""

from __future__ import annotations

import abc
import collections
import contextlib
import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from baseline.config import MetricsRequest
from baseline.errors import PluginError, RunInterrupted
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import PluginSet, PluginSource, activated, discover
from baseline.runs.layout import RunDirectory
from baseline.testing.components import (
    ContractPlugin,
    contract_experiment_data,
    write_experiment,
)

__all__ = ["ContractRun", "LoggedRun", "LoggerContract"]

#: ``[logging] log_every_n_steps`` of the contract runs (a logger may set its own cadence).
LOG_EVERY = 2
#: The step the fault logger stops or crashes the run at; the last checkpoint before it is
#: step 5 (``run.checkpoint_every_n_steps``).
FAULT_STEP = 8
LAST_CHECKPOINT = 5
RECORD_FIELDS = ("step", "tokens_seen", "epoch", "phase")


@contextlib.contextmanager
def using_contract_components() -> Iterator[PluginSet]:
    """The installed plugins (the logger under test) and :class:`ContractPlugin`, active."""
    source = PluginSource(ContractPlugin(), "ContractPlugin", "test-plugins", "0")
    with activated(discover([source])) as plugin_set:
        yield plugin_set


@attrs.frozen(kw_only=True)
class LoggedRun:
    """What a logger's backend shows for one baseline run, as the plugin's reader decoded it."""

    #: Metric name (as the backend names it) -> ``[(step, value), ...]``: every point the
    #: backend keeps, over every session of the run (a step kept twice appears twice).
    metrics: Mapping[str, Sequence[tuple[int, float]]]
    #: The backend's run ids holding these metrics, one per session is fine (a resumed run
    #: must keep its id).
    run_ids: Sequence[str] = ()
    #: The run's state in the backend (``"FINISHED"``, ``"FAILED"``, an exit code as text,
    #: ...); ``None`` when the backend recorded none.
    status: str | None = None

    def steps(self, name: str) -> list[int]:
        """The steps of ``name``'s points, in the order kept (empty when never logged)."""
        return [step for step, _ in self.metrics.get(name, ())]

    def values(self, name: str, step: int) -> list[float]:
        """Every value of ``name`` kept at ``step``."""
        return [value for s, value in self.metrics.get(name, ()) if s == step]


@attrs.frozen(kw_only=True)
class ContractRun:
    """A finished contract run: its directory, what the backend shows, and the core's view."""

    run_dir: Path
    logged: LoggedRun
    #: ``metrics.jsonl``: every record the core computed.
    records: list[dict[str, Any]]
    #: What the logger asked the core for (its cadences).
    request: MetricsRequest

    @property
    def last_step(self) -> int:
        return max(int(record["step"]) for record in self.records)

    @property
    def epoch_ends(self) -> set[int]:
        return {record["step"] for record in self.records if record["phase"] == "epoch"}

    def core_values(self, phase: str, step: int, key: str) -> list[float]:
        return [
            r[key] for r in self.records if r["phase"] == phase and r["step"] == step and key in r
        ]


class LoggerContract(abc.ABC):
    """The tests every metrics logger passes; subclass it as ``Test...`` in a plugin's tests.

    Override :meth:`read_back` (and :attr:`provider`); the other hooks have defaults.
    """

    #: The logger's name (``[logging] provider``).
    provider: ClassVar[str] = ""
    #: :attr:`LoggedRun.status` after a successful run, after a SIGTERM (exit status 143)
    #: and after a crash (exit status 1); ``None`` where the backend records no such state
    #: (then it is not checked).
    finished_status: ClassVar[str | None] = None
    stopped_status: ClassVar[str | None] = None
    failed_status: ClassVar[str | None] = None
    #: Whether the backend keeps both points of the steps logged again after ``--resume``
    #: from a crash (those between the last checkpoint and the crash), as the plugin documents.
    #: A graceful stop saves a checkpoint at its step, so nothing may be logged twice then.
    keeps_relogged_steps: ClassVar[bool] = False
    #: Keys of the core's train and validation records the backend must show (core names).
    train_keys: ClassVar[frozenset[str]] = frozenset({"train_loss", "learning_rate"})
    validation_keys: ClassVar[frozenset[str]] = frozenset({"val_loss", "val_bpb"})
    #: Seconds the two-process run may take.
    distributed_timeout_s: ClassVar[float] = 300.0

    # -- hooks ---------------------------------------------------------------------------

    def logger_table(self, workdir: Path) -> dict[str, Any]:
        """The ``[logging.<provider>]`` table of every contract run in ``workdir``."""
        return {}

    @abc.abstractmethod
    def read_back(self, run_dir: Path) -> LoggedRun:
        """What the backend recorded for the run in ``run_dir`` (its artifacts directory;
        ``run_dir.parent.parent`` is the workdir given to :meth:`logger_table`)."""

    def metric_name(self, phase: str, key: str) -> str:
        """The backend's name for ``key`` of the core's ``phase`` records (default: ``key``)."""
        return key

    # -- running -------------------------------------------------------------------------

    def experiment(self, workdir: Path) -> dict[str, Any]:
        """The contract run's experiment data with this logger as its only provider."""
        data = contract_experiment_data(
            workdir, provider=[self.provider], log_every_n_steps=LOG_EVERY
        )
        data["logging"][self.provider] = self.logger_table(workdir)
        return data

    def train(self, data: dict[str, Any], *, fault: str | None = None) -> Path:
        """Train ``data`` in this process (``fault``: ``sigterm`` or ``raise`` at step 8).

        A logger that raises is switched off and training goes on, unless
        ``logging.on_logger_error = "stop"``: the ``raise`` fault sets it, so that its
        exception crashes the run (exit status 1).
        """
        data = copy.deepcopy(data)
        if fault is not None:
            data["logging"]["provider"] = [self.provider, "contract_fault"]
            data["logging"]["contract_fault"] = {"step": FAULT_STEP, "action": fault}
        if fault == "raise":
            data["logging"]["on_logger_error"] = "stop"
        with using_contract_components() as plugins:
            config = experiment_from_data(data, plugins.registry)
            return model_pipeline(config, plugins=plugins).run_dir

    def finished(self, data: dict[str, Any], run_dir: Path) -> ContractRun:
        with using_contract_components() as plugins:
            config = experiment_from_data(data, plugins.registry)
        request = config.logging.loggers[self.provider].metrics_request(config.logging)
        lines = RunDirectory(run_dir).metrics.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]
        return ContractRun(
            run_dir=run_dir, logged=self.read_back(run_dir), records=records, request=request
        )

    @pytest.fixture(scope="class")
    @classmethod
    def straight(cls, tmp_path_factory: pytest.TempPathFactory) -> ContractRun:
        """Two epochs, uninterrupted: what every other run is compared with."""
        contract = cls()
        data = contract.experiment(tmp_path_factory.mktemp(f"{cls.provider}-straight"))
        return contract.finished(data, contract.train(data))

    # -- the contract --------------------------------------------------------------------

    def test_train_records_follow_the_logger_cadence(self, straight: ContractRun) -> None:
        every = straight.request.log_every_n_steps
        expected = {s for s in range(1, straight.last_step + 1) if s % every == 0}
        expected |= straight.epoch_ends
        for key in sorted(self.train_keys):
            name = self.metric_name("train", key)
            assert sorted(straight.logged.steps(name)) == sorted(expected), (
                f"{name}: logged on steps {straight.logged.steps(name)}, expected every "
                f"{every} steps and at each epoch's end: {sorted(expected)}"
            )
            if every != LOG_EVERY:
                continue  # the core's metrics.jsonl averages other windows
            for step in expected:
                core = straight.core_values("train", step, key)
                assert straight.logged.values(name, step) == pytest.approx(core, rel=1e-5), (
                    f"{name} at step {step}: not the value the core computed"
                )

    def test_validation_records_at_each_epoch_end_and_on_their_cadence(
        self, straight: ContractRun
    ) -> None:
        every = straight.request.val_every_n_steps
        expected = set(straight.epoch_ends)
        if every:
            expected |= {s for s in range(1, straight.last_step + 1) if s % every == 0}
        for key in sorted(self.validation_keys):
            name = self.metric_name("validation", key)
            assert sorted(set(straight.logged.steps(name))) == sorted(expected), (
                f"{name}: logged on steps {straight.logged.steps(name)}, expected {expected}"
            )
            for step in expected:
                core = straight.core_values("validation", step, key)
                for value in straight.logged.values(name, step):
                    assert value == pytest.approx(core[-1], rel=1e-5), (name, step)

    def test_a_run_is_one_backend_run_with_each_step_once(self, straight: ContractRun) -> None:
        _assert_one_run(straight.logged, relogged=set())
        if self.finished_status is not None:
            assert straight.logged.status == self.finished_status

    def test_sigterm_then_resume_continues_the_same_run(
        self, tmp_path: Path, straight: ContractRun
    ) -> None:
        data = self.experiment(tmp_path)
        with pytest.raises(RunInterrupted) as caught:
            self.train(data, fault="sigterm")
        assert caught.value.exit_code == 143
        run_dir = tmp_path / "runs" / "tiny"
        stopped = self.read_back(run_dir)
        if self.stopped_status is not None:
            assert stopped.status == self.stopped_status
        name = self.metric_name("train", "train_loss")
        assert stopped.steps(name) and max(stopped.steps(name)) <= FAULT_STEP
        data["run"]["resume_from_checkpoint"] = True
        resumed = self.finished(data, self.train(data))
        assert set(resumed.logged.run_ids) == set(stopped.run_ids), "resume opened another run"
        # The stop saved a checkpoint at its step: nothing is logged twice.
        self._assert_same_curves(resumed.logged, straight.logged, relogged=set())
        if self.finished_status is not None:
            assert resumed.logged.status == self.finished_status

    def test_a_crash_is_recorded_and_resume_continues_the_same_run(
        self, tmp_path: Path, straight: ContractRun
    ) -> None:
        data = self.experiment(tmp_path)
        with pytest.raises(PluginError, match="contract_fault") as caught:
            self.train(data, fault="raise")
        assert caught.value.exit_code == 1
        run_dir = tmp_path / "runs" / "tiny"
        crashed = self.read_back(run_dir)
        if self.failed_status is not None:
            assert crashed.status == self.failed_status
        name = self.metric_name("train", "train_loss")
        assert crashed.steps(name) and max(crashed.steps(name)) <= FAULT_STEP
        data["run"]["resume_from_checkpoint"] = True
        resumed = self.finished(data, self.train(data))
        assert set(resumed.logged.run_ids) == set(crashed.run_ids), "resume opened another run"
        relogged = set(range(LAST_CHECKPOINT + 1, FAULT_STEP + 1))
        if not self.keeps_relogged_steps:
            relogged = set()
        self._assert_same_curves(resumed.logged, straight.logged, relogged=relogged)
        if self.finished_status is not None:
            assert resumed.logged.status == self.finished_status

    def test_only_rank_zero_writes_in_a_two_process_run(
        self, tmp_path: Path, straight: ContractRun
    ) -> None:
        data = self.experiment(tmp_path)
        write_experiment(tmp_path / "exp.toml", data)
        env = {k: v for k, v in os.environ.items() if k not in ("BASELINE_DEBUG", "WORLD_SIZE")}
        env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc_per_node=2", "-m", "baseline.testing._worker", "exp.toml"]
        result = subprocess.run(
            command,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=self.distributed_timeout_s,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        run_dir = tmp_path / "runs" / "tiny"
        ranks = json.loads(RunDirectory(run_dir).ranks.read_text(encoding="utf-8"))
        assert ranks["world_size"] == 2
        two = self.finished(data, run_dir)
        _assert_one_run(two.logged, relogged=set())
        for key in sorted(self.train_keys | self.validation_keys):
            phase = "train" if key in self.train_keys else "validation"
            name = self.metric_name(phase, key)
            assert two.logged.steps(name) == straight.logged.steps(name), name
        if self.finished_status is not None:
            assert two.logged.status == self.finished_status

    def _assert_same_curves(self, resumed: LoggedRun, whole: LoggedRun, relogged: set[int]) -> None:
        """``resumed`` shows ``whole``'s points (steps in ``relogged`` twice) and one run."""
        _assert_one_run(resumed, relogged=relogged)
        assert set(resumed.metrics) == set(whole.metrics)
        for name, points in whole.metrics.items():
            steps = {step for step, _ in points}
            assert set(resumed.steps(name)) == steps, f"{name}: {resumed.steps(name)}"
        keys = [("train", k) for k in self.train_keys]
        keys += [("validation", k) for k in self.validation_keys]
        for phase, key in keys:
            name = self.metric_name(phase, key)
            for step, value in whole.metrics[name]:
                for again in resumed.values(name, step):
                    assert again == pytest.approx(value, rel=1e-5), (name, step)


def _assert_one_run(logged: LoggedRun, *, relogged: set[int]) -> None:
    """One backend run id; each metric's steps once, those in ``relogged`` at most twice."""
    assert len(set(logged.run_ids)) <= 1, f"more than one backend run: {logged.run_ids}"
    for name in logged.metrics:
        counts = collections.Counter(logged.steps(name))
        twice = {step for step, count in counts.items() if count > 1}
        assert twice <= relogged, f"{name}: steps {sorted(twice)} logged more than once"
        assert max(counts.values(), default=1) <= 2, f"{name}: {counts}"
