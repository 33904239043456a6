"""The ``wandb`` logger against real offline W&B runs, read back from their ``.wandb`` files.

These tests need only the core and this plugin. Records are fed the way the trainer feeds
them: through :class:`baseline.metrics.router.MetricsRouter`, which keeps, for this logger, the train
records of its cadence and the diagnostics it enabled on their steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from wandb_transaction_log import WandbRun, read_run, read_runs, wandb_files

import baseline_wandb
from baseline.errors import ConfigError, PluginError
from baseline.metrics.router import diagnostic_of
from baseline.plugins.protocols import LoggerAdapter, LoggerSession, MetricRecord, RunInfo
from baseline.testing import check_logger_adapter, in_process_plugins
from baseline.testing.synthetic import (
    CADENCES,
    CUDA_EXTRAS,
    DIAGNOSTICS,
    STEPS,
    TOKENS_PER_STEP,
    TRAIN,
    VALIDATION,
    feed_epoch,
)
from baseline_wandb import RUN_ID_FILENAME, WandbLogger, WandbMetricsConfig, WandbSession
from baseline_wandb.logger import NO_API_KEY_MESSAGE, _start_error

#: W&B key -> the toggle that turns it off (``None``: always logged when the core sends it).
TOGGLE_OF = {
    "train_loss": "enable_train_loss_vs_tokens",
    "train_perplexity": "enable_perplexity",
    "step_time_ms": "enable_step_time",
    "peak_memory_gib": "enable_peak_memory",
    "learning_rate": None,
    "tokens_per_second": None,
    "mfu": None,
    "val_loss": "enable_val_loss_vs_tokens",
    "val_perplexity": "enable_perplexity",
    "val_bpb": None,
    "train_loss_epoch": None,
    "train_perplexity_epoch": "enable_perplexity",
    "epoch": None,
    **{key: f"enable_{diagnostic_of(key)}" for key in DIAGNOSTICS},
}
TOGGLES = sorted({flag for flag in TOGGLE_OF.values() if flag})
TRAIN_KEYS = {
    "train_loss",
    "train_perplexity",
    "step_time_ms",
    "learning_rate",
    "tokens_per_second",
}
LAYER_DIAGNOSTICS = {k for k in DIAGNOSTICS if not k.startswith("attention_entropy")}
ENTROPY = {k for k in DIAGNOSTICS if k.startswith("attention_entropy")}
VAL_KEYS = set(VALIDATION)
#: Every key of every row when everything is on (``tokens_seen_train`` aside).
ALL_ON_ROWS = {
    2: TRAIN_KEYS,
    3: LAYER_DIAGNOSTICS,
    4: TRAIN_KEYS | set(CUDA_EXTRAS) | ENTROPY,
    5: VAL_KEYS,
    6: TRAIN_KEYS
    | LAYER_DIAGNOSTICS
    | VAL_KEYS
    | {"train_loss_epoch", "train_perplexity_epoch", "epoch"},
}


def expected_rows(config: WandbMetricsConfig) -> dict[int, set[str]]:
    """The key set of each step's W&B row under ``config``'s toggles."""
    rows: dict[int, set[str]] = {}
    for step, keys in ALL_ON_ROWS.items():
        kept = {k for k in keys if TOGGLE_OF[k] is None or getattr(config, TOGGLE_OF[k])}
        if kept & {"train_loss", "val_loss"}:
            kept.add("tokens_seen_train")  # the x-axis of the loss curves rides along
        if kept:
            rows[step] = kept
    return rows


def run_info(run_dir: Path, *, start_step: int = 0, model: Any = None) -> RunInfo:
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunInfo(
        project_name="baseline-wandb-tests",
        run_name=run_dir.name,
        run_dir=run_dir,
        config={
            "run": {"project_name": "baseline-wandb-tests", "seed": 7, "requires": []},
            "train": {"learning_rate": 0.001, "batch_size": 8, "seq_len": 16},
            "model": {"name": "tiny", "d_model": 32, "bias": False},
            "logging": {"provider": ["wandb"], "wandb": {"tags": ["a", "b"]}},
        },
        epochs=1,
        steps_per_epoch=STEPS,
        total_steps=STEPS,
        start_step=start_step,
        model=model,
    )


def run_record(run: WandbRun) -> Any:
    """The ``run`` record of a W&B transaction log (what ``wandb.init`` was given)."""
    return next(r.run for r in run.records if r.WhichOneof("record_type") == "run")


def feed(session: LoggerSession, config: WandbMetricsConfig) -> None:
    """One epoch of ``STEPS`` steps, routed as the trainer routes its records."""
    feed_epoch("wandb", config, session.log, range(1, STEPS + 1))


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., WandbRun]:
    """``logged(**config_fields)``: a W&B run fed one epoch, finished with 0, read back.

    Cached by configuration: tests asking for the same settings share one W&B run.
    """
    cache: dict[tuple[tuple[str, Any], ...], WandbRun] = {}

    def make(**fields: Any) -> WandbRun:
        key = tuple(sorted(fields.items()))
        if key not in cache:
            config = WandbMetricsConfig(**CADENCES, **fields)
            run_dir = tmp_path_factory.mktemp("logged")
            session = WandbLogger(config).start(run_info(run_dir))
            feed(session, config)
            session.finish(0)
            cache[key] = read_run(run_dir)
        return cache[key]

    return make


# -- keys, steps and values --------------------------------------------------------------------


def test_every_key_lands_on_its_step(logged: Callable[..., WandbRun]) -> None:
    run = logged()
    assert {step: set(row) for step, row in run.rows.items()} == expected_rows(
        WandbMetricsConfig(**CADENCES)
    )


def test_values_are_logged_as_the_core_computed_them(logged: Callable[..., WandbRun]) -> None:
    rows = logged().rows
    for step in (2, 4, 6):
        assert rows[step]["tokens_seen_train"] == step * TOKENS_PER_STEP
        assert rows[step]["train_loss"] == pytest.approx(TRAIN["train_loss"])
        assert rows[step]["step_time_ms"] == pytest.approx(TRAIN["step_time_ms"])
    assert rows[4]["peak_memory_gib"] == pytest.approx(1.25)
    assert rows[4]["mfu"] == pytest.approx(0.31)
    assert rows[5]["tokens_seen_train"] == 5 * TOKENS_PER_STEP
    assert rows[5]["val_bpb"] == pytest.approx(1.5)
    assert rows[6]["val_loss"] == pytest.approx(2.5)
    assert rows[6]["train_loss_epoch"] == pytest.approx(3.1)
    assert rows[6]["epoch"] == 1
    for key, value in DIAGNOSTICS.items():
        step = 4 if key in ENTROPY else 3
        assert rows[step][key] == pytest.approx(value), key


def test_peak_memory_and_mfu_only_when_the_core_provides_them(
    logged: Callable[..., WandbRun],
) -> None:
    run = logged()
    assert run.steps_with("peak_memory_gib") == [4]
    assert run.steps_with("mfu") == [4]


def test_global_grad_norm_comes_from_diagnostics_records_only(
    logged: Callable[..., WandbRun],
) -> None:
    # Train records carry it on every train step; W&B shows it on the diagnostics cadence.
    assert logged().steps_with("global_grad_norm") == [3, 6]


@pytest.mark.parametrize("toggle", TOGGLES)
def test_a_toggle_off_removes_its_keys(logged: Callable[..., WandbRun], toggle: str) -> None:
    config = WandbMetricsConfig(**CADENCES, **{toggle: False})
    run = logged(**{toggle: False})
    assert {step: set(row) for step, row in run.rows.items()} == expected_rows(config)
    gone = {key for key, flag in TOGGLE_OF.items() if flag == toggle}
    assert gone and not gone & run.keys


def test_everything_off_leaves_the_always_on_keys(logged: Callable[..., WandbRun]) -> None:
    run = logged(**dict.fromkeys(TOGGLES, False))
    assert run.keys == {
        "learning_rate",
        "tokens_per_second",
        "mfu",
        "val_bpb",
        "train_loss_epoch",
        "epoch",
    }
    assert set(run.metrics) == set()  # no loss curve, so no tokens x-axis either


# -- define_metric, config, exit code ----------------------------------------------------------


def test_loss_curves_use_tokens_seen_as_their_x_axis(logged: Callable[..., WandbRun]) -> None:
    metrics = logged().metrics
    assert set(metrics) == {"tokens_seen_train", "train_loss", "val_loss"}
    assert metrics["train_loss"].step_metric == "tokens_seen_train"
    assert metrics["val_loss"].step_metric == "tokens_seen_train"
    assert metrics["tokens_seen_train"].step_metric == ""
    only_train = logged(enable_val_loss_vs_tokens=False).metrics
    assert set(only_train) == {"tokens_seen_train", "train_loss"}


def test_the_run_records_the_experiment_config_and_names(
    logged: Callable[..., WandbRun], tmp_path: Path
) -> None:
    run = logged()
    assert run.config == run_info(tmp_path / "x").config
    assert run.project == "baseline-wandb-tests"
    assert run.display_name.startswith("logged")
    assert run.exit_code == 0


def test_project_name_tags_group_and_notes_are_passed_on(tmp_path: Path) -> None:
    config = WandbMetricsConfig(
        project="other-project", run_name="shown-name", tags=("x", "y"), group="g", notes="n"
    )
    WandbLogger(config).start(run_info(tmp_path / "named")).finish(0)
    run = read_run(tmp_path / "named")
    assert (run.project, run.display_name, run.tags) == ("other-project", "shown-name", ("x", "y"))
    assert (run_record(run).run_group, run_record(run).notes) == ("g", "n")


def test_contract_and_exit_codes(tmp_path: Path) -> None:
    adapter = WandbLogger(WandbMetricsConfig())
    assert isinstance(adapter, LoggerAdapter)
    check_logger_adapter(adapter, tmp_path / "contract")
    runs = read_runs(tmp_path / "contract")
    assert [run.exit_code for run in runs] == [0, 1]
    assert all(run.rows[4]["val_bpb"] == pytest.approx(1.5) for run in runs)


def test_finish_twice_finishes_once(tmp_path: Path) -> None:
    session = WandbLogger(WandbMetricsConfig()).start(run_info(tmp_path / "twice"))
    session.finish(130)
    session.finish(0)
    assert read_run(tmp_path / "twice").exit_code == 130


# -- resuming ----------------------------------------------------------------------------------


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    config = WandbMetricsConfig()
    first = WandbLogger(config).start(run_info(run_dir))
    run_id = (run_dir / RUN_ID_FILENAME).read_text().strip()
    assert run_id == first.run_id
    first.log(MetricRecord(2, 256, 1, "train", TRAIN))
    first.finish(143)  # stopped by SIGTERM

    second = WandbLogger(config).start(run_info(run_dir, start_step=2))
    assert second.run_id == run_id
    second.log(MetricRecord(4, 512, 1, "train", TRAIN))
    second.finish(0)

    before, after = read_runs(run_dir)
    assert (before.run_id, before.exit_code, sorted(before.rows)) == (run_id, 143, [2])
    assert (after.run_id, after.exit_code, sorted(after.rows)) == (run_id, 0, [4])
    assert [run_record(run).resume for run in (before, after)] == [False, True]

    # A run that starts from step 0 in the same directory (--overwrite) is a new W&B run.
    fresh = WandbLogger(config).start(run_info(run_dir))
    fresh.finish(0)
    assert fresh.run_id != run_id
    assert (run_dir / RUN_ID_FILENAME).read_text().strip() == fresh.run_id


def test_resuming_without_a_recorded_id_starts_a_new_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "no-id"
    session = WandbLogger(WandbMetricsConfig()).start(run_info(run_dir, start_step=5))
    session.finish(0)
    assert (run_dir / RUN_ID_FILENAME).read_text().strip() == session.run_id
    assert read_run(run_dir).run_id == session.run_id


# -- where W&B writes its files -------------------------------------------------------------


def test_wandb_dir_is_honoured_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "wandb-home"
    elsewhere.mkdir()
    monkeypatch.setenv("WANDB_DIR", str(elsewhere))
    run_dir = tmp_path / "with-wandb-dir"
    session = WandbLogger(WandbMetricsConfig()).start(run_info(run_dir))
    session.log(MetricRecord(2, 256, 1, "train", TRAIN))
    session.finish(0)
    assert not wandb_files(run_dir)  # nothing in the run directory but the id file
    run = read_run(elsewhere)  # $WANDB_DIR/wandb/offline-run-*
    assert run.run_id == session.run_id == (run_dir / RUN_ID_FILENAME).read_text().strip()
    assert sorted(run.rows) == [2]


def test_the_run_directory_is_the_default_without_wandb_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # W&B's own default would be ./wandb
    run_dir = tmp_path / "runs" / "no-wandb-dir"
    session = WandbLogger(WandbMetricsConfig()).start(run_info(run_dir))
    session.finish(0)
    assert read_run(run_dir).run_id == session.run_id
    assert not (tmp_path / "wandb").exists()


def test_disabled_mode_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "disabled"
    session = WandbLogger(WandbMetricsConfig(mode="disabled")).start(run_info(run_dir))
    session.log(MetricRecord(2, 256, 1, "train", TRAIN))
    session.finish(0)
    assert not (run_dir / RUN_ID_FILENAME).exists()
    assert not wandb_files(run_dir)


# -- watch_model -------------------------------------------------------------------------------


def test_watch_model_logs_parameter_and_gradient_histograms(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(4, 2)
    config = WandbMetricsConfig(watch_model=True, diagnostics_every_n_steps=1)
    session = WandbLogger(config).start(run_info(tmp_path / "watched", model=model))
    for step in range(1, 4):
        model(torch.randn(3, 4)).pow(2).mean().backward()
        session.log(MetricRecord(step, step * 12, 1, "train", TRAIN))
    session.finish(0)
    keys = read_run(tmp_path / "watched").keys
    assert {"gradients/weight", "gradients/bias", "parameters/weight", "parameters/bias"} <= keys


def test_watch_model_without_a_model_is_a_no_op(tmp_path: Path) -> None:
    config = WandbMetricsConfig(watch_model=True)
    session = WandbLogger(config).start(run_info(tmp_path / "no-model"))
    session.log(MetricRecord(2, 256, 1, "train", TRAIN))
    session.finish(0)
    assert not any(
        key.startswith(("gradients/", "parameters/"))
        for key in read_run(tmp_path / "no-model").keys
    )


def test_a_failing_setup_is_one_line_and_finishes_the_wandb_run(tmp_path: Path) -> None:
    config = WandbMetricsConfig(watch_model=True)
    with pytest.raises(PluginError) as caught:
        WandbLogger(config).start(run_info(tmp_path / "bad-model", model=object()))
    assert str(caught.value).startswith("logging.wandb: W&B run could not be set up: ")
    assert "\n" not in str(caught.value)
    assert read_run(tmp_path / "bad-model").exit_code == 1


# -- start failures ----------------------------------------------------------------------------


def test_online_without_an_api_key_is_one_config_error_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    run_dir = tmp_path / "online"
    began = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        WandbLogger(WandbMetricsConfig(mode="online")).start(run_info(run_dir))
    assert time.perf_counter() - began < 10
    assert caught.value.key_path == "logging.wandb.mode"
    assert str(caught.value) == f"logging.wandb.mode: {NO_API_KEY_MESSAGE}"
    assert "\n" not in str(caught.value)
    assert not (run_dir / "wandb").exists() and not (run_dir / RUN_ID_FILENAME).exists()


def test_wandb_errors_become_one_line_baseline_errors() -> None:
    from wandb.errors import CommError, UsageError

    no_key = _start_error(UsageError("No API key configured. Use `wandb login` to log in."))
    assert isinstance(no_key, ConfigError) and no_key.key_path == "logging.wandb.mode"
    timeout = _start_error(CommError("Timed out while retrying: Post ...\nConsider increasing"))
    assert isinstance(timeout, PluginError)
    assert str(timeout) == (
        "logging.wandb: W&B could not start the run: Timed out while retrying: Post ...; "
        'set logging.wandb.mode = "offline" to log locally and `wandb sync` later'
    )
    other = _start_error(ValueError(""))
    assert str(other) == "logging.wandb: W&B could not start the run: ValueError"


UNREACHABLE_SERVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from baseline.errors import BaselineError
    from baseline.plugins.protocols import RunInfo
    from baseline_wandb import WandbLogger, WandbMetricsConfig

    run_dir = Path(sys.argv[1])
    run_dir.mkdir()
    info = RunInfo("p", "r", run_dir, {}, 1, 1, 1)
    try:
        WandbLogger(WandbMetricsConfig(mode="online", init_timeout_s=3)).start(info)
    except BaselineError as error:
        print(type(error).__name__, error, sep="|")
    """
)


