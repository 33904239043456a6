"""Optimizers: which parameters Muon takes, and that both optimizers train."""

from __future__ import annotations

import pytest
import torch

from baseline.config import TrainConfig
from baseline.train.muon import BatchedMuon
from baseline.train.optim import OptimizerGroup, build_optimizer, muon_parameters

pytest.importorskip("baseline_decoder")
from baseline_decoder import BaselineDecoder, BaselineDecoderConfig

VOCAB = 97


def model(**kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    config = BaselineDecoderConfig(d_model=32, n_heads=2, layers=2, **kwargs)  # type: ignore[arg-type]
    return BaselineDecoder(config).build(VOCAB, 16)


@pytest.mark.parametrize("tie_embeddings", [True, False])
def test_muon_takes_the_hidden_matrices_only(tie_embeddings: bool) -> None:
    built = model(tie_embeddings=tie_embeddings)
    chosen = {id(p) for p in muon_parameters(built, VOCAB)}
    for name, parameter in built.named_parameters():
        hidden = parameter.ndim == 2 and "emb" not in name and parameter.shape[0] != VOCAB
        assert (id(parameter) in chosen) == hidden, name
    optimizer = build_optimizer(built, TrainConfig(optimizer="muon"), VOCAB)
    assert isinstance(optimizer, OptimizerGroup)
    muon, adamw = optimizer.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    in_groups = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(in_groups) == sorted({id(p) for p in built.parameters()})  # each once


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_both_optimizers_lower_the_loss(name: str) -> None:
    built = model()
    optimizer = build_optimizer(built, TrainConfig(optimizer=name, learning_rate=3e-3), VOCAB)
    tokens = torch.randint(0, VOCAB, (8, 17), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(30):
        logits = built(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


def test_optimizer_group_state_round_trips() -> None:
    built = model()
    optimizer = build_optimizer(built, TrainConfig(optimizer="muon"), VOCAB)
    assert isinstance(optimizer, OptimizerGroup)
    built(torch.zeros(2, 4, dtype=torch.long)).sum().backward()
    optimizer.step()
    again = build_optimizer(built, TrainConfig(optimizer="muon"), VOCAB)
    assert isinstance(again, OptimizerGroup)
    again.load_state_dict(optimizer.state_dict())
    assert str(again.state_dict()) == str(optimizer.state_dict())
    with pytest.raises(ValueError, match="not this optimizer's"):
        again.load_state_dict({"state": {}, "param_groups": []})


def _matrices(seed: int) -> list[torch.nn.Parameter]:
    # Repeated, wide, tall and square shapes, as a decoder's layers have.
    generator = torch.Generator().manual_seed(seed)
    shapes = [(48, 16), (16, 16), (64, 16), (16, 64)] * 3 + [(24, 40)]
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]


@pytest.mark.parametrize("nesterov, adjust", [(True, "match_rms_adamw"), (False, "original")])
def test_batched_muon_steps_as_torch_muon(nesterov: bool, adjust: str) -> None:
    ours, theirs, initial = _matrices(0), _matrices(0), _matrices(0)
    settings = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.9, "nesterov": nesterov}
    batched = BatchedMuon(ours, adjust_lr_fn=adjust, **settings)
    reference = torch.optim.Muon(theirs, adjust_lr_fn=adjust, **settings)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        for mine, other in zip(ours, theirs, strict=True):
            mine.grad = torch.randn(mine.shape, generator=generator)
            other.grad = mine.grad.clone()
        batched.step()
        reference.step()
    for mine, other in zip(ours, theirs, strict=True):
        # Both orthogonalise in bf16; the batched matmuls may round differently.
        torch.testing.assert_close(mine, other, atol=2e-3, rtol=0)
    assert all((p - q).abs().max() > 5e-3 for p, q in zip(ours, initial, strict=True))
    # The state is torch's: a checkpoint of one loads into the other.
    reference.load_state_dict(batched.state_dict())
    assert set(reference.state_dict()["state"]) == set(batched.state_dict()["state"])


def test_batched_muon_skips_parameters_without_gradients() -> None:
    params = _matrices(0)
    before = [p.detach().clone() for p in params]
    optimizer = BatchedMuon(params, lr=0.02)
    params[0].grad = torch.ones_like(params[0])
    optimizer.step()
    assert not torch.equal(params[0], before[0])
    assert all(torch.equal(p, b) for p, b in zip(params[1:], before[1:], strict=True))
    assert list(optimizer.state) == [params[0]]
