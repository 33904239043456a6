"""End-to-end training runs on a tiny corpus: artifacts, resume, inference, data checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from baseline.errors import ConfigError, RunDirectoryError
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.registry import ComponentRegistry
from baseline.tools.inference import load_run


def run(registry: ComponentRegistry, data: dict[str, Any]):  # type: ignore[no-untyped-def]
    return model_pipeline(experiment_from_data(data, registry))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_writes_every_artifact(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    result = run(registry, tiny_data)
    run_dir = Path(tiny_data["run"]["artifacts_root"]) / "tiny"
    assert result.run_dir == run_dir
    for name in (
        "baseline_checkpoint.pt",
        "baseline_model.pt",
        "run_config.json",
        "inference_config.json",
        "metrics.jsonl",
        "tokenizer.json",
    ):
        assert (run_dir / name).is_file(), name
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]

    run_config = json.loads((run_dir / "run_config.json").read_text())
    assert run_config["seed"] == 7
    assert run_config["config"]["model"] == {
        "name": "baseline_decoder",
        "d_model": 32,
        "n_heads": 2,
        "layers": 2,
        "mlp_ratio": 4.0,
        "dropout": 0.0,
        "bias": False,
        "tie_embeddings": True,
        "init_std": 0.02,
        "position_encoding": "learned",
        "rope_base": 10000.0,
        "norm": "layernorm",
        "mlp": "gelu",
        "qk_norm": False,
    }
    assert run_config["versions"]["plugins"]["baseline-bpe"] == "0.1.0"
    assert run_config["versions"]["libraries"]["torch"].startswith("2.")
    assert experiment_from_data(run_config["config"], registry) == experiment_from_data(
        tiny_data, registry
    )

    metrics = read_metrics(run_dir)
    train = [m for m in metrics if m["phase"] == "train"]
    assert train and all(
        {"step", "tokens_seen", "train_loss", "tokens_per_second", "learning_rate"} <= set(m)
        for m in train
    )
    assert [m["step"] for m in train] == sorted(m["step"] for m in train)
    assert train[-1]["step"] == result.steps
    assert train[-1]["tokens_seen"] == result.steps * 8 * 16
    validation = [m for m in metrics if m["phase"] == "validation"]
    assert [m["epoch"] for m in validation] == [1, 2]
    assert all(
        m["val_perplexity"] == pytest.approx(2.718281828 ** m["val_loss"], rel=1e-6)
        for m in validation
    )
    assert validation[-1]["val_loss"] < validation[0]["val_loss"] < 6.0  # it learns
    assert result.final_metrics["val_loss"] == validation[-1]["val_loss"]


def test_inference_config_rebuilds_the_trained_model(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    result = run(registry, tiny_data)
    info = json.loads((result.run_dir / "inference_config.json").read_text())
    assert info["model"]["name"] == "baseline_decoder" and info["tokenizer"]["name"] == "bpe"
    assert info["vocab_size"] == 302 and info["seq_len"] == 16
    loaded = load_run(result.run_dir)
    ids = loaded.tokenizer.encode_batch(["ROMEO: But, soft!"])[0]
    assert loaded.tokenizer.decode(ids) == "ROMEO: But, soft!"
    tokens = torch.tensor([ids[:16]])
    state = torch.load(result.run_dir / "baseline_model.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in loaded.model.state_dict().items())
    checkpoint = torch.load(result.run_dir / "baseline_checkpoint.pt", weights_only=True)
    assert all(torch.equal(checkpoint["model"][k], v) for k, v in loaded.model.state_dict().items())
    logits = loaded.model(tokens)
    assert logits.shape == (1, tokens.shape[1], 302)


def test_existing_run_directory_is_not_overwritten(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    first = run(registry, tiny_data)
    before = (first.run_dir / "baseline_model.pt").read_bytes()
    with pytest.raises(
        RunDirectoryError, match="run directory already exists; resume it with --resume"
    ):
        run(registry, tiny_data)
    assert (first.run_dir / "baseline_model.pt").read_bytes() == before
    tiny_data["run"]["overwrite"] = True
    tiny_data["train"]["epochs"] = 1
    second = run(registry, tiny_data)
    assert second.steps < first.steps
    assert max(m["epoch"] for m in read_metrics(second.run_dir)) == 1


def test_resume_continues_exactly(
    registry: ComponentRegistry, tiny_data: dict[str, Any], tmp_path: Path
) -> None:
    tiny_data["train"].update(lr_schedule="constant", warmup_steps=0, epochs=2)
    tiny_data["model"]["dropout"] = 0.1  # resume must restore the RNG too
    straight = run(registry, tiny_data)
    straight_metrics = read_metrics(straight.run_dir)

    tiny_data["run"]["run_name"] = "halves"
    tiny_data["train"]["epochs"] = 1
    half = run(registry, tiny_data)
    assert half.steps * 2 == straight.steps
    tiny_data["train"]["epochs"] = 2
    tiny_data["run"]["resume_from_checkpoint"] = True
    resumed = run(registry, tiny_data)
    assert resumed.steps == straight.steps

    a = torch.load(straight.run_dir / "baseline_model.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "baseline_model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = lambda ms: [
        (m["step"], m["phase"], m.get("train_loss"), m.get("val_loss")) for m in ms
    ]
    assert losses(read_metrics(resumed.run_dir)) == losses(straight_metrics)


def test_resume_refuses_a_changed_model(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"]["epochs"] = 1
    run(registry, tiny_data)
    tiny_data["run"]["resume_from_checkpoint"] = True
    tiny_data["model"]["layers"] = 3
    tiny_data["train"]["seq_len"] = 12
    with pytest.raises(
        ConfigError,
        match=r"these keys differ from the checkpoint's config: model.layers, train.seq_len",
    ):
        run(registry, tiny_data)


def test_resume_without_checkpoint_starts_fresh(
    registry: ComponentRegistry, tiny_data: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    tiny_data["run"]["resume_from_checkpoint"] = True
    tiny_data["train"]["epochs"] = 1
    with caplog.at_level("INFO", logger="baseline"):
        result = run(registry, tiny_data)
    assert result.steps > 0
    assert "no checkpoint" in caplog.text


def test_too_little_data_for_a_batch(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"]["batch_size"] = 4096
    with pytest.raises(
        ConfigError, match=r"^train.batch_size: the training split gives \d+ windows"
    ):
        run(registry, tiny_data)


def test_seq_len_longer_than_the_data(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"]["seq_len"] = 100_000
    with pytest.raises(ConfigError, match=r"^train.seq_len: the training split has"):
        run(registry, tiny_data)


def test_split_without_validation_windows(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["split"]["train_fraction"] = 0.999
    tiny_data["train"]["seq_len"] = 40
    with pytest.raises(ConfigError, match=r"^split: the validation split has \d+ tokens"):
        run(registry, tiny_data)


def test_samples_at_validation_do_not_change_training(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    plain = run(registry, tiny_data)
    tiny_data["run"]["run_name"] = "with-samples"
    tiny_data["logging"].update(samples_per_validation=2, sample_tokens=12)
    sampled = run(registry, tiny_data)
    lines = [
        json.loads(line) for line in (sampled.run_dir / "samples.jsonl").read_text().splitlines()
    ]
    assert [line["step"] for line in lines] == [plain.steps // 2] * 2 + [plain.steps] * 2
    assert all(isinstance(line["text"], str) for line in lines)
    a = torch.load(plain.run_dir / "baseline_model.pt", weights_only=True)
    b = torch.load(sampled.run_dir / "baseline_model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_time_and_step_limits(registry: ComponentRegistry, tiny_data: dict[str, Any]) -> None:
    tiny_data["train"].pop("epochs")
    tiny_data["train"]["max_steps"] = 7
    result = run(registry, tiny_data)
    assert result.steps == 7
    metrics = read_metrics(result.run_dir)
    assert [m["step"] for m in metrics if m["phase"] == "validation"] == [7]
    tiny_data["run"]["run_name"] = "tokens"
    tiny_data["train"].update(max_steps=None, max_tokens=1000)
    tiny_data["train"].pop("max_steps")
    assert run(registry, tiny_data).tokens_seen == 8 * 128  # ceil(1000 / (8 * 16)) steps
    tiny_data["run"]["run_name"] = "time"
    tiny_data["train"].pop("max_tokens")
    tiny_data["train"]["max_time_s"] = 1.0
    timed = run(registry, tiny_data)
    assert timed.steps > 0
    assert (
        json.loads((timed.run_dir / "run_config.json").read_text())["config"]["train"]["max_time_s"]
        == 1.0
    )


def test_gradient_accumulation_matches_a_bigger_batch(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"].update(batch_size=8, epochs=1)
    tiny_data["model"]["dropout"] = 0.0
    big = run(registry, tiny_data)
    tiny_data["run"]["run_name"] = "accumulated"
    tiny_data["train"].update(batch_size=4, grad_accumulation_steps=2)
    accumulated = run(registry, tiny_data)
    assert accumulated.tokens_seen == big.tokens_seen and accumulated.steps == big.steps
    a = torch.load(big.run_dir / "baseline_model.pt", weights_only=True)
    b = torch.load(accumulated.run_dir / "baseline_model.pt", weights_only=True)
    # Same windows, same order, averaged gradients: equal up to float summation order.
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_second_run_reuses_the_token_cache(
    registry: ComponentRegistry, tiny_data: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    tiny_data["train"]["max_steps"] = 2
    with caplog.at_level("INFO", logger="baseline"):
        run(registry, tiny_data)
    assert "tokenized and cached" in caplog.text
    caplog.clear()
    tiny_data["run"]["run_name"] = "second"
    with caplog.at_level("INFO", logger="baseline"):
        run(registry, tiny_data)
    assert "loaded from the token cache, tokenization skipped" in caplog.text
    cache = Path(tiny_data["run"]["artifacts_root"]) / ".token_cache"
    streams = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(streams) == 1
    corpus = Path(tiny_data["dataset"]["path"])
    corpus.write_text(corpus.read_text() + "\n\nA new segment changes the key.")
    tiny_data["run"]["run_name"] = "third"
    run(registry, tiny_data)
    streams = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(streams) == 2


def test_global_grad_norm_is_logged(registry: ComponentRegistry, tiny_data: dict[str, Any]) -> None:
    result = run(registry, tiny_data)
    norms = [m["global_grad_norm"] for m in read_metrics(result.run_dir) if m["phase"] == "train"]
    assert norms and all(n > 0 for n in norms)


def test_compiled_training_matches_eager(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"].update(max_steps=3, epochs=1)
    eager = run(registry, tiny_data)
    tiny_data["run"]["run_name"] = "compiled"
    tiny_data["train"]["compile"] = True
    compiled = run(registry, tiny_data)
    a = [m["train_loss"] for m in read_metrics(eager.run_dir) if m["phase"] == "train"]
    b = [m["train_loss"] for m in read_metrics(compiled.run_dir) if m["phase"] == "train"]
    assert b == pytest.approx(a, rel=1e-4)


def test_a_logger_that_cannot_start_leaves_no_run_directory(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    import attrs

    from baseline.config import LoggerConfig
    from baseline.plugins.hookspecs import hookimpl
    from baseline.testing import in_process_plugins

    @attrs.frozen(kw_only=True)
    class RefusingConfig(LoggerConfig):
        refuse: bool = True

    class Refusing:
        def __init__(self, config: RefusingConfig) -> None:
            self.config = config

        def start(self, run: Any) -> Any:
            if self.config.refuse:
                raise ConfigError("no credentials", key_path="logging.refusing.refuse")
            from baseline.metrics.console_logger import ConsoleLogger, ConsoleLoggerConfig

            return ConsoleLogger(ConsoleLoggerConfig()).start(run)

    class Plugin:
        @hookimpl
        def baseline_register_loggers(self, register: Any) -> None:
            register("refusing", RefusingConfig, Refusing)

    plugins = in_process_plugins(Plugin())
    tiny_data["logging"]["provider"] = ["refusing"]
    tiny_data["train"]["epochs"] = 1
    with pytest.raises(ConfigError, match="no credentials"):
        model_pipeline(experiment_from_data(tiny_data, plugins.registry), plugins=plugins)
    run_dir = Path(tiny_data["run"]["artifacts_root"]) / "tiny"
    assert not run_dir.exists()
    # the retry, once the logger can start, is not refused for an existing directory
    tiny_data["logging"]["refusing"] = {"refuse": False}
    result = model_pipeline(experiment_from_data(tiny_data, plugins.registry), plugins=plugins)
    assert (result.run_dir / "baseline_model.pt").exists()


def test_num_threads_applies_to_its_run_only(
    registry: ComponentRegistry, tiny_data: dict[str, Any]
) -> None:
    import torch

    before = torch.get_num_threads()
    tiny_data["train"].update(max_steps=1, num_threads=max(1, before - 1) if before > 1 else 2)
    run(registry, tiny_data)
    assert torch.get_num_threads() == before
