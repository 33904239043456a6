"""``baseline plot``: the plotted series are the metrics files' values, and the image decodes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from baseline.cli import main
from baseline.errors import DataError
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.runs.plots import INSTALL_HINT, build_figure, metric_series
from baseline.testing import tiny_experiment_data


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real runs of the tiny experiment with different learning rates, with periodic
    validation (so ``val_loss`` is in ``validation`` and ``epoch`` records)."""
    workdir = tmp_path_factory.mktemp("plot")
    registry = default_plugins().registry
    run_dirs = []
    for name, learning_rate in (("fast", 3e-3), ("slow", 5e-4)):
        data = tiny_experiment_data(workdir)
        data["run"]["run_name"] = name
        data["train"].update(num_threads=1, learning_rate=learning_rate)
        data["logging"]["console"] = {"val_every_n_steps": 10}
        run_dirs.append(model_pipeline(experiment_from_data(data, registry)).run_dir)
    return run_dirs[0], run_dirs[1]


def test_val_bpb_series_against_tokens_and_steps(runs: tuple[Path, Path]) -> None:
    run_dir = runs[0]
    validations = [r for r in metrics(run_dir) if r["phase"] == "validation"]
    assert len(validations) > 2  # periodic and end-of-epoch validations
    series = metric_series(run_dir, "val_bpb", "tokens")
    assert series.label == "fast"
    assert series.x == tuple(float(r["tokens_seen"]) for r in validations)
    assert series.y == tuple(r["val_bpb"] for r in validations)
    by_step = metric_series(run_dir, "val_loss", "step")  # also in the epoch records: once
    assert by_step.x == tuple(float(r["step"]) for r in validations)
    assert by_step.y == tuple(r["val_loss"] for r in validations)


def test_train_loss_and_epoch_keys(runs: tuple[Path, Path]) -> None:
    records = metrics(runs[1])
    train = [r for r in records if r["phase"] == "train"]
    series = metric_series(runs[1], "train_loss", "step")
    assert series.x == tuple(float(r["step"]) for r in train)
    assert series.y == tuple(r["train_loss"] for r in train)
    epochs = [r for r in records if r["phase"] == "epoch"]
    per_epoch = metric_series(runs[1], "train_loss_epoch", "tokens")
    assert per_epoch.y == tuple(r["train_loss_epoch"] for r in epochs)


def test_time_axis_is_the_training_time_of_each_step(runs: tuple[Path, Path]) -> None:
    records = metrics(runs[0])
    train = [r for r in records if r["phase"] == "train"]
    series = metric_series(runs[0], "train_loss", "time")
    elapsed, previous, expected = 0.0, 0, []
    for record in train:
        elapsed += (record["step"] - previous) * record["step_time_ms"] / 1000
        previous = record["step"]
        expected.append(elapsed)
    assert series.x == pytest.approx(expected)
    assert list(series.x) == sorted(series.x)
    validation = metric_series(runs[0], "val_bpb", "time")
    assert 0 < validation.x[0] < validation.x[-1] == pytest.approx(expected[-1])


def test_the_figure_draws_exactly_the_series(runs: tuple[Path, Path]) -> None:
    pytest.importorskip("matplotlib")
    series = [metric_series(run_dir, "val_bpb", "tokens") for run_dir in runs]
    figure = build_figure(series, "val_bpb", "tokens")
    (axes,) = figure.axes
    lines = axes.get_lines()
    assert [line.get_label() for line in lines] == ["fast", "slow"]
    for line, one in zip(lines, series, strict=True):
        assert tuple(line.get_xdata()) == one.x
        assert tuple(line.get_ydata()) == one.y
    assert axes.get_xlabel() == "tokens seen" and axes.get_ylabel() == "val_bpb"


def test_the_command_writes_a_png_of_both_runs(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = pytest.importorskip("matplotlib.image")
    output = tmp_path / "out" / "val_bpb.png"
    assert main(["plot", str(runs[0]), str(runs[1]), "-o", str(output)]) == 0
    points = sum(len(metric_series(r, "val_bpb").x) for r in runs)
    assert capsys.readouterr().out == (
        f"{output}: val_bpb against tokens seen, 2 runs, {points} points\n"
    )
    pixels = image.imread(output)
    assert pixels.shape == (600, 960, 4)  # 8 x 5 inches at 120 dpi, RGBA
    assert pixels[..., :3].min() < 0.5  # something was drawn on the white background
    # Other formats follow the suffix.
    assert (
        main(
            [
                "plot",
                str(runs[0]),
                "--metric",
                "train_loss",
                "--x",
                "time",
                "-o",
                str(tmp_path / "t.svg"),
            ]
        )
        == 0
    )
    assert (tmp_path / "t.svg").read_text().lstrip().startswith("<?xml")


def test_a_missing_metric_lists_the_available_ones(
    runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(DataError) as caught:
        metric_series(runs[0], "val_bpd")
    assert str(caught.value).startswith(
        f"{runs[0] / 'metrics.jsonl'}: no 'val_bpd' values; it has: "
    )
    assert "learning_rate" in str(caught.value) and "val_bpb" in str(caught.value)
    assert main(["plot", str(runs[0]), "--metric", "val_bpd", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_not_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'metrics.jsonl'}: not found; is it a run directory?\n"
    )


def test_an_unknown_image_format(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    assert main(["plot", str(runs[0]), "-o", str(tmp_path / "x.docx")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: --output: Format 'docx' is not supported") and err.count("\n") == 1
    )


def test_without_matplotlib_one_line_says_how_to_install(
    runs: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["plot", str(runs[0]), "-o", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == f"error: {INSTALL_HINT}\n"
    assert INSTALL_HINT.startswith("baseline plot needs matplotlib")
    assert 'pip install "baseline[plot]"' in INSTALL_HINT
    assert not (tmp_path / "x.png").exists()
