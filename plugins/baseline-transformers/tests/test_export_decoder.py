"""``baseline export`` of ``baseline_decoder`` runs with ``bpe`` tokenizers: each exportable
variant loads with ``transformers`` alone and computes what the run computes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("baseline_decoder")
pytest.importorskip("baseline_bpe")

from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.testing import tiny_experiment_data
from baseline.tools.export import export_run
from baseline.tools.generation import SamplingOptions, generate
from baseline.tools.inference import load_run

#: Short enough that prompt + 50 new tokens fit in seq_len (GPT-2 has only that many positions).
PROMPT = "To be"
TEXT = "Now is the winter of our discontent, made glorious summer!  Ünïcode ✓ <|endofsegment|>"

#: variant name -> (the [model] keys, the transformers class it becomes)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "gpt2-default": ({}, "GPT2LMHeadModel"),
    "gpt2-bias-relu2-untied": (
        {"bias": True, "mlp": "relu2", "tie_embeddings": False},
        "GPT2LMHeadModel",
    ),
    "llama-style": (
        {"norm": "rmsnorm", "mlp": "swiglu", "position_encoding": "rope", "n_kv_heads": 1},
        "LlamaForCausalLM",
    ),
    "llama-bias-untied": (
        {
            "norm": "rmsnorm",
            "mlp": "swiglu",
            "position_encoding": "rope",
            "bias": True,
            "tie_embeddings": False,
            "rope_base": 500.0,
        },
        "LlamaForCausalLM",
    ),
    "qwen3-qk-norm": (
        {"norm": "rmsnorm", "mlp": "swiglu", "position_encoding": "rope", "qk_norm": True},
        "Qwen3ForCausalLM",
    ),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One corpus, bpe file and token cache for every variant's run."""
    return tmp_path_factory.mktemp("decoder-export")


def train(workdir: Path, name: str, model: dict[str, Any]) -> Path:
    """A few real training steps of a tiny ``baseline_decoder`` (hidden 32, 2 layers)."""
    data = tiny_experiment_data(workdir)
    data["run"]["run_name"] = name
    data["model"].update(model)
    data["train"].update(epochs=1, max_steps=8, seq_len=64, batch_size=4, learning_rate=1e-2)
    plugins = default_plugins()
    return model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins).run_dir


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exported_decoder_matches_the_run(workdir: Path, variant: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_keys, expected_class = VARIANTS[variant]
    run_dir = train(workdir, variant, model_keys)
    out = workdir / f"{variant}-hf"
    result = export_run(run_dir, out)
    assert {"config.json", "model.safetensors", "generation_config.json"} <= set(result.files)
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(result.files)

    hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert type(hf).__name__ == expected_class
    hf.eval()
    run = load_run(run_dir)

    # the tokenizer: the same ids, and back to the same text
    ids = run.tokenizer.encode_batch([TEXT])[0]
    assert tokenizer(TEXT)["input_ids"] == ids
    assert tokenizer.decode(ids) == TEXT == run.tokenizer.decode(ids)
    assert tokenizer.eos_token_id == run.end_of_segment_id == hf.config.eos_token_id

    # the logits, on every position of a full window
    tokens = torch.tensor([run.tokenizer.encode_batch([TEXT * 3])[0][: run.seq_len]])
    with torch.no_grad():
        expected = run.model(tokens)
        got = hf(tokens).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    # greedy generation: 50 tokens, or up to the end of the segment where both stop
    text = generate(
        run, PROMPT, SamplingOptions(max_new_tokens=50, temperature=0, stop_at_segment_end=True)
    )[0]
    prompt_ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    assert prompt_ids.shape[1] + 50 <= run.seq_len
    with torch.no_grad():
        generated = hf.generate(prompt_ids, max_new_tokens=50, do_sample=False)
    new = generated[0, prompt_ids.shape[1] :]
    assert tokenizer.decode(new, skip_special_tokens=True) == text
    assert len(new) == 50 or new[-1] == run.end_of_segment_id
