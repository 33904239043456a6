"""``[run] init_from``: a run that starts from the weights and tokenizer of a trained run."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

import baseline.train.trainer
from baseline.data.lineage import weights_record_path
from baseline.errors import ConfigError
from baseline.experiment.loading import experiment_from_data
from baseline.experiment.validation import validate_experiment_config
from baseline.pipeline import RunResult, model_pipeline
from baseline.plugins.registry import ComponentRegistry
from baseline.runs.source_run import load_source_weights, read_source_run
from baseline.testing import SAMPLE_TEXTS, tiny_experiment_data

VOCAB_SIZE = 302  # the tiny experiment's bpe: 300 learned ids and 2 special ones


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], RunResult]:
    """A trained tiny run (two epochs) and its experiment data."""
    from baseline.plugins.discovery import default_plugins

    data = tiny_experiment_data(tmp_path_factory.mktemp("source"))
    data["run"]["run_name"] = "source"
    result = model_pipeline(experiment_from_data(data, default_plugins().registry))
    return data, result


def continued(source_data: dict[str, Any], result: RunResult, name: str) -> dict[str, Any]:
    """The source experiment with ``run.init_from`` set and another run name."""
    data = copy.deepcopy(source_data)
    data["run"].update(run_name=name, init_from=str(result.run_dir))
    return data


def other_corpus(directory: Path) -> Path:
    """A text like the source corpus, but another one (other numbers)."""
    path = directory / "other.txt"
    lines = [f"{text} {i}" for i in range(500, 560) for text in SAMPLE_TEXTS[:4]]
    path.write_text("\n\n".join(lines), encoding="utf-8")
    return path


class CapturingTrainer(baseline.train.trainer.Trainer):
    """Keeps a copy of the model it is given (before any step or resume) and after setup."""

    given: ClassVar[dict[str, torch.Tensor]] = {}
    after_setup: ClassVar[dict[str, torch.Tensor]] = {}
    start_step: ClassVar[int] = -1

    def __init__(self, config: Any, model: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        CapturingTrainer.given = {k: v.detach().clone() for k, v in model.state_dict().items()}
        super().__init__(config, model, *args, **kwargs)
        CapturingTrainer.after_setup = {
            k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
        }
        CapturingTrainer.start_step = self.step


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_model_starts_from_the_source_weights_on_another_corpus(
    registry: ComponentRegistry,
    source: tuple[dict[str, Any], RunResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source_data, result = source
    data = continued(source_data, result, "finetune")
    data["dataset"]["path"] = str(other_corpus(tmp_path))
    data["run"]["artifacts_root"] = str(tmp_path / "runs")
    data["train"].update(max_steps=3, epochs=None)
    data["logging"]["log_every_n_steps"] = 1
    monkeypatch.setattr(baseline.train.trainer, "Trainer", CapturingTrainer)
    with caplog.at_level("INFO", logger="baseline"):
        finetuned = model_pipeline(experiment_from_data(data, registry))

    # Bit for bit the source's final weights, before the first step.
    source_weights = torch.load(result.run_dir / "baseline_model.pt", weights_only=True)
    assert same_weights(CapturingTrainer.given, source_weights)
    assert finetuned.steps == 3

    # Its first logged loss is at the source's level, far below a fresh model's ln(vocab).
    first = next(m for m in read_metrics(finetuned.run_dir) if m["phase"] == "train")
    assert first["step"] == 1
    source_train = [m for m in read_metrics(result.run_dir) if m["phase"] == "train"]
    fresh_level = math.log(VOCAB_SIZE)
    assert source_train[0]["train_loss"] > fresh_level - 0.3  # what a fresh model starts at
    assert first["train_loss"] < source_train[-1]["train_loss"] + 0.5 < fresh_level - 2.0

    # The tokenizer is the source run's file, loaded, not fitted on the new corpus.
    assert "reused from" in caplog.text and "fitted on another corpus" in caplog.text
    assert "tokenizer: trained" not in caplog.text
    assert (finetuned.run_dir / "tokenizer.json").read_bytes() == (
        result.run_dir / "tokenizer.json"
    ).read_bytes()
    assert "optimizer starts fresh" in caplog.text

    run_config = json.loads((finetuned.run_dir / "run_config.json").read_text())
    assert run_config["config"]["run"]["init_from"] == str(result.run_dir)
    assert run_config["init_from"] == {
        "run_dir": str(result.run_dir),
        "weights": str(result.run_dir / "baseline_model.pt"),
        "from_checkpoint": False,
        "tokenizer_file": str(result.run_dir / "tokenizer.json"),
    }
    record = json.loads(weights_record_path(finetuned.run_dir).read_text())
    assert record["init_from"] == str(result.run_dir.resolve())
    assert [r["run_dir"] for r in record["inherited"]] == [str(result.run_dir.resolve())]


def test_a_relative_init_from_resolves_against_the_experiment_file(
    registry: ComponentRegistry, source: tuple[dict[str, Any], RunResult]
) -> None:
    source_data, result = source
    data = continued(source_data, result, "relative")
    data["run"]["init_from"] = "runs/source"
    base_dir = result.run_dir.parent.parent  # the directory of the source's experiment
    config = experiment_from_data(data, registry, base_dir=base_dir)
    assert Path(str(config.run.init_from)) == result.run_dir.resolve()
    validate_experiment_config(config, registry)


def test_a_different_model_config_is_refused_key_by_key(
    registry: ComponentRegistry, source: tuple[dict[str, Any], RunResult]
) -> None:
    data = continued(*source, "bigger")
    data["model"].update(d_model=64, layers=3)
    with pytest.raises(ConfigError) as caught:
        validate_experiment_config(experiment_from_data(data, registry))
    message = str(caught.value)
    assert message.startswith("run.init_from: ")
    assert "was trained with another [model]" in message
    assert "model.d_model (source 32, this run 64), model.layers (source 2, this run 3)" in message


def test_a_different_tokenizer_config_is_refused_but_its_path_may_differ(
    registry: ComponentRegistry, source: tuple[dict[str, Any], RunResult], tmp_path: Path
) -> None:
    data = continued(*source, "other-tokenizer")
    data["tokenizer"]["vocab_path"] = str(tmp_path / "unused.json")  # not used: allowed
    validate_experiment_config(experiment_from_data(data, registry))
    data["tokenizer"]["base_vocab_size"] = 400
    with pytest.raises(ConfigError) as caught:
        validate_experiment_config(experiment_from_data(data, registry))
    message = str(caught.value)
    assert "this run reuses the tokenizer of" in message
    assert "tokenizer.base_vocab_size (source 300, this run 400)" in message
    assert "vocab_path" not in message.split("these keys differ")[1].split(";")[0]


def test_a_source_that_is_missing_or_unusable_is_one_clear_error(
    registry: ComponentRegistry, source: tuple[dict[str, Any], RunResult], tmp_path: Path
) -> None:
    source_data, result = source

    def refused(init_from: Path) -> str:
        data = continued(source_data, result, "x")
        data["run"]["init_from"] = str(init_from)
        with pytest.raises(ConfigError) as caught:
            validate_experiment_config(experiment_from_data(data, registry))
        return str(caught.value)

    assert "does not exist; point it at the directory of a trained run" in refused(
        tmp_path / "nope"
    )
    (tmp_path / "empty").mkdir()
    assert "is not a run directory (no run_config.json)" in refused(tmp_path / "empty")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(result.run_dir / "run_config.json", bare)
    assert "has no weights: neither a final model (baseline_model.pt) nor a checkpoint" in (
        refused(bare)
    )
    shutil.copy(result.run_dir / "baseline_checkpoint.pt", bare)
    assert "has no tokenizer file" in refused(bare)

    data = continued(source_data, result, "source")  # its own directory
    with pytest.raises(ConfigError, match="is this run's own directory"):
        validate_experiment_config(experiment_from_data(data, registry))


def test_an_unfinished_source_gives_its_newest_checkpoint(
    registry: ComponentRegistry, source: tuple[dict[str, Any], RunResult], tmp_path: Path
) -> None:
    _, result = source
    unfinished = tmp_path / "unfinished"
    shutil.copytree(result.run_dir, unfinished)
    (unfinished / "baseline_model.pt").unlink()
    (unfinished / "inference_config.json").unlink()
    found = read_source_run(unfinished)
    assert found.from_checkpoint and found.weights == unfinished / "baseline_checkpoint.pt"
    assert found.tokenizer_file == unfinished / "tokenizer.json"  # from run_config.json

    config = experiment_from_data(source[0], registry)
    model = registry.get("model", "baseline_decoder").create(config.model).build(VOCAB_SIZE, 16)
    message = load_source_weights(model, found, 16)
    checkpoint = torch.load(unfinished / "baseline_checkpoint.pt", weights_only=True)
    assert same_weights(model.state_dict(), checkpoint["model"])
    assert f"using the checkpoint at step {checkpoint['step']} (the run did not finish)" in message

    other = registry.get("model", "baseline_decoder").create(config.model).build(VOCAB_SIZE, 24)
    with pytest.raises(ConfigError, match=r"do not fit this model: .*train.seq_len is 16"):
        load_source_weights(other, found, 24)  # learned positions: another table size


def test_the_same_corpus_with_a_split_whose_validation_the_source_trained_on_is_refused(
    registry: ComponentRegistry, source: tuple[dict[str, Any], RunResult]
) -> None:
    data = continued(*source, "leaky")
    data["split"]["train_fraction"] = 0.6  # segments 60-80 % were the source's training text
    with pytest.raises(ConfigError) as caught:
        model_pipeline(experiment_from_data(data, registry))
    message = str(caught.value)
    assert "was fitted on a different split of this dataset" in message
    assert "validation segments were in its training text" in message
    assert "give this run the source run's [split]" in message
    assert not (Path(data["run"]["artifacts_root"]) / "leaky").exists()


def test_resume_wins_over_init_from(
    registry: ComponentRegistry,
    source: tuple[dict[str, Any], RunResult],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source_data, result = source
    data = continued(source_data, result, "resumed")
    data["train"].update(max_steps=3, epochs=None)
    monkeypatch.setattr(baseline.train.trainer, "Trainer", CapturingTrainer)
    with caplog.at_level("INFO", logger="baseline"):
        first = model_pipeline(experiment_from_data(data, registry))
    source_weights = torch.load(result.run_dir / "baseline_model.pt", weights_only=True)
    assert same_weights(CapturingTrainer.given, source_weights)
    assert "fitted on this split's training segments" in caplog.text  # same corpus and split
    checkpoint = torch.load(first.run_dir / "baseline_checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 3

    caplog.clear()
    data["train"]["max_steps"] = 5
    data["run"]["resume_from_checkpoint"] = True
    with caplog.at_level("INFO", logger="baseline"):
        resumed = model_pipeline(experiment_from_data(data, registry))
    assert "run.init_from: not applied, the run resumes from its own checkpoint" in caplog.text
    assert not same_weights(CapturingTrainer.given, source_weights)
    assert CapturingTrainer.start_step == 3
    assert same_weights(CapturingTrainer.after_setup, checkpoint["model"])
    assert resumed.steps == 5


@pytest.mark.parametrize("value", [3, ["a"], "", "a\x00b", "~/no-such-run", "relative/none"])
def test_any_init_from_value_loads_or_is_one_config_error(
    registry: ComponentRegistry, tmp_path: Path, value: Any
) -> None:
    data = tiny_experiment_data(tmp_path)
    data["run"]["init_from"] = value
    with pytest.raises(ConfigError) as caught:
        config = experiment_from_data(data, registry, base_dir=tmp_path)
        validate_experiment_config(config, registry)
    assert "\n" not in str(caught.value) and "init_from" in str(caught.value)


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_a_resumed_init_from_run_needs_nothing_of_its_source(
    registry: ComponentRegistry,
    source: tuple[dict[str, Any], RunResult],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    parallelism: str,
) -> None:
    """The source run may be moved or deleted once the run has a checkpoint of its own: the
    resume reads neither its weights nor its tokenizer, and continues exactly."""
    source_data, result = source
    moved = tmp_path / "moved-source"
    shutil.copytree(result.run_dir, moved)
    data = continued(source_data, result, "straight")
    data["run"].update(artifacts_root=str(tmp_path / "runs"), init_from=str(moved))
    data["train"].update(
        lr_schedule="constant", warmup_steps=0, epochs=2, parallelism=parallelism, num_threads=1
    )
    straight = model_pipeline(experiment_from_data(data, registry))

    data["run"]["run_name"] = "halves"
    data["train"]["epochs"] = 1
    half = model_pipeline(experiment_from_data(data, registry))
    assert half.steps * 2 == straight.steps
    run_config = json.loads((half.run_dir / "run_config.json").read_text())
    record = json.loads(weights_record_path(half.run_dir).read_text())
    shutil.rmtree(moved)

    data["train"]["epochs"] = 2
    data["run"]["resume_from_checkpoint"] = True
    with caplog.at_level("INFO", logger="baseline"):
        config = experiment_from_data(data, registry)
        validate_experiment_config(config, registry)
        resumed = model_pipeline(config)
    assert resumed.steps == straight.steps
    assert "run.init_from: not applied, the run resumes from its own checkpoint" in caplog.text
    assert f"tokenizer: loaded from {half.run_dir / 'tokenizer.json'}" in caplog.text
    a = torch.load(straight.run_dir / "baseline_model.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "baseline_model.pt", weights_only=True)
    assert same_weights(a, b)
    losses = lambda ms: [
        (m["step"], m["phase"], m.get("train_loss"), m.get("val_loss")) for m in ms
    ]
    assert losses(read_metrics(resumed.run_dir)) == losses(read_metrics(straight.run_dir))
    # What the run records of its source is kept, although the source is gone.
    assert (
        json.loads((half.run_dir / "run_config.json").read_text())["init_from"]
        == (run_config["init_from"])
    )
    kept = json.loads(weights_record_path(half.run_dir).read_text())
    assert (kept["init_from"], kept["inherited"]) == (record["init_from"], record["inherited"])

    # A new run from the gone source is still one clear error.
    data["run"].update(run_name="fresh", resume_from_checkpoint=False)
    with pytest.raises(ConfigError, match="does not exist"):
        validate_experiment_config(experiment_from_data(data, registry), registry)
