"""Data mixtures: weighted sources, each split on its own, the tokenizer fitted on the training
segments of every source only, a deterministic schedule whose realized fractions meet the
weights, per-source metrics, exact resume, and one-line errors for bad input."""

from __future__ import annotations

import importlib.util
import io
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
import numpy as np
import pytest
import torch
from core_support import write_toml
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("baseline_text")
pytest.importorskip("baseline_bpe")

from baseline.config import LoggerConfig, SplitConfig
from baseline.data.mixture import MixtureSchedule
from baseline.data.mixture_windows import MixtureTrainWindows
from baseline.errors import ConfigError, RunInterrupted
from baseline.experiment.loading import experiment_from_data, experiment_to_data, load_experiment
from baseline.pipeline import model_pipeline
from baseline.plugins.hookspecs import Register, hookimpl
from baseline.plugins.protocols import MetricRecord, RunInfo, SplitPlan
from baseline.runs.plots import metric_series
from baseline.runs.table import render_lines, summarize_run
from baseline.testing import (
    RecordingTokenizerPlugin,
    in_process_plugins,
    read_fit_recording,
    tiny_experiment_data,
)
from baseline_holdout import HoldoutSplit, HoldoutSplitConfig

BIN = Path(sys.executable).parent
PROSE_WORDS = ["thou", "art", "more", "lovely", "and", "temperate", "rough", "winds", "shake"]
CODE_WORDS = ["def", "return", "self", "import", "class", "lambda", "yield", "None", "pass"]
#: Each only in its source's validation segments, repeated enough that BPE would learn it.
PROBES = {"prose": "qzvxk", "code": "wjqpf"}


def source_segments(words: list[str], count: int, seed: int, probe: str | None) -> list[str]:
    """``count`` segments of ``words``; the last 10 (inside the holdout's validation side,
    with ``shuffle = false`` and ``train_fraction = 0.8`` of the bytes) repeat ``probe``."""
    rng = np.random.default_rng(seed)
    segments = []
    for index in range(count):
        text = " ".join(rng.choice(words, size=int(rng.integers(8, 30))))
        if probe is not None and index >= count - 10:
            text = f"{text} " + " ".join([probe] * 30)
        segments.append(f"{index}: {text}")
    return segments


