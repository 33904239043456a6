"""The model variants: norm, MLP, grouped-query attention, q/k norm, position encoding.

Every variant builds, passes the model contract, trains, round-trips its state dict and
supports every layer diagnostic; grouped-query attention equals multi-head attention with the
key/value heads repeated; the attention maps are the ones the forward pass uses.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from baseline.config import DIAGNOSTICS
from baseline.metrics.diagnostics import LayerDiagnostics, entropy_bounds
from baseline.testing import check_model_adapter
from baseline_decoder import BaselineDecoder, BaselineDecoderConfig
from baseline_decoder.model import DecoderModel, apply_rotary

VOCAB, SEQ = 50, 12
D_MODEL, HEADS = 32, 4

LEVELS = {
    "norm": ("layernorm", "rmsnorm"),
    "mlp": ("gelu", "swiglu", "relu2"),
    "n_kv_heads": (HEADS, 2, 1),
    "qk_norm": (False, True),
    "position_encoding": ("learned", "rope"),
}
#: norm x mlp x n_kv_heads x qk_norm x position_encoding: all 72 variants.
ALL_VARIANTS = [
    dict(zip(LEVELS, values, strict=True)) for values in itertools.product(*LEVELS.values())
]
#: 18 of them: each norm x mlp x n_kv_heads once, with (qk_norm, position_encoding) cycling so
#: that every pair of values of any two keys occurs (checked below).
QK_POS = list(itertools.product(LEVELS["qk_norm"], LEVELS["position_encoding"]))
PAIRWISE_VARIANTS = [
    {"norm": norm, "mlp": mlp, "n_kv_heads": kv, "qk_norm": qk, "position_encoding": pos}
    for index, (norm, mlp, kv) in enumerate(
        itertools.product(LEVELS["norm"], LEVELS["mlp"], LEVELS["n_kv_heads"])
    )
    for qk, pos in [QK_POS[index % len(QK_POS)]]
]


def variant_id(options: dict[str, Any]) -> str:
    return "-".join(
        [
            str(options["norm"]),
            str(options["mlp"]),
            f"kv{options['n_kv_heads']}",
            "qknorm" if options["qk_norm"] else "noqk",
            str(options["position_encoding"]),
        ]
    )


def config_of(**options: Any) -> BaselineDecoderConfig:
    config = BaselineDecoderConfig(**{"d_model": D_MODEL, "n_heads": HEADS, "layers": 3, **options})
    config.validate(None)  # type: ignore[arg-type]
    return config


def build(config: BaselineDecoderConfig, seed: int = 0) -> DecoderModel:
    torch.manual_seed(seed)
    model = BaselineDecoder(config).build(VOCAB, SEQ)
    assert isinstance(model, DecoderModel)
    return model


def perturb_norms(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every norm a non-trivial weight (and bias), so that tests see them act."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm | torch.nn.RMSNorm):
                weight = module.weight
                assert weight is not None
                weight.copy_(1 + 0.3 * torch.randn(weight.shape, generator=generator))
                bias = getattr(module, "bias", None)
                if bias is not None:
                    bias.copy_(0.1 * torch.randn(bias.shape, generator=generator))


def test_the_pairwise_variants_cover_every_pair_of_values() -> None:
    assert len(PAIRWISE_VARIANTS) == 18
    for first, second in itertools.combinations(LEVELS, 2):
        pairs = {(v[first], v[second]) for v in PAIRWISE_VARIANTS}
        assert pairs == set(itertools.product(LEVELS[first], LEVELS[second])), (first, second)


@pytest.mark.parametrize("options", ALL_VARIANTS, ids=variant_id)
def test_every_variant_builds_and_round_trips(options: dict[str, Any]) -> None:
    """The cheap checks on all 72 variants; the pairwise ones below also train."""
    model = build(config_of(**options)).eval()
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    fresh = build(config_of(**options), seed=5).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        logits = model(tokens)
        assert logits.shape == (2, SEQ, VOCAB) and torch.isfinite(logits).all()
        assert torch.equal(fresh(tokens), logits)
        maps = model.attention_probabilities(tokens, [0, 2], max_heads=3)
    assert {index: m.shape for index, m in maps.items()} == {
        0: (2, 3, SEQ, SEQ),
        2: (2, 3, SEQ, SEQ),
    }


@pytest.mark.parametrize("options", PAIRWISE_VARIANTS, ids=variant_id)
def test_variant_builds_trains_round_trips_and_has_diagnostics(options: dict[str, Any]) -> None:
    config = config_of(**options)
    check_model_adapter(BaselineDecoder(config), vocab_size=VOCAB, seq_len=SEQ)

    model = build(config)
    norm_type = torch.nn.RMSNorm if options["norm"] == "rmsnorm" else torch.nn.LayerNorm
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm | torch.nn.RMSNorm)]
    assert norms and all(type(m) is norm_type for m in norms)
    assert len(norms) == 3 * (2 + (2 if options["qk_norm"] else 0)) + 1

    # a few steps on one batch: the loss is finite and goes down
    tokens = torch.randint(0, VOCAB, (4, SEQ + 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(value) for value in losses)
    assert losses[-1] < losses[0]

    # the state dict loads into a fresh model and gives the same logits
    fresh = build(config, seed=99)
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(tokens[:, :-1]), model(tokens[:, :-1]))

    # every layer diagnostic, as the core computes it
    model.train()
    probe = LayerDiagnostics(model, frozenset(DIAGNOSTICS))
    activations = probe.activation_norms(tokens[:, :-1])
    assert set(activations) == {f"activation_norm_{p}" for p in ("first", "middle", "last")}
    assert all(math.isfinite(v) and v > 0 for v in activations.values())
    optimizer.zero_grad()
    F.cross_entropy(model(tokens[:, :-1]).reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)).backward()
    grads = probe.ln_grad_norms()
    # RMSNorm has no bias, and LayerNorm has one only with bias = true (the default is false)
    assert set(grads) == {f"ln_weight_grad_norm_{p}" for p in ("first", "middle", "last")}
    assert all(math.isfinite(v) and v > 0 for v in grads.values())
    entropy = probe.attention_entropy(tokens[:, :-1], head_cap=2, token_cap=8)
    low, high = entropy_bounds(8)
    assert set(entropy) == {f"attention_entropy_{p}" for p in ("first", "middle", "last")}
    assert all(low <= v <= high + 1e-6 for v in entropy.values())


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_norm_biases_follow_the_norm_and_bias(norm: str) -> None:
    model = build(config_of(norm=norm, bias=True, qk_norm=True))
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    model(tokens).sum().backward()
    keys = set(LayerDiagnostics(model, frozenset({"ln_grad_norms"})).ln_grad_norms())
    has_bias = {k for k in keys if k.startswith("ln_bias_")}
    assert bool(has_bias) == (norm == "layernorm")
    # linear layers have their biases with either norm
    assert model.blocks[0].attn.qkv.bias is not None and model.blocks[0].mlp.fc.bias is not None


# -- grouped-query attention ---------------------------------------------------------------------


def repeated_heads_state(model: DecoderModel) -> dict[str, torch.Tensor]:
    """The state dict of the equivalent multi-head model: each key/value head's projection
    rows repeated for every query head of its group (query head i uses kv head i // group)."""
    config = model.config
    width, size = config.d_model, config.head_size
    group = config.n_heads // config.kv_heads
    state = dict(model.state_dict())
    for index in range(config.layers):
        for kind in ("weight", "bias"):
            name = f"blocks.{index}.attn.qkv.{kind}"
            if name not in state:
                continue
            packed = state[name]
            q, k, v = packed.split((width, config.kv_heads * size, config.kv_heads * size))

            def repeat(t: torch.Tensor) -> torch.Tensor:
                heads = t.reshape(config.kv_heads, size, *t.shape[1:])
                return heads.repeat_interleave(group, dim=0).reshape(width, *t.shape[1:])

            state[name] = torch.cat((q, repeat(k), repeat(v)))
    return state


@pytest.mark.parametrize("kv_heads", [2, 1])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"position_encoding": "rope", "qk_norm": True, "norm": "rmsnorm", "mlp": "swiglu"},
        {"position_encoding": "rope", "qk_norm": True, "bias": True, "tie_embeddings": False},
    ],
)
def test_grouped_query_attention_equals_multi_head_with_repeated_kv_heads(
    kv_heads: int, options: dict[str, Any]
) -> None:
    grouped = build(config_of(n_kv_heads=kv_heads, **options))
    perturb_norms(grouped)
    full = build(config_of(**options))
    assert full.blocks[0].attn.n_kv_heads == HEADS
    full.load_state_dict(repeated_heads_state(grouped))
    grouped.eval(), full.eval()
    tokens = torch.randint(0, VOCAB, (3, SEQ))
    with torch.no_grad():
        torch.testing.assert_close(grouped(tokens), full(tokens), atol=1e-5, rtol=0)
        maps_grouped = grouped.attention_probabilities(tokens, [0, 2], max_heads=HEADS)
        maps_full = full.attention_probabilities(tokens, [0, 2], max_heads=HEADS)
    for layer in (0, 2):
        torch.testing.assert_close(maps_grouped[layer], maps_full[layer], atol=1e-6, rtol=0)


