"""Peak memory of whole runs on ``hf_text`` corpora of growing size, streaming against not.

For each corpus size a text file is generated on disk from tiny Shakespeare (every copy has
15% of its words replaced by words drawn from a Zipf-distributed synthetic lexicon, so the
BPE learns real merges and no two copies are the same), and ``baseline-run`` trains on it in
a fresh process: dataset ``hf_text`` (``path = "text"``, one segment per non-blank line),
tokenizer ``bpe`` (trained on the corpus), a tiny ``baseline_decoder``, split ``holdout``,
a few optimizer steps. The same run is made with ``streaming = true`` and ``false``.

The peak RSS of each run is the child's own ``ru_maxrss`` (``os.wait4``). The peak anonymous
RSS (``RssAnon``: memory that must stay in RAM, unlike the pages of memory-mapped files such
as the Arrow table and the token cache, which the kernel can drop) and the per-phase peaks
are sampled from ``/proc/<pid>/status`` every 20 ms and attributed to the phase the run's log
says it is in (tokenizer training, tokenization, split and training). The figure is the
slope of the streaming peak between the smallest and the largest corpus, in bytes of RSS per
byte of corpus. Target: below 1, so that a corpus larger than memory trains (0 is memory
bounded by a constant).

    python benchmarks/hf_streaming_memory.py [--sizes 8 32 128] [--keep DIR]

Temporary files (corpora, Arrow cache, token caches, runs) go to a temporary directory that
is removed at the end; the largest size needs about 3.5 times its size in free disk
(corpus, token cache and Arrow cache).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import CORPUS, machine
from rich.console import Console
from rich.table import Table

DEFAULT_SIZES_MB = (8, 32, 128)
#: Streaming peak RSS added per byte of corpus: below 1, a corpus larger than memory trains.
TARGET_SLOPE = 1.0
#: Bytes of text held out for validation (the final validation pass reads all of it).
VALIDATION_BYTES = 250_000
SAMPLE_INTERVAL_S = 0.02
#: Phases of a run, each entered when its log line (a regex) appears.
PHASES = (
    ("load + tokenizer training", None),
    ("tokenization", re.compile(r"^tokenizer ready")),
    ("split + training", re.compile(r"^token stream:")),
)
SYLLABLES = [consonant + vowel for consonant in "bdfgklmnprstvz" for vowel in "aeiou"]
REPLACED_FRACTION = 0.15
LEXICON_SIZE = 50_000


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write about ``megabytes`` MB of perturbed tiny Shakespeare to ``path``; return bytes."""
    rng = np.random.default_rng(seed)
    lexicon = list(
        dict.fromkeys(
            "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 5))))
            for _ in range(LEXICON_SIZE)
        )
    )
    zipf = 1.0 / np.arange(1, len(lexicon) + 1)
    zipf /= zipf.sum()
    parts = re.split(r"([A-Za-z]+)", CORPUS.read_text(encoding="utf-8"))
    words = np.arange(1, len(parts), 2)  # odd entries are the words
    target = int(megabytes * 1e6)
    written = 0
    with path.open("w", encoding="utf-8") as sink:
        while written < target:
            chosen = words[rng.random(len(words)) < REPLACED_FRACTION]
            replacements = rng.choice(len(lexicon), size=len(chosen), p=zipf)
            copy = list(parts)
            for position, index in zip(chosen.tolist(), replacements.tolist(), strict=True):
                copy[position] = lexicon[index]
            text = "".join(copy)
            sink.write(text)
            written += len(text)  # ASCII: characters are bytes
    return written


