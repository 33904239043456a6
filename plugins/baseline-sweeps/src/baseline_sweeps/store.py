"""The sweep's store: an Optuna study in a SQL database, and the sweep's directory.

The directory ``<artifacts_root>/../sweeps/<name>/`` (beside the runs root) holds, on each
machine that runs the sweep:

- ``sweep.json``: the sweep's name, experiment file, sweep file, storage URL (without its
  password) and definition, so that ``baseline sweep table NAME`` finds the study;
- ``optuna.db``: the study, an SQLite database, unless ``--storage URL`` names another one
  (PostgreSQL, shared by several machines);
- ``claim.lock``: held while a worker of this machine claims a trial;
- ``claims/<trial>.lock``: held by the worker that runs trial ``<trial>`` (free: it died);
- ``logs/<run name>.log``: what each trial's runs printed.

The study holds one trial per run (point ``k``, repeat ``r``: user attributes ``point`` and
``repeat``). They are created up front as *waiting* trials (a grid's points with their values;
a sampled sweep's ``trials`` empty slots, whose values the sampler draws when one is claimed),
so the budget is exact and a worker claims a trial by moving it from waiting to running in one
database update (``SELECT ... FOR UPDATE`` on PostgreSQL; one claim at a time per machine on
top of that, which SQLite needs): no point runs twice. A running trial whose worker died is
found again: on its machine at once (its claim lock is free; the trial is taken over and its
run resumed from its checkpoint), from other machines when its heartbeat is older than
:data:`GRACE_S` (the trial is failed and a copy with its values is queued).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs

from baseline.errors import ConfigError
from baseline.runs.artifacts import atomic_write_text
from baseline_sweeps.spec import SweepSpec

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

#: The study's user attribute holding the sweep's record; set before any trial exists.
RECORD_ATTR = "baseline_sweep"
#: The study's user attribute set once every trial slot is queued (the store is ready).
READY_ATTR = "baseline_ready"
#: A trial's system attribute naming the worker that claimed it.
CLAIM_ATTR = "baseline_claim"
#: Seconds between heartbeats of a running trial, and after which a silent one is stale.
HEARTBEAT_S = 10
GRACE_S = 60
SWEEP_JSON = "sweep.json"
DATABASE = "optuna.db"
#: The name a worker records for its machine (``BASELINE_SWEEP_HOST``, else the host name):
#: trials claimed under this name are taken over here when their claim lock is free.
HOST = os.environ.get("BASELINE_SWEEP_HOST") or socket.gethostname()
#: User attributes a queued copy of a stale trial keeps.
_KEPT_ATTRS = ("point", "repeat", "attempts", "errors", "wall_s", "repeats_queued")


def default_url(directory: Path) -> str:
    """The SQLite database in the sweep's directory."""
    return f"sqlite:///{(directory / DATABASE).absolute()}"


def masked(url: str) -> str:
    """``url`` without its password (for messages and ``sweep.json``)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..."


def _has_password(url: str) -> bool:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password is not None
    except Exception:
        return False


def _driver_url(url: str) -> str:
    """``postgresql://`` with psycopg (3) when psycopg2, SQLAlchemy's default, is missing."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            import importlib.util

            if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg"):
                return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def connect(url: str, *, source: str = "") -> optuna.storages.RDBStorage:
    """Open the database (creating Optuna's tables); problems are one line (status 2)."""
    import optuna

    from baseline_sweeps.sampling import quiet_optuna

    quiet_optuna()
    sqlite = url.startswith("sqlite")
    if sqlite:
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
    )
    try:
        return optuna.storages.RDBStorage(
            _driver_url(url),
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=_queue_copy,
        )
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"{masked(url)}: needs the database driver {error.name!r}; for PostgreSQL: "
            "pip install 'baseline-sweeps[postgres]'",
            source=source,
        ) from None
    except Exception as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        detail = lines[0] if lines else type(error).__name__
        raise ConfigError(f"cannot open {masked(url)}: {detail}", source=source) from None


