"""``model_pipeline``: validate, resolve components, prepare data, train, write artifacts."""

from __future__ import annotations

import logging
import random
import shutil
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from baseline import artifacts
from baseline.config import ExperimentConfig
from baseline.distributed import DistributedContext, init_distributed
from baseline.errors import BaselineError, ConfigError, DataError
from baseline.loading import experiment_to_data, unstructure_config
from baseline.metrics import MetricsPlan, MetricsRouter
from baseline.plugins import PluginSet, default_plugins
from baseline.protocols import (
    DatasetAdapter,
    LoggerSession,
    MetricRecord,
    ModelAdapter,
    RunInfo,
    SplitAdapter,
    TokenizerAdapter,
)
from baseline.registry import ComponentRegistry
from baseline.token_cache import adapter_fingerprint, cache_key, load_or_build
from baseline.tokens import TokenStream, build_token_stream, check_split_plan
from baseline.validation import logger_settings, validate_experiment_config
from baseline.versions import environment_versions
from baseline.windows import range_window_starts

if TYPE_CHECKING:
    from baseline.training import Trainer

log = logging.getLogger("baseline")


@attrs.frozen
class Components:
    """The adapters an experiment resolved to."""

    dataset: DatasetAdapter
    tokenizer: TokenizerAdapter
    model: ModelAdapter
    split: SplitAdapter


@attrs.frozen
class PreparedData:
    """The token stream and the token ranges of each side of the split."""

    stream: TokenStream
    train_ranges: list[tuple[int, int]]
    validation_ranges: list[tuple[int, int]]
    train_tokens: int
    validation_tokens: int
    validation_bytes: int

    @property
    def tokens(self) -> np.ndarray:
        """All tokens (a memory map when the stream is cached)."""
        return self.stream.tokens


@attrs.frozen
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    steps: int
    tokens_seen: int
    final_metrics: Mapping[str, float]


def resolve_components(config: ExperimentConfig, registry: ComponentRegistry) -> Components:
    """Build every adapter from its registered factory."""
    built: dict[str, Any] = {}
    for section in ("dataset", "tokenizer", "model", "split"):
        section_config = getattr(config, section)
        component = registry.get(section, registry.name_of(section, section_config))
        try:
            built[section] = component.create(section_config)
        except (ConfigError, DataError):
            raise
        except Exception as error:
            raise DataError(
                f"{section} {component.name!r} from {component.distribution} failed to build: "
                f"{type(error).__name__}: {error}"
            ) from error
    return Components(**built)


def default_run_name(config: ExperimentConfig) -> str:
    """``<project_name>-<YYYYmmdd-HHMMSS>``."""
    return f"{config.run.project_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def token_cache_root(config: ExperimentConfig) -> Path:
    """Where token streams are cached for this experiment."""
    if config.run.token_cache_dir is not None:
        return Path(config.run.token_cache_dir)
    return Path(config.run.artifacts_root) / ".token_cache"


def load_token_stream(
    config: ExperimentConfig, components: Components, config_data: Mapping[str, Any]
) -> TokenStream:
    """Tokenize the corpus, or reuse the cached stream of an identical dataset and tokenizer."""
    started = time.perf_counter()
    dataset_fingerprint = adapter_fingerprint(components.dataset)
    tokenizer_fingerprint = adapter_fingerprint(components.tokenizer)
    if dataset_fingerprint is None or tokenizer_fingerprint is None:
        stream = build_token_stream(components.dataset.segments(), components.tokenizer)
        log.info(
            "token stream: %s tokens (%.1fs; not cached: an adapter has no fingerprint)",
            f"{len(stream.tokens):,}",
            time.perf_counter() - started,
        )
        return stream
    key = cache_key(
        {
            "dataset": config_data["dataset"],
            "tokenizer": config_data["tokenizer"],
            "dataset_fingerprint": dataset_fingerprint,
            "tokenizer_fingerprint": tokenizer_fingerprint,
        }
    )
    stream, hit = load_or_build(
        token_cache_root(config), key, components.dataset.segments, components.tokenizer
    )
    log.info(
        "token stream: %s tokens in %s segments, %s (%.1fs)",
        f"{len(stream.tokens):,}",
        f"{stream.num_segments:,}",
        "loaded from the token cache, tokenization skipped" if hit else "tokenized and cached",
        time.perf_counter() - started,
    )
    return stream


