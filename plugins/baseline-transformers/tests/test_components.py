"""The components without a run: light import, architectures, declared diagnostics, the
tokenizer adapter's contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hf_support import make_tokenizer_dir

from baseline.testing import check_model_adapter
from baseline_transformers import HFCausalLMConfig, HFTokenizerConfig


def test_the_plugin_module_imports_neither_transformers_nor_torch() -> None:
    code = (
        "import sys, baseline_transformers\n"
        "print(sorted(m for m in ('transformers', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_gpt2_from_scratch_takes_its_positions_from_the_run() -> None:
    from baseline_transformers.model import HFCausalLM

    config = {"n_embd": 32, "n_layer": 2, "n_head": 4, "resid_pdrop": 0.0}
    adapter = HFCausalLM(HFCausalLMConfig(model_type="gpt2", config=config))
    assert adapter.diagnostics == {"activation_norms", "ln_grad_norms", "attention_entropy"}
    module = check_model_adapter(adapter, vocab_size=50, seq_len=12)
    assert module.hf.config.n_positions == 12 and module.hf.config.vocab_size == 50
    assert len(module.diagnostic_layers()) == 2
    assert all(len(module.diagnostic_norms(layer)) == 2 for layer in module.diagnostic_layers())
    maps = module.eval().attention_probabilities(torch.zeros(1, 5, dtype=torch.long), [1], 2)
    assert maps[1].shape == (1, 2, 5, 5)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(1, 2, 5))


def test_an_architecture_without_attention_maps_declares_no_attention_entropy() -> None:
    from baseline_transformers.model import HFCausalLM

    adapter = HFCausalLM(HFCausalLMConfig(model_type="mamba"))
    assert adapter.diagnostics == {"activation_norms", "ln_grad_norms"}


def test_tokenizer_from_a_directory_or_a_single_file(tmp_path: Path) -> None:
    from baseline_transformers.tokenizer import HFTokenizer

    directory = make_tokenizer_dir(tmp_path / "tok")
    text = "To be, or not to be 7"
    by_dir = HFTokenizer(HFTokenizerConfig(path=str(directory)))
    by_file = HFTokenizer(
        HFTokenizerConfig(path=str(directory / "tokenizer.json"), eos_token="</s>")
    )
    for tokenizer in (by_dir, by_file):
        assert tokenizer.end_of_segment_id == 0 and tokenizer.vocab_size == 300
        ids = tokenizer.encode_batch([text])[0]
        assert tokenizer.decode(ids) == text
    assert by_dir.fingerprint() == by_file.fingerprint()
    with pytest.raises(Exception, match="has no EOS token"):
        _ = HFTokenizer(HFTokenizerConfig(path=str(directory / "tokenizer.json"))).vocab_size
    by_dir.save(tmp_path)
    again = HFTokenizer(HFTokenizerConfig(path=str(directory)))
    again.load(tmp_path / "hf_tokenizer")
    assert again.encode_batch([text]) == by_dir.encode_batch([text])
