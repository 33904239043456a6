"""Developer sessions: ``nox -s tests`` (the whole suite), ``plugin``, ``lint``, ``demo``,
``hf_compat`` (``baseline export`` under the newest transformers 4.x and 5.x), ``journeys``
(every shipped experiment file through a user's commands, end to end), ``sweeps_postgres``
(``baseline sweep`` with its store on a PostgreSQL server the session starts).

torch is pinned to 2.13.0 through ``constraints.txt`` so that pip installs the local CPU
wheel instead of resolving a newer CUDA build.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

ROOT = Path(__file__).parent
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())
STANDARD_PLUGINS = ["baseline-text", "baseline-bpe", "baseline-decoder", "baseline-holdout"]
# Plugins a benchmark needs beyond the standard ones (hf_text reads the generated corpora).
BENCH_EXTRA_PLUGINS = {
    "hf_streaming_memory": ["baseline-hf-datasets"],
    "diagnostics": ["baseline-wandb"],
    # `baseline plugins` must not import the heavy libraries of these plugins.
    "startup": [
        "baseline-wandb",
        "baseline-hf-datasets",
        "baseline-tensorboard",
        "baseline-mlflow",
        "baseline-transformers",
    ],
}
#: Plugins of this repository a plugin's tests train with (the `plugin` session installs them).
#: The sweeps' tests also log a sweep to TensorBoard, W&B and MLflow (test_logger_grouping.py).
PLUGIN_TEST_PLUGINS = {
    "baseline-sweeps": [
        *STANDARD_PLUGINS,
        "baseline-tensorboard",
        "baseline-wandb",
        "baseline-mlflow",
    ]
}
#: Plugins whose tests run only in their own `plugin` session, not in `tests`: the sweeps'
#: tests run whole sweeps of real processes (minutes); CI runs that session beside `tests`.
OWN_SESSION_PLUGINS = ["baseline-sweeps"]
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
TEST_TOOLS = ("pytest>=8", "hypothesis>=6.100")
# CI runs must be reproducible: hypothesis draws the same examples every run (pass
# another --hypothesis-seed after `--` to explore).
HYPOTHESIS_SEED = "--hypothesis-seed=20261124"
#: Slow multi-process test modules, run by `nox -s distributed` instead of `nox -s tests`.
SEPARATE_TESTS = ["tests/test_fsdp.py"]
OFFLINE_ENV = {
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "TOKENIZERS_PARALLELISM": "false",
}


#: Every kind `baseline new-plugin` writes: `nox -s scaffold` generates one plugin with all.
SCAFFOLD_KINDS = ("dataset", "tokenizer", "model", "split", "logger")


def _install_torch_first(session: nox.Session) -> None:
    session.install(*CONSTRAINTS, "torch==2.13.0")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The core with every plugin installed: the whole suite but the sessions of its own
    (FSDP and multi-node: `distributed`; the sweeps: `plugin(plugin='baseline-sweeps')`)."""
    _install_torch_first(session)
    editable = [arg for plugin in PLUGINS for arg in ("-e", f"plugins/{plugin}")]
    # The core's `plot` extra (matplotlib) too: tests/test_plotting.py draws real figures.
    session.install(*CONSTRAINTS, "-e", ".[plot]", *editable, *TEST_TOOLS)
    test_dirs = [
        "tests",
        *(f"plugins/{plugin}/tests" for plugin in PLUGINS if plugin not in OWN_SESSION_PLUGINS),
    ]
    # The multi-process FSDP and multi-node runs have their own session, `distributed`.
    ignored = [f"--ignore={path}" for path in SEPARATE_TESTS]
    session.run(
        "pytest", HYPOTHESIS_SEED, *(session.posargs or [*ignored, *test_dirs]), env=OFFLINE_ENV
    )


@nox.session(python="3.11")
def distributed(session: nox.Session) -> None:
    """FSDP against DDP, DCP checkpoints and resumes, two nodes on localhost (torchrun, gloo)."""
    _install_torch_first(session)
    editable = [arg for plugin in STANDARD_PLUGINS for arg in ("-e", f"plugins/{plugin}")]
    session.install(*CONSTRAINTS, "-e", ".", *editable, *TEST_TOOLS)
    session.run("pytest", HYPOTHESIS_SEED, *(session.posargs or SEPARATE_TESTS), env=OFFLINE_ENV)


