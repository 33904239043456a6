"""``baseline export`` in the core: the destination rules, the staging directory, and the
refusal of components without ``export_hf`` (no ``transformers``: fake adapters write files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from baseline.config import ModelConfig, TokenizerConfig
from baseline.errors import ConfigError, DataError
from baseline.plugins.hookspecs import hookimpl
from baseline.plugins.protocols import ExportInfo
from baseline.testing import in_process_plugins
from baseline.tools.export import EXPORT_MARKER, export_run


@attrs.frozen(kw_only=True)
class TinyModelConfig(ModelConfig):
    #: Which files ``export_hf`` writes (all of the model's, or all but one); "" for none.
    writes: str = "all"


class TinyModule(torch.nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab_size, 4)
        self.head = torch.nn.Linear(4, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(tokens))


class TinyModel:
    def __init__(self, config: TinyModelConfig) -> None:
        self.config = config
        if config.writes:
            self.export_hf = self._export_hf

    def build(self, vocab_size: int, seq_len: int) -> torch.nn.Module:
        return TinyModule(vocab_size)

    def _export_hf(self, model: torch.nn.Module, directory: Path, info: ExportInfo) -> None:
        names = ["config.json", "model.safetensors", "generation_config.json"]
        if self.config.writes == "fail":
            (directory / "config.json").write_text("{}")
            raise ConfigError("no equivalent", key_path="model.writes")
        for name in names[: 3 if self.config.writes == "all" else 2]:
            (directory / name).write_text(json.dumps({"eos": info.end_of_segment_id}))


@attrs.frozen(kw_only=True)
class TinyTokenizerConfig(TokenizerConfig):
    pass


class TinyTokenizer:
    vocab_size = 257
    end_of_segment_id = 256

    def __init__(self, config: TinyTokenizerConfig) -> None:
        self.config = config

    def load(self, path: Path) -> None:
        pass

    def export_hf(self, directory: Path, info: ExportInfo) -> None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (directory / name).write_text("{}")


class TinyPlugin:
    @hookimpl
    def baseline_register_models(self, register: Any) -> None:
        register("tiny_model", TinyModelConfig, TinyModel)

    @hookimpl
    def baseline_register_tokenizers(self, register: Any) -> None:
        register("tiny_tokenizer", TinyTokenizerConfig, TinyTokenizer)


def make_run(run_dir: Path, writes: str = "all") -> Path:
    """A finished run directory as the pipeline writes it, for the tiny components."""
    run_dir.mkdir(parents=True)
    torch.save(TinyModule(257).state_dict(), run_dir / "baseline_model.pt")
    (run_dir / "tokenizer.txt").write_text("")
    info = {
        "format_version": 1,
        "model": {"name": "tiny_model", "config": {"writes": writes}, "file": "baseline_model.pt"},
        "tokenizer": {"name": "tiny_tokenizer", "config": {}, "file": "tokenizer.txt"},
        "vocab_size": 257,
        "end_of_segment_id": 256,
        "end_of_segment_text": "\n\n",
        "seq_len": 8,
    }
    (run_dir / "inference_config.json").write_text(json.dumps(info))
    return run_dir


@pytest.fixture
def plugins() -> Any:
    return in_process_plugins(TinyPlugin(), installed=False)


def test_export_writes_through_the_adapters_and_renames(tmp_path: Path, plugins: Any) -> None:
    run_dir = make_run(tmp_path / "run")
    result = export_run(run_dir, tmp_path / "out", plugins=plugins)
    assert result.files == (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    )
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == {"eos": 256}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]


def test_an_existing_out_dir_needs_overwrite(tmp_path: Path, plugins: Any) -> None:
    run_dir = make_run(tmp_path / "run")
    out = tmp_path / "out"
    export_run(run_dir, out, plugins=plugins)
    (out / "config.json").write_text("stale")
    with pytest.raises(ConfigError, match="exists and is not empty; choose another OUT_DIR"):
        export_run(run_dir, out, plugins=plugins)
    assert (out / "config.json").read_text() == "stale"
    export_run(run_dir, out, plugins=plugins, overwrite=True)  # a previous export: replaced
    assert json.loads((out / "config.json").read_text()) == {"eos": 256}
    assert json.loads((out / EXPORT_MARKER).read_text())["run_dir"] == str(run_dir.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]
    (tmp_path / "empty").mkdir()
    export_run(run_dir, tmp_path / "empty", plugins=plugins)  # an empty directory is fine


def test_overwrite_replaces_only_a_previous_export(tmp_path: Path, plugins: Any) -> None:
    run_dir = make_run(tmp_path / "run")
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not a previous export") as raised:
        export_run(run_dir, out, plugins=plugins, overwrite=True)
    assert raised.value.exit_code == 2 and "\n" not in str(raised.value)
    assert (out / "thesis.txt").read_text() == "mine"


@pytest.mark.parametrize("target", ["runs", ".", "runs/y"])
def test_export_never_deletes_the_run_or_a_directory_above_it(
    tmp_path: Path, plugins: Any, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported loss: ``baseline export runs/y runs --overwrite`` deleted runs/y and runs/z."""
    from baseline.cli import main

    run_y, run_z = make_run(tmp_path / "runs" / "y"), make_run(tmp_path / "runs" / "z")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="being exported") as raised:
        export_run(run_y, Path(target), plugins=plugins, overwrite=True)
    assert "replacing it would delete the run" in str(raised.value)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (run_z / "inference_config.json").is_file()
    assert main(["export", "runs/y", target, "--overwrite"]) == 2  # the command, too


@pytest.mark.parametrize(
    ("writes", "message"),
    [
        ("", "model 'tiny_model' from test-plugins cannot be exported to the Hugging Face format"),
        ("some", "wrote no generation_config.json; a plugin's export_hf is incomplete"),
        ("fail", "model.writes: no equivalent"),
    ],
)
def test_failures_leave_nothing(tmp_path: Path, plugins: Any, writes: str, message: str) -> None:
    run_dir = make_run(tmp_path / "run", writes)
    with pytest.raises((ConfigError, DataError)) as caught:
        export_run(run_dir, tmp_path / "out", plugins=plugins)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_component_without_export_hf_is_refused(tmp_path: Path, plugins: Any) -> None:
    run_dir = make_run(tmp_path / "run", writes="")
    with pytest.raises(DataError) as caught:
        export_run(run_dir, tmp_path / "out", plugins=plugins)
    assert str(caught.value) == (
        f"{run_dir}: model 'tiny_model' from test-plugins cannot be exported to the Hugging Face "
        "format (its adapter has no export_hf method; see "
        "docs/writing-a-plugin.md#exporting-to-hugging-face)"
    )


def test_runs_without_final_model(tmp_path: Path, plugins: Any) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "baseline_checkpoint.pt").write_bytes(b"")
    with pytest.raises(DataError, match=r"not a run directory \(no run_config.json\)"):
        export_run(unfinished, tmp_path / "out", plugins=plugins)
    with pytest.raises(DataError, match="no such run directory"):
        export_run(tmp_path / "nowhere", tmp_path / "out", plugins=plugins)
    run_dir = make_run(tmp_path / "run")
    (run_dir / "baseline_model.pt").unlink()
    with pytest.raises(
        DataError, match=r"the run has no weights: no final model \(baseline_model.pt\) and no"
    ):
        export_run(run_dir, tmp_path / "out", plugins=plugins)
    assert not (tmp_path / "out").exists()
