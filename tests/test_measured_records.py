"""A start whose dataset files are unchanged reads neither the corpus nor the token cache's
files: the segment sizes and the fingerprint come from what an earlier run recorded, and
any change to the files, or to a setting, measures the corpus again."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("baseline_text")
pytest.importorskip("baseline_holdout")
pytest.importorskip("baseline_bpe")

from baseline.data import tokens
from baseline.data.measured import RECORD_FILENAME, RECORDS_DIRNAME, SIZES_FILENAME
from baseline.data.preparation import prepare_data
from baseline.data.prepared import PreparedData
from baseline.errors import DataError, PluginError
from baseline.experiment.loading import experiment_from_data
from baseline.plugins.components import Components
from baseline.plugins.protocols import SplitPlan
from baseline.testing import in_process_plugins, tiny_experiment_data
from baseline_bpe.tokenizer import BPETokenizer
from baseline_holdout import HoldoutSplit
from baseline_text import LocalTextDataset

CORPUS = "\n\n".join(f"segment {i}: " + "to be or not to be " * (i % 7 + 1) for i in range(300))


def experiment(tmp_path: Path) -> dict[str, Any]:
    data = tiny_experiment_data(tmp_path, corpus=CORPUS)  # bpe, its vocab file kept
    data["split"].update(shuffle=True, seed=3)
    data["train"].update(seq_len=8, batch_size=2)
    return data


def prepare(data: dict[str, Any], split: Any = None) -> PreparedData:
    config = experiment_from_data(data, in_process_plugins().registry)
    components = Components(
        dataset=LocalTextDataset(config.dataset),
        tokenizer=BPETokenizer(config.tokenizer),
        model=None,  # type: ignore[arg-type]  # not built while preparing data
        split=split or HoldoutSplit(config.split),
    )
    return prepare_data(config, components, data)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One item per read of the corpus (``LocalTextDataset._read``) and per hashed cache file."""
    calls: list[str] = []
    read, digest = LocalTextDataset._read, tokens.file_digest

    def counting_read(self: LocalTextDataset) -> list[str]:
        calls.append("corpus")
        return read(self)

    def counting_digest(path: Path) -> dict[str, Any]:
        calls.append(path.name)
        return digest(path)

    monkeypatch.setattr(LocalTextDataset, "_read", counting_read)
    monkeypatch.setattr(tokens, "file_digest", counting_digest)
    return calls


def records(data: dict[str, Any]) -> list[Path]:
    root = Path(data["run"]["artifacts_root"]) / ".token_cache" / RECORDS_DIRNAME
    return sorted(root.iterdir()) if root.is_dir() else []


def same(a: PreparedData, b: PreparedData) -> bool:
    return (
        np.array_equal(a.tokens, b.tokens)
        and a.train_ranges == b.train_ranges
        and a.validation_ranges == b.validation_ranges
        and a.validation_bytes == b.validation_bytes
        and a.fit_source is not None
        and b.fit_source is not None
        and a.fit_source.dataset_identity == b.fit_source.dataset_identity
        and np.array_equal(a.fit_source.train_mask, b.fit_source.train_mask)
    )


