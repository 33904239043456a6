"""``baseline new-plugin``: its refusals, the files it writes, and generated components that pass
the contract checks (imported from the generated ``src`` directory, without installing)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from baseline.cli import main
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.testing import (
    SAMPLE_TEXTS,
    check_dataset_adapter,
    check_logger_adapter,
    check_model_adapter,
    check_split_adapter,
    check_tokenizer_adapter,
    contract_experiment_data,
    in_process_plugins,
    using_plugins,
)
from baseline.tools.scaffold import KINDS, write_plugin

BIN = Path(sys.executable).parent


def new_plugin(*args: str, cwd: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``baseline new-plugin ARGS`` in-process in ``cwd``: (exit status, stderr)."""
    old = Path.cwd()
    try:
        os.chdir(cwd)
        try:
            code = main(["new-plugin", *args])
        except SystemExit as stop:  # argparse usage errors
            code = int(stop.code or 0)
    finally:
        os.chdir(old)
    return code, capsys.readouterr().err


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Any]:
    """``generated(name, *kinds)`` writes a plugin under ``tmp_path`` and imports its module
    from the generated ``src`` directory; the modules are forgotten afterwards."""
    added: list[str] = []

    def make(name: str, *kinds: str) -> ModuleType:
        directory = write_plugin(name, kinds, tmp_path / name)
        src = str(directory / "src")
        sys.path.insert(0, src)
        added.append(src)
        return importlib.import_module(name.replace("-", "_"))

    yield make
    for src in added:
        sys.path.remove(src)
        for module in [m for m, v in sys.modules.items() if src in str(getattr(v, "__file__", ""))]:
            del sys.modules[module]


# -- refusals: one line, exit status 2, nothing written ---------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["My Plugin", "--kind", "model"], "invalid plugin name 'My Plugin'"),
        (["9lives", "--kind", "model"], "invalid plugin name '9lives'"),
        (["my--plugin", "--kind", "model"], "invalid plugin name 'my--plugin'"),
        (["json", "--kind", "model"], "would shadow a Python module"),
        (["baseline", "--kind", "model"], "would shadow the core"),
        (["my-plugin", "--kind", "datset"], "unknown kind 'datset'; did you mean 'dataset'?"),
        (["my-plugin", "--kind", "model,loger"], "unknown kind 'loger'; did you mean 'logger'?"),
        (["my-plugin"], "the following arguments are required: --kind"),
    ],
)
def test_refusals_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code, err = new_plugin(*args, cwd=tmp_path, capsys=capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_kind_lists_the_kinds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, err = new_plugin("my-plugin", "--kind", "weights", cwd=tmp_path, capsys=capsys)
    assert "Choose from: dataset, tokenizer, model, split, logger" in err


def test_a_non_empty_target_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "my-plugin").mkdir()
    (tmp_path / "my-plugin" / "notes.txt").write_text("mine")
    code, err = new_plugin("my-plugin", "--kind", "model", cwd=tmp_path, capsys=capsys)
    assert code == 2 and "my-plugin exists and is not empty" in err
    assert [p.name for p in (tmp_path / "my-plugin").iterdir()] == ["notes.txt"]
    (tmp_path / "target").write_text("a file")
    code, err = new_plugin("x", "--kind", "model", "--dir", "target", cwd=tmp_path, capsys=capsys)
    assert code == 2 and "target exists and is not a directory" in err


def test_the_command_line_refusal_has_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "baseline"), "new-plugin", "my-plugin", "--kind", "modle"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --kind: unknown kind 'modle'; did you mean 'model'? "
        "Choose from: dataset, tokenizer, model, split, logger"
    ]
    assert list(tmp_path.iterdir()) == []


# -- what it writes ----------------------------------------------------------------------------


