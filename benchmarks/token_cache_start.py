"""Start cost on a token-cache hit against corpus size; tokenizing speed and memory of a new
corpus. Both against the previous behaviour, in the same invocation.

Corpora are generated in a temporary directory: tiny Shakespeare repeated, 15% of the words
of every copy replaced by words of a synthetic lexicon (``hf_streaming_memory.write_corpus``),
dataset ``local_text`` (``"\\n\\n"`` segments), tokenizer ``bpe`` (vocabulary 4096, fitted once
on the smallest corpus and shared), split ``holdout``: ``experiments/tiny_shakespeare.toml``.

(a) **Start on a cache hit.** For each size, a first ``prepare_data`` measures the corpus,
tokenizes and caches it. Then the data preparation of a start on that cache hit is timed
(fresh adapters, as in a new process or on another ``torchrun`` rank; warm page cache; best
of ``--repeats``) two ways, interleaved: *now* (the corpus and the cache entry are stat'ed
against their recorded stamps: nothing is read but small records) and *previous* (every start
read the corpus in a full measuring pass, hashed it for the fingerprint and hashed the whole
cache entry: emulated by switching off the measured records and the entry stamps).

(b) **Tokenizing a new corpus** into a cache entry (``build_token_stream`` streaming the
corpus file segment by segment), each in a fresh process whose peak RSS is its own
(``VmHWM`` at its end: ``ru_maxrss`` of a child would count the parent it was forked
from), fastest of ``--rounds`` interleaved rounds: per-segment ``Tokenizer.encode`` (the
reference); the previous build (``encode_batch`` of 1024 segments on every core, in the
calling thread); now, on one core (``TOKENIZERS_PARALLELISM=false``) and on every core.
"imports only" is the floor: a process that loads the tokenizer and the modules and
tokenizes nothing. On a shared machine, "machine busy" (cores busy in all during the run,
from ``/proc/stat``) beside the run's own CPU/wall tells whether other work took the cores.

    python benchmarks/token_cache_start.py [--sizes 1 10 100] [--reference-mb 100]
        [--repeats 3] [--rounds 2] [--parts start tokenize]

Needs about 4 times the largest size in free temporary disk; removes all it wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import EXPERIMENT, machine, print_table

VOCAB = 4096
BLOCK = 1 << 20
START_COLUMNS = [
    "corpus",
    "segments",
    "tokens",
    "cache entry",
    "first start",
    "previous hit",
    "now hit",
    "ratio",
]
TOKEN_COLUMNS = [
    "encoding",
    "corpus",
    "tokens",
    "time",
    "speed",
    "its CPU/wall",
    "machine busy",
    "peak RSS",
]


def corpus_path(root: Path, megabytes: float) -> Path:
    """The corpus of ``megabytes`` MB under ``root``, written on first use."""
    path = root / f"corpus-{megabytes:g}MB.txt"
    if not path.exists():
        from hf_streaming_memory import write_corpus

        write_corpus(path, megabytes)
    return path


# -- (a) start on a cache hit ------------------------------------------------------------------


def setup(root: Path, corpus: Path, vocab: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The experiment on ``corpus``: config, resolved experiment and config data."""
    from baseline.experiment.loading import load_experiment
    from baseline.experiment.validation import validate_experiment_config
    from baseline.plugins.discovery import default_plugins

    registry = default_plugins().registry
    overrides = [
        f"dataset.path={json.dumps(str(corpus))}",
        f"tokenizer.vocab_path={json.dumps(str(vocab))}",
        f"tokenizer.base_vocab_size={VOCAB}",
        f"run.artifacts_root={json.dumps(str(root / 'runs'))}",
        f"run.token_cache_dir={json.dumps(str(root / f'cache-{corpus.stem}'))}",
    ]
    config = load_experiment(EXPERIMENT, registry, overrides)
    resolved = validate_experiment_config(config, registry)
    return config, resolved, dict(resolved.config_data)


@contextlib.contextmanager
def previous_start() -> Iterator[None]:
    """The start path as it was: no measured records, every cache entry hashed in full."""
    from baseline.data import preparation, token_cache, tokens

    saved = (preparation.load_record, preparation.save_record, token_cache.entry_damage)
    preparation.load_record = lambda *args: None  # type: ignore[assignment]
    preparation.save_record = lambda *args: False  # type: ignore[assignment]
    token_cache.entry_damage = tokens.stream_damage  # type: ignore[assignment]
    try:
        yield
    finally:
        preparation.load_record, preparation.save_record, token_cache.entry_damage = saved


