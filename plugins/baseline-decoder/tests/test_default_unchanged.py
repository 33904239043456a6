"""A config that sets none of the variant keys builds today's model, bit for bit.

``legacy_decoder`` is a verbatim copy of the model before the variants were added. With the
same seed both build identical weights (same names, same RNG draws) and compute identical
logits, gradients, attention maps and training steps, dropout included.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from legacy_decoder import DecoderModel as LegacyDecoderModel

from baseline_decoder import BaselineDecoder, BaselineDecoderConfig

VOCAB, SEQ = 61, 20

OLD_OPTIONS = [
    {},
    {"bias": True, "tie_embeddings": False},
    {"dropout": 0.2, "mlp_ratio": 2.5},
    {"position_encoding": "rope", "rope_base": 500.0},
    {"d_model": 48, "n_heads": 3, "layers": 3, "init_std": 0.05},
]


def pair(options: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module]:
    config = BaselineDecoderConfig(**{"d_model": 32, "n_heads": 4, "layers": 2, **options})
    torch.manual_seed(3)
    new = BaselineDecoder(config).build(VOCAB, SEQ)
    torch.manual_seed(3)
    old = LegacyDecoderModel(config, vocab_size=VOCAB, max_seq_len=SEQ)
    return new, old


def assert_identical(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> None:
    assert list(new) == list(old)
    for name in old:
        assert torch.equal(new[name], old[name]), name


@pytest.mark.parametrize("options", OLD_OPTIONS)
def test_default_variant_is_bit_identical_to_the_old_model(options: dict[str, Any]) -> None:
    new, old = pair(options)
    assert_identical(new.state_dict(), old.state_dict())
    assert new.flops_per_token(SEQ) == old.flops_per_token(SEQ)
    tokens = torch.randint(0, VOCAB, (3, SEQ))
    targets = torch.randint(0, VOCAB, (3, SEQ))

    new.eval(), old.eval()
    with torch.no_grad():
        assert torch.equal(new(tokens), old(tokens))
        maps_new = new.attention_probabilities(tokens, [0, 1], max_heads=2)
        maps_old = old.attention_probabilities(tokens, [0, 1], max_heads=2)
    for layer in (0, 1):
        assert torch.equal(maps_new[layer], maps_old[layer])

    # a few training steps (dropout draws included) stay identical
    new.train(), old.train()
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (new, old)]
    for step in range(3):
        losses = []
        for model, optimizer in zip((new, old), optimizers, strict=True):
            torch.manual_seed(100 + step)
            logits = model(tokens)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        assert torch.equal(losses[0], losses[1])
    assert_identical(new.state_dict(), old.state_dict())
