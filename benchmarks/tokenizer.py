"""BPE training and encoding time on tiny Shakespeare (targets: under 1 s each)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import CORPUS, machine, print_table

from baseline_bpe import BPETokenizerConfig
from baseline_bpe.tokenizer import BPETokenizer
from baseline_text import LocalTextDataset, LocalTextDatasetConfig

TARGET_S = 1.0


def main() -> None:
    """Train a 1024-token BPE on the corpus, encode it, print times and throughput."""
    segments = list(LocalTextDataset(LocalTextDatasetConfig(path=str(CORPUS))).segments())
    megabytes = sum(len(s.encode("utf-8")) for s in segments) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = BPETokenizer(
            BPETokenizerConfig(vocab_path=str(Path(tmp) / "bpe.json"), base_vocab_size=1024)
        )
        started = time.perf_counter()
        tokenizer.fit(iter(segments))
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        encoded = tokenizer.encode_batch(segments)
        encode_s = time.perf_counter() - started
    tokens = sum(len(ids) for ids in encoded)
    print(machine())
    print_table(
        f"bpe on tiny Shakespeare ({megabytes:.2f} MB, {len(segments):,} segments, "
        f"{tokens:,} tokens)",
        ["stage", "time", "target", "ratio", "throughput"],
        [
            [
                "train (vocab 1024)",
                f"{train_s:.3f} s",
                f"{TARGET_S} s",
                f"{train_s / TARGET_S:.2f}",
                f"{megabytes / train_s:.1f} MB/s",
            ],
            [
                "encode",
                f"{encode_s:.3f} s",
                f"{TARGET_S} s",
                f"{encode_s / TARGET_S:.2f}",
                f"{megabytes / encode_s:.1f} MB/s",
            ],
        ],
    )


if __name__ == "__main__":
    main()
