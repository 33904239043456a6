"""The run's precision plan: bf16 only where the device has it, stated, recorded, overridable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.registry import ComponentRegistry
from baseline.train.muon import BatchedMuon, orthogonalize
from baseline.train.precision import PrecisionPlan, native_bf16

CPU = torch.device("cpu")
PLAN_SCRIPT = (
    "import torch; from baseline.train.precision import PrecisionPlan; "
    "plan = PrecisionPlan.decide('auto', 'auto', torch.device('cpu')); "
    "print(plan.newton_schulz, plan.autocast, plan.native_bf16, plan.hardware, sep='|')"
)


def _plan_in_process(**env: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PLAN_SCRIPT],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().split("|")


def test_a_cpu_without_avx512_kernels_orthogonalises_in_float32() -> None:
    # What a CPU without AVX-512 (and so without AVX512-BF16 or AMX) gets: the kernels
    # PyTorch dispatches to, lowered with its own switch, in a real process.
    newton_schulz, autocast, native, hardware = _plan_in_process(ATEN_CPU_CAPABILITY="avx2")
    assert (newton_schulz, autocast, native) == ("fp32", "fp32", "False")
    assert "CPU kernels AVX2" in hardware


def test_auto_follows_what_this_cpu_has() -> None:
    native, hardware = native_bf16(CPU)
    plan = PrecisionPlan.decide("auto", "auto", CPU)
    assert plan.newton_schulz == ("bf16" if native else "fp32")
    assert plan.autocast == "fp32"  # CPU matmuls stay float32 under auto
    assert plan.hardware == hardware
    has_fast_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native == (has_fast_bf16 and torch.backends.cpu.get_cpu_capability() == "AVX512")


@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_explicit_settings_win_over_the_device(setting: str) -> None:
    plan = PrecisionPlan.decide(setting, setting, CPU)
    assert (plan.autocast, plan.newton_schulz) == (setting, setting)
    assert f"train.optimizer_precision = '{setting}'" in plan.describe()


def test_float32_newton_schulz_is_closer_to_exact_than_bf16() -> None:
    generator = torch.Generator().manual_seed(0)
    stack = torch.randn(3, 16, 48, generator=generator)
    coefficients = (3.4445, -4.7750, 2.0315)
    exact = orthogonalize(stack.double(), coefficients, 5, 1e-7, torch.float64)
    fp32 = orthogonalize(stack, coefficients, 5, 1e-7, torch.float32)
    bf16 = orthogonalize(stack, coefficients, 5, 1e-7, torch.bfloat16)
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    fp32_error = (fp32.double() - exact).abs().max().item()
    bf16_error = (bf16.double() - exact).abs().max().item()
    assert fp32_error < 1e-4 < bf16_error


def test_the_newton_schulz_dtype_is_not_in_the_state() -> None:
    params = [torch.nn.Parameter(torch.randn(8, 24)) for _ in range(2)]
    bf16 = BatchedMuon(params, lr=0.02)
    for param in params:
        param.grad = torch.randn_like(param)
    bf16.step()
    fp32 = BatchedMuon(params, lr=0.02, ns_dtype=torch.float32)
    fp32.load_state_dict(bf16.state_dict())
    assert str(fp32.state_dict()) == str(bf16.state_dict())
    fp32.step()


def _run(registry: ComponentRegistry, data: dict[str, Any], name: str, **train: Any) -> Path:
    data = {**data, "run": {**data["run"], "run_name": name}, "train": {**data["train"], **train}}
    return model_pipeline(experiment_from_data(data, registry)).run_dir


def test_the_run_records_its_plan_and_the_override_changes_the_weights(
    registry: ComponentRegistry, tiny_data: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    muon = {"optimizer": "muon", "max_steps": 6, "epochs": None}
    with caplog.at_level("INFO"):
        fp32 = _run(registry, tiny_data, "fp32", optimizer_precision="fp32", **muon)
    assert any(
        "Newton-Schulz fp32 (train.optimizer_precision = 'fp32')" in r.getMessage()
        for r in caplog.records
    )
    bf16 = _run(registry, tiny_data, "bf16", optimizer_precision="bf16", **muon)
    recorded = {
        name: json.loads((run / "run_config.json").read_text())
        for name, run in (("fp32", fp32), ("bf16", bf16))
    }
    assert recorded["fp32"]["precision"]["newton_schulz"] == "fp32"
    assert recorded["bf16"]["precision"]["newton_schulz"] == "bf16"
    assert recorded["fp32"]["config"]["train"]["optimizer_precision"] == "fp32"
    native, hardware = native_bf16(CPU)
    assert recorded["fp32"]["precision"] == {
        "autocast": "fp32",
        "newton_schulz": "fp32",
        "native_bf16": native,
        "hardware": hardware,
    }
    weights = [torch.load(run / "baseline_model.pt", weights_only=True) for run in (fp32, bf16)]
    assert any(not torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_a_run_resumes_under_the_other_newton_schulz_dtype(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    # As when a run started on a machine with bf16 continues on one without it.
    muon = {"optimizer": "muon", "epochs": None}
    _run(registry, tiny_data, "switch", optimizer_precision="bf16", max_steps=3, **muon)
    data = {**tiny_data, "run": {**tiny_data["run"], "resume_from_checkpoint": True}}
    run_dir = _run(registry, data, "switch", optimizer_precision="fp32", max_steps=6, **muon)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]
    assert max(steps) == 6
    assert json.loads((run_dir / "run_config.json").read_text())["precision"]["newton_schulz"] == (
        "fp32"
    )
