"""Text generation: sampling filters, the Python API and `baseline sample`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from baseline.errors import ConfigError
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.tools.generation import SamplingOptions, filter_logits, generate
from baseline.tools.inference import load_run

BIN = Path(sys.executable).parent


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-20, 20), min_size=2, max_size=30),
    st.integers(1, 30),
    st.floats(0.01, 1.0),
)
def test_filters_keep_the_top_tokens(values: list[float], top_k: int, top_p: float) -> None:
    logits = torch.tensor([values])
    kept = torch.isfinite(filter_logits(logits, top_k, None))[0]
    assert kept.sum() >= min(top_k, len(values))
    assert logits[0][kept].min() >= logits[0][~kept].max() if (~kept).any() else True
    nucleus = torch.isfinite(filter_logits(logits, None, top_p))[0]
    probabilities = torch.softmax(logits[0], dim=-1)
    assert probabilities[nucleus].max() == probabilities.max()  # a most likely token stays
    assert probabilities[nucleus].sum() >= top_p - 1e-6 or nucleus.all()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from baseline.plugins.discovery import default_plugins
    from baseline.testing import tiny_experiment_data

    data = tiny_experiment_data(tmp_path_factory.mktemp("gen"))
    return model_pipeline(experiment_from_data(data, default_plugins().registry)).run_dir


def test_generate_is_reproducible_with_a_seed(trained_run: Path) -> None:
    run = load_run(trained_run)
    options = SamplingOptions(max_new_tokens=20, temperature=0.8, top_k=10, seed=3, num_samples=3)
    first, again = generate(run, "ROMEO:", options), generate(run, "ROMEO:", options)
    assert first == again and len(first) == 3
    greedy = SamplingOptions(max_new_tokens=20, temperature=0.0, num_samples=2)
    a, b = generate(run, "ROMEO:", greedy)
    assert a == b  # greedy decoding has no randomness


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"temperature": -1.0}, "--temperature"),
        ({"top_k": 0}, "--top-k"),
        ({"top_p": 1.5}, "--top-p"),
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"num_samples": 0}, "--num-samples"),
    ],
)
def test_bad_options(options: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError, match=f"^{flag}: must be"):
        SamplingOptions(**options).check()


def sample(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BASELINE_DEBUG"}
    return subprocess.run(
        [str(BIN / "baseline"), "sample", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_sample_command(trained_run: Path, tmp_path: Path) -> None:
    result = sample(
        str(trained_run),
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "15",
        "--seed",
        "1",
        "--num-samples",
        "2",
        "--top-p",
        "0.9",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("--- sample") == 2 and result.stdout.count("ROMEO:") >= 2
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("But, soft!", encoding="utf-8")
    from_file = sample(
        str(trained_run), "--prompt-file", str(prompt), "--max-new-tokens", "5", "--seed", "1"
    )
    assert from_file.returncode == 0 and from_file.stdout.startswith("But, soft!")
    again = sample(
        str(trained_run), "--prompt-file", str(prompt), "--max-new-tokens", "5", "--seed", "1"
    )
    assert again.stdout == from_file.stdout


def test_sample_errors_are_one_line(tmp_path: Path, trained_run: Path) -> None:
    missing = sample(str(tmp_path))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "not a run directory (no run_config.json)" in missing.stderr
    bad = sample(str(trained_run), "--top-p", "2")
    assert (
        bad.returncode == 2 and bad.stderr.strip() == "error: --top-p: must be in (0, 1], got 2.0"
    )


class ScriptedModel(torch.nn.Module):
    """Predicts ``script[i]`` as the i-th generated token (to test rendering, not modelling)."""

    def __init__(self, script: list[int], vocab_size: int) -> None:
        super().__init__()
        self.script, self.vocab_size, self.calls = script, vocab_size, 0
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = torch.full((*tokens.shape, self.vocab_size), -1e9)
        logits[:, -1, self.script[self.calls]] = 0.0
        self.calls += 1
        return logits


def test_end_of_segment_is_rendered_as_the_dataset_delimiter(trained_run: Path) -> None:
    run = load_run(trained_run)
    assert run.inference_config["end_of_segment_text"] == "\n\n"
    assert run.end_of_segment_text == "\n\n"
    speech, other = run.tokenizer.encode_batch(["ROMEO: soft", "JULIET: a word"])
    eos = run.end_of_segment_id
    script = [*speech, eos, *other, eos, *speech]
    greedy = SamplingOptions(max_new_tokens=len(script), temperature=0.0)
    scripted = attrs.evolve(run, model=ScriptedModel(script, run.tokenizer.vocab_size))
    [text] = generate(scripted, "", greedy)
    assert text == "ROMEO: soft\n\nJULIET: a word\n\nROMEO: soft"
    stop = attrs.evolve(greedy, stop_at_segment_end=True)
    scripted = attrs.evolve(run, model=ScriptedModel(script, run.tokenizer.vocab_size))
    assert generate(scripted, "", stop) == ["ROMEO: soft"]


def test_sample_command_can_stop_at_the_segment_end(trained_run: Path) -> None:
    completed = subprocess.run(
        [
            *(str(BIN / "baseline"), "sample", str(trained_run), "--prompt", "ROMEO:"),
            *("--max-new-tokens", "60", "--seed", "1", "--stop-at-segment-end"),
            *("--num-samples", "4"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    samples = completed.stdout.split("--- sample ")[1:]
    assert len(samples) == 4
    assert all("\n\n" not in sample.strip("\n") for sample in samples)
