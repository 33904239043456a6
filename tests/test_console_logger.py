"""The console logger's output: one event per line in files and pipes, whatever its length."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from core_support import write_toml
from rich.console import Console

from baseline.metrics.console_logger import ConsoleLoggerConfig, ConsoleSession
from baseline.plugins.protocols import MetricRecord, RunInfo

BIN = Path(sys.executable).parent
VALIDATION = {"val_loss": 6.4812, "val_perplexity": 652.3456, "val_bpb": 2.9876}
EPOCH_LINE = re.compile(
    r"^epoch \d+ (done|stopped \(training limit reached\)) at step \d+ \| train loss \d+\.\d{4} "
    r"\| val loss \d+\.\d{4} \| val ppl \d+\.\d{4} \| val bits/byte \d+\.\d{4}$"
)
VALIDATION_LINE = re.compile(
    r"^step \d+ validation: val loss \d+\.\d{4} \| val ppl \d+\.\d{4} \| val bits/byte \d+\.\d{4}$"
)
TABLE_CHARACTERS = set("┏┃┡│└━")


def session_output(*, terminal: bool, width: int = 80) -> str:
    """Everything a console session prints for a short run, on an 80-column console."""
    output = io.StringIO()
    console = Console(file=output, width=width, force_terminal=terminal, color_system=None)
    info = RunInfo(
        project_name="a-project-with-a-rather-long-name",
        run_name="a-run-name-that-is-long-enough-to-wrap",
        run_dir=Path("/tmp/some/deep/directory/of/runs/a-run-name-that-is-long-enough-to-wrap"),
        config={},
        epochs=1,
        steps_per_epoch=4,
        total_steps=4,
    )
    config = ConsoleLoggerConfig(progress_bar=False, enable_activation_norms=True)
    session = ConsoleSession(info, config, console)
    session.log(MetricRecord(2, 64, 1, "train", {"train_loss": 7.1, "tokens_per_second": 999.0}))
    diagnostics = {f"activation_norm_{p}": 12.345678 for p in ("first", "middle", "last")}
    session.log(MetricRecord(2, 64, 1, "diagnostics", diagnostics))
    session.log(MetricRecord(3, 96, 1, "validation", VALIDATION))  # periodic: a line of its own
    session.log(MetricRecord(4, 128, 1, "train", {"train_loss": 6.9}))
    session.log(MetricRecord(4, 128, 1, "validation", VALIDATION))
    session.log(MetricRecord(4, 128, 1, "epoch", {"train_loss_epoch": 7.0, **VALIDATION}))
    session.finish(0)
    return output.getvalue()


def test_lines_are_not_wrapped_and_no_table_when_not_a_terminal() -> None:
    lines = session_output(terminal=False).splitlines()
    assert len(lines) == 6, lines
    assert lines[0] == (
        "a-project-with-a-rather-long-name / a-run-name-that-is-long-enough-to-wrap: 4 steps -> "
        "/tmp/some/deep/directory/of/runs/a-run-name-that-is-long-enough-to-wrap"
    )
    assert lines[1] == "step 2/4  epoch 1  loss 7.1000  999 tok/s  tokens 64"
    assert lines[2].startswith("step 2 diagnostics: activation_norm_first 12.35  ")
    assert lines[2].endswith("activation_norm_last 12.35")
    assert VALIDATION_LINE.match(lines[3]), lines[3]
    assert EPOCH_LINE.match(lines[5]), lines[5]
    assert max(len(line) for line in lines) > 80
    assert not TABLE_CHARACTERS & set("".join(lines))


def test_a_terminal_gets_the_table_of_epochs() -> None:
    text = session_output(terminal=True, width=120)
    assert TABLE_CHARACTERS & set(text)
    assert "val bits/byte" in text.splitlines()[-4]  # the table's header row


def test_a_real_run_piped_prints_every_summary_whole(
    tmp_path: Path, tiny_data: dict[str, Any]
) -> None:
    """``baseline-run`` with stdout and stderr as pipes: each epoch summary and validation line
    is one whole line (rich used to wrap them at 80 columns)."""
    tiny_data["run"]["run_name"] = "a-run-name-long-enough-that-the-header-line-passes-80-columns"
    tiny_data["logging"]["provider"] = ["console"]
    tiny_data["logging"]["console"] = {"val_every_n_steps": 5, "enable_global_grad_norm": True}
    tiny_data["train"]["num_threads"] = 1
    write_toml(tmp_path / "exp.toml", tiny_data)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "BASELINE_DEBUG")}
    env["TERM"] = "xterm-256color"  # a terminal type, yet the streams are pipes
    result = subprocess.run(
        [str(BIN / "baseline-run"), "exp.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    validations = [line for line in lines if re.match(r"step \d+ validation:", line)]
    assert len(epochs) == 2 and all(EPOCH_LINE.match(line) for line in epochs), epochs
    assert validations and all(VALIDATION_LINE.match(line) for line in validations), validations
    assert all(len(line) > 80 for line in epochs)
    # No fragment of a wrapped line, no table.
    assert not [line for line in lines if line.startswith(("val ", "| ", "/"))], lines
    assert not TABLE_CHARACTERS & set(result.stderr)
    header = next(line for line in lines if " steps -> " in line)
    assert header.endswith(str(tmp_path / "runs" / tiny_data["run"]["run_name"]))
    assert result.stdout == ""
