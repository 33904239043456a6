"""The baseline_decoder model: contract (shapes, causality, gradients) and config rules."""

from __future__ import annotations

import pytest
import torch

import baseline_decoder
from baseline.errors import ConfigError, FieldError
from baseline.experiment.loading import structure
from baseline.testing import check_model_adapter, in_process_plugins
from baseline_decoder import BaselineDecoder, BaselineDecoderConfig


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"bias": True, "tie_embeddings": False},
        {"dropout": 0.2, "mlp_ratio": 2.0},
        {"position_encoding": "rope"},
    ],
)
def test_contract(options: dict[str, object]) -> None:
    config = BaselineDecoderConfig(d_model=32, n_heads=4, layers=2, **options)  # type: ignore[arg-type]
    model = check_model_adapter(BaselineDecoder(config), vocab_size=50, seq_len=10)
    assert (model.lm_head.weight is model.token_embedding.weight) == config.tie_embeddings


def test_parameter_count_matches_the_architecture() -> None:
    config = BaselineDecoderConfig(d_model=64, n_heads=4, layers=3)
    model = BaselineDecoder(config).build(vocab_size=100, seq_len=32)
    d = 64
    per_block = 4 * d * d + 8 * d * d + 2 * d  # attention, MLP, two LayerNorm weights (no bias)
    expected = 100 * d + 32 * d + 3 * per_block + d  # embeddings, blocks, final norm; head tied
    assert sum(p.numel() for p in model.parameters()) == expected


def test_longer_input_than_positions_is_rejected() -> None:
    model = BaselineDecoder(BaselineDecoderConfig(d_model=16, n_heads=2, layers=1)).build(10, 8)
    with pytest.raises(ValueError, match="exceeds the model's 8 positions"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_heads_must_divide_width() -> None:
    with pytest.raises(FieldError, match="must divide d_model=30, got 4"):
        BaselineDecoderConfig(d_model=30, n_heads=4).validate(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [("dropout", 1.0, "must be in [0.0, 1.0)"), ("layers", 0, "must be >= 1")],
)
def test_field_ranges(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=f"model.{key}: {expected[:8]}"):
        structure({key: value}, BaselineDecoderConfig, "model")


def test_registers_model() -> None:
    assert in_process_plugins(baseline_decoder, installed=False).registry.names("model") == [
        "baseline_decoder"
    ]


def test_rope_has_no_position_table_and_needs_even_heads() -> None:
    model = BaselineDecoder(
        BaselineDecoderConfig(d_model=32, n_heads=4, layers=1, position_encoding="rope")
    ).build(vocab_size=20, seq_len=8)
    assert model.position_embedding is None
    assert "rotary_cos" not in model.state_dict()  # derived, not saved
    with pytest.raises(FieldError, match="rope needs an even head size"):
        BaselineDecoderConfig(d_model=12, n_heads=4, position_encoding="rope").validate(None)  # type: ignore[arg-type]


def test_rope_attention_depends_on_relative_position_only() -> None:
    from baseline_decoder.model import apply_rotary, rotary_tables

    cos, sin = rotary_tables(16, 8, 10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i: int, j: int) -> float:
        qi = apply_rotary(q.expand(1, 1, 16, 8), cos, sin)[0, 0, i]
        kj = apply_rotary(k.expand(1, 1, 16, 8), cos, sin)[0, 0, j]
        return float(qi @ kj)

    assert score(5, 2) == pytest.approx(score(10, 7), rel=1e-4)
