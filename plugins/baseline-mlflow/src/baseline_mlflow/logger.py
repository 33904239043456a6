"""The ``mlflow`` logger: one MLflow run per baseline run.

``mlflow`` is imported in :meth:`MlflowLogger.start`, not at module level, so
``baseline plugins`` and ``baseline validate`` stay fast. The logger talks to the tracking
store through an :class:`mlflow.tracking.MlflowClient` of its own (no global active run).

- Tracking store: ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the local SQLite store
  ``<artifacts_root>/mlruns/mlflow.db`` with the artifacts in ``<artifacts_root>/mlruns/artifacts``.
- Params: the flattened normalized config (``train.learning_rate``, ``model.d_model``, ...).
- Metrics: every key the core sends, at its optimizer step, plus ``tokens_seen``.
- Artifacts: ``run_config.json`` and, after a successful run, ``inference_config.json``.
- Status: ``FINISHED`` (exit 0), ``KILLED`` (130, 143: Ctrl-C, SIGTERM), ``FAILED``.
- The MLflow run id is kept in ``<run_dir>/mlflow_run_id``; ``--resume`` continues that run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from baseline.errors import BaselineError, ConfigError, PluginError
from baseline.plugins.protocols import MetricRecord, RunInfo
from baseline.runs.artifacts import atomic_write_text
from baseline.runs.locks import waiting_lock
from baseline_mlflow.config import MlflowConfig

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "RUN_ID_FILENAME",
    "STORE_DIRNAME",
    "MlflowLogger",
    "MlflowSession",
    "flatten_config",
    "mlflow_values",
    "resolve_tracking_uri",
    "run_status",
]

log = logging.getLogger("baseline")

#: File in the run directory holding the MLflow run id (for resuming the same MLflow run).
RUN_ID_FILENAME = "mlflow_run_id"
#: Directory under the artifacts root of the default local store.
STORE_DIRNAME = "mlruns"
#: The logger's table, for error messages.
KEY_PATH = "logging.mlflow"
#: Artifacts logged from the run directory: at the start, and at the end of a successful run.
START_ARTIFACTS = ("run_config.json",)
END_ARTIFACTS = ("inference_config.json",)
#: MLflow's limits (``mlflow.utils.validation``), repeated so that nothing imports mlflow early.
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE_LENGTH = 6000
MAX_KEY_LENGTH = 250
#: Tag holding the params whose value changed when the run was resumed (params are immutable).
RESUME_CHANGES_TAG = "baseline.resume_changes"


def run_status(exit_code: int) -> str:
    """The MLflow run status of a process exit code."""
    if exit_code == 0:
        return "FINISHED"
    if exit_code in (130, 143):  # Ctrl-C, SIGTERM: stopped on request (resumable)
        return "KILLED"
    return "FAILED"


def mlflow_values(record: MetricRecord) -> dict[str, float]:
    """The MLflow metric keys and values of one core record.

    The core's keys are kept as they are (as in ``metrics.jsonl``); ``tokens_seen`` rides
    with the train and validation records, ``epoch`` with the epoch summaries.
    """
    values = record.values
    if record.phase == "train":
        # global_grad_norm rides on every train record; MLflow logs it from the diagnostics
        # records, on the diagnostics cadence and only when enabled.
        out = {k: float(v) for k, v in values.items() if k != "global_grad_norm"}
        out["tokens_seen"] = float(record.tokens_seen)
    elif record.phase == "validation":
        out = {k: float(v) for k, v in values.items()}
        out["tokens_seen"] = float(record.tokens_seen)
    elif record.phase == "epoch":
        # The validation keys of the summary were logged by the validation record before it.
        out = {k: float(v) for k, v in values.items() if not k.startswith("val_")}
        out["epoch"] = float(record.epoch)
    else:
        out = {k: float(v) for k, v in values.items()}
    return out


def flatten_config(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted.key, text)`` for every leaf of the plain config.

    Strings are kept as they are; numbers, booleans and lists are written as JSON
    (``true``, ``0.003``, ``["console", "mlflow"]``). Values longer than MLflow's limit are
    cut, ending with ``...``.
    """
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten_config(value, f"{name}.")
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            text = text[: MAX_PARAM_VALUE_LENGTH - 3] + "..."
        yield name[:MAX_KEY_LENGTH], text


def default_store(run: RunInfo) -> Path:
    """The local store's directory: ``<artifacts_root>/mlruns``."""
    return run.run_dir.parent / STORE_DIRNAME


