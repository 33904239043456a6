"""Cost of the full check of a token-cache entry (sizes and SHA-256 of every file).

Every cache hit paid it before entries had stamps; now a hit pays it only when a file's stamp
changed (``baseline.data.token_cache.entry_damage``; ``benchmarks/token_cache_start.py``
times whole starts on a hit). Builds the tiny Shakespeare entry (byte-level ids) with
``load_or_build`` and writes a synthetic 100 MB entry, then times
``baseline.data.tokens.stream_damage`` (best of several runs, warm page cache).
Run: ``.venv/bin/python benchmarks/cache_checksum.py``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from baseline.data.token_cache import load_or_build
from baseline.data.tokens import META_FILENAME, file_digest, stream_damage
from baseline.testing import RecordingTokenizer, RecordingTokenizerConfig

CORPUS = Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare.txt"


def best(work: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timings, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    """Print the size and check time of both entries."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        segments = [s for s in CORPUS.read_text(encoding="utf-8").split("\n\n") if s.strip()]
        tokenizer = RecordingTokenizer(RecordingTokenizerConfig(record_path=str(tmp / "fit")))
        load_or_build(tmp / "cache", "tiny", lambda: iter(segments), tokenizer)
        entry = tmp / "cache" / "tiny"
        size = sum(p.stat().st_size for p in entry.iterdir())
        seconds = best(lambda: stream_damage(entry), 5)
        print(f"tiny Shakespeare entry: {size / 1e6:.2f} MB, check {seconds * 1e3:.1f} ms")

        big = tmp / "synthetic"
        big.mkdir()
        tokens = 50_000_000
        np.random.default_rng(0).integers(0, 8192, tokens, dtype=np.uint16).tofile(
            big / "tokens.bin"
        )
        np.save(big / "offsets.npy", np.arange(0, tokens + 1, 500, dtype=np.int64))
        np.save(big / "byte_counts.npy", np.full(tokens // 500, 1000, dtype=np.int64))
        names = ("tokens.bin", "offsets.npy", "byte_counts.npy")
        meta = {
            "dtype": "uint16",
            "tokens": tokens,
            "segments": tokens // 500,
            "files": {name: file_digest(big / name) for name in names},
        }
        (big / META_FILENAME).write_text(json.dumps(meta))
        assert stream_damage(big) is None
        size = sum(p.stat().st_size for p in big.iterdir())
        seconds = best(lambda: stream_damage(big), 3)
        print(f"synthetic entry: {size / 1e6:.1f} MB, check {seconds:.3f} s")


if __name__ == "__main__":
    main()