def experiment(root: Path, corpus: Path, corpus_bytes: int, *, streaming: bool) -> Path:
    """Write the experiment TOML of one run and return its path."""
    mode = "streaming" if streaming else "arrow"
    train_fraction = max(0.5, 1.0 - VALIDATION_BYTES / corpus_bytes)
    text = f"""
[run]
project_name = "hf-memory"
artifacts_root = {json.dumps(str(root / "runs"))}
run_name = {json.dumps(mode)}
token_cache_dir = {json.dumps(str(root / f"token_cache_{mode}"))}
checkpoint_every_n_steps = 0

[dataset]
name = "hf_text"
path = "text"
data_files = [{json.dumps(str(corpus))}]
streaming = {json.dumps(streaming)}

[tokenizer]
name = "bpe"
base_vocab_size = 1024
vocab_path = {json.dumps(str(root / f"bpe_{mode}.json"))}

[model]
name = "baseline_decoder"
d_model = 32
n_heads = 2
layers = 1

[train]
max_steps = 5
batch_size = 8
seq_len = 64
device = "cpu"

[split]
name = "holdout"
train_fraction = {train_fraction!r}

[logging]
provider = "console"
log_every_n_steps = 5
"""
    path = root / f"{mode}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _memory(pid: int) -> tuple[int, int] | None:
    """Resident and anonymous resident bytes of ``pid`` (``None`` once it has exited)."""
    values = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(("VmRSS:", "RssAnon:")):
                    values[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        return None
    if len(values) < 2:
        return None
    return values["VmRSS"], values["RssAnon"]


def run_once(config: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``baseline-run config``; return its peak RSS, per-phase peaks, wall time and log."""
    command = [str(Path(sys.executable).parent / "baseline-run"), str(config)]
    started = time.perf_counter()
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    phase = [0]
    peaks = [0] * len(PHASES)
    anon_peaks = [0] * len(PHASES)
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.rstrip("\n"))
            for index, (_, marker) in enumerate(PHASES):
                if marker is not None and marker.search(line):
                    phase[0] = max(phase[0], index)

    def sample() -> None:
        while not done.is_set():
            memory = _memory(child.pid)
            if memory is not None:
                current = phase[0]
                peaks[current] = max(peaks[current], memory[0])
                anon_peaks[current] = max(anon_peaks[current], memory[1])
            time.sleep(SAMPLE_INTERVAL_S)

    reader = threading.Thread(target=read, daemon=True)
    sampler = threading.Thread(target=sample, daemon=True)
    reader.start()
    sampler.start()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, its pid still held
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    reader.join()
    _, status, usage = os.wait4(child.pid, 0)  # reaps it: its own ru_maxrss
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        sys.stderr.write("\n".join(lines[-40:]) + "\n")
        raise SystemExit(f"{' '.join(command)} failed with exit code {child.returncode}")
    return {
        "peak": usage.ru_maxrss * 1024,  # kilobytes on Linux
        "phases": peaks,
        "anon_phases": anon_peaks,
        "anon": max(anon_peaks),
        "wall": wall,
        "log": lines,
    }


def tree_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def mb(value: float) -> str:
    return f"{value / 1e6:,.0f} MB"


def main() -> None:
    """Generate the corpora one at a time, run both modes on each, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=float, nargs="+", default=DEFAULT_SIZES_MB, help="corpus sizes in MB"
    )
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (default: a temp dir)")
    args = parser.parse_args()
    if sys.platform != "linux":
        raise SystemExit("this benchmark reads /proc and ru_maxrss in kilobytes: Linux only")

    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        raise SystemExit(f"{args.keep} is not empty: every run starts from cold caches")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="hf-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(workdir / "hf_cache"),
        "WANDB_MODE": "offline",
        # Rust threads encode in parallel, as they do for a user by default (nox turns it off).
        "TOKENIZERS_PARALLELISM": "true",
        "PYTHONUNBUFFERED": "1",
    }
    results: list[dict[str, Any]] = []
    try:
        for size in args.sizes:
            root = workdir / f"{size:g}MB"
            root.mkdir()
            corpus = root / "corpus.txt"
            started = time.perf_counter()
            corpus_bytes = write_corpus(corpus, size)
            print(f"{size:g} MB corpus written ({time.perf_counter() - started:.1f} s)", flush=True)
            row: dict[str, Any] = {"bytes": corpus_bytes}
            for streaming in (True, False):
                mode = "streaming" if streaming else "arrow"
                outcome = run_once(experiment(root, corpus, corpus_bytes, streaming=streaming), env)
                data = json.loads((root / "runs" / mode / "run_config.json").read_text())["data"]
                outcome["segments"] = data["segments"]
                outcome["tokens"] = data["train_tokens"] + data["validation_tokens"]
                outcome["token_cache"] = tree_bytes(root / f"token_cache_{mode}")
                outcome["arrow_cache"] = tree_bytes(workdir / "hf_cache")
                row[mode] = outcome
                print(
                    f"  streaming = {json.dumps(streaming)}: peak RSS {mb(outcome['peak'])}, "
                    f"{outcome['wall']:.1f} s",
                    flush=True,
                )
                shutil.rmtree(workdir / "hf_cache", ignore_errors=True)
                if args.keep is None:  # one mode's caches on disk at a time
                    shutil.rmtree(root / f"token_cache_{mode}")
                    shutil.rmtree(root / "runs" / mode)
            results.append(row)
            if args.keep is None:
                shutil.rmtree(root)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)

    report(results)


