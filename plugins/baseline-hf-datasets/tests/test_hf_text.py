"""The hf_text dataset on real datasets: every source kind, streaming, and every error."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hf_sources import SOURCE_KINDS, TEXTS, Source
from hypothesis import given, settings
from hypothesis import strategies as st

import baseline_hf_datasets
from baseline.errors import ConfigError, FieldError
from baseline.experiment.loading import resolve_paths, structure
from baseline.testing import check_dataset_adapter, in_process_plugins
from baseline_hf_datasets import HFTextDatasetConfig
from baseline_hf_datasets import dataset as adapter_module
from baseline_hf_datasets.dataset import HFTextDataset

Sources = dict[str, Source]


def segments_of(source: Source, **changes: Any) -> list[str]:
    return list(HFTextDataset(source.config(**changes)).segments())


def load_error(source: Source, **changes: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        segments_of(source, **changes)
    return caught.value


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_segments_of_every_source_kind(sources: Sources, kind: str) -> None:
    source = sources[kind]
    adapter = HFTextDataset(source.config())
    assert check_dataset_adapter(adapter) == source.expected


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_streaming_yields_the_same_segments(sources: Sources, kind: str) -> None:
    source = sources[kind]
    streamed = HFTextDataset(source.config(streaming=True))
    assert check_dataset_adapter(streamed) == source.expected
    assert streamed.fingerprint() == HFTextDataset(source.config()).fingerprint()


@pytest.mark.parametrize("streaming", [False, True], ids=["arrow", "streamed"])
def test_each_segments_source_is_its_row(sources: Sources, streaming: bool) -> None:
    """``segments_with_sources()``: the same texts, each with its row (blank rows count)."""
    from hf_sources import with_blanks

    adapter = HFTextDataset(sources["json"].config(streaming=streaming))
    pairs = list(adapter.segments_with_sources())
    assert [text for text, _ in pairs] == list(adapter.segments())
    rows = with_blanks(sources["json"].expected)
    assert [source for _, source in pairs] == [
        f"row {index}" for index, row in enumerate(rows) if row is not None and row.strip()
    ]


def test_streaming_reads_lazily(sources: Sources, monkeypatch: pytest.MonkeyPatch) -> None:
    """A streamed split is iterated, never turned into a list or an Arrow table."""
    import datasets

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("a streamed dataset must not be prepared or materialised")

    monkeypatch.setattr(datasets.DatasetBuilder, "download_and_prepare", refuse)
    source = sources["json"]
    adapter = HFTextDataset(source.config(streaming=True, max_segments=3))
    iterator = adapter.segments()
    assert next(iterator) == TEXTS[0]
    assert isinstance(adapter._rows, datasets.IterableDataset)
    assert list(iterator) == TEXTS[1:3]


@settings(max_examples=12, deadline=None)
@given(limit=st.integers(min_value=1, max_value=len(TEXTS) + 20), streaming=st.booleans())
def test_max_segments(sources: Sources, limit: int, streaming: bool) -> None:
    source = sources["json"]
    assert segments_of(source, max_segments=limit, streaming=streaming) == TEXTS[:limit]


@settings(max_examples=10, deadline=None)
@given(
    texts=st.lists(
        st.one_of(st.none(), st.text(st.characters(exclude_categories=("Cs",)), max_size=12)),
        min_size=1,
        max_size=12,
    ).filter(lambda rows: any(row is not None and row.strip() for row in rows))
)
def test_yields_exactly_the_non_blank_rows(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str | None]
) -> None:
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    expected = [text for text in texts if text is not None and text.strip()]
    for streaming in (False, True):
        config = HFTextDatasetConfig(path="json", data_files=(str(path),), streaming=streaming)
        assert check_dataset_adapter(HFTextDataset(config)) == expected


def test_fingerprint_follows_the_segments(sources: Sources) -> None:
    source = sources["json"]
    full = HFTextDataset(source.config())
    fingerprint = full.fingerprint()  # before any pass: computed by one
    assert fingerprint == full.fingerprint()
    list(full.segments())
    assert full.fingerprint() == fingerprint
    assert HFTextDataset(source.config(max_segments=5)).fingerprint() != fingerprint
    assert HFTextDataset(sources["parquet"].config()).fingerprint() == fingerprint  # same texts


def test_split_of_a_saved_dataset_dict(sources: Sources) -> None:
    source = sources["saved_dict"]
    validation = segments_of(source, split="validation")
    assert validation[0].startswith("held out 0: ") and len(validation) == 10
    assert segments_of(sources["local_dir"], split="validation") == validation


@pytest.mark.parametrize("kind", SOURCE_KINDS)
@pytest.mark.parametrize("streaming", [False, True])
def test_wrong_text_column_lists_the_columns(sources: Sources, kind: str, streaming: bool) -> None:
    source = sources[kind]
    error = load_error(source, text_column="body", streaming=streaming)
    assert error.key_path == "dataset.text_column"
    assert "no column 'body'" in error.message
    assert error.message.endswith("columns: " + ", ".join(repr(c) for c in source.columns))


@pytest.mark.parametrize("kind", [k for k in SOURCE_KINDS if k != "text"])
@pytest.mark.parametrize("streaming", [False, True])
def test_non_string_column_names_column_and_type(
    sources: Sources, kind: str, streaming: bool
) -> None:
    error = load_error(sources[kind], text_column="id", streaming=streaming)
    assert error.key_path == "dataset.text_column"
    assert "column 'id' holds int64 values, not strings" in error.message


@pytest.mark.parametrize("kind", ["json", "csv", "local_dir", "saved_dict"])
@pytest.mark.parametrize("streaming", [False, True])
def test_wrong_split_lists_the_splits(sources: Sources, kind: str, streaming: bool) -> None:
    source = sources[kind]
    error = load_error(source, split="test", streaming=streaming)
    assert error.key_path == "dataset.split"
    assert source.splits is not None
    assert f"no split 'test' in {source.table['path']}" in str(error)
    assert error.message.endswith(f"available splits: {', '.join(source.splits)}")


def test_single_saved_dataset_is_used_whole(sources: Sources) -> None:
    assert segments_of(sources["saved_dataset"], split="anything") == TEXTS


@pytest.mark.parametrize("streaming", [False, True])
def test_blank_column_is_an_error(tmp_path: Path, streaming: bool) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text('{"text": null}\n{"text": ""}\n{"text": "  \\n "}\n', encoding="utf-8")
    config = HFTextDatasetConfig(path="json", data_files=(str(path),), streaming=streaming)
    with pytest.raises(ConfigError, match="is empty or whitespace only; add text") as caught:
        list(HFTextDataset(config).segments())
    assert caught.value.key_path == "dataset.path"
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("streaming", [False, True])
def test_unreadable_file_is_an_error(tmp_path: Path, streaming: bool) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": broken\n', encoding="utf-8")
    config = HFTextDatasetConfig(path="json", data_files=(str(path),), streaming=streaming)
    with pytest.raises(ConfigError, match="JSON parse error") as caught:
        list(HFTextDataset(config).segments())
    assert caught.value.key_path == "dataset.path"
    assert str(caught.value).startswith(f"dataset.path: json files {path}: cannot be ")


def test_split_slice(sources: Sources) -> None:
    assert segments_of(sources["json"], split="train[:7]") == TEXTS[:6]  # row 1 is blank
    streamed = sources["json"].config(split="train[:7]", streaming=True)
    with pytest.raises(FieldError, match="need streaming = false"):
        streamed.validate(None)


def test_list_column_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "tags.jsonl"
    path.write_text('{"text": "a", "tags": ["x", "y"]}\n', encoding="utf-8")
    config = HFTextDatasetConfig(path="json", data_files=(str(path),), text_column="tags")
    with pytest.raises(ConfigError, match="column 'tags' holds List values, not strings"):
        list(HFTextDataset(config).segments())


@pytest.mark.parametrize("streaming", [False, True])
def test_offline_hub_name_fails_fast_with_the_recipe(streaming: bool) -> None:
    config = HFTextDatasetConfig(
        path="baseline-tests/no-such-dataset", config_name="en", streaming=streaming
    )
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        list(HFTextDataset(config).segments())
    assert time.perf_counter() - started < 5
    error = caught.value
    assert error.key_path == "dataset.path"
    assert "cannot be loaded from the Hugging Face Hub: offline mode is on" in error.message
    assert (
        "datasets.load_dataset('baseline-tests/no-such-dataset', 'en').save_to_disk('DIR')"
        in error.message
    )
    assert "set dataset.path to DIR" in error.message


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_hub_fails_fast_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without offline mode and without network, the probe fails before datasets retries."""
    import datasets

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("load_dataset must not be reached")

    monkeypatch.setattr(adapter_module, "_offline", lambda: False)
    monkeypatch.setattr(
        adapter_module, "_hub_endpoint", lambda: f"http://127.0.0.1:{_closed_port()}"
    )
    monkeypatch.setattr(datasets, "load_dataset", refuse)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        list(HFTextDataset(HFTextDatasetConfig(path="owner/name")).segments())
    assert time.perf_counter() - started < 5
    assert caught.value.key_path == "dataset.path"
    assert "is unreachable: cannot connect to 127.0.0.1" in caught.value.message
    assert "save_to_disk('DIR')" in caught.value.message
    assert caught.value.message.endswith("set HF_HUB_OFFLINE=1 to use that")