def prepare_data(
    config: ExperimentConfig, components: Components, config_data: Mapping[str, Any]
) -> PreparedData:
    """Fit the tokenizer, build (or reuse) the token stream, split it, check its size."""
    started = time.perf_counter()
    components.tokenizer.fit(components.dataset.segments())
    log.info(
        "tokenizer ready: %d tokens in vocabulary (%.1fs)",
        components.tokenizer.vocab_size,
        time.perf_counter() - started,
    )
    stream = load_token_stream(config, components, config_data)
    plan = components.split.split(stream.segment_token_counts)
    check_split_plan(plan, stream.num_segments)
    train = np.asarray(plan.train, dtype=np.int64)
    validation = np.asarray(plan.validation, dtype=np.int64)
    prepared = PreparedData(
        stream=stream,
        train_ranges=stream.ranges(train),
        validation_ranges=stream.ranges(validation),
        train_tokens=stream.token_count(train),
        validation_tokens=stream.token_count(validation),
        validation_bytes=stream.byte_count(validation),
    )
    _check_data_size(config, prepared)
    return prepared


def _check_data_size(config: ExperimentConfig, data: PreparedData) -> None:
    train = config.train
    window = train.seq_len + 1
    train_windows = range_window_starts(data.train_ranges, train.seq_len, train.effective_stride)
    if not len(train_windows):
        raise ConfigError(
            f"the training split has {data.train_tokens:,} tokens and no run of segments as "
            f"long as one window of seq_len + 1 = {window}; lower train.seq_len or use more data",
            key_path="train.seq_len",
        )
    used = int(len(train_windows) * train.data_fraction)
    if used < train.batch_size:
        raise ConfigError(
            f"the training split gives {used:,} windows (seq_len={train.seq_len}, "
            f"stride={train.effective_stride}, data_fraction={train.data_fraction}), fewer than "
            f"one batch of {train.batch_size}; lower train.batch_size or use more data",
            key_path="train.batch_size",
        )
    if not len(range_window_starts(data.validation_ranges, train.seq_len, train.seq_len)):
        raise ConfigError(
            f"the validation split has {data.validation_tokens:,} tokens "
            f"({data.stream.num_segments:,} segments in all) and no window of {window} tokens; "
            "lower split.train_fraction or train.seq_len",
            key_path="split",
        )


def model_pipeline(
    config: ExperimentConfig,
    *,
    plugins: PluginSet | None = None,
    source: str | None = None,
) -> RunResult:
    """Run an experiment end to end and return where its artifacts are.

    Validates ``config``, resolves its components from the installed plugins (or
    ``plugins``), prepares the data, trains, evaluates, checkpoints and writes
    ``run_config.json``, ``inference_config.json``, ``metrics.jsonl``, the checkpoint and
    the final model into ``<artifacts_root>/<run_name>/``.
    """
    try:
        return _run_pipeline(config, plugins)
    except ConfigError as error:
        raise (error.with_source(source) if source else error) from None


def _run_pipeline(config: ExperimentConfig, plugins: PluginSet | None) -> RunResult:
    _ensure_log_handler()
    plugin_set = plugins if plugins is not None else default_plugins()
    registry = plugin_set.registry
    validate_experiment_config(config, registry)
    components = resolve_components(config, registry)
    dist = init_distributed(config.train.device)
    try:
        result = _run_distributed(config, plugin_set, components, dist)
        dist.barrier()  # no rank tears down while another still communicates
        return result
    finally:
        dist.shutdown()


