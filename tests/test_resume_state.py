"""What a resume restores besides the tensors: CUDA random states on fewer (or more) devices,
each rank's loss sums, and FSDP validation agreeing on its forward passes before any."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch

from baseline.data.windows import EvalWindows
from baseline.distributed.context import DistributedContext
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.registry import ComponentRegistry
from baseline.runs.checkpoint import capture_rng_state, matching_cuda_states, restore_rng_state
from baseline.train.loss_windows import mean_pending
from baseline.train.validator import Validator

# -- CUDA random states --------------------------------------------------------------------


def a_state_saved_with_more_devices() -> tuple[dict[str, Any], int]:
    """The states of this process (after drawing from every generator), with the CUDA states
    of one more device than this machine has; the device count."""
    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    random.random(), np.random.rand(), torch.rand(1)
    state = capture_rng_state()
    fake = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator state is a byte tensor
    state["cuda"] = [*state.get("cuda", []), *([fake] * (present + 1 - len(state.get("cuda", []))))]
    return state, present


def test_cuda_states_of_more_devices_than_present_restore_the_ones_that_match() -> None:
    state, present = a_state_saved_with_more_devices()
    expected = (random.random(), float(np.random.rand()), torch.rand(1))
    note = restore_rng_state(state, present)
    assert note == (
        f"the checkpoint holds the CUDA random states of {present + 1} device(s) and this "
        f"process sees {present}: restored {present}, the other 1 are not used"
    )
    # The CPU generators continue exactly where they were captured.
    assert (random.random(), float(np.random.rand())) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])
    restore_rng_state(state)  # the device count of this machine by default


def test_the_cuda_states_restored_follow_the_device_count() -> None:
    saved = ["s0", "s1", "s2", "s3"]
    assert matching_cuda_states(saved, 4) == (saved, None)
    assert matching_cuda_states([], 0) == ([], None)
    assert matching_cuda_states([], 2) == ([], None)  # saved on the CPU: seeded states stay
    kept, note = matching_cuda_states(saved, 2)
    assert kept == ["s0", "s1"] and note is not None and "restored 2, the other 2 are not" in note
    kept, note = matching_cuda_states(saved[:1], 2)
    assert kept == ["s0"] and note is not None
    assert note.endswith("restored 1, the other devices keep their seeded states")


def test_a_resume_on_fewer_gpus_says_so_once(
    registry: ComponentRegistry, tiny_data: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    tiny_data["train"].update(max_steps=3, epochs=None)
    run_dir = model_pipeline(experiment_from_data(tiny_data, registry)).run_dir
    path = run_dir / "baseline_checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    fake = torch.zeros(16, dtype=torch.uint8)
    for rank_state in checkpoint["rng"]:
        rank_state["cuda"] = [*rank_state.get("cuda", []), fake, fake][: present + 2]
    torch.save(checkpoint, path)

    tiny_data["train"]["max_steps"] = 4
    tiny_data["run"]["resume_from_checkpoint"] = True
    with caplog.at_level("INFO", logger="baseline"):
        resumed = model_pipeline(experiment_from_data(tiny_data, registry))
    assert resumed.steps == 4
    notes = [r.getMessage() for r in caplog.records if "CUDA random states" in r.getMessage()]
    assert notes == [
        f"{path}: the checkpoint holds the CUDA random states of {present + 2} device(s) and "
        f"this process sees {present}: restored {present}, the other 2 are not used"
    ]


# -- loss sums -------------------------------------------------------------------------------


def test_the_loss_sums_of_several_ranks_average_for_another_process_count() -> None:
    ranked = [
        {"log": {5: {"sum": 2.0, "steps": 3}}, "epoch_sum": 6.0, "epoch_steps": 7},
        {"log": {5: {"sum": 4.0, "steps": 3}}, "epoch_sum": 8.0, "epoch_steps": 7},
    ]
    assert mean_pending(ranked) == {
        "log": {5: {"sum": 3.0, "steps": 3}},
        "epoch_sum": 7.0,
        "epoch_steps": 7,
    }


# -- FSDP validation -------------------------------------------------------------------------


class RecordingDist:
    """Rank 1 of 2, whose peer has ``peer_batches`` validation batches: records collectives."""

    rank, world_size, enabled, is_main = 1, 2, True, False

    def __init__(self, events: list[str], peer_batches: int) -> None:
        self.events = events
        self.peer_batches = peer_batches

    def all_gather(self, value: Any) -> list[Any]:
        self.events.append("all_gather")
        return [self.peer_batches, value]


class RecordingModel(torch.nn.Module):
    """A forward pass (under FSDP a parameter all-gather with every rank) is recorded."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.events.append("forward")
        return torch.zeros((*inputs.shape, 8))


def test_fsdp_validation_agrees_on_the_batch_counts_before_any_forward_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rank with fewer validation batches must not enter its all-gather of the counts while
    another rank still gathers parameters for a forward pass (the collectives would cross)."""
    events: list[str] = []
    tokens = np.arange(40, dtype=np.int64) % 8
    windows = EvalWindows(tokens, [(0, 40)], seq_len=4, batch_size=2, rank=1, world_size=2)
    dist = RecordingDist(events, peer_batches=windows.num_batches + 1)
    monkeypatch.setattr(
        "baseline.train.validator.RankAgreement.sum_with_count", lambda self, t, c: (t, c)
    )
    validator = Validator(
        RecordingModel(events),
        windows,
        device=torch.device("cpu"),
        dist=cast(DistributedContext, dist),
        sharded=True,
        autocast=contextlib.nullcontext,
        tokens_per_byte=1.0,
        seq_len=4,
        sampler=None,
        samples_path=Path("unused"),
    )
    validator.evaluate()
    assert events == ["all_gather"] + ["forward"] * (windows.num_batches + 1)
