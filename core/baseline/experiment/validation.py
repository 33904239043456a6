"""Cross-field validation of a whole experiment, run before any work starts."""

from __future__ import annotations

from typing import Any

from baseline.config import (
    MODEL_DIAGNOSTICS,
    ComponentConfig,
    ExperimentConfig,
    LoggerConfig,
    TrainConfig,
)
from baseline.config.requirements import check_requirements
from baseline.errors import ConfigError, FieldError
from baseline.experiment.loading import COMPONENT_SECTIONS, experiment_to_data
from baseline.plugins.components import build_adapter
from baseline.plugins.registry import ComponentRegistry
from baseline.runs.source_run import source_run


def validate_experiment_config(
    config: ExperimentConfig,
    registry: ComponentRegistry | None = None,
    *,
    source: str | None = None,
) -> None:
    """Raise a :class:`ConfigError` for the first rule ``config`` breaks.

    Checks that every component is installed and that requirements are met, then the core's
    own cross-field rules, then each component config's :meth:`ComponentConfig.validate`.
    """
    if registry is None:
        from baseline.plugins.discovery import default_plugins

        registry = default_plugins().registry
    try:
        _validate(config, registry)
    except ConfigError as error:
        raise (error.with_source(source) if source else error) from None


def _validate(config: ExperimentConfig, registry: ComponentRegistry) -> None:
    check_requirements(config.run.requires)
    for section, kind in COMPONENT_SECTIONS.items():
        registry.name_of(kind, getattr(config, section))
    for provider in config.logging.provider:
        component = registry.get("logger", provider)
        settings = config.logging.loggers.get(provider)
        if settings is not None and type(settings) is not component.config_cls:
            raise ConfigError(
                f"expected {component.config_cls.__qualname__}, got {type(settings).__qualname__}",
                key_path=f"logging.{provider}",
            )
    for provider in config.logging.loggers:
        if provider not in config.logging.provider:
            raise ConfigError(
                f"settings for a logger that is not enabled; add {provider!r} to logging.provider",
                key_path=f"logging.{provider}",
            )

    train = config.train
    _check_parallelism(train)
    if train.stride is not None and train.stride > train.seq_len:
        raise ConfigError(
            f"must be <= seq_len={train.seq_len} (windows would skip tokens), got {train.stride}",
            key_path="train.stride",
        )
    if config.run.checkpoint_filename == config.run.final_model_filename:
        raise ConfigError(
            "must differ from run.checkpoint_filename", key_path="run.final_model_filename"
        )

    for section in COMPONENT_SECTIONS:
        _validate_component(getattr(config, section), section, config)
    for provider, settings in config.logging.loggers.items():
        _validate_component(settings, f"logging.{provider}", config)
    _check_model_diagnostics(config, registry)
    if config.run.init_from is not None:  # the source run exists and has the same model
        source_run(config, experiment_to_data(config, registry))


def logger_settings(
    config: ExperimentConfig, registry: ComponentRegistry
) -> dict[str, LoggerConfig]:
    """Each enabled logger's settings, defaults filled in for loggers without a table."""
    settings: dict[str, LoggerConfig] = {}
    for provider in config.logging.provider:
        given = (
            config.logging.loggers.get(provider) or registry.get("logger", provider).config_cls()
        )
        assert isinstance(given, LoggerConfig)
        settings[provider] = given
    return settings


def _check_model_diagnostics(config: ExperimentConfig, registry: ComponentRegistry) -> None:
    """A logger that asks for a layer diagnostic needs a model adapter that declares it."""
    component = registry.get("model", registry.name_of("model", config.model))
    declared: Any = getattr(component.factory, "diagnostics", None)  # a class attribute
    if declared is None:
        declared = getattr(build_adapter(component, config.model), "diagnostics", ())
    supported = frozenset(declared)
    entropy_caps: dict[tuple[int, int], str] = {}
    for provider, settings in logger_settings(config, registry).items():
        request = settings.metrics_request(config.logging)
        requested = request.diagnostics
        if "attention_entropy" in requested:
            caps = (request.attention_entropy_head_cap, request.attention_entropy_token_cap)
            other = next((name for c, name in entropy_caps.items() if c != caps), None)
            if other is not None:
                raise ConfigError(
                    f"attention entropy is measured once per step for all loggers, and "
                    f"logging.{other} samples it with (head_cap, token_cap) = "
                    f"{next(iter(entropy_caps))} but this logger with {caps}; give both the "
                    "same caps",
                    key_path=f"logging.{provider}.attention_entropy_token_cap",
                )
            entropy_caps[caps] = provider
        for diagnostic in MODEL_DIAGNOSTICS:
            if diagnostic in requested and diagnostic not in supported:
                offered = ", ".join(sorted(supported)) or "none"
                raise ConfigError(
                    f"model {component.name!r} ({component.distribution}) cannot provide "
                    f"{diagnostic.replace('_', ' ')} (it supports: {offered}); set it to false",
                    key_path=f"logging.{provider}.{settings.diagnostic_key_path(diagnostic)}",
                )


def _check_parallelism(train: TrainConfig) -> None:
    """FSDP settings only apply with FSDP, and FSDP needs CUDA or the CPU."""
    if train.parallelism != "fsdp" and not train.fsdp_reshard_after_forward:
        raise ConfigError(
            'only applies with train.parallelism = "fsdp"; remove it or set the parallelism',
            key_path="train.fsdp_reshard_after_forward",
        )
    if train.parallelism == "fsdp" and train.device == "mps":
        raise ConfigError(
            'fsdp runs on CUDA (nccl) or the CPU (gloo), not on "mps"; set train.device = '
            '"cpu" or train.parallelism = "ddp"',
            key_path="train.parallelism",
        )


def _validate_component(component: ComponentConfig, section: str, config: ExperimentConfig) -> None:
    try:
        component.validate(config)
    except FieldError as error:
        raise ConfigError(error.message, key_path=f"{section}.{error.field}") from None
