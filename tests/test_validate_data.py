"""``baseline validate`` lists the dataset's files without reading them: their count and size
on success, a missing one as a one-line error naming the file, the key path and the plugin
(exit 2), and a dataset that lists no files as not checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from core_support import REPO_ROOT, write_toml

from baseline.cli import main
from baseline.config import DatasetConfig
from baseline.plugins.hookspecs import hookimpl
from baseline.testing import using_plugins


def validate(path: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> tuple[int, str]:
    args = ["validate", str(path)]
    for override in overrides:
        args += ["--set", override]
    code = main(args)
    captured = capsys.readouterr()
    return code, (captured.out if code == 0 else captured.err).strip()


def test_the_shipped_experiments_data_is_counted(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = validate(REPO_ROOT / "experiments/tiny_shakespeare.toml", capsys)
    assert code == 0, out
    assert out.splitlines()[1] == "data: 1 file, 1,115,394 bytes"

    code, out = validate(REPO_ROOT / "experiments/mixture_prose_code.toml", capsys)
    assert code == 0, out
    code_files = sorted((REPO_ROOT / "data/code").rglob("*.py.txt"))
    size = sum(path.stat().st_size for path in code_files)
    assert out.splitlines()[1] == (
        f"data: prose: 1 file, 1,115,394 bytes; code: {len(code_files)} files, {size:,} bytes"
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("nope.txt", "dataset.path: dataset 'local_text' from baseline-text: {dir}/nope.txt: "
         "file not found; fix the path"),
        ("texts/**/*.txt", "dataset.path: dataset 'local_text' from baseline-text: "
         "{dir}/texts/**/*.txt: no file matches the pattern; fix the path or the pattern"),
        ("empty", "dataset.path: dataset 'local_text' from baseline-text: {dir}/empty: is a "
         "directory without files; add text files or fix the path"),
    ],
)  # fmt: skip
def test_missing_data_is_one_line_before_any_run(
    tmp_path: Path,
    tiny_data: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    path: str,
    expected: str,
) -> None:
    (tmp_path / "empty").mkdir()
    tiny_data["dataset"]["path"] = path
    write_toml(tmp_path / "exp.toml", tiny_data)
    before = sorted(tmp_path.rglob("*"))
    code, err = validate(tmp_path / "exp.toml", capsys)
    assert code == 2
    assert err == f"error: {tmp_path / 'exp.toml'}: " + expected.format(dir=tmp_path), err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_a_mixture_source_s_missing_file_names_its_table(
    tmp_path: Path, tiny_data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tiny_data["dataset"]["path"]
    tiny_data["dataset"] = {
        "name": "mixture",
        "sources": {
            "prose": {"name": "local_text", "weight": 0.5, "path": corpus},
            "code": {"name": "local_text", "weight": 0.5, "path": "code.txt"},
        },
    }
    write_toml(tmp_path / "exp.toml", tiny_data)
    code, err = validate(tmp_path / "exp.toml", capsys)
    assert code == 2
    assert err == (
        f"error: {tmp_path / 'exp.toml'}: dataset.sources.code.path: dataset 'local_text' from "
        f"baseline-text (dataset.sources.code): {tmp_path / 'code.txt'}: file not found; fix "
        "the path"
    ), err
    source = "def f():\n    return 1\n\nx = f()\n"
    (tmp_path / "code.txt").write_text(source, encoding="utf-8")
    code, out = validate(tmp_path / "exp.toml", capsys)
    assert code == 0, out
    assert out.splitlines()[1].endswith(f"; code: 1 file, {len(source)} bytes"), out


@attrs.frozen(kw_only=True)
class ListedFilesConfig(DatasetConfig):
    """A third-party dataset whose ``source_files`` returns ``listed`` (or no such method)."""

    listed: list[str] = attrs.field(factory=list)
    lists_files: bool = True


class ListedFiles:
    def __init__(self, config: ListedFilesConfig) -> None:
        self.config = config
        if config.lists_files:
            self.source_files = lambda: [Path(p) for p in config.listed] or "oops"

    def segments(self) -> Iterator[str]:
        yield "never read by validate"


class ListedFilesPlugin:
    @hookimpl
    def baseline_register_datasets(self, register: Any) -> None:
        register("listed_files", ListedFilesConfig, ListedFiles)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"listed": ["{dir}/gone.txt"]}, "error: {exp}: dataset: dataset 'listed_files' from "
         "test-plugins: {dir}/gone.txt does not exist; fix the path or create the file"),
        ({"listed": ["{dir}"]}, "error: {exp}: dataset: dataset 'listed_files' from "
         "test-plugins: {dir} is not a file; fix the path or create the file"),
        ({"listed": []}, "error: dataset 'listed_files' from test-plugins: dataset "
         "source_files() must return a sequence of paths (str or Path), got str"),
        ({"lists_files": False}, "data: not checked (the dataset lists no local files; it is "
         "read when a run starts)"),
        ({"listed": ["{exp}", "{exp}"]}, "data: 2 files, {twice:,} bytes"),
    ],
)  # fmt: skip
def test_a_third_party_dataset_s_files(
    tmp_path: Path,
    tiny_data: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    settings: dict[str, Any],
    expected: str,
) -> None:
    exp = tmp_path / "exp.toml"
    listed = [p.format(dir=tmp_path, exp=exp) for p in settings.get("listed", [])]
    tiny_data["dataset"] = {"name": "listed_files", **settings, "listed": listed}
    write_toml(exp, tiny_data)
    with using_plugins(ListedFilesPlugin()):
        code, output = validate(exp, capsys)
    expected = expected.format(dir=tmp_path, exp=exp, twice=2 * exp.stat().st_size)
    if expected.startswith("data: "):
        assert code == 0 and output.splitlines()[1] == expected, output
    else:
        assert code == 2 and output == expected, output
