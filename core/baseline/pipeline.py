"""``model_pipeline``: validate, resolve components, prepare data, train, write artifacts."""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import shutil
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from baseline.config import ExperimentConfig
from baseline.data.lineage import write_weights_record
from baseline.data.mixture_preparation import prepare_mixture_data
from baseline.data.preparation import prepare_data
from baseline.data.prepared import PreparedData
from baseline.distributed.context import (
    DistributedContext,
    init_distributed,
    is_raised_on_every_rank,
)
from baseline.errors import BaselineError, ConfigError
from baseline.experiment.loading import unstructure_config
from baseline.experiment.resolved import ResolvedExperiment
from baseline.experiment.validation import validate_experiment_config
from baseline.metrics.router import MetricsPlan
from baseline.metrics.sessions import LoggerFailure, LoggerSessions
from baseline.plugins.calls import plugin_call
from baseline.plugins.components import Components
from baseline.plugins.discovery import PluginSet, default_plugins
from baseline.plugins.protocols import MetricRecord, RunInfo, TokenizerAdapter
from baseline.plugins.versions import environment_versions
from baseline.runs import artifacts
from baseline.runs import source_run as sources
from baseline.runs.layout import RunDirectory
from baseline.runs.locks import run_directory_lock
from baseline.runs.lookup import newest_run_name
from baseline.runs.source_run import SourceRun, load_source_weights, source_run

if TYPE_CHECKING:
    from baseline.train.trainer import Trainer
    from baseline.train.validator import Sampler

log = logging.getLogger("baseline")


@attrs.frozen
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    steps: int
    tokens_seen: int
    final_metrics: Mapping[str, float]
    #: Loggers that failed and were switched off (``logging.on_logger_error = "continue"``).
    logger_failures: tuple[LoggerFailure, ...] = ()


def default_run_name(config: ExperimentConfig) -> str:
    """``<project_name>-<YYYYmmdd-HHMMSS>``."""
    return f"{config.run.project_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_pipeline(
    config: ExperimentConfig | ResolvedExperiment,
    *,
    plugins: PluginSet | None = None,
    source: str | None = None,
) -> RunResult:
    """Run an experiment end to end and return where its artifacts are.

    Validates ``config`` and resolves its components from the installed plugins (or
    ``plugins``), unless it is a :class:`ResolvedExperiment` already, prepares the data,
    trains, evaluates, checkpoints and writes ``run_config.json``, ``inference_config.json``,
    ``metrics.jsonl``, the checkpoint and the final model into ``<artifacts_root>/<run_name>/``.
    """
    try:
        return _run_pipeline(config, plugins)
    except ConfigError as error:
        raise (error.with_source(source) if source else error) from None


def _run_pipeline(
    experiment: ExperimentConfig | ResolvedExperiment, plugins: PluginSet | None
) -> RunResult:
    _ensure_log_handler()
    plugin_set = plugins if plugins is not None else default_plugins()
    resolved = (
        experiment
        if isinstance(experiment, ResolvedExperiment)
        else validate_experiment_config(experiment, plugin_set.registry)
    )
    config = resolved.config
    components = resolved.build_components()
    import torch

    # train.num_threads applies to this run only: a caller's later runs in the same process
    # must not inherit it (their numerics would depend on what ran before).
    threads = torch.get_num_threads()
    dist = init_distributed(config.train.device, config.train.parallelism)
    try:
        result = _run_distributed(resolved, plugin_set, components, dist)
        dist.barrier()  # no rank tears down while another still communicates
        return result
    except BaselineError as error:
        if is_raised_on_every_rank(error):
            dist.part()
        raise
    finally:
        dist.shutdown()
        torch.set_num_threads(threads)