def time_start(config: Any, resolved: Any, data: dict[str, Any]) -> float:
    """Seconds of one ``prepare_data`` with fresh adapters."""
    from baseline.data.preparation import prepare_data

    components = resolved.build_components()
    started = time.perf_counter()
    prepare_data(config, components, data)
    return time.perf_counter() - started


def start_costs(root: Path, sizes: list[float], repeats: int) -> list[list[str]]:
    """Rows of table (a)."""
    import logging

    import numpy as np

    logging.getLogger("baseline").setLevel(logging.WARNING)
    vocab = root / "bpe.json"
    rows = []
    for megabytes in sizes:
        corpus = corpus_path(root, megabytes)
        config, resolved, data = setup(root, corpus, vocab)
        first = time_start(config, resolved, data)  # measures, (fits), tokenizes, caches
        now, previous = [], []
        for _ in range(repeats):
            now.append(time_start(config, resolved, data))
            with previous_start():
                previous.append(time_start(config, resolved, data))
        cache = root / f"cache-{corpus.stem}"
        [entry] = [p for p in cache.iterdir() if not p.name.startswith(".")]
        tokens = np.memmap(entry / "tokens.bin", dtype=np.uint16, mode="r")
        segments = len(np.load(entry / "offsets.npy", mmap_mode="r")) - 1
        entry_mb = sum(p.stat().st_size for p in entry.iterdir()) / 1e6
        rows.append(
            [
                f"{corpus.stat().st_size / 1e6:.1f} MB",
                f"{segments:,}",
                f"{len(tokens) / 1e6:.1f} M",
                f"{entry_mb:.1f} MB",
                f"{first:.1f} s",
                f"{min(previous):.3f} s",
                f"{min(now) * 1e3:.1f} ms",
                f"{min(previous) / min(now):.0f}x",
            ]
        )
        del tokens
    return rows


# -- (b) tokenizing a new corpus ---------------------------------------------------------------


def stream_segments(path: Path) -> Iterator[str]:
    """The non-blank ``"\\n\\n"`` segments of ``path``, read 1 MiB at a time."""
    rest = ""
    with path.open(encoding="utf-8") as handle:
        while block := handle.read(BLOCK):
            parts = (rest + block).split("\n\n")
            rest = parts.pop()
            yield from (part for part in parts if part.strip())
    if rest.strip():
        yield rest


