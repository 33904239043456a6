"""The sweep file and ``--param``: parsed into a sweep, or refused in one line naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from baseline.errors import ConfigError
from baseline_sweeps.spec import CommandLine, build_spec, parse_cli_param, toml_value
from baseline_sweeps.tomlout import dumps

SWEEP = """
[sweep]
name = "lr-width"
metric = "val_bpb"
goal = "minimize"
method = "tpe"
trials = 12
seed = 3
repeats = 2
retries = 2
set = ["train.max_steps=20"]

[sweep.pruner]
name = "median"
startup_trials = 1
warmup_steps = 10

[params]
train.learning_rate = { low = 1e-4, high = 1e-2, log = true }
train.weight_decay = { low = 0.0, high = 0.3 }
model.d_model = { low = 32, high = 128, step = 32 }
model.mlp = ["gelu", "swiglu"]
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def spec_of(tmp_path: Path, text: str, **command_line: object):  # type: ignore[no-untyped-def]
    (tmp_path / "sweep.toml").write_text(text, encoding="utf-8")
    return build_spec("sweep.toml", CommandLine(**command_line), default_name="x")  # type: ignore[arg-type]


def test_every_field_of_a_sweep_file(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, SWEEP)
    assert (spec.name, spec.metric, spec.goal, spec.method) == (
        "lr-width",
        "val_bpb",
        "minimize",
        "tpe",
    )
    assert (spec.trials, spec.seed, spec.repeats, spec.retries) == (12, 3, 2, 2)
    assert spec.fixed == ("train.max_steps=20",)
    assert (spec.pruner.name, spec.pruner.startup_trials, spec.pruner.warmup_steps) == (
        "median",
        1,
        10,
    )
    described = {param.key: param.describe() for param in spec.params}
    assert described == {
        "train.learning_rate": "log-uniform [0.0001, 0.01]",
        "train.weight_decay": "uniform [0, 0.3]",
        "model.d_model": "integers [32, 128] step 32",
        "model.mlp": "{gelu, swiglu}",
    }
    assert spec.param("model.d_model").grid_values() == (32, 64, 96, 128)
    # the command line wins over the file
    assert spec_of(tmp_path, SWEEP, trials=5, method="random").trials == 5


def test_a_grid_from_the_command_line() -> None:
    params = ("train.learning_rate=3e-3,8e-3", "model.d_model=96,128")
    spec = build_spec(None, CommandLine(name="lr-width", params=params), default_name="x")
    assert spec.method == "grid" and spec.trials == 4
    assert spec.points() == [
        {"train.learning_rate": 3e-3, "model.d_model": 96},
        {"train.learning_rate": 3e-3, "model.d_model": 128},
        {"train.learning_rate": 8e-3, "model.d_model": 96},
        {"train.learning_rate": 8e-3, "model.d_model": 128},
    ]
    assert parse_cli_param("model.mlp=gelu,swiglu").values == ("gelu", "swiglu")
    log_range = parse_cli_param("train.learning_rate=log:1e-4..1e-2")
    assert (log_range.low, log_range.high, log_range.log) == (1e-4, 1e-2, True)
    assert parse_cli_param("train.warmup_steps=0..100").integer
    sampled = build_spec(
        None, CommandLine(params=("train.warmup_steps=0..100",), trials=3), default_name="x"
    )
    assert sampled.method == "random" and sampled.name == "x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[params]\ntrain.learning_rate = { low = 1e-2, high = 1e-3 }",
            "sweep.toml: params.train.learning_rate: empty range: low 0.01 >= high 0.001",
        ),
        (
            "[params]\ntrain.learning_rate = []",
            "sweep.toml: params.train.learning_rate: empty list of values; give at least one",
        ),
        (
            "[params]\ntrain.learning_rate = { low = 0.0, high = 1.0, log = true }",
            "sweep.toml: params.train.learning_rate: a log range needs low > 0, got 0.0",
        ),
        (
            "[params]\ntrain.learning_rate = { lo = 1, high = 2 }",
            "sweep.toml: params.train.learning_rate: unknown range key 'lo'; did you mean 'low'?",
        ),
        (
            "[params]\ntrain.epochs = 2",
            "sweep.toml: params.train.epochs: expected a list of values or a range",
        ),
        (
            '[params]\nrun.run_name = ["a", "b"]',
            "sweep.toml: params.run.run_name: is set by the sweep for each trial",
        ),
        (
            '[sweep]\nmetrc = "val_bpb"\n[params]\ntrain.seed = [1]',
            "sweep.toml: sweep.metrc: unknown key; did you mean 'metric'?",
        ),
        (
            '[sweep]\nmetric = "val_bdb"\n[params]\ntrain.epochs = [1]',
            "sweep.toml: sweep.metric: no trial logs 'val_bdb'; did you mean 'val_bpb'?",
        ),
        (
            '[sweep]\nmethod = "grdi"\n[params]\ntrain.epochs = [1]',
            "sweep.toml: sweep.method: unknown method 'grdi'; did you mean 'grid'?",
        ),
        (
            '[params]\ntrain.learning_rate = { low = 1e-4, high = 1e-2, log = true }\n[sweep]\nmethod = "grid"',
            "sweep.toml: params.train.learning_rate: a grid needs a list of values or a range with a step",
        ),
        (
            '[sweep]\nmethod = "tpe"\n[params]\ntrain.epochs = [1, 2]',
            "sweep.toml: sweep.trials: method 'tpe' needs a trial budget",
        ),
        (
            "[sweep]\ntrials = 3\n[params]\ntrain.epochs = [1, 2]",
            "sweep.toml: sweep.trials: the grid has 2 points, fewer than trials = 3",
        ),
        (
            '[sweep]\nset = ["train.epochs=2"]\n[params]\ntrain.epochs = [1, 2]',
            "sweep.toml: sweep.set: train.epochs is also a parameter",
        ),
        (
            '[sweep.pruner]\nname = "medain"\n[params]\ntrain.epochs = [1]',
            "sweep.toml: sweep.pruner.name: unknown pruner 'medain'; did you mean 'median'?",
        ),
        ("[sweep]\n[params]\n", "sweep.toml: params: no parameters to sweep"),
        ("[params\n", "sweep.toml: invalid TOML"),
    ],
)
def test_bad_sweep_files_are_one_line_naming_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        spec_of(tmp_path, text)
    message = str(raised.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_command_line_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^--param: train.learning_rate: empty range"):
        build_spec(None, CommandLine(params=("train.learning_rate=1..0",)), default_name="x")
    with pytest.raises(ConfigError, match=r"^--trials: must be >= 1, got 0"):
        build_spec(None, CommandLine(params=("train.epochs=1,2",), trials=0), default_name="x")


def test_values_are_written_as_toml_that_reads_back() -> None:
    values = [3e-3, 1e-05, 128, True, "gelu", 'a "quoted" \\ string\nwith a line', "日本", [1, 2.5]]
    for value in values:
        assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value
    data = {
        "run": {"project_name": "p", "requires": ["a>=1"]},
        "logging": {"provider": ["console"], "console": {"val_every_n_steps": 5}},
    }
    text = dumps(data, ["a comment"])
    assert text.startswith("# a comment\n")
    assert tomllib.loads(text) == data