def _queue_copy(study: optuna.Study, trial: FrozenTrial) -> None:
    """A stale trial (its worker died on another machine) was failed: queue it again."""
    params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    attrs_ = {key: trial.user_attrs[key] for key in _KEPT_ATTRS if key in trial.user_attrs}
    study.enqueue_trial(params, user_attrs={**attrs_, "copy_of": trial.number})


@attrs.frozen
class SweepRecord:
    """What a store says about its sweep (the study's user attribute :data:`RECORD_ATTR`)."""

    spec: SweepSpec
    #: The experiment file (absolute) and sweep file (absolute, or None for ``--param``).
    experiment: str
    sweep_file: str | None
    #: The experiment's config with the sweep's fixed overrides (plain data).
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "spec": self.spec.to_json(),
            "experiment": self.experiment,
            "sweep_file": self.sweep_file,
            "config": self.config,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SweepRecord:
        source = data.get("sweep_file") or "--param"
        spec = SweepSpec.from_json(data["spec"], source=str(source))
        spec = attrs.evolve(spec, from_file=data.get("sweep_file") is not None)
        return cls(spec, data["experiment"], data.get("sweep_file"), dict(data["config"]))


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: data}


def difference(stored: SweepRecord, here: SweepRecord) -> tuple[str, str] | None:
    """The first thing that differs between two sweeps: ``(field, description)``."""
    old, new = stored.spec.identity(), here.spec.identity()
    for field in old:
        if old[field] != new[field]:
            return (
                field,
                f"{field} differ" if field == "params" else f"its {field} is {old[field]!r}",
            )
    if Path(stored.experiment) != Path(here.experiment):
        return "name", f"it sweeps the experiment {stored.experiment}"
    before, after = _flat(stored.config), _flat(here.config)
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            return "name", (
                f"its experiment had {key} = {before.get(key)!r}, the experiment file has "
                f"{after.get(key)!r} now"
            )
    return None


@attrs.define
class Claim:
    """A trial this worker runs: its Optuna handle, point, repeat and values."""

    trial: optuna.Trial
    number: int
    point: int
    repeat: int
    params: dict[str, Any]
    #: Taken over from a worker that died (its run resumes from its checkpoint).
    resumed: bool
    lock_fd: int
    user_attrs: dict[str, Any]

    @property
    def storage(self) -> Any:
        """The storage of the trial's study (Optuna's caching wrapper of the database)."""
        return self.trial.study._storage

    @property
    def trial_id(self) -> int:
        return self.trial._trial_id