class PerSegment:
    """The ``bpe`` adapter encoding one text at a time (``Tokenizer.encode``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.vocab_size = inner.vocab_size
        self.end_of_segment_id = inner.end_of_segment_id

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        encode = self.inner.tokenizer.encode
        return [encode(text, add_special_tokens=False).ids for text in texts]


def use_previous_build() -> None:
    """The build as it was: 1024 segments per ``encode_batch`` (with offsets), each chunk
    encoded and written in turn in the calling thread."""
    from baseline.data import tokens
    from baseline.data.segments import chunks
    from baseline.plugins.calls import plugin_call
    from baseline_bpe.tokenizer import BPETokenizer

    def sequential(segments: Any, tokenizer: Any, label: str) -> Iterator[Any]:
        for chunk in chunks(segments, 1024):
            with plugin_call(label):
                yield chunk, tokenizer.encode_batch(chunk)

    def encode_batch(self: Any, texts: Any) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]

    tokens.encoded_chunks = sequential  # type: ignore[assignment]
    BPETokenizer.encode_batch = encode_batch  # type: ignore[method-assign]


def worker(mode: str, corpus: Path, vocab: Path, out: Path) -> None:
    """Tokenize ``corpus`` into ``out`` as ``mode`` says; print seconds and tokens as JSON."""
    from baseline.data.tokens import build_token_stream
    from baseline_bpe import BPETokenizerConfig
    from baseline_bpe.tokenizer import BPETokenizer

    tokenizer = BPETokenizer(BPETokenizerConfig(vocab_path=str(vocab), base_vocab_size=VOCAB))
    tokenizer.load(vocab)
    adapter: Any = PerSegment(tokenizer) if mode == "per-segment" else tokenizer
    if mode == "previous":
        use_previous_build()
    started, cpu = time.perf_counter(), time.process_time()
    tokens = 0
    if mode != "imports":
        tokens = len(build_token_stream(stream_segments(corpus), adapter, out).tokens)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    status = Path("/proc/self/status").read_text().splitlines()
    [peak_kib] = [int(line.split()[1]) for line in status if line.startswith("VmHWM:")]
    result = {"seconds": seconds, "cpu": cpu, "tokens": tokens, "peak_rss_mb": peak_kib / 1024}
    print(json.dumps(result))


MODES = {
    # mode: (label, TOKENIZERS_PARALLELISM)
    "imports": ("imports only (floor)", "true"),
    "per-segment": ("per-segment encode (reference)", "false"),
    "previous": ("previous build: encode_batch, 1024 segments, every core", "true"),
    "one-core": ("now: batched, 1 core", "false"),
    "batched": ("now: batched, every core", "true"),
}


def busy_jiffies() -> tuple[int, int]:
    """``(busy, total)`` CPU jiffies of the whole machine, all cores (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def run_worker(mode: str, corpus: Path, vocab: Path, out: Path) -> dict[str, Any]:
    """Run one worker process; its result (seconds, CPU seconds, tokens, peak RSS) and how
    many cores the whole machine kept busy meanwhile (``machine``)."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": MODES[mode][1]}
    busy, total = busy_jiffies()
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", mode, str(corpus), str(vocab), str(out)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        check=True,
    )
    busy_after, total_after = busy_jiffies()
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    cores = os.cpu_count() or 1
    result["machine"] = (busy_after - busy) / max(1, (total_after - total) / cores)
    return result


def tokenizing(root: Path, megabytes: float, reference_mb: float, rounds: int) -> list[list[str]]:
    """Rows of table (b): each mode's fastest of ``rounds`` interleaved rounds."""
    import shutil

    vocab = root / "bpe.json"
    plan = [("imports", megabytes), ("per-segment", reference_mb), ("previous", megabytes)]
    plan += [("one-core", megabytes), ("batched", megabytes), ("batched", min(10.0, megabytes))]
    best: dict[tuple[str, float], dict[str, Any]] = {}
    for _ in range(rounds):
        for mode, size in plan:
            out = root / f"entry-{mode}"
            out.mkdir()
            result = run_worker(mode, corpus_path(root, size), vocab, out)
            shutil.rmtree(out)
            kept = best.get((mode, size))
            if kept is None or result["seconds"] < kept["seconds"]:
                best[(mode, size)] = result
    rows = []
    for mode, size in plan:
        result = best[(mode, size)]
        corpus_mb = corpus_path(root, size).stat().st_size / 1e6
        worked = bool(result["tokens"])
        rows.append(
            [
                MODES[mode][0],
                f"{corpus_mb:.1f} MB" if worked else "-",
                f"{result['tokens'] / 1e6:.1f} M" if worked else "-",
                f"{result['seconds']:.1f} s" if worked else "-",
                f"{corpus_mb / result['seconds']:.2f} MB/s" if worked else "-",
                f"{result['cpu'] / result['seconds']:.2f}" if worked else "-",
                f"{result['machine']:.2f}",
                f"{result['peak_rss_mb']:.0f} MB",
            ]
        )
    return rows


def main() -> None:
    """Build the corpora, time both parts and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 100])
    parser.add_argument("--reference-mb", type=float, default=None, help="per-segment corpus")
    parser.add_argument("--repeats", type=int, default=3, help="hit starts timed per size")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of tokenizing runs")
    parser.add_argument("--parts", nargs="+", choices=["start", "tokenize"], default=None)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, corpus, vocab, out = args.worker
        worker(mode, Path(corpus), Path(vocab), Path(out))
        return
    sizes = sorted(args.sizes)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="token-cache-start-") as name:
        root = Path(name)
        parts = args.parts or ["start", "tokenize"]
        start_rows = start_costs(root, sizes, args.repeats) if "start" in parts else []
        if "tokenize" in parts:
            if not (root / "bpe.json").exists():  # fitted by the first start otherwise
                start_costs(root, sizes[:1], 1)
            reference = args.reference_mb or sizes[-1]
            token_rows = tokenizing(root, sizes[-1], reference, args.rounds)
        else:
            token_rows = []
    print(machine())
    print(
        f"{datetime.date.today()}, {time.perf_counter() - started:.0f} s in all; load average "
        f"(1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    tables = []
    if start_rows:
        tables.append((START_COLUMNS, start_rows))
        print_table(
            "(a) data preparation of a start on a token-cache hit (best of "
            f"{args.repeats}; previous = full pass + corpus hash + entry hash)",
            START_COLUMNS,
            start_rows,
        )
    if token_rows:
        tables.append((TOKEN_COLUMNS, token_rows))
        print_table(
            f"(b) tokenizing a new corpus into a cache entry (fresh process each, fastest of "
            f"{args.rounds}; its CPU/wall: cores it kept busy; machine busy: cores busy in all, "
            "other users included)",
            TOKEN_COLUMNS,
            token_rows,
        )
    for columns, rows in tables:  # the same, for docs/performance.md
        print()
        for line in (columns, ["---"] * len(columns), *rows):
            print("| " + " | ".join(line) + " |")


if __name__ == "__main__":
    main()
