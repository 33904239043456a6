"""The local_text dataset: segments, and every kind of unusable file."""

from __future__ import annotations

from pathlib import Path

import pytest

import baseline_text
from baseline.errors import ConfigError
from baseline.experiment.loading import structure
from baseline.testing import check_dataset_adapter, in_process_plugins
from baseline_text import LocalTextDataset, LocalTextDatasetConfig


def dataset(path: Path, **kwargs: str) -> LocalTextDataset:
    return LocalTextDataset(LocalTextDatasetConfig(path=str(path), **kwargs))


def test_contract_and_segments(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("First: one\nline two\n\n\n\nSecond\n\n   \n\nThird é 🙂", encoding="utf-8")
    segments = check_dataset_adapter(dataset(path))
    assert segments == ["First: one\nline two", "Second", "Third é 🙂"]
    assert list(dataset(path, segment_delimiter="\n").segments()) == [
        "First: one",
        "line two",
        "Second",
        "Third é 🙂",
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty or whitespace only"),
        (b"  \n\n\t \n", "is empty or whitespace only"),
        (b"caf\xe9 latin-1", r"is not valid UTF-8 \(byte 3\)"),
        (b"\x7fELF\x00\x01\x02binary", "looks like a binary file"),
    ],
)
def test_unusable_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected) as caught:
        list(dataset(path).segments())
    assert caught.value.key_path == "dataset.path"
    assert str(path) in str(caught.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        list(dataset(tmp_path / "nope.txt").segments())
    with pytest.raises(ConfigError, match="is a directory"):
        list(dataset(tmp_path).segments())


def test_empty_delimiter_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"dataset.segment_delimiter: must not be empty"):
        structure({"path": "x", "segment_delimiter": ""}, LocalTextDatasetConfig, "dataset")


def test_registers_local_text() -> None:
    registry = in_process_plugins(baseline_text, installed=False).registry
    assert registry.get("dataset", "local_text").config_cls is LocalTextDatasetConfig
