"""``WandbMetricsConfig``: the ``[logging.wandb]`` table."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from baseline.config import DiagnosticsLoggerConfig, ExperimentConfig, at_least
from baseline.errors import FieldError

__all__ = ["MAX_TAG_LENGTH", "PROJECT_NAME_FORBIDDEN", "WandbMetricsConfig"]

#: Characters W&B refuses in project names.
PROJECT_NAME_FORBIDDEN = "/\\#?%:"
#: Longest tag W&B accepts.
MAX_TAG_LENGTH = 64


def _optional_non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.strip():
        raise FieldError(attribute.name, "must not be empty")


def _project_problem(project: str) -> str | None:
    found = sorted({char for char in project if char in PROJECT_NAME_FORBIDDEN})
    if found:
        listed = ", ".join(repr(char) for char in found)
        return f"W&B project names cannot contain {listed}, got {project!r}"
    if len(project) > 128:
        return f"W&B project names have at most 128 characters, got {len(project)}"
    return None


def _project(_instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    _optional_non_empty(_instance, attribute, value)
    problem = None if value is None else _project_problem(value)
    if problem:
        raise FieldError(attribute.name, problem)


def _tags(_instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for index, tag in enumerate(value):
        if not tag.strip() or len(tag) > MAX_TAG_LENGTH:
            raise FieldError(
                f"{attribute.name}[{index}]",
                f"W&B tags have 1 to {MAX_TAG_LENGTH} characters, got {tag!r}",
            )
    if len(set(value)) != len(value):
        raise FieldError(attribute.name, f"lists a tag twice: {list(value)}")


@attrs.frozen(kw_only=True)
class WandbMetricsConfig(DiagnosticsLoggerConfig):
    """Settings of the ``[logging.wandb]`` table.

    Every metric group is on by default; the diagnostics are computed by the core on the
    steps their cadence selects (``*_every_n_steps``), so their cost is bounded by the cadence.
    """

    # -- diagnostics computed by the core (fields of DiagnosticsLoggerConfig, W&B defaults) --
    #: Log ``global_grad_norm``: the L2 norm of all gradients (after DDP's all-reduce, before
    #: clipping).
    enable_global_grad_norm: bool = True
    #: Log ``activation_norm_first|middle|last``: the mean L2 norm of the hidden state after
    #: the first, middle and last layer.
    enable_activation_norms: bool = True
    #: Log ``ln_weight_grad_norm_*`` and ``ln_bias_grad_norm_*`` (the bias ones only when the
    #: model's norms have a bias) of the first, middle and last layer.
    enable_ln_grad_norms: bool = True
    #: Log ``attention_entropy_first|middle|last``: mean attention entropy (sampled, see the
    #: caps). The model must support it, or the experiment is refused at validation.
    enable_attention_entropy: bool = True
    #: Periodic validation every N steps (0 disables it; epoch-end validation remains).
    #: The other cadences and caps keep the base class's defaults, which are the overview's:
    #: ``log_every_n_steps`` (unset: ``logging.log_every_n_steps``),
    #: ``diagnostics_every_n_steps = 50``, ``attention_entropy_every_n_steps = 200``,
    #: ``attention_entropy_head_cap = 2``, ``attention_entropy_token_cap = 128``.
    val_every_n_steps: int = attrs.field(default=250, validator=at_least(0))

    # -- step and validation metrics --
    #: Log ``train_loss`` with ``tokens_seen_train``, its x-axis in W&B.
    enable_train_loss_vs_tokens: bool = True
    #: Log ``val_loss`` with ``tokens_seen_train``, its x-axis in W&B.
    enable_val_loss_vs_tokens: bool = True
    #: Log ``train_perplexity``, ``train_perplexity_epoch`` and ``val_perplexity``.
    enable_perplexity: bool = True
    #: Log ``step_time_ms``, the mean wall time of an optimizer step.
    enable_step_time: bool = True
    #: Log ``peak_memory_gib``, the peak accelerator memory (CUDA runs only).
    enable_peak_memory: bool = True
    #: Call ``run.watch(model, log="all")``: parameter and gradient histograms every
    #: ``diagnostics_every_n_steps`` backward passes. Costly; off unless you need it.
    watch_model: bool = False

    # -- the W&B run --
    #: W&B project; unset: ``run.project_name``.
    project: str | None = attrs.field(default=None, validator=_project)
    #: W&B entity (user or team); unset: your default entity.
    entity: str | None = attrs.field(default=None, validator=_optional_non_empty)
    #: ``online``, ``offline`` (write locally, upload later with ``wandb sync``) or
    #: ``disabled``; unset: W&B's own default, the ``WANDB_MODE`` environment variable or
    #: ``online``.
    mode: Literal["online", "offline", "disabled"] | None = None
    #: Display name of the W&B run; unset: the baseline run name (the run directory's name).
    run_name: str | None = attrs.field(default=None, validator=_optional_non_empty)
    #: Tags of the W&B run (1 to 64 characters each).
    tags: tuple[str, ...] = attrs.field(default=(), validator=_tags)
    #: W&B group, to show related runs (seeds, sweeps) together.
    group: str | None = attrs.field(default=None, validator=_optional_non_empty)
    #: A longer description of the run.
    notes: str | None = None
    #: Seconds ``wandb.init`` may take (an online run waits this long for an unreachable
    #: server before the run fails).
    init_timeout_s: float = attrs.field(default=90.0, validator=at_least(0, exclusive=True))

    def validate(self, experiment: ExperimentConfig) -> None:
        """The W&B project (``run.project_name`` when ``project`` is unset) must be valid."""
        if self.project is None:
            problem = _project_problem(experiment.run.project_name)
            if problem:
                raise FieldError("project", f"{problem} (from run.project_name); set project")