#: The journeys of journeys/test_journeys.py: each experiment file of experiments/ trained, stopped
#: by SIGTERM and resumed (one process and FSDP under torchrun), then listed, evaluated, sampled,
#: exported and fine-tuned from. Outside tests/, so that `nox -s tests` does not collect them.
JOURNEY_TESTS = ["journeys"]


@nox.session(python="3.11")
def journeys(session: nox.Session) -> None:
    """Every shipped experiment file through the commands a user runs, with every plugin."""
    _install_torch_first(session)
    editable = [arg for plugin in PLUGINS for arg in ("-e", f"plugins/{plugin}")]
    session.install(*CONSTRAINTS, "-e", ".", *editable, "pytest>=8")
    session.run(
        "pytest", *(session.posargs or JOURNEY_TESTS), "-p", "no:cacheprovider", env=OFFLINE_ENV
    )


@nox.session(python="3.11")
@nox.parametrize("plugin", PLUGINS)
def plugin(session: nox.Session, plugin: str) -> None:
    """One plugin installed alone with the core (and the plugins its tests train with),
    running its own tests."""
    _install_torch_first(session)
    needed = [f"plugins/{other}" for other in PLUGIN_TEST_PLUGINS.get(plugin, [])]
    session.install(*CONSTRAINTS, ".", f"plugins/{plugin}", *needed, *TEST_TOOLS)
    session.run(
        "pytest",
        HYPOTHESIS_SEED,
        f"plugins/{plugin}/tests",
        "-p",
        "no:cacheprovider",
        env=OFFLINE_ENV,
    )


@nox.session(python="3.11")
def scaffold(session: nox.Session) -> None:
    """`baseline new-plugin` with every kind: the generated distribution installs beside the
    core (installed, not editable: the templates must ship in the wheel) and passes its tests."""
    _install_torch_first(session)
    session.install(*CONSTRAINTS, ".", *TEST_TOOLS)
    target = Path(session.create_tmp()) / "scaffold-check"
    shutil.rmtree(target, ignore_errors=True)  # left by an earlier run (reused environments)
    kinds = [arg for kind in SCAFFOLD_KINDS for arg in ("--kind", kind)]
    session.run("baseline", "new-plugin", "scaffold-check", *kinds, "--dir", str(target))
    session.install(*CONSTRAINTS, "-e", str(target))
    session.run("pytest", str(target), "-p", "no:cacheprovider", env=OFFLINE_ENV)
    session.run("baseline", "plugins")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy on the core."""
    _install_torch_first(session)
    session.install(
        *CONSTRAINTS, "-e", ".[plot]", "ruff>=0.6", "mypy>=1.10", "pytest>=8", "hypothesis>=6.100"
    )
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


#: The transformers releases an export must load in: the newest of each supported major version.
HF_COMPAT_TRANSFORMERS = [
    nox.param("transformers>=4.56,<5", id="transformers4"),
    nox.param("transformers>=5,<6", id="transformers5"),
]
#: The export round trips (logits, greedy generation, tokenizer ids) of every decoder variant
#: and every shipped experiment file.
HF_COMPAT_TESTS = ["plugins/baseline-transformers/tests/test_export_decoder.py"]


@nox.session(python="3.11")
@nox.parametrize("transformers", HF_COMPAT_TRANSFORMERS)
def hf_compat(session: nox.Session, transformers: str) -> None:
    """`baseline export` round trips under one major version of transformers."""
    _install_torch_first(session)
    plugins = [*STANDARD_PLUGINS, "baseline-transformers"]
    editable = [arg for plugin in plugins for arg in ("-e", f"plugins/{plugin}")]
    session.install(*CONSTRAINTS, "-e", ".", *editable, transformers, *TEST_TOOLS)
    session.run(
        "python",
        "-c",
        "import torch, transformers; print(torch.__version__, transformers.__version__)",
    )
    session.run(
        "pytest",
        HYPOTHESIS_SEED,
        *(session.posargs or HF_COMPAT_TESTS),
        "-p",
        "no:cacheprovider",
        env=OFFLINE_ENV,
    )


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Train experiments/tiny_shakespeare.toml end to end."""
    _install_torch_first(session)
    editable = [arg for plugin in STANDARD_PLUGINS for arg in ("-e", f"plugins/{plugin}")]
    session.install(*CONSTRAINTS, "-e", ".", *editable)
    session.run(
        "baseline-run",
        "experiments/tiny_shakespeare.toml",
        *session.posargs,
        env={**OFFLINE_ENV, **{k: v for k, v in os.environ.items() if k.startswith("BASELINE_")}},
    )


