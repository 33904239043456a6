"""Rotation and fallback of sharded (DCP) checkpoint directories, on the filesystem alone:
some complete checkpoint is named at every moment, and incomplete ones are never loaded."""

from __future__ import annotations

from pathlib import Path

import torch

from baseline.runs.checkpoint import CHECKPOINT_FORMAT
from baseline.runs.sharded_checkpoint import (
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