def resolve_tracking_uri(config: MlflowConfig, run: RunInfo) -> str:
    """``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the default local SQLite store."""
    if config.tracking_uri:
        return config.tracking_uri
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return from_env
    return f"sqlite:///{default_store(run) / 'mlflow.db'}"


def _local_artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts, for local SQLite stores.

    MLflow's own default for a database store is ``./mlruns`` in the current directory;
    the artifacts go beside the database instead. ``None``: let the store decide.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    return (database.parent / "artifacts").resolve().as_uri()


def _check_server_reachable(tracking_uri: str, timeout_s: float) -> None:
    """An HTTP tracking server must accept a connection within ``timeout_s`` seconds.

    Skipped when a proxy serves the URL (MLflow's requests go through it, not straight to the
    host); MLflow's own retries then decide.
    """
    parsed = urlparse(tracking_uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    if parsed.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(
        parsed.hostname
    ):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            pass
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise PluginError(
            f"{KEY_PATH}: cannot reach the MLflow tracking server {tracking_uri} ({reason}); "
            "start it, or unset tracking_uri (and MLFLOW_TRACKING_URI) to log to a local store"
        ) from None


@contextlib.contextmanager
def _quiet_store_setup() -> Iterator[None]:
    """Hide the INFO lines MLflow and Alembic print when they create a database's tables."""
    names = ("mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store", "alembic")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class MlflowLogger:
    """Factory of :class:`MlflowSession` objects (registered as logger ``mlflow``)."""

    def __init__(self, config: MlflowConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> MlflowSession:
        """Create (or, when ``run`` resumes, continue) the MLflow run."""
        config = self.config
        tracking_uri = resolve_tracking_uri(config, run)
        _check_server_reachable(tracking_uri, config.start_timeout_s)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise PluginError(
                f"{KEY_PATH}: cannot import MLflow ({error}); run: pip install mlflow-skinny"
            ) from None
        store_lock: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if tracking_uri.startswith("sqlite:///"):
            database = Path(tracking_uri.removeprefix("sqlite:///"))
            try:
                database.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ConfigError(
                    f"cannot create the MLflow store {database.parent} "
                    f"({error.strerror or type(error).__name__}); set tracking_uri",
                    key_path=f"{KEY_PATH}.tracking_uri",
                ) from None
            # Runs starting at once (sweep workers, several runs) on a new store would each
            # create its tables and migrate it, and all but one fail: one at a time.
            store_lock = waiting_lock(
                database.with_name(database.name + ".lock"), setting=f"{KEY_PATH}.tracking_uri"
            )
        id_file = run.run_dir / RUN_ID_FILENAME
        try:
            with store_lock, _quiet_store_setup():
                client = MlflowClient(tracking_uri=tracking_uri)
                experiment_id = self._experiment_id(client, run, tracking_uri)
                mlflow_run_id, resumed = self._open_run(client, experiment_id, run, id_file)
        except BaselineError:
            raise
        except Exception as error:
            raise PluginError(
                f"{KEY_PATH}: MLflow could not start the run in {tracking_uri}: "
                f"{_first_line(error)}"
            ) from None
        try:
            session = MlflowSession(client, mlflow_run_id, run, config, tracking_uri)
            session.log_params(resumed=resumed)
            if config.log_artifacts:
                session.log_run_artifacts(START_ARTIFACTS)
            atomic_write_text(id_file, mlflow_run_id + "\n")
        except BaseException as error:
            with contextlib.suppress(Exception):
                client.set_terminated(mlflow_run_id, status="FAILED")
            if isinstance(error, Exception) and not isinstance(error, BaselineError):
                raise PluginError(
                    f"{KEY_PATH}: MLflow run could not be set up: {_first_line(error)}"
                ) from None
            raise
        log.info(
            "mlflow: %s run %s in experiment %r at %s",
            "resumed" if resumed else "logging to",
            mlflow_run_id,
            self._experiment_name(run),
            tracking_uri,
        )
        return session

    def _experiment_name(self, run: RunInfo) -> str:
        from_env = os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip()
        return self.config.experiment_name or from_env or run.project_name

    def _experiment_id(self, client: MlflowClient, run: RunInfo, tracking_uri: str) -> str:
        from mlflow.exceptions import MlflowException

        name = self._experiment_name(run)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return str(
                    client.create_experiment(
                        name, artifact_location=_local_artifact_location(tracking_uri)
                    )
                )
            except MlflowException:
                # Another run created it in the meantime; anything else fails again below.
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise ConfigError(
                f"MLflow experiment {name!r} is deleted in {tracking_uri}; restore it "
                "(mlflow experiments restore) or set another experiment_name",
                key_path=f"{KEY_PATH}.experiment_name",
            )
        return str(experiment.experiment_id)

    def _open_run(
        self, client: MlflowClient, experiment_id: str, run: RunInfo, id_file: Path
    ) -> tuple[str, bool]:
        """``(run id, resumed)``: the recorded run when ``run`` resumes, else a new one."""
        if run.start_step > 0 and id_file.is_file():
            run_id = id_file.read_text(encoding="utf-8").strip()
            existing = _find_run(client, run_id) if run_id else None
            if existing is not None and existing.info.experiment_id == experiment_id:
                client.update_run(run_id, status="RUNNING")
                return run_id, True
            log.warning(
                "mlflow: run %s (from %s) is not in this experiment and store; "
                "logging the resumed run as a new MLflow run",
                run_id,
                id_file.name,
            )
        tags = {"baseline.run_dir": str(run.run_dir), "baseline.project": run.project_name}
        if self.config.description:
            tags["mlflow.note.content"] = self.config.description
        created = client.create_run(
            experiment_id, run_name=self.config.run_name or run.run_name, tags=tags
        )
        return str(created.info.run_id), False


def _find_run(client: MlflowClient, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


class MlflowSession:
    """Logs core records to one MLflow run, the optimizer step as MLflow's step."""

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        run: RunInfo,
        config: MlflowConfig,
        tracking_uri: str,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.run = run
        self.config = config
        self.tracking_uri = tracking_uri
        self.finished = False
        #: The last step whose ``tokens_seen`` was logged (train and validation records of one
        #: step both carry it; MLflow would keep both points).
        self._tokens_step: int | None = None
        #: Records whose metrics the store refused (training goes on without them).
        self.failed_records = 0

    def log_params(self, *, resumed: bool) -> None:
        """The flattened config as params; on resume, only the new ones (params are
        immutable in MLflow: changed values go to the ``baseline.resume_changes`` tag)."""
        from mlflow.entities import Param, RunTag

        params = dict(flatten_config(self.run.config))
        tags: list[RunTag] = []
        if resumed:
            logged = self.client.get_run(self.run_id).data.params
            changed = {
                key: [logged[key], value]
                for key, value in params.items()
                if key in logged and logged[key] != value
            }
            params = {key: value for key, value in params.items() if key not in logged}
            if changed:
                tags.append(RunTag(RESUME_CHANGES_TAG, json.dumps(changed)))
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])
        if tags:
            self.client.log_batch(self.run_id, tags=tags)

    def log_run_artifacts(self, names: tuple[str, ...]) -> None:
        """Log these files of the run directory (those that exist) as run artifacts."""
        for name in names:
            path = self.run.run_dir / name
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def log(self, record: MetricRecord) -> None:
        """Log ``record``'s metrics at its optimizer step."""
        from mlflow.entities import Metric

        values = mlflow_values(record)
        if "tokens_seen" in values:
            if record.step == self._tokens_step:
                del values["tokens_seen"]
            self._tokens_step = record.step
        if not values:
            return
        timestamp = int(time.time() * 1000)
        metrics = [Metric(key, value, timestamp, record.step) for key, value in values.items()]
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as error:
            # A tracking store that fails in the middle of a run does not stop training:
            # metrics.jsonl keeps every value. The first failure is reported at once.
            self.failed_records += 1
            if self.failed_records == 1:
                log.warning(
                    "mlflow: the metrics of step %d were not logged (%s); training goes on, "
                    "metrics.jsonl has every value",
                    record.step,
                    _first_line(error),
                )

    def finish(self, exit_code: int) -> None:
        """Log the end-of-run artifacts and set the run's status from ``exit_code``."""
        if self.finished:
            return
        self.finished = True
        if self.failed_records:
            log.warning(
                "mlflow: %d metric records of run %s were not logged (see the first warning)",
                self.failed_records,
                self.run_id,
            )
        try:
            if exit_code == 0 and self.config.log_artifacts:
                self.log_run_artifacts(END_ARTIFACTS)
            self.client.set_terminated(self.run_id, status=run_status(exit_code))
        except Exception as error:
            if exit_code:  # the run already fails; do not hide its error behind this one
                log.warning("MLflow run did not finish cleanly: %s", _first_line(error))
                return
            raise PluginError(
                f"{KEY_PATH}: MLflow run did not finish: {_first_line(error)}"
            ) from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__