def test_probe_accepts_a_listening_endpoint() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert adapter_module._unreachable(f"http://127.0.0.1:{port}") is None
    assert adapter_module._unreachable(f"http://127.0.0.1:{_closed_port()}") is not None


def test_missing_local_sources(tmp_path: Path) -> None:
    def error(**table: Any) -> ConfigError:
        with pytest.raises(ConfigError) as caught:
            list(HFTextDataset(HFTextDatasetConfig(base_dir=str(tmp_path), **table)).segments())
        return caught.value

    missing = error(path="json", data_files=("nope.jsonl",))
    assert missing.key_path == "dataset.data_files"
    assert str(tmp_path / "nope.jsonl") in missing.message
    assert error(path="text").key_path == "dataset.data_files"  # a builder needs files
    not_found = error(path="./corpora/nope")
    assert (not_found.key_path, not_found.message) == (
        "dataset.path",
        f"{tmp_path / 'corpora' / 'nope'}: no such file or directory; fix the path",
    )
    (tmp_path / "corpus.txt").write_text("text\n", encoding="utf-8")
    a_file = error(path="corpus.txt")
    assert a_file.key_path == "dataset.path"
    assert "is a file; set path to its builder" in a_file.message


def test_saved_dataset_rejects_loader_options(sources: Sources) -> None:
    source = sources["saved_dict"]
    for key, value in (("data_files", ("x",)), ("config_name", "en"), ("revision", "main")):
        error = load_error(source, **{key: value})
        assert error.key_path == f"dataset.{key}"
        assert "directory written by save_to_disk" in error.message


