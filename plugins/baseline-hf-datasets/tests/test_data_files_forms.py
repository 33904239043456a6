"""``data_files`` in every form ``datasets.load_dataset`` takes, and builder options passed
through (a corpus of source files, one segment per file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from baseline.errors import ConfigError
from baseline.experiment.loading import resolve_paths, structure
from baseline_hf_datasets import HFTextDatasetConfig
from baseline_hf_datasets.dataset import HFTextDataset

FILES = {
    "pkg/a.py": "def a():\n    return 1\n\n\nx = 2\n",
    "pkg/b.py": "print(3)\n",
    "held_out.py": "import os\n",
}


def write_files(root: Path) -> None:
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def segments(root: Path, table: dict[str, Any]) -> list[str]:
    config = resolve_paths(structure(table, HFTextDatasetConfig, "dataset"), root)
    return list(HFTextDataset(config).segments())


@pytest.mark.parametrize(
    ("data_files", "split"),
    [
        ("pkg/a.py", "train"),
        (["pkg/a.py"], "train"),
        ({"train": "pkg/a.py", "test": ["held_out.py"]}, "train"),
        ({"train": ["pkg/*.py"], "test": "held_out.py"}, "test"),
    ],
)
def test_a_string_a_list_or_a_table_of_splits(tmp_path: Path, data_files: Any, split: str) -> None:
    write_files(tmp_path)
    got = segments(tmp_path, {"path": "text", "data_files": data_files, "split": split})
    expected = (
        ["import os"]
        if split == "test"
        else ["def a():", "    return 1", "x = 2"]  # the text builder: one row per line
    )
    assert got == expected


def test_sample_by_document_gives_one_segment_per_file(tmp_path: Path) -> None:
    write_files(tmp_path)
    table = {
        "path": "text",
        "data_files": {"train": "pkg/**/*.py"},
        "builder_options": {"sample_by": "document"},
        "segment_delimiter": "\n",
    }
    assert segments(tmp_path, table) == [FILES["pkg/a.py"], FILES["pkg/b.py"]]


def test_an_unknown_builder_option_names_the_key(tmp_path: Path) -> None:
    write_files(tmp_path)
    table = {"path": "text", "data_files": "pkg/a.py", "builder_options": {"sample_bye": "x"}}
    with pytest.raises(ConfigError) as caught:
        segments(tmp_path, table)
    assert caught.value.key_path == "dataset.builder_options"
    assert "unexpected keyword argument 'sample_bye'" in caught.value.message
    assert "\n" not in str(caught.value)
