"""Read back what a W&B run recorded, from its ``.wandb`` transaction log.

An offline run writes ``<dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb`` (wandb 0.3x
writes no summary file offline). The file is a LevelDB-style log, the format of W&B's own
reader (the ``DataStore`` of older wandb releases; ``wandb leet inspect`` in 0.3x):

- a 7-byte header: ``:W&B``, the magic ``0xBEE1`` (little-endian) and version ``0``;
- then 32 KiB blocks of chunks, each ``crc32 (4 bytes LE) | length (2 bytes LE) | type (1)``
  followed by ``length`` bytes; type 1 is a whole record, 2/3/4 the first/middle/last piece
  of a record split across blocks; a block tail shorter than a chunk header is zero padding;
- the checksum is zlib's CRC-32 of the data, seeded with the CRC-32 of the type byte;
- each record is a serialized ``wandb.proto.wandb_internal_pb2.Record``.

Records used here: ``run`` (id, config), ``config`` (config updates), ``metric``
(``define_metric``), ``history`` (one row per step; items with ``key``/``nested_key`` and
``value_json``) and ``exit`` (``exit_code``).

The module name is unique so that it cannot clash with other test helpers on ``sys.path``.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[pb.Record]:
    """Every complete record of a ``.wandb`` file, in order; raises on a corrupt file.

    A chunk cut off at the end of the file is one W&B is still writing; reading stops there.
    """
    data = Path(path).read_bytes()
    if data[: len(HEADER)] != HEADER:
        raise ValueError(f"{path}: not a W&B transaction log (header {data[:7]!r})")
    position = len(HEADER)
    pending = b""
    while position + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER:  # zero padding at the end of a block
            position += left_in_block
            continue
        checksum, length, kind = struct.unpack_from("<IHB", data, position)
        if kind == 0 and length == 0:  # preallocated, not yet written
            break
        chunk = data[position + CHUNK_HEADER : position + CHUNK_HEADER + length]
        if len(chunk) != length:  # still being written: the records before it are complete
            break
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise ValueError(f"{path}: bad checksum at byte {position}")
        position += CHUNK_HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        elif kind in (MIDDLE, LAST):
            pending += chunk
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {position}")
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item: Any) -> str:
    return ".".join(item.nested_key) if item.nested_key else str(item.key)


def _history_value(item: pb.HistoryItem) -> Any:
    if item.value_json:
        return json.loads(item.value_json)
    kind = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    return None if kind in (None, "none") else getattr(item, kind)


@dataclass
class WandbRun:
    """What one ``.wandb`` file holds, decoded."""

    path: Path
    records: list[pb.Record]
    run_id: str = ""
    project: str = ""
    display_name: str = ""
    tags: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    #: Step -> the row's metrics (W&B's own ``_step``, ``_runtime``, ... left out).
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Metric name -> its ``define_metric`` record.
    metrics: dict[str, pb.MetricRecord] = field(default_factory=dict)
    exit_code: int | None = None
    #: When ``wandb.init`` started the run (Unix time in ns).
    start_time_ns: int = 0

    @classmethod
    def read(cls, path: Path) -> WandbRun:
        """Decode ``path``."""
        run = cls(path, list(read_records(path)))
        for record in run.records:
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.run_id = record.run.run_id
                run.project = record.run.project
                run.display_name = record.run.display_name
                run.tags = tuple(record.run.tags)
                run.start_time_ns = record.run.start_time.ToNanoseconds()
                run._update_config(record.run.config)
            elif kind == "config":
                run._update_config(record.config)
            elif kind == "history":
                row = run.rows.setdefault(record.history.step.num, {})
                for item in record.history.item:
                    path = list(item.nested_key) or [item.key]
                    if path[0].startswith("_"):
                        continue
                    target = row
                    for part in path[:-1]:  # media (histograms) arrive as nested items
                        target = target.setdefault(part, {})
                    target[path[-1]] = _history_value(item)
            elif kind == "metric":
                run.metrics[record.metric.name] = record.metric
            elif kind == "exit":
                run.exit_code = record.exit.exit_code
        return run

    def _update_config(self, config: pb.ConfigRecord) -> None:
        for item in config.update:
            key = _key(item)
            if not key.startswith("_"):
                self.config[key] = json.loads(item.value_json)
        for item in config.remove:
            self.config.pop(_key(item), None)

    def steps_with(self, key: str) -> list[int]:
        """The steps whose row holds ``key``, in order."""
        return sorted(step for step, row in self.rows.items() if key in row)

    @property
    def keys(self) -> set[str]:
        """Every metric key logged."""
        return set().union(*self.rows.values()) if self.rows else set()


def wandb_files(run_dir: Path) -> list[Path]:
    """The ``.wandb`` files under ``run_dir/wandb`` (in no particular order)."""
    return sorted((run_dir / "wandb").glob("*run-*/run-*.wandb"))


def read_finished(path: Path, timeout_s: float = 20.0) -> WandbRun:
    """Decode ``path`` once it holds the run's ``exit`` record.

    ``run.finish()`` can return before W&B's service has written the last records (it writes
    the log in another process), so a file read right after it may still be short.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        run = WandbRun.read(path)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def read_runs(run_dir: Path, *, finished: bool = True) -> list[WandbRun]:
    """Every W&B run under ``run_dir``, oldest first (by the start time ``wandb.init`` recorded).

    With ``finished``, waits until each run's ``exit`` record is written; without, reads what
    is there (a killed process leaves a log without one).
    """
    files = wandb_files(run_dir)
    assert files, f"no .wandb file under {run_dir / 'wandb'}"
    runs = [read_finished(path) if finished else WandbRun.read(path) for path in files]
    return sorted(runs, key=lambda run: run.start_time_ns)


def read_run(run_dir: Path, *, finished: bool = True) -> WandbRun:
    """The latest W&B run under ``run_dir``."""
    return read_runs(run_dir, finished=finished)[-1]
