"""Experiment files: TOML errors with key paths, overrides, paths, round trips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from core_support import REPO_ROOT, write_toml

from baseline.config import ExperimentConfig
from baseline.errors import ConfigError
from baseline.experiment.loading import (
    apply_overrides,
    experiment_from_data,
    experiment_to_data,
    load_experiment,
    parse_override,
)
from baseline.plugins.registry import ComponentRegistry


def load_error(tmp_path: Path, registry: ComponentRegistry, data: dict[str, Any]) -> str:
    path = write_toml(tmp_path / "exp.toml", data)
    with pytest.raises(ConfigError) as caught:
        load_experiment(path, registry)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def test_shipped_experiment_loads(registry: ComponentRegistry) -> None:
    config = load_experiment(REPO_ROOT / "experiments/tiny_shakespeare.toml", registry)
    assert isinstance(config, ExperimentConfig)
    assert config.dataset.path == str(REPO_ROOT / "data/tinyshakespeare.txt")  # type: ignore[attr-defined]
    assert config.logging.provider == ("console",)


def test_relative_paths_resolve_against_the_experiment_file(
    tmp_path: Path, registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["dataset"]["path"] = "corpus.txt"
    tiny_data["run"]["artifacts_root"] = "out"
    path = write_toml(tmp_path / "exp.toml", tiny_data)
    config = load_experiment(path, registry)
    assert config.dataset.path == str(tmp_path / "corpus.txt")  # type: ignore[attr-defined]
    assert config.run.artifacts_root == str(tmp_path / "out")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(trian={"epochs": 1}), "trian: unknown section; did you mean 'train'?"),
        (lambda d: d["train"].update(epocs=2), "train.epocs: unknown key; did you mean 'epochs'?"),
        (
            lambda d: d["model"].update(n_head=2),
            "model.n_head: unknown key; did you mean 'n_heads'?",
        ),
        (
            lambda d: d["train"].update(epochs="3"),
            "train.epochs: expected an integer, got a string '3'",
        ),
        (
            lambda d: d["train"].update(batch_size=2.5),
            "train.batch_size: expected an integer, got a number 2.5",
        ),
        (
            lambda d: d["run"].update(resume_from_checkpoint="yes"),
            "run.resume_from_checkpoint: expected true or false",
        ),
        (lambda d: d["train"].update(batch_size=0), "train.batch_size: must be >= 1, got 0"),
        (lambda d: d["train"].update(learning_rate=-1.0), "train.learning_rate: must be > 0"),
        (
            lambda d: d["train"].update(data_fraction=1.5),
            "train.data_fraction: must be in (0.0, 1.0], got 1.5",
        ),
        (
            lambda d: d["split"].update(train_fraction=1.0),
            "split.train_fraction: must be in (0.0, 1.0), got 1.0",
        ),
        (
            lambda d: d["train"].update(lr_schedule="linear"),
            "train.lr_schedule: must be one of 'constant', 'cosine', got 'linear'",
        ),
        (
            lambda d: d["model"].update(name="baseline_decodr"),
            "model.name: unknown model 'baseline_decodr'; did you mean 'baseline_decoder'? Installed: baseline_decoder",
        ),
        (lambda d: d["dataset"].pop("name"), "dataset: missing 'name'; one of: "),
        (lambda d: d.pop("tokenizer"), "tokenizer: missing section [tokenizer]"),
        (lambda d: d["dataset"].pop("path"), "dataset.path: missing required key"),
        (
            lambda d: d["logging"].update(provider="consle"),
            "logging.provider: unknown logger 'consle'; did you mean 'console'?",
        ),
        (
            lambda d: d["logging"].update(provider=["console", "console"]),
            "logging.provider: lists a provider twice",
        ),
        (
            lambda d: d["logging"].update(wandb={"project": "x"}),
            "logging.wandb: settings for a logger that is not enabled",
        ),
        (
            lambda d: d["logging"].update(log_every=3),
            "logging.log_every: unknown key; did you mean 'log_every_n_steps'?",
        ),
        (
            lambda d: d["run"].update(requires="baseline-bpe"),
            "run.requires: expected a list of strings",
        ),
        (lambda d: d["run"].update(run_name="a/b"), "run.run_name: must be a plain file name"),
    ],
)
def test_bad_values_name_the_key_path(
    tmp_path: Path,
    registry: ComponentRegistry,
    tiny_data: dict[str, Any],
    mutate: Any,
    expected: str,
) -> None:
    mutate(tiny_data)
    assert expected in load_error(tmp_path, registry, tiny_data)


def test_several_problems_are_counted(
    tmp_path: Path, registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"].update(epochs="x", batch_size="y")
    assert "(and 1 more problem)" in load_error(tmp_path, registry, tiny_data)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[train\nepochs = 1\n", "invalid TOML: "),
        (b"[train]\nepochs = \n", "invalid TOML: "),
        (b"[train]\nepochs = 1\nepochs = 2\n", "invalid TOML: "),
        (b'name = "\xff\xfe"\n', "is not UTF-8 text"),
    ],
)
def test_malformed_files(
    tmp_path: Path, registry: ComponentRegistry, content: bytes, expected: str
) -> None:
    path = tmp_path / "broken.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected) as caught:
        load_experiment(path, registry)
    assert str(caught.value).startswith(f"{path}: ")


def test_missing_and_directory_files(tmp_path: Path, registry: ComponentRegistry) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_experiment(tmp_path / "nope.toml", registry)
    with pytest.raises(ConfigError, match="is a directory"):
        load_experiment(tmp_path, registry)


def test_section_that_is_not_a_table(registry: ComponentRegistry) -> None:
    with pytest.raises(ConfigError, match=r"^train: must be a table"):
        experiment_from_data({"train": 3}, registry)


@pytest.mark.parametrize(
    ("assignment", "key", "value"),
    [
        ("train.epochs=2", "train.epochs", 2),
        ("train.learning_rate=3e-4", "train.learning_rate", 3e-4),
        ("run.run_name=my-run", "run.run_name", "my-run"),
        ('run.run_name="quoted"', "run.run_name", "quoted"),
        ('logging.provider=["console"]', "logging.provider", ["console"]),
        ("run.resume_from_checkpoint=true", "run.resume_from_checkpoint", True),
    ],
)
def test_parse_override(assignment: str, key: str, value: Any) -> None:
    assert parse_override(assignment) == (key, value)


def test_overrides_apply_and_validate(
    tmp_path: Path, registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    path = write_toml(tmp_path / "exp.toml", tiny_data)
    config = load_experiment(
        path, registry, ["train.epochs=5", "model.d_model=64", "model.n_heads=4"]
    )
    assert config.train.epochs == 5
    assert config.model.d_model == 64  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"^--set: train.epochs: must be >= 1, got 0"):
        load_experiment(path, registry, ["train.epochs=0"])  # the override, not the file
    with pytest.raises(ConfigError, match="invalid override"):
        load_experiment(path, registry, ["train.epochs"])
    with pytest.raises(ConfigError, match=r"train\.epochs is not a table"):
        apply_overrides(tiny_data, ["train.epochs.x=1"])


def test_unstructured_config_is_plain_json_and_loads_back_equal(
    tmp_path: Path, registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    config = load_experiment(write_toml(tmp_path / "exp.toml", tiny_data), registry)
    data = json.loads(json.dumps(experiment_to_data(config, registry)))
    assert experiment_from_data(data, registry) == config
    again = load_experiment(write_toml(tmp_path / "again.toml", data), registry)
    assert again == config


def test_the_python_experiment_is_the_toml_experiment(registry: ComponentRegistry) -> None:
    import importlib.util

    from baseline.experiment.loading import experiment_to_data

    spec = importlib.util.spec_from_file_location(
        "tiny_shakespeare_py", REPO_ROOT / "experiments/tiny_shakespeare.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from_python = experiment_to_data(module.build_config(), registry)
    from_toml = experiment_to_data(
        load_experiment(REPO_ROOT / "experiments/tiny_shakespeare.toml", registry), registry
    )
    from_toml["run"].pop("requires")
    from_python["run"].pop("requires")
    assert from_python == from_toml
