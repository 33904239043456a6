"""The distributed wing: processes and how a model is spread over them.

- ``context``: the process group of a run (rank, world size, backend, collectives);
- ``wrapping``: FSDP2 sharding, full state dicts and gradient synchronisation;
- ``agreement``: ranks agreeing on a flag, averaged values and parameter digests;
- ``launch``: the torchrun command of ``baseline run --nproc N``, and a worker's exit.

May import: :mod:`baseline.errors` only.
"""

from __future__ import annotations

from typing import Any

#: Names of the old module ``baseline.distributed`` (now :mod:`baseline.distributed.context`),
#: importable from here with a ``DeprecationWarning``; the context is imported on first use.
_MOVED = {"DistributedContext", "RemoteError", "check_divisible", "init_distributed"}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'baseline.distributed' has no attribute {name!r}")
    import warnings
    from importlib import import_module

    warnings.warn(
        f"baseline.distributed.{name} is deprecated: import it from baseline.distributed.context",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(import_module("baseline.distributed.context"), name)
