"""What plugins return is checked where it enters the core: one line naming the component, its
distribution, what was expected and what came back (exit 2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from core_support import write_toml

from baseline.cli import main
from baseline.config import ModelConfig
from baseline.errors import PluginError
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import PluginSource, build_plugin_set
from baseline.plugins.hookspecs import hookimpl
from baseline.testing import (
    RecordingTokenizer,
    RecordingTokenizerConfig,
    check_model_adapter,
    check_tokenizer_adapter,
    in_process_plugins,
    tiny_experiment_data,
    using_plugins,
)

VOCAB = 302  # the tiny experiment's bpe: 300 + 2 special ids


@attrs.frozen(kw_only=True)
class BadModelConfig(ModelConfig):
    output: str = "tuple"


class BadModel:
    """A model whose forward returns the wrong thing (``output``) or whose factory raises."""

    def __init__(self, config: BadModelConfig) -> None:
        if config.output == "raise":
            raise ValueError("d_model must be even,\nnot odd")
        self.config = config

    def build(self, vocab_size: int, seq_len: int) -> torch.nn.Module:
        output = self.config.output
        width = vocab_size + 44 if output == "wide" else vocab_size

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embedding = torch.nn.Embedding(vocab_size, width)

            def forward(self, tokens: torch.Tensor) -> Any:
                logits = self.embedding(tokens)
                if output == "tuple":
                    return logits, None
                if output == "flat":
                    return logits.reshape(logits.shape[0], -1)
                return logits

        return Net()


class BadModelPlugin:
    @hookimpl
    def baseline_register_models(self, register: Any) -> None:
        register("bad_model", BadModelConfig, BadModel)


@attrs.frozen(kw_only=True)
class OverflowingConfig(RecordingTokenizerConfig):
    extra_id: int = 300
    drop_one: bool = False


class OverflowingTokenizer(RecordingTokenizer):
    """Bytes as ids plus ``extra_id`` (outside the 257-id vocabulary), or one list short."""

    def __init__(self, config: OverflowingConfig) -> None:
        super().__init__(config)
        self.extra = config.extra_id
        self.drop_one = config.drop_one

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = [[*text.encode("utf-8"), self.extra] for text in texts]
        return encoded[:-1] if self.drop_one else encoded


class OverflowingPlugin:
    @hookimpl
    def baseline_register_tokenizers(self, register: Any) -> None:
        register("overflowing", OverflowingConfig, OverflowingTokenizer)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    ("output", "received"),
    [
        ("tuple", "forward returned a tuple"),
        ("flat", f"forward returned a tensor of shape (8, {16 * VOCAB})"),
        ("wide", f"forward returned a tensor of shape (8, 16, {VOCAB + 44})"),
    ],
)
def test_a_model_returning_the_wrong_thing_stops_at_the_first_step(
    tmp_path: Path,
    tiny_data: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    output: str,
    received: str,
) -> None:
    tiny_data["model"] = {"name": "bad_model", "output": output}
    write_toml(tmp_path / "exp.toml", tiny_data)
    with using_plugins(BadModelPlugin()):
        code, err = run_cli(["run", str(tmp_path / "exp.toml")], capsys)
    assert code == 2, err
    last = err.splitlines()[-1]
    assert last == (
        f"error: model 'bad_model' from test-plugins: {received}, expected logits of shape "
        f"(batch, seq_len, vocab_size) = (8, 16, {VOCAB}); "
        + (
            "return the logits tensor alone"
            if output == "tuple"
            else "the output layer must have vocab_size outputs (the vocab_size passed to build())"
        )
    ), err
    assert "Traceback" not in err
    assert not list((tmp_path / "runs" / "tiny").glob("*.pt"))  # not one step trained


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"extra_id": 300},
            "encode_batch returned id 300, outside the vocabulary 0..256 (vocab_size=257); "
            "ids must be below vocab_size",
        ),
        (
            {"extra_id": -1},
            "encode_batch returned id -1, outside the vocabulary 0..256 (vocab_size=257); "
            "ids must be below vocab_size",
        ),
        (
            {"extra_id": 3, "drop_one": True},
            "encode_batch returned 239 sequences for 240 texts; it must return one list of ids "
            "per text",
        ),
    ],
)
def test_a_tokenizer_returning_ids_outside_its_vocabulary_is_one_line(
    tmp_path: Path,
    tiny_data: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    settings: dict[str, Any],
    message: str,
) -> None:
    tiny_data["tokenizer"] = {
        "name": "overflowing",
        "record_path": str(tmp_path / "fit.jsonl"),
        **settings,
    }
    write_toml(tmp_path / "exp.toml", tiny_data)
    with using_plugins(OverflowingPlugin()):
        code, err = run_cli(["run", str(tmp_path / "exp.toml")], capsys)
    assert code == 2, err
    assert err.splitlines()[-1] == f"error: tokenizer 'overflowing' from test-plugins: {message}"
    cache = tmp_path / "runs" / ".token_cache"
    assert not [p for p in cache.iterdir() if p.is_dir()]  # nothing half-built left behind


def test_a_model_factory_that_raises_during_validation_names_the_plugin(
    tmp_path: Path, tiny_data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_data["model"] = {"name": "bad_model", "output": "raise"}
    write_toml(tmp_path / "exp.toml", tiny_data)
    with using_plugins(BadModelPlugin()):
        for command in ("validate", "run"):
            code, err = run_cli([command, str(tmp_path / "exp.toml")], capsys)
            assert code == 2, err
            assert err == (
                "error: model 'bad_model' from test-plugins failed to build: ValueError: "
                "d_model must be even,"
            ), err


@attrs.frozen(kw_only=True)
class SharedConfig(ModelConfig):
    width: int = 8


class TwoModelsOneConfig:
    @hookimpl
    def baseline_register_models(self, register: Any) -> None:
        register("wide_head", SharedConfig, BadModel)
        register("broken_model", SharedConfig, BadModel)


def test_two_components_with_one_config_class_are_refused_naming_both(
    tmp_path: Path, tiny_data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    expected = (
        "models 'wide_head' (test-plugins) and 'broken_model' (test-plugins) are registered "
        "with the same config class SharedConfig; give each its own config class (a subclass "
        "is enough)"
    )
    plugin_set = in_process_plugins(TwoModelsOneConfig(), installed=False)
    assert [failure.error for failure in plugin_set.failures] == [expected]
    assert "wide_head" not in plugin_set.registry.names("model")

    tiny_data["model"] = {"name": "broken_model"}
    write_toml(tmp_path / "exp.toml", tiny_data)
    with using_plugins(TwoModelsOneConfig()):
        code, err = run_cli(["validate", str(tmp_path / "exp.toml")], capsys)
    assert code == 2
    assert err.startswith(
        f"error: {tmp_path / 'exp.toml'}: model.name: unknown model 'broken_model'"
    ), err
    assert expected in err and "\n" not in err


def test_one_config_class_across_two_plugins_is_refused() -> None:
    class First:
        @hookimpl
        def baseline_register_models(self, register: Any) -> None:
            register("wide_head", SharedConfig, BadModel)

    class Second:
        @hookimpl
        def baseline_register_models(self, register: Any) -> None:
            register("broken_model", SharedConfig, BadModel)

    sources = [
        PluginSource(First(), "first", "dist-a", "1"),
        PluginSource(Second(), "second", "dist-b", "1"),
    ]
    with pytest.raises(PluginError) as raised:
        build_plugin_set(sources)
    assert str(raised.value) == (
        "models 'wide_head' (dist-a) and 'broken_model' (dist-b) are registered with the same "
        "config class SharedConfig; give each its own config class (a subclass is enough)"
    )


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (
            "tuple",
            "forward must return logits of shape (batch, seq_len, vocab_size) = (3, 12, 64), got a tuple",
        ),
        (
            "flat",
            "forward must return logits of shape (batch, seq_len, vocab_size) = (3, 12, 64), got shape (3, 768)",
        ),
        (
            "wide",
            "forward must return logits of shape (batch, seq_len, vocab_size) = (3, 12, 64), got shape (3, 12, 108)",
        ),
    ],
)
def test_check_model_adapter_names_the_rule_and_the_shape(output: str, message: str) -> None:
    with pytest.raises(AssertionError) as raised:
        check_model_adapter(BadModel(BadModelConfig(output=output)))
    assert str(raised.value) == message


def test_check_tokenizer_adapter_names_the_vocabulary(tmp_path: Path) -> None:
    config = OverflowingConfig(record_path=str(tmp_path / "fit.jsonl"))
    with pytest.raises(AssertionError) as raised:
        check_tokenizer_adapter(lambda: OverflowingTokenizer(config), ["some text"], tmp_path)
    assert str(raised.value).startswith(
        "encode_batch must return ids in 0..256 (below vocab_size=257), got [300] for "
    )


def test_tiny_experiment_data_accepts_a_str(tmp_path: Path, registry: Any) -> None:
    data = tiny_experiment_data(str(tmp_path / "work"))
    assert (tmp_path / "work" / "corpus.txt").is_file()
    experiment_from_data(data, registry)


def test_a_correct_model_still_trains(tmp_path: Path) -> None:
    data = tiny_experiment_data(tmp_path)
    data["train"]["epochs"] = 1
    data["model"] = {"name": "bad_model", "output": "logits"}
    with using_plugins(BadModelPlugin()) as plugins:
        result = model_pipeline(experiment_from_data(data, plugins.registry))
    assert result.steps > 0
