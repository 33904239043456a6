"""``python claim_worker.py create|claim URL DIRECTORY NAME POINTS GO``: create a sweep of POINTS
grid points in a store, or claim its trials until none is left (from when the file GO exists;
``GO.ready-PID`` says this worker waits for it), finishing each after 20 ms, and print each
claimed point: what two worker processes racing for trials do."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from baseline_sweeps.spec import CommandLine, SweepSpec, build_spec
from baseline_sweeps.store import Store, SweepRecord, connect


def sweep(name: str, points: int) -> SweepSpec:
    values = ",".join(f"{(index + 1) * 1e-4:.4f}" for index in range(points))
    command_line = CommandLine(name=name, params=(f"train.learning_rate={values}",))
    return build_spec(None, command_line, default_name=name)


def main(mode: str, url: str, directory: str, name: str, points: str, go: str) -> None:
    spec = sweep(name, int(points))
    store = Store(Path(directory), connect(url), name)
    if mode == "create":
        store.create_or_continue(SweepRecord(spec, "/nowhere/exp.toml", None, {}))
        return
    study = store.study(spec)
    # both workers start claiming at once: each says it is ready, the test then creates GO
    Path(f"{go}.ready-{os.getpid()}").touch()
    while not Path(go).exists():
        time.sleep(0.01)
    while (claim := store.claim(study, spec)) is not None:
        print(claim.point, flush=True)
        time.sleep(0.02)  # a trial takes a moment: the other worker claims meanwhile
        study.tell(claim.trial, 1.0)
        store.release(claim)


if __name__ == "__main__":
    main(*sys.argv[1:7])
