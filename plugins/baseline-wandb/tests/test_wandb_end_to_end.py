"""Real training runs with ``logging.provider = ["wandb"]``, read back from the ``.wandb`` file:
what only W&B shows. The logger contract (cadence, validation, resume, crashes, two
processes) is in ``test_wandb_contract.py``, which needs only the core.

Needs the standard plugins (local_text, bpe, baseline_decoder, holdout); the nox ``plugin``
session installs this plugin alone with the core, and then these tests are skipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

pytest.importorskip("baseline_text")
pytest.importorskip("baseline_bpe")
pytest.importorskip("baseline_decoder")
pytest.importorskip("baseline_holdout")

import torch
from wandb_transaction_log import WandbRun, read_run

from baseline.cli import main, run_main
from baseline.config import ModelConfig
from baseline.errors import ConfigError
from baseline.experiment.loading import experiment_from_data, experiment_to_data, load_experiment
from baseline.experiment.validation import validate_experiment_config
from baseline.metrics.router import LAYER_POSITIONS
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.plugins.hookspecs import hookimpl
from baseline.testing import tiny_experiment_data, using_plugins, write_experiment
from baseline.testing.synthetic import unlisted_fields
from baseline_wandb import RUN_ID_FILENAME, WandbMetricsConfig

REPO = Path(__file__).resolve().parents[3]
EXPERIMENT = REPO / "experiments" / "tiny_shakespeare_wandb.toml"
BIN = Path(sys.executable).parent

LOG_EVERY, DIAGNOSTICS_EVERY, ENTROPY_EVERY, VAL_EVERY = 2, 3, 4, 5
CORE_LOG_EVERY = 3  # metrics.jsonl's cadence differs from W&B's on purpose
CADENCES = {
    "log_every_n_steps": LOG_EVERY,
    "diagnostics_every_n_steps": DIAGNOSTICS_EVERY,
    "attention_entropy_every_n_steps": ENTROPY_EVERY,
    "val_every_n_steps": VAL_EVERY,
}
TOGGLES = [
    "enable_global_grad_norm",
    "enable_activation_norms",
    "enable_ln_grad_norms",
    "enable_attention_entropy",
    "enable_train_loss_vs_tokens",
    "enable_val_loss_vs_tokens",
    "enable_perplexity",
    "enable_step_time",
    "enable_peak_memory",
]
TRAIN_KEYS = {
    "train_loss",
    "train_perplexity",
    "step_time_ms",
    "learning_rate",
    "tokens_per_second",
}
LAYER_KEYS = {
    f"{prefix}_{p}"
    for prefix in ("activation_norm", "ln_weight_grad_norm")
    for p in LAYER_POSITIONS
}
ENTROPY_KEYS = {f"attention_entropy_{p}" for p in LAYER_POSITIONS}
VAL_KEYS = {"val_loss", "val_perplexity", "val_bpb"}
EPOCH_KEYS = {"train_loss_epoch", "train_perplexity_epoch", "epoch"}


def experiment(workdir: Path, **wandb: Any) -> dict[str, Any]:
    """The tiny experiment with W&B as its only logger."""
    data = tiny_experiment_data(workdir)
    data["train"]["num_threads"] = 1
    data["logging"] = {
        "provider": ["wandb"],
        "log_every_n_steps": CORE_LOG_EVERY,
        "wandb": {**CADENCES, **wandb},
    }
    return data


def train(data: dict[str, Any], plugins: Any = None) -> Path:
    plugins = plugins or default_plugins()
    return model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins).run_dir


def metrics_jsonl(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, WandbRun]:
    """Two epochs of the tiny experiment with every W&B toggle on."""
    run_dir = train(experiment(tmp_path_factory.mktemp("straight")))
    return run_dir, read_run(run_dir)


# -- which key lands on which step -------------------------------------------------------------


def test_each_key_appears_exactly_on_the_steps_its_cadence_selects(
    straight: tuple[Path, WandbRun],
) -> None:
    run_dir, run = straight
    per_epoch = _steps_per_epoch(run_dir)
    total = 2 * per_epoch  # train.epochs = 2
    ends = {per_epoch, total}
    steps = range(1, total + 1)
    expected: dict[int, set[str]] = {}
    for step in steps:
        keys: set[str] = set()
        if step % LOG_EVERY == 0 or step in ends:
            keys |= TRAIN_KEYS | {"tokens_seen_train"}
        if step % DIAGNOSTICS_EVERY == 0:
            keys |= LAYER_KEYS | {"global_grad_norm"}
        if step % ENTROPY_EVERY == 0:
            keys |= ENTROPY_KEYS
        if step % VAL_EVERY == 0 or step in ends:
            keys |= VAL_KEYS | {"tokens_seen_train"}
        if step in ends:
            keys |= EPOCH_KEYS
        if keys:
            expected[step] = keys
    assert {step: set(row) for step, row in run.rows.items()} == expected
    # CPU run of a decoder without norm biases: no CUDA keys, no bias gradient norms.
    assert not run.keys & {"peak_memory_gib", "mfu"}
    assert not any(key.startswith("ln_bias_grad_norm") for key in run.keys)


def _steps_per_epoch(run_dir: Path) -> int:
    epochs = [r for r in metrics_jsonl(run_dir) if r["phase"] == "epoch"]
    return int(epochs[0]["step"])


def test_values_match_what_the_core_computed(straight: tuple[Path, WandbRun]) -> None:
    run_dir, run = straight
    records = metrics_jsonl(run_dir)
    tokens_per_step = 8 * 16  # batch_size * seq_len
    for step, row in run.rows.items():
        if "tokens_seen_train" in row:
            assert row["tokens_seen_train"] == step * tokens_per_step
    compared = 0
    for record in records:
        if record["phase"] not in ("diagnostics", "validation", "epoch"):
            continue
        row = run.rows[record["step"]]
        for key in (*LAYER_KEYS, *ENTROPY_KEYS, "global_grad_norm", *VAL_KEYS, "train_loss_epoch"):
            if key in record and key in row:
                assert row[key] == pytest.approx(record[key], rel=1e-6), (record["step"], key)
                compared += 1
    assert compared > 50
    # train_loss: W&B's windows are 2 steps, metrics.jsonl's 3; every 6 steps both windows
    # end, and the mean of W&B's last three equals the core's mean of its last two.
    for step in range(6, _steps_per_epoch(run_dir), 6):
        wandb_mean = sum(run.rows[s]["train_loss"] for s in (step - 4, step - 2, step)) / 3
        core = [r for r in records if r["phase"] == "train" and r["step"] in (step - 3, step)]
        core_mean = sum(r["train_loss"] for r in core) / 2
        assert wandb_mean == pytest.approx(core_mean, rel=1e-5), step


def test_loss_curves_use_tokens_seen_train_as_x_axis(straight: tuple[Path, WandbRun]) -> None:
    metrics = straight[1].metrics
    assert metrics["train_loss"].step_metric == "tokens_seen_train"
    assert metrics["val_loss"].step_metric == "tokens_seen_train"
    assert set(metrics) == {"tokens_seen_train", "train_loss", "val_loss"}


def test_the_wandb_run_holds_the_normalized_config_and_its_id_is_kept(
    straight: tuple[Path, WandbRun],
) -> None:
    run_dir, run = straight
    saved = json.loads((run_dir / "run_config.json").read_text())
    assert run.config == saved["config"]
    assert run.exit_code == 0
    assert run.project == "test" and run.display_name == "tiny"
    assert (run_dir / RUN_ID_FILENAME).read_text().strip() == run.run_id
    assert run.path.parent.parent == run_dir / "wandb"
    assert run.path.parent.name.startswith("offline-run-")


def test_wandb_sync_finds_the_offline_run(straight: tuple[Path, WandbRun], tmp_path: Path) -> None:
    _, run = straight
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(BIN / "wandb"), "sync", "--dry-run", str(run.path.parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert run.path.name in result.stdout + result.stderr


def test_everything_off_leaves_only_the_always_on_keys(tmp_path: Path) -> None:
    data = experiment(tmp_path, **dict.fromkeys(TOGGLES, False), val_every_n_steps=0)
    run_dir = train(data)
    run = read_run(run_dir)
    assert run.keys == {
        "learning_rate",
        "tokens_per_second",
        "val_bpb",
        "train_loss_epoch",
        "epoch",
    }
    assert not run.metrics
    per_epoch = _steps_per_epoch(run_dir)
    assert run.steps_with("val_bpb") == [per_epoch, 2 * per_epoch]
    # Nothing asked for diagnostics, so the core computed none.
    assert not [r for r in metrics_jsonl(run_dir) if r["phase"] == "diagnostics"]


def test_the_experiment_round_trips_through_the_loader() -> None:
    registry = default_plugins().registry
    data = experiment(Path("/nonexistent-but-unused"), tags=["a", "b"], mode="offline")
    config = experiment_from_data(data, registry)
    settings = config.logging.loggers["wandb"]
    assert isinstance(settings, WandbMetricsConfig)
    assert settings.tags == ("a", "b") and settings.mode == "offline"
    again = experiment_to_data(config, registry)
    assert experiment_from_data(again, registry) == config
    assert again["logging"]["wandb"]["tags"] == ["a", "b"]


# -- interrupted runs and start failures -----------------------------------------------------


def test_ctrl_c_on_the_process_group_records_exit_130(tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C: W&B's service process gets it
    too and must still record the run's end."""
    # A train record every step: whatever step the signal stops at (it depends on how busy
    # the machine is), its record is the run's last row.
    data = experiment(tmp_path, log_every_n_steps=1)
    data["train"]["epochs"] = 50
    data["run"]["checkpoint_every_n_steps"] = 1
    write_experiment(tmp_path / "exp.toml", data)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("BASELINE_DEBUG", None)
    process = subprocess.Popen(
        [str(BIN / "baseline-run"), "exp.toml"],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    run_dir = tmp_path / "runs" / "tiny"
    deadline = time.time() + 120
    while not (run_dir / "baseline_checkpoint.pt").exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "error: stopped by SIGINT at step" in stderr.strip().splitlines()[-1]
    step = int(re.search(r"at step (\d+)", stderr).group(1))  # type: ignore[union-attr]
    run = read_run(run_dir)
    assert run.exit_code == 130
    assert max(run.rows) == step


def test_online_without_an_api_key_stops_the_run_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    write_experiment(tmp_path / "exp.toml", experiment(tmp_path, mode="online"))
    monkeypatch.chdir(tmp_path)
    began = time.perf_counter()
    code = run_main(["exp.toml"])
    assert time.perf_counter() - began < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (
        "error: exp.toml: logging.wandb.mode: W&B is in online mode but no API key is "
        'configured; run `wandb login`, set WANDB_API_KEY, or set mode = "offline"'
    )


# -- a model that cannot measure attention entropy ---------------------------------------------


@attrs.frozen(kw_only=True)
class NoEntropyConfig(ModelConfig):
    d_model: int = 16


class NoEntropyModel:
    """A bigram model that declares the layer diagnostics but not attention entropy."""

    diagnostics = frozenset({"activation_norms", "ln_grad_norms"})

    def __init__(self, config: NoEntropyConfig) -> None:
        self.config = config

    def build(self, vocab_size: int, seq_len: int) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Embedding(vocab_size, self.config.d_model),
            torch.nn.Linear(self.config.d_model, vocab_size),
        )


