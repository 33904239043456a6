"""The resolved experiment: every component an experiment names, looked up once.

:func:`~baseline.experiment.validation.validate_experiment_config` returns a
:class:`ResolvedExperiment`; the pipeline and the commands take it instead of asking the
registry again. It holds each component's name, distribution, version, factory and config,
the loggers' settings (defaults filled in), the config as plain data, and what each logger
asks the trainer to compute (the inputs of :class:`baseline.metrics.router.MetricsPlan`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from baseline.config import ComponentConfig, ExperimentConfig, LoggerConfig, MetricsRequest
from baseline.config.mixture import MIXTURE_NAME, MixtureConfig
from baseline.errors import ConfigError
from baseline.plugins.components import Components, build_adapter
from baseline.plugins.mixture import MixtureDataset, SourceAdapters
from baseline.plugins.registry import Component, ComponentRegistry

#: The component sections of an experiment, in the order they are resolved.
COMPONENT_KINDS = ("dataset", "tokenizer", "model", "split")


@attrs.frozen
class ResolvedComponent:
    """One component of an experiment: the registered component and the config it gets."""

    component: Component
    config: ComponentConfig

    @property
    def kind(self) -> str:
        return self.component.kind

    @property
    def name(self) -> str:
        return self.component.name

    @property
    def distribution(self) -> str:
        return self.component.distribution

    @property
    def version(self) -> str:
        return self.component.version

    @property
    def factory(self) -> Callable[[Any], Any]:
        """The adapter class or factory the plugin registered."""
        return self.component.factory

    @property
    def label(self) -> str:
        """``model 'x' from <distribution>``, for messages about this component."""
        return f"{self.kind} {self.name!r} from {self.distribution}"

    def build(self) -> Any:
        """The adapter for :attr:`config`; a failure names the component and distribution."""
        return build_adapter(self.component, self.config)


@attrs.frozen
class ResolvedSource:
    """One source of a ``mixture`` dataset: its dataset and split components, resolved."""

    name: str
    weight: float
    dataset: ResolvedComponent
    split: ResolvedComponent

    def build(self) -> SourceAdapters:
        """The source's dataset and split adapters."""
        labels = {
            "dataset": f"{self.dataset.label} (dataset.sources.{self.name})",
            "split": self.split.label,
        }
        return SourceAdapters(
            self.name, self.weight, self.dataset.build(), self.split.build(), labels
        )


def _unbuildable(config: Any) -> Any:
    raise ConfigError(
        "a mixture is built from its resolved sources (ResolvedExperiment.build_components)",
        key_path="dataset",
    )


