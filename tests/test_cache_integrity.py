"""A token-cache entry whose files were truncated or altered is detected, reported and rebuilt."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from baseline.data.token_cache import load_or_build
from baseline.data.tokens import stream_damage
from baseline.testing import RecordingTokenizer, RecordingTokenizerConfig

SEGMENTS = [f"segment {i} with some text, ünïcode 🙂" for i in range(50)]


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
    damage: Callable[[Path], None],
    reported: str,
) -> None:
    tokenizer = RecordingTokenizer(RecordingTokenizerConfig(record_path=str(tmp_path / "r")))
    built, hit = load_or_build(tmp_path / "cache", "key", lambda: iter(SEGMENTS), tokenizer)
    assert not hit
    expected = np.array(built.tokens)
    entry = tmp_path / "cache" / "key"
    assert stream_damage(entry) is None
    again, hit = load_or_build(tmp_path / "cache", "key", lambda: iter(SEGMENTS), tokenizer)
    assert hit and np.array_equal(again.tokens, expected)
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
