"""A misspelt key, name or command gets a did-you-mean; an error raised inside a plugin's call
names the plugin (``<kind> '<name>' from <distribution>: ...``). One line, exit 2."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from core_support import write_toml

from baseline.cli import main, run_main
from baseline.config import DatasetConfig, ModelConfig, SplitConfig, path_field
from baseline.errors import ConfigError, DataError, PluginError, RunInterrupted, TrainingError
from baseline.plugins.calls import plugin_call, plugin_iter
from baseline.plugins.hookspecs import hookimpl
from baseline.plugins.protocols import FitSource, SplitPlan
from baseline.testing import RecordingTokenizer, RecordingTokenizerConfig, using_plugins

LABEL = "from test-plugins"


def run_cli(
    args: list[str], capsys: pytest.CaptureFixture[str], *, entry: Any = main
) -> tuple[int, str]:
    try:
        code = entry(args)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err.strip()


# -- did you mean -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SizedTextConfig(DatasetConfig):
    path: str = path_field()
    length: int


class SizedText:
    segment_delimiter = "\n\n"

    def __init__(self, config: SizedTextConfig) -> None:
        self.config = config

    def segments(self) -> Iterator[str]:
        yield from Path(self.config.path).read_text(encoding="utf-8").split("\n\n")


class SizedTextPlugin:
    @hookimpl
    def baseline_register_datasets(self, register: Any) -> None:
        register("sized_text", SizedTextConfig, SizedText)


def validate(
    tmp_path: Path, data: dict[str, Any], capsys: pytest.CaptureFixture[str], *overrides: str
) -> tuple[int, str]:
    path = write_toml(tmp_path / "exp.toml", data)
    sets = [arg for override in overrides for arg in ("--set", override)]
    return run_cli(["validate", str(path), *sets], capsys)


def test_a_misspelt_required_key_is_named_as_the_key_it_stands_for(
    tmp_path: Path, tiny_data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tiny_data["dataset"]["path"]
    tiny_data["dataset"] = {"name": "sized_text", "path": corpus, "lenght": 3}
    with using_plugins(SizedTextPlugin()):
        code, err = validate(tmp_path, tiny_data, capsys)
    assert code == 2
    assert err == (
        f"error: {tmp_path / 'exp.toml'}: dataset.lenght: unknown key; did you mean 'length'? "
        "(a required key, and it is missing)"
    )


def test_a_misspelt_required_key_of_an_installed_plugin(
    tmp_path: Path, tiny_data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_data["dataset"]["pth"] = tiny_data["dataset"].pop("path")
    tiny_data["dataset"]["segment_delimitr"] = "\n\n"
    code, err = validate(tmp_path, tiny_data, capsys)
    assert code == 2
    assert err.startswith(
        f"error: {tmp_path / 'exp.toml'}: dataset.pth: unknown key; did you mean 'path'? "
        "(a required key, and it is missing) (and 1 more problem)"
    ), err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["train"].update(sq_len=16),
            "train.sq_len: unknown key; did you mean 'seq_len'? Valid keys: epochs,",
        ),
        (
            lambda d: d["model"].update(d_modl=32),
            "model.d_modl: unknown key; did you mean 'd_model'? Valid keys:",
        ),
        (
            lambda d: d["logging"].update(log_evry_n_steps=2),
            "logging.log_evry_n_steps: unknown key; did you mean 'log_every_n_steps'? Keys:",
        ),
        (
            lambda d: d["logging"].update(console={"progres_bar": False}),
            "logging.console.progres_bar: unknown key; did you mean 'progress_bar'?",
        ),
        (
            lambda d: d["logging"].update(consle={"progress_bar": False}),
            "logging.consle: settings for a logger that is not enabled; did you mean 'console'? "
            "Or add 'consle' to logging.provider (now ['console'])",
        ),
        (
            lambda d: d.update(trian=d.pop("train")),
            "trian: unknown section; did you mean 'train'?",
        ),
        (
            lambda d: d["split"].update(name="holdot"),
            "split.name: unknown split 'holdot'; did you mean 'holdout'? Installed:",
        ),
    ],
)
def test_unknown_keys_sections_and_names_get_a_suggestion(
    tmp_path: Path,
    tiny_data: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    change: Any,
    expected: str,
) -> None:
    change(tiny_data)
    code, err = validate(tmp_path, tiny_data, capsys)
    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'exp.toml'}: {expected}"), err
    assert "\n" not in err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trian.epochs=1", "trian: unknown section; did you mean 'train'?"),
        ("train.epoch=1", "train.epoch: unknown key; did you mean 'epochs'? Valid keys:"),
        ("dataset.segment_delimitr=x", "dataset.segment_delimitr: unknown key; did you mean"),
        ("model.name=baseline_decodr", "model.name: unknown model 'baseline_decodr'; did you mean"),
        ("logging.console.progres_bar=false", "logging.console.progres_bar: unknown key; did"),
        ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
    ],
)
def test_a_bad_set_path_is_reported_as_the_override(
    tmp_path: Path,
    tiny_data: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    override: str,
    expected: str,
) -> None:
    path = write_toml(tmp_path / "exp.toml", tiny_data)
    code, err = run_cli([str(path), "--set", override], capsys, entry=run_main)
    assert code == 2
    assert err.startswith(f"error: --set: {expected}"), err
    assert not (tmp_path / "runs" / "tiny").exists()


def test_a_problem_in_the_file_is_still_the_files_with_overrides(
    tmp_path: Path, tiny_data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_data["train"]["epoch"] = 1
    code, err = validate(tmp_path, tiny_data, capsys, "train.epochs=1")
    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'exp.toml'}: train.epoch: unknown key"), err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["trian"], "error: baseline: unknown command 'trian'; did you mean 'run'? Choose from: "),
        (["vaildate", "x.toml"], "error: baseline: unknown command 'vaildate'; did you mean "),
        (["smaple"], "error: baseline: unknown command 'smaple'; did you mean 'sample'?"),
        (
            ["plot", "r", "--x", "tokns", "-o", "p.png"],
            "error: baseline plot: argument --x: unknown value 'tokns'; did you mean 'tokens'? "
            "Choose from: tokens, step, time (see baseline plot --help)",
        ),
        (["run"], "error: baseline run: the following arguments are required: experiment"),
    ],
)
def test_a_mistyped_command_is_one_line_with_a_suggestion(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert err.startswith(expected), err
    assert "\n" not in err and "usage:" not in err


def test_baseline_run_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["exp.toml", "--nprc", "2"], capsys, entry=run_main)
    assert code == 2
    assert err == (
        "error: baseline-run: unrecognized arguments: --nprc 2 (see baseline-run --help)"
    )


# -- errors raised inside a plugin's call name it ------------------------------------------


@attrs.frozen(kw_only=True)
class FaultyTextConfig(DatasetConfig):
    path: str = path_field()
    #: ``"first"``: DataError on the first pass; ``"second"``: on the second (during fit).
    fault: str = ""


class FaultyText:
    segment_delimiter = "\n\n"

    def __init__(self, config: FaultyTextConfig) -> None:
        self.config = config
        self.passes = 0

    def segments(self) -> Iterator[str]:
        self.passes += 1
        texts = Path(self.config.path).read_text(encoding="utf-8").split("\n\n")
        for index, text in enumerate(texts):
            if index == 3 and self.config.fault == ("first", "second")[min(self.passes, 2) - 1]:
                raise DataError(f"segment {index} is not what I expected")
            yield text


@attrs.frozen(kw_only=True)
class FaultySplitConfig(SplitConfig):
    fault: str = ""


class FaultySplit:
    def __init__(self, config: FaultySplitConfig) -> None:
        self.config = config

    def split(self, segment_byte_counts: np.ndarray) -> SplitPlan:
        count = len(segment_byte_counts)
        if self.config.fault == "index":
            raise IndexError(f"index {count + 9} is out of bounds\nfor axis 0")
        if self.config.fault == "config":
            raise ConfigError("must be below 1, got 2", key_path="split.fault")
        indices = np.arange(count)
        if self.config.fault == "out_of_range":
            return SplitPlan(train=indices[:-20], validation=indices[-20:] + 5)
        return SplitPlan(train=indices[:-40], validation=indices[-40:])


@attrs.frozen(kw_only=True)
class FaultyTokenizerConfig(RecordingTokenizerConfig):
    fault: str = ""


class FaultyTokenizer(RecordingTokenizer):
    def __init__(self, config: FaultyTokenizerConfig) -> None:
        super().__init__(config)
        self.fault = config.fault

    def fit(self, texts: Iterator[str], source: FitSource) -> None:
        if self.fault == "fit":
            raise ValueError("merges must be positive\nsecond line")
        super().fit(texts, source)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self.fault == "encode":
            raise DataError("cannot encode a lone surrogate")
        return super().encode_batch(texts)

    def decode(self, ids: Sequence[int]) -> str:
        if self.fault == "decode":
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return super().decode(ids)


@attrs.frozen(kw_only=True)
class FaultyModelConfig(ModelConfig):
    fault: str = ""


class FaultyModel:
    def __init__(self, config: FaultyModelConfig) -> None:
        self.fault = config.fault

    def build(self, vocab_size: int, seq_len: int) -> torch.nn.Module:
        if self.fault == "build":
            raise RuntimeError("no kernel for this layer")
        fault = self.fault

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embedding = torch.nn.Embedding(vocab_size, vocab_size)

            def forward(self, tokens: torch.Tensor) -> torch.Tensor:
                if fault == "forward":
                    raise KeyError("rotary")
                logits: torch.Tensor = self.embedding(tokens)
                return logits

        return Net()


class FaultyPlugins:
    @hookimpl
    def baseline_register_datasets(self, register: Any) -> None:
        register("faulty_text", FaultyTextConfig, FaultyText)

    @hookimpl
    def baseline_register_splits(self, register: Any) -> None:
        register("faulty_split", FaultySplitConfig, FaultySplit)

    @hookimpl
    def baseline_register_tokenizers(self, register: Any) -> None:
        register("faulty_tokenizer", FaultyTokenizerConfig, FaultyTokenizer)

    @hookimpl
    def baseline_register_models(self, register: Any) -> None:
        register("faulty_model", FaultyModelConfig, FaultyModel)


def faulty_run(
    tmp_path: Path,
    tiny_data: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    **faults: str,
) -> tuple[int, str]:
    tiny_data["dataset"] = {
        "name": "faulty_text",
        "path": tiny_data["dataset"]["path"],
        "fault": faults.get("dataset", ""),
    }
    tiny_data["split"] = {"name": "faulty_split", "fault": faults.get("split", "")}
    tiny_data["tokenizer"] = {
        "name": "faulty_tokenizer",
        "record_path": str(tmp_path / "fit.jsonl"),
        "fault": faults.get("tokenizer", ""),
    }
    tiny_data["model"] = {"name": "faulty_model", "fault": faults.get("model", "")}
    path = write_toml(tmp_path / "exp.toml", tiny_data)
    with using_plugins(FaultyPlugins()):
        code, err = run_cli(["run", str(path)], capsys)
    return code, err.splitlines()[-1] if err else ""


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (
            {"split": "out_of_range"},
            f"split 'faulty_split' {LABEL}: split returned validation segment indices outside "
            "0..239",
        ),
        (
            {"split": "index"},
            f"split 'faulty_split' {LABEL}: IndexError: index 249 is out of bounds",
        ),
        (
            {"dataset": "first"},
            f"dataset 'faulty_text' {LABEL}: segment 3 is not what I expected",
        ),
        (  # raised while the tokenizer consumes the segments: the dataset said it
            {"dataset": "second"},
            f"dataset 'faulty_text' {LABEL}: segment 3 is not what I expected",
        ),
        (
            {"tokenizer": "fit"},
            f"tokenizer 'faulty_tokenizer' {LABEL}: ValueError: merges must be positive",
        ),
        (
            {"tokenizer": "encode"},
            f"tokenizer 'faulty_tokenizer' {LABEL}: cannot encode a lone surrogate",
        ),
        (
            {"model": "build"},
            f"model 'faulty_model' {LABEL}: RuntimeError: no kernel for this layer",
        ),
        ({"model": "forward"}, f"model 'faulty_model' {LABEL}: KeyError: 'rotary'"),
    ],
)
def test_an_error_inside_a_plugin_call_names_the_plugin(
    tmp_path: Path,
    tiny_data: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    faults: dict[str, str],
    expected: str,
) -> None:
    code, err = faulty_run(tmp_path, tiny_data, capsys, **faults)
    assert code == 2, err
    assert err == f"error: {expected}"


def test_a_config_error_from_a_plugin_keeps_its_key_path(
    tmp_path: Path, tiny_data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = faulty_run(tmp_path, tiny_data, capsys, split="config")
    assert code == 2
    assert err == (
        f"error: {tmp_path / 'exp.toml'}: split.fault: split 'faulty_split' {LABEL}: "
        "must be below 1, got 2"
    )


def test_plugin_call_labels_once_and_keeps_class_exit_code_and_key_path() -> None:
    label = "split 'x' from dist"
    with pytest.raises(ConfigError) as config_error, plugin_call(label):
        raise ConfigError("too big", key_path="split.size")
    assert config_error.value.key_path == "split.size"
    assert str(config_error.value.with_source("e.toml")) == f"e.toml: split.size: {label}: too big"

    with pytest.raises(TrainingError) as training, plugin_call("outer"), plugin_call(label):
        raise TrainingError("diverged")
    assert str(training.value) == f"{label}: diverged" and training.value.exit_code == 1

    with pytest.raises(RunInterrupted) as interrupted, plugin_call(label):
        raise RunInterrupted("stopped", 143)
    assert str(interrupted.value) == f"{label}: stopped" and interrupted.value.exit_code == 143

    with pytest.raises(PluginError) as plugin, plugin_call(label):  # labelled already
        raise PluginError(f"{label}: forward returned a tuple")
    assert str(plugin.value) == f"{label}: forward returned a tuple"

    with pytest.raises(PluginError) as other, plugin_call(label):
        raise ZeroDivisionError()
    assert str(other.value) == f"{label}: ZeroDivisionError"
    assert other.value.exit_code == 2

    for passing in (KeyboardInterrupt(), MemoryError("out of memory")):
        with pytest.raises(type(passing)), plugin_call(label):
            raise passing


def test_plugin_iter_labels_the_call_and_each_step() -> None:
    def broken() -> Iterator[str]:
        yield "a"
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    items = plugin_iter("dataset 'd' from dist", broken)
    assert next(items) == "a"
    with pytest.raises(PluginError) as raised:
        next(items)
    assert str(raised.value).startswith("dataset 'd' from dist: UnicodeDecodeError: 'utf-8'")

    def refuses() -> list[str]:
        raise DataError("no such split 'tran'")

    with pytest.raises(DataError, match=r"^dataset 'd' from dist: no such split 'tran'$"):
        list(plugin_iter("dataset 'd' from dist", refuses))


def test_the_tools_name_the_plugin_too(
    tmp_path: Path, tiny_data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """``baseline sample`` (the run's tokenizer decodes) and ``baseline eval --dataset`` (the
    experiment's dataset reads) label what a plugin raised, as training does."""
    tiny_data["train"].update(max_steps=2)
    tiny_data["tokenizer"] = {
        "name": "faulty_tokenizer",
        "record_path": str(tmp_path / "fit.jsonl"),
        "fault": "decode",
    }
    path = write_toml(tmp_path / "exp.toml", tiny_data)
    with using_plugins(FaultyPlugins()):
        code, err = run_cli(["run", str(path)], capsys)
        assert code == 0, err
        run_dir = tmp_path / "runs" / "tiny"
        code, err = run_cli(["sample", str(run_dir), "--max-new-tokens", "3"], capsys)
        assert code == 2
        assert err.splitlines()[-1] == (
            f"error: tokenizer 'faulty_tokenizer' {LABEL}: UnicodeDecodeError: 'utf-8' codec "
            "can't decode byte 0xff in position 0: invalid start byte"
        )
        tiny_data["dataset"] = {
            "name": "faulty_text",
            "path": tiny_data["dataset"]["path"],
            "fault": "first",
        }
        faulty = write_toml(tmp_path / "faulty.toml", tiny_data)
        code, err = run_cli(["eval", str(run_dir), "--dataset", str(faulty)], capsys)
        assert code == 2
        assert err.splitlines()[-1] == (
            f"error: dataset 'faulty_text' {LABEL}: segment 3 is not what I expected"
        )