def mixture_component() -> Component:
    """The core's ``mixture`` dataset (not in the registry: it is built from its sources)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        core_version = version("baseline")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        core_version = "0"
    return Component("dataset", MIXTURE_NAME, MixtureConfig, _unbuildable, "baseline", core_version)


@attrs.frozen
class ResolvedExperiment:
    """A validated experiment with its components resolved (see the module docstring)."""

    config: ExperimentConfig
    #: ``config`` as plain TOML/JSON data, each component's ``name`` included (what
    #: ``run_config.json`` records). Not to be modified.
    config_data: Mapping[str, Any]
    dataset: ResolvedComponent
    tokenizer: ResolvedComponent
    model: ResolvedComponent
    split: ResolvedComponent
    #: Each enabled logger by provider, in ``logging.provider`` order; its ``config`` is the
    #: logger's settings with defaults filled in.
    loggers: Mapping[str, ResolvedComponent]
    #: What each logger asks the trainer to compute (``MetricsPlan``'s requests).
    metrics_requests: Mapping[str, MetricsRequest]
    #: A ``mixture`` dataset's sources, in the order of the file (empty for one dataset).
    sources: tuple[ResolvedSource, ...] = ()

    @property
    def components(self) -> dict[str, ResolvedComponent]:
        """The dataset, tokenizer, model and split, by section."""
        return {kind: getattr(self, kind) for kind in COMPONENT_KINDS}

    @property
    def logger_settings(self) -> dict[str, LoggerConfig]:
        """Each enabled logger's settings, defaults filled in."""
        settings: dict[str, LoggerConfig] = {}
        for provider, logger in self.loggers.items():
            assert isinstance(logger.config, LoggerConfig)
            settings[provider] = logger.config
        return settings

    def summary(self) -> str:
        """``dataset=x, tokenizer=y, model=z, split=w, logging=a+b``."""
        parts = [f"{kind}={part.name}" for kind, part in self.components.items()]
        return ", ".join([*parts, f"logging={'+'.join(self.loggers)}"])

    def build_components(self) -> Components:
        """Build the dataset, tokenizer, model and split adapters."""
        labels = {kind: part.label for kind, part in self.components.items()}
        if not self.sources:
            adapters = {kind: part.build() for kind, part in self.components.items()}
            return Components(**adapters, labels=labels)
        adapters = {kind: self.components[kind].build() for kind in ("tokenizer", "model", "split")}
        sources = tuple(source.build() for source in self.sources)
        assert isinstance(self.config.dataset, MixtureConfig)
        dataset = MixtureDataset(self.config.dataset, sources)
        return Components(dataset=dataset, **adapters, labels=labels, sources=sources)


def lookup_components(
    config: ExperimentConfig, registry: ComponentRegistry
) -> dict[str, ResolvedComponent]:
    """The dataset, tokenizer, model and split of ``config``, one registry lookup each
    (a ``mixture`` dataset is the core's; its sources: :func:`lookup_sources`)."""
    return {
        kind: ResolvedComponent(
            mixture_component()
            if isinstance(getattr(config, kind), MixtureConfig)
            else registry.component_of(kind, getattr(config, kind)),
            getattr(config, kind),
        )
        for kind in COMPONENT_KINDS
    }


def lookup_sources(
    config: ExperimentConfig, registry: ComponentRegistry
) -> tuple[ResolvedSource, ...]:
    """Each source of a ``mixture`` dataset with its dataset and split components (the
    experiment's ``[split]`` unless the source has its own); empty for one dataset."""
    mixture = config.dataset
    if not isinstance(mixture, MixtureConfig):
        return ()
    split = ResolvedComponent(registry.component_of("split", config.split), config.split)
    resolved = []
    for (name, source), weight in zip(mixture.sources.items(), mixture.weights, strict=True):
        if isinstance(source.dataset, MixtureConfig):
            raise ConfigError(
                "a mixture cannot be a source of a mixture; list its sources here instead",
                key_path=f"dataset.sources.{name}.name",
            )
        dataset = ResolvedComponent(
            registry.component_of("dataset", source.dataset), source.dataset
        )
        own_split = (
            split
            if source.split is None
            else ResolvedComponent(registry.component_of("split", source.split), source.split)
        )
        resolved.append(ResolvedSource(name, weight, dataset, own_split))
    return tuple(resolved)


def lookup_loggers(
    config: ExperimentConfig, registry: ComponentRegistry
) -> dict[str, ResolvedComponent]:
    """Each enabled logger with its settings (defaults for one without a table), one registry
    lookup each; settings of another logger's config class are an error."""
    loggers: dict[str, ResolvedComponent] = {}
    for provider in config.logging.provider:
        component = registry.get("logger", provider)
        settings: ComponentConfig | None = config.logging.loggers.get(provider)
        if settings is None:  # configs built in Python may leave a logger's settings out
            settings = component.config_cls()
        elif type(settings) is not component.config_cls:
            raise ConfigError(
                f"expected {component.config_cls.__qualname__}, got {type(settings).__qualname__}",
                key_path=f"logging.{provider}",
            )
        loggers[provider] = ResolvedComponent(component, settings)
    return loggers
