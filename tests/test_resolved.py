"""Validation resolves an experiment once; the pipeline and commands use what it resolved."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import attrs
import pytest

from baseline.config import ComponentConfig, ExperimentConfig
from baseline.errors import ConfigError
from baseline.experiment.loading import experiment_from_data, experiment_to_data
from baseline.experiment.resolved import ResolvedExperiment
from baseline.experiment.validation import validate_experiment_config
from baseline.metrics.router import MetricsPlan
from baseline.pipeline import metrics_plan, model_pipeline
from baseline.plugins.discovery import PluginSet, default_plugins
from baseline.plugins.registry import Component, ComponentRegistry

KINDS = ("dataset", "tokenizer", "model", "split")


class CountingRegistry(ComponentRegistry):
    """A real registry that counts its lookups by kind (``name_of`` goes through
    ``component_of``, so every lookup is counted once)."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: Counter[str] = Counter()

    def get(self, kind: str, name: str) -> Component:
        self.lookups[kind] += 1
        return super().get(kind, name)

    def component_of(self, kind: str, config: ComponentConfig) -> Component:
        self.lookups[kind] += 1
        return super().component_of(kind, config)


def counting_plugins() -> PluginSet:
    """The installed plugins, their components in a :class:`CountingRegistry`."""
    installed = default_plugins()
    registry = CountingRegistry()
    for component in installed.registry.components():
        registry.add(component)
    return attrs.evolve(installed, registry=registry)


def lookups(plugins: PluginSet) -> Counter[str]:
    registry = plugins.registry
    assert isinstance(registry, CountingRegistry)
    return registry.lookups


def tiny_config(registry: ComponentRegistry, data: dict[str, Any]) -> ExperimentConfig:
    return experiment_from_data(data, registry)


def test_resolved_experiment_names_each_component_and_its_distribution(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    config = tiny_config(registry, tiny_data)
    resolved = validate_experiment_config(config, registry)
    assert isinstance(resolved, ResolvedExperiment)
    assert resolved.config is config
    for kind in KINDS:
        part = getattr(resolved, kind)
        registered = registry.get(kind, tiny_data[kind]["name"])
        assert (part.kind, part.name) == (kind, tiny_data[kind]["name"])
        assert (part.distribution, part.version) == (registered.distribution, registered.version)
        assert part.factory is registered.factory
        assert part.config is getattr(config, kind)
        assert part.label == f"{kind} {part.name!r} from {registered.distribution}"
    assert resolved.dataset.distribution == "baseline-text"
    assert resolved.model.distribution == "baseline-decoder"
    assert list(resolved.loggers) == ["console"]
    assert resolved.loggers["console"].distribution == "baseline"
    assert resolved.logger_settings == {"console": config.logging.loggers["console"]}
    assert resolved.summary() == (
        "dataset=local_text, tokenizer=bpe, model=baseline_decoder, split=holdout, logging=console"
    )


def test_resolved_experiment_holds_the_config_data_and_the_metrics_requests(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    config = tiny_config(registry, tiny_data)
    resolved = validate_experiment_config(config, registry)
    assert resolved.config_data == experiment_to_data(config, registry)
    assert experiment_from_data(json.loads(json.dumps(resolved.config_data)), registry) == config
    console = config.logging.loggers["console"]
    assert resolved.metrics_requests == {"console": console.metrics_request(config.logging)}
    plan = metrics_plan(resolved)
    assert plan == MetricsPlan(resolved.metrics_requests, config.logging.log_every_n_steps)


def test_a_logger_without_settings_resolves_to_its_defaults(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    config = tiny_config(registry, tiny_data)
    bare = attrs.evolve(config, logging=attrs.evolve(config.logging, loggers={}))
    resolved = validate_experiment_config(bare, registry)
    default = registry.get("logger", "console").config_cls()
    assert resolved.loggers["console"].config == default
    assert (
        resolved.config_data["logging"]["console"]
        == experiment_to_data(bare, registry)["logging"]["console"]
    )


def test_an_unregistered_config_class_is_still_a_config_error(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    config = tiny_config(registry, tiny_data)
    stray = attrs.make_class("Stray", {}, bases=(type(config.split),), frozen=True)
    config = attrs.evolve(config, split=stray())
    with pytest.raises(ConfigError, match="not the config class of any installed split"):
        validate_experiment_config(config, registry, source="exp.toml")


def test_validate_then_run_looks_each_component_up_once(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    config = tiny_config(registry, tiny_data)  # loading looks components up by name
    plugins = counting_plugins()
    resolved = validate_experiment_config(config, plugins.registry)
    once = Counter({kind: 1 for kind in (*KINDS, "logger")})
    assert lookups(plugins) == once
    result = model_pipeline(resolved, plugins=plugins)
    assert lookups(plugins) == once  # the run asked the registry nothing more
    inference = json.loads((result.run_dir / "inference_config.json").read_text())
    assert inference["model"]["name"] == resolved.model.name
    run_config = json.loads((result.run_dir / "run_config.json").read_text())
    assert run_config["config"] == json.loads(json.dumps(resolved.config_data))


def test_a_run_from_a_plain_config_also_looks_each_component_up_once(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"]["epochs"] = 1
    plugins = counting_plugins()
    model_pipeline(tiny_config(registry, tiny_data), plugins=plugins)
    assert lookups(plugins) == Counter({kind: 1 for kind in (*KINDS, "logger")})