class Store:
    """A sweep's study and its directory on this machine."""

    def __init__(self, directory: Path, storage: optuna.storages.RDBStorage, name: str) -> None:
        self.directory = directory
        self.storage = storage
        self.name = name
        self._thread_lock = threading.Lock()

    # -- opening -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One claim (or creation) at a time on this machine, across threads and processes."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._thread_lock:
            fd = os.open(self.directory / "claim.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def study(self, spec: SweepSpec | None = None) -> optuna.Study:
        """The study (a worker's own object: its sampler is set per claim)."""
        import optuna

        from baseline_sweeps.sampling import pruner_for

        pruner = pruner_for(spec) if spec is not None else None
        try:
            return optuna.load_study(study_name=self.name, storage=self.storage, pruner=pruner)
        except KeyError:
            raise ConfigError(f"no sweep {self.name!r} in {masked(self.storage.url)}") from None

    def record(self, *, wait_s: float = 0.0) -> SweepRecord | None:
        """The sweep's record; ``None`` when there is no such study, or it is not ready after
        ``wait_s`` seconds (another machine is creating it)."""
        import optuna

        deadline = time.monotonic() + wait_s
        while True:
            try:
                attrs_ = optuna.load_study(study_name=self.name, storage=self.storage).user_attrs
            except KeyError:
                attrs_ = {}
            if READY_ATTR in attrs_ and RECORD_ATTR in attrs_:
                return SweepRecord.from_json(attrs_[RECORD_ATTR])
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)

    def create_or_continue(self, record: SweepRecord) -> bool:
        """Create the study and queue its trials, or check that the existing study is this
        sweep; whether it was created. Another sweep's store is a :class:`ConfigError`."""
        import optuna

        spec = record.spec
        with self.locked():
            try:
                study = optuna.create_study(
                    study_name=self.name, storage=self.storage, direction=cast(Any, spec.goal)
                )
                created = True
            except optuna.exceptions.DuplicatedStudyError:
                created = False
        if not created:
            stored = self.record(wait_s=30.0)
            if stored is None:
                study = self.study()
                if RECORD_ATTR not in study.user_attrs:
                    raise spec.error(
                        "name",
                        f"{masked(self.storage.url)} has a study {self.name!r} that is not a "
                        "sweep's; choose another sweep name",
                    )
                stored = SweepRecord.from_json(study.user_attrs[RECORD_ATTR])
            problem = difference(stored, record)
            if problem is not None:
                field, what = problem
                where = (
                    self.directory
                    if self.storage.url.startswith("sqlite")
                    else masked(self.storage.url)
                )
                message = (
                    f"the store {where} holds another sweep named {self.name!r} ({what}); "
                    f"choose another sweep name, or delete {self.directory} to start over"
                )
                if field == "params":
                    raise ConfigError(
                        message, key_path="params" if spec.from_file else "", source=spec.source
                    )
                raise spec.error(field, message)
        with self.locked():
            study = self.study()
            if RECORD_ATTR not in study.user_attrs:
                study.set_user_attr(RECORD_ATTR, record.to_json())
            if READY_ATTR not in study.user_attrs:
                self._queue_slots(study, spec)
                study.set_user_attr(READY_ATTR, True)
        return created

    def _queue_slots(self, study: optuna.Study, spec: SweepSpec) -> None:
        """Queue every trial not queued yet (a creator that died half-way is completed)."""
        existing = {
            (trial.user_attrs.get("point"), trial.user_attrs.get("repeat"))
            for trial in study.get_trials(deepcopy=False)
        }
        if spec.method == "grid":
            slots = [
                (point, repeat, values)
                for point, values in enumerate(spec.points())
                for repeat in range(spec.repeats)
            ]
        else:
            slots = [(point, 0, {}) for point in range(spec.trials)]
        for point, repeat, values in slots:
            if (point, repeat) not in existing:
                study.enqueue_trial(values, user_attrs={"point": point, "repeat": repeat})

    def write_description(self, record: SweepRecord, url: str) -> None:
        """``sweep.json``: how ``baseline sweep table NAME`` finds this sweep."""
        storage: str | None = None if url == default_url(self.directory) else masked(url)
        data = {
            "name": self.name,
            "storage": storage,
            "storage_password": _has_password(url),
            **record.to_json(),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.directory / SWEEP_JSON, json.dumps(data, indent=2) + "\n")

    # -- claiming ----------------------------------------------------------------------------

    def _lock_path(self, number: int) -> Path:
        return self.directory / "claims" / f"{number}.lock"

    def _try_lock(self, path: Path) -> int | None:
        """The claim lock ``path``, held (a descriptor), or ``None`` when another holds it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    def release(self, claim: Claim) -> None:
        """Let go of the claim lock (the trial is finished, or left for a later run)."""
        with contextlib.suppress(OSError):
            os.close(claim.lock_fd)

    def claim(self, study: optuna.Study, spec: SweepSpec) -> Claim | None:
        """The next trial for this worker: one whose worker on this machine died (taken over),
        else a waiting one; ``None`` when there is none."""
        import optuna
        from optuna.trial import TrialState

        storage = study._storage  # Optuna's cache of the database, which the trials use
        study_id = storage.get_study_id_from_name(self.name)
        with self.locked():
            running = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            for frozen in running:
                fd = self._take_over(frozen)
                if fd is not None:
                    return self._start(study, spec, frozen, fd, resumed=True)
            optuna.storages.fail_stale_trials(study)  # dead workers of other machines
            waiting = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
            for frozen in waiting:
                try:
                    if not storage.set_trial_state_values(frozen._trial_id, TrialState.RUNNING):
                        continue
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue
                fd = self._try_lock(self._lock_path(frozen.number))
                if fd is None:  # held by a process of an older study of this name
                    fd = os.open(self._lock_path(frozen.number), os.O_RDWR)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                return self._start(study, spec, frozen, fd, resumed=False)
        return None

    def _take_over(self, frozen: FrozenTrial) -> int | None:
        """This worker's claim lock on a running trial whose worker died on this machine (its
        claim lock is free), or whose claimer died before it said who it was; else ``None``."""
        owner = frozen.system_attrs.get(CLAIM_ATTR)
        if not owner:
            started = frozen.datetime_start
            if started is not None and time.time() - started.timestamp() < GRACE_S:
                return None
        elif owner.get("host") != HOST:
            return None  # another machine's: its heartbeat tells (fail_stale_trials)
        elif owner.get("lock") and owner["lock"] != str(self._lock_path(frozen.number)):
            theirs = self._try_lock(Path(owner["lock"]))  # a worker with another directory
            if theirs is None:
                return None
            os.close(theirs)
        fd = self._try_lock(self._lock_path(frozen.number))
        if fd is None:
            return None
        # Its worker may have finished it and let go of the lock since the trial was read.
        now = self.storage.get_trial(frozen._trial_id)
        if now.state.name != "RUNNING" or now.system_attrs.get(CLAIM_ATTR) != owner:
            os.close(fd)
            return None
        return fd

    def _start(
        self, study: optuna.Study, spec: SweepSpec, frozen: FrozenTrial, fd: int, *, resumed: bool
    ) -> Claim:
        import optuna

        from baseline_sweeps.sampling import sampler_for, suggest_all

        storage: Any = study._storage
        trial_id = frozen._trial_id
        owner: dict[str, Any] = {
            "host": HOST,
            "pid": os.getpid(),
            "since": time.time(),
            "lock": str(self._lock_path(frozen.number)),
        }
        storage.set_trial_system_attr(trial_id, CLAIM_ATTR, owner)
        storage.record_heartbeat(trial_id)
        point = int(frozen.user_attrs.get("point", frozen.number))
        repeat = int(frozen.user_attrs.get("repeat", 0))
        study.sampler = sampler_for(spec, point)
        trial = optuna.Trial(study, trial_id)
        params = suggest_all(trial, spec)
        user_attrs = dict(storage.get_trial(trial_id).user_attrs)
        if spec.repeats > 1 and repeat == 0 and not user_attrs.get("repeats_queued"):
            if spec.method != "grid":  # a grid queued its repeats up front
                for other in range(1, spec.repeats):
                    study.enqueue_trial(params, user_attrs={"point": point, "repeat": other})
            storage.set_trial_user_attr(trial_id, "repeats_queued", True)
        return Claim(trial, frozen.number, point, repeat, params, resumed, fd, user_attrs)

    def beat(self, claim: Claim) -> None:
        """Record that the claim's worker is alive."""
        claim.storage.record_heartbeat(claim.trial_id)

    def set_attrs(self, claim: Claim, **values: Any) -> None:
        """Store user attributes of a running trial (ignored once it is finished)."""
        import optuna

        for key, value in values.items():
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                claim.storage.set_trial_user_attr(claim.trial_id, key, value)
            claim.user_attrs[key] = value

    def trials(self) -> list[FrozenTrial]:
        """Every trial of the study, in creation order."""
        return list(self.study().get_trials(deepcopy=False))


def read_description(directory: Path) -> dict[str, Any] | None:
    """A sweep directory's ``sweep.json``; ``None`` when it has none."""
    try:
        data = json.loads((directory / SWEEP_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
