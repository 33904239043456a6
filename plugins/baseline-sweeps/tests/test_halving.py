"""The successive-halving pruner (optuna's ``SuccessiveHalvingPruner``) stops a trial whose
value at a rung is not among the best of the trials that reached it."""

from __future__ import annotations

from pathlib import Path

from sweep_support import baseline, experiment, table

from baseline.runs.table import summarize_run

# Seconds of training after the first rung, so the pruned run is still training when the
# pruner's SIGTERM comes (it decides within a poll, 0.2 s, of the validation).
STEPS = 1500
RUNG = 25

SWEEP = """
[sweep]
name = "halving"
[sweep.pruner]
name = "successive_halving"
min_resource = 25
reduction_factor = 2
[params]
train.learning_rate = [1e-2, 1e-6]
"""


def test_a_trial_behind_at_its_first_rung_is_pruned_there(tmp_path: Path) -> None:
    exp = experiment(tmp_path, max_steps=STEPS, val_every=RUNG, checkpoint_every=500)
    sweep = tmp_path / "halving.toml"
    sweep.write_text(SWEEP, encoding="utf-8")
    result = baseline("sweep", str(exp), str(sweep), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pruner successive_halving" in result.stdout
    rows = {row["trial"]: row for row in table("halving", tmp_path, tmp_path / "sweeps")}
    # trial 0 is alone at every rung it reaches, so it is promoted each time
    assert rows[0]["state"] == "complete" and rows[0]["steps"] == STEPS
    # trial 1 (a learning rate too small to learn) is behind trial 0 at the first rung; with a reduction factor of 2 only the better half of 2 trials goes on
    assert rows[1]["state"] == "pruned" and rows[1]["pruned_step"] == RUNG
    assert rows[1]["value"] > rows[0]["value"]
    # and its run was stopped there, after a checkpoint
    pruned = summarize_run(tmp_path / "runs" / "halving-1")
    assert pruned.state == "interrupted" and pruned.steps is not None and pruned.steps < STEPS
