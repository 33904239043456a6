"""The ``[run]`` and ``[train]`` sections every experiment has."""

from __future__ import annotations

from typing import Literal

import attrs

from baseline.config.fields import _file_name, _non_empty, _run_name, at_least, between, path_field


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
    #: Seconds a run waits for another process's lock on a shared file (a tokenizer
    #: ``vocab_path`` being fitted, a token-cache entry being built) before it gives up.
    lock_timeout_s: float = attrs.field(default=600.0, validator=at_least(0, exclusive=True))
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
    #: Matmul precision: ``auto`` is bf16 autocast on a GPU with native bf16 and fp32
    #: elsewhere; ``bf16`` autocasts on any device (slow where bf16 is emulated).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    #: Precision of the optimizer's internal iterations (Muon's Newton-Schulz): ``auto`` is bf16
    #: where the device computes bf16 natively (a GPU, a CPU with AVX512-BF16 or AMX) and fp32
    #: elsewhere; the run's log and ``run_config.json`` say which was chosen and why.
    optimizer_precision: Literal["auto", "fp32", "bf16"] = "auto"
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
