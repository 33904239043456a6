"""The training loop: AdamW steps over shuffled windows, validation, checkpoints."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from baseline.config import ExperimentConfig
from baseline.data.prepared import PreparedData
from baseline.data.token_cache import adapter_fingerprint
from baseline.data.windows import EvalWindows, TrainWindows, window_loss_sum
from baseline.distributed.context import DistributedContext, check_divisible
from baseline.distributed.wrapping import (
    full_model_state_dict,
    full_tensor,
    gradient_sync,
    shard_model,
    unsharded,
)
from baseline.errors import ConfigError, RunInterrupted, TrainingError
from baseline.metrics.diagnostics import LayerDiagnostics
from baseline.metrics.router import MetricsPlan, MetricsRouter
from baseline.plugins.output_checks import check_logits, component_label
from baseline.plugins.protocols import MetricRecord, TokenizerAdapter
from baseline.runs.artifacts import atomic_write_with
from baseline.runs.checkpoint import (
    arrays_to_tensors,
    capture_rng_state,
    checkpoint_paths,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
    tensors_to_arrays,
)
from baseline.runs.sharded_checkpoint import (
    dcp_checkpoint_paths,
    find_sharded_checkpoint,
    load_sharded_checkpoint,
    save_sharded_checkpoint,
)
from baseline.train.optim import build_optimizer, learning_rate_factor
from baseline.train.signals import StopRequest, graceful_stop

log = logging.getLogger("baseline")

#: Config keys that must not change when a run is resumed (the data order and model depend on them).
RESUME_LOCKED_SECTIONS = ("dataset", "tokenizer", "model", "split")
RESUME_LOCKED_KEYS = {
    "train": ("seq_len", "stride", "batch_size", "data_fraction", "optimizer"),
    "run": ("seed",),
}


def select_device(requested: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit choice is an error."""
    cuda = torch.cuda.is_available()
    mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if requested == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (requested == "cuda" and not cuda) or (requested == "mps" and not mps):
        raise ConfigError(
            f'{requested} is not available on this machine; use "auto" or "cpu"',
            key_path="train.device",
        )
    return torch.device(requested)


