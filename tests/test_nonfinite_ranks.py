"""A loss that turns non-finite on one rank stops every rank together (real torchrun processes).

The rank's own loss is made NaN at a checkpoint step, between train records, so no collective
of the logging path sees it first: a per-rank check would stop that rank alone and leave the
other waiting in the checkpoint's collective until gloo's timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from core_support import write_toml

BIN = Path(sys.executable).parent

NAN_ON_RANK_ONE = textwrap.dedent(
    """
    import sys

    from baseline.train import trainer as trainer_module

    original = trainer_module.Trainer._loss


    def loss(self, batch):
        value = original(self, batch)
        if self.dist.rank == 1 and self.state.step + 1 == 3:
            return value * float("nan")
        return value


    trainer_module.Trainer._loss = loss
    from baseline.cli import run_main

    sys.argv = ["baseline-run", "exp.toml"]
    sys.exit(run_main())
    """
)


def test_nan_on_one_rank_stops_both_with_one_line_in_seconds(
    tmp_path: Path, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"].update(batch_size=8, max_steps=6, num_threads=1)
    tiny_data["logging"]["log_every_n_steps"] = 100  # no train record at step 3
    tiny_data["run"]["checkpoint_every_n_steps"] = 3
    write_toml(tmp_path / "exp.toml", tiny_data)
    (tmp_path / "nan_rank.py").write_text(NAN_ON_RANK_ONE)
    env = {k: v for k, v in os.environ.items() if k not in ("BASELINE_DEBUG", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    completed = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "nan_rank.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,  # a hang waits for gloo's 30-minute timeout
    )
    assert completed.returncode != 0
    lines = [line for line in completed.stderr.splitlines() if "training loss became nan" in line]
    assert len(lines) == 2, completed.stderr  # both ranks, the same line
    assert len(set(lines)) == 1 and "at step 3" in lines[0]
    # The ranks print one line each; only torchrun's own report of the failed workers follows.
    assert "Traceback" not in completed.stderr.split(lines[0])[0]
