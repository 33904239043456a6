"""The declared torch floor is the one the training loop needs, and an older torch is one line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from baseline.train.torch_floor import TORCH_FLOOR, TorchTooOld, check_torch

ROOT = Path(__file__).resolve().parents[1]


def test_the_core_declares_the_floor_the_loop_checks() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_requirement = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert f">={TORCH_FLOOR}" in torch_requirement


def test_the_floor_has_what_the_loop_uses() -> None:
    assert hasattr(torch.optim, "Muon")
    from torch.distributed.fsdp import fully_shard  # noqa: F401

    check_torch()  # the installed torch passes


@pytest.mark.parametrize("version", ["2.2.0", "2.8.1+cpu", "1.13.1"])
def test_an_older_torch_is_one_line_naming_the_floor(version: str) -> None:
    with pytest.raises(TorchTooOld) as raised:
        check_torch(version)
    message = str(raised.value)
    assert "\n" not in message and f"torch>={TORCH_FLOOR}" in message and version in message
    assert raised.value.exit_code == 2


@pytest.mark.parametrize("version", ["2.9.0", "2.9.0.dev20250801", "2.13.0+cpu", "3.0.0"])
def test_the_floor_and_newer_pass(version: str) -> None:
    check_torch(version)