def test_an_unreachable_server_fails_within_init_timeout(tmp_path: Path) -> None:
    # A fresh process: W&B reads WANDB_BASE_URL once per process. Nothing listens on port 9
    # of this host, so no request leaves the machine.
    env = {
        **os.environ,
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "WANDB_API_KEY": "0" * 40,
        "HOME": str(tmp_path / "home"),
    }
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", UNREACHABLE_SERVER, str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - began
    kind, _, message = result.stdout.strip().partition("|")
    assert kind == "PluginError", result.stdout + result.stderr
    assert message.startswith("logging.wandb: W&B could not start the run: ")
    assert "\n" not in message
    assert elapsed < 30


# -- registration ------------------------------------------------------------------------------


def test_registers_the_wandb_logger() -> None:
    plugin_set = in_process_plugins(baseline_wandb, installed=False)
    component = plugin_set.registry.get("logger", "wandb")
    assert component.config_cls is WandbMetricsConfig
    assert not plugin_set.failures
    session_type = WandbSession
    assert attrs.has(WandbMetricsConfig) and session_type.__name__ == "WandbSession"


def test_importing_the_plugin_does_not_import_wandb() -> None:
    code = "import sys, baseline_wandb; print('wandb' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


# -- the reader agrees with W&B's own --------------------------------------------------------


