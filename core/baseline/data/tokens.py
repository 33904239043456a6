"""The token stream: tokenized segments, each followed by the end-of-segment token.

The stream is built chunk by chunk: with a directory, tokens are appended to a file as they
are produced and the result is a read-only memory map, so a corpus larger than memory can
be tokenized and trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from baseline.data.segments import chunks, utf8_sizes
from baseline.errors import DataError
from baseline.plugins.calls import plugin_call
from baseline.plugins.output_checks import PluginOutputError, check_token_ids
from baseline.plugins.protocols import SplitPlan, TokenizerAdapter

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
        indices = np.asarray(segment_indices, dtype=np.int64)
        if not len(indices):
            return []
        if not bool(np.all(indices[1:] > indices[:-1])):  # split adapters usually sort
            indices = np.unique(indices)
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        runs = np.split(indices, breaks)
        return [(int(self.offsets[run[0]]), int(self.offsets[run[-1] + 1])) for run in runs]

    def token_count(self, segment_indices: np.ndarray) -> int:
        """Tokens in the given segments."""
        return sum(end - start for start, end in self.ranges(segment_indices))

    def byte_count(self, segment_indices: np.ndarray) -> int:
        """UTF-8 bytes of the given segments' text."""
        return int(self.byte_counts[np.asarray(segment_indices, dtype=np.int64)].sum())


def token_dtype(vocab_size: int) -> np.dtype[np.unsignedinteger] | np.dtype[np.signedinteger]:
    """The smallest dtype holding every token id."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def build_token_stream(
    segments: Iterable[str],
    tokenizer: TokenizerAdapter,
    directory: Path | None = None,
    *,
    label: str = "tokenizer",
) -> TokenStream:
    """Tokenize ``segments`` in chunks, each segment followed by end-of-segment; an error of
    ``encode_batch`` names the tokenizer (``label``, see :func:`plugin_call`).

    With ``directory`` the tokens and the per-segment sizes are appended to files chunk by
    chunk and returned as read-only memory maps (see :func:`open_token_stream`): memory stays
    bounded by one chunk, whatever the corpus size.
    """
    if directory is None:
        return _build_in_memory(segments, tokenizer, label)
    eos = tokenizer.end_of_segment_id
    dtype = token_dtype(tokenizer.vocab_size)
    sizes_path = directory / (OFFSETS_FILENAME + ".sizes")
    bytes_path = directory / (BYTE_COUNTS_FILENAME + ".raw")
    segments_written = 0
    tokens_hash = hashlib.sha256()
    with (
        (directory / TOKENS_FILENAME).open("wb") as tokens_out,
        sizes_path.open("wb") as sizes_out,
        bytes_path.open("wb") as bytes_out,
    ):
        for chunk in chunks(segments, ENCODE_CHUNK_SEGMENTS):
            flat, sizes = _encode_chunk(chunk, tokenizer, eos, dtype, label)
            data = flat.tobytes()
            tokens_hash.update(data)
            tokens_out.write(data)
            sizes_out.write(sizes.tobytes())
            bytes_out.write(utf8_sizes(chunk).tobytes())
            segments_written += len(chunk)
    if not segments_written:
        raise DataError("the dataset yielded no segments")
    total = _write_offsets(sizes_path, directory / OFFSETS_FILENAME, segments_written)
    _write_npy(bytes_path, directory / BYTE_COUNTS_FILENAME, segments_written)
    sizes_path.unlink()
    bytes_path.unlink()
    files = {
        TOKENS_FILENAME: {
            "bytes": (directory / TOKENS_FILENAME).stat().st_size,
            "sha256": tokens_hash.hexdigest(),
        },
        **{
            name: file_digest(directory / name) for name in (OFFSETS_FILENAME, BYTE_COUNTS_FILENAME)
        },
    }
    (directory / META_FILENAME).write_text(
        json.dumps(
            {"dtype": dtype.name, "tokens": total, "segments": segments_written, "files": files}
        )
    )
    return open_token_stream(directory)


def file_digest(path: Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex digest}`` of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return {"bytes": size, "sha256": digest.hexdigest()}


_HASH_BLOCK = 8 << 20


def stream_damage(directory: Path) -> str | None:
    """What is wrong with a stream directory written by :func:`build_token_stream`, or
    ``None`` when every file has the size and SHA-256 recorded in its ``meta.json``."""
    try:
        meta = json.loads((directory / META_FILENAME).read_text(encoding="utf-8"))
        recorded = meta["files"]
        names = (TOKENS_FILENAME, OFFSETS_FILENAME, BYTE_COUNTS_FILENAME)
        expected = {
            name: (int(recorded[name]["bytes"]), str(recorded[name]["sha256"])) for name in names
        }
    except (OSError, ValueError, KeyError, TypeError):
        return f"{META_FILENAME} is missing or unreadable"
    for name, (size, sha256) in expected.items():
        path = directory / name
        try:
            actual_size = path.stat().st_size
        except OSError:
            return f"{name} is missing"
        if actual_size != size:
            return f"{name} has {actual_size:,} bytes, {size:,} were written"
        if file_digest(path)["sha256"] != sha256:
            return f"{name} does not match its recorded SHA-256"
    return None


def _build_in_memory(
    segments: Iterable[str], tokenizer: TokenizerAdapter, label: str
) -> TokenStream:
    eos = tokenizer.end_of_segment_id
    dtype = token_dtype(tokenizer.vocab_size)
    pieces: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    byte_counts: list[np.ndarray] = []
    for chunk in chunks(segments, ENCODE_CHUNK_SEGMENTS):
        flat, chunk_sizes = _encode_chunk(chunk, tokenizer, eos, dtype, label)
        pieces.append(flat)
        sizes.append(chunk_sizes)
        byte_counts.append(utf8_sizes(chunk))
    if not sizes:
        raise DataError("the dataset yielded no segments")
    lengths = np.concatenate(sizes)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return TokenStream(np.concatenate(pieces), offsets, np.concatenate(byte_counts))


def _encode_chunk(
    chunk: list[str], tokenizer: TokenizerAdapter, eos: int, dtype: np.dtype[Any], label: str
) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's tokens, each segment followed by ``eos``, and each segment's size.

    Ids are gathered as int64 and checked against the vocabulary (minimum and maximum of the
    chunk) before they are narrowed to ``dtype``.
    """
    with plugin_call(label):
        encoded = tokenizer.encode_batch(chunk)
    if len(encoded) != len(chunk):
        raise PluginOutputError(
            f"encode_batch returned {len(encoded)} sequences for {len(chunk)} texts; it must "
            "return one list of ids per text"
        )
    sizes = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
    flat = np.empty(int(sizes.sum()), dtype=np.int64)
    position = 0
    for ids, size in zip(encoded, sizes.tolist(), strict=True):
        flat[position : position + size - 1] = ids
        flat[position + size - 1] = eos
        position += size
    check_token_ids(flat, tokenizer.vocab_size)
    return flat.astype(dtype), sizes


