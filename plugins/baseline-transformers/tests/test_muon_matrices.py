"""Muon on a transformers GPT-2: its ``Conv1D`` weights are the matrices they are."""

from __future__ import annotations

import pytest
import torch
import transformers

from baseline.config import TrainConfig
from baseline.errors import ConfigError
from baseline.train.optim import build_optimizer, muon_parameters

VOCAB = 97


def tiny_gpt2() -> torch.nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def test_muon_takes_every_hidden_conv1d_matrix_and_no_embedding_or_head() -> None:
    model = tiny_gpt2()
    chosen = {id(p) for p in muon_parameters(model, VOCAB)}
    names = {name for name, p in model.named_parameters() if id(p) in chosen}
    # attention qkv and output, MLP in and out: 4 matrices per layer
    assert names == {
        f"transformer.h.{layer}.{part}.weight"
        for layer in range(2)
        for part in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }


def test_a_muon_step_on_gpt2_updates_the_conv1d_weights() -> None:
    model = tiny_gpt2()
    optimizer = build_optimizer(model, TrainConfig(optimizer="muon", max_steps=1), VOCAB)
    before = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    ids = torch.randint(0, VOCAB, (2, 16))
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.transformer.h[0].attn.c_attn.weight)


def test_a_model_without_hidden_matrices_is_one_line_naming_the_setting() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(VOCAB, 8), torch.nn.Linear(8, VOCAB))
    with pytest.raises(ConfigError) as raised:
        build_optimizer(model, TrainConfig(optimizer="muon", max_steps=1), VOCAB)
    assert raised.value.key_path == "train.optimizer"
    assert "adamw" in str(raised.value) and "\n" not in str(raised.value)
