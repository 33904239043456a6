"""``[logging.wandb]``: defaults, the metrics request, loading and its error messages."""

from __future__ import annotations

import inspect
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baseline.config import (
    DIAGNOSTICS,
    DatasetConfig,
    DiagnosticsLoggerConfig,
    ExperimentConfig,
    LoggingConfig,
    MetricsRequest,
    ModelConfig,
    RunConfig,
    SplitConfig,
    TokenizerConfig,
)
from baseline.errors import ConfigError, FieldError
from baseline.experiment.loading import structure, unstructure_config
from baseline_wandb import WandbMetricsConfig

KEY_PATH = "logging.wandb"


def test_defaults_are_the_overview_values() -> None:
    config = WandbMetricsConfig()
    assert isinstance(config, DiagnosticsLoggerConfig)
    toggles = {f.name: getattr(config, f.name) for f in attrs.fields(WandbMetricsConfig)}
    assert all(value is True for name, value in toggles.items() if name.startswith("enable_"))
    assert len([name for name in toggles if name.startswith("enable_")]) == 9
    assert (
        config.log_every_n_steps,
        config.diagnostics_every_n_steps,
        config.val_every_n_steps,
        config.attention_entropy_every_n_steps,
        config.attention_entropy_head_cap,
        config.attention_entropy_token_cap,
    ) == (None, 50, 250, 200, 2, 128)
    assert config.watch_model is False
    assert (config.project, config.entity, config.mode, config.run_name) == (None,) * 4
    assert config.tags == ()


def test_the_metrics_request_asks_for_every_diagnostic_on_the_wandb_cadences() -> None:
    request = WandbMetricsConfig().metrics_request(LoggingConfig(log_every_n_steps=7))
    assert request == MetricsRequest(
        log_every_n_steps=7,
        diagnostics=frozenset(DIAGNOSTICS),
        diagnostics_every_n_steps=50,
        attention_entropy_every_n_steps=200,
        attention_entropy_head_cap=2,
        attention_entropy_token_cap=128,
        val_every_n_steps=250,
    )
    own = WandbMetricsConfig(
        log_every_n_steps=3,
        enable_global_grad_norm=False,
        enable_attention_entropy=False,
        val_every_n_steps=0,
    ).metrics_request(LoggingConfig(log_every_n_steps=7))
    assert own.log_every_n_steps == 3
    assert own.diagnostics == {"activation_norms", "ln_grad_norms"}
    assert not own.validation_due(250)


def test_every_field_is_documented() -> None:
    # each field is documented where it is defined: here or in DiagnosticsLoggerConfig
    sources = [inspect.getsource(cls).splitlines() for cls in WandbMetricsConfig.__mro__[:2]]
    for field in attrs.fields(WandbMetricsConfig):
        lines, index = next(
            (lines, i)
            for lines in sources
            for i, line in enumerate(lines)
            if line.strip().startswith(f"{field.name}:")
        )
        assert lines[index - 1].strip().startswith("#:"), f"{field.name} has no #: comment"


# -- loading round trip ------------------------------------------------------------------------

names = st.text(
    st.characters(codec="utf-8", exclude_characters="/\\#?%:", exclude_categories=("Cs", "Cc")),
    min_size=1,
    max_size=20,
).filter(str.strip)
tags = st.lists(names.filter(lambda t: len(t) <= 64), max_size=4, unique=True)
tables = st.fixed_dictionaries(
    {},
    optional={
        **{
            f.name: st.booleans()
            for f in attrs.fields(WandbMetricsConfig)
            if f.name.startswith("enable_") or f.name == "watch_model"
        },
        "log_every_n_steps": st.integers(1, 10_000),
        "diagnostics_every_n_steps": st.integers(1, 10_000),
        "val_every_n_steps": st.integers(0, 10_000),
        "attention_entropy_every_n_steps": st.integers(1, 10_000),
        "attention_entropy_head_cap": st.integers(1, 64),
        "attention_entropy_token_cap": st.integers(2, 4096),
        "project": names,
        "entity": names,
        "mode": st.sampled_from(["online", "offline", "disabled"]),
        "run_name": names,
        "tags": tags,
        "group": names,
        "notes": st.text(max_size=40),
        "init_timeout_s": st.floats(0.1, 1e4) | st.integers(1, 1000),
    },
)


@settings(max_examples=200, deadline=None)
@given(tables)
def test_a_table_round_trips_through_the_loader(table: dict[str, Any]) -> None:
    config = structure(table, WandbMetricsConfig, KEY_PATH)
    for key, value in table.items():
        expected = tuple(value) if key == "tags" else value
        assert getattr(config, key) == expected, key
    plain = unstructure_config(config)
    assert structure(plain, WandbMetricsConfig, KEY_PATH) == config
    assert plain == unstructure_config(structure(plain, WandbMetricsConfig, KEY_PATH))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"mode": "cloud"}, "mode: must be one of 'online', 'offline', 'disabled', got 'cloud'"),
        ({"diagnostics_every_n_steps": 0}, "diagnostics_every_n_steps: must be >= 1, got 0"),
        ({"val_every_n_steps": -1}, "val_every_n_steps: must be >= 0, got -1"),
        ({"attention_entropy_token_cap": 1}, "attention_entropy_token_cap: must be >= 2, got 1"),
        ({"log_every_n_steps": 0}, "log_every_n_steps: must be >= 1, got 0"),
        ({"init_timeout_s": 0}, "init_timeout_s: must be > 0, got 0"),
        (
            {"project": "team/project"},
            "project: W&B project names cannot contain '/', got 'team/project'",
        ),
        ({"project": " "}, "project: must not be empty"),
        (
            {"tags": ["ok", "x" * 65]},
            f"tags[1]: W&B tags have 1 to 64 characters, got '{'x' * 65}'",
        ),
        ({"tags": ["a", "a"]}, "tags: lists a tag twice: ['a', 'a']"),
        (
            {"enable_perplexity": "yes"},
            "enable_perplexity: expected true or false, got a string 'yes'",
        ),
        ({"watch_modle": True}, "watch_modle: unknown key; did you mean 'watch_model'?"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        structure(table, WandbMetricsConfig, KEY_PATH)
    assert str(caught.value).startswith(f"{KEY_PATH}.{message}")
    assert "\n" not in str(caught.value)


def experiment(project_name: str) -> ExperimentConfig:
    return ExperimentConfig(
        dataset=DatasetConfig(),
        tokenizer=TokenizerConfig(),
        model=ModelConfig(),
        split=SplitConfig(),
        run=RunConfig(project_name=project_name),
    )


def test_the_project_falls_back_to_a_run_project_name_wandb_accepts() -> None:
    WandbMetricsConfig().validate(experiment("tiny-shakespeare"))
    WandbMetricsConfig(project="ok").validate(experiment("has:colon"))
    with pytest.raises(FieldError) as caught:
        WandbMetricsConfig().validate(experiment("has:colon"))
    assert caught.value.field == "project"
    assert caught.value.message == (
        "W&B project names cannot contain ':', got 'has:colon' (from run.project_name); set project"
    )
