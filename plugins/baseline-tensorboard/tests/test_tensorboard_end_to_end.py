"""Real training runs with ``logging.provider = ["tensorboard"]``, read back with TensorBoard's
own event reader and compared with ``metrics.jsonl``.

Needs the standard plugins (local_text, bpe, baseline_decoder, holdout); the nox ``plugin``
session installs this plugin alone with the core, and then these tests are skipped.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

pytest.importorskip("baseline_text")
pytest.importorskip("baseline_bpe")
pytest.importorskip("baseline_decoder")
pytest.importorskip("baseline_holdout")

from tensorboard_events import TensorBoardRun, read_events

from baseline.cli import run_main
from baseline.config import LoggerConfig
from baseline.experiment.loading import experiment_from_data, load_experiment
from baseline.experiment.validation import validate_experiment_config
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.plugins.hookspecs import hookimpl
from baseline.plugins.protocols import MetricRecord, RunInfo
from baseline.testing import tiny_experiment_data, using_plugins
from baseline_tensorboard import TensorBoardConfig
from baseline_tensorboard.logger import TOKENS_SUBDIR, flatten_config

REPO = Path(__file__).resolve().parents[3]
EXPERIMENT = REPO / "experiments" / "tiny_shakespeare_tensorboard.toml"
CADENCES = {
    "diagnostics_every_n_steps": 3,
    "attention_entropy_every_n_steps": 4,
    "val_every_n_steps": 5,
}


def experiment(workdir: Path, **tensorboard: Any) -> dict[str, Any]:
    """The tiny experiment (2 epochs) with TensorBoard as its only logger."""
    data = tiny_experiment_data(workdir)
    data["train"]["num_threads"] = 1
    data["logging"] = {
        "provider": ["tensorboard"],
        "log_every_n_steps": 2,
        "tensorboard": {**CADENCES, **tensorboard},
    }
    return data


def train(data: dict[str, Any], plugins: Any = None) -> Path:
    plugins = plugins or default_plugins()
    return model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins).run_dir


def metrics_jsonl(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)  # numbers, and strings as TOML basic strings

    lines: list[str] = []

    def table(prefix: str, content: dict[str, Any]) -> None:
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in content.items() if not isinstance(v, dict))
        for k, v in content.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def straight(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, TensorBoardRun, TensorBoardRun]:
    """Two epochs of the tiny experiment with every diagnostic on."""
    run_dir = train(experiment(tmp_path_factory.mktemp("straight")))
    base = run_dir / "tensorboard"
    return run_dir, read_events(base), read_events(base / TOKENS_SUBDIR)


def test_every_value_the_core_computed_is_in_the_event_files(
    straight: tuple[Path, TensorBoardRun, TensorBoardRun],
) -> None:
    run_dir, steps, tokens = straight
    group = {"train": "train", "diagnostics": "diagnostics", "validation": "val"}
    compared = 0
    for record in metrics_jsonl(run_dir):
        phase, step = record["phase"], record["step"]
        values = {
            k: v for k, v in record.items() if k not in ("step", "tokens_seen", "epoch", "phase")
        }
        if phase == "epoch":
            assert steps.value("epoch/train_loss_epoch", step) == pytest.approx(
                values["train_loss_epoch"], rel=1e-6
            )
            assert steps.value("epoch/epoch", step) == record["epoch"]
            continue
        for key, value in values.items():
            if phase == "train" and key == "global_grad_norm":
                continue  # shown from the diagnostics records
            assert steps.value(f"{group[phase]}/{key}", step) == pytest.approx(value, rel=1e-6)
            compared += 1
        if phase == "train":
            assert steps.value("train/tokens_seen", step) == record["tokens_seen"]
            assert tokens.value("train_vs_tokens/train_loss", record["tokens_seen"]) == (
                pytest.approx(record["train_loss"], rel=1e-6)
            )
        if phase == "validation":
            for key in ("val_loss", "val_bpb"):
                assert tokens.value(f"val_vs_tokens/{key}", record["tokens_seen"]) == (
                    pytest.approx(record[key], rel=1e-6)
                )
    assert compared > 100
    # The diagnostics of a 2-layer decoder without norm biases, and the periodic validation.
    assert {
        "diagnostics/global_grad_norm",
        "diagnostics/activation_norm_middle",
        "diagnostics/ln_weight_grad_norm_last",
        "diagnostics/attention_entropy_first",
        "train/learning_rate",
        "train/step_time_ms",
        "train/tokens_per_second",
        "train/train_perplexity",
        "val/val_perplexity",
    } <= steps.tags
    assert 5 in steps.steps("val/val_bpb")
    assert not any(tag.startswith("diagnostics/ln_bias") for tag in steps.tags)
    assert not {"train/peak_memory_gib", "train/mfu"} & steps.tags  # CPU run


def test_the_normalized_config_is_the_hparams_and_the_text(
    straight: tuple[Path, TensorBoardRun, TensorBoardRun],
) -> None:
    run_dir, steps, _ = straight
    saved = json.loads((run_dir / "run_config.json").read_text())["config"]
    assert steps.config_text == saved
    flat = dict(flatten_config(saved))
    hparams = steps.hparam_values
    assert set(hparams) == set(flat)
    assert hparams["train.learning_rate"] == pytest.approx(flat["train.learning_rate"])
    assert hparams["model.name"] == "baseline_decoder"
    assert hparams["logging.provider"] == '["tensorboard"]'
    assert steps.status == "STATUS_SUCCESS"


@attrs.frozen(kw_only=True)
class CrashConfig(LoggerConfig):
    step: int = -1  # the train record that crashes the run (-1: never)


class Crash:
    """A logger that crashes its own run at a chosen step."""

    def __init__(self, config: CrashConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> Crash:
        return self

    def log(self, record: MetricRecord) -> None:
        if record.phase == "train" and record.step == self.config.step:
            raise RuntimeError("boom")

    def finish(self, exit_code: int) -> None:
        pass


class CrashPlugin:
    @hookimpl
    def baseline_register_loggers(self, register: Any) -> None:
        register("crash", CrashConfig, Crash)


def test_a_crash_then_resume_shows_the_uninterrupted_curves(
    tmp_path: Path, straight: tuple[Path, TensorBoardRun, TensorBoardRun]
) -> None:
    data = experiment(tmp_path)
    data["logging"]["provider"] = ["tensorboard", "crash"]
    # The crash comes after TensorBoard wrote step 8; the last checkpoint is step 5's, so the
    # resumed run logs steps 6 to 8 again, and TensorBoard must show them once.
    data["logging"]["crash"] = {"step": 8}
    with using_plugins(CrashPlugin()) as plugins:
        with pytest.raises(RuntimeError, match="boom"):
            train(copy.deepcopy(data), plugins)
        before = read_events(Path(data["run"]["artifacts_root"]) / "tiny" / "tensorboard")
        assert max(before.steps("train/train_loss")) == 8
        data["logging"]["crash"]["step"] = -1
        data["run"]["resume_from_checkpoint"] = True
        run_dir = train(data, plugins)
    _, whole_steps, whole_tokens = straight
    steps = read_events(run_dir / "tensorboard")
    tokens = read_events(run_dir / "tensorboard" / TOKENS_SUBDIR)
    for resumed, whole in ((steps, whole_steps), (tokens, whole_tokens)):
        assert resumed.tags == whole.tags
        for tag, points in whole.scalars.items():
            assert resumed.steps(tag) == [step for step, _ in points], tag
    for tag in ("train/train_loss", "val/val_loss", "diagnostics/attention_entropy_last"):
        for step, value in whole_steps.scalars[tag]:
            assert steps.value(tag, step) == pytest.approx(value, rel=1e-5), (tag, step)
    assert steps.status == "STATUS_SUCCESS"


def test_an_unwritable_log_dir_stops_the_run_with_one_line_and_no_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("in the way")
    write_toml(tmp_path / "exp.toml", experiment(tmp_path, log_dir="a-file/tb"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASELINE_DEBUG", raising=False)
    assert run_main(["exp.toml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(
        r"error: exp\.toml: logging\.tensorboard\.log_dir: cannot write TensorBoard event files "
        rf"to {re.escape(str(tmp_path))}/a-file/tb/tiny \(.+\); set it to a writable directory",
        err[-1],
    ), err[-1]
    assert not (tmp_path / "runs" / "tiny").exists()  # the retry is not refused


@pytest.mark.skipif(not EXPERIMENT.is_file(), reason="runs from a checkout of the repository")
def test_the_shipped_tensorboard_experiment_lists_every_field_with_the_defaults() -> None:
    registry = default_plugins().registry
    config = load_experiment(EXPERIMENT, registry)
    validate_experiment_config(config, registry)
    assert config.logging.provider == ("console", "tensorboard")
    assert config.logging.loggers["tensorboard"] == TensorBoardConfig()
    assert "baseline-tensorboard>=0.1" in config.run.requires
    text = EXPERIMENT.read_text(encoding="utf-8")
    table = tomllib.loads(text)["logging"]["tensorboard"]
    for field in attrs.fields(TensorBoardConfig):
        written = field.name in table
        commented = re.search(rf"^#\s*{field.name}\s*=", text, re.MULTILINE)
        assert written or commented, f"{field.name} is not listed in {EXPERIMENT.name}"