class NoEntropyPlugin:
    @hookimpl
    def baseline_register_models(self, register: Any) -> None:
        register("no_entropy", NoEntropyConfig, NoEntropyModel)


def test_attention_entropy_is_refused_for_a_model_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = experiment(tmp_path)
    data["model"] = {"name": "no_entropy"}
    write_experiment(tmp_path / "exp.toml", data)
    monkeypatch.chdir(tmp_path)
    with using_plugins(NoEntropyPlugin()) as plugins:
        with pytest.raises(ConfigError) as caught:
            validate_experiment_config(
                experiment_from_data(data, plugins.registry), plugins.registry
            )
        assert caught.value.key_path == "logging.wandb.enable_attention_entropy"
        assert main(["validate", "exp.toml"]) == 2
        assert capsys.readouterr().err.strip() == (
            "error: exp.toml: logging.wandb.enable_attention_entropy: model 'no_entropy' "
            "(test-plugins) cannot provide attention entropy (it supports: activation_norms, "
            "ln_grad_norms); set it to false"
        )
        off = ["--set", "logging.wandb.enable_attention_entropy=false"]
        assert main(["validate", "exp.toml", *off]) == 0
    assert not (tmp_path / "runs").exists()


# -- the shipped experiment --------------------------------------------------------------------


@pytest.mark.skipif(not EXPERIMENT.is_file(), reason="runs from a checkout of the repository")
def test_the_shipped_wandb_experiment_lists_every_field_with_the_defaults() -> None:
    registry = default_plugins().registry
    config = load_experiment(EXPERIMENT, registry)
    validate_experiment_config(config, registry)
    assert config.logging.provider == ("console", "wandb")
    assert config.logging.loggers["wandb"] == WandbMetricsConfig()
    assert "baseline-wandb>=0.1" in config.run.requires
    assert unlisted_fields(EXPERIMENT, "wandb", WandbMetricsConfig) == []
