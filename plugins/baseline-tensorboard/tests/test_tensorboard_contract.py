"""The logger contract of ``baseline.testing`` (cadence, validation, resume, failures, two
processes) on real runs, read back with TensorBoard's own event reader, plus what only
TensorBoard shows (tag groups, the tokens axis, the config as text and HParams). Needs only
the core and this plugin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tensorboard_events import read_events

from baseline.testing.loggers import ContractRun, LoggedRun, LoggerContract
from baseline_tensorboard.logger import TOKENS_SUBDIR, flatten_config

CADENCES = {
    "diagnostics_every_n_steps": 3,
    "attention_entropy_every_n_steps": 4,
    "val_every_n_steps": 5,
}
GROUPS = {"train": "train", "validation": "val", "diagnostics": "diagnostics", "epoch": "epoch"}


class TestTensorBoardContract(LoggerContract):
    provider = "tensorboard"
    # An interrupted or failed run records no HParams session end.
    finished_status = "STATUS_SUCCESS"

    def logger_table(self, workdir: Path) -> dict[str, Any]:
        return dict(CADENCES)

    def metric_name(self, phase: str, key: str) -> str:
        return f"{GROUPS[phase]}/{key}"

    def read_back(self, run_dir: Path) -> LoggedRun:
        """The step curves and, as ``tokens:<tag>``, the tokens-axis curves (purges applied,
        as TensorBoard shows them)."""
        run = read_events(run_dir / "tensorboard")
        tokens = read_events(run_dir / "tensorboard" / TOKENS_SUBDIR)
        metrics = {**run.scalars, **{f"tokens:{k}": v for k, v in tokens.scalars.items()}}
        status = run.status if "_hparams_/session_end_info" in run.hparams else None
        return LoggedRun(metrics=metrics, run_ids=[str(run.path)], status=status)

    # -- what only TensorBoard shows ------------------------------------------------------

    def test_every_value_the_core_computed_is_in_the_event_files(
        self, straight: ContractRun
    ) -> None:
        steps = read_events(straight.run_dir / "tensorboard")
        tokens = read_events(straight.run_dir / "tensorboard" / TOKENS_SUBDIR)
        compared = 0
        for record in straight.records:
            phase, step = record["phase"], record["step"]
            values = {
                k: v
                for k, v in record.items()
                if k not in ("step", "tokens_seen", "epoch", "phase")
            }
            if phase == "epoch":
                assert steps.value("epoch/train_loss_epoch", step) == pytest.approx(
                    values["train_loss_epoch"], rel=1e-6
                )
                assert steps.value("epoch/epoch", step) == record["epoch"]
                continue
            for key, value in values.items():
                if phase == "train" and key == "global_grad_norm":
                    continue  # shown from the diagnostics records
                tag = f"{GROUPS[phase]}/{key}"
                assert steps.value(tag, step) == pytest.approx(value, rel=1e-6)
                compared += 1
            if phase == "train":
                assert steps.value("train/tokens_seen", step) == record["tokens_seen"]
                assert tokens.value("train_vs_tokens/train_loss", record["tokens_seen"]) == (
                    pytest.approx(record["train_loss"], rel=1e-6)
                )
            if phase == "validation":
                for key in ("val_loss", "val_bpb"):
                    assert tokens.value(f"val_vs_tokens/{key}", record["tokens_seen"]) == (
                        pytest.approx(record[key], rel=1e-6)
                    )
        assert compared > 50
        # The diagnostics of a 2-layer decoder without norm biases, and periodic validation.
        assert {
            "diagnostics/global_grad_norm",
            "diagnostics/activation_norm_middle",
            "diagnostics/ln_weight_grad_norm_last",
            "diagnostics/attention_entropy_first",
            "train/learning_rate",
            "train/step_time_ms",
            "train/tokens_per_second",
            "train/train_perplexity",
            "val/val_perplexity",
        } <= steps.tags
        assert 5 in steps.steps("val/val_bpb")
        assert not any(tag.startswith("diagnostics/ln_bias") for tag in steps.tags)
        assert not {"train/peak_memory_gib", "train/mfu"} & steps.tags  # CPU run

    def test_the_normalized_config_is_the_hparams_and_the_text(self, straight: ContractRun) -> None:
        steps = read_events(straight.run_dir / "tensorboard")
        saved = json.loads((straight.run_dir / "run_config.json").read_text())["config"]
        assert steps.config_text == saved
        flat = dict(flatten_config(saved))
        hparams = steps.hparam_values
        assert set(hparams) == set(flat)
        assert hparams["train.learning_rate"] == pytest.approx(flat["train.learning_rate"])
        assert hparams["model.name"] == "contract_decoder"
        assert hparams["logging.provider"] == '["tensorboard"]'
        assert steps.status == "STATUS_SUCCESS"