def test_the_reader_agrees_with_wandb_leet_inspect(logged: Callable[..., WandbRun]) -> None:
    """``wandb leet inspect --json`` (W&B's own reader, in wandb-core) decodes the same rows,
    metric definitions and exit code as ``wandb_transaction_log``."""
    run = logged()
    wandb_cli = Path(sys.executable).parent / "wandb"
    result = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--json", str(run.path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0 and "No such command" in result.stderr:
        pytest.skip("this wandb has no `wandb leet inspect`")
    assert result.returncode == 0, result.stderr
    rows: dict[int, dict[str, Any]] = {}
    metrics: dict[str, str] = {}
    exit_codes: list[int] = []
    for line in result.stdout.splitlines():
        record = json.loads(line)
        if record["type"] == "history":
            items = record["history"]["item"]
            step = int(record["history"]["step"]["num"])
            rows[step] = {k: v for k, v in items.items() if not k.startswith("_")}
        elif record["type"] == "metric":
            metrics[record["metric"]["name"]] = record["metric"].get("step_metric", "")
        elif record["type"] == "exit":
            exit_codes.append(record["exit"].get("exit_code", 0))
    assert rows == run.rows
    assert metrics == {name: metric.step_metric for name, metric in run.metrics.items()}
    assert exit_codes == [run.exit_code]
