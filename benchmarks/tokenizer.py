"""BPE training and encoding time on tiny Shakespeare (targets: under 1 s each).

Uses the vocabulary size of experiments/tiny_shakespeare.toml, and 1024 for reference.
"""

from __future__ import annotations

import tempfile
import time
import tomllib
from pathlib import Path

from _common import CORPUS, EXPERIMENT, machine, print_table

from baseline_bpe import BPETokenizerConfig
from baseline_bpe.tokenizer import BPETokenizer
from baseline_text import LocalTextDataset, LocalTextDatasetConfig

TARGET_S = 1.0


def measure(segments: list[str], vocab: int) -> tuple[float, float, int]:
    """Training seconds, encoding seconds and token count for a ``vocab``-token BPE."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = BPETokenizer(
            BPETokenizerConfig(vocab_path=str(Path(tmp) / "bpe.json"), base_vocab_size=vocab)
        )
        started = time.perf_counter()
        tokenizer.fit(iter(segments))
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        encoded = tokenizer.encode_batch(segments)
        encode_s = time.perf_counter() - started
    return train_s, encode_s, sum(len(ids) for ids in encoded)


def main() -> None:
    """Train and encode with each vocabulary size; print times and throughput."""
    segments = list(LocalTextDataset(LocalTextDatasetConfig(path=str(CORPUS))).segments())
    megabytes = sum(len(s.encode("utf-8")) for s in segments) / 1e6
    experiment_vocab = tomllib.loads(EXPERIMENT.read_text())["tokenizer"]["base_vocab_size"]
    rows = []
    for vocab in dict.fromkeys([experiment_vocab, 1024]):
        train_s, encode_s, tokens = measure(segments, vocab)
        for stage, seconds in (
            (f"train (vocab {vocab})", train_s),
            (f"encode -> {tokens:,} tokens", encode_s),
        ):
            rows.append(
                [
                    stage,
                    f"{seconds:.3f} s",
                    f"{TARGET_S} s",
                    f"{seconds / TARGET_S:.2f}",
                    f"{megabytes / seconds:.1f} MB/s",
                ]
            )
    print(machine())
    print_table(
        f"bpe on tiny Shakespeare ({megabytes:.2f} MB, {len(segments):,} segments)",
        ["stage", "time", "target", "ratio", "throughput"],
        rows,
    )


if __name__ == "__main__":
    main()