def test_relative_paths_resolve_against_the_experiment_directory(
    tmp_path: Path, sources: Sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment_dir = tmp_path / "experiments"
    (experiment_dir / "data").mkdir(parents=True)
    text = Path(sources["text"].table["data_files"][0])
    (experiment_dir / "data" / "corpus.txt").write_bytes(text.read_bytes())
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    table = {"path": "text", "data_files": ["data/corpus.txt"]}
    config = resolve_paths(structure(table, HFTextDatasetConfig, "dataset"), experiment_dir)
    assert config.base_dir == str(experiment_dir)
    assert config.data_files == ("data/corpus.txt",)  # kept as written; resolved when loading
    assert list(HFTextDataset(config).segments()) == sources["text"].expected
    saved = Path(sources["saved_dict"].table["path"])
    relative = Path(*[".."] * len(experiment_dir.parts)) / saved.relative_to(saved.anchor)
    config = resolve_paths(
        structure({"path": str(relative)}, HFTextDatasetConfig, "dataset"), experiment_dir
    )
    assert list(HFTextDataset(config).segments()) == TEXTS


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"path": "x", "max_segments": 0}, "dataset.max_segments: must be >= 1, got 0"),
        ({"path": "x", "data_files": []}, "dataset.data_files: must not be an empty list"),
        ({"path": "x", "data_files": 3}, "dataset.data_files: expected a string, a list of"),
        ({"path": "x", "data_files": ""}, "dataset.data_files: must not be empty"),
        ({"path": "x", "data_files": {}}, "dataset.data_files: must not be an empty table"),
        ({"path": "x", "data_files": {"train": []}}, "dataset.data_files.train: must not be an"),
        ({"path": "x", "data_files": {"train": [1]}}, "dataset.data_files.train[0]: expected a"),
        ({"path": "x", "builder_options": 3}, "dataset.builder_options: expected a table"),
        (
            {"path": "x", "builder_options": {"split": "test"}},
            "dataset.builder_options.split: set dataset.split instead",
        ),
        ({"path": "x", "data_files": ["a", " "]}, "dataset.data_files[1]: must not be empty"),
        ({"path": " "}, "dataset.path: must not be empty"),
        ({"path": "x", "split": ""}, "dataset.split: must not be empty"),
        ({"path": "x", "config_name": ""}, "dataset.config_name: must not be empty"),
        ({"path": "x", "streaming": "yes"}, "dataset.streaming: expected true or false"),
        ({"path": "x", "text_colum": "t"}, "dataset.text_colum: unknown key; did you mean"),
        ({}, "dataset.path: missing required key"),
    ],
)
def test_config_rules(table: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        structure(table, HFTextDatasetConfig, "dataset")
    assert str(caught.value).startswith(expected)


def test_defaults() -> None:
    config = structure({"path": "owner/name"}, HFTextDatasetConfig, "dataset")
    assert config == HFTextDatasetConfig(
        path="owner/name",
        data_files=None,
        config_name=None,
        split="train",
        text_column="text",
        streaming=False,
        revision=None,
        trust_remote_code=False,
        max_segments=None,
        base_dir=".",
    )


def test_registers_hf_text() -> None:
    plugin_set = in_process_plugins(baseline_hf_datasets, installed=False)
    assert plugin_set.registry.get("dataset", "hf_text").config_cls is HFTextDatasetConfig
    assert not plugin_set.failures


def test_listing_plugins_does_not_import_datasets() -> None:
    code = (
        "import sys\n"
        "from baseline.cli import main\n"
        "from baseline.plugins.discovery import default_plugins\n"
        "assert main(['plugins']) == 0\n"
        "assert 'hf_text' in default_plugins().registry.names('dataset')\n"
        "assert 'datasets' not in sys.modules, 'datasets imported at plugin import'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
