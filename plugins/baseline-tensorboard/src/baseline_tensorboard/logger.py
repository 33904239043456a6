"""The ``tensorboard`` logger: TensorBoard event files for each baseline run.

``torch.utils.tensorboard`` (and through it ``tensorboard``) is imported in
:meth:`TensorBoardLogger.start`, not at module level, so ``baseline plugins`` and
``baseline validate`` stay fast.

A run writes two TensorBoard runs (directories of event files), because TensorBoard has one
x-axis per run:

- ``<base>``: every metric against the optimizer step, the normalized config as hparams and
  as text;
- ``<base>/tokens_seen``: the loss and bits-per-byte curves against training tokens seen.

``<base>`` is ``<run dir>/tensorboard``, or ``<log_dir>/<run_name>`` when ``log_dir`` is set.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baseline.errors import BaselineError, ConfigError, PluginError
from baseline.plugins.protocols import MetricRecord, RunInfo
from baseline_tensorboard.config import TensorBoardConfig

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = [
    "CONFIG_TEXT_TAG",
    "TOKENS_SUBDIR",
    "TOKENS_TAGS",
    "TensorBoardLogger",
    "TensorBoardSession",
    "event_dir",
    "flatten_config",
    "tensorboard_scalars",
]

log = logging.getLogger("baseline")

#: The logger's table, for error messages.
KEY_PATH = "logging.tensorboard"
#: Sub-directory (a TensorBoard run of its own) of the curves against tokens seen.
TOKENS_SUBDIR = "tokens_seen"
#: Tag prefix of each record phase.
PHASE_GROUP = {
    "train": "train",
    "diagnostics": "diagnostics",
    "validation": "val",
    "epoch": "epoch",
}
#: ``(phase, key) -> tag`` of the curves written against tokens seen.
TOKENS_TAGS = {
    ("train", "train_loss"): "train_vs_tokens/train_loss",
    ("validation", "val_loss"): "val_vs_tokens/val_loss",
    ("validation", "val_bpb"): "val_vs_tokens/val_bpb",
}
#: Tag of the normalized config (TensorBoard's text plugin adds ``/text_summary``).
CONFIG_TEXT_TAG = "config"
#: Metrics the HParams dashboard shows beside the config (read from these scalar tags).
HPARAM_METRICS = ("val/val_loss", "val/val_bpb", "train/train_loss")


def event_dir(run: RunInfo, config: TensorBoardConfig) -> Path:
    """The directory of the run's step-axis event files."""
    if config.log_dir is not None:
        return Path(config.log_dir) / run.run_name
    return run.run_dir / "tensorboard"


def tensorboard_scalars(record: MetricRecord) -> dict[str, float]:
    """Step-axis tags and values of one core record.

    Every key the core sent is kept, under the record's group (``train/train_loss``,
    ``val/val_bpb``, ``diagnostics/attention_entropy_last``, ``epoch/train_loss_epoch``);
    ``train/tokens_seen`` and ``epoch/epoch`` are added. The core sends only what this
    logger's config asked for.
    """
    group = PHASE_GROUP[record.phase]
    values = record.values
    out: dict[str, float] = {}
    if record.phase == "train":
        # global_grad_norm rides on every train record; TensorBoard shows it from the
        # diagnostics records, on the diagnostics cadence and only when enabled.
        out.update({f"train/{k}": float(v) for k, v in values.items() if k != "global_grad_norm"})
        out["train/tokens_seen"] = float(record.tokens_seen)
    elif record.phase == "epoch":
        # The validation keys of the summary were written by the validation record before it.
        out.update({f"epoch/{k}": float(v) for k, v in values.items() if not k.startswith("val_")})
        out["epoch/epoch"] = float(record.epoch)
    else:
        out.update({f"{group}/{k}": float(v) for k, v in values.items()})
    return out


def flatten_config(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted.key, value)`` for every leaf of the plain config (lists stay lists)."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten_config(value, f"{name}.")
        else:
            yield name, value


def _hparam_value(value: Any) -> int | float | str:
    """Numbers and strings as they are; booleans and lists as their JSON (``true``,
    ``["console"]``): torch's ``hparams`` would turn a boolean into 0 or 1."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return value
    return json.dumps(value)


def _config_markdown(config: Mapping[str, Any]) -> str:
    """The config as a Markdown code block (indented lines), for TensorBoard's text plugin."""
    text = json.dumps(config, indent=2, sort_keys=False, default=str)
    return "\n".join(f"    {line}" for line in text.splitlines())


