"""baseline plugin: Hugging Face ``transformers`` models and tokenizers as components.

- model ``hf_causal_lm``: a causal LM of ``transformers``, built from scratch from
  ``model_type`` and a ``[model.config]`` table, or loaded from a local ``save_pretrained``
  directory (``pretrained``) to fine-tune;
- tokenizer ``hf_tokenizer``: a pretrained tokenizer from a local directory or a single
  ``tokenizer.json``.

Both can be written back by ``baseline export`` (their adapters' ``export_hf``). This module
holds only the config classes and the registration hooks: ``transformers`` is imported when
a component is created, so ``baseline plugins`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import attrs

from baseline.config import ExperimentConfig, ModelConfig, TokenizerConfig, path_field
from baseline.errors import FieldError
from baseline.plugins.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from baseline_transformers.model import HFCausalLM
    from baseline_transformers.tokenizer import HFTokenizer

__all__ = ["RUN_KEYS", "HFCausalLMConfig", "HFTokenizerConfig"]

#: ``[model.config]`` keys the run sets itself: the vocabulary comes from the tokenizer and
#: the position limit from ``train.seq_len``.
RUN_KEYS = {
    "vocab_size": "the tokenizer's vocabulary size",
    "max_position_embeddings": "train.seq_len",
    "n_positions": "train.seq_len",
    "n_ctx": "train.seq_len",
}


def _optional_non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.strip():
        raise FieldError(attribute.name, "must not be empty; leave the key out instead")


def _non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "must not be empty")


@attrs.frozen(kw_only=True)
class HFCausalLMConfig(ModelConfig):
    """A ``transformers`` causal LM: ``model_type`` plus ``config`` (from scratch), or a local
    ``pretrained`` directory (``config.json`` and weights written by ``save_pretrained``)."""

    #: An architecture of ``transformers`` (``llama``, ``gpt2``, ``qwen3``, ...), built from
    #: scratch with ``config``.
    model_type: str | None = attrs.field(default=None, validator=_optional_non_empty)
    #: A local directory written by ``save_pretrained``: its architecture and weights. A Hub
    #: name is refused with the pre-download recipe (runs never touch the network).
    pretrained: str | None = attrs.field(default=None, validator=_optional_non_empty)
    #: The ``[model.config]`` table: keys of the architecture's config class (with
    #: ``pretrained``: overrides of its ``config.json``). ``vocab_size`` and the position
    #: limit come from the run.
    config: dict[str, Any] = attrs.field(factory=dict)
    #: Passed to ``transformers``: run model code shipped inside a ``pretrained`` directory.
    trust_remote_code: bool = False
    #: The attention kernel for training; attention entropy always uses ``eager``.
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    #: What a relative ``pretrained`` is resolved against (the experiment file's directory).
    base_dir: str = path_field(default=".", validator=_non_empty)

    def validate(self, experiment: ExperimentConfig) -> None:
        """Exactly one of ``model_type`` and ``pretrained``; no run-owned keys in ``config``."""
        if (self.model_type is None) == (self.pretrained is None):
            raise FieldError(
                "model_type",
                'set exactly one of model_type (build from scratch, e.g. "llama") and '
                "pretrained (a local save_pretrained directory)",
            )
        for key, source in RUN_KEYS.items():
            if key in self.config:
                raise FieldError(
                    f"config.{key}", f"is set by the run ({source}); remove it from [model.config]"
                )


@attrs.frozen(kw_only=True)
class HFTokenizerConfig(TokenizerConfig):
    """A pretrained Hugging Face tokenizer: a local directory (``tokenizer.json`` and its
    config files) or a single ``tokenizer.json``. ``fit`` learns nothing."""

    #: A local directory written by ``save_pretrained`` or a ``tokenizer.json`` file.
    path: str = attrs.field(validator=_non_empty)
    #: The token that ends every segment; default: the tokenizer's EOS token.
    eos_token: str | None = attrs.field(default=None, validator=_optional_non_empty)
    #: Passed to ``transformers``: run tokenizer code shipped inside the directory.
    trust_remote_code: bool = False
    #: What a relative ``path`` is resolved against (the experiment file's directory).
    base_dir: str = path_field(default=".", validator=_non_empty)


def _create_model(config: HFCausalLMConfig) -> HFCausalLM:
    from baseline_transformers.model import HFCausalLM  # imports transformers

    return HFCausalLM(config)


def _create_tokenizer(config: HFTokenizerConfig) -> HFTokenizer:
    from baseline_transformers.tokenizer import HFTokenizer  # imports transformers

    return HFTokenizer(config)


@hookimpl
def baseline_register_models(register: Register) -> None:
    """Register the ``hf_causal_lm`` model."""
    register("hf_causal_lm", HFCausalLMConfig, _create_model)


@hookimpl
def baseline_register_tokenizers(register: Register) -> None:
    """Register the ``hf_tokenizer`` tokenizer."""
    register("hf_tokenizer", HFTokenizerConfig, _create_tokenizer)
