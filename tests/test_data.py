"""Token stream, windows and batches."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import baseline.data.tokens as tokens_module
from baseline.data.tokens import (
    build_token_stream,
    check_split_plan,
    encoded_chunks,
    open_token_stream,
    text_chunks,
)
from baseline.data.windows import EvalWindows, TrainWindows, window_starts
from baseline.errors import DataError, PluginError
from baseline.plugins.protocols import SplitPlan


class CharTokenizer:
    """A real (if simple) tokenizer: one id per code point below 128."""

    vocab_size = 129
    end_of_segment_id = 128

    def encode_batch(self, texts):  # type: ignore[no-untyped-def]
        return [[ord(c) for c in t] for t in texts]


def test_token_stream_joins_segments_with_end_of_segment() -> None:
    stream = build_token_stream(["ab", "c", "de"], CharTokenizer())  # type: ignore[arg-type]
    assert stream.tokens.tolist() == [97, 98, 128, 99, 128, 100, 101, 128]
    assert stream.offsets.tolist() == [0, 3, 5, 8]
    assert stream.segment_token_counts.tolist() == [3, 2, 3]
    assert stream.byte_counts.tolist() == [2, 1, 2]
    assert stream.ranges(np.array([2, 0])) == [(0, 3), (5, 8)]
    assert stream.ranges(np.array([1, 2, 0])) == [(0, 8)]
    assert stream.token_count(np.array([0, 2])) == 6 and stream.byte_count(np.array([1])) == 1


def test_empty_stream_is_an_error() -> None:
    with pytest.raises(DataError, match="no segments"):
        build_token_stream([], CharTokenizer())  # type: ignore[arg-type]


def test_split_plan_checks() -> None:
    with pytest.raises(DataError, match="both train and validation"):
        check_split_plan(SplitPlan(np.array([0, 1]), np.array([1])), 3)
    with pytest.raises(DataError, match="outside"):
        check_split_plan(SplitPlan(np.array([0, 5]), np.array([1])), 3)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 300), st.integers(1, 40), st.integers(1, 40))
def test_window_starts_cover_full_windows_only(num_tokens: int, seq_len: int, stride: int) -> None:
    starts = window_starts(num_tokens, seq_len, stride)
    assert all(start + seq_len + 1 <= num_tokens for start in starts)
    if len(starts):
        assert starts[0] == 0 and np.all(np.diff(starts) == stride)
        assert starts[-1] + stride + seq_len + 1 > num_tokens  # no full window left out


def test_train_batches_are_windows_of_the_stream_and_deterministic() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    windows = TrainWindows(
        tokens, [(0, 1000)], seq_len=8, stride=4, batch_size=5, data_fraction=0.5, seed=3
    )
    assert windows.num_windows == int(len(window_starts(1000, 8, 4)) * 0.5)
    batches = list(windows.batches(epoch=0))
    assert len(batches) == windows.steps_per_epoch
    for batch in batches:
        assert batch.shape == (5, 9)
        assert torch.all(batch[:, 1:] - batch[:, :-1] == 1)  # consecutive tokens
        assert torch.all(batch[:, 0] % 4 == 0) and torch.all(batch[:, 0] < windows.num_windows * 4)
    again = list(
        TrainWindows(
            tokens, [(0, 1000)], seq_len=8, stride=4, batch_size=5, data_fraction=0.5, seed=3
        ).batches(0)
    )
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    other_epoch = list(windows.batches(epoch=1))
    assert not all(torch.equal(a, b) for a, b in zip(batches, other_epoch, strict=True))
    resumed = list(windows.batches(epoch=0, start_batch=3))
    assert all(torch.equal(a, b) for a, b in zip(batches[3:], resumed, strict=True))


def test_eval_windows_cover_the_split_once() -> None:
    tokens = np.arange(105, dtype=np.int32)
    windows = EvalWindows(tokens, [(0, 105)], seq_len=10, batch_size=4)
    batches = list(windows.batches())
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    firsts = torch.cat([b[:, 0] for b in batches]).tolist()
    assert firsts == list(range(0, 100, 10))


def test_windows_never_cross_between_ranges() -> None:
    tokens = np.arange(100, dtype=np.int32)
    windows = TrainWindows(
        tokens, [(0, 30), (50, 75)], seq_len=9, stride=5, batch_size=1, data_fraction=1.0, seed=0
    )
    starts = sorted(windows.starts.tolist())
    assert starts == [0, 5, 10, 15, 20, 50, 55, 60, 65]
    for batch in windows.batches(0):
        first, last = int(batch[0, 0]), int(batch[0, -1])
        assert (first < 30 and last < 30) or (first >= 50 and last < 75)


def test_stream_on_disk_is_a_memory_map(tmp_path) -> None:  # type: ignore[no-untyped-def]
    stream = build_token_stream(["ab", "c"], CharTokenizer(), tmp_path)  # type: ignore[arg-type]
    assert isinstance(stream.tokens, np.memmap)
    assert stream.tokens.tolist() == [97, 98, 128, 99, 128]
    assert open_token_stream(tmp_path).offsets.tolist() == [0, 3, 5]


@settings(max_examples=40, deadline=None)
@given(
    texts=st.lists(st.text(alphabet="abcdé \n", max_size=12), min_size=1, max_size=60),
    block=st.integers(1, 7),
    chunk=st.integers(1, 9),
    chars=st.integers(1, 30),
)
def test_stream_on_disk_equals_the_in_memory_one(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str], block: int, chunk: int, chars: int
) -> None:
    """Sizes and offsets go to disk chunk by chunk and are assembled in blocks: same result."""
    import baseline.data.tokens as tokens_module

    tokenizer = CharTokenizer()
    tokenizer.encode_batch = lambda batch: [[min(ord(c), 127) for c in t] for t in batch]  # type: ignore[method-assign]
    expected = build_token_stream(texts, tokenizer)  # type: ignore[arg-type]
    directory = tmp_path_factory.mktemp("stream")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tokens_module, "_BLOCK", block)
        patch.setattr(tokens_module, "ENCODE_CHUNK_SEGMENTS", chunk)
        patch.setattr(tokens_module, "ENCODE_CHUNK_CHARS", chars)
        on_disk = build_token_stream(texts, tokenizer, directory)  # type: ignore[arg-type]
    assert on_disk.tokens.tolist() == expected.tokens.tolist()
    assert on_disk.offsets.tolist() == expected.offsets.tolist()
    assert on_disk.byte_counts.tolist() == [len(t.encode()) for t in texts]
    assert sorted(p.name for p in directory.iterdir()) == [
        "byte_counts.npy",
        "meta.json",
        "offsets.npy",
        "tokens.bin",
    ]
    reopened = open_token_stream(directory)
    everything = np.arange(len(texts))
    assert reopened.token_count(everything) == len(expected.tokens)
    assert reopened.byte_count(everything) == sum(len(t.encode()) for t in texts)


def test_split_plan_check_takes_unsorted_indices() -> None:
    check_split_plan(SplitPlan(np.array([3, 0]), np.array([2, 1])), 4)
    with pytest.raises(DataError, match="both train and validation"):
        check_split_plan(SplitPlan(np.array([3, 0]), np.array([2, 3])), 4)


def test_chunks_are_bounded_by_segments_and_by_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_module, "ENCODE_CHUNK_SEGMENTS", 4)
    monkeypatch.setattr(tokens_module, "ENCODE_CHUNK_CHARS", 10)
    texts = ["a"] * 9 + ["bbbbbb", "cccccc", "d", "e" * 25, "f"]
    chunks = list(text_chunks(texts))
    assert [t for chunk in chunks for t in chunk] == texts
    assert chunks == [
        ["a"] * 4,
        ["a"] * 4,
        ["a", "bbbbbb", "cccccc"],  # stops at the segment that reaches 10 characters
        ["d", "e" * 25],  # a long segment ends its chunk (alone if it comes first)
        ["f"],
    ]


class WatchingTokenizer(CharTokenizer):
    """Records, for each ``encode_batch`` call, its thread, whether another call was running,
    and how many segments the dataset had yielded by then."""

    def __init__(self, yielded: list[int], fail_at: int | None = None) -> None:
        self.yielded = yielded
        self.fail_at = fail_at
        self.calls: list[tuple[str, bool, int]] = []
        self.running = threading.Lock()

    def encode_batch(self, texts):  # type: ignore[no-untyped-def]
        overlapping = not self.running.acquire(blocking=False)
        try:
            if self.fail_at is not None and len(self.calls) == self.fail_at:
                raise RuntimeError("the tokenizer broke")
            self.calls.append((threading.current_thread().name, overlapping, self.yielded[0]))
            time.sleep(0.002)  # the caller reads ahead meanwhile, as far as it may
            return super().encode_batch(texts)
        finally:
            if not overlapping:
                self.running.release()


def counted(texts: list[str], yielded: list[int]):  # type: ignore[no-untyped-def]
    for text in texts:
        yielded[0] += 1
        yield text


def test_encoding_runs_on_one_worker_thread_and_reads_at_most_one_chunk_ahead(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(tokens_module, "ENCODE_CHUNK_SEGMENTS", 10)
    texts = [f"segment {i}" for i in range(95)]
    yielded = [0]
    tokenizer = WatchingTokenizer(yielded)
    stream = build_token_stream(counted(texts, yielded), tokenizer, tmp_path)  # type: ignore[arg-type]
    assert stream.num_segments == 95
    assert stream.tokens.tolist() == build_token_stream(texts, CharTokenizer()).tokens.tolist()  # type: ignore[arg-type]
    threads = {name for name, _, _ in tokenizer.calls}
    assert len(threads) == 1 and threading.main_thread().name not in threads
    assert not any(overlapping for _, overlapping, _ in tokenizer.calls)
    for index, (_, _, seen) in enumerate(tokenizer.calls):
        # Chunk ``index`` is encoded while chunk ``index - 1`` is written: the dataset is at
        # most one chunk further (memory holds three chunks, whatever the corpus size).
        assert seen <= (index + 2) * 10, (index, seen)


def encode_workers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("baseline-encode")]


def test_a_tokenizer_error_stops_the_build_and_names_the_tokenizer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    yielded = [0]
    tokenizer = WatchingTokenizer(yielded, fail_at=1)
    texts = [f"segment {i}" for i in range(3 * tokens_module.ENCODE_CHUNK_SEGMENTS)]
    with pytest.raises(PluginError, match=r"^tokenizer 'w': RuntimeError: the tokenizer broke$"):
        build_token_stream(counted(texts, yielded), tokenizer, tmp_path, label="tokenizer 'w'")  # type: ignore[arg-type]
    assert len(tokenizer.calls) == 1
    assert not encode_workers()  # no worker left behind


def test_a_consumer_that_stops_early_leaves_no_worker() -> None:
    chunks = encoded_chunks([f"s{i}" for i in range(5000)], CharTokenizer(), "t")  # type: ignore[arg-type]
    first, encoded = next(chunks)
    assert encoded[0] == [ord(c) for c in first[0]]
    chunks.close()
    assert not encode_workers()
