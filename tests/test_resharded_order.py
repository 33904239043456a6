"""The data order after a resume under another process count (FSDP's DCP checkpoints allow it):
the global batches are kept and re-divided among the new ranks."""

from __future__ import annotations

import numpy as np
import pytest

from baseline.data.windows import TrainWindows


def windows(rank: int, world_size: int) -> TrainWindows:
    tokens = np.arange(2000, dtype=np.int64)
    return TrainWindows(
        tokens,
        [(0, 900), (900, 2000)],
        seq_len=7,
        stride=5,
        batch_size=8,
        data_fraction=1.0,
        seed=3,
        rank=rank,
        world_size=world_size,
    )


def seen(world_size: int, epoch: int, start: int, stop: int) -> list[set[int]]:
    """Per global batch in ``[start, stop)``: the first tokens of the windows all ranks saw."""
    per_rank = [
        list(windows(rank, world_size).batches(epoch, start))[: stop - start]
        for rank in range(world_size)
    ]
    return [
        {int(row[0]) for batches in per_rank for row in batches[index]}
        for index in range(stop - start)
    ]


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2), (2, 4), (4, 2), (2, 2)])
def test_union_of_windows_across_a_resharded_resume_equals_one_run(before: int, after: int) -> None:
    steps = windows(0, 1).steps_per_epoch
    assert steps > 10
    cut = 6
    for epoch in (0, 1):
        straight = seen(1, epoch, 0, steps)
        resumed = seen(before, epoch, 0, cut) + seen(after, epoch, cut, steps)
        # Batch by batch: the same windows, re-divided among the new ranks.
        assert resumed == straight
    # And each window once per epoch, the partial last batch left out.
    flat = [start for batch in straight for start in batch]
    assert len(flat) == len(set(flat)) == steps * 8