@nox.session(python="3.11")
@nox.parametrize(
    "benchmark",
    [
        "startup",
        "tokenizer",
        "throughput",
        "muon_step",
        "quality",
        "distributed",
        "hf_streaming_memory",
        "diagnostics",
        "gpu",
        "token_cache_start",
        "cache_checksum",
    ],
)
def bench(session: nox.Session, benchmark: str) -> None:
    """Print benchmark figures beside their targets (never asserted in tests)."""
    _install_torch_first(session)
    plugins = STANDARD_PLUGINS + BENCH_EXTRA_PLUGINS.get(benchmark, [])
    editable = [arg for plugin in plugins for arg in ("-e", f"plugins/{plugin}")]
    session.install(*CONSTRAINTS, "-e", ".", *editable)
    session.run("python", f"benchmarks/{benchmark}.py", *session.posargs, env=OFFLINE_ENV)


#: The tests of baseline-sweeps that need a PostgreSQL server (marked `postgres`; skipped
#: elsewhere, since BASELINE_SWEEPS_POSTGRES_URL is unset).
SWEEPS_POSTGRES_TESTS = ["plugins/baseline-sweeps/tests/test_postgres.py"]
POSTGRES_URL_ENV = "BASELINE_SWEEPS_POSTGRES_URL"


def _postgres_bin(session: nox.Session) -> Path:
    """The directory of PostgreSQL's initdb and pg_ctl; Debian's `postgresql` package is
    installed with apt-get when there is none."""

    def found() -> Path | None:
        initdb = shutil.which("initdb")
        if initdb:
            return Path(initdb).resolve().parent
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        return versions[-1].parent if versions else None

    directory = found()
    if directory is None:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.log("no initdb: installing Debian's postgresql package")
        session.run(*sudo, "apt-get", "update", external=True, env=env)
        session.run(
            *sudo, "apt-get", "install", "-y", "--no-install-recommends", "postgresql",
            external=True, env=env,
        )  # fmt: skip
        directory = found()
    if directory is None or not (directory / "pg_ctl").exists():
        session.error("PostgreSQL's initdb and pg_ctl are not installed and apt-get did not help")
    return directory


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def _postgres_server(session: nox.Session, bindir: Path) -> Iterator[str]:
    """A PostgreSQL server in a temporary directory on a free port, as the current user (as
    the `postgres` user when that is root, which initdb refuses); its URL."""
    home = Path(tempfile.mkdtemp(prefix="baseline-postgres-"))
    data, port = home / "data", _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(home, user="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    session.run(
        *as_user, str(bindir / "initdb"), "-D", str(data), "-U", "baseline", "--auth=trust",
        "-E", "UTF8", "--locale=C", external=True, silent=True,
    )  # fmt: skip
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c max_connections=200"
    session.run(
        *as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "server.log"),
        "-o", options, "-w", "start", external=True,
    )  # fmt: skip
    try:
        yield f"postgresql://baseline@127.0.0.1:{port}/postgres"
    finally:
        session.run(
            *as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop",
            external=True,
        )  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)


@nox.session(python="3.11")
def sweeps_postgres(session: nox.Session) -> None:
    """`baseline sweep` with its store on a PostgreSQL server started for the session: workers
    of two "machines" claim each trial once, and `--join NAME --storage URL` shares a sweep."""
    bindir = _postgres_bin(session)
    _install_torch_first(session)
    editable = [arg for plugin in STANDARD_PLUGINS for arg in ("-e", f"plugins/{plugin}")]
    session.install(
        *CONSTRAINTS, "-e", ".", *editable, "-e", "plugins/baseline-sweeps[postgres]", *TEST_TOOLS
    )
    with _postgres_server(session, bindir) as url:
        session.run(
            "pytest",
            "-m",
            "postgres",
            *(session.posargs or SWEEPS_POSTGRES_TESTS),
            "-p",
            "no:cacheprovider",
            env={**OFFLINE_ENV, POSTGRES_URL_ENV: url},
        )
