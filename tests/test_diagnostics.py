"""Training diagnostics: computed by the core on their cadence, routed to the loggers that ask.

A ``recorder`` logger (a real logger plugin registered in-process) writes what it receives to
``recorded.jsonl`` in the run directory, so tests can check exactly what each logger got.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from core_support import write_toml
from hypothesis import given, settings
from hypothesis import strategies as st

from baseline.cli import main
from baseline.config import DIAGNOSTICS, DiagnosticsLoggerConfig, MetricsRequest, ModelConfig
from baseline.errors import ConfigError, PluginError
from baseline.experiment.loading import experiment_from_data
from baseline.experiment.validation import validate_experiment_config
from baseline.metrics.diagnostics import LayerDiagnostics, entropy_bounds, mean_entropy
from baseline.metrics.router import MetricsPlan, MetricsRouter, diagnostic_of
from baseline.pipeline import model_pipeline
from baseline.plugins.hookspecs import hookimpl
from baseline.plugins.protocols import MetricRecord, RunInfo
from baseline.testing import in_process_plugins, using_plugins
from baseline_decoder import BaselineDecoder, BaselineDecoderConfig

ALL_ON = {f"enable_{d}": True for d in DIAGNOSTICS}
LAYER_KEYS = {
    "activation_norms": ["activation_norm_first", "activation_norm_middle", "activation_norm_last"],
    "ln_grad_norms": [
        "ln_weight_grad_norm_first",
        "ln_weight_grad_norm_middle",
        "ln_weight_grad_norm_last",
    ],
    "attention_entropy": [
        "attention_entropy_first",
        "attention_entropy_middle",
        "attention_entropy_last",
    ],
    "global_grad_norm": ["global_grad_norm"],
}


@attrs.frozen(kw_only=True)
class RecorderConfig(DiagnosticsLoggerConfig):
    """Settings of the test ``recorder`` logger."""


class RecorderSession:
    def __init__(self, run: RunInfo) -> None:
        self.path = run.run_dir / "recorded.jsonl"

    def log(self, record: MetricRecord) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": record.step, "phase": record.phase, **record.values}))
            handle.write("\n")

    def finish(self, exit_code: int) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"finished": exit_code}) + "\n")


class Recorder:
    def __init__(self, config: RecorderConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> RecorderSession:
        return RecorderSession(run)


@attrs.frozen(kw_only=True)
class PlainModelConfig(ModelConfig):
    """A model whose adapter declares no diagnostics."""


class PlainModel:
    def __init__(self, config: PlainModelConfig) -> None:
        self.config = config

    def build(self, vocab_size: int, seq_len: int) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Embedding(vocab_size, 16), torch.nn.Linear(16, vocab_size)
        )


class TestPlugins:
    @hookimpl
    def baseline_register_loggers(self, register: Any) -> None:
        register("recorder", RecorderConfig, Recorder)

    @hookimpl
    def baseline_register_models(self, register: Any) -> None:
        register("plain_model", PlainModelConfig, PlainModel)


PLUGINS = in_process_plugins(TestPlugins())


def run(data: dict[str, Any]) -> Path:
    config = experiment_from_data(data, PLUGINS.registry)
    return model_pipeline(config, plugins=PLUGINS).run_dir


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def steps_with(records: list[dict[str, Any]], phase: str, key: str) -> list[int]:
    return [r["step"] for r in records if r.get("phase") == phase and key in r]


# -- routing ---------------------------------------------------------------------------------

requests = st.builds(
    MetricsRequest,
    log_every_n_steps=st.integers(1, 7),
    diagnostics=st.frozensets(st.sampled_from(DIAGNOSTICS)),
    diagnostics_every_n_steps=st.integers(1, 7),
    attention_entropy_every_n_steps=st.integers(1, 7),
    val_every_n_steps=st.integers(0, 7),
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), requests, min_size=1), st.integers(1, 30))
def test_router_gives_each_logger_exactly_its_request(
    by_name: dict[str, MetricsRequest], step: int
) -> None:
    plan = MetricsPlan(by_name, core_log_every_n_steps=5)
    received: dict[str, list[MetricRecord]] = {name: [] for name in by_name}
    everything: list[MetricRecord] = []
    router = MetricsRouter(plan, {n: received[n].append for n in by_name}, everything.append)

    due = plan.diagnostics_due(step)
    values = {key: 1.0 for d in due for key in LAYER_KEYS[d]}
    if values:
        router.diagnostics(MetricRecord(step, 0, 1, "diagnostics", values))
    for cadence in plan.train_cadences:
        if step % cadence == 0:
            values_ = {"train_loss": 1.0, "global_grad_norm": 2.0}
            router.train(MetricRecord(step, 0, 1, "train", values_), cadence)
    if plan.validation_due(step):
        router.validation(MetricRecord(step, 0, 1, "validation", {"val_loss": 1.0}), periodic=True)

    for name, request in by_name.items():
        got = received[name]
        trains = [r for r in got if r.phase == "train"]
        assert len(trains) == (step % request.log_every_n_steps == 0)
        # global_grad_norm reaches loggers on its own cadence only, never twice in a step
        assert all("global_grad_norm" not in r.values for r in trains)
        keys = {k for r in got if r.phase == "diagnostics" for k in r.values}
        assert {diagnostic_of(k) for k in keys} == request.diagnostics_due(step)
        validations = [r for r in got if r.phase == "validation"]
        assert len(validations) == request.validation_due(step)
    # metrics.jsonl gets every diagnostic computed, and train records at the core cadence only
    assert {k for r in everything if r.phase == "diagnostics" for k in r.values} == set(values)
    assert sum(r.phase == "train" for r in everything) == (step % 5 == 0)


# -- the measurements themselves ----------------------------------------------------------------


def decoder(**fields: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    config = BaselineDecoderConfig(d_model=32, n_heads=4, layers=3, **fields)
    return BaselineDecoder(config).build(vocab_size=50, seq_len=24)


def test_attention_maps_are_causal_distributions_and_prefix_exact() -> None:
    model = decoder(position_encoding="rope").eval()
    tokens = torch.randint(0, 50, (2, 24))
    with torch.no_grad():
        full = model.attention_probabilities(tokens, [0, 1, 2], max_heads=4)
        prefix = model.attention_probabilities(tokens[:, :10], [1], max_heads=2)
    assert set(full) == {0, 1, 2} and set(prefix) == {1}
    maps = full[1]
    assert maps.shape == (2, 4, 24, 24)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 4, 24))
    assert torch.all(maps.triu(1) == 0)
    # causal attention of a prefix is the top-left block of the full window's map
    torch.testing.assert_close(prefix[1], maps[:, :2, :10, :10], atol=1e-6, rtol=1e-5)


def test_attention_maps_match_the_fused_attention_output() -> None:
    """Probabilities times values reproduce scaled_dot_product_attention of the first layer."""
    model = decoder().eval()
    tokens = torch.randint(0, 50, (1, 16))
    block = model.blocks[0]
    with torch.no_grad():
        x, _ = model._embed(tokens)
        h = block.ln_attn(x)
        probabilities = model.attention_probabilities(tokens, [0], max_heads=4)[0]
        q, k, v = block.attn.qkv(h).split(32, dim=2)
        v = v.view(1, 16, 4, 8).transpose(1, 2)
        q, k = (t.view(1, 16, 4, 8).transpose(1, 2) for t in (q, k))
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(probabilities @ v, expected, atol=1e-5, rtol=1e-4)


def test_entropy_of_uniform_causal_attention_is_the_upper_bound() -> None:
    steps = 12
    uniform = torch.tril(torch.ones(steps, steps))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    assert mean_entropy(uniform) == pytest.approx(entropy_bounds(steps)[1])
    assert mean_entropy(torch.eye(steps)) == pytest.approx(0.0, abs=1e-6)


def test_activation_and_ln_grad_norms_match_a_direct_computation() -> None:
    model = decoder(bias=True)
    probe = LayerDiagnostics(model, frozenset(DIAGNOSTICS))
    tokens = torch.randint(0, 50, (3, 20))
    norms = probe.activation_norms(tokens)
    assert model.training  # restored after the eval-mode pass
    with torch.no_grad():
        x, rotary = model.eval()._embed(tokens)
        hidden = []
        for block in model.blocks:
            x = block(x, rotary)
            hidden.append(x.norm(dim=-1).mean().item())
    model.train()
    assert norms == pytest.approx(
        {
            "activation_norm_first": hidden[0],
            "activation_norm_middle": hidden[1],
            "activation_norm_last": hidden[2],
        },
        rel=1e-5,
    )

    model(tokens).sum().backward()
    grads = probe.ln_grad_norms()
    last = model.blocks[2]
    expected = math.sqrt(last.ln_attn.weight.grad.norm() ** 2 + last.ln_mlp.weight.grad.norm() ** 2)
    assert grads["ln_weight_grad_norm_last"] == pytest.approx(expected, rel=1e-5)
    assert set(grads) == {
        f"ln_{kind}_grad_norm_{p}"
        for kind in ("weight", "bias")
        for p in ("first", "middle", "last")
    }
    # without biases in the norms there is nothing to report for them
    unbiased = decoder(bias=False)
    unbiased(tokens).sum().backward()
    assert set(LayerDiagnostics(unbiased, frozenset({"ln_grad_norms"})).ln_grad_norms()) == set(
        LAYER_KEYS["ln_grad_norms"]
    )


def test_a_module_without_layers_is_refused_when_training_starts() -> None:
    plain = PlainModel(PlainModelConfig()).build(10, 8)
    with pytest.raises(PluginError, match="no diagnostic_layers"):
        LayerDiagnostics(plain, frozenset({"activation_norms"}))
    LayerDiagnostics(plain, frozenset({"global_grad_norm"}))  # needs no cooperation


# -- in training --------------------------------------------------------------------------------


def with_recorder(data: dict[str, Any], **recorder: Any) -> dict[str, Any]:
    data["logging"] = {"provider": ["recorder"], "log_every_n_steps": 2, "recorder": recorder}
    return data


def test_each_diagnostic_on_exactly_its_cadence(tiny_data: dict[str, Any]) -> None:
    tiny_data["train"]["epochs"] = 1
    run_dir = run(
        with_recorder(
            tiny_data,
            **ALL_ON,
            log_every_n_steps=3,
            diagnostics_every_n_steps=2,
            attention_entropy_every_n_steps=5,
            attention_entropy_token_cap=8,
            val_every_n_steps=4,
        )
    )
    got = read(run_dir / "recorded.jsonl")
    last = max(r.get("step", 0) for r in got)
    assert last > 10
    steps = range(1, last + 1)
    for key in LAYER_KEYS["activation_norms"] + LAYER_KEYS["ln_grad_norms"] + ["global_grad_norm"]:
        assert steps_with(got, "diagnostics", key) == [s for s in steps if s % 2 == 0], key
    for key in LAYER_KEYS["attention_entropy"]:
        assert steps_with(got, "diagnostics", key) == [s for s in steps if s % 5 == 0]
    assert steps_with(got, "train", "train_loss") == [s for s in steps if s % 3 == 0 or s == last]
    periodic = [s for s in steps if s % 4 == 0 and s != last]
    assert steps_with(got, "validation", "val_loss") == [*periodic, last]
    assert got[-1] == {"finished": 0}
    low, high = entropy_bounds(8)
    entropies = [r[k] for r in got for k in LAYER_KEYS["attention_entropy"] if k in r]
    assert all(low <= e <= high + 1e-6 for e in entropies)

    # metrics.jsonl has the core cadence (2) and every diagnostic and validation computed
    metrics = read(run_dir / "metrics.jsonl")
    assert steps_with(metrics, "train", "train_loss") == [
        s for s in steps if s % 2 == 0 or s == last
    ]
    assert steps_with(metrics, "diagnostics", "activation_norm_first") == [
        s for s in steps if s % 2 == 0
    ]
    assert steps_with(metrics, "validation", "val_loss") == [*periodic, last]
    train = [r for r in got if r.get("phase") == "train"]
    assert all(r["train_perplexity"] == pytest.approx(math.exp(r["train_loss"])) for r in train)
    assert all(r["step_time_ms"] > 0 for r in train)
    assert all("peak_memory_gib" not in r for r in train)  # CPU run


def test_diagnostics_off_means_absent_and_nothing_extra_is_computed(
    tiny_data: dict[str, Any],
) -> None:
    tiny_data["train"]["epochs"] = 1
    run_dir = run(with_recorder(tiny_data, diagnostics_every_n_steps=1))
    got = read(run_dir / "recorded.jsonl")
    metrics = read(run_dir / "metrics.jsonl")
    assert not [r for r in got + metrics if r.get("phase") == "diagnostics"]
    # no periodic validation by default: only the end of the epoch
    assert len([r for r in metrics if r["phase"] == "validation"]) == 1


def test_diagnostics_do_not_change_training(tiny_data: dict[str, Any]) -> None:
    tiny_data["model"]["dropout"] = 0.1  # the eval-mode passes must not draw random numbers
    tiny_data["train"]["epochs"] = 1
    plain = run(with_recorder(tiny_data))
    tiny_data["run"]["run_name"] = "diagnosed"
    diagnosed = run(
        with_recorder(
            tiny_data,
            **ALL_ON,
            diagnostics_every_n_steps=1,
            attention_entropy_every_n_steps=1,
            val_every_n_steps=3,
        )
    )
    a = torch.load(plain / "baseline_model.pt", weights_only=True)
    b = torch.load(diagnosed / "baseline_model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_loggers_with_their_own_cadences_survive_a_resume(
    tiny_data: dict[str, Any],
) -> None:
    """Loss means of every cadence continue across a resume exactly as without one."""
    tiny_data["train"].update(lr_schedule="constant", warmup_steps=0, epochs=2)
    tiny_data["logging"] = {
        "provider": ["recorder", "console"],
        "log_every_n_steps": 2,
        "recorder": {"log_every_n_steps": 7, **ALL_ON, "diagnostics_every_n_steps": 3},
        "console": {"log_every_n_steps": 4, "progress_bar": False},
    }
    straight = read(run(tiny_data) / "recorded.jsonl")
    tiny_data["run"]["run_name"] = "halves"
    tiny_data["train"]["epochs"] = 1
    run(tiny_data)
    tiny_data["train"]["epochs"] = 2
    tiny_data["run"]["resume_from_checkpoint"] = True
    resumed = read(run(tiny_data) / "recorded.jsonl")
    losses = lambda records: [
        (r["step"], r.get("train_loss"), r.get("global_grad_norm"))
        for r in records
        if r.get("phase") in ("train", "diagnostics")
    ]
    assert losses(resumed) == losses(straight)
    # step time and throughput cover the same steps, also in the first window after resuming
    tokens_per_step = tiny_data["train"]["batch_size"] * tiny_data["train"]["seq_len"]
    for record in resumed:
        if record.get("phase") == "train":
            per_step = record["step_time_ms"] / 1000 * record["tokens_per_second"]
            assert per_step == pytest.approx(tokens_per_step, rel=1e-6)


# -- validation-time errors -------------------------------------------------------------------


def test_a_model_that_cannot_provide_a_diagnostic_is_refused_at_validation(
    tiny_data: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_data["model"] = {"name": "plain_model"}
    with_recorder(tiny_data, enable_attention_entropy=True)
    config = experiment_from_data(tiny_data, PLUGINS.registry)
    with pytest.raises(ConfigError) as raised:
        validate_experiment_config(config, PLUGINS.registry)
    assert raised.value.key_path == "logging.recorder.enable_attention_entropy"
    assert "cannot provide attention entropy" in str(raised.value)

    # the CLI says it in one line with the file and key, exit code 2, nothing written
    path = write_toml(tmp_path / "exp.toml", tiny_data)
    with using_plugins(TestPlugins()):
        code = main(["run", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert (
        err[-1].startswith("error: ")
        and "exp.toml: logging.recorder.enable_attention_entropy" in err[-1]
    )
    assert not (tmp_path / "runs").exists()

    # global_grad_norm needs nothing from the model
    tiny_data["logging"]["recorder"] = {"enable_global_grad_norm": True}
    validate_experiment_config(experiment_from_data(tiny_data, PLUGINS.registry), PLUGINS.registry)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("diagnostics_every_n_steps", 0, "must be >= 1"),
        ("val_every_n_steps", -1, "must be >= 0"),
        ("attention_entropy_token_cap", 1, "must be >= 2"),
        ("attention_entropy_head_cap", 0, "must be >= 1"),
    ],
)
def test_bad_cadences_name_their_key(
    tiny_data: dict[str, Any], field: str, value: int, message: str
) -> None:
    tiny_data["logging"]["console"] = {field: value}
    with pytest.raises(ConfigError) as raised:
        experiment_from_data(tiny_data, PLUGINS.registry)
    assert raised.value.key_path == f"logging.console.{field}"
    assert message in str(raised.value)


def test_loggers_must_sample_attention_entropy_alike(tiny_data: dict[str, Any]) -> None:
    tiny_data["logging"] = {
        "provider": ["recorder", "console"],
        "recorder": {"enable_attention_entropy": True, "attention_entropy_token_cap": 16},
        "console": {"enable_attention_entropy": True},
    }
    config = experiment_from_data(tiny_data, PLUGINS.registry)
    with pytest.raises(ConfigError) as raised:
        validate_experiment_config(config, PLUGINS.registry)
    assert raised.value.key_path == "logging.console.attention_entropy_token_cap"
    assert "give both the same caps" in str(raised.value)


class WrongProbeModel(torch.nn.Module):
    """Layers and an attention probe that leaves out a requested layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(20, 8)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(3))

    def diagnostic_layers(self) -> list[torch.nn.Module]:
        return list(self.layers)

    def attention_probabilities(
        self, tokens: torch.Tensor, layers: Any, max_heads: int
    ) -> dict[int, torch.Tensor]:
        steps = tokens.size(1)
        return {0: torch.full((tokens.size(0), 1, steps, steps), 1.0 / steps)}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)
        for layer in self.layers:
            x = layer(x)
        return x


