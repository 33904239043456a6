"""``baseline sweep`` before any trial: the help, ``--dry-run``, and bad input as one line
naming the sweep file and the key (status 2), checked with the core's validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sweep_support import baseline, experiment


def test_the_command_is_listed_without_importing_optuna_or_torch() -> None:
    code = (
        "import sys\nfrom baseline.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'sweep' in sys.argv or True\n"
        "print('HEAVY', [m for m in ('optuna', 'torch', 'sqlalchemy') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "sweep" in result.stdout and "hyperparameter sweeps" in result.stdout
    assert "HEAVY []" in result.stdout
    assert "table NAME" in baseline("sweep", "--help", cwd=Path.cwd()).stdout


def test_dry_run_prints_the_trials_and_writes_nothing(tmp_path: Path) -> None:
    exp = experiment(tmp_path)
    result = baseline(
        "sweep", str(exp), "--name", "lr-width", "--param", "train.learning_rate=3e-3,8e-3",
        "--param", "model.d_model=32,64", "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sweep lr-width: grid, 4 trials, minimize val_bpb")
    assert "trial 0: lr-width-0  train.learning_rate=0.003 model.d_model=32" in lines
    assert "trial 3: lr-width-3  train.learning_rate=0.008 model.d_model=64" in lines
    assert lines[-1] == "every trial's config is valid (4 checked)"
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "runs").exists()
    elsewhere = baseline(
        "sweep", str(exp), "--name", "lr", "--param", "train.learning_rate=3e-3,8e-3",
        "--set", f'run.artifacts_root="{tmp_path / "other" / "runs"}"', "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert (
        f"store: {tmp_path / 'other' / 'sweeps' / 'lr'}; runs: {tmp_path / 'other' / 'runs'}/lr-<k>"
        in elsewhere.stdout
    )

    sweep = tmp_path / "random.toml"
    sweep.write_text(
        '[sweep]\nmethod = "random"\ntrials = 3\nseed = 5\nrepeats = 2\n'
        "[params]\ntrain.learning_rate = { low = 1e-4, high = 1e-2, log = true }\n"
        'model.mlp = ["gelu", "swiglu"]\n',
        encoding="utf-8",
    )
    first = baseline("sweep", str(exp), str(sweep), "--dry-run", cwd=tmp_path)
    again = baseline("sweep", str(exp), str(sweep), "--dry-run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout  # the points do not depend on the process
    trials = [line for line in first.stdout.splitlines() if line.startswith("trial ")]
    assert len(trials) == 6 and trials[1].startswith("trial 0: random-0-r1 ")
    # the repeats of a point share its values, with their own seeds
    assert trials[0].endswith("run.seed=7") and trials[1].endswith("run.seed=8")
    assert trials[0].split("  ")[1].rsplit(" ", 1)[0] == trials[1].split("  ")[1].rsplit(" ", 1)[0]
    assert len({line.split("  ")[1] for line in trials}) == 6


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            "train.learnin_rate = [3e-3, 8e-3]",
            "error: sweep.toml: params.train.learnin_rate: unknown key; did you mean 'learning_rate'?",
        ),
        (
            "train.learning_rate = [3e-3, -1.0]",
            "error: sweep.toml: params.train.learning_rate: must be > 0, got -1.0",
        ),
        (
            "model.d_model = [32, 33]",
            "error: sweep.toml: params.model.d_model: model.d_model = 33 is rejected: ",
        ),
        (
            "train.learning_rate = { low = 1e-2, high = 1e-3 }",
            "error: sweep.toml: params.train.learning_rate: empty range: low 0.01 >= high 0.001",
        ),
        (
            'train.learning_rate = [3e-3]\n[sweep]\nmetric = "val_bdb"',
            "error: sweep.toml: sweep.metric: no trial logs 'val_bdb'; did you mean 'val_bpb'?",
        ),
        (
            'train.learning_rate = [3e-3]\n[sweep]\nset = ["train.max_step=3"]',
            "error: sweep.toml: sweep.set: train.max_step: unknown key; did you mean 'max_steps'?",
        ),
    ],
    ids=["unknown-key", "rejected-value", "cross-field", "empty-range", "metric", "fixed-set"],
)
def test_bad_input_is_one_line_naming_the_sweep_file_and_key(
    tmp_path: Path, params: str, expected: str
) -> None:
    exp = experiment(tmp_path)
    (tmp_path / "sweep.toml").write_text(f"[params]\n{params}\n", encoding="utf-8")
    result = baseline("sweep", str(exp), "sweep.toml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(expected), result.stderr
    assert not (tmp_path / "sweeps").exists()  # refused before anything was written


def test_bad_command_line_input(tmp_path: Path) -> None:
    exp = experiment(tmp_path)
    result = baseline("sweep", str(exp), "--param", "train.learning_rate=log:0..1", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr == "error: --param: train.learning_rate: a log range needs low > 0, got 0\n"
    )
    result = baseline("sweep", "table", "nope", "--root", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'nope'}: no sweep there (no sweep.json)")


def test_trials_are_grouped_in_the_loggers_that_can(tmp_path: Path) -> None:
    for module in ("baseline_wandb", "baseline_mlflow", "baseline_tensorboard"):
        pytest.importorskip(module)
    exp = experiment(tmp_path)
    text = exp.read_text(encoding="utf-8").replace(
        'provider = "console"', 'provider = ["console", "wandb", "mlflow", "tensorboard"]'
    )
    exp.write_text(text + '[logging.wandb]\nmode = "offline"\n', encoding="utf-8")
    result = baseline(
        "sweep", str(exp), "--name", "grouped", "--param", "train.learning_rate=3e-3,8e-3",
        "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # each set by a --set override of every trial, validated with the rest of its config
    log_dir = tmp_path / "sweeps" / "grouped" / "tensorboard"
    assert (
        'every trial also sets: logging.wandb.group="grouped" '
        'logging.mlflow.experiment_name="grouped" '
        f'logging.tensorboard.log_dir="{log_dir}"'
    ) in result.stdout.splitlines()
