"""Rebuild a trained model and its tokenizer from a run directory alone.

``inference_config.json`` names the model and tokenizer components and their configs; the
final model and the tokenizer file sit beside it. No experiment file is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from baseline.errors import DataError
from baseline.experiment.loading import structure
from baseline.plugins.discovery import PluginSet, default_plugins
from baseline.plugins.protocols import TokenizerAdapter
from baseline.runs.artifacts import INFERENCE_CONFIG_FILENAME


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


def load_run(run_dir: str | Path, *, plugins: PluginSet | None = None) -> LoadedRun:
    """Load the model and tokenizer of the finished run in ``run_dir``."""
    import torch

    run_path = Path(run_dir)
    config_path = run_path / INFERENCE_CONFIG_FILENAME
    try:
        info = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{config_path}: not found; is {run_path} a finished run directory?"
        ) from None
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{config_path}: unreadable ({error})") from None
    registry = (plugins or default_plugins()).registry

    tokenizer_component = registry.get("tokenizer", info["tokenizer"]["name"])
    tokenizer_config = structure(
        info["tokenizer"]["config"], tokenizer_component.config_cls, "tokenizer"
    )
    tokenizer: TokenizerAdapter = tokenizer_component.create(tokenizer_config)
    tokenizer.load(run_path / info["tokenizer"]["file"])

    model_component = registry.get("model", info["model"]["name"])
    model_config = structure(info["model"]["config"], model_component.config_cls, "model")
    model_adapter = model_component.create(model_config)
    model = model_adapter.build(info["vocab_size"], info["seq_len"])
    weights_path = run_path / info["model"]["file"]
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DataError(
            f"{weights_path}: cannot load the final model ({type(error).__name__})"
        ) from None
    model.load_state_dict(state)
    model.eval()
    return LoadedRun(
        model,
        tokenizer,
        info["seq_len"],
        info["end_of_segment_id"],
        info,
        info.get("end_of_segment_text", ""),
        model_adapter,
    )
