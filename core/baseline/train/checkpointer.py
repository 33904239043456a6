"""Checkpoints of a training run: save (single file or sharded DCP), rotate, resume, and the
final weights.

:class:`TrainingState` is every counter a resumed run needs besides the model, optimizer and
RNG; :class:`CheckpointManager` writes and reads it beside them.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from baseline.config import ExperimentConfig
from baseline.config.diff import differing_keys, field_defaults
from baseline.distributed.agreement import parameter_digest
from baseline.distributed.context import DistributedContext
from baseline.distributed.wrapping import full_model_state_dict
from baseline.errors import ConfigError, TrainingError
from baseline.runs.artifacts import atomic_write_json, atomic_write_with
from baseline.runs.checkpoint import (
    arrays_to_tensors,
    capture_rng_state,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
    tensors_to_arrays,
)
from baseline.runs.layout import RunDirectory
from baseline.runs.sharded_checkpoint import (
    find_sharded_checkpoint,
    load_sharded_checkpoint,
    save_sharded_checkpoint,
)
from baseline.train.loss_windows import empty_pending, mean_pending, pending_by_cadence, plain
from baseline.train.signals import aborting

log = logging.getLogger("baseline")

#: Config sections and keys that must not change when a run is resumed (the data order and the
#: model depend on them).
RESUME_LOCKED = (
    *("dataset", "tokenizer", "model", "split", "run.seed"),
    *(f"train.{key}" for key in ("seq_len", "stride", "batch_size", "data_fraction", "optimizer")),
)


@attrs.define
class TrainingState:
    """Where training stands: what a checkpoint holds besides tensors and RNG states."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    tokens_seen: int = 0
    train_time_s: float = 0.0
    best_val_loss: float = math.inf
    #: Loss sums and step counts since the last train record of each cadence and since the
    #: epoch started (see :class:`baseline.train.loss_windows.LossWindows`).
    pending: dict[str, Any] = attrs.field(factory=empty_pending)
    #: A mixture's windows drawn from each source after ``step`` (its sources' positions; a
    #: checkpoint without them replays the schedule from the step). ``None`` for one dataset.
    mixture_drawn: list[int] | None = None


def locked_differences(
    config: ExperimentConfig, saved: Mapping[str, Any], current: Mapping[str, Any]
) -> list[str]:
    """Key paths that differ between a checkpoint's config and this run's and make resuming
    unsafe (a key the checkpoint lacks matches its default)."""
    defaults: dict[str, Any] = {}
    for section in ("dataset", "tokenizer", "model", "split", "train", "run"):
        defaults.update(field_defaults(getattr(config, section, None), section))
    return differing_keys(saved, current, defaults=defaults, only=RESUME_LOCKED)


