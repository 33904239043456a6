"""The ``hf_causal_lm`` adapter: resolve the ``transformers`` config, build or load the model.

Imports ``transformers`` (and torch): loaded only when an ``hf_causal_lm`` component is created.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PretrainedConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
)

from baseline.errors import ConfigError
from baseline.plugins.protocols import ExportInfo
from baseline_transformers import HFCausalLMConfig
from baseline_transformers.local import resolve_local
from baseline_transformers.module import HFCausalLMModule


def config_keys(config_cls: type[PretrainedConfig]) -> set[str]:
    """The keys a ``transformers`` config class accepts: its fields (or ``__init__``
    parameters) and the aliases of its ``attribute_map``."""
    if dataclasses.is_dataclass(config_cls):
        keys = {field.name for field in dataclasses.fields(config_cls)}
    else:
        keys = set(inspect.signature(config_cls.__init__).parameters) - {"self", "kwargs"}
    return keys | set(getattr(config_cls, "attribute_map", {}))


class HFCausalLM:
    """Builds (or loads) a ``transformers`` causal LM wrapped as a baseline module.

    Creating the adapter resolves and checks the architecture's config, so ``baseline
    validate`` reports an unknown ``model_type``, an unknown ``[model.config]`` key or a
    ``pretrained`` directory without ``config.json``.
    """

    def __init__(self, config: HFCausalLMConfig) -> None:
        self.config = config
        self.pretrained_dir: Path | None = None
        self.hf_config = self._resolve_config()

    # -- the config -----------------------------------------------------------------

    def _resolve_config(self) -> PretrainedConfig:
        config = self.config
        if config.pretrained is not None:
            directory = resolve_local(
                config.pretrained, config.base_dir, key_path="model.pretrained", kind="model"
            )
            if not (directory / "config.json").is_file():
                raise ConfigError(
                    f"{directory} has no config.json; give a directory written by "
                    "save_pretrained (config.json and model.safetensors)",
                    key_path="model.pretrained",
                )
            try:
                hf_config = AutoConfig.from_pretrained(
                    directory, local_files_only=True, trust_remote_code=config.trust_remote_code
                )
                self._check_keys(type(hf_config))
                # Overrides go through the constructor: values it derives (head_dim from
                # hidden_size, say) must follow them.
                hf_config = AutoConfig.from_pretrained(
                    directory,
                    local_files_only=True,
                    trust_remote_code=config.trust_remote_code,
                    **config.config,
                )
            except ConfigError:
                raise
            except Exception as error:
                raise ConfigError(
                    f"{directory / 'config.json'}: cannot be loaded ({type(error).__name__}: "
                    f"{' '.join(str(error).split())[:300]})",
                    key_path="model.pretrained",
                ) from None
            self.pretrained_dir = directory
        else:
            model_type = str(config.model_type)
            if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
                from baseline.plugins.registry import did_you_mean

                hint = did_you_mean(model_type, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
                raise ConfigError(
                    f"{model_type!r} is not a causal-LM architecture of transformers "
                    f"{_transformers_version()}{hint} (e.g. llama, gpt2, qwen3, mistral)",
                    key_path="model.model_type",
                )
            self._check_keys(type(AutoConfig.for_model(model_type)))
            hf_config = self._scratch_config()
        return hf_config

    def _scratch_config(self, **run_keys: Any) -> PretrainedConfig:
        """The from-scratch config: the user's keys and the run's, given to the constructor
        (values it derives, such as ``head_dim``, follow them). The token ids of the
        architecture's defaults mean nothing for this run's tokenizer: none are set."""
        tokens = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
        try:
            return AutoConfig.for_model(
                str(self.config.model_type), **{**tokens, **self.config.config, **run_keys}
            )
        except Exception as error:
            raise ConfigError(
                f"the {self.config.model_type} config rejects these values "
                f"({type(error).__name__}: {' '.join(str(error).split())[:300]})",
                key_path="model.config",
            ) from None

    def _check_keys(self, config_cls: type[PretrainedConfig]) -> None:
        known = config_keys(config_cls)
        for key in self.config.config:
            if key not in known:
                from baseline.plugins.registry import did_you_mean

                name = getattr(config_cls, "model_type", config_cls.__name__)
                raise ConfigError(
                    f"{config_cls.__name__} ({name}) has no key {key!r}{did_you_mean(key, known)}",
                    key_path=f"model.config.{key}",
                )

    @property
    def model_class(self) -> type[Any] | None:
        """The ``transformers`` class that will be built (``None`` for remote code)."""
        return MODEL_FOR_CAUSAL_LM_MAPPING.get(type(self.hf_config), None)

    @property
    def diagnostics(self) -> frozenset[str]:
        """Layer diagnostics for every architecture of ``transformers``; attention entropy
        when the architecture can return its attention maps (``output_attentions``)."""
        supported = {"activation_norms", "ln_grad_norms"}
        recorded = getattr(self.model_class, "_can_record_outputs", None) or {}
        if "attentions" in recorded:
            supported.add("attention_entropy")
        return frozenset(supported)

    # -- building -------------------------------------------------------------------

    def build(self, vocab_size: int, seq_len: int) -> torch.nn.Module:
        """The model for ``vocab_size`` tokens and ``seq_len`` positions (fp32): from scratch,
        or the ``pretrained`` weights, resized to the run's vocabulary when it differs."""
        options: dict[str, Any] = {
            "trust_remote_code": self.config.trust_remote_code,
            "attn_implementation": self.config.attn_implementation,
            "dtype": torch.float32,
        }
        if self.pretrained_dir is None:
            run_keys: dict[str, Any] = {"vocab_size": vocab_size}
            if "max_position_embeddings" in config_keys(type(self.hf_config)):
                run_keys["max_position_embeddings"] = seq_len
            hf_config = self._scratch_config(**run_keys)
            model = AutoModelForCausalLM.from_config(hf_config, **options)
        else:
            hf_config = self.hf_config
            limit = getattr(hf_config, "max_position_embeddings", None)
            if isinstance(limit, int) and limit < seq_len:
                raise ConfigError(
                    f"must be <= {limit}, the max_position_embeddings of "
                    f"{self.pretrained_dir / 'config.json'}, got {seq_len}",
                    key_path="train.seq_len",
                )
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    self.pretrained_dir, config=hf_config, local_files_only=True, **options
                )
            except Exception as error:
                raise ConfigError(
                    f"{self.pretrained_dir}: the weights cannot be loaded "
                    f"({type(error).__name__}: {' '.join(str(error).split())[:300]})",
                    key_path="model.pretrained",
                ) from None
            if model.get_input_embeddings().weight.shape[0] != vocab_size:
                model.resize_token_embeddings(vocab_size)
        return HFCausalLMModule(model)

    # -- export ---------------------------------------------------------------------

    def export_hf(self, model: torch.nn.Module, directory: Path, info: ExportInfo) -> None:
        """``save_pretrained`` of the trained model, with the end-of-segment token as EOS."""
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        assert isinstance(model, HFCausalLMModule)
        hf = model.hf
        hf.config.eos_token_id = info.end_of_segment_id
        hf.config.pad_token_id = info.end_of_segment_id
        hf.generation_config = GenerationConfig(
            bos_token_id=hf.config.bos_token_id,
            eos_token_id=info.end_of_segment_id,
            pad_token_id=info.end_of_segment_id,
        )
        hf.save_pretrained(directory)


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)
