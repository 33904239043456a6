"""The token stream: tokenized segments, each followed by the end-of-segment token.

The stream is built chunk by chunk: with a directory, tokens are appended to a file as they
are produced and the result is a read-only memory map, so a corpus larger than memory can
be tokenized and trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs
import numpy as np

from baseline.errors import DataError
from baseline.protocols import SplitPlan, TokenizerAdapter

ENCODE_CHUNK_SEGMENTS = 1024
TOKENS_FILENAME = "tokens.bin"
OFFSETS_FILENAME = "offsets.npy"
BYTE_COUNTS_FILENAME = "byte_counts.npy"
META_FILENAME = "meta.json"


@attrs.frozen
class TokenStream:
    """All tokens of a corpus in segment order, with each segment's boundaries.

    ``tokens[offsets[i]:offsets[i + 1]]`` is segment ``i`` including its end-of-segment
    token; ``byte_counts[i]`` is the UTF-8 size of its text.
    """

    tokens: np.ndarray
    offsets: np.ndarray
    byte_counts: np.ndarray

    @property
    def num_segments(self) -> int:
        """Number of segments."""
        return len(self.offsets) - 1

    @property
    def segment_token_counts(self) -> np.ndarray:
        """Tokens in each segment (end-of-segment token included)."""
        return np.diff(self.offsets)

    def ranges(self, segment_indices: np.ndarray) -> list[tuple[int, int]]:
        """Token ranges covering the given segments, adjacent segments merged into one range."""
        indices = np.unique(np.asarray(segment_indices, dtype=np.int64))
        if not len(indices):
            return []
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        runs = np.split(indices, breaks)
        return [(int(self.offsets[run[0]]), int(self.offsets[run[-1] + 1])) for run in runs]

    def token_count(self, segment_indices: np.ndarray) -> int:
        """Tokens in the given segments."""
        return int(self.segment_token_counts[np.asarray(segment_indices, dtype=np.int64)].sum())

    def byte_count(self, segment_indices: np.ndarray) -> int:
        """UTF-8 bytes of the given segments' text."""
        return int(self.byte_counts[np.asarray(segment_indices, dtype=np.int64)].sum())


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def token_dtype(vocab_size: int) -> np.dtype[np.unsignedinteger] | np.dtype[np.signedinteger]:
    """The smallest dtype holding every token id."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def build_token_stream(
    segments: Iterable[str], tokenizer: TokenizerAdapter, directory: Path | None = None
) -> TokenStream:
    """Tokenize ``segments`` in chunks, each segment followed by end-of-segment.

    With ``directory`` the tokens are appended to ``directory/tokens.bin`` chunk by chunk
    and returned as a read-only memory map (see :func:`open_token_stream`).
    """
    eos = tokenizer.end_of_segment_id
    dtype = token_dtype(tokenizer.vocab_size)
    pieces: list[np.ndarray] = []
    lengths: list[int] = []
    byte_counts: list[int] = []
    sink = (directory / TOKENS_FILENAME).open("wb") if directory is not None else None
    try:
        for chunk in _chunks(segments, ENCODE_CHUNK_SEGMENTS):
            encoded = tokenizer.encode_batch(chunk)
            sizes = [len(ids) + 1 for ids in encoded]
            flat = np.empty(sum(sizes), dtype=dtype)
            position = 0
            for ids, size in zip(encoded, sizes, strict=True):
                flat[position : position + size - 1] = ids
                flat[position + size - 1] = eos
                position += size
            if sink is not None:
                sink.write(flat.tobytes())
            else:
                pieces.append(flat)
            lengths.extend(sizes)
            byte_counts.extend(len(text.encode("utf-8")) for text in chunk)
    finally:
        if sink is not None:
            sink.close()
    if not lengths:
        raise DataError("the dataset yielded no segments")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    counts = np.asarray(byte_counts, dtype=np.int64)
    if directory is None:
        return TokenStream(np.concatenate(pieces), offsets, counts)
    np.save(directory / OFFSETS_FILENAME, offsets)
    np.save(directory / BYTE_COUNTS_FILENAME, counts)
    (directory / META_FILENAME).write_text(
        json.dumps({"dtype": dtype.name, "tokens": int(offsets[-1]), "segments": len(lengths)})
    )
    return open_token_stream(directory)


def open_token_stream(directory: Path) -> TokenStream:
    """Open a stream written by :func:`build_token_stream` as a read-only memory map."""
    meta = json.loads((directory / META_FILENAME).read_text())
    offsets = np.load(directory / OFFSETS_FILENAME)
    tokens = np.memmap(directory / TOKENS_FILENAME, dtype=np.dtype(meta["dtype"]), mode="r")
    if len(tokens) != meta["tokens"] or offsets[-1] != meta["tokens"]:
        raise DataError(f"{directory}: token cache is incomplete; delete the directory")
    return TokenStream(tokens, offsets, np.load(directory / BYTE_COUNTS_FILENAME))


def check_split_plan(plan: SplitPlan, num_segments: int) -> None:
    """Reject a split adapter's plan that is out of range or overlapping."""
    train, validation = np.asarray(plan.train), np.asarray(plan.validation)
    for label, indices in (("train", train), ("validation", validation)):
        if indices.size and (indices.min() < 0 or indices.max() >= num_segments):
            raise DataError(f"split returned {label} segment indices outside 0..{num_segments - 1}")
    if np.intersect1d(train, validation).size:
        raise DataError("split returned segments that are in both train and validation")
