"""Real runs with ``logging.provider = ["tensorboard"]`` that end at start: an unwritable
log directory, and the shipped experiment. The logger contract and what TensorBoard shows of
a whole run are in ``test_tensorboard_contract.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from baseline.cli import run_main
from baseline.experiment.loading import load_experiment
from baseline.experiment.validation import validate_experiment_config
from baseline.plugins.discovery import default_plugins
from baseline.testing import (
    ContractPlugin,
    contract_experiment_data,
    using_plugins,
    write_experiment,
)
from baseline.testing.synthetic import unlisted_fields
from baseline_tensorboard import TensorBoardConfig

REPO = Path(__file__).resolve().parents[3]
EXPERIMENT = REPO / "experiments" / "tiny_shakespeare_tensorboard.toml"


def experiment(workdir: Path, **tensorboard: Any) -> dict[str, Any]:
    """The contract components' tiny run with TensorBoard as its only logger."""
    data = contract_experiment_data(workdir, provider=["tensorboard"])
    data["logging"]["tensorboard"] = tensorboard
    return data


def test_an_unwritable_log_dir_stops_the_run_with_one_line_and_no_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("in the way")
    write_experiment(tmp_path / "exp.toml", experiment(tmp_path, log_dir="a-file/tb"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASELINE_DEBUG", raising=False)
    with using_plugins(ContractPlugin()):
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
    for standard in ("baseline_text", "baseline_bpe", "baseline_decoder", "baseline_holdout"):
        pytest.importorskip(standard)  # the experiment uses the standard plugins
    registry = default_plugins().registry
    config = load_experiment(EXPERIMENT, registry)
    validate_experiment_config(config, registry)
    assert config.logging.provider == ("console", "tensorboard")
    assert config.logging.loggers["tensorboard"] == TensorBoardConfig()
    assert "baseline-tensorboard>=0.1" in config.run.requires
    assert unlisted_fields(EXPERIMENT, "tensorboard", TensorBoardConfig) == []
