"""The built-in ``console`` logger: a rich progress bar and end-of-epoch summaries.

It is registered through the ``baseline.plugins`` entry-point group like any other plugin.

Every event is one line, never wrapped by rich (``soft_wrap``): piped into a file or a CI
log, an epoch summary stays whole however long it is. The live progress bar and the table of
epochs are drawn only when the output is a terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from baseline.config import DiagnosticsLoggerConfig
from baseline.plugins.hookspecs import Register, hookimpl
from baseline.plugins.protocols import MetricRecord, RunInfo


@attrs.frozen(kw_only=True)
class ConsoleLoggerConfig(DiagnosticsLoggerConfig):
    """Settings of the ``[logging.console]`` table.

    The diagnostics (``enable_*``) are off by default; when on, each is printed as one line
    on the steps its cadence selects.
    """

    #: Draw a live progress bar on a terminal (plain lines are printed otherwise).
    progress_bar: bool = True


class ConsoleLogger:
    """Factory of :class:`ConsoleSession` objects."""

    def __init__(self, config: ConsoleLoggerConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or Console(stderr=True)

    def start(self, run: RunInfo) -> ConsoleSession:
        """Open a session for ``run``."""
        return ConsoleSession(run, self.config, self.console)


class ConsoleSession:
    """Progress bar with loss, tokens/s and ETA; a table row per epoch."""

    def __init__(self, run: RunInfo, config: ConsoleLoggerConfig, console: Console) -> None:
        self.run = run
        self.console = console
        self.progress: Progress | None = None
        self.epochs: list[dict[str, Any]] = []
        #: A validation result not printed yet (see :meth:`log`).
        self.validation: MetricRecord | None = None
        console.print(
            f"[bold]{escape(run.project_name)}[/bold] / {escape(run.run_name)}: "
            f"{run.total_steps or 'time-limited'} steps -> {escape(str(run.run_dir))}",
            soft_wrap=True,
            highlight=False,
        )
        if config.progress_bar and console.is_terminal:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} tok/s"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self.task = self.progress.add_task(
                "train",
                total=run.total_steps,
                completed=run.start_step,
                epoch=1,
                loss="-",
                rate="-",
            )
            self.progress.start()

    def log(self, record: MetricRecord) -> None:
        """Advance the bar on train records; print validation and epoch summaries."""
        values = record.values
        # A validation result is held back until the next record: when that is the epoch
        # summary of the same step, the summary line shows it; otherwise it is printed alone.
        held, self.validation = self.validation, None
        if held is not None and not (record.phase == "epoch" and record.step == held.step):
            self._print_validation(held)
        if record.phase == "train":
            loss = values.get("train_loss")
            rate = values.get("tokens_per_second")
            if self.progress is not None:
                self.progress.update(
                    self.task,
                    completed=record.step,
                    epoch=record.epoch,
                    loss=f"{loss:.4f}" if loss is not None else "-",
                    rate=f"{rate:,.0f}" if rate is not None else "-",
                )
            else:
                total = self.run.total_steps or "?"
                parts = [f"step {record.step}/{total}", f"epoch {record.epoch}"]
                if loss is not None:
                    parts.append(f"loss {loss:.4f}")
                if rate is not None:
                    parts.append(f"{rate:,.0f} tok/s")
                parts.append(f"tokens {record.tokens_seen:,}")
                self._line("  ".join(parts))
        elif record.phase == "diagnostics":
            fields = "  ".join(f"{key} {value:.4g}" for key, value in record.values.items())
            self._line(f"step {record.step} diagnostics: {fields}")
        elif record.phase == "validation":
            self.validation = record
        elif record.phase == "epoch":
            self.epochs.append({"epoch": record.epoch, "step": record.step, **values})
            self._line(self._epoch_line(record, self.run.steps_per_epoch))

    def _line(self, text: str) -> None:
        """Print one event as one line: no markup, no highlighting, never wrapped by rich."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _print_validation(self, record: MetricRecord) -> None:
        """One line for a validation result that no epoch summary shows."""
        fields = " | ".join(
            f"{label} {record.values[key]:.4f}"
            for key, label in (
                ("val_loss", "val loss"),
                ("val_perplexity", "val ppl"),
                ("val_bpb", "val bits/byte"),
            )
            if key in record.values
        )
        self._line(f"step {record.step} validation: {fields}{_per_source(record.values)}")

    @staticmethod
    def _epoch_line(record: MetricRecord, steps_per_epoch: int) -> str:
        v = record.values
        done = steps_per_epoch and record.step % steps_per_epoch == 0
        what = "done" if done else "stopped (training limit reached)"
        fields = [f"epoch {record.epoch} {what} at step {record.step}"]
        for key, label in (
            ("train_loss_epoch", "train loss"),
            ("val_loss", "val loss"),
            ("val_perplexity", "val ppl"),
            ("val_bpb", "val bits/byte"),
        ):
            if key in v:
                fields.append(f"{label} {v[key]:.4f}")
        return " | ".join(fields) + _per_source(v)

    def finish(self, exit_code: int) -> None:
        """Stop the bar and, on a terminal, print a summary table of the epochs.

        In a file or a pipe the epoch lines already printed are the summary: a table would
        break the one-event-one-line rule.
        """
        if self.validation is not None:
            self._print_validation(self.validation)
            self.validation = None
        if self.progress is not None:
            self.progress.stop()
        if self.epochs and self.console.is_terminal:
            table = Table(
                title=f"{self.run.run_name}" + ("" if exit_code == 0 else f" (exit {exit_code})")
            )
            for column in ("epoch", "step", "train loss", "val loss", "val ppl", "val bits/byte"):
                table.add_column(column, justify="right")
            for row in self.epochs:
                table.add_row(
                    str(row["epoch"]),
                    str(row["step"]),
                    *(
                        f"{row[key]:.4f}" if key in row else "-"
                        for key in ("train_loss_epoch", "val_loss", "val_perplexity", "val_bpb")
                    ),
                )
            self.console.print(table)


def _per_source(values: Mapping[str, float]) -> str:
    """`` (prose 2.1221, code 1.7464)``: a mixture's bits per byte by source; ``""`` else."""
    parts = [
        f"{key.removeprefix('val_bpb/')} {value:.4f}"
        for key, value in values.items()
        if key.startswith("val_bpb/")
    ]
    return f" ({', '.join(parts)})" if parts else ""


@hookimpl
def baseline_register_loggers(register: Register) -> None:
    """Register the ``console`` logger."""
    register("console", ConsoleLoggerConfig, ConsoleLogger)


__all__ = ["ConsoleLogger", "ConsoleLoggerConfig", "ConsoleSession"]
