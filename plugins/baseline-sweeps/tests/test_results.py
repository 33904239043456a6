"""A finished sweep (one trial complete, one pruned by the median pruner): the pruned trial, the
results in every format, the best trial's experiment file, the plot, a second run that runs
nothing, and a store that belongs to another sweep."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from typing import Any

import pytest
from sweep_support import attempts, baseline, experiment, table

from baseline.experiment.loading import experiment_from_data
from baseline.plugins.discovery import default_plugins
from baseline.runs.table import summarize_run

# The pruner decides within a poll (0.2 s) of a validation, while the run goes on: enough
# steps after the first validation (seconds of them) that the pruned run is still training
# when its SIGTERM comes, however fast or loaded the machine.
STEPS = 1500
VAL_EVERY = 25

SWEEP = """
[sweep]
name = "prune"
[sweep.pruner]
name = "median"
startup_trials = 1
[params]
train.learning_rate = [1e-2, 1e-6]
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("finished")
    exp = experiment(work, max_steps=STEPS, val_every=VAL_EVERY, checkpoint_every=500)
    sweep = work / "prune.toml"
    sweep.write_text(SWEEP, encoding="utf-8")
    result = baseline("sweep", str(exp), str(sweep), cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"work": work, "exp": exp, "sweep": sweep, "output": result.stdout}


def test_a_hopeless_trial_is_pruned_at_the_step_it_reached(finished: dict[str, Any]) -> None:
    work = finished["work"]
    rows = {row["trial"]: row for row in table("prune", work, work / "sweeps")}
    assert rows[0]["state"] == "complete" and rows[0]["steps"] == STEPS
    pruned = rows[1]
    assert pruned["state"] == "pruned"
    assert pruned["pruned_step"] == VAL_EVERY  # its first validation was worse than trial 0's
    assert VAL_EVERY <= pruned["steps"] < STEPS
    assert pruned["value"] > rows[0]["value"]
    assert "[2/2] prune-1 pruned  val_bpb" not in finished["output"]
    assert f"prune-1 pruned  at step {VAL_EVERY}" in finished["output"]
    # the pruned run stopped like a run stopped by SIGTERM: interrupted, with a checkpoint
    run = summarize_run(work / "runs" / "prune-1")
    assert run.state == "interrupted" and run.steps == pruned["steps"]
    assert summarize_run(work / "runs" / "prune-0").state == "complete"


def test_the_table_in_every_format_parses_back(finished: dict[str, Any]) -> None:
    work = finished["work"]
    rows = table("prune", work, work / "sweeps")
    assert [row["trial"] for row in rows] == [0, 1]  # sorted by the metric, complete first

    result = baseline("sweep", "table", "prune", "--root", "sweeps", "--format", "csv", cwd=work)
    assert result.returncode == 0, result.stderr
    records = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [int(r["trial"]) for r in records] == [0, 1]
    assert [r["state"] for r in records] == ["complete", "pruned"]
    assert float(records[0]["val_bpb"]) == pytest.approx(rows[0]["value"])
    assert float(records[0]["train.learning_rate"]) == 1e-2
    assert records[1]["pruned_step"] == str(VAL_EVERY)

    result = baseline("sweep", "table", "prune", "--root", "sweeps", "--format", "md", cwd=work)
    lines = result.stdout.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:4] == ["trial", "run", "train.learning_rate", "val_bpb"]
    assert set(lines[1]) <= {"|", "-"}
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [(c[0], c[1], c[4]) for c in cells] == [
        ("0", "prune-0", "complete"),
        ("1", "prune-1", f"pruned at step {VAL_EVERY}"),
    ]
    assert float(cells[0][3]) == pytest.approx(rows[0]["value"], abs=1e-4)

    result = baseline("sweep", "table", str(work / "sweeps" / "prune"), cwd=work)
    assert result.returncode == 0 and "prune-0" in result.stdout and "pruned" in result.stdout


def test_best_writes_the_trials_complete_experiment(finished: dict[str, Any]) -> None:
    work = finished["work"]
    result = baseline("sweep", "best", "prune", "--root", "sweeps", "-o", "best.toml", cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("best.toml: trial 0 of sweep prune, val_bpb ")
    data = tomllib.loads((work / "best.toml").read_text(encoding="utf-8"))
    recorded = json.loads((work / "runs" / "prune-0" / "run_config.json").read_text())["config"]
    assert recorded["run"].pop("run_name") == "prune-0"
    assert data == recorded  # the trial's config, without its run name
    assert data["train"]["learning_rate"] == 1e-2
    registry = default_plugins().registry
    assert experiment_from_data(data, registry) == experiment_from_data(recorded, registry)
    assert baseline("validate", "best.toml", cwd=work).returncode == 0


def test_plot_draws_the_metric_against_each_parameter(finished: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib")
    work = finished["work"]
    result = baseline("sweep", "plot", "prune", "--root", "sweeps", "-o", "plot.png", cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "plot.png: val_bpb against 1 parameter, 2 runs\n"
    assert (work / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_running_the_same_command_again_reruns_nothing(finished: dict[str, Any]) -> None:
    work = finished["work"]
    result = baseline("sweep", str(finished["exp"]), str(finished["sweep"]), cwd=work)
    assert result.returncode == 0, result.stderr
    assert "continuing" in result.stdout
    assert "starts" not in result.stdout and "resumes" not in result.stdout
    for name in ("prune-0", "prune-1"):
        assert len(attempts(work / "sweeps" / "prune" / "logs" / f"{name}.log")) == 1
    runs = baseline("runs", "runs", cwd=work)  # trials are ordinary runs
    assert "prune-0" in runs.stdout and "prune-1" in runs.stdout


def test_a_store_of_another_sweep_is_refused(finished: dict[str, Any]) -> None:
    work = finished["work"]
    other = work / "other.toml"
    other.write_text(SWEEP.replace("[1e-2, 1e-6]", "[1e-2, 3e-3]"), encoding="utf-8")
    result = baseline("sweep", str(finished["exp"]), "other.toml", cwd=work)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(
        f"error: other.toml: params: the store {work / 'sweeps' / 'prune'} holds another sweep "
        "named 'prune' (params differ); choose another sweep name, or delete"
    ), result.stderr
    result = baseline(
        "sweep",
        str(finished["exp"]),
        str(finished["sweep"]),
        "--set",
        "train.max_steps=20",
        cwd=work,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {finished['sweep']}: sweep.set: the store")
    assert "its set is ['train.max_steps=20']" not in result.stderr  # the store's, not this one's
