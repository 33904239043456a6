"""The token stream: tokenized segments, each followed by the end-of-segment token.

The stream is built chunk by chunk: with a directory, tokens are appended to a file as they
are produced and the result is a read-only memory map, so a corpus larger than memory can
be tokenized and trained on. A chunk is handed to the tokenizer's ``encode_batch`` whole
(a Rust tokenizer such as the ``bpe`` plugin's encodes it on every core), and the next chunk
is encoded in a worker thread while this one is written: memory holds at most three chunks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from baseline.data.segments import utf8_sizes
from baseline.errors import DataError
from baseline.plugins.calls import plugin_call
from baseline.plugins.output_checks import PluginOutputError, check_token_ids
from baseline.plugins.protocols import SplitPlan, TokenizerAdapter

#: A chunk handed to ``encode_batch`` holds at most this many segments, and stops at the
#: first segment that brings it to ``ENCODE_CHUNK_CHARS`` characters (so a chunk of long
#: documents stays small; a single longer segment is a chunk of its own).
ENCODE_CHUNK_SEGMENTS = 4096
ENCODE_CHUNK_CHARS = 1 << 20
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
    bounded by a few chunks, whatever the corpus size.
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
        for chunk, encoded in encoded_chunks(segments, tokenizer, label):
            flat, sizes = _flatten(chunk, encoded, tokenizer, eos, dtype)
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


def text_chunks(segments: Iterable[str]) -> Iterator[list[str]]:
    """Consecutive segments in lists of at most :data:`ENCODE_CHUNK_SEGMENTS`, each ending at
    the first segment that brings it to :data:`ENCODE_CHUNK_CHARS` characters."""
    chunk: list[str] = []
    chars = 0
    for text in segments:
        chunk.append(text)
        chars += len(text)
        if len(chunk) == ENCODE_CHUNK_SEGMENTS or chars >= ENCODE_CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def encoded_chunks(
    segments: Iterable[str], tokenizer: TokenizerAdapter, label: str
) -> Iterator[tuple[list[str], list[list[int]]]]:
    """Each chunk of :func:`text_chunks` with its ``encode_batch`` result, checked for length.

    The tokenizer encodes the next chunk in a worker thread while the caller handles this
    one and the dataset yields the one after: a tokenizer that releases the GIL (the Rust
    ``tokenizers`` library does, and encodes a batch on every core) keeps encoding while
    Python writes. ``encode_batch`` is called from that one thread, one call at a time.
    """

    def encode(chunk: list[str]) -> list[list[int]]:
        with plugin_call(label):
            encoded = tokenizer.encode_batch(chunk)
        if len(encoded) != len(chunk):
            raise PluginOutputError(
                f"encode_batch returned {len(encoded)} sequences for {len(chunk)} texts; it "
                "must return one list of ids per text"
            )
        return encoded

    in_flight: list[tuple[list[str], Future[list[list[int]]]]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline-encode") as worker:
        try:
            for chunk in text_chunks(segments):
                in_flight.append((chunk, worker.submit(encode, chunk)))
                if len(in_flight) == 2:
                    done, future = in_flight.pop(0)
                    yield done, future.result()
            while in_flight:
                done, future = in_flight.pop(0)
                yield done, future.result()
        finally:
            for _, future in in_flight:  # stopped early: the next chunk is not needed
                future.cancel()


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
#: The files of a stream directory that ``meta.json`` records.
STREAM_FILES = (TOKENS_FILENAME, OFFSETS_FILENAME, BYTE_COUNTS_FILENAME)


def stream_damage(directory: Path, *, read_files: bool = True) -> str | None:
    """What is wrong with a stream directory written by :func:`build_token_stream`, or
    ``None`` when every file has the size and SHA-256 recorded in its ``meta.json``.

    With ``read_files=False`` only ``meta.json`` and the files' sizes are checked: nothing
    is read but ``meta.json`` (what :mod:`baseline.data.token_cache` does on every cache
    hit; it hashes the files only when their stamps changed).
    """
    try:
        meta = json.loads((directory / META_FILENAME).read_text(encoding="utf-8"))
        recorded = meta["files"]
        expected = {
            name: (int(recorded[name]["bytes"]), str(recorded[name]["sha256"]))
            for name in STREAM_FILES
        }
    except (OSError, ValueError, KeyError, TypeError):
        return f"{META_FILENAME} is missing or unreadable"
    for name, (size, _) in expected.items():
        try:
            actual_size = (directory / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if actual_size != size:
            return f"{name} has {actual_size:,} bytes, {size:,} were written"
    if not read_files:
        return None
    for name, (_, sha256) in expected.items():
        if file_digest(directory / name)["sha256"] != sha256:
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
    for chunk, encoded in encoded_chunks(segments, tokenizer, label):
        flat, chunk_sizes = _flatten(chunk, encoded, tokenizer, eos, dtype)
        pieces.append(flat)
        sizes.append(chunk_sizes)
        byte_counts.append(utf8_sizes(chunk))
    if not sizes:
        raise DataError("the dataset yielded no segments")
    lengths = np.concatenate(sizes)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return TokenStream(np.concatenate(pieces), offsets, np.concatenate(byte_counts))


def _flatten(
    chunk: list[str],
    encoded: list[list[int]],
    tokenizer: TokenizerAdapter,
    eos: int,
    dtype: np.dtype[Any],
) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's tokens, each segment followed by ``eos``, and each segment's size.

    Ids are gathered as int64 and checked against the vocabulary (minimum and maximum of the
    chunk) before they are narrowed to ``dtype``.
    """
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(chunk))
    body = np.fromiter(
        itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum())
    )
    flat = np.insert(body, np.cumsum(lengths), eos)  # eos after each segment's ids
    check_token_ids(flat, tokenizer.vocab_size)
    return flat.astype(dtype), lengths + 1


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
