"""The component base classes that plugins subclass, what a logger asks the core to measure
(:class:`MetricsRequest`), the ``[logging]`` section and :class:`ExperimentConfig`, which holds
every section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import attrs

from baseline.config.fields import at_least
from baseline.config.sections import RunConfig, TrainConfig
from baseline.errors import FieldError


@attrs.frozen(kw_only=True)
class ComponentConfig:
    """Base of every pluggable component's config.

    Subclass one of the kind-specific bases below, decorate with
    ``@attrs.frozen(kw_only=True)`` (every config class is frozen and keyword-only), and
    register the class with your component. Override :meth:`validate` for rules that relate
    several fields (raise :class:`baseline.errors.FieldError` naming the field).
    """

    def validate(self, experiment: ExperimentConfig) -> None:
        """Check rules that span fields; ``experiment`` gives access to the other sections."""


@attrs.frozen(kw_only=True)
class DatasetConfig(ComponentConfig):
    """Base class of dataset configs (the ``[dataset]`` table)."""


@attrs.frozen(kw_only=True)
class TokenizerConfig(ComponentConfig):
    """Base class of tokenizer configs (the ``[tokenizer]`` table)."""


@attrs.frozen(kw_only=True)
class ModelConfig(ComponentConfig):
    """Base class of model configs (the ``[model]`` table)."""


@attrs.frozen(kw_only=True)
class SplitConfig(ComponentConfig):
    """Base class of train/validation split configs (the ``[split]`` table)."""


#: Training diagnostics the core computes on request (see :class:`MetricsRequest`).
DIAGNOSTICS = ("global_grad_norm", "activation_norms", "ln_grad_norms", "attention_entropy")
#: The diagnostics that need the model's cooperation: its adapter lists the ones it supports
#: in a ``diagnostics`` attribute (see :class:`baseline.plugins.protocols.ModelAdapter`).
MODEL_DIAGNOSTICS = ("activation_norms", "ln_grad_norms", "attention_entropy")


def _frozen_names(value: frozenset[str] | tuple[str, ...] | list[str]) -> frozenset[str]:
    return frozenset(value)


def _diagnostic_names(
    _instance: Any, attribute: attrs.Attribute[Any], value: frozenset[str]
) -> None:
    unknown = sorted(set(value) - set(DIAGNOSTICS))
    if unknown:
        raise FieldError(
            attribute.name, f"unknown diagnostics {unknown}; known: {list(DIAGNOSTICS)}"
        )


@attrs.frozen(kw_only=True)
class MetricsRequest:
    """What one logger asks the trainer to compute, and on which optimizer steps.

    The trainer computes the union of all loggers' requests, each diagnostic only on the
    steps some logger's cadence selects, and hands every logger the values it asked for.
    """

    #: Cadence of train records (loss, tokens, perplexity, step time, memory).
    log_every_n_steps: int = attrs.field(validator=at_least(1))
    #: Names from :data:`DIAGNOSTICS`.
    diagnostics: frozenset[str] = attrs.field(
        default=frozenset(), converter=_frozen_names, validator=_diagnostic_names
    )
    #: Cadence of ``global_grad_norm``, ``activation_norms`` and ``ln_grad_norms``.
    diagnostics_every_n_steps: int = attrs.field(default=50, validator=at_least(1))
    attention_entropy_every_n_steps: int = attrs.field(default=200, validator=at_least(1))
    #: Heads per layer whose attention entropy is measured.
    attention_entropy_head_cap: int = attrs.field(default=2, validator=at_least(1))
    #: Query and key positions (a prefix of the sequence) the entropy is measured over.
    attention_entropy_token_cap: int = attrs.field(default=128, validator=at_least(2))
    #: Extra validation every N steps (0: only at the end of each epoch and of training).
    val_every_n_steps: int = attrs.field(default=0, validator=at_least(0))

    def every(self, diagnostic: str) -> int:
        """The cadence of ``diagnostic``."""
        if diagnostic == "attention_entropy":
            return self.attention_entropy_every_n_steps
        return self.diagnostics_every_n_steps

    def diagnostics_due(self, step: int) -> frozenset[str]:
        """The requested diagnostics whose cadence selects ``step``."""
        return frozenset(d for d in self.diagnostics if step % self.every(d) == 0)

    def validation_due(self, step: int) -> bool:
        """Whether periodic validation falls on ``step``."""
        return bool(self.val_every_n_steps) and step % self.val_every_n_steps == 0


@attrs.frozen(kw_only=True)
class LoggerConfig(ComponentConfig):
    """Base class of metrics logger configs (a ``[logging.<provider>]`` table)."""

    def metrics_request(self, logging: LoggingConfig) -> MetricsRequest:
        """What this logger needs computed; by default train records at the core cadence."""
        return MetricsRequest(log_every_n_steps=logging.log_every_n_steps)

    def diagnostic_key_path(self, diagnostic: str) -> str:
        """The key (relative to this logger's table) that turned ``diagnostic`` on."""
        return f"enable_{diagnostic}"


@attrs.frozen(kw_only=True)
class DiagnosticsLoggerConfig(LoggerConfig):
    """Base of logger configs that show the core's training diagnostics.

    Every diagnostic is computed by the core, only on the steps its cadence selects, so a
    logger that subclasses this config gets them without computing anything itself.
    """

    #: Log the L2 norm of all gradients (after DDP's all-reduce, before clipping).
    enable_global_grad_norm: bool = False
    #: Log the mean L2 norm of the hidden state after the first, middle and last layer.
    enable_activation_norms: bool = False
    #: Log the gradient norms of the normalization weights and biases of those layers.
    enable_ln_grad_norms: bool = False
    #: Log the mean attention entropy of those layers (sampled, see the caps).
    enable_attention_entropy: bool = False
    #: Cadence of step metrics; unset: ``logging.log_every_n_steps``.
    log_every_n_steps: int | None = attrs.field(default=None, validator=at_least(1))
    #: Cadence of the gradient-norm, activation-norm and layer-norm diagnostics.
    diagnostics_every_n_steps: int = attrs.field(default=50, validator=at_least(1))
    #: Periodic validation every N steps (0 disables it; epoch-end validation remains).
    val_every_n_steps: int = attrs.field(default=0, validator=at_least(0))
    #: Cadence of the attention-entropy diagnostic.
    attention_entropy_every_n_steps: int = attrs.field(default=200, validator=at_least(1))
    #: Heads per layer sampled for attention entropy.
    attention_entropy_head_cap: int = attrs.field(default=2, validator=at_least(1))
    #: Tokens sampled per axis (a prefix of the window, capped at ``train.seq_len``).
    attention_entropy_token_cap: int = attrs.field(default=128, validator=at_least(2))

    def metrics_request(self, logging: LoggingConfig) -> MetricsRequest:
        """Train records at this logger's cadence plus the diagnostics it enables."""
        enabled = frozenset(d for d in DIAGNOSTICS if getattr(self, f"enable_{d}"))
        return MetricsRequest(
            log_every_n_steps=self.log_every_n_steps or logging.log_every_n_steps,
            diagnostics=enabled,
            diagnostics_every_n_steps=self.diagnostics_every_n_steps,
            attention_entropy_every_n_steps=self.attention_entropy_every_n_steps,
            attention_entropy_head_cap=self.attention_entropy_head_cap,
            attention_entropy_token_cap=self.attention_entropy_token_cap,
            val_every_n_steps=self.val_every_n_steps,
        )


def _providers(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _provider_names(
    _instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    if len(set(value)) != len(value):
        raise FieldError(attribute.name, f"lists a provider twice: {list(value)}")


#: What a logger's failure does to the run (``logging.on_logger_error``).
OnLoggerError = Literal["continue", "stop"]


def _on_logger_error(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in get_args(OnLoggerError):
        raise FieldError(
            attribute.name,
            f"must be one of {', '.join(map(repr, get_args(OnLoggerError)))}, got {value!r}",
        )


@attrs.frozen(kw_only=True)
class LoggingConfig:
    """Which metrics loggers are on and their settings.

    ``provider`` is one name or a list (``["console", "wandb"]``); each provider's settings
    come from its ``[logging.<provider>]`` table and are kept in ``loggers`` by name.
    """

    provider: tuple[str, ...] = attrs.field(
        default=("console",), converter=_providers, validator=_provider_names
    )
    #: Cadence (optimizer steps) of train loss and throughput records.
    log_every_n_steps: int = attrs.field(default=10, validator=at_least(1))
    #: Text samples generated after each validation, logged and kept in ``samples.jsonl``.
    samples_per_validation: int = attrs.field(default=0, validator=at_least(0))
    #: Length in tokens of each validation sample.
    sample_tokens: int = attrs.field(default=64, validator=at_least(1))
    #: A logger that raises: ``continue`` switches it off and training goes on (reported
    #: once, traceback in the run directory's ``logger_errors.log``); ``stop`` ends the run.
    on_logger_error: OnLoggerError = attrs.field(default="continue", validator=_on_logger_error)
    loggers: Mapping[str, LoggerConfig] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ExperimentConfig:
    """A whole experiment: one value per TOML section."""

    dataset: DatasetConfig
    tokenizer: TokenizerConfig
    model: ModelConfig
    split: SplitConfig
    run: RunConfig = attrs.field(factory=RunConfig)
    train: TrainConfig = attrs.field(factory=TrainConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)

    def replace(self, **changes: Any) -> ExperimentConfig:
        """Return a copy with whole sections replaced."""
        return attrs.evolve(self, **changes)
