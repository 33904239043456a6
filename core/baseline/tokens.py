"""The token stream: tokenized segments, each followed by the end-of-segment token."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs
import numpy as np

from baseline.errors import DataError
from baseline.protocols import SplitPlan, TokenizerAdapter

ENCODE_CHUNK_SEGMENTS = 1024


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

    def select(self, segment_indices: np.ndarray) -> np.ndarray:
        """Concatenated tokens of the given segments, in the given order."""
        if len(segment_indices) == 0:
            return np.zeros(0, dtype=self.tokens.dtype)
        starts = self.offsets[segment_indices]
        ends = self.offsets[segment_indices + 1]
        return np.concatenate([self.tokens[s:e] for s, e in zip(starts, ends, strict=True)])


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build_token_stream(segments: Iterable[str], tokenizer: TokenizerAdapter) -> TokenStream:
    """Tokenize ``segments`` in chunks and join them, each followed by end-of-segment."""
    eos = tokenizer.end_of_segment_id
    pieces: list[np.ndarray] = []
    lengths: list[int] = []
    byte_counts: list[int] = []
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    for chunk in _chunks(segments, ENCODE_CHUNK_SEGMENTS):
        for text, ids in zip(chunk, tokenizer.encode_batch(chunk), strict=True):
            array = np.empty(len(ids) + 1, dtype=dtype)
            array[:-1] = ids
            array[-1] = eos
            pieces.append(array)
            lengths.append(len(array))
            byte_counts.append(len(text.encode("utf-8")))
    if not pieces:
        raise DataError("the dataset yielded no segments")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return TokenStream(
        tokens=np.concatenate(pieces),
        offsets=offsets,
        byte_counts=np.asarray(byte_counts, dtype=np.int64),
    )


def check_split_plan(plan: SplitPlan, num_segments: int) -> None:
    """Reject a split adapter's plan that is out of range or overlapping."""
    train, validation = np.asarray(plan.train), np.asarray(plan.validation)
    for label, indices in (("train", train), ("validation", validation)):
        if indices.size and (indices.min() < 0 or indices.max() >= num_segments):
            raise DataError(f"split returned {label} segment indices outside 0..{num_segments - 1}")
    if np.intersect1d(train, validation).size:
        raise DataError("split returned segments that are in both train and validation")
