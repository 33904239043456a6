"""Rebuild a trained model and its tokenizer from a run directory alone.

A finished run's inference config names the model and tokenizer components and their configs;
the final model and the tokenizer file sit beside it. A run that did not finish (stopped, or
crashed after a checkpoint) has none: the same description comes from its run config, and the
weights from its newest checkpoint, a single file or an FSDP run's DCP directory
(:func:`baseline.runs.weights.read_weights`). No experiment file is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs

from baseline.errors import DataError
from baseline.experiment.loading import structure
from baseline.plugins.calls import plugin_call
from baseline.plugins.discovery import PluginSet, default_plugins
from baseline.plugins.protocols import TokenizerAdapter
from baseline.runs.layout import RunDirectory

log = logging.getLogger("baseline")


@attrs.frozen
class LoadedRun:
    """A trained model (in eval mode, on CPU) with its tokenizer and inference settings."""

    model: Any
    tokenizer: TokenizerAdapter
    seq_len: int
    end_of_segment_id: int
    inference_config: dict[str, Any]
    #: What the end-of-segment token stands for in the training text (the dataset's
    #: delimiter); generated text renders the token as this.
    end_of_segment_text: str = ""
    #: The model component's adapter that built ``model`` (for its optional methods, such as
    #: ``export_hf``).
    model_adapter: Any = None
    #: The step of the checkpoint the weights came from; ``None``: the final model.
    checkpoint_step: int | None = None


def open_run(run_dir: str | Path) -> RunDirectory:
    """The run directory ``run_dir`` when it has weights to use: a final model, or a
    checkpoint of a run that did not finish; else a :class:`DataError` saying what is missing."""
    path = Path(run_dir)
    if not path.exists():
        raise DataError(f"{path}: no such run directory")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory; give a run directory")
    run = RunDirectory.read(path)
    if run.finished:
        return run
    if not run.run_config.is_file() and not run.inference_config.is_file():
        raise DataError(f"{path}: not a run directory (no {run.run_config.name})")
    if run.newest_checkpoint() is None:
        raise DataError(
            f"{path}: the run has no weights: no final model ({run.final_model.name}) and no "
            "checkpoint (it stopped before its first one); train it again, or give another run"
        )
    return run


def inference_info(run: RunDirectory) -> dict[str, Any]:
    """What rebuilding the model and tokenizer needs: the inference config of a finished run;
    for a run that did not finish, the same keys from its run config (without ``vocab_size``
    and ``end_of_segment_id``, which the tokenizer gives)."""
    if run.finished:
        info = run.read_inference_config()
        if info is None:
            raise DataError(f"{run.inference_config}: unreadable")
        return info
    run_config = run.read_run_config() or {}
    tokenizer_file = run.tokenizer_file()
    try:
        config = run_config["config"]
        if tokenizer_file is None:
            raise KeyError("tokenizer_file")

        def component(section: str, file: str) -> dict[str, Any]:
            table = dict(config[section])
            return {"name": table.pop("name"), "config": table, "file": file}

        return {
            "model": component("model", run.final_model_filename),
            "tokenizer": component("tokenizer", tokenizer_file.name),
            "seq_len": int(config["train"]["seq_len"]),
            "end_of_segment_text": str(run_config.get("data", {}).get("end_of_segment_text", "")),
        }
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(
            f"{run.run_config}: unreadable or incomplete ({type(error).__name__}); the run did "
            "not finish and its run config must describe its model and tokenizer"
        ) from None


def load_run(run_dir: str | Path, *, plugins: PluginSet | None = None) -> LoadedRun:
    """Load the model and tokenizer of the run in ``run_dir``: its final model, or for a run
    that did not finish its newest checkpoint (a warning says which step)."""
    from baseline.runs.weights import read_weights

    run = open_run(run_dir)
    info = inference_info(run)
    registry = (plugins or default_plugins()).registry

    tokenizer_component = registry.get("tokenizer", info["tokenizer"]["name"])
    tokenizer_config = structure(
        info["tokenizer"]["config"], tokenizer_component.config_cls, "tokenizer"
    )
    tokenizer: TokenizerAdapter = tokenizer_component.create(tokenizer_config)
    with plugin_call(tokenizer_component.label):
        tokenizer.load(run.path / info["tokenizer"]["file"])
    info.setdefault("vocab_size", tokenizer.vocab_size)
    info.setdefault("end_of_segment_id", tokenizer.end_of_segment_id)

    model_component = registry.get("model", info["model"]["name"])
    model_config = structure(info["model"]["config"], model_component.config_cls, "model")
    model_adapter = model_component.create(model_config)
    with plugin_call(model_component.label):
        model = model_adapter.build(info["vocab_size"], info["seq_len"])

    def mismatch(path: Path, problems: list[str]) -> DataError:
        return DataError(
            f"{path}: the weights do not fit the run's model: {'; '.join(problems[:3])}"
        )

    weights = read_weights(run, model.state_dict(), mismatch)
    if weights.note:
        log.warning("%s: %s", run.path, weights.note)
    model.load_state_dict(weights.state)
    model.eval()
    return LoadedRun(
        model,
        tokenizer,
        info["seq_len"],
        info["end_of_segment_id"],
        info,
        info.get("end_of_segment_text", ""),
        model_adapter,
        weights.step,
    )
