"""FSDP with one process (its own process group, no torchrun) and every FSDP error path: one
line naming the key, exit status 2, nothing already written lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from core_support import write_toml
from torch import nn

from baseline.distributed.wrapping import fsdp_units
from baseline.errors import ConfigError, PluginError
from baseline.experiment.loading import experiment_from_data
from baseline.experiment.validation import validate_experiment_config
from baseline.pipeline import model_pipeline
from baseline.plugins.registry import ComponentRegistry

BIN = Path(sys.executable).parent


def validation_error(registry: ComponentRegistry, data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_experiment_config(experiment_from_data(data, registry), registry, source="x.toml")
    return str(caught.value)


def test_reshard_setting_needs_fsdp(registry: ComponentRegistry, tiny_data: dict[str, Any]) -> None:
    tiny_data["train"]["fsdp_reshard_after_forward"] = False
    assert validation_error(registry, tiny_data) == (
        "x.toml: train.fsdp_reshard_after_forward: only applies with "
        'train.parallelism = "fsdp"; remove it or set the parallelism'
    )
    tiny_data["train"]["parallelism"] = "fsdp"
    validate_experiment_config(experiment_from_data(tiny_data, registry), registry)


def test_fsdp_is_not_for_mps(registry: ComponentRegistry, tiny_data: dict[str, Any]) -> None:
    tiny_data["train"].update(parallelism="fsdp", device="mps")
    assert validation_error(registry, tiny_data).startswith(
        'x.toml: train.parallelism: fsdp runs on CUDA (nccl) or the CPU (gloo), not on "mps"'
    )


def test_cli_reports_one_line_and_exit_2(tmp_path: Path, tiny_data: dict[str, Any]) -> None:
    tiny_data["train"]["parallelism"] = "zero3"
    write_toml(tmp_path / "exp.toml", tiny_data)
    env = {k: v for k, v in os.environ.items() if k != "BASELINE_DEBUG"}
    result = subprocess.run(
        [str(BIN / "baseline"), "validate", "exp.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.parallelism" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_fsdp_units_must_be_submodules() -> None:
    class Stray(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 2)

        def fsdp_units(self) -> list[nn.Module]:
            return [self.layer, nn.Linear(2, 2)]

    with pytest.raises(PluginError, match=r"fsdp_units\(\) item 1 is Linear, not a submodule"):
        fsdp_units(Stray(), "model 'stray'")
    assert fsdp_units(nn.Linear(2, 2)) == []  # no method: the whole model is one unit


def test_one_process_fsdp_run_and_resume_mismatches(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"].update(parallelism="fsdp", max_steps=3, num_threads=1)
    tiny_data["run"]["checkpoint_every_n_steps"] = 2
    tiny_data["logging"]["console"] = {
        "enable_ln_grad_norms": True,
        "enable_attention_entropy": True,
        "diagnostics_every_n_steps": 1,
    }
    run_dir = model_pipeline(experiment_from_data(tiny_data, registry)).run_dir
    assert (run_dir / "baseline_checkpoint.dcp" / ".metadata").is_file()
    assert (run_dir / "baseline_checkpoint.1.dcp" / ".metadata").is_file()
    final = torch.load(run_dir / "baseline_model.pt", weights_only=True)
    assert all(type(t) is torch.Tensor for t in final.values())  # plain tensors, no DTensors
    assert not torch.distributed.is_initialized()  # its own group was destroyed

    # Resuming a sharded checkpoint as DDP is refused, not restarted from scratch.
    tiny_data["train"]["parallelism"] = "ddp"
    tiny_data["run"]["resume_from_checkpoint"] = True
    with pytest.raises(ConfigError) as caught:
        model_pipeline(experiment_from_data(tiny_data, registry))
    assert caught.value.key_path == "train.parallelism"
    assert 'saved with train.parallelism = "fsdp" and this run uses "ddp"' in str(caught.value)
    assert (run_dir / "baseline_checkpoint.dcp" / ".metadata").is_file()  # nothing lost

    # And the reverse: a DDP checkpoint file under FSDP.
    tiny_data["run"].update(run_name="plain", resume_from_checkpoint=False)
    plain_dir = model_pipeline(experiment_from_data(tiny_data, registry)).run_dir
    tiny_data["run"]["resume_from_checkpoint"] = True
    tiny_data["train"]["parallelism"] = "fsdp"
    with pytest.raises(ConfigError, match=r'saved with train\.parallelism = "ddp"'):
        model_pipeline(experiment_from_data(tiny_data, registry))
    assert (plain_dir / "baseline_checkpoint.pt").is_file()


def test_one_process_fsdp_in_bf16_keeps_fp32_weights(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    # MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32): bf16 compute, fp32 master
    # weights, so the final model is fp32.
    tiny_data["train"].update(parallelism="fsdp", precision="bf16", max_steps=2, num_threads=1)
    result = model_pipeline(experiment_from_data(tiny_data, registry))
    final = torch.load(result.run_dir / "baseline_model.pt", weights_only=True)
    assert {t.dtype for t in final.values()} == {torch.float32}
    assert result.steps == 2 and result.final_metrics["val_loss"] > 0
