"""Rotation and fallback of sharded (DCP) checkpoint directories, on the filesystem alone:
some complete checkpoint is named at every moment, and incomplete ones are never loaded."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from baseline.runs import sharded_checkpoint
from baseline.runs.checkpoint import CHECKPOINT_FORMAT
from baseline.runs.sharded_checkpoint import (
    _put_in_order,
    _rotate_into_place,
    dcp_checkpoint_paths,
    find_sharded_checkpoint,
)


def fake_checkpoint(path: Path, step: int) -> Path:
    path.mkdir()
    (path / ".metadata").write_bytes(b"dcp")
    torch.save({"format": CHECKPOINT_FORMAT, "step": step}, path / "trainer_state.pt")
    return path


def test_rotation_keeps_the_newest_and_drops_the_oldest(tmp_path: Path) -> None:
    paths = dcp_checkpoint_paths(tmp_path, "baseline_checkpoint.pt", 2)
    assert [p.name for p in paths] == ["baseline_checkpoint.dcp", "baseline_checkpoint.1.dcp"]
    for step in (1, 2, 3):
        _rotate_into_place(fake_checkpoint(tmp_path / "new.tmp-dir", step), paths)
    found = find_sharded_checkpoint(paths)
    assert found is not None and found[0] == paths[0] and found[1]["step"] == 3
    assert torch.load(paths[1] / "trainer_state.pt")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_a_crash_mid_save_or_mid_rotation_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    paths = dcp_checkpoint_paths(tmp_path, "baseline_checkpoint.pt", 1)
    # Killed during the save: a half-written staging directory beside the previous checkpoint.
    fake_checkpoint(paths[0], 4)
    staging = tmp_path / "baseline_checkpoint.dcp.tmp-dir"
    staging.mkdir()
    (staging / "__0_0.distcp").write_bytes(b"partial")
    found = find_sharded_checkpoint(paths)
    assert found is not None and found[1]["step"] == 4
    # Killed between the two renames of a one-checkpoint rotation: only the retired one and
    # the staging directory exist; the retired one (complete) is loaded.
    paths[0].rename(tmp_path / "baseline_checkpoint.dcp.old-dir")
    found = find_sharded_checkpoint(paths)
    assert found is not None and found[1]["step"] == 4
    # An incomplete directory under the final name (no .metadata) is skipped, not loaded.
    incomplete = fake_checkpoint(paths[0], 9)
    (incomplete / ".metadata").unlink()
    found = find_sharded_checkpoint(paths)
    assert found is not None and found[1]["step"] == 4


class Crash(Exception):
    """Stands for the process dying at that point (the real kills are in test_dcp_crashes)."""


def steps_on_disk(tmp_path: Path) -> dict[str, int]:
    return {
        path.name: torch.load(path / "trainer_state.pt")["step"]
        for path in sorted(tmp_path.iterdir())
        if (path / "trainer_state.pt").is_file()
        and (path / ".metadata").is_file()
        and not path.name.endswith(".tmp-dir")  # staging: never loaded, removed by the save
    }


def crash_at(point: int) -> Callable[[int], None]:
    def before(operation: int) -> None:
        if operation == point:
            raise Crash

    return before


@pytest.mark.parametrize("point", [1, 2, 3, 4])
def test_after_a_crash_at_any_rename_the_newest_step_is_loaded_and_put_back_first(
    tmp_path: Path, point: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keep = 2: A = step 4, B = step 2, step 6 crashes before rotation operation ``point``
    (1: B -> retired, 2: A -> B, 3: staging -> A, 4: delete the retired one). Whatever is left,
    the newest complete step is loaded; the next save's recovery (itself interrupted at each of
    its renames) puts the newest under A and keeps both."""
    paths = dcp_checkpoint_paths(tmp_path, "baseline_checkpoint.pt", 2)
    fake_checkpoint(paths[1], 2)
    fake_checkpoint(paths[0], 4)
    with pytest.raises(Crash):
        _rotate_into_place(fake_checkpoint(tmp_path / "x.tmp-dir", 6), paths, crash_at(point))
    newest = 6 if point == 4 else 4
    found = find_sharded_checkpoint(paths)
    assert found is not None and found[1]["step"] == newest
    # The recovery, killed before its n-th rename, for every n until it runs through.
    real_replace = os.replace
    for allowed in range(10):
        calls = iter(range(allowed + 1))

        def replace(source: Any, target: Any, calls: Any = calls, allowed: int = allowed) -> None:
            if next(calls) == allowed:
                raise Crash
            real_replace(source, target)

        monkeypatch.setattr(sharded_checkpoint.os, "replace", replace)
        try:
            _put_in_order(paths)
        except Crash:
            found = find_sharded_checkpoint(paths)
            assert found is not None and found[1]["step"] == newest
            continue
        break
    monkeypatch.setattr(sharded_checkpoint.os, "replace", real_replace)
    on_disk = steps_on_disk(tmp_path)
    assert on_disk == {"baseline_checkpoint.1.dcp": newest - 2, "baseline_checkpoint.dcp": newest}
    # A second crash, now in the next save, again at ``point``: still the newest complete step.
    with pytest.raises(Crash):
        _rotate_into_place(
            fake_checkpoint(tmp_path / "y.tmp-dir", newest + 2), paths, crash_at(point)
        )
    found = find_sharded_checkpoint(paths)
    assert found is not None and found[1]["step"] == (newest + 2 if point == 4 else newest)


def test_checkpoints_named_out_of_order_load_the_newest_and_are_swapped_back(
    tmp_path: Path,
) -> None:
    """What the former recovery left (the oldest put back under the newest name): the step
    decides, and the next save swaps them through the retired name."""
    paths = dcp_checkpoint_paths(tmp_path, "baseline_checkpoint.pt", 2)
    fake_checkpoint(paths[0], 2)
    fake_checkpoint(paths[1], 4)
    found = find_sharded_checkpoint(paths)
    assert found is not None and found[0] == paths[1] and found[1]["step"] == 4
    _put_in_order(paths)
    assert steps_on_disk(tmp_path) == {"baseline_checkpoint.1.dcp": 2, "baseline_checkpoint.dcp": 4}
    # Three complete ones (a crash just before the retired one was deleted): the oldest goes.
    fake_checkpoint(tmp_path / "baseline_checkpoint.dcp.old-dir", 0)
    _put_in_order(paths)
    assert steps_on_disk(tmp_path) == {"baseline_checkpoint.1.dcp": 2, "baseline_checkpoint.dcp": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
