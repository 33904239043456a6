"""Invalid variant combinations: one-line errors from the config, and through the CLI.

The CLI tests run ``baseline validate`` on the shipped experiments with ``--set`` overrides;
they need the standard plugins and a checkout of the repository (the nox ``plugin`` session,
which installs this plugin alone with the core, skips them).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from baseline.errors import ConfigError, FieldError
from baseline.experiment.loading import structure
from baseline_decoder import BaselineDecoderConfig

REPO = Path(__file__).resolve().parents[3]
GPT2 = "experiments/gpt2_style.toml"
LLAMA = "experiments/llama_style.toml"
STANDARD = ("baseline_text", "baseline_bpe", "baseline_holdout")

needs_the_standard_plugins = pytest.mark.skipif(
    not (REPO / LLAMA).is_file() or any(importlib.util.find_spec(m) is None for m in STANDARD),
    reason="needs a checkout of the repository and the standard plugins",
)


def validate(config: BaselineDecoderConfig) -> None:
    config.validate(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "key", "message"),
    [
        ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads", "must divide n_heads=4, got 3"),
        ({"n_heads": 4, "n_kv_heads": 8}, "n_kv_heads", "must be <= n_heads=4, got 8"),
        (
            {"d_model": 132, "n_heads": 4, "position_encoding": "rope", "n_kv_heads": 2},
            "n_heads",
            "rope needs an even head size; d_model / n_heads = 33",
        ),
        (
            {"d_model": 16, "n_heads": 16, "qk_norm": True},
            "qk_norm",
            'with norm = "layernorm" needs a head size >= 2 (a LayerNorm of one channel is '
            'always 0), got d_model / n_heads = 1; use norm = "rmsnorm"',
        ),
        (
            {"d_model": 128, "mlp_ratio": 0.001},
            "mlp_ratio",
            "must give at least 1 hidden unit (int(mlp_ratio * d_model) with d_model=128), "
            "got 0.001",
        ),
    ],
)
def test_invalid_combinations_name_their_key(
    fields: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(FieldError) as caught:
        validate(BaselineDecoderConfig(**fields))
    assert caught.value.field == key and caught.value.message == message


@pytest.mark.parametrize(
    "fields",
    [
        {"n_heads": 4, "n_kv_heads": 4},
        {"n_heads": 4, "n_kv_heads": 1},
        {"d_model": 16, "n_heads": 16, "qk_norm": True, "norm": "rmsnorm"},
        {"d_model": 128, "mlp_ratio": 0.001, "mlp": "swiglu"},  # at least one multiple of 8
        {"d_model": 96, "n_heads": 6, "n_kv_heads": 3, "position_encoding": "rope"},
    ],
)
def test_valid_combinations(fields: dict[str, Any]) -> None:
    validate(BaselineDecoderConfig(**fields))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("n_kv_heads", 0, "model.n_kv_heads: must be >= 1, got 0"),
        (
            "norm",
            "batchnorm",
            "model.norm: must be one of 'layernorm', 'rmsnorm', got 'batchnorm'",
        ),
        ("mlp", "swish", "model.mlp: must be one of 'gelu', 'swiglu', 'relu2', got 'swish'"),
        ("qk_norm", "yes", "model.qk_norm: expected true or false"),
    ],
)
def test_field_values(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        structure({key: value}, BaselineDecoderConfig, "model")


def baseline_validate(experiment: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BASELINE_DEBUG"}
    args = [arg for override in overrides for arg in ("--set", override)]
    return subprocess.run(
        [str(Path(sys.executable).parent / "baseline"), "validate", experiment, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


@needs_the_standard_plugins
@pytest.mark.parametrize(
    ("experiment", "overrides", "error"),
    [
        (LLAMA, ["model.n_kv_heads=3"], "model.n_kv_heads: must divide n_heads=4, got 3"),
        (LLAMA, ["model.n_kv_heads=8"], "model.n_kv_heads: must be <= n_heads=4, got 8"),
        (LLAMA, ["model.n_kv_heads=0"], "--set: model.n_kv_heads: must be >= 1, got 0"),
        (
            LLAMA,
            ["model.d_model=132"],
            "model.n_heads: rope needs an even head size; d_model / n_heads = 33",
        ),
        (
            GPT2,
            ["model.qk_norm=true", "model.n_heads=128"],
            'model.qk_norm: with norm = "layernorm" needs a head size >= 2 (a LayerNorm of one '
            'channel is always 0), got d_model / n_heads = 1; use norm = "rmsnorm"',
        ),
        (
            GPT2,
            ["model.mlp_ratio=0.001"],
            "model.mlp_ratio: must give at least 1 hidden unit (int(mlp_ratio * d_model) with "
            "d_model=128), got 0.001",
        ),
        (
            GPT2,
            ['model.norm="batchnorm"'],
            "--set: model.norm: must be one of 'layernorm', 'rmsnorm', got 'batchnorm'",
        ),
        (
            LLAMA,
            ['model.mlp="swish"'],
            "--set: model.mlp: must be one of 'gelu', 'swiglu', 'relu2', got 'swish'",
        ),
    ],
)
def test_baseline_validate_prints_one_line(
    experiment: str, overrides: list[str], error: str
) -> None:
    result = baseline_validate(experiment, *overrides)
    assert result.returncode == 2, result.stderr
    # A value rejected on its own is blamed on --set; a rule across keys on the file.
    source = "" if error.startswith("--set: ") else f"{experiment}: "
    assert result.stderr.strip() == f"error: {source}{error}", result.stderr


@needs_the_standard_plugins
@pytest.mark.parametrize("experiment", [GPT2, LLAMA])
def test_the_shipped_variant_experiments_are_valid(experiment: str) -> None:
    result = baseline_validate(experiment)
    assert result.returncode == 0, result.stderr
    assert "model=baseline_decoder" in result.stdout


@needs_the_standard_plugins
def test_the_shipped_variant_experiments_build_their_models() -> None:
    from baseline.experiment.loading import load_experiment
    from baseline.plugins.discovery import default_plugins

    registry = default_plugins().registry
    gpt2 = load_experiment(REPO / GPT2, registry).model
    llama = load_experiment(REPO / LLAMA, registry).model
    assert isinstance(gpt2, BaselineDecoderConfig) and isinstance(llama, BaselineDecoderConfig)
    assert (gpt2.norm, gpt2.mlp, gpt2.position_encoding, gpt2.bias, gpt2.kv_heads) == (
        "layernorm",
        "gelu",
        "learned",
        True,
        4,
    )
    assert (llama.norm, llama.mlp, llama.position_encoding, llama.bias) == (
        "rmsnorm",
        "swiglu",
        "rope",
        False,
    )
    assert (llama.n_heads, llama.kv_heads, llama.mlp_hidden) == (4, 2, 344)
