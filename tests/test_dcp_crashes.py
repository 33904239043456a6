"""A real FSDP run (one process, DCP checkpoints) killed with SIGKILL at each operation of a
checkpoint rotation, then again at the same point of the next save: every resume starts from
the newest complete checkpoint, whatever names the crashes left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from core_support import write_toml

BIN = Path(sys.executable).parent
STEPS = 10


def run(workdir: Path, name: str, *args: str, kill: str | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BASELINE_DEBUG", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    if kill is not None:
        env["BASELINE_TEST_KILL_DURING_CHECKPOINT_AT_STEP"] = kill
    result = subprocess.run(
        [str(BIN / "baseline-run"), "exp.toml", "--set", f"run.run_name={name}", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stderr


@pytest.mark.parametrize("point", [1, 2, 3, 4])
def test_killed_twice_at_a_rotation_operation_resumes_the_newest_checkpoint(
    tmp_path: Path, tiny_data: dict[str, Any], point: int
) -> None:
    """keep = 2, a checkpoint every 2 steps. Step 6's rotation (A = step 4, B = step 2) is
    killed before operation ``point`` (1: B -> retired, 2: A -> B, 3: new -> A, 4: delete the
    retired one); the resume is killed again at the same point of its first save."""
    tiny_data["train"].update(max_steps=STEPS, epochs=30, parallelism="fsdp")
    tiny_data["run"].update(checkpoint_every_n_steps=2, keep_last_checkpoints=2)
    write_toml(tmp_path / "exp.toml", tiny_data)

    code, stderr = run(tmp_path, "killed", kill=f"6:{point}")
    assert code == -signal.SIGKILL, stderr
    newest = 6 if point == 4 else 4  # the new directory is named once operation 3 is done
    code, stderr = run(tmp_path, "killed", "--resume", kill=f"{newest + 2}:{point}")
    assert code == -signal.SIGKILL, stderr
    assert f"at step {newest} " in stderr, stderr
    newest = newest + 2 if point == 4 else newest
    code, stderr = run(tmp_path, "killed", "--resume")
    assert code == 0, stderr
    assert f"at step {newest} " in stderr, stderr
    run_dir = tmp_path / "runs" / "killed"
    assert sorted(p.name for p in run_dir.glob("*dir")) == []  # no staging or retired left
