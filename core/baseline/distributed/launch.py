"""Starting and ending the processes of ``baseline run --nproc N`` (torchrun on this machine)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def torchrun_argv(nproc: int, cli_args: Sequence[str]) -> list[str]:
    """The command that runs ``baseline <cli_args>`` in ``nproc`` processes under
    ``torchrun --standalone``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*command, f"--nproc_per_node={nproc}", "-m", "baseline.cli", *cli_args]


def finish_worker(code: int) -> int:
    """Under torchrun, leave without interpreter teardown: destroying gloo's threads during
    teardown can abort a finished worker (``terminate called without an active exception``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