#: Segments per block when turning the raw per-segment files into ``.npy`` arrays.
_BLOCK = 1 << 20


def _write_offsets(sizes_path: Path, offsets_path: Path, count: int) -> int:
    """``offsets.npy`` (``count + 1`` cumulative sizes) from the raw sizes, block by block."""
    sizes = np.memmap(sizes_path, dtype=np.int64, mode="r", shape=(count,))
    offsets = np.lib.format.open_memmap(offsets_path, mode="w+", dtype=np.int64, shape=(count + 1,))
    offsets[0] = 0
    running = 0
    for start in range(0, count, _BLOCK):
        block = np.cumsum(sizes[start : start + _BLOCK]) + running
        offsets[start + 1 : start + 1 + len(block)] = block
        running = int(block[-1])
    offsets.flush()
    del offsets, sizes
    return running


def _write_npy(raw_path: Path, npy_path: Path, count: int) -> None:
    """Copy ``count`` raw int64 values into an ``.npy`` file, block by block."""
    raw = np.memmap(raw_path, dtype=np.int64, mode="r", shape=(count,))
    out = np.lib.format.open_memmap(npy_path, mode="w+", dtype=np.int64, shape=(count,))
    for start in range(0, count, _BLOCK):
        out[start : start + _BLOCK] = raw[start : start + _BLOCK]
    out.flush()
    del out, raw


def open_token_stream(directory: Path) -> TokenStream:
    """Open a stream written by :func:`build_token_stream` as read-only memory maps."""
    meta = json.loads((directory / META_FILENAME).read_text())
    offsets = np.load(directory / OFFSETS_FILENAME, mmap_mode="r")
    tokens = np.memmap(directory / TOKENS_FILENAME, dtype=np.dtype(meta["dtype"]), mode="r")
    if len(tokens) != meta["tokens"] or offsets[-1] != meta["tokens"]:
        raise DataError(f"{directory}: token cache is incomplete; delete the directory")
    byte_counts = np.load(directory / BYTE_COUNTS_FILENAME, mmap_mode="r")
    return TokenStream(tokens, offsets, byte_counts)


def check_split_plan(plan: SplitPlan, num_segments: int) -> None:
    """Reject a split adapter's plan that is out of range or overlapping."""
    train, validation = np.asarray(plan.train), np.asarray(plan.validation)
    for label, indices in (("train", train), ("validation", validation)):
        if indices.size and (indices.min() < 0 or indices.max() >= num_segments):
            raise DataError(f"split returned {label} segment indices outside 0..{num_segments - 1}")
    # A mask (1 byte per segment) rather than sorted copies of both index arrays.
    in_train = np.zeros(num_segments, dtype=bool)
    in_train[train] = True
    if validation.size and in_train[validation].any():
        raise DataError("split returned segments that are in both train and validation")