def test_grouped_query_attention_has_smaller_key_value_projections() -> None:
    for kv_heads, rows in ((HEADS, 3 * D_MODEL), (2, 2 * D_MODEL), (1, D_MODEL + D_MODEL // 2)):
        model = build(config_of(n_kv_heads=kv_heads))
        assert model.blocks[0].attn.qkv.weight.shape == (rows, D_MODEL)


def test_grouped_query_attention_trains_with_dropout_and_bf16_autocast() -> None:
    config = config_of(
        n_kv_heads=2, dropout=0.1, norm="rmsnorm", mlp="swiglu", position_encoding="rope"
    )
    model = build(config).train()
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
        maps = model.attention_probabilities(tokens, [1], max_heads=2)
    assert torch.isfinite(logits).all()
    logits.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # the maps are computed in fp32 even under autocast
    assert maps[1].dtype == torch.float32
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 2, SEQ))


# -- attention maps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"n_kv_heads": 2, "qk_norm": True, "position_encoding": "rope"},
        {"n_kv_heads": 1, "qk_norm": True, "norm": "rmsnorm", "position_encoding": "rope"},
        {"n_kv_heads": 2, "qk_norm": True, "bias": True},
        {"qk_norm": True, "position_encoding": "rope"},
    ],
)
def test_attention_maps_reproduce_the_forward_pass(options: dict[str, Any]) -> None:
    """Probabilities times the values give the attention output the forward pass computed
    (captured at the input of the output projection) for every query head."""
    model = build(config_of(**options))
    perturb_norms(model)
    model.eval()
    config = model.config
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    captured: dict[int, torch.Tensor] = {}
    handles = [
        block.attn.proj.register_forward_pre_hook(
            lambda _m, inputs, index=index: captured.__setitem__(index, inputs[0])
        )
        for index, block in enumerate(model.blocks)
    ]
    hidden: dict[int, torch.Tensor] = {}
    handles += [
        block.attn.register_forward_pre_hook(
            lambda _m, inputs, index=index: hidden.__setitem__(index, inputs[0])
        )
        for index, block in enumerate(model.blocks)
    ]
    with torch.no_grad():
        model(tokens)
        maps = model.attention_probabilities(tokens, [0, 1, 2], max_heads=HEADS)
    for handle in handles:
        handle.remove()
    size, group = config.head_size, config.n_heads // config.kv_heads
    for index, block in enumerate(model.blocks):
        probabilities = maps[index]
        assert probabilities.shape == (2, HEADS, SEQ, SEQ)
        torch.testing.assert_close(probabilities.sum(-1), torch.ones(2, HEADS, SEQ))
        assert torch.all(probabilities.triu(1) == 0)
        # the values straight from the projection (no norm, no rotation touch them)
        values = block.attn.qkv(hidden[index])[..., D_MODEL + config.kv_heads * size :]
        values = values.view(2, SEQ, config.kv_heads, size).transpose(1, 2)
        values = values.repeat_interleave(group, dim=1)
        output = captured[index].view(2, SEQ, HEADS, size).transpose(1, 2)
        torch.testing.assert_close(probabilities @ values, output, atol=1e-5, rtol=1e-4)


