"""The training loop: optimizer steps over shuffled windows, records for the loggers,
validation and checkpoints at their points.

``Trainer`` only orchestrates: checkpoints (:mod:`~baseline.train.checkpointer`), validation
(:mod:`~baseline.train.validator`), the loss windows behind each record
(:mod:`~baseline.train.loss_windows`), rank agreement
(:mod:`~baseline.distributed.agreement`) and the device (:mod:`~baseline.train.device`)
are each a class or module of their own.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F

from baseline.config import ExperimentConfig
from baseline.data.mixture import MixtureProgress
from baseline.data.prepared import PreparedData
from baseline.data.token_cache import adapter_fingerprint
from baseline.distributed.agreement import RankAgreement
from baseline.distributed.context import (
    DistributedContext,
    check_divisible,
    on_every_rank,
    raised_on_every_rank,
)
from baseline.distributed.wrapping import (
    accumulation_sync,
    full_tensor,
    unsharded,
    wrap_for_training,
)
from baseline.errors import ConfigError, RunInterrupted, TrainingError
from baseline.metrics.diagnostics import LayerDiagnostics
from baseline.metrics.router import MetricsPlan, MetricsRouter
from baseline.plugins.calls import plugin_call
from baseline.plugins.output_checks import check_logits, component_label
from baseline.plugins.protocols import MetricRecord, TokenizerAdapter
from baseline.runs.layout import RunDirectory
from baseline.train.budget import TrainingBudget
from baseline.train.checkpointer import CheckpointManager, TrainingState
from baseline.train.device import autocast, peak_flops, select_device
from baseline.train.loss_windows import LossWindow, LossWindows, perplexity
from baseline.train.optim import build_optimizer
from baseline.train.precision import PrecisionPlan
from baseline.train.signals import StopRequest, graceful_stop
from baseline.train.validator import Sampler, Validator

log = logging.getLogger("baseline")

Phase = Literal["train", "diagnostics", "validation", "epoch"]


class Trainer:
    """Owns the model, optimizer and counters of one run.

    It depends on plain values only: the built (untrained) model, the fitted tokenizer (for
    the resume check), the prepared token ranges and, for samples at validation, a
    ``sampler`` the caller builds.
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
        sampler: Sampler | None = None,
        *,
        model_label: str | None = None,
    ) -> None:
        train = self.train_config = config.train
        self.config, self.config_data, self.run_dir = config, config_data, run_dir
        self.plan = plan or MetricsPlan({}, config.logging.log_every_n_steps)
        if train.num_threads:
            torch.set_num_threads(train.num_threads)
        self.dist = dist or DistributedContext()
        check_divisible(train.batch_size, self.dist.world_size)
        self.device = select_device(
            train.device, self.dist.local_rank if self.dist.enabled else None
        )
        self.windows, eval_windows = data.windows(
            train, seed=config.run.seed, rank=self.dist.rank, world_size=self.dist.world_size
        )
        self.tokenizer = tokenizer
        #: ``model 'x' from <distribution>``, for errors about the model's output.
        self.model_label = model_label or component_label(
            "model", str(config_data.get("model", {}).get("name", "model"))
        )
        self.agreement = RankAgreement(self.dist, self.device)
        self.precision = PrecisionPlan.decide(
            train.precision,
            train.optimizer_precision,
            self.device,
            on_every_rank=lambda native: not self.agreement.any(not native),
        )
        self.model = model.to(self.device)
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        self.fsdp = train.parallelism == "fsdp"
        self.model, self.train_model, self._ddp = wrap_for_training(
            self.model,
            parallelism=train.parallelism,
            distributed=self.dist.enabled,
            precision=self.precision.autocast,
            device=self.device,
            reshard_after_forward=train.fsdp_reshard_after_forward,
            compile_model=train.compile,
            model_name=self.model_label,
        )
        flops = getattr(self.model, "flops_per_token", None)
        self.flops_per_token = flops(train.seq_len) if callable(flops) else 6 * self.num_parameters
        self.peak_flops = peak_flops(self.device)
        self.layer_diagnostics = LayerDiagnostics(
            self.model,
            self.plan.diagnostics,
            model_name=self.model_label,
            autocast=self._autocast,
            gathered=(lambda: unsharded(self.model)) if self.fsdp else None,
        )
        self.optimizer = build_optimizer(
            self.model, train, tokenizer.vocab_size, precision=self.precision
        )
        self.accumulation = train.grad_accumulation_steps
        self.steps_per_epoch = self.windows.steps_per_epoch // self.accumulation
        self.tokens_per_step = train.batch_size * self.accumulation * train.seq_len
        epoch_limit = getattr(self.windows, "epoch_limit", None)  # a mixture's "stop"
        self.epochs = epoch_limit(train.effective_epochs) if epoch_limit else train.effective_epochs
        budget_train = (
            train
            if self.epochs == train.effective_epochs
            else attrs.evolve(train, epochs=self.epochs)
        )
        self.budget = TrainingBudget(budget_train, self.steps_per_epoch, self.tokens_per_step)
        self.total_steps = self.budget.total_steps
        self.checkpoints = CheckpointManager(
            config,
            config_data,
            run_dir,
            self.dist,
            sharded=self.fsdp,
            tokenizer_fingerprint=adapter_fingerprint(tokenizer),
        )
        self.validator = Validator(
            self.model,
            eval_windows,
            device=self.device,
            dist=self.dist,
            sharded=self.fsdp,
            autocast=self._autocast,
            tokens_per_byte=data.tokens_per_byte,
            seq_len=train.seq_len,
            sampler=sampler,
            samples_path=RunDirectory(run_dir).samples,
            sources=data.source_evals(train, rank=self.dist.rank, world_size=self.dist.world_size),
        )
        self.mixture = MixtureProgress.of(self.windows, data, train) if data.sources else None
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
        log.info("%s", self.precision.describe())
        if self.mixture is not None:
            for line in self.mixture.plan(self.total_steps):
                log.info("%s", line)
        resumed = None
        if config.run.resume_from_checkpoint:
            resumed = self.checkpoints.resume(self.model, self.optimizer)
        self.state = resumed or TrainingState()
        self.resumed = resumed is not None
        if self.mixture is not None and self.state.mixture_drawn is not None:
            # the checkpoint's positions of the sources: no replay of the schedule
            self.mixture.restore(self.state.step, self.state.mixture_drawn)
            per_step = self.mixture.windows_per_step
            self.windows.schedule.restore(self.state.step * per_step, self.state.mixture_drawn)

    @property
    def step(self) -> int:
        """Optimizer steps taken so far (including those before a resume)."""
        return self.state.step

    @property
    def tokens_seen(self) -> int:
        """Training tokens seen so far, over all ranks."""
        return self.state.tokens_seen

    def save_checkpoint(self) -> None:
        """Save everything needed to continue from the current step (every rank calls)."""
        if self.mixture is not None:
            self.state.mixture_drawn = self.mixture.drawn(self.state.step)
        self.checkpoints.save(self.model, self.optimizer, self.state)

    def save_final_model(self) -> None:
        """Write the trained weights as the final model (a plain state dict, also under FSDP)."""
        self.checkpoints.save_final_model(self.model)

    def evaluate(self) -> dict[str, float]:
        """Validation loss (nats per token), perplexity and bits per byte."""
        return self.validator.evaluate()

    # -- the loop ----------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.precision.autocast, self.device)

    #: Whether the model's output was checked (on the first training forward).
    _logits_checked = False

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        # The first forward runs the model's code paths: what it raises names the model.
        first = contextlib.nullcontext() if self._logits_checked else plugin_call(self.model_label)
        with self._autocast(), first:
            logits = self.train_model(inputs)
        if not self._logits_checked:
            expected = (*inputs.shape, self.tokenizer.vocab_size)
            check_logits(logits, expected, self.model_label)
            self._logits_checked = True
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))

    def _set_learning_rate(self, elapsed_s: float) -> float:
        lr = self.budget.learning_rate(self.state.step, elapsed_s)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train(self, router: MetricsRouter) -> dict[str, float]:
        """Run the remaining steps, handing metric records to ``router``; return the final
        metrics. SIGINT/SIGTERM stop training after the current step with a checkpoint saved
        (:class:`RunInterrupted`)."""
        with graceful_stop() as stop_request:
            return self._train(router, stop_request)

    def _train(self, router: MetricsRouter, stop_request: StopRequest) -> dict[str, float]:
        state, clip = self.state, self.train_config.grad_clip_norm
        final: dict[str, float] = {}
        windows = LossWindows(
            state.pending, self.plan.train_cadences, self.device, state.tokens_seen
        )
        clock_start = time.perf_counter() - state.train_time_s
        self.model.train()
        self._set_learning_rate(state.train_time_s)
        if self.budget.reached(state.step, state.train_time_s):
            return final
        steps = self.windows.optimizer_steps(
            state.epoch, state.step_in_epoch, self.epochs, self.accumulation
        )
        for epoch, micro_batches in steps:
            state.epoch = epoch
            lr = self._set_learning_rate(time.perf_counter() - clock_start)
            # Diagnostics: rank 0 under DDP (same gradients everywhere), all ranks under FSDP.
            measures = self.dist.is_main or self.fsdp
            due = self.plan.diagnostics_due(state.step + 1) if measures else frozenset()
            self.optimizer.zero_grad(set_to_none=True)
            diagnostics = self.layer_diagnostics.before_update(
                due, micro_batches[0], self.plan.attention_entropy_caps
            )
            step_loss = torch.zeros((), device=self.device)
            for index, batch in enumerate(micro_batches):
                last = index == len(micro_batches) - 1  # gradients sync on the last
                with accumulation_sync(self.model, self._ddp, sharded=self.fsdp, sync=last):
                    loss = self._loss(batch)
                    if self.accumulation > 1:  # no extra autograd node in the common case
                        loss = loss / self.accumulation
                    loss.backward()  # type: ignore[no-untyped-call]
                step_loss += loss.detach()
            if "ln_grad_norms" in due:
                diagnostics.update(self.layer_diagnostics.ln_grad_norms())
            grad_norm = full_tensor(  # a DTensor under FSDP
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip or math.inf)
            )
            if "global_grad_norm" in due:
                diagnostics["global_grad_norm"] = float(grad_norm)
            self.optimizer.step()
            state.step += 1
            state.step_in_epoch += 1
            state.tokens_seen += self.tokens_per_step
            windows.add(step_loss)
            state.train_time_s = time.perf_counter() - clock_start
            stop = self.agreement.any(self.budget.reached(state.step, state.train_time_s))
            epoch_done = state.step_in_epoch == self.steps_per_epoch

            for cadence, window in windows.by_cadence.items():
                if state.step % cadence == 0 or stop or epoch_done:
                    values = self._train_values(window, lr, grad_norm)
                    router.train(self._record(epoch, "train", values), cadence)
                    if cadence == self.plan.core_log_every_n_steps:
                        final.update(values)
            if diagnostics:
                router.diagnostics(self._record(epoch, "diagnostics", diagnostics))

            validation_started = time.perf_counter()
            if epoch_done or stop:
                final.update(self._end_epoch(router, epoch, windows))
                if epoch_done:
                    state.epoch, state.step_in_epoch = epoch + 1, 0
                    windows.end_epoch()
            elif self.plan.validation_due(state.step):
                self._validate(router, epoch, periodic=True)
            if epoch_done or stop or self.plan.validation_due(state.step):
                windows.pause(time.perf_counter() - validation_started)  # not throughput

            state.pending = windows.pending()
            if stop:
                break
            # Agreed after logging: a signal that arrives while this step is logged, or a
            # logger failing with logging.on_logger_error = "stop" (rank 0's router), stops
            # the run at this step, on every rank.
            if self.agreement.any(stop_request.signum is not None or router.stopping):
                with raised_on_every_rank():
                    self.dist.on_main(router.raise_stop)  # rank 0's error, on every rank
                self._check_finite(self.agreement.mean(step_loss))
                self.save_checkpoint()
                raise on_every_rank(
                    RunInterrupted(
                        f"stopped by {stop_request.name or 'SIGTERM'} at step {state.step}; "
                        f"checkpoint saved to {self.checkpoints.path}; continue with --resume",
                        stop_request.exit_code if stop_request.signum else 143,
                    )
                )
            every = self.config.run.checkpoint_every_n_steps
            if every and state.step % every == 0:
                self._check_finite(self.agreement.mean(step_loss))
                self.save_checkpoint()
        with raised_on_every_rank():
            self.dist.on_main(router.raise_stop)  # a logger that failed on the last step
        self.save_checkpoint()
        self.checkpoints.record_ranks(self.model)
        return final

    def _record(self, epoch: int, phase: Phase, values: dict[str, float]) -> MetricRecord:
        return MetricRecord(self.state.step, self.state.tokens_seen, epoch + 1, phase, values)

    def _end_epoch(
        self, router: MetricsRouter, epoch: int, windows: LossWindows
    ) -> dict[str, float]:
        """Validate at an epoch's end (or training's) and log the epoch summary."""
        epoch_loss = self.agreement.mean(windows.epoch_sum) / max(windows.epoch_steps, 1)
        self._check_finite(epoch_loss)
        metrics = self._validate(router, epoch, periodic=False)
        summary = {
            "train_loss_epoch": epoch_loss,
            "train_perplexity_epoch": perplexity(epoch_loss),
            **metrics,
        }
        router.epoch(self._record(epoch, "epoch", summary))
        return summary

    def _train_values(
        self, window: LossWindow, lr: float, grad_norm: torch.Tensor
    ) -> dict[str, float]:
        """The train record of one cadence: means over the steps since its last record."""
        mean_loss = self.agreement.mean(window.loss_sum) / window.steps
        self._check_finite(mean_loss)
        values = window.record(mean_loss, self.state.tokens_seen, lr, float(grad_norm))
        if self.mixture is not None:
            values.update(self.mixture.values(self.state.step))
        if self.device.type == "cuda":
            values["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.peak_flops:
            values["mfu"] = values["tokens_per_second"] * self.flops_per_token / self.peak_flops
        return values

    def _validate(self, router: MetricsRouter, epoch: int, *, periodic: bool) -> dict[str, float]:
        """Evaluate, hand the results to the router and write the validation samples."""
        metrics = self.validator.evaluate()
        self.state.best_val_loss = min(self.state.best_val_loss, metrics["val_loss"])
        router.validation(self._record(epoch, "validation", metrics), periodic=periodic)
        self.validator.write_samples(self.state.step)
        return metrics

    def _check_finite(self, loss: float) -> None:
        """Stop on a loss that is not finite; ``loss`` is agreed by the ranks (their mean), so
        every rank raises at the same step."""
        if not math.isfinite(loss):
            raise on_every_rank(
                TrainingError(
                    f"training loss became {loss} at step {self.state.step}; "
                    f"{self.checkpoints.last_good()}. Lower train.learning_rate or set "
                    "train.grad_clip_norm"
                )
            )