def _run_distributed(
    resolved: ResolvedExperiment,
    plugin_set: PluginSet,
    components: Components,
    dist: DistributedContext,
) -> RunResult:
    """The run itself, on one rank of the job (the only rank without torchrun)."""
    config = resolved.config
    if not dist.is_main:
        log.setLevel(logging.WARNING)  # rank 0 reports progress for the job

    run_name = dist.on_main(lambda: run_name_of(config))
    run_dir = Path(config.run.artifacts_root) / run_name
    with contextlib.ExitStack() as held:
        # Rank 0 holds the run directory's lock until the run ends (baseline.runs.locks).
        dist.on_main(lambda: held.enter_context(run_directory_lock(run_dir)))
        return _run_in_directory(resolved, plugin_set, components, dist, run_name, run_dir)


def run_name_of(config: ExperimentConfig) -> str:
    """``run.run_name``; when resuming without one, the newest run of the project."""
    if config.run.run_name:
        return config.run.run_name
    if config.run.resume_from_checkpoint:
        return newest_run_name(config)
    return default_run_name(config)


def _run_in_directory(
    resolved: ResolvedExperiment,
    plugin_set: PluginSet,
    components: Components,
    dist: DistributedContext,
    run_name: str,
    run_dir: Path,
) -> RunResult:
    """The run, in its run directory (locked by rank 0)."""
    config = resolved.config
    created = not run_dir.exists()
    dist.on_main(
        lambda: artifacts.prepare_run_directory(
            run_dir, resume=config.run.resume_from_checkpoint, overwrite=config.run.overwrite
        )
    )
    try:
        data, trainer, config_data, init = _prepare_training(resolved, components, run_dir, dist)
    except BaseException:
        # A run that failed before writing anything leaves no empty directory behind.
        if dist.is_main and created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    tokenizer_file = ""
    if dist.is_main:
        with plugin_call(resolved.tokenizer.label):
            tokenizer_file = components.tokenizer.save(run_dir)
        if data.fit_source is not None:  # what the weights learn from (and started from)
            write_weights_record(run_dir, data.fit_source, init)
        artifacts.atomic_write_json(
            run_dir / artifacts.RUN_CONFIG_FILENAME,
            {
                "run_name": run_name,
                "seed": config.run.seed,
                "config": config_data,
                **sources.recorded_init_from(init, run_dir),
                "tokenizer_file": tokenizer_file,
                "versions": environment_versions(plugin_set),
                "device": str(trainer.device),
                "precision": trainer.precision.record(),
                "distributed": {"world_size": dist.world_size, "backend": dist.backend},
                "parameters": trainer.num_parameters,
                "data": {
                    "train_tokens": data.train_tokens,
                    "validation_tokens": data.validation_tokens,
                    "validation_bytes": data.validation_bytes,
                    "segments": data.num_segments,
                    "train_segments": data.train_segments,
                    "validation_segments": data.validation_segments,
                    "end_of_segment_text": data.end_of_segment_text,
                    **(
                        {"sources": {source.name: source.record() for source in data.sources}}
                        if data.sources
                        else {}
                    ),
                },
            },
        )
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
    loggers = LoggerSessions(
        {name: (logger.component, logger.config) for name, logger in resolved.loggers.items()},
        on_error=config.logging.on_logger_error,
        error_log=RunDirectory(run_dir).logger_errors,
    )
    try:
        # Every rank learns whether the loggers started (rank 0 starts them).
        dist.on_main(lambda: loggers.start(run_info))
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

    router = loggers.router(trainer.plan, everything=write_metrics)
    exit_code = 1
    try:
        final_metrics = trainer.train(router)
        trainer.save_final_model()
        if dist.is_main:
            artifacts.atomic_write_json(
                run_dir / artifacts.INFERENCE_CONFIG_FILENAME,
                _inference_config(resolved, components, tokenizer_file, data),
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
        loggers.finish(exit_code, trainer.step)
        if loggers.failures:  # rank 0's: run_config.json records them
            directory = RunDirectory(run_dir)
            recorded = directory.read_run_config() or {}
            recorded["logger_failures"] = [failure.to_json() for failure in loggers.failures]
            artifacts.atomic_write_json(directory.run_config, recorded)
    dist.on_main(loggers.raise_finish_error)  # logging.on_logger_error = "stop"
    if loggers.failures:
        log.warning("warning: %s", loggers.summary(RunDirectory(run_dir).run_config.name))
    log.info("run complete: artifacts in %s", run_dir)
    failures = tuple(loggers.failures)
    return RunResult(run_dir, trainer.step, trainer.tokens_seen, final_metrics, failures)


def _prepare_training(
    resolved: ResolvedExperiment,
    components: Components,
    run_dir: Path,
    dist: DistributedContext,
) -> tuple[PreparedData, Trainer, dict[str, Any], SourceRun | None]:
    """Seed, prepare the data (rank 0 first: tokenizer and token cache) and build the trainer.

    With ``run.init_from`` the tokenizer is the source run's and the built model gets the
    source run's weights before the trainer wraps it, unless a resumed checkpoint wins.
    """
    config = resolved.config
    seed_everything(config.run.seed)
    config_data = dict(resolved.config_data)
    own_copy = sources.resumed_tokenizer_file(config, run_dir)  # a resumed init_from run's
    init = source_run(config, config_data) if own_copy is None else None
    prepare = functools.partial(
        prepare_mixture_data if components.sources else prepare_data,
        config,
        components,
        config_data,
        init,
        own_copy,
    )
    prepared: list[PreparedData] = []
    dist.on_main(lambda: prepared.append(prepare()))
    data = prepared[0] if prepared else prepare()

    from baseline.train.torch_floor import check_torch

    check_torch()  # before the trainer's modules import what an older torch lacks
    from baseline.train.trainer import Trainer  # torch is imported only once training starts

    plan = metrics_plan(resolved)
    with plugin_call(resolved.model.label):
        model = components.model.build(components.tokenizer.vocab_size, config.train.seq_len)
    if config.run.init_from is not None and sources.resumes_own_checkpoint(config, run_dir):
        log.info("run.init_from: not applied, the run resumes from its own checkpoint")
    elif init is not None:
        log.info("%s", load_source_weights(model, init, config.train.seq_len))
    sampler = validation_sampler(config, components.tokenizer, data)
    trainer = Trainer(
        config,
        model,
        components.tokenizer,
        data,
        run_dir,
        config_data,
        dist,
        plan,
        sampler,
        model_label=resolved.model.label,
    )
    return data, trainer, config_data, init


def validation_sampler(
    config: ExperimentConfig, tokenizer: TokenizerAdapter, data: PreparedData
) -> Sampler | None:
    """``logging.samples_per_validation`` texts from the model being trained, generated with a
    private generator seeded by the step (sampling never disturbs the training RNG)."""
    count = config.logging.samples_per_validation
    if not count:
        return None
    from baseline.tools.generation import SamplingOptions, generate
    from baseline.tools.inference import LoadedRun

    def sample(model: Any, step: int) -> list[str]:
        run = LoadedRun(
            model,
            tokenizer,
            config.train.seq_len,
            tokenizer.end_of_segment_id,
            {},
            data.end_of_segment_text,
        )
        options = SamplingOptions(
            max_new_tokens=config.logging.sample_tokens,
            temperature=0.8,
            top_k=50,
            seed=config.run.seed * 1_000_003 + step,
            num_samples=count,
        )
        return generate(run, "", options)

    return sample


def metrics_plan(resolved: ResolvedExperiment) -> MetricsPlan:
    """What the trainer computes for the enabled loggers, and when."""
    return MetricsPlan(resolved.metrics_requests, resolved.config.logging.log_every_n_steps)


def _inference_config(
    resolved: ResolvedExperiment, components: Components, tokenizer_file: str, data: PreparedData
) -> dict[str, Any]:
    config = resolved.config
    return {
        "format_version": 1,
        "model": {
            "name": resolved.model.name,
            "config": unstructure_config(config.model),
            "file": config.run.final_model_filename,
        },
        "tokenizer": {
            "name": resolved.tokenizer.name,
            "config": unstructure_config(config.tokenizer),
            "file": tokenizer_file,
        },
        "vocab_size": components.tokenizer.vocab_size,
        "end_of_segment_id": components.tokenizer.end_of_segment_id,
        "end_of_segment_text": data.end_of_segment_text,
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
