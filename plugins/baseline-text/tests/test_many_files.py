"""local_text over a directory or a glob pattern: files in sorted order, each split on its own,
a fingerprint over names and contents, and no match as a one-line error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from baseline.errors import ConfigError
from baseline.experiment.loading import resolve_paths, structure
from baseline.testing import check_dataset_adapter
from baseline_text import LocalTextDataset, LocalTextDatasetConfig


def dataset(path: str, base: Path, delimiter: str = "\n\n") -> LocalTextDataset:
    table = {"path": path, "segment_delimiter": delimiter}
    return LocalTextDataset(
        resolve_paths(structure(table, LocalTextDatasetConfig, "dataset"), base)
    )


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


TREE = {
    "src/pkg/b.py": "def b():\n    pass\n\nB = 2",
    "src/a.py": "import os",
    "src/pkg/notes.txt": "not python",
    "src/.hidden/c.py": "hidden = True",
}


def test_a_glob_reads_the_matching_files_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path, TREE)
    source = dataset("src/**/*.py", tmp_path)
    # glob's ** skips hidden names; non-matching files are not read
    assert [name for name, _ in source.files()] == [
        str(tmp_path / "src/a.py"),
        str(tmp_path / "src/pkg/b.py"),
    ]
    segments = check_dataset_adapter(dataset("src/*/*.py", tmp_path))
    assert segments == ["def b():\n    pass", "B = 2"]  # each file split on its own


def test_a_directory_reads_every_file_but_hidden_ones(tmp_path: Path) -> None:
    write(tmp_path, TREE)
    source = dataset("src", tmp_path)
    assert [name for name, _ in source.files()] == ["a.py", "pkg/b.py", "pkg/notes.txt"]
    assert list(source.segments()) == ["import os", "def b():\n    pass", "B = 2", "not python"]


def test_the_fingerprint_covers_names_and_contents(tmp_path: Path) -> None:
    write(tmp_path / "one", {"a.txt": "alpha", "b.txt": "beta"})
    write(tmp_path / "two", {"a.txt": "alpha", "c.txt": "beta"})  # a file renamed
    write(tmp_path / "three", {"a.txt": "alpha", "b.txt": "beta!"})  # a file changed
    write(tmp_path / "four", {"a.txt": "alpha", "b.txt": "beta"})  # the same files
    prints = {
        name: dataset(name, tmp_path).fingerprint() for name in ("one", "two", "three", "four")
    }
    assert prints["one"] == prints["four"]
    assert len({prints["one"], prints["two"], prints["three"]}) == 3
    # A single file keeps the digest of its bytes (token caches of existing runs stay valid).
    single = dataset("one/a.txt", tmp_path).fingerprint()
    assert single == hashlib.sha256(b"alpha").hexdigest()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("src/**/*.rs", "src/**/*.rs: no file matches the pattern; fix the path or the pattern"),
        ("empty_dir", "empty_dir: is a directory without files; add text files or fix the path"),
    ],
)
def test_nothing_to_read_is_one_line(tmp_path: Path, path: str, expected: str) -> None:
    write(tmp_path, TREE)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ConfigError) as caught:
        list(dataset(path, tmp_path).segments())
    assert caught.value.key_path == "dataset.path"
    assert str(caught.value) == f"dataset.path: {tmp_path / expected}"
