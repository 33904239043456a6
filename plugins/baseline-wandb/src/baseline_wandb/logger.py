"""The ``wandb`` logger: one W&B run per baseline run.

``wandb`` is imported in :meth:`WandbLogger.start`, not at module level. The W&B run lives in
``$WANDB_DIR/wandb`` when the ``WANDB_DIR`` environment variable is set, else in
``<run_dir>/wandb``; its id is kept in ``<run_dir>/wandb_run_id`` so that a resumed baseline
run (``--resume``) continues the same W&B run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baseline.errors import BaselineError, ConfigError, PluginError
from baseline.plugins.protocols import MetricRecord, RunInfo
from baseline.runs.artifacts import atomic_write_text
from baseline_wandb.config import WandbMetricsConfig

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

__all__ = [
    "ALWAYS_LOGGED",
    "RUN_ID_FILENAME",
    "TOKENS_KEY",
    "WandbLogger",
    "WandbSession",
    "wandb_dir",
    "wandb_values",
]

log = logging.getLogger("baseline")

#: File in the run directory holding the W&B run id (for resuming the same W&B run).
RUN_ID_FILENAME = "wandb_run_id"
#: The x-axis of the loss curves.
TOKENS_KEY = "tokens_seen_train"
#: The logger's table, for error messages.
KEY_PATH = "logging.wandb"
#: Keys logged whatever the ``enable_*`` toggles say (when the core provides them).
ALWAYS_LOGGED = frozenset(
    {"learning_rate", "tokens_per_second", "mfu", "val_bpb", "train_loss_epoch", "epoch"}
)

NO_API_KEY_MESSAGE = (
    "W&B is in online mode but no API key is configured; run `wandb login`, "
    'set WANDB_API_KEY, or set mode = "offline"'
)


def wandb_dir(run: RunInfo) -> Path:
    """The directory W&B writes its ``wandb/`` folder into.

    ``WANDB_DIR`` when the user set it (W&B's own convention), else the run directory.
    """
    configured = os.environ.get("WANDB_DIR", "").strip()
    return Path(configured).expanduser() if configured else run.run_dir


def wandb_values(record: MetricRecord, config: WandbMetricsConfig) -> dict[str, float]:
    """The W&B keys and values for one core record, as ``config`` selects them.

    Unknown keys are left out: W&B shows exactly the metrics this logger documents.
    """
    values = record.values
    out: dict[str, float] = {}

    def take(*keys: str) -> None:
        for key in keys:
            if key in values:
                out[key] = float(values[key])

    if record.phase == "train":
        if config.enable_train_loss_vs_tokens and "train_loss" in values:
            take("train_loss")
            out[TOKENS_KEY] = record.tokens_seen
        if config.enable_perplexity:
            take("train_perplexity")
        if config.enable_step_time:
            take("step_time_ms")
        if config.enable_peak_memory:
            take("peak_memory_gib")
        # global_grad_norm also rides on train records; W&B logs it from diagnostics records,
        # at the diagnostics cadence and only when enabled.
        take("learning_rate", "tokens_per_second", "mfu")
    elif record.phase == "diagnostics":
        # The core already kept only the diagnostics this logger enabled, on their cadence.
        out.update({key: float(value) for key, value in values.items()})
    elif record.phase == "validation":
        if config.enable_val_loss_vs_tokens and "val_loss" in values:
            take("val_loss")
            out[TOKENS_KEY] = record.tokens_seen
        if config.enable_perplexity:
            take("val_perplexity")
        take("val_bpb")
    elif record.phase == "epoch":
        # The validation keys of the summary were logged by the validation record before it.
        take("train_loss_epoch")
        if config.enable_perplexity:
            take("train_perplexity_epoch")
        out["epoch"] = record.epoch
    return out


class WandbLogger:
    """Factory of :class:`WandbSession` objects (registered as logger ``wandb``)."""

    def __init__(self, config: WandbMetricsConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> WandbSession:
        """Create (or, when ``run`` resumes, continue) the W&B run."""
        import wandb

        config = self.config
        id_file = run.run_dir / RUN_ID_FILENAME
        run_id: str | None = None
        if run.start_step > 0 and id_file.is_file():
            run_id = id_file.read_text(encoding="utf-8").strip() or None
        try:
            if _online_without_credentials(wandb, config):
                raise ConfigError(NO_API_KEY_MESSAGE, key_path=f"{KEY_PATH}.mode")
            wandb_run = wandb.init(
                project=config.project or run.project_name,
                entity=config.entity,
                name=config.run_name or run.run_name,
                notes=config.notes,
                group=config.group,
                tags=list(config.tags),
                mode=config.mode,
                dir=str(wandb_dir(run)),
                config=dict(run.config),
                id=run_id,
                resume="allow" if run_id else None,
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=config.init_timeout_s),
            )
        except BaselineError:
            raise
        except Exception as error:
            raise _start_error(error) from None
        try:
            if not wandb_run.disabled:
                atomic_write_text(id_file, wandb_run.id + "\n")
            return WandbSession(wandb_run, run, config)
        except BaseException as error:
            wandb_run.finish(exit_code=1)
            if isinstance(error, Exception) and not isinstance(error, BaselineError):
                raise PluginError(
                    f"{KEY_PATH}: W&B run could not be set up: {_first_line(error)}"
                ) from None
            raise


class WandbSession:
    """Logs core records to one W&B run, the optimizer step as W&B's step."""

    def __init__(self, wandb_run: Run, run: RunInfo, config: WandbMetricsConfig) -> None:
        self.wandb_run = wandb_run
        self.config = config
        self.finished = False
        # The loss curves use tokens seen as their x-axis; everything else the step.
        if config.enable_train_loss_vs_tokens or config.enable_val_loss_vs_tokens:
            wandb_run.define_metric(TOKENS_KEY)
        if config.enable_train_loss_vs_tokens:
            wandb_run.define_metric("train_loss", step_metric=TOKENS_KEY)
        if config.enable_val_loss_vs_tokens:
            wandb_run.define_metric("val_loss", step_metric=TOKENS_KEY)
        if config.watch_model and run.model is not None:
            # log_freq counts backward passes (micro-batches), W&B's unit.
            wandb_run.watch(run.model, log="all", log_freq=config.diagnostics_every_n_steps)

    @property
    def run_id(self) -> str:
        """The W&B run id."""
        return str(self.wandb_run.id)

    def log(self, record: MetricRecord) -> None:
        """Log ``record`` at its optimizer step (records of one step share one W&B row)."""
        values = wandb_values(record, self.config)
        if values:
            self.wandb_run.log(values, step=record.step)

    def finish(self, exit_code: int) -> None:
        """Finish the W&B run; a non-zero ``exit_code`` marks it failed."""
        if self.finished:
            return
        self.finished = True
        try:
            self.wandb_run.finish(exit_code=exit_code)
        except Exception as error:
            if exit_code:  # the run already fails; do not hide its error behind this one
                log.warning("W&B run did not finish cleanly: %s", _first_line(error))
                return
            raise PluginError(f"{KEY_PATH}: W&B run did not finish: {_first_line(error)}") from None


def _online_without_credentials(wandb: Any, config: WandbMetricsConfig) -> bool:
    """Whether the run would be online with no credentials (W&B would prompt or fail).

    Checked before ``wandb.init`` so that a terminal never shows W&B's login prompt in the
    middle of a run. Returns ``False`` when it cannot tell; ``wandb.init`` then decides.
    """
    try:
        from wandb.sdk.lib import wbauth

        settings = wandb.setup().settings
        mode = config.mode or settings.mode
        if mode not in ("online", "run", "shared"):
            return False
        found = wbauth.authenticate_session(
            host=settings.base_url, source="baseline", prompt=False, update_session=False
        )
    except (ImportError, AttributeError, TypeError):  # another wandb version: let init decide
        return False
    return found is None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def _start_error(error: Exception) -> BaselineError:
    message = _first_line(error)
    if "no api key" in str(error).lower():
        return ConfigError(NO_API_KEY_MESSAGE, key_path=f"{KEY_PATH}.mode")
    hint = ""
    if type(error).__name__ == "CommError":
        hint = f'; set {KEY_PATH}.mode = "offline" to log locally and `wandb sync` later'
    return PluginError(f"{KEY_PATH}: W&B could not start the run: {message}{hint}")