def mixture_data(
    tmp_path: Path, weights: tuple[float, float] = (0.75, 0.25), *, probe_in: str = "validation"
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Tiny experiment data whose dataset mixes two ``local_text`` files."""
    data = tiny_experiment_data(tmp_path)
    texts = {}
    sources = {}
    for index, (name, words, weight) in enumerate(
        (("prose", PROSE_WORDS, weights[0]), ("code", CODE_WORDS, weights[1]))
    ):
        segments = source_segments(words, 150, index, PROBES[name])
        if probe_in == "training":  # the control: the probes in the first segments
            segments = segments[140:] + segments[:140]
        path = tmp_path / f"{name}.txt"
        path.write_text("\n\n".join(segments), encoding="utf-8")
        texts[name] = segments
        sources[name] = {"weight": weight, "name": "local_text", "path": str(path)}
    data["dataset"] = {"name": "mixture", "sources": sources}
    data["tokenizer"]["base_vocab_size"] = 340
    data["split"] = {"name": "holdout", "train_fraction": 0.8, "shuffle": False}
    data["train"].pop("epochs", None)
    data["train"].update(max_steps=12, batch_size=8)
    data["logging"]["log_every_n_steps"] = 4
    return data, texts


def holdout_cut(segments: list[str]) -> int:
    """The first validation segment of the holdout split of ``mixture_data``."""
    sizes = np.array([len(s.encode("utf-8")) for s in segments])
    plan = HoldoutSplit(HoldoutSplitConfig(train_fraction=0.8, shuffle=False)).split(sizes)
    assert plan.validation[0] <= 140  # the probes are validation segments
    return int(plan.validation[0])


def learned_words(vocab_path: Path) -> set[str]:
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))["model"]["vocab"]
    return {token.replace("\u0120", " ").strip() for token in vocab}


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -- the schedule ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=5),
    steps=st.integers(100, 400),
    windows_per_step=st.sampled_from([1, 4, 8, 16]),
)
def test_realized_fractions_are_within_one_percent_of_the_weights(
    weights: list[float], steps: int, windows_per_step: int
) -> None:
    schedule = MixtureSchedule(weights)
    counts = schedule.counts(steps * windows_per_step)
    fractions = counts / counts.sum()
    expected = np.array(weights) / sum(weights)
    assert np.all(np.abs(fractions - expected) <= 0.01), (fractions, expected)
    # within one window of the target, whatever the number of windows
    assert np.all(np.abs(counts - expected * steps * windows_per_step) < 1 + 1e-9)


@settings(max_examples=30, deadline=None)
@given(
    weights=st.lists(st.floats(0.0, 5.0), min_size=2, max_size=4).filter(lambda w: sum(w) > 0.1),
    first=st.integers(0, 300),
    count=st.integers(1, 50),
)
def test_a_window_s_source_depends_on_its_index_only(
    weights: list[float], first: int, count: int
) -> None:
    whole, whole_draws = MixtureSchedule(weights).assign(0, first + count)
    fresh = MixtureSchedule(weights)  # a resumed run: nothing but the position
    part, part_draws = fresh.assign(first, count)
    assert np.array_equal(part, whole[first:])
    assert np.array_equal(part_draws, whole_draws[first:])
    restored = MixtureSchedule(weights)  # a checkpoint's positions: no replay
    restored.restore(first, MixtureSchedule(weights).counts(first).tolist())
    assert np.array_equal(restored.assign(first, count)[0], whole[first:])
    zero = [i for i, w in enumerate(weights) if w == 0]
    assert not np.isin(whole, zero).any()  # a source of weight 0 is never drawn


def windows_of(world_size: int, rank: int, on_exhausted: str = "repeat") -> MixtureTrainWindows:
    tokens = np.arange(10_000, dtype=np.int64)
    ranges = [[(0, 2_000)], [(5_000, 5_600)]]  # 125 and 37 windows of 16 tokens
    return MixtureTrainWindows(
        tokens,
        ranges,
        [0.6, 0.4],
        seq_len=15,
        stride=16,
        batch_size=8,
        data_fraction=1.0,
        seed=3,
        on_exhausted=on_exhausted,
        rank=rank,
        world_size=world_size,
    )


def test_ranks_draw_disjoint_slices_of_the_same_global_batches() -> None:
    whole = [b for _, batches in windows_of(1, 0).optimizer_steps(0, 0, 2, 1) for b in batches]
    ranks = [
        [b for _, batches in windows_of(2, r).optimizer_steps(0, 0, 2, 1) for b in batches]
        for r in (0, 1)
    ]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 2 * (162 // 8)
    for joined, left, right in zip(whole, *ranks, strict=True):
        assert np.array_equal(joined.numpy(), np.concatenate([left.numpy(), right.numpy()]))
        assert not set(left[:, 0].tolist()) & set(right[:, 0].tolist())


def test_a_source_that_runs_out_repeats_in_a_new_order_or_ends_the_epoch() -> None:
    windows = windows_of(1, 0)
    starts = [
        int(row[0])
        for _, batches in windows.optimizer_steps(0, 0, 3, 1)
        for b in batches
        for row in b
    ]
    code = [s for s in starts if s >= 5_000]
    prose = [s for s in starts if s < 5_000]
    assert len(code) > 2 * 37  # the small source is repeated ...
    first, second = code[:37], code[37:74]
    assert sorted(first) == sorted(second) == list(range(5_000, 5_592, 16))
    assert first != second  # ... in a new order each pass
    assert len(set(prose[:125])) == 125  # no window twice within a pass
    stop = windows_of(1, 0, "stop")
    steps = list(stop.optimizer_steps(0, 0, None, 1))
    drawn = [int(row[0]) for _, batches in steps for b in batches for row in b]
    assert stop.epoch_limit(None) == 1 and len(steps) == stop.steps_per_epoch
    assert len(set(drawn)) == len(drawn)  # nothing repeated before training ends
    assert stop.counts(len(drawn))[1] <= 37


# -- configuration and bad input ------------------------------------------------------------


def test_set_reaches_a_source_weight_by_its_name(tmp_path: Path, registry: Any) -> None:
    data, _ = mixture_data(tmp_path)
    path = write_toml(tmp_path / "mix.toml", data)
    config = load_experiment(path, registry, ["dataset.sources.code.weight=0.5"])
    assert config.dataset.sources["code"].weight == 0.5  # type: ignore[attr-defined]
    assert config.dataset.weights == (0.6, 0.4)  # type: ignore[attr-defined]


def cli(*args: str, command: str = "baseline") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BASELINE_DEBUG"}
    return subprocess.run(
        [str(BIN / command), *args], capture_output=True, text=True, env=env, timeout=300
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, result.stderr


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"code": {"weight": -0.2}}, "dataset.sources.code.weight: must be >= 0, got -0.2"),
        (
            {"prose": {"weight": 0}, "code": {"weight": 0.0}},
            "dataset.sources: the weights are all zero (prose=0.0, code=0.0)",
        ),
        (
            {"code": {"name": "mixture"}},
            "dataset.sources.code.name: a mixture cannot be a source of a mixture",
        ),
        ({"code": {"pth": "x"}}, "dataset.sources.code.pth: unknown key"),
        ({"code": {"name": "nope"}}, "dataset.sources.code.name: unknown dataset 'nope'"),
        (
            {"code": {"path": "~nosuchuser-mix/x.txt"}},
            "dataset.sources.code.path: not a usable path",
        ),
        ({"code": {"weight": "0.2"}}, "dataset.sources.code.weight: must be a finite number"),
    ],
    ids=["negative", "all-zero", "nested", "unknown-key", "unknown-component", "path", "text"],
)
def test_bad_mixtures_are_one_line_naming_the_source(
    tmp_path: Path, change: dict[str, dict[str, Any]], expected: str
) -> None:
    data, _ = mixture_data(tmp_path)
    for name, values in change.items():
        data["dataset"]["sources"][name].update(values)
    path = write_toml(tmp_path / "bad.toml", data)
    assert_one_line_error(cli("validate", str(path)), f"bad.toml: {expected}")


def test_a_misspelt_mixture_is_suggested(tmp_path: Path, registry: Any) -> None:
    data, _ = mixture_data(tmp_path)
    data["dataset"]["name"] = "mixtur"
    with pytest.raises(
        ConfigError, match=r"dataset\.name: unknown dataset 'mixtur'; did you mean 'mixture'"
    ):
        experiment_from_data(data, registry)


def test_a_source_name_used_twice_is_one_line(tmp_path: Path) -> None:
    data, _ = mixture_data(tmp_path)
    sources = data["dataset"]["sources"]
    sources["code-x"] = sources["code_x"] = sources.pop("code")
    path = write_toml(tmp_path / "twice.toml", data)
    assert_one_line_error(
        cli("validate", str(path)), "dataset.sources.code_x: source name used twice"
    )
    text = path.read_text().replace("[dataset.sources.code-x]", "[dataset.sources.code_x]")
    path.write_text(text)  # the very same table twice: TOML itself refuses it
    assert_one_line_error(cli("validate", str(path)), "twice.toml: invalid TOML")


def test_a_source_too_small_to_validate_is_one_line(tmp_path: Path) -> None:
    data, _ = mixture_data(tmp_path)
    two = tmp_path / "two.txt"  # the holdout keeps the tiny last segment for validation
    two.write_text("def f(): return None " * 40 + "\n\nx", encoding="utf-8")
    data["dataset"]["sources"]["code"]["path"] = str(two)
    data["tokenizer"]["base_vocab_size"] = 300
    path = write_toml(tmp_path / "small.toml", data)
    result = cli(str(path), command="baseline-run")
    assert_one_line_error(
        result, "dataset.sources.code: source 'code' has 2 validation tokens and no window"
    )


@attrs.frozen(kw_only=True)
class AllTrainingConfig(SplitConfig):
    """A split that puts every segment on one side (``training`` or ``validation``)."""

    side: str = "training"


class AllTraining:
    def __init__(self, config: AllTrainingConfig) -> None:
        self.config = config

    def split(self, sizes: np.ndarray) -> SplitPlan:
        every, none = np.arange(len(sizes)), np.zeros(0, dtype=np.int64)
        if self.config.side == "training":
            return SplitPlan(train=every, validation=none)
        return SplitPlan(train=none, validation=every)


class AllTrainingPlugin:
    @staticmethod
    @hookimpl
    def baseline_register_splits(register: Register) -> None:
        register("all_training", AllTrainingConfig, AllTraining)


@pytest.mark.parametrize(
    ("side", "missing"), [("training", "validation"), ("validation", "training")]
)
def test_a_source_without_segments_on_a_side_names_its_split(
    tmp_path: Path, side: str, missing: str
) -> None:
    data, _ = mixture_data(tmp_path)
    data["dataset"]["sources"]["code"]["split"] = {"name": "all_training", "side": side}
    plugins = in_process_plugins(AllTrainingPlugin)
    with pytest.raises(ConfigError) as caught:
        model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    assert str(caught.value).startswith(
        f"dataset.sources.code: source 'code' has no {missing} segments (150 segments, split "
        "by dataset.sources.code.split)"
    )
    assert caught.value.exit_code == 2


# -- honest by construction -----------------------------------------------------------------


@pytest.mark.parametrize("probe_in", ["validation", "training"], ids=["held-out", "control"])
def test_a_word_only_in_one_source_s_validation_never_becomes_a_token(
    tmp_path: Path, probe_in: str
) -> None:
    data, _ = mixture_data(tmp_path, (0.5, 0.5), probe_in=probe_in)
    model_pipeline(experiment_from_data(data, in_process_plugins().registry))
    learned = learned_words(Path(data["tokenizer"]["vocab_path"]))
    for probe in PROBES.values():
        if probe_in == "validation":
            assert probe not in learned
        else:  # the probe notices a leak: trained on, the word becomes a token
            assert probe in learned


def test_the_tokenizer_fits_on_training_segments_of_every_source_in_proportion(
    tmp_path: Path,
) -> None:
    data, texts = mixture_data(tmp_path, (0.75, 0.25))
    data["tokenizer"] = {"name": "recording", "record_path": str(tmp_path / "fit.jsonl")}
    plugins = in_process_plugins(RecordingTokenizerPlugin)
    model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    [received] = read_fit_recording(tmp_path / "fit.jsonl").values()
    cuts = {name: holdout_cut(segments) for name, segments in texts.items()}
    training = {name: segments[: cuts[name]] for name, segments in texts.items()}
    validation = {s for name, segments in texts.items() for s in segments[cuts[name] :]}
    assert not validation & set(received)
    got = {name: [s for s in received if s in set(segs)] for name, segs in training.items()}
    assert got["prose"] == training["prose"]  # the scarcer source per unit of weight: all of it
    assert set(got["code"]) <= set(training["code"]) and got["code"]
    size = {name: sum(len(s.encode()) for s in segs) for name, segs in got.items()}
    assert size["prose"] / (size["prose"] + size["code"]) == pytest.approx(0.75, abs=0.03)


# -- metrics, records and resume ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class KeepAllConfig(LoggerConfig):
    """The ``keep_all`` logger: every record it receives, kept in :data:`KEPT`."""


KEPT: list[MetricRecord] = []


class KeepAll:
    def __init__(self, config: KeepAllConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> KeepAll:
        return self

    def log(self, record: MetricRecord) -> None:
        KEPT.append(record)

    def finish(self, exit_code: int) -> None:
        pass


class KeepAllPlugin:
    @hookimpl
    def baseline_register_loggers(self, register: Any) -> None:
        register("keep_all", KeepAllConfig, KeepAll)


def test_per_source_metrics_reach_every_logger_and_follow_the_weights(tmp_path: Path) -> None:
    data, _ = mixture_data(tmp_path, (0.75, 0.25))
    data["logging"]["provider"] = ["console", "keep_all"]
    plugins = in_process_plugins(KeepAllPlugin())
    KEPT.clear()
    result = model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    records = read_records(result.run_dir)
    received = {key for record in KEPT for key in record.values}
    for name in ("prose", "code"):
        for key in ("val_loss", "val_bpb", "val_perplexity", "train_tokens", "passes"):
            assert f"{key}/{name}" in received
    last_train = [r for r in records if r["phase"] == "train"][-1]
    tokens = result.tokens_seen
    assert last_train["train_tokens/prose"] == 0.75 * tokens
    assert last_train["train_tokens/code"] == 0.25 * tokens
    assert 0 < last_train["passes/code"] < last_train["passes/prose"] * 2
    validation = [r for r in records if r["phase"] == "validation"][-1]
    for key in ("val_loss", "val_bpb"):
        mixed = 0.75 * validation[f"{key}/prose"] + 0.25 * validation[f"{key}/code"]
        assert validation[key] == pytest.approx(mixed, rel=1e-12)
    assert validation["val_bpb/prose"] != validation["val_bpb/code"]
    assert result.final_metrics["val_bpb/code"] == validation["val_bpb/code"]
    recorded = json.loads((result.run_dir / "run_config.json").read_text())
    assert set(recorded["data"]["sources"]) == {"prose", "code"}
    assert recorded["config"]["dataset"]["sources"]["code"]["weight"] == 0.25

    # baseline runs: a column per source; baseline plot: any per-source metric
    summary = summarize_run(result.run_dir)
    assert summary.source_val_bpb == {
        "prose": validation["val_bpb/prose"],
        "code": validation["val_bpb/code"],
    }
    out = io.StringIO()
    render_lines([summary], out)
    header, row = out.getvalue().splitlines()
    assert "best bpb  val bpb/prose  val bpb/code  loggers" in header
    assert f"{validation['val_bpb/code']:.4f}" in row.split()
    listing = cli("runs", str(tmp_path / "runs"))
    assert "val bpb/prose" in listing.stdout and "val bpb/code" in listing.stdout
    series = metric_series(result.run_dir, "val_bpb/code", "step")
    assert series.y[-1] == validation["val_bpb/code"]
    if importlib.util.find_spec("matplotlib") is not None:  # the core's plot extra
        image = tmp_path / "code.png"
        drawn = cli("plot", str(result.run_dir), "--metric", "val_bpb/code", "-o", str(image))
        assert drawn.returncode == 0, drawn.stderr
        assert image.read_bytes().startswith(b"\x89PNG")


def test_the_plan_is_printed_at_start(tmp_path: Path) -> None:
    data, _ = mixture_data(tmp_path, (0.75, 0.25))
    path = write_toml(tmp_path / "mix.toml", data)
    result = cli(str(path), command="baseline-run")
    assert result.returncode == 0, result.stderr
    assert "mixture plan: prose: weight 0.750, 1,152 training tokens in 12 steps" in result.stderr
    assert "mixture plan: code: weight 0.250, 384 training tokens in 12 steps" in result.stderr
    assert re.search(r"val bits/byte \d\.\d{4} \(prose \d\.\d{4}, code \d\.\d{4}\)", result.stderr)
    windows = [line for line in result.stderr.splitlines() if line.startswith("mixture plan")]
    assert all(" passes over its " in line for line in windows)
    # baseline eval --dataset: the mixture's corpus, every source, both sides of each split
    scored = cli("eval", str(tmp_path / "runs" / "tiny"), "--dataset", str(path), "--json")
    assert scored.returncode == 0, scored.stderr
    sizes = [(tmp_path / f"{name}.txt").stat().st_size for name in ("prose", "code")]
    assert json.loads(scored.stdout)["bytes"] >= sum(sizes)
    checked = cli("validate", str(path), "--set", "dataset.sources.code.weight=0.75")
    assert checked.returncode == 0, checked.stderr
    assert "mixture plan: prose: weight 0.500, 768 training tokens in 12 steps" in checked.stdout
    assert "mixture plan: code: weight 0.500, 768 training tokens in 12 steps" in checked.stdout


@attrs.frozen(kw_only=True)
class SignalAtStepConfig(LoggerConfig):
    step: int = -1


class SignalAtStep:
    """Sends SIGTERM to its own process when it receives the train record of ``step``."""

    def __init__(self, config: SignalAtStepConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> SignalAtStep:
        return self

    def log(self, record: MetricRecord) -> None:
        if record.phase == "train" and record.step == self.config.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def finish(self, exit_code: int) -> None:
        pass


class SignalPlugin:
    @hookimpl
    def baseline_register_loggers(self, register: Any) -> None:
        register("signal_at_step", SignalAtStepConfig, SignalAtStep)


@pytest.mark.parametrize("stop_step", [7, 8, 19], ids=["mid-epoch", "epoch-end", "later"])
def test_sigterm_then_resume_continues_the_mix_exactly(tmp_path: Path, stop_step: int) -> None:
    data, _ = mixture_data(tmp_path, (0.6, 0.4))
    data["train"].update(max_steps=26, data_fraction=0.1)  # epochs of about 10 steps
    data["model"]["dropout"] = 0.1  # the RNG state must be restored too
    data["logging"]["log_every_n_steps"] = 1
    plugins = in_process_plugins(SignalPlugin())
    straight = model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    data["run"]["run_name"] = "interrupted"
    data["logging"]["provider"] = ["console", "signal_at_step"]
    data["logging"]["signal_at_step"] = {"step": stop_step}
    with pytest.raises(RunInterrupted):
        model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    saved = torch.load(
        tmp_path / "runs" / "interrupted" / "baseline_checkpoint.pt", weights_only=True
    )
    assert saved["step"] == stop_step and sum(saved["mixture_drawn"]) == stop_step * 8
    data["logging"]["signal_at_step"]["step"] = -1
    data["run"]["resume_from_checkpoint"] = True
    resumed = model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)

    def curve(run_dir: Path) -> list[tuple[Any, ...]]:
        keep = ("train_loss", "val_loss", "val_bpb/code", "train_tokens/code", "passes/prose")
        return [(r["step"], r["phase"], *(r.get(k) for k in keep)) for r in read_records(run_dir)]

    records = read_records(straight.run_dir)
    assert len([r for r in records if r["phase"] == "epoch"]) >= 3  # epochs ended and resumed
    assert [r for r in records if r["phase"] == "train"][-1]["passes/code"] > 1  # repeated
    assert curve(resumed.run_dir) == curve(straight.run_dir)
    left = torch.load(straight.run_dir / "baseline_model.pt", weights_only=True)
    right = torch.load(resumed.run_dir / "baseline_model.pt", weights_only=True)
    assert left.keys() == right.keys()
    assert all(torch.equal(left[k], right[k]) for k in left)


# -- several processes ----------------------------------------------------------------------


def run_processes(
    tmp_path: Path, *args: str, nproc: int | None = 2
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BASELINE_DEBUG", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    command = [str(BIN / "baseline-run"), "exp.toml", *args]
    if nproc is not None:
        command += ["--nproc", str(nproc)]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_two_processes_draw_the_mix_of_one(tmp_path: Path, parallelism: str) -> None:
    """Each rank takes its own slice of the global batch the schedule draws (disjoint by
    construction, tested above): two processes train on the windows one process does."""
    data, _ = mixture_data(tmp_path, (0.6, 0.4))
    data["train"].update(
        max_steps=6, lr_schedule="constant", warmup_steps=0, num_threads=1, parallelism=parallelism
    )
    data["logging"]["log_every_n_steps"] = 1
    write_toml(tmp_path / "exp.toml", data)
    two = run_processes(tmp_path, "--set", "run.run_name=two")
    assert two.returncode == 0, two.stderr
    one = run_processes(tmp_path, "--set", "run.run_name=one", nproc=None)
    assert one.returncode == 0, one.stderr
    two_records = read_records(tmp_path / "runs" / "two")
    one_records = read_records(tmp_path / "runs" / "one")
    assert [(r["step"], r["phase"]) for r in two_records] == [
        (r["step"], r["phase"]) for r in one_records
    ]
    for a, b in zip(two_records, one_records, strict=True):
        assert a.keys() == b.keys()
        for key in ("train_tokens/prose", "train_tokens/code", "passes/code"):
            assert a.get(key) == b.get(key)
        for key in ("train_loss", "val_loss/prose", "val_bpb/code", "val_bpb"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (key, a, b)


def checkpoint_step(run_dir: Path) -> int:
    """Step of the newest checkpoint, or -1."""
    try:
        return int(torch.load(run_dir / "baseline_checkpoint.pt", weights_only=True)["step"])
    except Exception:
        return -1


def test_kill_9_then_resume_continues_the_mix_exactly(tmp_path: Path) -> None:
    data, _ = mixture_data(tmp_path, (0.6, 0.4))
    # long enough that no kill below (a few steps and a pause each) reaches the end
    data["train"].update(max_steps=150, data_fraction=0.1, num_threads=1)
    data["run"]["checkpoint_every_n_steps"] = 1
    data["model"]["dropout"] = 0.1
    data["logging"]["log_every_n_steps"] = 1
    write_toml(tmp_path / "exp.toml", data)
    env = {k: v for k, v in os.environ.items() if k != "BASELINE_DEBUG"}

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(BIN / "baseline-run"), "exp.toml", *args],
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    straight = start("--set", "run.run_name=straight")
    assert straight.wait(timeout=300) == 0, straight.stderr.read() if straight.stderr else ""
    run_dir = tmp_path / "runs" / "tiny"
    kills = 0
    for pause in (0.0, 0.05, 0.15):
        process = start("--resume")
        previous = checkpoint_step(run_dir)
        deadline = time.time() + 120
        while process.poll() is None and checkpoint_step(run_dir) <= previous + 3:
            assert time.time() < deadline
            time.sleep(0.02)
        time.sleep(pause)  # inside a step or a checkpoint write
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    final = start("--resume")
    assert final.wait(timeout=300) == 0, final.stderr.read() if final.stderr else ""
    assert kills >= 2

    def curve(directory: Path) -> list[tuple[Any, ...]]:
        keep = ("train_loss", "val_bpb/prose", "val_bpb", "train_tokens/code", "passes/prose")
        return [(r["step"], r["phase"], *(r.get(k) for k in keep)) for r in read_records(directory)]

    assert curve(run_dir) == curve(tmp_path / "runs" / "straight")
    left = torch.load(tmp_path / "runs" / "straight" / "baseline_model.pt", weights_only=True)
    right = torch.load(run_dir / "baseline_model.pt", weights_only=True)
    assert all(torch.equal(left[k], right[k]) for k in left)


def test_another_mix_of_the_same_split_reuses_the_tokenizer_file(tmp_path: Path) -> None:
    data, _ = mixture_data(tmp_path, (0.75, 0.25))
    path = write_toml(tmp_path / "mix.toml", data)
    first = cli(str(path), command="baseline-run")
    assert first.returncode == 0, first.stderr
    again = cli(
        str(path),
        "--set",
        "dataset.sources.code.weight=0.75",
        "--overwrite",
        command="baseline-run",
    )
    assert again.returncode == 0, again.stderr
    assert "was fitted on this split's training segments" in again.stderr


def test_a_mixture_config_round_trips_through_plain_data(tmp_path: Path, registry: Any) -> None:
    data, _ = mixture_data(tmp_path)
    data["dataset"]["sources"]["code"]["split"] = {"name": "holdout", "train_fraction": 0.7}
    config = experiment_from_data(data, registry)
    plain = experiment_to_data(config, registry)
    assert plain["dataset"]["sources"]["code"]["split"]["train_fraction"] == 0.7
    assert experiment_from_data(plain, registry) == config


def test_on_exhausted_stop_ends_training_before_a_source_repeats(tmp_path: Path) -> None:
    data, _ = mixture_data(tmp_path, (0.5, 0.5))
    data["dataset"]["on_exhausted"] = "stop"
    data["train"].pop("max_steps")
    data["train"].update(epochs=5, data_fraction=0.2)
    result = model_pipeline(experiment_from_data(data, in_process_plugins().registry))
    records = read_records(result.run_dir)
    last = [r for r in records if r["phase"] == "train"][-1]
    assert [r["phase"] for r in records].count("epoch") == 1  # one pass of the mixture
    assert max(last["passes/prose"], last["passes/code"]) <= 1.0
    assert max(last["passes/prose"], last["passes/code"]) > 0.8
    assert "val_bpb/code" in result.final_metrics


def test_init_from_a_mixture_run_continues_on_the_same_split(tmp_path: Path) -> None:
    data, _ = mixture_data(tmp_path)
    plugins = in_process_plugins()
    source = model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    data["run"].update(run_name="fine-tuned", init_from=str(source.run_dir))
    data["dataset"]["sources"]["code"]["weight"] = 0.9  # another mix of the same split
    data["train"]["max_steps"] = 2
    tuned = model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    assert "val_bpb/code" in tuned.final_metrics
    # a source split another way puts training text of the source run on the validation side
    data["run"]["run_name"] = "leaky"
    data["dataset"]["sources"]["code"]["split"] = {
        "name": "holdout",
        "train_fraction": 0.5,
        "shuffle": True,
    }
    with pytest.raises(ConfigError, match="was fitted on a different split"):
        model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
