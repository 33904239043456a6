"""Cross-field validation and ``[run] requires``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from baseline.config.requirements import check_requirements
from baseline.errors import ConfigError
from baseline.experiment.loading import experiment_from_data
from baseline.experiment.validation import validate_experiment_config
from baseline.plugins.registry import ComponentRegistry


def validation_error(registry: ComponentRegistry, data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        config = experiment_from_data(data, registry)
        validate_experiment_config(config, registry, source="exp.toml")
    return str(caught.value)


def test_valid_experiment_passes(registry: ComponentRegistry, tiny_data: dict[str, Any]) -> None:
    validate_experiment_config(experiment_from_data(tiny_data, registry), registry)


def test_heads_must_divide_width(registry: ComponentRegistry, tiny_data: dict[str, Any]) -> None:
    tiny_data["model"].update(d_model=128, n_heads=7)
    assert (
        validation_error(registry, tiny_data)
        == "exp.toml: model.n_heads: must divide d_model=128, got 7"
    )


def test_stride_at_most_seq_len(registry: ComponentRegistry, tiny_data: dict[str, Any]) -> None:
    tiny_data["train"].update(seq_len=16, stride=17)
    assert "train.stride: must be <= seq_len=16" in validation_error(registry, tiny_data)


def test_checkpoint_and_model_names_differ(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["run"].update(checkpoint_filename="x.pt", final_model_filename="x.pt")
    assert "run.final_model_filename: must differ" in validation_error(registry, tiny_data)


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        (
            "baseline-not-a-plugin>=0.1",
            'run.requires[0]: baseline-not-a-plugin is not installed; run: pip install "baseline-not-a-plugin>=0.1"',
        ),
        (
            "baseline-bpe>=99",
            "run.requires[0]: baseline-bpe 0.1.0 is installed but 'baseline-bpe>=99' is required; run: pip install --upgrade \"baseline-bpe>=99\"",
        ),
        ("not a requirement!!", "run.requires[0]: invalid requirement"),
    ],
)
def test_requires(
    registry: ComponentRegistry, tiny_data: dict[str, Any], requirement: str, expected: str
) -> None:
    tiny_data["run"]["requires"] = [requirement]
    assert expected in validation_error(registry, tiny_data)


def test_a_missing_plugin_is_named_before_its_component(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["run"]["requires"] = ["baseline-neptune>=0.1"]
    tiny_data["logging"]["provider"] = ["console", "neptune"]
    message = validation_error(registry, tiny_data)
    assert (
        message
        == 'run.requires[0]: baseline-neptune is not installed; run: pip install "baseline-neptune>=0.1"'
    )


def test_met_requirements_pass() -> None:
    check_requirements(["baseline>=0.1", "baseline-bpe", "baseline-holdout>=0.1,<1"])


def test_python_api_config_with_unregistered_class(
    registry: ComponentRegistry, tiny_data: dict[str, Any], tmp_path: Path
) -> None:
    from baseline.config import DatasetConfig

    @attrs.frozen(kw_only=True)
    class Unregistered(DatasetConfig):
        pass

    config = experiment_from_data(tiny_data, registry).replace(dataset=Unregistered())
    with pytest.raises(
        ConfigError, match="dataset: Unregistered is not the config class of any installed dataset"
    ):
        validate_experiment_config(config, registry)
