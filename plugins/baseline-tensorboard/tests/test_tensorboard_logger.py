"""The ``tensorboard`` logger against real event files, read back with TensorBoard's reader.

These tests need only the core and this plugin. Records are fed the way the trainer feeds
them: through :class:`baseline.metrics.router.MetricsRouter`, which keeps, for this logger, the train
records of its cadence and the diagnostics it enabled on their steps.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tensorboard_events import TensorBoardRun, read_events

import baseline_tensorboard
from baseline.errors import ConfigError
from baseline.metrics.router import diagnostic_of
from baseline.plugins.protocols import LoggerAdapter, LoggerSession, MetricRecord, RunInfo
from baseline.testing import check_logger_adapter, in_process_plugins
from baseline.testing.synthetic import (
    CADENCES,
    DIAGNOSTICS,
    STEPS,
    TOKENS_PER_STEP,
    TRAIN,
    VALIDATION,
    feed_epoch,
)
from baseline_tensorboard import TensorBoardConfig, TensorBoardLogger
from baseline_tensorboard.logger import TOKENS_SUBDIR, event_dir, tensorboard_scalars

DIAGNOSTIC_TOGGLES = sorted({f"enable_{diagnostic_of(key)}" for key in DIAGNOSTICS})

TRAIN_TAGS = {f"train/{k}" for k in TRAIN if k != "global_grad_norm"} | {"train/tokens_seen"}
LAYER_TAGS = {f"diagnostics/{k}" for k in DIAGNOSTICS if not k.startswith("attention_entropy")}
ENTROPY_TAGS = {f"diagnostics/{k}" for k in DIAGNOSTICS if k.startswith("attention_entropy")}
VAL_TAGS = {f"val/{k}" for k in VALIDATION}
EPOCH_TAGS = {"epoch/train_loss_epoch", "epoch/train_perplexity_epoch", "epoch/epoch"}
#: Every tag of every step when everything is on.
ALL_ON = {
    2: TRAIN_TAGS,
    3: LAYER_TAGS,
    4: TRAIN_TAGS | {"train/peak_memory_gib", "train/mfu"} | ENTROPY_TAGS,
    5: VAL_TAGS,
    6: TRAIN_TAGS | LAYER_TAGS | VAL_TAGS | EPOCH_TAGS,
}
CONFIG = {
    "run": {"project_name": "baseline-tensorboard-tests", "seed": 7, "requires": []},
    "train": {"learning_rate": 0.001, "batch_size": 8, "seq_len": 16, "compile": False},
    "model": {"name": "tiny", "d_model": 32, "bias": False},
    "logging": {"provider": ["tensorboard"], "tensorboard": {"flush_secs": 30}},
}


def run_info(run_dir: Path, *, start_step: int = 0) -> RunInfo:
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunInfo(
        project_name="baseline-tensorboard-tests",
        run_name=run_dir.name,
        run_dir=run_dir,
        config=CONFIG,
        epochs=1,
        steps_per_epoch=STEPS,
        total_steps=STEPS,
        start_step=start_step,
    )


def feed(session: LoggerSession, config: TensorBoardConfig, steps: range = range(1, 7)) -> None:
    """One epoch of ``STEPS`` steps, routed as the trainer routes its records."""
    feed_epoch("tensorboard", config, session.log, steps)


Logged = Callable[..., tuple[TensorBoardRun, TensorBoardRun]]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    """``logged(**config_fields)``: event files of one fed epoch, finished with 0, read back as
    ``(step axis, tokens axis)``. Cached by configuration."""
    cache: dict[tuple[tuple[str, Any], ...], tuple[TensorBoardRun, TensorBoardRun]] = {}

    def make(**fields: Any) -> tuple[TensorBoardRun, TensorBoardRun]:
        key = tuple(sorted(fields.items()))
        if key not in cache:
            config = TensorBoardConfig(**{**CADENCES, **fields})
            run_dir = tmp_path_factory.mktemp("logged")
            session = TensorBoardLogger(config).start(run_info(run_dir))
            feed(session, config)
            session.finish(0)
            base = run_dir / "tensorboard"
            cache[key] = (read_events(base), read_events(base / TOKENS_SUBDIR))
        return cache[key]

    return make


# -- tags, steps and values --------------------------------------------------------------------


def test_every_tag_lands_on_its_step(logged: Logged) -> None:
    steps, _ = logged()
    assert steps.by_step() == ALL_ON


def test_values_are_written_as_the_core_computed_them(logged: Logged) -> None:
    steps, _ = logged()
    for step in (2, 4, 6):
        assert steps.value("train/train_loss", step) == pytest.approx(3.0)
        assert steps.value("train/step_time_ms", step) == pytest.approx(12.5)
        assert steps.value("train/learning_rate", step) == pytest.approx(1e-3)
        assert steps.value("train/tokens_per_second", step) == pytest.approx(1000.0)
        assert steps.value("train/tokens_seen", step) == step * TOKENS_PER_STEP
    assert steps.value("train/peak_memory_gib", 4) == pytest.approx(1.25)
    assert steps.value("train/mfu", 4) == pytest.approx(0.31)
    for step in (5, 6):
        assert steps.value("val/val_bpb", step) == pytest.approx(1.5)
        assert steps.value("val/val_perplexity", step) == pytest.approx(math.exp(2.5))
    assert steps.value("epoch/train_loss_epoch", 6) == pytest.approx(3.1)
    assert steps.value("epoch/epoch", 6) == 1
    for key, value in DIAGNOSTICS.items():
        step = 4 if key.startswith("attention_entropy") else 3
        assert steps.value(f"diagnostics/{key}", step) == pytest.approx(value), key


def test_global_grad_norm_comes_from_diagnostics_records_only(logged: Logged) -> None:
    steps, _ = logged()
    assert steps.steps("diagnostics/global_grad_norm") == [3, 6]
    assert "train/global_grad_norm" not in steps.tags


def test_loss_and_bpb_curves_against_tokens_seen(logged: Logged) -> None:
    _, tokens = logged()
    assert tokens.tags == {
        "train_vs_tokens/train_loss",
        "val_vs_tokens/val_loss",
        "val_vs_tokens/val_bpb",
    }
    assert tokens.steps("train_vs_tokens/train_loss") == [2 * 128, 4 * 128, 6 * 128]
    assert tokens.steps("val_vs_tokens/val_loss") == [5 * 128, 6 * 128]
    assert tokens.value("val_vs_tokens/val_bpb", 6 * 128) == pytest.approx(1.5)


@pytest.mark.parametrize("toggle", DIAGNOSTIC_TOGGLES)
def test_a_diagnostic_toggle_off_removes_its_tags(logged: Logged, toggle: str) -> None:
    steps, _ = logged(**{toggle: False})
    gone = {f"diagnostics/{k}" for k in DIAGNOSTICS if f"enable_{diagnostic_of(k)}" == toggle}
    assert gone and not gone & steps.tags
    assert steps.tags == set().union(*ALL_ON.values()) - gone


def test_everything_off_leaves_the_step_metrics(logged: Logged) -> None:
    steps, _ = logged(**dict.fromkeys(DIAGNOSTIC_TOGGLES, False), val_every_n_steps=0)
    assert steps.by_step() == {
        2: TRAIN_TAGS,
        4: TRAIN_TAGS | {"train/peak_memory_gib", "train/mfu"},
        6: TRAIN_TAGS | VAL_TAGS | EPOCH_TAGS,
    }


# -- config as hparams and text, status ---------------------------------------------------------


def test_the_config_is_written_as_hparams_and_as_text(logged: Logged) -> None:
    steps, _ = logged()
    assert steps.config_text == CONFIG
    hparams = steps.hparam_values
    assert hparams["train.learning_rate"] == pytest.approx(0.001)
    assert hparams["train.compile"] == "false"
    assert hparams["model.name"] == "tiny"
    assert hparams["run.requires"] == "[]"
    assert hparams["logging.provider"] == '["tensorboard"]'
    experiment = steps.hparams["_hparams_/experiment"].experiment
    assert {m.name.tag for m in experiment.metric_infos} == {
        "val/val_loss",
        "val/val_bpb",
        "train/train_loss",
    }
    assert steps.status == "STATUS_SUCCESS"


@pytest.mark.parametrize("exit_code", [0, 1, 130, 143])
def test_only_a_successful_run_ends_its_hparams_session(tmp_path: Path, exit_code: int) -> None:
    # TensorBoard keeps the first session end of a directory: an interrupted process that
    # wrote one would hide the success of the resumed run.
    session = TensorBoardLogger(TensorBoardConfig()).start(run_info(tmp_path / "status"))
    session.log(MetricRecord(2, 256, 1, "train", TRAIN))
    session.finish(exit_code)
    run = read_events(tmp_path / "status" / "tensorboard")
    assert run.steps("train/train_loss") == [2]
    if exit_code == 0:
        assert run.status == "STATUS_SUCCESS"
    else:
        assert "_hparams_/session_end_info" not in run.hparams


def test_contract_and_finish_twice(tmp_path: Path) -> None:
    adapter = TensorBoardLogger(TensorBoardConfig())
    assert isinstance(adapter, LoggerAdapter)
    check_logger_adapter(adapter, tmp_path / "contract")
    run = read_events(tmp_path / "contract" / "tensorboard")
    # Two sessions from step 0 in one directory: the second replaced the first's curves.
    assert run.steps("val/val_bpb") == [4]
    assert run.status == "STATUS_SUCCESS"  # the first session's (exit 0); the second failed
    session = adapter.start(run_info(tmp_path / "twice"))
    session.finish(130)
    session.finish(0)
    assert (
        "_hparams_/session_end_info" not in read_events(tmp_path / "twice" / "tensorboard").hparams
    )


# -- where the files go ----------------------------------------------------------------------


def test_log_dir_holds_one_directory_per_run(tmp_path: Path) -> None:
    config = TensorBoardConfig(log_dir=str(tmp_path / "tb"))
    for name in ("run-a", "run-b"):
        session = TensorBoardLogger(config).start(run_info(tmp_path / "runs" / name))
        session.log(MetricRecord(2, 256, 1, "train", TRAIN))
        session.finish(0)
    assert event_dir(run_info(tmp_path / "runs" / "run-a"), config) == tmp_path / "tb" / "run-a"
    for name in ("run-a", "run-b"):
        assert read_events(tmp_path / "tb" / name).steps("train/train_loss") == [2]
        assert not (tmp_path / "runs" / name / "tensorboard").exists()


def test_an_unwritable_log_dir_is_one_config_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    config = TensorBoardConfig(log_dir=str(tmp_path / "a-file" / "tb"))
    with pytest.raises(ConfigError) as caught:
        TensorBoardLogger(config).start(run_info(tmp_path / "runs" / "r"))
    assert caught.value.key_path == "logging.tensorboard.log_dir"
    assert str(caught.value).startswith(
        f"logging.tensorboard.log_dir: cannot write TensorBoard event files to {tmp_path}"
    )
    assert "\n" not in str(caught.value)


# -- resuming and reusing a directory ----------------------------------------------------------


def test_a_resumed_run_replaces_what_was_logged_after_its_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    config = TensorBoardConfig(**CADENCES)
    first = TensorBoardLogger(config).start(run_info(run_dir))
    feed(first, config, range(1, 5))  # steps 1-4 logged; the last checkpoint was at step 3
    first.finish(143)

    second = TensorBoardLogger(config).start(run_info(run_dir, start_step=3))
    feed(second, config, range(4, 7))  # exact resume: step 4 again, then 5 and 6
    second.finish(0)

    whole_dir = tmp_path / "whole"
    whole = TensorBoardLogger(config).start(run_info(whole_dir))
    feed(whole, config)
    whole.finish(0)

    for sub in ("tensorboard", f"tensorboard/{TOKENS_SUBDIR}"):
        resumed, uninterrupted = read_events(run_dir / sub), read_events(whole_dir / sub)
        # Every tag has each step once: step 4 of the first process was purged.
        assert resumed.scalars.keys() == uninterrupted.scalars.keys()
        for tag, points in uninterrupted.scalars.items():
            assert resumed.steps(tag) == [step for step, _ in points], (sub, tag)
    assert read_events(run_dir / "tensorboard").status == "STATUS_SUCCESS"


def test_a_new_run_in_a_reused_log_dir_replaces_the_old_curves(tmp_path: Path) -> None:
    config = TensorBoardConfig(log_dir=str(tmp_path / "tb"))
    old = TensorBoardLogger(config).start(run_info(tmp_path / "runs" / "same"))
    old.log(MetricRecord(2, 256, 1, "train", {**TRAIN, "train_loss": 9.0}))
    old.log(MetricRecord(4, 512, 1, "train", {**TRAIN, "train_loss": 9.0}))
    old.finish(0)
    new = TensorBoardLogger(config).start(run_info(tmp_path / "runs" / "same"))
    new.log(MetricRecord(2, 256, 1, "train", TRAIN))
    new.finish(0)
    steps = read_events(tmp_path / "tb" / "same")
    assert steps.scalars["train/train_loss"] == [(2, 3.0)]
    tokens = read_events(tmp_path / "tb" / "same" / TOKENS_SUBDIR)
    assert tokens.scalars["train_vs_tokens/train_loss"] == [(256, 3.0)]


# -- registration ----------------------------------------------------------------------------


def test_registers_the_tensorboard_logger() -> None:
    plugin_set = in_process_plugins(baseline_tensorboard, installed=False)
    component = plugin_set.registry.get("logger", "tensorboard")
    assert component.config_cls is TensorBoardConfig
    assert not plugin_set.failures


def test_importing_the_plugin_imports_neither_tensorboard_nor_torch() -> None:
    code = (
        "import sys, baseline_tensorboard; "
        "print(sorted(m for m in ('tensorboard', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_scalars_of_a_record_keep_the_core_keys() -> None:
    record = MetricRecord(7, 896, 2, "epoch", {"train_loss_epoch": 1.0, "val_loss": 2.0})
    assert tensorboard_scalars(record) == {"epoch/train_loss_epoch": 1.0, "epoch/epoch": 2.0}