class TensorBoardLogger:
    """Factory of :class:`TensorBoardSession` objects (registered as logger ``tensorboard``)."""

    def __init__(self, config: TensorBoardConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> TensorBoardSession:
        """Open the event files of ``run`` (appending, with a purge, when it resumes)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise PluginError(
                f"{KEY_PATH}: cannot import TensorBoard's writer ({error}); "
                "run: pip install tensorboard"
            ) from None
        base = event_dir(run, self.config)
        tokens_dir = base / TOKENS_SUBDIR
        try:
            tokens_dir.mkdir(parents=True, exist_ok=True)
            probe = base / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise ConfigError(
                f"cannot write TensorBoard event files to {base} ({reason}); "
                "set it to a writable directory",
                key_path=f"{KEY_PATH}.log_dir",
            ) from None
        # TensorBoard hides the events of earlier sessions from the purge step on: a resumed
        # run replaces what the interrupted one logged after its checkpoint, and a new run
        # under a reused log_dir replaces the old run's curves.
        # The tokens axis of a resumed run is purged on its first value (see _purge_tokens).
        resumed = run.start_step > 0
        steps_purge = run.start_step + 1 if resumed else 0 if _has_events(base) else None
        tokens_purge = 0 if not resumed and _has_events(tokens_dir) else None
        writers: list[SummaryWriter] = []
        try:
            steps = SummaryWriter(
                log_dir=str(base), flush_secs=self.config.flush_secs, purge_step=steps_purge
            )
            writers.append(steps)
            tokens = SummaryWriter(
                log_dir=str(tokens_dir), flush_secs=self.config.flush_secs, purge_step=tokens_purge
            )
            writers.append(tokens)
            return TensorBoardSession(steps, tokens, run, self.config, base)
        except BaseException as error:
            for writer in writers:
                writer.close()
            if isinstance(error, Exception) and not isinstance(error, BaselineError):
                raise PluginError(
                    f"{KEY_PATH}: TensorBoard event files could not be set up in {base}: "
                    f"{_first_line(error)}"
                ) from None
            raise


class TensorBoardSession:
    """Writes core records to the event files of one run."""

    def __init__(
        self,
        steps: SummaryWriter,
        tokens: SummaryWriter,
        run: RunInfo,
        config: TensorBoardConfig,
        directory: Path,
    ) -> None:
        self.steps = steps
        self.tokens = tokens
        self.run = run
        self.config = config
        #: The step-axis event directory (the tokens axis is its ``tokens_seen`` child).
        self.directory = directory
        self.finished = False
        #: Whether the tokens-axis purge of a resumed run is still to be written.
        self._tokens_purge_pending = run.start_step > 0
        self._write_config()

    def _write_config(self) -> None:
        """The normalized config as hparams (HParams dashboard) and as text."""
        from torch.utils.tensorboard.summary import hparams

        flat = {key: _hparam_value(value) for key, value in flatten_config(self.run.config)}
        # The session's end (its status) is written by finish().
        experiment, session_start, _ = hparams(flat, dict.fromkeys(HPARAM_METRICS, 0.0))
        writer = self.steps.file_writer
        assert writer is not None
        writer.add_summary(experiment, self.run.start_step)
        writer.add_summary(session_start, self.run.start_step)
        self.steps.add_text(
            CONFIG_TEXT_TAG, _config_markdown(self.run.config), global_step=self.run.start_step
        )
        self.steps.flush()

    def log(self, record: MetricRecord) -> None:
        """Write ``record`` at its optimizer step (and its losses at its tokens seen)."""
        now = time.time()
        for tag, value in tensorboard_scalars(record).items():
            self.steps.add_scalar(tag, value, global_step=record.step, walltime=now)
        tokens_values = {
            tag: float(record.values[key])
            for (phase, key), tag in TOKENS_TAGS.items()
            if phase == record.phase and key in record.values
        }
        if tokens_values:
            if self._tokens_purge_pending:
                self._purge_tokens(record)
            for tag, value in tokens_values.items():
                self.tokens.add_scalar(tag, value, global_step=record.tokens_seen, walltime=now)
        if record.phase in ("validation", "epoch"):
            self.steps.flush()
            self.tokens.flush()

    def _purge_tokens(self, record: MetricRecord) -> None:
        """Hide what an earlier session wrote on the tokens axis after this session's start.

        The first tokens value of this session tells where it starts: ``start_step`` steps of
        ``batch_size * grad_accumulation_steps * seq_len`` tokens each back from ``record``.
        """
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        self._tokens_purge_pending = False
        purge = record.tokens_seen
        train = self.run.config.get("train")
        if isinstance(train, Mapping):
            try:
                per_step = (
                    int(train["batch_size"])
                    * int(train.get("grad_accumulation_steps", 1))
                    * int(train["seq_len"])
                )
                purge = record.tokens_seen - (record.step - self.run.start_step - 1) * per_step
            except (KeyError, TypeError, ValueError):
                pass  # a config without these keys: purge from this first value on
        writer = self.tokens.file_writer
        assert writer is not None
        writer.add_event(Event(step=purge, session_log=SessionLog(status=SessionLog.START)))

    def finish(self, exit_code: int) -> None:
        """Flush and close the files; a successful run also ends its HParams session.

        TensorBoard keeps the first session end it reads in a directory, so an interrupted or
        failed process records none: a run resumed to its end then shows ``STATUS_SUCCESS``,
        and one that never finishes shows no status.
        """
        if self.finished:
            return
        self.finished = True
        if exit_code == 0:
            try:
                writer = self.steps.file_writer
                if writer is not None:
                    writer.add_summary(_session_end_success())
            except Exception as error:
                log.warning("TensorBoard: the run's end was not recorded: %s", _first_line(error))
        failure: Exception | None = None
        for writer_ in (self.steps, self.tokens):
            try:
                writer_.close()
            except Exception as error:
                failure = failure or error
        if failure is not None:
            if exit_code:  # the run already fails; do not hide its error behind this one
                log.warning("TensorBoard event files were not closed: %s", _first_line(failure))
                return
            raise PluginError(
                f"{KEY_PATH}: TensorBoard event files were not closed: {_first_line(failure)}"
            ) from None


def _session_end_success() -> Any:
    """The HParams ``session_end_info`` summary of a successful run.

    Built like ``torch.utils.tensorboard.summary.hparams`` builds it (TensorBoard's own
    ``hparams.summary`` needs TensorFlow).
    """
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.metadata import (
        PLUGIN_DATA_VERSION,
        PLUGIN_NAME,
        SESSION_END_INFO_TAG,
    )
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    info = SessionEndInfo(status=Status.Value("STATUS_SUCCESS"), end_time_secs=time.time())
    content = HParamsPluginData(session_end_info=info, version=PLUGIN_DATA_VERSION)
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=content.SerializeToString()
        )
    )
    return Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=metadata)])


def _has_events(directory: Path) -> bool:
    return directory.is_dir() and any(directory.glob("events.out.tfevents.*"))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__
