"""Cross-field validation of a whole experiment, run before any work starts; it returns the
experiment resolved (:class:`~baseline.experiment.resolved.ResolvedExperiment`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from baseline.config import (
    MODEL_DIAGNOSTICS,
    ComponentConfig,
    ExperimentConfig,
    LoggerConfig,
    MetricsRequest,
    TrainConfig,
)
from baseline.config.requirements import check_requirements
from baseline.errors import ConfigError, FieldError
from baseline.experiment.loading import COMPONENT_SECTIONS, experiment_data
from baseline.experiment.resolved import (
    ResolvedComponent,
    ResolvedExperiment,
    lookup_components,
    lookup_loggers,
    lookup_sources,
)
from baseline.plugins.registry import ComponentRegistry
from baseline.runs.source_run import resumed_tokenizer_file, source_run


def validate_experiment_config(
    config: ExperimentConfig,
    registry: ComponentRegistry | None = None,
    *,
    source: str | None = None,
) -> ResolvedExperiment:
    """Raise a :class:`ConfigError` for the first rule ``config`` breaks, else return the
    experiment resolved: its components, each looked up once, for the pipeline and commands.

    Checks that every component is installed and that requirements are met, then the core's
    own cross-field rules, then each component config's :meth:`ComponentConfig.validate`.
    """
    if registry is None:
        from baseline.plugins.discovery import default_plugins

        registry = default_plugins().registry
    try:
        return _validate(config, registry)
    except ConfigError as error:
        raise (error.with_source(source) if source else error) from None


def _validate(config: ExperimentConfig, registry: ComponentRegistry) -> ResolvedExperiment:
    check_requirements(config.run.requires)
    parts = lookup_components(config, registry)
    sources = lookup_sources(config, registry)
    loggers = lookup_loggers(config, registry)
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
    for source in sources:
        path = f"dataset.sources.{source.name}"
        _validate_component(source.dataset.config, path, config)
        if source.split is not parts["split"]:
            _validate_component(source.split.config, f"{path}.split", config)
    for provider, settings in config.logging.loggers.items():
        _validate_component(settings, f"logging.{provider}", config)
    requests = _metrics_requests(config, loggers, parts["model"])
    names = {section: part.name for section, part in parts.items()}
    config_data = experiment_data(config, names, {p: c.config for p, c in loggers.items()})
    # The source run exists and has the same model; a run that resumes from a checkpoint of
    # its own needs nothing of it (it may be gone).
    if config.run.init_from is not None and resumed_tokenizer_file(config) is None:
        source_run(config, config_data)
    return ResolvedExperiment(
        config, config_data, **parts, loggers=loggers, metrics_requests=requests, sources=sources
    )


def _metrics_requests(
    config: ExperimentConfig, loggers: Mapping[str, ResolvedComponent], model: ResolvedComponent
) -> dict[str, MetricsRequest]:
    """Each logger's request; one that asks for a layer diagnostic needs a model adapter that
    declares it, and every logger asking for attention entropy must sample it alike."""
    declared: Any = getattr(model.factory, "diagnostics", None)  # a class attribute
    if declared is None:
        declared = getattr(model.build(), "diagnostics", ())
    supported = frozenset(declared)
    entropy_caps: dict[tuple[int, int], str] = {}
    requests: dict[str, MetricsRequest] = {}
    for provider, logger in loggers.items():
        settings = logger.config
        assert isinstance(settings, LoggerConfig)
        request = requests[provider] = settings.metrics_request(config.logging)
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
                    f"model {model.name!r} ({model.distribution}) cannot provide "
                    f"{diagnostic.replace('_', ' ')} (it supports: {offered}); set it to false",
                    key_path=f"logging.{provider}.{settings.diagnostic_key_path(diagnostic)}",
                )
    return requests


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
