"""A token-cache entry whose files were truncated or altered is detected, reported and rebuilt;
an entry whose files were not written since they were checked is not read again."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from baseline.data import file_stamps, tokens
from baseline.data.file_stamps import COARSE_RACY_NS, RACY_NS, file_stamp, settled_stamps
from baseline.data.token_cache import STAMP_FILENAME, load_or_build, read_stamps
from baseline.data.tokens import stream_damage
from baseline.testing import RecordingTokenizer, RecordingTokenizerConfig

SEGMENTS = [f"segment {i} with some text, ünïcode 🙂" for i in range(50)]
ENTRY_FILES = ["tokens.bin", "offsets.npy", "byte_counts.npy"]


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of every file hashed (``tokens.file_digest``) while the test runs."""
    calls: list[str] = []
    real = tokens.file_digest

    def counting(path: Path) -> dict[str, Any]:
        calls.append(path.name)
        return real(path)

    monkeypatch.setattr(tokens, "file_digest", counting)
    yield calls


def build(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A new entry ``key`` in ``tmp_path/cache`` and its tokens."""
    tokenizer = RecordingTokenizer(RecordingTokenizerConfig(record_path=str(tmp_path / "r")))
    built, hit = load_or_build(tmp_path / "cache", "key", lambda: iter(SEGMENTS), tokenizer)
    assert not hit
    return tmp_path / "cache" / "key", np.array(built.tokens)


def hit(tmp_path: Path) -> bool:
    tokenizer = RecordingTokenizer(RecordingTokenizerConfig(record_path=str(tmp_path / "r")))
    _, was_hit = load_or_build(tmp_path / "cache", "key", lambda: iter(SEGMENTS), tokenizer)
    return was_hit


def truncate(entry: Path) -> None:
    path = entry / "tokens.bin"
    path.write_bytes(path.read_bytes()[:-7])


def flip_a_byte(entry: Path) -> None:
    path = entry / "tokens.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def alter_offsets(entry: Path) -> None:
    path = entry / "offsets.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x10
    path.write_bytes(bytes(data))


def garble_meta(entry: Path) -> None:
    (entry / "meta.json").write_text('{"dtype": "uint16", "tok')


def delete_byte_counts(entry: Path) -> None:
    (entry / "byte_counts.npy").unlink()


@pytest.mark.parametrize(
    ("damage", "reported"),
    [
        (truncate, "tokens.bin has"),
        (flip_a_byte, "tokens.bin does not match its recorded SHA-256"),
        (alter_offsets, "offsets.npy does not match its recorded SHA-256"),
        (garble_meta, "meta.json is missing or unreadable"),
        (delete_byte_counts, "byte_counts.npy is missing"),
    ],
)
def test_a_damaged_entry_is_reported_in_one_line_and_rebuilt(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    hashed: list[str],
    damage: Callable[[Path], None],
    reported: str,
) -> None:
    tokenizer = RecordingTokenizer(RecordingTokenizerConfig(record_path=str(tmp_path / "r")))
    built, hit = load_or_build(tmp_path / "cache", "key", lambda: iter(SEGMENTS), tokenizer)
    assert not hit
    expected = np.array(built.tokens)
    entry = tmp_path / "cache" / "key"
    hashed.clear()
    again, hit = load_or_build(tmp_path / "cache", "key", lambda: iter(SEGMENTS), tokenizer)
    assert hit and np.array_equal(again.tokens, expected)
    assert hashed == []  # the hit trusted the builder's stamps: nothing was read
    assert stream_damage(entry) is None
    del built, again

    damage(entry)
    with caplog.at_level(logging.WARNING, logger="baseline"):
        rebuilt, hit = load_or_build(tmp_path / "cache", "key", lambda: iter(SEGMENTS), tokenizer)
    assert not hit
    assert np.array_equal(rebuilt.tokens, expected)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith(f"token cache entry {entry} is damaged (")
    assert warnings[0].endswith("); rebuilding it")
    assert reported in warnings[0], warnings
    assert stream_damage(entry) is None
    leftovers = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert leftovers == [".key.lock", "key"], leftovers


def test_an_entry_unchanged_since_it_was_built_is_never_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, _ = build(tmp_path)
    assert set(read_stamps(entry) or {}) == {*ENTRY_FILES, "meta.json"}

    def unreachable(path: Path) -> dict[str, Any]:
        raise AssertionError(f"{path.name} was hashed")

    monkeypatch.setattr(tokens, "file_digest", unreachable)
    assert all(hit(tmp_path) for _ in range(3))


def test_a_file_written_since_its_stamp_is_hashed_once_then_trusted_again(
    tmp_path: Path, hashed: list[str]
) -> None:
    entry, _ = build(tmp_path)
    before = read_stamps(entry)
    os.utime(entry / "tokens.bin")  # same content, a new change time
    hashed.clear()
    assert hit(tmp_path)
    assert sorted(hashed) == sorted(ENTRY_FILES)  # checked in full: intact
    assert read_stamps(entry) != before  # the stamp is renewed
    hashed.clear()
    assert hit(tmp_path)
    assert hashed == []


def test_deleting_the_stamp_asks_for_a_full_check(tmp_path: Path, hashed: list[str]) -> None:
    entry, _ = build(tmp_path)
    (entry / STAMP_FILENAME).unlink()
    hashed.clear()
    assert hit(tmp_path)
    assert sorted(hashed) == sorted(ENTRY_FILES)
    assert (entry / STAMP_FILENAME).is_file()


def test_damage_that_kept_every_stamp_is_found_by_the_full_check(tmp_path: Path) -> None:
    """The limit of stamps, stated: a change that no stat can see (here a stamp file rewritten
    to match the damaged file) is trusted until the stamp goes (or any stat changes)."""
    entry, expected = build(tmp_path)
    flip_a_byte(entry)
    stamps = {name: file_stamp(entry / name) for name in [*ENTRY_FILES, "meta.json"]}
    (entry / STAMP_FILENAME).write_text(json.dumps({"files": stamps}))
    assert hit(tmp_path)
    (entry / STAMP_FILENAME).unlink()
    assert not hit(tmp_path)  # the full check found the damage and the entry was rebuilt
    assert np.array_equal(np.fromfile(entry / "tokens.bin", dtype=np.uint16), expected)


class FakeClock:
    """``time`` for :mod:`baseline.data.file_stamps`: a clock at ``now`` that records sleeps."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.slept: list[float] = []

    def time_ns(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += int(seconds * 1e9)


def fake_stamps(monkeypatch: pytest.MonkeyPatch, change_ns: int) -> None:
    stamp = {"bytes": 1, "inode": 2, "mtime_ns": change_ns, "ctime_ns": change_ns}
    monkeypatch.setattr(file_stamps, "file_stamp", lambda path: dict(stamp))


def test_a_stamp_is_taken_only_once_the_last_change_is_a_clock_tick_old(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    stamps = settled_stamps({"f": path})
    assert stamps is not None
    assert os.stat(path).st_ctime_ns + RACY_NS <= file_stamps.time.time_ns()


@pytest.mark.parametrize(
    ("change_ns", "now", "slept", "stamped"),
    [
        (5_000_000_001, 5_000_000_001 + RACY_NS + 1, [], True),  # old enough: no wait
        (5_000_000_001, 5_000_000_001 + 5_000_000, [0.015], True),  # 5 ms old: 15 ms more
        (5_000_000_000, 5_500_000_000, [(COARSE_RACY_NS - 500_000_000) / 1e9], True),  # whole s
        (5_000_000_001, 4_000_000_000, [], False),  # a second in the future: a skewed clock
    ],
)
def test_settling_waits_out_the_timestamp_granularity(
    monkeypatch: pytest.MonkeyPatch, change_ns: int, now: int, slept: list[float], stamped: bool
) -> None:
    clock = FakeClock(now)
    monkeypatch.setattr(file_stamps, "time", clock)
    fake_stamps(monkeypatch, change_ns)
    stamps = settled_stamps({"f": Path("f")})
    assert clock.slept == pytest.approx(slept)
    assert (stamps is not None) is stamped


def test_a_file_that_changes_while_settling_is_not_stamped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(5_000_000_001)
    monkeypatch.setattr(file_stamps, "time", clock)
    fake_stamps(monkeypatch, 5_000_000_001)
    real_sleep = clock.sleep

    def sleep_and_change(seconds: float) -> None:
        real_sleep(seconds)
        fake_stamps(monkeypatch, clock.now)

    clock.sleep = sleep_and_change  # type: ignore[method-assign]
    assert settled_stamps({"f": Path("f")}) is None