class CheckpointManager:
    """Saves and restores one run's model, optimizer, RNG states and :class:`TrainingState`.

    Under FSDP (``sharded``) every rank writes its shards of a DCP directory; otherwise rank 0
    writes one file. The last ``run.keep_last_checkpoints`` are kept.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        config_data: Mapping[str, Any],
        run_dir: Path,
        dist: DistributedContext,
        *,
        sharded: bool,
        tokenizer_fingerprint: str | None,
    ) -> None:
        self.config = config
        self.config_data = config_data
        self.run_dir = run_dir
        self.dist = dist
        self.sharded = sharded
        self.tokenizer_fingerprint = tokenizer_fingerprint
        #: The run directory's files (:mod:`baseline.runs.layout`).
        self.layout = RunDirectory.of(run_dir, config.run, sharded=sharded)
        self.paths = self.layout.checkpoint_paths(sharded)
        #: The newest checkpoint's path.
        self.path = self.paths[0]

    # -- resume ------------------------------------------------------------------------------

    def resume(self, model: torch.nn.Module, optimizer: Any) -> TrainingState | None:
        """Load the newest checkpoint into ``model`` and ``optimizer`` and restore this rank's
        RNG; ``None`` when the run has none yet."""
        found = self._find()
        if found is None:
            log.info("no checkpoint in %s yet: starting from the beginning", self.run_dir)
            return None
        path, saved = found
        self._check_resumable(path, saved)
        if self.sharded:
            # DCP reshards to this job's process count; the data order keeps the global
            # batches (see TrainWindows), so any process count that divides them resumes.
            load_sharded_checkpoint(path, model, optimizer)
        else:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
        # Under another process count (FSDP only), rank r continues rank r mod N's stream.
        note = restore_rng_state(saved["rng"][self.dist.rank % len(saved["rng"])])
        if note and self.dist.is_main:
            log.warning("%s: %s", path, note)
        state = TrainingState(
            step=saved["step"],
            epoch=saved["epoch"],
            step_in_epoch=saved["step_in_epoch"],
            tokens_seen=saved["tokens_seen"],
            train_time_s=saved["train_time_s"],
            best_val_loss=saved["best_val_loss"],
            pending=self._pending(saved),
            mixture_drawn=saved.get("mixture_drawn"),
        )
        log.info("resumed from %s at step %d (epoch %d)", path, state.step, state.epoch + 1)
        return state

    def _pending(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        """This rank's loss sums: its own under the same process count, the mean of the
        saved ranks' under another (checkpoints of earlier versions hold rank 0's only)."""
        cadence = self.config.logging.log_every_n_steps
        ranked = [
            pending_by_cadence(p, cadence)
            for p in saved.get("rank_pending_losses") or [saved["pending_losses"]]
        ]
        if len(ranked) == self.dist.world_size:
            return ranked[self.dist.rank]
        return mean_pending(ranked)

    def _check_resumable(self, path: Path, saved: Mapping[str, Any]) -> None:
        differing = locked_differences(self.config, saved["config"], self.config_data)
        if differing:
            raise ConfigError(
                f"cannot resume {path}: these keys differ from the checkpoint's "
                f"config: {', '.join(differing)}; restore them or start a new run",
                key_path="run.resume_from_checkpoint",
            )
        saved_tokenizer = saved.get("tokenizer_fingerprint")
        if (
            saved_tokenizer
            and self.tokenizer_fingerprint
            and saved_tokenizer != self.tokenizer_fingerprint
        ):
            raise ConfigError(
                f"cannot resume {path}: the tokenizer file changed since the checkpoint was "
                "saved; restore it or start a new run",
                key_path="tokenizer.vocab_path",
            )
        saved_world = saved.get("world_size", 1)
        if saved_world != self.dist.world_size and not self.sharded:
            raise ConfigError(
                f"cannot resume {path}: it was saved by {saved_world} process(es) and this run "
                f"has {self.dist.world_size}; the data order depends on the process count. "
                f"Resume with {saved_world} process(es) or start a new run",
                key_path="run.resume_from_checkpoint",
            )

    def _find(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest usable checkpoint of this run's kind; one of the other kind (a DDP file
        for an FSDP run or the reverse) is a configuration error, not a fresh start."""
        if self.sharded:
            found = find_sharded_checkpoint(self.paths)
            saved_with, other = "ddp", self.layout.checkpoint_paths(False)[0]
        else:
            found = load_latest_checkpoint(self.paths)
            saved_with, other = "fsdp", self.layout.checkpoint_paths(True)[0]
        if found is None and other.exists():
            raise ConfigError(
                f'cannot resume {other}: it was saved with train.parallelism = "{saved_with}" '
                f'and this run uses "{self.config.train.parallelism}"; set '
                f'train.parallelism = "{saved_with}" or start a new run',
                key_path="train.parallelism",
            )
        return found

    # -- save --------------------------------------------------------------------------------

    def save(self, model: torch.nn.Module, optimizer: Any, state: TrainingState) -> None:
        """Save everything needed to continue from ``state`` (every rank calls)."""
        # Each rank's RNG and loss sums (a rank's losses are of its shard of the batch).
        gathered = self.dist.all_gather(
            {"rng": tensors_to_arrays(capture_rng_state()), "pending": plain(state.pending)}
        )
        content = self._content(
            state,
            [arrays_to_tensors(ranked["rng"]) for ranked in gathered],
            [ranked["pending"] for ranked in gathered],
        )
        if self.sharded:
            with writing("checkpoint", self.path):
                save_sharded_checkpoint(
                    self.paths, model, optimizer, content, self.dist, step=state.step
                )
            return
        if not self.dist.is_main:
            return
        with writing("checkpoint", self.path):
            save_checkpoint(
                self.paths,
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **content},
            )

    def _content(
        self, state: TrainingState, rng_states: list[Any], rank_pending: list[Any]
    ) -> dict[str, Any]:
        """A checkpoint's content besides the model and optimizer tensors."""
        return {
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "parallelism": self.config.train.parallelism,
            "step": state.step,
            "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch,
            "tokens_seen": state.tokens_seen,
            "train_time_s": state.train_time_s,
            "best_val_loss": state.best_val_loss,
            "pending_losses": plain(state.pending),
            "rank_pending_losses": rank_pending,
            "rng": rng_states,
            "world_size": self.dist.world_size,
            "config": dict(self.config_data),
            **({} if state.mixture_drawn is None else {"mixture_drawn": state.mixture_drawn}),
        }

    def last_good(self) -> str:
        """Where the last good weights are, for an error that stops training."""
        if self.path.exists():
            return f"the last checkpoint ({self.path.name}) holds the last good weights"
        return "no checkpoint had been saved yet"

    # -- the final weights and the ranks record ----------------------------------------------

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The whole model's weights on CPU (under FSDP gathered to rank 0: every rank calls)."""
        if self.sharded:
            return full_model_state_dict(model)
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def save_final_model(self, model: torch.nn.Module) -> None:
        """Write the trained weights (a plain state dict, also under FSDP) as the final model."""
        if not self.dist.is_main and not self.sharded:
            return
        state = self.full_state_dict(model)
        if not self.dist.is_main:
            return
        path = self.layout.final_model
        with writing("final model", path):
            atomic_write_with(path, lambda handle: torch.save(state, handle))

    def record_ranks(self, model: torch.nn.Module) -> None:
        """The ranks record: each rank's parameter digest, which must agree under DDP; under FSDP
        (each rank holds its own shards) the digest of the gathered model."""
        if not self.dist.enabled:
            return
        record: dict[str, Any] = {"world_size": self.dist.world_size, "backend": self.dist.backend}
        if self.sharded:
            state = self.full_state_dict(model)
            record.update(parallelism="fsdp", parameter_digest=parameter_digest(state))
        else:
            digests = self.dist.all_gather(parameter_digest(model.state_dict()))
            if len(set(digests)) != 1:
                raise TrainingError(f"ranks ended with different parameters: {digests}")
            record["parameter_digests"] = digests
        if self.dist.is_main:
            atomic_write_json(self.layout.ranks, record)


@contextlib.contextmanager
def writing(what: str, path: Path) -> Iterator[None]:
    """Turn a failed write (full disk, file size limit) into a one-line training error."""
    try:
        yield
    except (OSError, RuntimeError) as error:  # torch.save reports failed writes as RuntimeError
        if aborting():  # a second Ctrl-C inside torch.save's writer, not a full disk
            raise KeyboardInterrupt from None
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise TrainingError(
            f"cannot write the {what} {path} ({reason}); the previous files are intact. "
            "Free disk space, then continue with --resume"
        ) from None