def _run_distributed(
    config: ExperimentConfig,
    plugin_set: PluginSet,
    components: Components,
    dist: DistributedContext,
) -> RunResult:
    """The run itself, on one rank of the job (the only rank without torchrun)."""
    registry = plugin_set.registry
    if not dist.is_main:
        log.setLevel(logging.WARNING)  # rank 0 reports progress for the job

    run_name = dist.on_main(lambda: config.run.run_name or default_run_name(config))
    run_dir = Path(config.run.artifacts_root) / run_name
    created = not run_dir.exists()
    dist.on_main(
        lambda: artifacts.prepare_run_directory(
            run_dir, resume=config.run.resume_from_checkpoint, overwrite=config.run.overwrite
        )
    )
    try:
        data, trainer, config_data = _prepare_training(config, components, registry, run_dir, dist)
    except BaseException:
        # A run that failed before writing anything leaves no empty directory behind.
        if dist.is_main and created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    tokenizer_file = ""
    if dist.is_main:
        artifacts.atomic_write_json(
            run_dir / artifacts.RUN_CONFIG_FILENAME,
            {
                "run_name": run_name,
                "seed": config.run.seed,
                "config": config_data,
                "versions": environment_versions(plugin_set),
                "device": str(trainer.device),
                "distributed": {"world_size": dist.world_size, "backend": dist.backend},
                "parameters": trainer.num_parameters,
                "data": {
                    "train_tokens": data.train_tokens,
                    "validation_tokens": data.validation_tokens,
                    "validation_bytes": data.validation_bytes,
                    "segments": data.stream.num_segments,
                },
            },
        )
        tokenizer_file = components.tokenizer.save(run_dir)
    run_info = RunInfo(
        project_name=config.run.project_name,
        run_name=run_name,
        run_dir=run_dir,
        config=config_data,
        epochs=config.train.effective_epochs,
        steps_per_epoch=trainer.steps_per_epoch,
        total_steps=trainer.total_steps,
        start_step=trainer.step,
        model=trainer.model,
    )
    sessions: dict[str, LoggerSession] = {}
    try:
        # Every rank learns whether the loggers started (rank 0 starts them).
        dist.on_main(lambda: sessions.update(_start_loggers(config, registry, run_info)))
    except BaseException:
        # Nothing was trained yet: a directory this run created would only block the retry.
        if dist.is_main and created and not config.run.resume_from_checkpoint:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    metrics_file = (
        artifacts.MetricsFile(
            run_dir / artifacts.METRICS_FILENAME,
            keep_up_to_step=trainer.step if trainer.resumed else None,
        )
        if dist.is_main
        else None
    )

    def write_metrics(record: MetricRecord) -> None:
        if metrics_file is not None:
            metrics_file.write(
                {
                    "step": record.step,
                    "tokens_seen": record.tokens_seen,
                    "epoch": record.epoch,
                    "phase": record.phase,
                    **record.values,
                }
            )

    router = MetricsRouter(
        trainer.plan,
        {name: session.log for name, session in sessions.items()},
        everything=write_metrics,
    )
    exit_code = 1
    try:
        final_metrics = trainer.train(router)
        trainer.save_final_model()
        if dist.is_main:
            artifacts.atomic_write_json(
                run_dir / artifacts.INFERENCE_CONFIG_FILENAME,
                _inference_config(config, registry, components, tokenizer_file),
            )
        exit_code = 0
    except KeyboardInterrupt:
        exit_code = 130
        raise
    except BaselineError as error:
        exit_code = error.exit_code
        raise
    finally:
        if metrics_file is not None:
            metrics_file.close()
        for session in sessions.values():
            session.finish(exit_code)
    log.info("run complete: artifacts in %s", run_dir)
    return RunResult(run_dir, trainer.step, trainer.tokens_seen, final_metrics)


def _prepare_training(
    config: ExperimentConfig,
    components: Components,
    registry: ComponentRegistry,
    run_dir: Path,
    dist: DistributedContext,
) -> tuple[PreparedData, Trainer, dict[str, Any]]:
    """Seed, prepare the data (rank 0 first: tokenizer and token cache) and build the trainer."""
    seed_everything(config.run.seed)
    config_data = experiment_to_data(config, registry)
    prepared: list[PreparedData] = []
    dist.on_main(lambda: prepared.append(prepare_data(config, components, config_data)))
    data = prepared[0] if prepared else prepare_data(config, components, config_data)

    from baseline.training import Trainer  # torch is imported only once training starts

    plan = metrics_plan(config, registry)
    trainer = Trainer(config, components, data, run_dir, config_data, dist, plan)
    return data, trainer, config_data


def metrics_plan(config: ExperimentConfig, registry: ComponentRegistry) -> MetricsPlan:
    """What the trainer computes for the enabled loggers, and when."""
    requests = {
        provider: settings.metrics_request(config.logging)
        for provider, settings in logger_settings(config, registry).items()
    }
    return MetricsPlan(requests, config.logging.log_every_n_steps)


def _start_loggers(
    config: ExperimentConfig, registry: ComponentRegistry, run_info: RunInfo
) -> dict[str, LoggerSession]:
    sessions: dict[str, LoggerSession] = {}
    try:
        for provider, settings in logger_settings(config, registry).items():
            component = registry.get("logger", provider)
            sessions[provider] = component.create(settings).start(run_info)
    except BaseException:
        for session in sessions.values():  # close the loggers that did start
            session.finish(1)
        raise
    return sessions


def _inference_config(
    config: ExperimentConfig,
    registry: ComponentRegistry,
    components: Components,
    tokenizer_file: str,
) -> dict[str, Any]:
    return {
        "format_version": 1,
        "model": {
            "name": registry.name_of("model", config.model),
            "config": unstructure_config(config.model),
            "file": config.run.final_model_filename,
        },
        "tokenizer": {
            "name": registry.name_of("tokenizer", config.tokenizer),
            "config": unstructure_config(config.tokenizer),
            "file": tokenizer_file,
        },
        "vocab_size": components.tokenizer.vocab_size,
        "end_of_segment_id": components.tokenizer.end_of_segment_id,
        "seq_len": config.train.seq_len,
    }


def _ensure_log_handler() -> None:
    """Print the pipeline's progress messages when the caller configured no logging."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
