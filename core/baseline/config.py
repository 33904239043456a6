"""Typed experiment configuration: attrs classes, frozen and validated on construction.

The core owns the sections every experiment has (``run``, ``train``, ``logging``) and the
base classes that plugins subclass for their own component configs (``dataset``,
``tokenizer``, ``model``, ``split`` and one ``[logging.<provider>]`` table per logger).
Per-field rules (types, ranges) run when a config is constructed; rules that relate
fields to each other run in :func:`baseline.validation.validate_experiment_config`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from baseline.errors import FieldError

__all__ = [
    "ComponentConfig",
    "DatasetConfig",
    "ExperimentConfig",
    "LoggerConfig",
    "LoggingConfig",
    "ModelConfig",
    "RunConfig",
    "SplitConfig",
    "TokenizerConfig",
    "TrainConfig",
    "at_least",
    "between",
    "path_field",
]

PATH_METADATA_KEY = "baseline_path"


def path_field(default: Any = attrs.NOTHING, **kwargs: Any) -> Any:
    """An attrs field holding a filesystem path.

    Relative paths in an experiment file are resolved against the directory of that file,
    so an experiment runs the same from any working directory.
    """
    metadata = {**kwargs.pop("metadata", {}), PATH_METADATA_KEY: True}
    return attrs.field(default=default, metadata=metadata, **kwargs)


def at_least(minimum: float, *, exclusive: bool = False) -> Callable[[Any, Any, Any], None]:
    """Validator: the value is ``>= minimum`` (``> minimum`` when ``exclusive``)."""

    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if value < minimum or (exclusive and value == minimum):
            op = ">" if exclusive else ">="
            raise FieldError(attribute.name, f"must be {op} {minimum}, got {value!r}")

    return check


def between(
    low: float, high: float, *, low_inclusive: bool = False, high_inclusive: bool = True
) -> Callable[[Any, Any, Any], None]:
    """Validator: the value lies in the interval from ``low`` to ``high``."""

    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        above = value >= low if low_inclusive else value > low
        below = value <= high if high_inclusive else value < high
        if not (above and below):
            left = "[" if low_inclusive else "("
            right = "]" if high_inclusive else ")"
            raise FieldError(
                attribute.name, f"must be in {left}{low}, {high}{right}, got {value!r}"
            )

    return check


def _non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "must not be empty")


def _file_name(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip() or "/" in value or "\\" in value or value in {".", ".."}:
        raise FieldError(attribute.name, f"must be a plain file name, got {value!r}")


def _run_name(_instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None:
        _file_name(_instance, attribute, value)


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


@attrs.frozen(kw_only=True)
class LoggerConfig(ComponentConfig):
    """Base class of metrics logger configs (a ``[logging.<provider>]`` table)."""


@attrs.frozen(kw_only=True)
class RunConfig:
    """Where a run writes its artifacts, how it checkpoints, and what it needs installed."""

    project_name: str = attrs.field(default="baseline", validator=_non_empty)
    artifacts_root: str = path_field(default="runs", validator=_non_empty)
    #: Directory name under ``artifacts_root``; when unset, ``<project_name>-<timestamp>``.
    run_name: str | None = attrs.field(default=None, validator=_run_name)
    resume_from_checkpoint: bool = False
    #: Replace an existing run directory instead of refusing to start.
    overwrite: bool = False
    #: Save a checkpoint every N optimizer steps (0: only at the end of training).
    checkpoint_every_n_steps: int = attrs.field(default=250, validator=at_least(0))
    checkpoint_filename: str = attrs.field(default="baseline_checkpoint.pt", validator=_file_name)
    #: Checkpoints kept on disk, newest first (the newest under ``checkpoint_filename``).
    keep_last_checkpoints: int = attrs.field(default=2, validator=at_least(1))
    final_model_filename: str = attrs.field(default="baseline_model.pt", validator=_file_name)
    seed: int = attrs.field(default=1337, validator=at_least(0))
    #: Token streams are cached here, keyed by dataset and tokenizer (default:
    #: ``<artifacts_root>/.token_cache``).
    token_cache_dir: str | None = path_field(default=None)
    #: Plugin distributions the experiment needs, as PEP 508 requirements.
    requires: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Optimisation and data-windowing settings."""

    #: Passes over the training windows. Unset: 1, or unbounded when a ``max_*`` limit is set.
    epochs: int | None = attrs.field(default=None, validator=at_least(1))
    #: Stop after this many optimizer steps (the first limit reached ends training).
    max_steps: int | None = attrs.field(default=None, validator=at_least(1))
    #: Stop once this many training tokens have been seen.
    max_tokens: int | None = attrs.field(default=None, validator=at_least(1))
    #: Stop after this many seconds of training; the LR schedule follows elapsed time.
    max_time_s: float | None = attrs.field(default=None, validator=at_least(0, exclusive=True))
    learning_rate: float = attrs.field(default=1e-3, validator=at_least(0, exclusive=True))
    #: Windows per micro-batch; one optimizer step sees ``batch_size * grad_accumulation_steps``.
    batch_size: int = attrs.field(default=32, validator=at_least(1))
    grad_accumulation_steps: int = attrs.field(default=1, validator=at_least(1))
    seq_len: int = attrs.field(default=128, validator=at_least(1))
    #: Distance between the starts of consecutive training windows (default: ``seq_len``).
    stride: int | None = attrs.field(default=None, validator=at_least(1))
    #: Fraction of the training windows used each epoch.
    data_fraction: float = attrs.field(default=1.0, validator=between(0.0, 1.0))
    weight_decay: float = attrs.field(default=0.1, validator=at_least(0))
    adam_beta1: float = attrs.field(default=0.9, validator=between(0.0, 1.0, high_inclusive=False))
    adam_beta2: float = attrs.field(default=0.95, validator=between(0.0, 1.0, high_inclusive=False))
    #: Clip the global gradient norm to this value (0 disables clipping).
    grad_clip_norm: float = attrs.field(default=1.0, validator=at_least(0))
    warmup_steps: int = attrs.field(default=0, validator=at_least(0))
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    #: Final learning rate of the cosine schedule, as a fraction of ``learning_rate``.
    min_lr_ratio: float = attrs.field(default=0.1, validator=between(0.0, 1.0, low_inclusive=True))
    #: Batch size for validation (default: ``batch_size``).
    eval_batch_size: int | None = attrs.field(default=None, validator=at_least(1))
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    #: Matmul precision: ``auto`` is bf16 autocast on CUDA and fp32 elsewhere; ``bf16``
    #: autocasts on any device (CPUs with AVX512-BF16 or AMX run it faster).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    #: Compile the training model with ``torch.compile`` (worth it for long GPU runs; the
    #: compilation itself takes tens of seconds).
    compile: bool = False
    #: Threads for CPU kernels (0: PyTorch's default).
    num_threads: int = attrs.field(default=0, validator=at_least(0))

    @property
    def has_limit(self) -> bool:
        """Whether a ``max_steps``, ``max_tokens`` or ``max_time_s`` limit is set."""
        return any(v is not None for v in (self.max_steps, self.max_tokens, self.max_time_s))

    @property
    def effective_epochs(self) -> int | None:
        """Epochs to run; ``None`` means until a ``max_*`` limit stops training."""
        if self.epochs is not None:
            return self.epochs
        return None if self.has_limit else 1

    @property
    def effective_stride(self) -> int:
        """The stride actually used: ``stride`` or, when unset, ``seq_len``."""
        return self.stride if self.stride is not None else self.seq_len

    @property
    def effective_eval_batch_size(self) -> int:
        """The validation batch size actually used."""
        return self.eval_batch_size if self.eval_batch_size is not None else self.batch_size


def _providers(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _provider_names(
    _instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    if len(set(value)) != len(value):
        raise FieldError(attribute.name, f"lists a provider twice: {list(value)}")


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
