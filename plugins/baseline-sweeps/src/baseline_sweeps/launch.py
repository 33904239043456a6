"""``python -m baseline_sweeps.launch EXPERIMENT [--set ...] [--resume]``: one trial's
``baseline-run``, in a process that dies with the sweep worker that started it.

On Linux the process asks the kernel for SIGTERM when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), so a sweep killed with SIGKILL does not leave trials training:
each stops as on SIGTERM, after a checkpoint, and the next run of the sweep resumes it. A
parent that died before the request was made is noticed (its pid is in
``BASELINE_SWEEP_WORKER_PID``) and nothing runs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGTERM to this process when its parent dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    parent = os.environ.get("BASELINE_SWEEP_WORKER_PID")
    if parent and os.getppid() != int(parent):
        sys.exit(128 + int(signal.SIGTERM))


def main() -> int:
    die_with_parent()
    from baseline.cli import run_main

    return run_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
