"""The runs wing: everything about a run directory on disk.

- ``layout``: the one model of a run directory (every file name, both checkpoint kinds,
  final weights, the run's state, the lock);
- ``artifacts``: crash-safe writes (temporary file, fsync, rename);
- ``checkpoint`` / ``sharded_checkpoint``: single-file and DCP checkpoints with rotation;
- ``locks``: the run lock and waiting locks for shared files;
- ``records``: reading a run's JSON and metrics records;
- ``lookup``: finding a project's runs and the newest one;
- ``weights``: a run's trained weights (final model, or newest checkpoint of either kind) for
  a plain model in one process;
- ``source_run``: reading a run that another run starts from (``run.init_from``);
- ``table`` and ``plots``: ``baseline runs`` and ``baseline plot``.

May import: :mod:`baseline.config`, :mod:`baseline.plugins`, :mod:`baseline.distributed`,
:mod:`baseline.errors`.
"""
