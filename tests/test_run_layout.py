"""One model of a run directory (:mod:`baseline.runs.layout`): every file name is spelled in one
module, a run's state does not depend on its checkpoint kind, and ``baseline eval``,
``sample``, ``export`` and ``run.init_from`` use a stopped run's newest checkpoint.

The same tools on a real two-process FSDP run stopped by SIGTERM (sharded DCP checkpoints) are
in ``tests/test_fsdp.py`` (``nox -s distributed``).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from core_support import validation_text, write_toml

import baseline
from baseline.experiment.loading import experiment_from_data
from baseline.plugins.discovery import default_plugins
from baseline.runs.layout import RunDirectory
from baseline.runs.source_run import load_source_weights, read_source_run
from baseline.runs.table import summarize_run
from baseline.testing import tiny_experiment_data
from baseline.tools.evaluation import evaluate_run
from baseline.tools.inference import load_run

PACKAGE = Path(baseline.__file__).parent
BIN = Path(sys.executable).parent
LAYOUT = "runs/layout.py"

#: Fixed names of a run directory's files (regular expressions), and the modules that may
#: spell them.
RUN_FILE_NAMES = {
    r"run_config\.json": {LAYOUT},
    r"inference_config\.json": {LAYOUT},
    r"metrics\.jsonl": {LAYOUT},
    r"samples\.jsonl": {LAYOUT},
    r"ranks\.json": {LAYOUT},
    r"logger_errors\.log": {LAYOUT},
    # The weights record is the fit record of the fitted "file" ``weights`` (the layout's).
    r"weights\.fit\.json": set(),
    r"trainer_state\.pt": {LAYOUT},
    r"^\.metadata$": {LAYOUT},
    r"\.dcp\b": {LAYOUT},
    r"\.tmp-dir": {LAYOUT},
    r"\.old-dir": {LAYOUT},
    # The token cache's entry locks are no run directory's files.
    r"\.lock\b": {LAYOUT, "data/token_cache.py"},
    # The configurable names: their defaults are the [run] section's.
    r"baseline_checkpoint": {"config/sections.py"},
    r"baseline_model": {"config/sections.py"},
}


def string_literals(tree: ast.AST) -> list[str]:
    """Every string constant of a module except docstrings (f-string pieces included)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_each_run_file_name_is_spelled_in_one_module() -> None:
    spelled: dict[str, set[str]] = {name: set() for name in RUN_FILE_NAMES}
    for path in PACKAGE.rglob("*.py"):
        literals = string_literals(ast.parse(path.read_text(encoding="utf-8")))
        module = path.relative_to(PACKAGE).as_posix()
        for name in RUN_FILE_NAMES:
            # a whole name: a plugin's own `<prefix>_metrics.jsonl` is not the run's file
            if any(re.search(rf"(?<![\w.]){name}", literal) for literal in literals):
                spelled[name].add(module)
    wrong = {name: sorted(spelled[name] - allowed) for name, allowed in RUN_FILE_NAMES.items()}
    assert not any(wrong.values()), {name: where for name, where in wrong.items() if where}
    assert all(
        LAYOUT in spelled[name] for name, allowed in RUN_FILE_NAMES.items() if LAYOUT in allowed
    )


def test_the_layout_names_every_file(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "runs" / "a", "ck.pt", "final.pt", 3, sharded=True)
    assert run.lock == tmp_path / "runs" / ".a.lock"
    assert [p.name for p in run.checkpoint_files()] == ["ck.pt", "ck.1.pt", "ck.2.pt"]
    assert [p.name for p in run.checkpoint_directories()] == ["ck.dcp", "ck.1.dcp", "ck.2.dcp"]
    newest = run.checkpoint_directories()[0]
    assert run.staging(newest).name == "ck.dcp.tmp-dir"
    assert run.retired(newest).name == "ck.dcp.old-dir"
    assert run.final_model.name == "final.pt"
    assert [c.path.name for c in run.candidates()][:4] == [
        "ck.dcp", "ck.1.dcp", "ck.2.dcp", "ck.dcp.old-dir",
    ]  # fmt: skip


def fake_dcp(directory: Path, *, complete: bool = True) -> None:
    directory.mkdir(parents=True)
    (directory / "trainer_state.pt").write_bytes(b"x")
    if complete:
        (directory / ".metadata").write_bytes(b"x")


def never_held(_lock: Path) -> bool:
    return False


@pytest.mark.parametrize("kind", ["file", "dcp", "retired dcp", "incomplete dcp", "none"])
def test_the_state_is_the_same_for_either_checkpoint_kind(tmp_path: Path, kind: str) -> None:
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    run.run_config.write_text("{}")
    run.lock.write_text("{}")  # released: the process ended
    if kind == "file":
        run.checkpoint_files()[0].write_bytes(b"x")
    elif kind == "dcp":
        fake_dcp(run.checkpoint_directories()[0])
    elif kind == "retired dcp":  # killed in the one instant of a one-checkpoint rotation
        fake_dcp(run.retired(run.checkpoint_directories()[0]))
    elif kind == "incomplete dcp":  # killed while its shards were written
        fake_dcp(run.checkpoint_directories()[0], complete=False)
    expected = "interrupted" if kind in ("file", "dcp", "retired dcp") else "failed"
    assert run.state(lock_held=never_held, recently_written=False) == expected
    assert summarize_run(run.path, locks=frozenset()).state == expected
    assert run.state(lock_held=lambda _: True, recently_written=False) == "running"
    run.inference_config.write_text("{}")
    run.final_model.write_bytes(b"x")
    assert run.state(lock_held=never_held, recently_written=False) == "complete"