def report(results: list[dict[str, Any]]) -> None:
    """Print the side-by-side table, the per-phase table and the growth figures."""
    rows = []
    phase_rows = []
    for row in results:
        streamed, arrow = row["streaming"], row["arrow"]
        rows.append(
            [
                mb(row["bytes"]),
                f"{streamed['segments']:,}",
                f"{streamed['tokens'] / 1e6:,.1f} M",
                mb(streamed["peak"]),
                mb(arrow["peak"]),
                f"{streamed['peak'] / arrow['peak']:.2f}",
                mb(streamed["anon"]),
                mb(arrow["anon"]),
                mb(streamed["token_cache"]),
                mb(arrow["arrow_cache"]),
            ]
        )
        for mode, outcome in (("streaming", streamed), ("not streaming", arrow)):
            phase_rows.append(
                [
                    mb(row["bytes"]),
                    mode,
                    *(
                        f"{peak / 1e6:,.0f} / {anon / 1e6:,.0f} MB"
                        for peak, anon in zip(
                            outcome["phases"], outcome["anon_phases"], strict=True
                        )
                    ),
                    mb(outcome["peak"]),
                    f"{outcome['wall']:.0f} s",
                ]
            )
    print(machine())
    console = Console(width=132)
    console.print(
        table(
            "peak RSS of a whole baseline-run (hf_text + bpe + baseline_decoder + holdout, "
            "5 steps)",
            [
                "corpus",
                "segments",
                "tokens",
                "RSS stream",
                "RSS no-stream",
                "ratio",
                "anon stream",
                "anon no-stream",
                "token cache",
                "Arrow cache",
            ],
            rows,
        )
    )
    console.print(
        table(
            f"peak RSS / anonymous RSS by phase (sampled every {SAMPLE_INTERVAL_S * 1000:.0f} "
            "ms), and the exact peak RSS",
            ["corpus", "mode", *(name for name, _ in PHASES), "peak", "wall"],
            phase_rows,
        )
    )
    first, last = results[0], results[-1]
    if last is first:
        return
    extra = last["streaming"]["peak"] - first["streaming"]["peak"]
    slope = extra / (last["bytes"] - first["bytes"])
    per_segment = extra / (last["streaming"]["segments"] - first["streaming"]["segments"])
    anon_slope = (last["streaming"]["anon"] - first["streaming"]["anon"]) / (
        last["bytes"] - first["bytes"]
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    largest = (
        f"{(memory - first['streaming']['peak']) / slope / 1e9 + first['bytes'] / 1e9:,.1f} GB"
        if slope > 0
        else "unbounded"
    )
    print(
        f"streaming: peak RSS +{mb(extra)} for +{mb(last['bytes'] - first['bytes'])} of corpus: "
        f"{slope:.2f} bytes of RSS per corpus byte ({per_segment:.0f} per segment; anonymous "
        f"memory: {anon_slope:.2f} per corpus byte); target < "
        f"{TARGET_SLOPE:g}, ratio {slope / TARGET_SLOPE:.2f}. Largest such corpus that trains in "
        f"this machine's {memory / 2**30:.0f} GiB at this slope: {largest}"
    )


def table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    """A rich table, first column left-aligned, the others right-aligned."""
    result = Table(title=title)
    for column in columns:
        result.add_column(column, justify="left" if column in columns[:1] else "right")
    for row in rows:
        result.add_row(*row)
    return result


if __name__ == "__main__":
    main()
