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
    "DIAGNOSTICS",
    "MODEL_DIAGNOSTICS",
    "ComponentConfig",
    "DatasetConfig",
    "DiagnosticsLoggerConfig",
    "ExperimentConfig",
    "LoggerConfig",
    "LoggingConfig",
    "MetricsRequest",
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


#: Training diagnostics the core computes on request (see :class:`MetricsRequest`).
DIAGNOSTICS = ("global_grad_norm", "activation_norms", "ln_grad_norms", "attention_entropy")
#: The diagnostics that need the model's cooperation: its adapter lists the ones it supports
#: in a ``diagnostics`` attribute (see :class:`baseline.protocols.ModelAdapter`).
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


@attrs.frozen(kw_only=True)
class RunConfig:
    """Where a run writes its artifacts, how it checkpoints, and what it needs installed."""

    project_name: str = attrs.field(default="baseline", validator=_non_empty)
    artifacts_root: str = path_field(default="runs", validator=_non_empty)
    #: Directory name under ``artifacts_root``; when unset, ``<project_name>-<timestamp>``.
    run_name: str | None = attrs.field(default=None, validator=_run_name)
    resume_from_checkpoint: bool = False
    #: A trained run directory whose weights (final model, else newest checkpoint) the model
    #: starts from, with that run's tokenizer file (fine-tuning; no optimizer state). A
    #: resumed run continues from its own checkpoint instead.
    init_from: str | None = path_field(default=None)
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
    #: ``adamw``, or ``muon``: ``torch.optim.Muon`` for the hidden weight matrices (2-D
    #: weights of linear layers other than the output layer) and AdamW for embeddings, the
    #: output layer, norms and biases, all with ``learning_rate`` and ``weight_decay``.
    optimizer: Literal["adamw", "muon"] = "adamw"
    #: Momentum of Muon (with Nesterov), when ``optimizer = "muon"``.
    muon_momentum: float = attrs.field(
        default=0.95, validator=between(0.0, 1.0, high_inclusive=False)
    )
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
    #: Several processes: ``ddp`` replicates the model (``DistributedDataParallel``);
    #: ``fsdp`` shards parameters, gradients and optimizer state (``fully_shard``) and writes
    #: sharded (DCP) checkpoints. ``fsdp`` also works with one process (no torchrun needed).
    parallelism: Literal["ddp", "fsdp"] = "ddp"
    #: With ``fsdp``: free each layer's gathered parameters after its forward pass (less
    #: memory) instead of keeping them for the backward pass (less communication).
    fsdp_reshard_after_forward: bool = True

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
