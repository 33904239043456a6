"""Tiny real inputs for the tests: a corpus, a pretrained tokenizer directory, a Llama
saved with ``save_pretrained``, and experiment data for runs of a few steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from baseline.testing import SAMPLE_TEXTS, tiny_experiment_data

#: A tiny Llama: hidden 32, 2 layers, 4 heads sharing 2 key/value heads.
TINY_LLAMA = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
}


def corpus_text() -> str:
    """Short paragraphs, as ``tiny_experiment_data`` writes them."""
    return "\n\n".join(f"{text} {i}" for i in range(60) for text in SAMPLE_TEXTS[:4])


def make_tokenizer_dir(directory: Path, *, eos: str | None = "</s>", vocab: int = 300) -> Path:
    """A byte-level BPE trained on :func:`corpus_text`, saved by a fast tokenizer's
    ``save_pretrained`` (``tokenizer.json``, ``tokenizer_config.json``), EOS ``eos``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_text().split("\n\n"), trainer=trainer)
    options: dict[str, Any] = {"clean_up_tokenization_spaces": False}
    if eos is not None:
        options["eos_token"] = eos
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **options)
    fast.save_pretrained(directory)
    return directory


def save_tiny_llama(directory: Path, vocab_size: int, *, seed: int = 3) -> Path:
    """A randomly initialised tiny Llama written by ``save_pretrained``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=64, **TINY_LLAMA)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def hf_experiment_data(workdir: Path, *, tokenizer_dir: Path | None = None) -> dict[str, Any]:
    """A few-step run of an ``hf_causal_lm`` Llama from scratch with ``hf_tokenizer``."""
    for module in ("baseline_text", "baseline_holdout"):  # the dataset and the split it uses
        pytest.importorskip(module)
    data = tiny_experiment_data(workdir, corpus=corpus_text())
    if tokenizer_dir is None:
        tokenizer_dir = make_tokenizer_dir(workdir / "tokenizer")
    data["tokenizer"] = {"name": "hf_tokenizer", "path": str(tokenizer_dir)}
    data["model"] = {"name": "hf_causal_lm", "model_type": "llama", "config": dict(TINY_LLAMA)}
    data["train"].update(epochs=1, max_steps=6, seq_len=16)
    return data