# -- the tools on a run stopped by SIGTERM -----------------------------------------------------


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, int]:
    """A real one-process run stopped by SIGTERM after a few steps (validating every step):
    its data, directory and the step of its checkpoint."""
    workdir = tmp_path_factory.mktemp("stopped")
    data = tiny_experiment_data(workdir)
    data["train"].update(num_threads=1, epochs=200)
    data["logging"]["console"] = {"val_every_n_steps": 1}
    write_toml(workdir / "exp.toml", data)
    env = {k: v for k, v in os.environ.items() if k != "BASELINE_DEBUG"}
    process = subprocess.Popen(
        [str(BIN / "baseline-run"), "exp.toml"],
        cwd=workdir,
        env={**env, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = workdir / "runs" / "tiny"
    deadline = time.time() + 120
    while (
        not (run_dir / "metrics.jsonl").exists()
        or '"validation"' not in (run_dir / "metrics.jsonl").read_text()
    ):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    step = int(stderr.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert not (run_dir / "baseline_model.pt").exists()
    return data, run_dir, step


def test_a_stopped_run_is_interrupted(stopped: tuple[dict[str, Any], Path, int]) -> None:
    _, run_dir, _ = stopped
    assert summarize_run(run_dir).state == "interrupted"


def test_eval_of_a_stopped_run_scores_its_checkpoint(
    stopped: tuple[dict[str, Any], Path, int], tmp_path: Path
) -> None:
    data, run_dir, step = stopped
    text = tmp_path / "validation.txt"
    text.write_bytes(validation_text(data))
    completed = subprocess.run(
        [str(BIN / "baseline"), "eval", str(run_dir), "--data", str(text), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"using the checkpoint at step {step} (the run did not finish)" in completed.stderr
    figures = json.loads(completed.stdout)
    [logged] = [r for r in records(run_dir) if r["phase"] == "validation" and r["step"] == step]
    assert figures["checkpoint_step"] == step
    assert abs(figures["loss"] - logged["val_loss"]) < 1e-4
    assert abs(figures["bpb"] - logged["val_bpb"]) < 1e-4


def test_sample_of_a_stopped_run_uses_its_checkpoint(
    stopped: tuple[dict[str, Any], Path, int],
) -> None:
    _, run_dir, step = stopped
    run = load_run(run_dir)
    checkpoint = torch.load(run_dir / "baseline_checkpoint.pt", weights_only=True)
    assert run.checkpoint_step == step == checkpoint["step"]
    state = run.model.state_dict()
    assert all(torch.equal(state[k], checkpoint["model"][k]) for k in checkpoint["model"])
    completed = subprocess.run(
        [str(BIN / "baseline"), "sample", str(run_dir), "--max-new-tokens", "5", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.strip() == (
        f"{run_dir}: using the checkpoint at step {step} (the run did not finish)"
    )
    assert completed.stdout.strip()


def test_export_of_a_stopped_run_computes_its_checkpoints_logits(
    stopped: tuple[dict[str, Any], Path, int], tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    _, run_dir, step = stopped
    out = tmp_path / "hf"
    completed = subprocess.run(
        [str(BIN / "baseline"), "export", str(run_dir), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"using the checkpoint at step {step} (the run did not finish)" in completed.stderr
    run = load_run(run_dir)
    hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32)
    hf.eval()
    tokens = torch.tensor([run.tokenizer.encode_batch(["ROMEO: " * 8])[0][: run.seq_len]])
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, run.model(tokens), atol=1e-5, rtol=0)


def test_init_from_a_stopped_run_starts_from_its_checkpoint(
    stopped: tuple[dict[str, Any], Path, int],
) -> None:
    data, run_dir, step = stopped
    source = read_source_run(run_dir)
    assert source.from_checkpoint and source.weights == run_dir / "baseline_checkpoint.pt"
    registry = default_plugins().registry
    config = experiment_from_data(data, registry)
    model = registry.get("model", "baseline_decoder").create(config.model).build(302, 16)
    message = load_source_weights(model, source, 16)
    assert f"using the checkpoint at step {step} (the run did not finish)" in message
    checkpoint = torch.load(run_dir / "baseline_checkpoint.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in checkpoint["model"].items())


def test_a_run_stopped_before_its_first_checkpoint_has_no_weights(
    stopped: tuple[dict[str, Any], Path, int], tmp_path: Path
) -> None:
    _, run_dir, _ = stopped
    early = tmp_path / "early"
    shutil.copytree(run_dir, early)
    for checkpoint in early.glob("baseline_checkpoint*"):
        checkpoint.unlink()
    completed = subprocess.run(
        [str(BIN / "baseline"), "sample", str(early)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 2
    assert completed.stderr == (
        f"error: {early}: the run has no weights: no final model (baseline_model.pt) and no "
        "checkpoint (it stopped before its first one); train it again, or give another run\n"
    )
    with pytest.raises(Exception, match="has no weights"):
        evaluate_run(early, data=str(run_dir / "run_config.json"))