def test_attention_maps_of_a_prefix_and_of_the_first_heads() -> None:
    model = build(config_of(n_kv_heads=2, qk_norm=True, position_encoding="rope")).eval()
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    with torch.no_grad():
        full = model.attention_probabilities(tokens, [1], max_heads=HEADS)[1]
        prefix = model.attention_probabilities(tokens[:, :7], [1], max_heads=3)[1]
    assert prefix.shape == (2, 3, 7, 7)
    torch.testing.assert_close(prefix, full[:, :3, :7, :7], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_qk_norm_normalises_each_head_before_rope(norm: str) -> None:
    model = build(config_of(qk_norm=True, norm=norm, position_encoding="rope", n_kv_heads=2))
    perturb_norms(model)
    attn = model.blocks[0].attn
    x = torch.randn(2, SEQ, D_MODEL)
    rotary = (model.rotary_cos, model.rotary_sin)
    with torch.no_grad():
        q, k, _ = attn.heads(x, rotary)
        size = model.config.head_size
        raw = attn.qkv(x)
        raw_q = raw[..., :D_MODEL].view(2, SEQ, HEADS, size).transpose(1, 2)
        raw_k = raw[..., D_MODEL : D_MODEL + 2 * size].view(2, SEQ, 2, size).transpose(1, 2)
        weight_q, weight_k = attn.q_norm.weight, attn.k_norm.weight
        if norm == "rmsnorm":
            normed_q = raw_q * torch.rsqrt(raw_q.pow(2).mean(-1, keepdim=True) + 1e-5) * weight_q
            normed_k = raw_k * torch.rsqrt(raw_k.pow(2).mean(-1, keepdim=True) + 1e-5) * weight_k
        else:
            normed_q = F.layer_norm(raw_q, (size,), weight_q)
            normed_k = F.layer_norm(raw_k, (size,), weight_k)
    assert weight_q.shape == (size,)  # one weight per channel of a head, shared by the heads
    torch.testing.assert_close(q, apply_rotary(normed_q, *rotary), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k, apply_rotary(normed_k, *rotary), atol=1e-5, rtol=1e-5)


# -- MLP and sizes -------------------------------------------------------------------------------


def test_mlp_kinds_compute_their_activation() -> None:
    x = torch.randn(2, 5, D_MODEL)
    for kind, activation in (
        ("gelu", lambda h: F.gelu(h, approximate="tanh")),
        ("relu2", lambda h: F.relu(h) ** 2),
    ):
        mlp = build(config_of(mlp=kind)).blocks[0].mlp
        with torch.no_grad():
            expected = mlp.proj(activation(mlp.fc(x)))
            torch.testing.assert_close(mlp(x), expected)
    mlp = build(config_of(mlp="swiglu")).blocks[0].mlp
    hidden = mlp.proj.in_features
    gate_weight, up_weight = mlp.fc.weight[:hidden], mlp.fc.weight[hidden:]
    with torch.no_grad():
        expected = mlp.proj(F.silu(x @ gate_weight.T) * (x @ up_weight.T))
        torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize(
    ("d_model", "ratio", "swiglu_hidden"),
    [(128, 4.0, 344), (32, 4.0, 88), (256, 4.0, 680), (128, 2.0, 168), (16, 0.25, 8)],
)
def test_swiglu_hidden_size_rule(d_model: int, ratio: float, swiglu_hidden: int) -> None:
    two_matrix = BaselineDecoderConfig(d_model=d_model, mlp_ratio=ratio).mlp_hidden
    assert two_matrix == int(ratio * d_model)
    swiglu = BaselineDecoderConfig(d_model=d_model, mlp_ratio=ratio, mlp="swiglu").mlp_hidden
    assert swiglu == swiglu_hidden and swiglu % 8 == 0
    assert abs(swiglu - 2 / 3 * ratio * d_model) <= 4 or swiglu == 8
    assert BaselineDecoderConfig(d_model=d_model, mlp_ratio=ratio, mlp="relu2").mlp_hidden == (
        two_matrix
    )


def parameters(**options: Any) -> int:
    config = BaselineDecoderConfig(d_model=128, n_heads=4, layers=4, **options)
    model = BaselineDecoder(config).build(vocab_size=8193, seq_len=64)
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_at_d_model_128() -> None:
    """The counts in docs/models.md (4 layers, 8193 tokens, 64 positions, tied head)."""
    d, hidden, swiglu_hidden, layers = 128, 512, 344, 4
    embeddings = 8193 * d
    positions = 64 * d

    def total(attention: int, mlp: int, norms_per_block: int, final: int, pos: bool) -> int:
        return (
            embeddings
            + (positions if pos else 0)
            + layers * (attention + mlp + norms_per_block)
            + final
        )

    mha, gqa2, mqa = 4 * d * d, 3 * d * d, 2 * d * d + 2 * d * 32
    gelu, swiglu = 2 * d * hidden, 3 * d * swiglu_hidden
    assert parameters() == total(mha, gelu, 2 * d, d, True) == 1_844_480
    assert parameters(mlp="relu2") == parameters()
    assert parameters(mlp="swiglu") == total(mha, swiglu, 2 * d, d, True) == 1_848_576
    assert parameters(n_kv_heads=2) == total(gqa2, gelu, 2 * d, d, True) == 1_778_944
    assert parameters(n_kv_heads=1) == total(mqa, gelu, 2 * d, d, True) == 1_746_176
    assert parameters(qk_norm=True) == total(mha, gelu, 2 * d + 2 * 32, d, True)
    assert parameters(norm="rmsnorm") == parameters()  # no biases either way by default
    assert parameters(norm="layernorm", bias=True) > parameters(norm="rmsnorm", bias=True)
    llama = {"norm": "rmsnorm", "mlp": "swiglu", "n_kv_heads": 2, "position_encoding": "rope"}
    assert parameters(**llama) == total(gqa2, swiglu, 2 * d, d, False) == 1_774_848


def test_flops_per_token_counts_every_query_head() -> None:
    for kv_heads in (HEADS, 2, 1):
        model = build(config_of(n_kv_heads=kv_heads, mlp="swiglu"))
        weights = sum(p.numel() for p in model.parameters())
        weights -= model.position_embedding.weight.numel()
        assert model.flops_per_token(SEQ) == 6 * weights + 12 * 3 * D_MODEL * SEQ


# -- in a real run -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "bias_keys"),
    [
        (
            {
                "norm": "rmsnorm",
                "mlp": "swiglu",
                "n_kv_heads": 1,
                "qk_norm": True,
                "position_encoding": "rope",
                "bias": True,
            },
            False,
        ),
        ({"mlp": "relu2", "n_kv_heads": 2, "bias": True}, True),
    ],
)
def test_a_real_run_logs_every_diagnostic(
    tmp_path: Path, model: dict[str, Any], bias_keys: bool
) -> None:
    """A few steps of the real pipeline with the console logger's diagnostics all on."""
    for module in ("baseline_text", "baseline_bpe", "baseline_holdout"):
        pytest.importorskip(module)
    from baseline.experiment.loading import experiment_from_data
    from baseline.pipeline import model_pipeline
    from baseline.plugins.discovery import default_plugins
    from baseline.testing import tiny_experiment_data

    data = tiny_experiment_data(tmp_path)
    data["model"].update(n_heads=2, layers=3, **model)
    data["train"].update(epochs=1, max_steps=6)
    data["logging"]["console"] = {
        **{f"enable_{d}": True for d in DIAGNOSTICS},
        "diagnostics_every_n_steps": 2,
        "attention_entropy_every_n_steps": 3,
        "attention_entropy_token_cap": 8,
    }
    plugins = default_plugins()
    result = model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    records = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    diagnostics = [r for r in records if r["phase"] == "diagnostics"]
    positions = ("first", "middle", "last")
    every_two = {f"{p}_{q}" for p in ("activation_norm", "ln_weight_grad_norm") for q in positions}
    if bias_keys:
        every_two |= {f"ln_bias_grad_norm_{q}" for q in positions}
    entropy = {f"attention_entropy_{q}" for q in positions}
    by_step = {r["step"]: set(r) - {"step", "tokens_seen", "epoch", "phase"} for r in diagnostics}
    assert by_step == {
        2: every_two | {"global_grad_norm"},
        3: entropy,
        4: every_two | {"global_grad_norm"},
        6: every_two | {"global_grad_norm"} | entropy,
    }
    assert all(math.isfinite(v) for r in diagnostics for k, v in r.items() if k in every_two)
    assert math.isfinite(result.final_metrics["val_loss"])