def test_it_writes_an_installable_distribution(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = new_plugin("my-plugin", *(f"--kind={k}" for k in KINDS), cwd=tmp_path, capsys=capsys)
    assert code == 0
    root = tmp_path / "my-plugin"
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    module_files = {f"src/my_plugin/{n}.py" for n in ("__init__", *KINDS, "network")}
    assert files == {
        "pyproject.toml",
        "README.md",
        ".gitignore",
        "src/my_plugin/py.typed",
        "tests/test_my_plugin.py",
        *module_files,
    }
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["build-system"]["build-backend"] == "hatchling.build"
    assert project["project"]["name"] == "my-plugin"
    assert project["project"]["dependencies"] == ["baseline>=0.1,<0.2"]
    assert project["project"]["entry-points"]["baseline.plugins"] == {"my_plugin": "my_plugin"}
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/my_plugin"]
    for name in files - {"src/my_plugin/py.typed"}:
        assert "{{" not in (root / name).read_text(), name
    for path in root.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")
    readme = (root / "README.md").read_text()
    assert "`my_plugin_logger`" in readme and "pip install -e ." in readme


def test_the_dir_option_and_an_existing_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    code, _ = new_plugin(
        "acme-text", "--kind", "dataset", "--dir", "empty", cwd=tmp_path, capsys=capsys
    )
    assert code == 0
    assert (tmp_path / "empty/src/acme_text/dataset.py").is_file()
    assert not (tmp_path / "empty/src/acme_text/model.py").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_one_kind_alone_writes_only_its_component(
    tmp_path: Path, kind: str, generated: Any
) -> None:
    module = generated(f"solo-{kind}", kind)
    registry = in_process_plugins(module, installed=False).registry
    assert [(c.kind, c.name) for c in registry.components()] == [(kind, f"solo_{kind}_{kind}")]
    tests = (tmp_path / f"solo-{kind}/tests/test_solo_{kind}.py").read_text()
    assert f"check_{kind}_adapter" in tests
    assert not {f"check_{k}_adapter" for k in KINDS if k != kind} & set(tests.split())


# -- the generated components pass the contract checks ----------------------------------------


def test_the_generated_components_pass_the_contract_checks(tmp_path: Path, generated: Any) -> None:
    generated("acme-kit", *KINDS)
    registry = in_process_plugins(sys.modules["acme_kit"], installed=False).registry
    assert registry.names("dataset") == ["acme_kit_dataset"]

    def create(kind: str, **fields: Any) -> Any:
        component = registry.get(kind, f"acme_kit_{kind}")
        return component.create(component.config_cls(**fields))

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one\n\ntwo\nthree, café\n", encoding="utf-8")
    assert check_dataset_adapter(create("dataset", path=str(corpus))) == [
        "one",
        "two",
        "three, café",
    ]
    check_tokenizer_adapter(lambda: create("tokenizer"), list(SAMPLE_TEXTS), tmp_path / "tok")
    check_model_adapter(create("model", d_model=8, hidden=16))
    plan = check_split_adapter(create("split", every=3), [5] * 9)
    assert plan.validation.tolist() == [2, 5, 8]
    check_logger_adapter(create("logger"), tmp_path / "run")
    lines = (tmp_path / "run/acme_kit_metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 * (1 + 3 + 1)  # two sessions: start, three records, finish


def test_the_generated_plugin_imports_no_torch_until_a_model_is_built(tmp_path: Path) -> None:
    write_plugin("light-kit", KINDS, tmp_path / "light-kit")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path / 'light-kit/src')!r})\n"
        "from baseline.testing import in_process_plugins\n"
        "import light_kit\n"
        "registry = in_process_plugins(light_kit, installed=False).registry\n"
        "for c in registry.components(): c.create(c.config_cls(**({'path': 'x'} if c.kind == 'dataset' else {})))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_a_run_trains_through_all_five_generated_components(tmp_path: Path, generated: Any) -> None:
    module = generated("acme-run", *KINDS)
    data = contract_experiment_data(tmp_path / "work")
    data["dataset"] = {"name": "acme_run_dataset", "path": data["dataset"]["path"]}
    data["tokenizer"] = {"name": "acme_run_tokenizer"}
    data["model"] = {"name": "acme_run_model", "d_model": 16, "hidden": 32}
    data["split"] = {"name": "acme_run_split", "every": 5}
    data["train"]["epochs"] = 1
    data["logging"] = {"provider": ["acme_run_logger"], "log_every_n_steps": 2}
    with using_plugins(module, installed=False) as plugins:
        config = experiment_from_data(data, plugins.registry)
        run_dir = model_pipeline(config, plugins=plugins).run_dir
    lines = (run_dir / "acme_run_metrics.jsonl").read_text().splitlines()
    assert '"event": "start"' in lines[0] and lines[-1] == '{"event": "finish", "exit_code": 0}'
    assert any('"phase": "validation"' in line for line in lines)
    assert (run_dir / "acme_run_tokenizer.json").is_file()
