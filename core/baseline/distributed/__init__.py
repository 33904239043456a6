"""The distributed wing: processes and how a model is spread over them.

- ``context``: the process group of a run (rank, world size, backend, collectives);
- ``wrapping``: FSDP2 sharding, full state dicts and gradient synchronisation;
- ``agreement``: ranks agreeing on a flag, averaged values and parameter digests.

May import: :mod:`baseline.errors` only.
"""