#: Dense bf16 peak FLOP/s by CUDA device name fragment, for model FLOPs utilisation.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def peak_flops(device: torch.device) -> float | None:
    """The device's bf16 peak, when it is a known CUDA GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def config_defaults(config: ExperimentConfig) -> dict[str, Any]:
    """``section.key`` -> the default value of every config field that has a plain default."""
    defaults: dict[str, Any] = {}
    for section in (*RESUME_LOCKED_SECTIONS, *RESUME_LOCKED_KEYS):
        section_config = getattr(config, section, None)
        if section_config is None or not attrs.has(type(section_config)):
            continue
        for field in attrs.fields(type(section_config)):
            if field.default is not attrs.NOTHING and not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                defaults[f"{section}.{field.name}"] = field.default
    return defaults


def locked_differences(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """Key paths that differ between two config dicts and make resuming unsafe.

    A key the saved config lacks (written before the option existed) matches a current value
    equal to the option's default in ``defaults``: that is what the older run did.
    """
    old, new = flatten(saved), flatten(current)
    for key, value in (defaults or {}).items():
        if key not in old and new.get(key) == value:
            old[key] = value
    locked_prefixes = tuple(f"{section}." for section in RESUME_LOCKED_SECTIONS)
    locked_exact = {
        f"{section}.{key}" for section, keys in RESUME_LOCKED_KEYS.items() for key in keys
    }
    differing = []
    for key in sorted(set(old) | set(new)):
        if (key.startswith(locked_prefixes) or key in locked_exact) and old.get(key) != new.get(
            key
        ):
            differing.append(key)
    return differing


class Trainer:
    """Owns the model, optimizer and counters of one run.

    It depends on plain values only: the built (untrained) model, the fitted tokenizer (for
    samples and the resume check) and the prepared token ranges.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        model: torch.nn.Module,
        tokenizer: TokenizerAdapter,
        data: PreparedData,
        run_dir: Path,
        config_data: Mapping[str, Any],
        dist: DistributedContext | None = None,
        plan: MetricsPlan | None = None,
    ) -> None:
        train = config.train
        self.plan = plan or MetricsPlan({}, config.logging.log_every_n_steps)
        if train.num_threads:
            torch.set_num_threads(train.num_threads)
        self.dist = dist or DistributedContext()
        check_divisible(train.batch_size, self.dist.world_size)
        self.config = config
        self.train_config = train
        self.config_data = config_data
        self.run_dir = run_dir
        self.device = select_device(train.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.windows = TrainWindows(
            data.tokens,
            data.train_ranges,
            seq_len=train.seq_len,
            stride=train.effective_stride,
            batch_size=train.batch_size,
            data_fraction=train.data_fraction,
            seed=config.run.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.eval_windows = EvalWindows(
            data.tokens,
            data.validation_ranges,
            seq_len=train.seq_len,
            batch_size=train.effective_eval_batch_size,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.tokens_per_byte = data.tokens_per_byte
        self.end_of_segment_text = data.end_of_segment_text
        self.model = model.to(self.device)
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        self.train_model: torch.nn.Module = self.model
        self._ddp: DistributedDataParallel | None = None
        #: FSDP2 (``train.parallelism = "fsdp"``): parameters are DTensor shards, checkpoints
        #: are DCP directories, and every rank joins the diagnostics and samples (they gather).
        self.fsdp = train.parallelism == "fsdp"
        model_name = f"model {config_data.get('model', {}).get('name', '')!r}"
        if self.fsdp:
            self.model = shard_model(
                self.model,
                precision=train.precision,
                device=self.device,
                reshard_after_forward=train.fsdp_reshard_after_forward,
                model_name=model_name,
            )
            self.train_model = self.model
        elif self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.model, device_ids=device_ids)
            self.train_model = self._ddp
        if train.compile:
            # Only the training forward is compiled; state dicts come from the plain module.
            self.train_model = torch.compile(self.train_model)  # type: ignore[assignment]
        flops = getattr(self.model, "flops_per_token", None)
        self.flops_per_token = flops(train.seq_len) if callable(flops) else 6 * self.num_parameters
        self.peak_flops = peak_flops(self.device)
        self.layer_diagnostics = LayerDiagnostics(
            self.model,
            self.plan.diagnostics,
            model_name=model_name,
            autocast=self._autocast,
            gathered=(lambda: unsharded(self.model)) if self.fsdp else None,
        )
        self.optimizer = build_optimizer(self.model, train, tokenizer.vocab_size)
        self.accumulation = train.grad_accumulation_steps
        self.steps_per_epoch = self.windows.steps_per_epoch // self.accumulation
        self.tokens_per_step = train.batch_size * self.accumulation * train.seq_len
        self.total_steps = self._planned_steps()
        paths = dcp_checkpoint_paths if self.fsdp else checkpoint_paths
        self.checkpoint_paths = paths(
            run_dir, config.run.checkpoint_filename, config.run.keep_last_checkpoints
        )
        self.checkpoint_path = self.checkpoint_paths[0]
        self.tokenizer = tokenizer
        self.tokenizer_fingerprint = adapter_fingerprint(tokenizer)
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.tokens_seen = 0
        self.train_time_s = 0.0
        self.best_val_loss = math.inf
        #: Loss sums and step counts accumulated since the last train record of each cadence
        #: and since the epoch started.
        self.pending: dict[str, Any] = {
            "log": {},
            "epoch_sum": 0.0,
            "epoch_steps": 0,
        }
        self.resumed = False
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"one optimizer step needs {train.batch_size * self.accumulation} windows but "
                f"an epoch has {self.windows.num_windows}; lower train.grad_accumulation_steps",
                key_path="train.grad_accumulation_steps",
            )
        log.info(
            "model: %s parameters on %s; %s training windows, %d steps per epoch",
            f"{self.num_parameters:,}",
            self.device,
            f"{self.windows.num_windows:,}",
            self.steps_per_epoch,
        )
        if config.run.resume_from_checkpoint:
            self._resume()

    def _planned_steps(self) -> int | None:
        """Steps until the first step- or token-based limit; ``None`` if only time bounds it."""
        train = self.train_config
        limits = []
        epochs = train.effective_epochs
        if epochs is not None:
            limits.append(epochs * self.steps_per_epoch)
        if train.max_steps is not None:
            limits.append(train.max_steps)
        if train.max_tokens is not None:
            limits.append(math.ceil(train.max_tokens / self.tokens_per_step))
        return min(limits) if limits else None

    # -- checkpoints -----------------------------------------------------------------------

    def _resume(self) -> None:
        found = self._find_checkpoint()
        if found is None:
            log.info("no checkpoint in %s yet: starting from the beginning", self.run_dir)
            return
        path, state = found
        differing = locked_differences(
            state["config"], self.config_data, config_defaults(self.config)
        )
        if differing:
            raise ConfigError(
                f"cannot resume {path}: these keys differ from the checkpoint's "
                f"config: {', '.join(differing)}; restore them or start a new run",
                key_path="run.resume_from_checkpoint",
            )
        saved_tokenizer = state.get("tokenizer_fingerprint")
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
        saved_world = state.get("world_size", 1)
        if self.fsdp:
            # DCP reshards to this job's process count; the data order keeps the global
            # batches (see TrainWindows), so any process count that divides them resumes.
            load_sharded_checkpoint(path, self.model, self.optimizer)
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self.tokens_seen = state["tokens_seen"]
        self.train_time_s = state["train_time_s"]
        self.best_val_loss = state["best_val_loss"]
        self.pending = _pending_by_cadence(
            state["pending_losses"], self.config.logging.log_every_n_steps
        )
        if saved_world != self.dist.world_size and not self.fsdp:
            raise ConfigError(
                f"cannot resume {path}: it was saved by {saved_world} process(es) and this run "
                f"has {self.dist.world_size}; the data order depends on the process count. "
                f"Resume with {saved_world} process(es) or start a new run",
                key_path="run.resume_from_checkpoint",
            )
        # Under another process count (FSDP only), rank r continues rank r mod N's stream.
        restore_rng_state(state["rng"][self.dist.rank % len(state["rng"])])
        self.resumed = True
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch + 1)

    def _find_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest usable checkpoint of this run's kind; one of the other kind (a DDP file
        for an FSDP run or the reverse) is a configuration error, not a fresh start."""
        if self.fsdp:
            found = find_sharded_checkpoint(self.checkpoint_paths)
            other_paths = checkpoint_paths(self.run_dir, self.config.run.checkpoint_filename, 1)
            saved_with, other = "ddp", other_paths[0]
        else:
            found = load_latest_checkpoint(self.checkpoint_paths)
            other = dcp_checkpoint_paths(self.run_dir, self.config.run.checkpoint_filename, 1)[0]
            saved_with = "fsdp"
        if found is None and other.exists():
            raise ConfigError(
                f'cannot resume {other}: it was saved with train.parallelism = "{saved_with}" '
                f'and this run uses "{self.train_config.parallelism}"; set '
                f'train.parallelism = "{saved_with}" or start a new run',
                key_path="train.parallelism",
            )
        return found

    def save_checkpoint(self) -> None:
        """Save everything needed to continue from the current step (rank 0 writes; under
        FSDP every rank writes its shards)."""
        gathered = self.dist.all_gather(tensors_to_arrays(capture_rng_state()))
        rng_states = [arrays_to_tensors(state) for state in gathered]
        if self.fsdp:
            with _writing("checkpoint", self.checkpoint_path):
                save_sharded_checkpoint(
                    self.checkpoint_paths,
                    self.model,
                    self.optimizer,
                    self._trainer_state(rng_states),
                    self.dist,
                    step=self.step,
                )
            return
        if not self.dist.is_main:
            return
        with _writing("checkpoint", self.checkpoint_path):
            self._save_checkpoint(rng_states)

    def _save_checkpoint(self, rng_states: list[Any]) -> None:
        save_checkpoint(
            self.checkpoint_paths,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                **self._trainer_state(rng_states),
            },
        )

    def _trainer_state(self, rng_states: list[Any]) -> dict[str, Any]:
        """A checkpoint's content besides the model and optimizer tensors."""
        return {
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "parallelism": self.train_config.parallelism,
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "tokens_seen": self.tokens_seen,
            "train_time_s": self.train_time_s,
            "best_val_loss": self.best_val_loss,
            "pending_losses": _plain(self.pending),
            "rng": rng_states,
            "world_size": self.dist.world_size,
            "config": dict(self.config_data),
        }

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on CPU (under FSDP gathered to rank 0: every rank calls)."""
        if self.fsdp:
            return full_model_state_dict(self.model)
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def save_final_model(self) -> None:
        """Write the trained weights (a plain state dict, also under FSDP) as the final model
        (rank 0)."""
        if not self.dist.is_main and not self.fsdp:
            return
        state = self._full_state_dict()
        if not self.dist.is_main:
            return
        path = self.run_dir / self.config.run.final_model_filename
        with _writing("final model", path):
            atomic_write_with(path, lambda handle: torch.save(state, handle))

    # -- the loop ----------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        precision = self.train_config.precision
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    #: Whether the model's output was checked (on the first training forward).
    _logits_checked = False

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with self._autocast():
            logits = self.train_model(inputs)
        if not self._logits_checked:
            name = str(self.config_data.get("model", {}).get("name", "model"))
            expected = (*inputs.shape, self.tokenizer.vocab_size)
            check_logits(logits, expected, component_label("model", name))
            self._logits_checked = True
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))

    def progress(self, elapsed_s: float) -> float:
        """Fraction of training done: the furthest of steps and time against their limits."""
        fractions = [0.0]
        if self.total_steps:
            fractions.append(self.step / self.total_steps)
        if self.train_config.max_time_s:
            fractions.append(elapsed_s / self.train_config.max_time_s)
        return min(1.0, max(fractions))

    def _set_learning_rate(self, elapsed_s: float) -> float:
        lr = self.train_config.learning_rate * learning_rate_factor(
            self.step, self.progress(elapsed_s), self.train_config
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _steps(self) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """Yield ``(epoch, micro-batches)`` for each remaining optimizer step."""
        epochs = self.train_config.effective_epochs
        epoch_numbers = (
            range(self.epoch, epochs) if epochs is not None else itertools.count(self.epoch)
        )
        for epoch in epoch_numbers:
            start = self.step_in_epoch if epoch == self.epoch else 0
            micro_batches = self.windows.batches(epoch, start * self.accumulation)
            for _ in range(start, self.steps_per_epoch):
                yield epoch, [next(micro_batches) for _ in range(self.accumulation)]

    def _limit_reached(self, elapsed_s: float) -> bool:
        train = self.train_config
        return (self.total_steps is not None and self.step >= self.total_steps) or (
            train.max_time_s is not None and elapsed_s >= train.max_time_s
        )

    def train(self, router: MetricsRouter) -> dict[str, float]:
        """Run the remaining steps, handing metric records to ``router``; return the final
        metrics.

        SIGINT/SIGTERM stop training after the current step with a checkpoint saved
        (:class:`RunInterrupted`).
        """
        with graceful_stop() as stop_request:
            return self._train(router, stop_request)

    def _train(self, router: MetricsRouter, stop_request: StopRequest) -> dict[str, float]:
        checkpoint_every = self.config.run.checkpoint_every_n_steps
        clip = self.train_config.grad_clip_norm
        final: dict[str, float] = {}
        # Loss sums not yet logged are part of the checkpointed state, so that a resumed run
        # logs exactly the means an uninterrupted one would.
        windows = {
            cadence: _LossWindow.restore(
                self.pending["log"].get(cadence), self.device, self.tokens_seen
            )
            for cadence in self.plan.train_cadences
        }
        epoch_loss_sum = torch.tensor(self.pending["epoch_sum"], device=self.device)
        epoch_steps = int(self.pending["epoch_steps"])
        clock_start = time.perf_counter() - self.train_time_s
        self.model.train()
        lr = self._set_learning_rate(self.train_time_s)
        if self._limit_reached(self.train_time_s):
            return final
        for epoch, micro_batches in self._steps():
            self.epoch = epoch
            lr = self._set_learning_rate(time.perf_counter() - clock_start)
            # Under DDP, diagnostics are measured on rank 0 only (gradients are identical on
            # all ranks); under FSDP every rank joins, as they gather sharded tensors.
            measures = self.dist.is_main or self.fsdp
            due = self.plan.diagnostics_due(self.step + 1) if measures else frozenset()
            self.optimizer.zero_grad(set_to_none=True)
            diagnostics = self._forward_diagnostics(due, micro_batches[0])
            step_loss = torch.zeros((), device=self.device)
            for index, batch in enumerate(micro_batches):
                # DDP all-reduces gradients on the last micro-batch of the step only.
                last = index == len(micro_batches) - 1
                with self._gradient_sync(last):
                    loss = self._loss(batch) / self.accumulation
                    loss.backward()  # type: ignore[no-untyped-call]
                step_loss += loss.detach()
            if "ln_grad_norms" in due:
                diagnostics.update(self.layer_diagnostics.ln_grad_norms())
            # The global gradient norm (of DDP's synchronized gradients), clipped when asked.
            grad_norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), clip if clip else math.inf
            )
            grad_norm = full_tensor(grad_norm)  # a DTensor under FSDP
            if "global_grad_norm" in due:
                diagnostics["global_grad_norm"] = float(grad_norm)
            self.optimizer.step()
            self.step += 1
            self.step_in_epoch += 1
            self.tokens_seen += self.tokens_per_step
            for window in windows.values():
                window.add(step_loss)
            epoch_loss_sum += step_loss
            epoch_steps += 1
            self.train_time_s = time.perf_counter() - clock_start
            stop = self._agree(self._limit_reached(self.train_time_s))
            epoch_done = self.step_in_epoch == self.steps_per_epoch

            for cadence, window in windows.items():
                if self.step % cadence == 0 or stop or epoch_done:
                    values = self._train_values(window, lr, grad_norm)
                    record = MetricRecord(self.step, self.tokens_seen, epoch + 1, "train", values)
                    router.train(record, cadence)
                    if cadence == self.plan.core_log_every_n_steps:
                        final.update(values)
            if diagnostics:
                record = MetricRecord(
                    self.step, self.tokens_seen, epoch + 1, "diagnostics", diagnostics
                )
                router.diagnostics(record)

            validation_started = time.perf_counter()
            if epoch_done or stop:
                epoch_loss = self._mean_over_ranks(epoch_loss_sum) / max(epoch_steps, 1)
                self._check_finite(epoch_loss)
                metrics = self._validate(router, epoch, periodic=False)
                summary = {
                    "train_loss_epoch": epoch_loss,
                    "train_perplexity_epoch": _perplexity(epoch_loss),
                    **metrics,
                }
                router.epoch(MetricRecord(self.step, self.tokens_seen, epoch + 1, "epoch", summary))
                final.update(summary)
                if epoch_done:
                    self.epoch = epoch + 1
                    self.step_in_epoch = 0
                    epoch_loss_sum.zero_()
                    epoch_steps = 0
            elif self.plan.validation_due(self.step):
                self._validate(router, epoch, periodic=True)
            if epoch_done or stop or self.plan.validation_due(self.step):
                validation_s = time.perf_counter() - validation_started
                for window in windows.values():  # validation time is not training throughput
                    window.pause(validation_s)

            self.pending = {
                "log": {cadence: window.pending() for cadence, window in windows.items()},
                "epoch_sum": epoch_loss_sum,
                "epoch_steps": epoch_steps,
            }
            if stop:
                break
            # Agreed after logging, so a signal that arrives while this step is logged stops
            # the run at this step, on every rank.
            if self._agree(stop_request.signum is not None):
                self._check_finite(step_loss.item())
                self.save_checkpoint()
                name = stop_request.name or "SIGTERM"
                raise RunInterrupted(
                    f"stopped by {name} at step {self.step}; checkpoint saved to "
                    f"{self.checkpoint_path}; continue with --resume",
                    stop_request.exit_code if stop_request.signum else 143,
                )
            if checkpoint_every and self.step % checkpoint_every == 0:
                self._check_finite(step_loss.item())
                self.save_checkpoint()
        self.save_checkpoint()
        self._check_ranks_in_sync()
        return final

    def _forward_diagnostics(self, due: frozenset[str], batch: torch.Tensor) -> dict[str, float]:
        """Activation norms and attention entropy of this step's first micro-batch, measured
        before the update (the weights this step's forward uses)."""
        values: dict[str, float] = {}
        if not due & {"activation_norms", "attention_entropy"}:
            return values
        inputs = batch[:, :-1].to(self.device, non_blocking=True)
        if "activation_norms" in due:
            values.update(self.layer_diagnostics.activation_norms(inputs))
        if "attention_entropy" in due:
            heads, tokens = self.plan.attention_entropy_caps
            values.update(self.layer_diagnostics.attention_entropy(inputs, heads, tokens))
        return values

    def _train_values(
        self, window: _LossWindow, lr: float, grad_norm: torch.Tensor
    ) -> dict[str, float]:
        """The train record of one cadence: means over the steps since its last record."""
        mean_loss = self._mean_over_ranks(window.loss_sum) / window.steps
        self._check_finite(mean_loss)
        now = time.perf_counter()
        elapsed = max(now - window.clock, 1e-9)
        rate = (self.tokens_seen - window.tokens) / elapsed
        values = {
            "train_loss": mean_loss,
            "train_perplexity": _perplexity(mean_loss),
            "tokens_per_second": rate,
            "step_time_ms": 1000.0 * elapsed / max(window.timed_steps, 1),
            "learning_rate": lr,
            "global_grad_norm": float(grad_norm),
        }
        if self.device.type == "cuda":
            values["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.peak_flops:
            values["mfu"] = rate * self.flops_per_token / self.peak_flops
        window.reset(now, self.tokens_seen)
        return values

    def _validate(self, router: MetricsRouter, epoch: int, *, periodic: bool) -> dict[str, float]:
        """Evaluate, hand the results to the router and write the validation samples."""
        metrics = self.evaluate()
        self.best_val_loss = min(self.best_val_loss, metrics["val_loss"])
        record = MetricRecord(self.step, self.tokens_seen, epoch + 1, "validation", metrics)
        router.validation(record, periodic=periodic)
        if self.dist.is_main or self.fsdp:  # under FSDP every rank joins the forward passes
            self._write_samples()
        return metrics

    def _gradient_sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP's ``no_sync()`` (FSDP's counterpart) for micro-batches that only accumulate
        gradients."""
        if self.fsdp:
            return gradient_sync(self.model, sync)
        if sync or not self.dist.enabled:
            return contextlib.nullcontext()
        assert self._ddp is not None
        return self._ddp.no_sync()

    def _agree(self, flag: bool) -> bool:
        """``flag`` on any rank is ``True`` on all: ranks stop at the same step."""
        if not self.dist.enabled:
            return flag
        import torch.distributed as dist

        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _mean_over_ranks(self, value: torch.Tensor) -> float:
        """``value`` averaged over ranks (each rank's loss covers its shard of the batch)."""
        if not self.dist.enabled:
            return float(value.item())
        import torch.distributed as dist

        reduced = value.detach().clone()
        dist.all_reduce(reduced)
        return float(reduced.item()) / self.dist.world_size

    def parameter_digest(self) -> str:
        """A hash of every parameter's bytes: equal on all ranks when DDP kept them in sync."""
        digest = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _check_ranks_in_sync(self) -> None:
        if not self.dist.enabled:
            return
        if self.fsdp:
            self._record_sharded_ranks()
            return
        digests = self.dist.all_gather(self.parameter_digest())
        if len(set(digests)) != 1:
            raise TrainingError(f"ranks ended with different parameters: {digests}")
        if self.dist.is_main:
            from baseline.runs.artifacts import atomic_write_json

            atomic_write_json(
                self.run_dir / "ranks.json",
                {
                    "world_size": self.dist.world_size,
                    "backend": self.dist.backend,
                    "parameter_digests": digests,
                },
            )

    def _record_sharded_ranks(self) -> None:
        """``ranks.json`` of an FSDP run: each rank holds its own shards, so there is nothing
        to compare; the digest is that of the gathered model (the final model's weights)."""
        state = self._full_state_dict()
        if self.dist.is_main:
            from baseline.runs.artifacts import atomic_write_json

            digest = hashlib.sha256()
            for name, tensor in state.items():
                digest.update(name.encode())
                digest.update(tensor.contiguous().numpy().tobytes())
            atomic_write_json(
                self.run_dir / "ranks.json",
                {
                    "world_size": self.dist.world_size,
                    "backend": self.dist.backend,
                    "parallelism": "fsdp",
                    "parameter_digest": digest.hexdigest(),
                },
            )

    def _write_samples(self) -> None:
        """Generate ``logging.samples_per_validation`` texts; log them and keep them on disk."""
        count = self.config.logging.samples_per_validation
        if not count:
            return
        from baseline.tools.generation import SamplingOptions, generate
        from baseline.tools.inference import LoadedRun

        was_training = self.model.training
        self.model.eval()
        run = LoadedRun(
            self.model,
            self.tokenizer,
            self.train_config.seq_len,
            self.tokenizer.end_of_segment_id,
            {},
            self.end_of_segment_text,
        )
        # A private generator seeded by step: sampling never disturbs the training RNG.
        options = SamplingOptions(
            max_new_tokens=self.config.logging.sample_tokens,
            temperature=0.8,
            top_k=50,
            seed=self.config.run.seed * 1_000_003 + self.step,
            num_samples=count,
        )
        texts = generate(run, "", options)
        self.model.train(was_training)
        if not self.dist.is_main:
            return
        with (self.run_dir / "samples.jsonl").open("a", encoding="utf-8") as handle:
            for text in texts:
                handle.write(json.dumps({"step": self.step, "text": text}) + "\n")
                log.info("sample at step %d: %s", self.step, text.replace("\n", " / ")[:200])

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            kept = (
                f"the last checkpoint ({self.checkpoint_path.name}) holds the last good weights"
                if self.checkpoint_path.exists()
                else "no checkpoint had been saved yet"
            )
            raise TrainingError(
                f"training loss became {loss} at step {self.step}; {kept}. Lower "
                "train.learning_rate or set train.grad_clip_norm"
            )

    def _match_forward_passes(self, done: int) -> None:
        """Under FSDP every forward pass gathers parameters with all ranks: a rank with fewer
        validation batches than another runs as many throwaway passes as it lacks."""
        most = max(self.dist.all_gather(done))
        dummy = torch.zeros((1, self.train_config.seq_len), dtype=torch.long, device=self.device)
        for _ in range(most - done):
            with self._autocast():
                self.model(dummy)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (nats per token), perplexity and bits per byte."""
        was_training = self.model.training
        self.model.eval()
        total, count = window_loss_sum(self.model, self.eval_windows, self.device, self._autocast)
        if self.fsdp:
            self._match_forward_passes(self.eval_windows.num_batches)
        self.model.train(was_training)
        if self.dist.enabled:
            import torch.distributed as dist

            sums = torch.stack(
                [total, torch.tensor(float(count), dtype=torch.float64, device=self.device)]
            )
            dist.all_reduce(sums)
            total, count = sums[0], int(sums[1].item())
        loss = total.item() / max(count, 1)
        return {
            "val_loss": loss,
            "val_perplexity": _perplexity(loss),
            "val_bpb": loss / math.log(2) * self.tokens_per_byte,
        }


@contextlib.contextmanager
def _writing(what: str, path: Path) -> Iterator[None]:
    """Turn a failed write (full disk, file size limit) into a one-line training error."""
    try:
        yield
    except (OSError, RuntimeError) as error:  # torch.save reports failed writes as RuntimeError
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise TrainingError(
            f"cannot write the {what} {path} ({reason}); the previous files are intact. "
            "Free disk space, then continue with --resume"
        ) from None


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


class _LossWindow:
    """Loss sum, step count, clock and token count since one cadence's last train record."""

    def __init__(self, loss_sum: torch.Tensor, steps: int, tokens: int) -> None:
        self.loss_sum = loss_sum
        self.steps = steps
        #: Steps and tokens since the clock started (after a resume, fewer than ``steps``).
        self.timed_steps = 0
        self.tokens = tokens
        self.clock = time.perf_counter()

    @classmethod
    def restore(
        cls, saved: Mapping[str, Any] | None, device: torch.device, tokens: int
    ) -> _LossWindow:
        """A window from its checkpointed sums (empty when the cadence is new)."""
        saved = saved or {"sum": 0.0, "steps": 0}
        return cls(torch.tensor(float(saved["sum"]), device=device), int(saved["steps"]), tokens)

    def add(self, step_loss: torch.Tensor) -> None:
        """Count one optimizer step."""
        self.loss_sum += step_loss
        self.steps += 1
        self.timed_steps += 1

    def reset(self, now: float, tokens: int) -> None:
        """Start the next window after a record."""
        self.loss_sum.zero_()
        self.steps = self.timed_steps = 0
        self.clock, self.tokens = now, tokens

    def pause(self, seconds: float) -> None:
        """Leave ``seconds`` (spent validating) out of this window's throughput."""
        self.clock += seconds

    def pending(self) -> dict[str, Any]:
        """What a checkpoint keeps of this window."""
        return {"sum": self.loss_sum, "steps": self.steps}


def _pending_by_cadence(saved: Mapping[str, Any], core_cadence: int) -> dict[str, Any]:
    """Checkpointed loss sums, converting the single-cadence layout of earlier versions."""
    if "log" in saved:
        return {**saved, "log": {int(c): window for c, window in saved["log"].items()}}
    return {
        "log": {core_cadence: {"sum": saved["log_sum"], "steps": saved["log_steps"]}},
        "epoch_sum": saved["epoch_sum"],
        "epoch_steps": saved["epoch_steps"],
    }


def _plain(value: Any) -> Any:
    """Tensors to floats, recursively (checkpoints hold plain numbers)."""
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value