def test_a_second_start_reads_neither_the_corpus_nor_the_cache_files(
    tmp_path: Path, reads: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    data = experiment(tmp_path)
    first = prepare(data)
    assert reads.count("corpus") == 1  # one read, held in memory for every pass
    [record] = records(data)
    assert {p.name for p in record.iterdir()} == {RECORD_FILENAME, SIZES_FILENAME}
    reads.clear()
    with caplog.at_level(logging.INFO, logger="baseline"):
        second = prepare(data)  # a new adapter, as in a new process or on another rank
    assert reads == []
    assert "not read again" in caplog.text
    assert "loaded from the token cache" in caplog.text
    assert same(first, second)  # the same split, dataset identity (fit records) and tokens


def test_a_changed_file_is_measured_again_and_its_record_renewed(
    tmp_path: Path, reads: list[str]
) -> None:
    data = experiment(tmp_path)
    prepare(data)
    [record] = records(data)
    before = json.loads((record / RECORD_FILENAME).read_text())
    corpus = Path(data["dataset"]["path"])
    corpus.write_text(CORPUS.replace("segment 5:", "segment 5!"))  # same size
    reads.clear()
    changed = prepare(data)
    assert reads.count("corpus") == 1
    after = json.loads((record / RECORD_FILENAME).read_text())
    assert after["fingerprint"] != before["fingerprint"]
    assert changed.num_segments == 300
    reads.clear()
    prepare(data)
    assert reads == []


def test_a_touched_file_is_read_again(tmp_path: Path, reads: list[str]) -> None:
    data = experiment(tmp_path)
    first = prepare(data)
    os.utime(data["dataset"]["path"])
    reads.clear()
    assert same(first, prepare(data))
    assert reads == ["corpus"]  # measured again; the token cache is still trusted


def test_a_new_file_in_the_directory_is_measured(tmp_path: Path, reads: list[str]) -> None:
    data = experiment(tmp_path)
    folder = tmp_path / "texts"
    folder.mkdir()
    Path(data["dataset"]["path"]).rename(folder / "a.txt")
    data["dataset"]["path"] = str(folder)
    first = prepare(data)
    (folder / "b.txt").write_text("another file\n\nwith two segments")
    reads.clear()
    second = prepare(data)
    assert reads.count("corpus") == 1
    assert second.num_segments == first.num_segments + 2
    assert len(records(data)) == 1  # one record per dataset config, replaced


def test_other_settings_have_a_record_of_their_own(tmp_path: Path, reads: list[str]) -> None:
    data = experiment(tmp_path)
    prepare(data)
    data["dataset"]["segment_delimiter"] = "\n"
    reads.clear()
    prepare(data)
    assert reads.count("corpus") == 1
    assert len(records(data)) == 2


def test_a_record_that_disagrees_with_the_segments_is_removed_and_the_run_stops(
    tmp_path: Path,
) -> None:
    """A change no stat shows (simulated: the record rewritten with the new stamps) is caught
    when the segments are read again (here a new tokenizer is fitted): before a segment out of
    place reaches the tokenizer."""
    data = experiment(tmp_path)
    prepare(data)
    [record] = records(data)
    corpus = Path(data["dataset"]["path"])
    corpus.write_text(CORPUS.replace("segment 5: ", "segment 5:\n\n"))  # one segment more
    recorded = json.loads((record / RECORD_FILENAME).read_text())
    status = os.stat(corpus)
    recorded["files"][0][1].update(
        bytes=status.st_size, mtime_ns=status.st_mtime_ns, ctime_ns=status.st_ctime_ns
    )
    (record / RECORD_FILENAME).write_text(json.dumps(recorded))
    data["tokenizer"]["vocab_path"] = str(tmp_path / "other.json")  # a new tokenizer
    with pytest.raises(
        DataError, match="segment 5 has 10 bytes, 125 when it was measured"
    ) as raised:
        prepare(data)
    assert "recorded for the dataset's unchanged files are removed: run again" in str(raised.value)
    assert not Path(data["tokenizer"]["vocab_path"]).exists()  # the tokenizer never finished
    assert records(data) == []
    assert prepare(data).num_segments == 301


class ByContent:
    """A split of protocol 2: every third segment is validation."""

    split_protocol = 2

    def split(self, segments: Any) -> SplitPlan:
        indices = np.arange(len(segments))
        return SplitPlan(train=indices[indices % 3 != 0], validation=indices[indices % 3 == 0])


def test_a_split_that_reads_the_text_reads_the_corpus_every_time(
    tmp_path: Path, reads: list[str]
) -> None:
    data = experiment(tmp_path)
    prepare(data, ByContent())
    reads.clear()
    prepare(data, ByContent())
    assert reads == ["corpus"]
    assert records(data) == []


def test_source_files_must_be_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = experiment(tmp_path)
    monkeypatch.setattr(LocalTextDataset, "source_files", lambda self: 42)
    with pytest.raises(PluginError, match="source_files\\(\\) must return a sequence of paths"):
        prepare(data)
