"""The command line as a user runs it: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from core_support import REPO_ROOT, write_toml

from baseline.errors import BaselineError

BIN = Path(sys.executable).parent


def cli(
    *args: str, command: str = "baseline", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BASELINE_DEBUG"}
    return subprocess.run(
        [str(BIN / command), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], expected: str, code: int = 2
) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, result.stderr


def test_help_is_fast_and_light() -> None:
    code = "import sys; from baseline.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nassert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    result = cli("--help")
    assert result.returncode == 0 and "run" in result.stdout and "plugins" in result.stdout


def test_validate_the_shipped_experiment() -> None:
    result = cli("validate", str(REPO_ROOT / "experiments/tiny_shakespeare.toml"))
    assert result.returncode == 0, result.stderr
    assert (
        "valid (dataset=local_text, tokenizer=bpe, model=baseline_decoder, split=holdout, logging=console)"
        in result.stdout
    )


def test_plugins_lists_the_standard_plugins() -> None:
    result = cli("plugins")
    assert result.returncode == 0
    for dist in ("baseline-text", "baseline-bpe", "baseline-decoder", "baseline-holdout"):
        assert dist in result.stdout
    assert "logger console" in result.stdout
    assert "built in: dataset mixture (weighted sources" in result.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["model"].update(n_heads=7, d_model=128),
            "exp.toml: model.n_heads: must divide d_model=128, got 7",
        ),
        (
            lambda d: d["dataset"].update(name="local_txt"),
            "exp.toml: dataset.name: unknown dataset 'local_txt'; did you mean 'local_text'?",
        ),
        (
            lambda d: d["train"].update(epochs="two"),
            "exp.toml: train.epochs: expected an integer, got a string 'two'",
        ),
    ],
)
def test_validate_reports_one_line(
    tmp_path: Path, tiny_data: dict[str, Any], change: Any, expected: str
) -> None:
    change(tiny_data)
    write_toml(tmp_path / "exp.toml", tiny_data)
    assert_one_line_error(cli("validate", "exp.toml", cwd=tmp_path), expected)


def test_malformed_toml(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[train\n")
    assert_one_line_error(cli("validate", "bad.toml", cwd=tmp_path), "bad.toml: invalid TOML")
    assert_one_line_error(
        cli("validate", "missing.toml", cwd=tmp_path), "missing.toml: file not found"
    )


def test_bad_override(tmp_path: Path, tiny_data: dict[str, Any]) -> None:
    write_toml(tmp_path / "exp.toml", tiny_data)
    assert_one_line_error(
        cli("validate", "exp.toml", "--set", "train.epochs", cwd=tmp_path),
        "invalid override 'train.epochs'",
    )
    assert_one_line_error(
        cli("validate", "exp.toml", "--set", "train.epochs=0", cwd=tmp_path),
        "--set: train.epochs: must be >= 1, got 0",  # the override's value, not the file's
    )


def test_run_end_to_end_then_refuse_then_overwrite(
    tmp_path: Path, tiny_data: dict[str, Any]
) -> None:
    tiny_data["train"]["epochs"] = 1
    write_toml(tmp_path / "exp.toml", tiny_data)
    first = cli("exp.toml", "--set", "model.d_model=16", command="baseline-run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "runs" / "tiny"
    assert {
        "baseline_checkpoint.pt",
        "baseline_model.pt",
        "run_config.json",
        "inference_config.json",
    } <= {p.name for p in run_dir.iterdir()}
    assert '"d_model": 16' in (run_dir / "run_config.json").read_text()
    model_bytes = (run_dir / "baseline_model.pt").read_bytes()

    again = cli("run", "exp.toml", cwd=tmp_path)
    assert_one_line_error(again, "run directory already exists")
    assert (run_dir / "baseline_model.pt").read_bytes() == model_bytes

    resumed = cli(
        "run",
        "exp.toml",
        "--resume",
        "--set",
        "model.d_model=16",
        "--set",
        "train.epochs=2",
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr

    overwritten = cli("run", "exp.toml", "--overwrite", cwd=tmp_path)
    assert overwritten.returncode == 0, overwritten.stderr
    assert '"d_model": 32' in (run_dir / "run_config.json").read_text()


def test_data_errors_at_run_time(tmp_path: Path, tiny_data: dict[str, Any]) -> None:
    (tmp_path / "empty.txt").write_text("  \n\n ")
    tiny_data["dataset"]["path"] = "empty.txt"
    write_toml(tmp_path / "exp.toml", tiny_data)
    assert_one_line_error(cli("run", "exp.toml", cwd=tmp_path), "dataset.path: ")
    assert "is empty or whitespace only" in cli("run", "exp.toml", cwd=tmp_path).stderr


def test_unwritable_artifacts_root(tmp_path: Path, tiny_data: dict[str, Any]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    tiny_data["run"]["artifacts_root"] = str(blocker)
    write_toml(tmp_path / "exp.toml", tiny_data)
    assert_one_line_error(cli("run", "exp.toml", cwd=tmp_path), "cannot write the run directory")


class _RecordingStream:
    """A text stream that keeps each ``write`` call apart, as an unbuffered pipe would."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(
    "failure, expected_code",
    [(lambda: BaselineError("exp.toml: train.epochs: must be >= 1"), 2), (lambda: OSError("x"), 1)],
)
def test_error_line_is_one_write(
    monkeypatch: pytest.MonkeyPatch, failure: Any, expected_code: int
) -> None:
    # Ranks of a torchrun job share one stderr pipe; with PYTHONUNBUFFERED a line written in two
    # calls (text, then newline) interleaves with another rank's ("...resumeerror: ...").
    from baseline import cli as cli_module

    stream = _RecordingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delenv("BASELINE_DEBUG", raising=False)

    def handler(_: Any) -> int:
        raise failure()

    assert cli_module._execute(handler, None) == expected_code  # type: ignore[arg-type]
    assert len(stream.writes) == 1
    assert stream.writes[0].startswith("error: ") and stream.writes[0].endswith("\n")
    assert stream.writes[0].count("\n") == 1
