"""``baseline eval``: a finished run scored on any text, agreeing with its validation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from core_support import write_toml

from baseline.cli import main
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import RunResult, model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.testing import tiny_experiment_data
from baseline.tools.evaluation import evaluate_run

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], RunResult]:
    """A finished tiny run (one epoch) and its experiment data."""
    data = tiny_experiment_data(tmp_path_factory.mktemp("eval"))
    data["train"]["epochs"] = 1
    return data, model_pipeline(experiment_from_data(data, default_plugins().registry))


def validation_text(data: dict[str, Any]) -> bytes:
    """The run's validation segments joined by its delimiter, computed from the dataset and
    split adapters (as the pipeline does), byte for byte (``\\r\\n`` kept)."""
    registry = default_plugins().registry
    config = experiment_from_data(data, registry)
    dataset = registry.get("dataset", "local_text").create(config.dataset)
    segments = list(dataset.segments())
    sizes = np.array([len(s.encode("utf-8")) for s in segments], dtype=np.int64)
    plan = registry.get("split", "holdout").create(config.split).split(sizes)
    validation = np.asarray(plan.validation)
    assert np.array_equal(validation, np.arange(validation[0], len(segments)))  # one range
    return dataset.segment_delimiter.join(segments[i] for i in validation).encode("utf-8")


def final_validation(run_dir: Path) -> dict[str, Any]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["phase"] == "validation"][-1]


def test_eval_of_the_validation_text_matches_the_runs_validation(
    finished: tuple[dict[str, Any], RunResult], tmp_path: Path
) -> None:
    data, result = finished
    text = tmp_path / "validation.txt"
    text.write_bytes(validation_text(data))
    expected = final_validation(result.run_dir)
    run_config = json.loads((result.run_dir / "run_config.json").read_text())

    completed = subprocess.run(
        [str(BIN / "baseline"), "eval", str(result.run_dir), "--data", str(text), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    figures = json.loads(completed.stdout)
    assert abs(figures["loss"] - expected["val_loss"]) < 1e-4
    assert abs(figures["bpb"] - expected["val_bpb"]) < 1e-4
    assert abs(figures["perplexity"] - expected["val_perplexity"]) < 1e-3
    assert figures["tokens"] == run_config["data"]["validation_tokens"]
    assert figures["bytes"] == run_config["data"]["validation_bytes"]
    assert figures["segments"] == run_config["data"]["validation_segments"]
    assert figures["seq_len"] == 16 and figures["device"] == "cpu"

    # Another batch size only regroups the same windows.
    again = evaluate_run(result.run_dir, data=text, device="cpu", batch_size=3)
    assert abs(again.loss - expected["val_loss"]) < 1e-4


def test_eval_prints_the_figures_for_a_person(
    finished: tuple[dict[str, Any], RunResult], capsys: pytest.CaptureFixture[str]
) -> None:
    data, result = finished
    assert main(["eval", str(result.run_dir), "--data", data["dataset"]["path"]]) == 0
    first, second = capsys.readouterr().out.strip().splitlines()
    assert first.startswith(f"{result.run_dir} on {data['dataset']['path']}: loss ")
    assert "perplexity" in first and "bits/byte" in first
    assert second.strip().startswith("240 segments, ")
    assert second.endswith("windows of 16 tokens on cpu")


def test_eval_on_an_experiments_dataset_reads_the_same_segments(
    finished: tuple[dict[str, Any], RunResult], tmp_path: Path
) -> None:
    data, result = finished
    experiment = write_toml(tmp_path / "exp.toml", data)
    from_dataset = evaluate_run(result.run_dir, dataset=experiment)
    from_file = evaluate_run(result.run_dir, data=data["dataset"]["path"])
    assert from_dataset.data == f"[dataset] of {experiment}"
    assert (from_dataset.segments, from_dataset.tokens, from_dataset.bytes) == (
        from_file.segments,
        from_file.tokens,
        from_file.bytes,
    )
    assert from_dataset.loss == from_file.loss

    broken = write_toml(tmp_path / "broken.toml", {**data, "dataset": {"name": "local_text"}})
    code = main(["eval", str(result.run_dir), "--dataset", str(broken)])
    assert code == 2


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


def test_bad_inputs_are_one_line_each(
    finished: tuple[dict[str, Any], RunResult],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, result = finished
    run = str(result.run_dir)
    corpus = data["dataset"]["path"]
    one_line_error(
        capsys, ["eval", str(tmp_path / "nope"), "--data", corpus], "no such run directory"
    )
    unfinished = tmp_path / "unfinished"
    shutil.copytree(result.run_dir, unfinished)
    (unfinished / "inference_config.json").unlink()
    for checkpoint in unfinished.glob("baseline_checkpoint*"):
        checkpoint.unlink()
    one_line_error(
        capsys, ["eval", str(unfinished), "--data", corpus], "the run has no weights: no final"
    )
    (tmp_path / "not-a-run").mkdir()
    one_line_error(
        capsys, ["eval", str(tmp_path / "not-a-run"), "--data", corpus], "not a run directory"
    )
    one_line_error(capsys, ["eval", run, "--data", str(tmp_path / "x.txt")], "file not found")
    one_line_error(capsys, ["eval", run, "--data", str(tmp_path)], "is a directory")
    (tmp_path / "empty.txt").write_text(" \n\n \n", encoding="utf-8")
    one_line_error(
        capsys, ["eval", run, "--data", str(tmp_path / "empty.txt")], "is empty or whitespace"
    )
    (tmp_path / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    one_line_error(
        capsys, ["eval", run, "--data", str(tmp_path / "blob.bin")], "looks like a binary file"
    )
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    one_line_error(
        capsys, ["eval", run, "--data", str(tmp_path / "latin1.txt")], "is not valid UTF-8"
    )
    (tmp_path / "short.txt").write_text("ROMEO: hi", encoding="utf-8")
    one_line_error(
        capsys,
        ["eval", run, "--data", str(tmp_path / "short.txt")],
        "fewer than one window of seq_len + 1 = 17 tokens",
    )