def test_a_probe_that_returns_the_wrong_maps_is_a_plugin_error() -> None:
    with pytest.raises(PluginError, match="no LayerNorm or RMSNorm submodule"):
        LayerDiagnostics(WrongProbeModel(), frozenset({"ln_grad_norms"}))
    wanted = frozenset({"activation_norms", "attention_entropy"})
    probe = LayerDiagnostics(WrongProbeModel(), wanted, model_name="model 'x'")
    tokens = torch.randint(0, 20, (2, 6))
    assert set(probe.activation_norms(tokens)) == set(LAYER_KEYS["activation_norms"])
    with pytest.raises(PluginError, match=r"model 'x': attention_probabilities\(\) returned None"):
        probe.attention_entropy(tokens, head_cap=2, token_cap=4)


def test_console_prints_each_validation_once() -> None:
    import io

    from rich.console import Console

    from baseline.metrics.console_logger import ConsoleLoggerConfig, ConsoleSession

    output = io.StringIO()
    info = RunInfo(
        project_name="p",
        run_name="r",
        run_dir=Path("."),
        config={},
        epochs=None,
        steps_per_epoch=100,
        total_steps=None,
    )
    session = ConsoleSession(info, ConsoleLoggerConfig(), Console(file=output, width=200))
    validation = {"val_loss": 1.5, "val_perplexity": 4.48, "val_bpb": 2.0}
    session.log(MetricRecord(5, 50, 1, "validation", validation))  # periodic
    session.log(MetricRecord(6, 60, 1, "train", {"train_loss": 2.0}))
    # a time limit ends training at step 7: validation, then the epoch summary
    session.log(MetricRecord(7, 70, 1, "validation", validation))
    session.log(MetricRecord(7, 70, 1, "epoch", {"train_loss_epoch": 2.0, **validation}))
    session.finish(0)
    text = output.getvalue()
    assert text.count("step 5 validation: val loss 1.5000") == 1
    assert "step 7 validation" not in text
    assert text.count("val loss 1.5000") == 2  # the periodic line and the epoch line
