"""Plugin discovery, registration errors, failure isolation and the registry's properties."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baseline.config import DatasetConfig, LoggerConfig
from baseline.errors import ConfigError, PluginError
from baseline.plugins.discovery import PluginSource, build_plugin_set, discover
from baseline.plugins.hookspecs import hookimpl
from baseline.plugins.registry import Component, ComponentRegistry
from baseline.testing import in_process_plugins


@attrs.frozen(kw_only=True)
class EchoConfig(DatasetConfig):
    text: str = "hello"


class EchoDataset:
    def __init__(self, config: EchoConfig) -> None:
        self.config = config

    def segments(self):  # type: ignore[no-untyped-def]
        yield self.config.text


class EchoPlugin:
    @hookimpl
    def baseline_register_datasets(self, register: Any) -> None:
        register("echo", EchoConfig, EchoDataset)


def test_in_process_plugin_registers_next_to_installed_ones() -> None:
    plugin_set = in_process_plugins(EchoPlugin())
    registry = plugin_set.registry
    assert registry.get("dataset", "echo").factory is EchoDataset
    assert "local_text" in registry.names("dataset")
    assert registry.name_of("dataset", EchoConfig()) == "echo"


def test_installed_standard_plugins_and_console_are_discovered() -> None:
    plugin_set = discover()
    distributions = {info.distribution for info in plugin_set.plugins}
    assert {
        "baseline",
        "baseline-text",
        "baseline-bpe",
        "baseline-decoder",
        "baseline-holdout",
    } <= distributions
    assert plugin_set.registry.names("logger")[:1] == [
        "console"
    ] or "console" in plugin_set.registry.names("logger")


def test_duplicate_name_names_both_distributions() -> None:
    class Again:
        @hookimpl
        def baseline_register_datasets(self, register: Any) -> None:
            register("echo", EchoConfig, EchoDataset)

    sources = [
        PluginSource(EchoPlugin(), "echo", "dist-one", "1.0"),
        PluginSource(Again(), "again", "dist-two", "2.0"),
    ]
    with pytest.raises(
        PluginError,
        match=r"dataset 'echo' is registered twice: by dist-one 1.0 and by dist-two 2.0",
    ):
        build_plugin_set(sources)


@pytest.mark.parametrize(
    ("name", "config_cls", "factory", "expected"),
    [
        ("Bad Name", EchoConfig, EchoDataset, "name 'Bad Name' is invalid"),
        (
            "plain",
            dict,
            EchoDataset,
            "config class must be an attrs class derived from baseline.config.DatasetConfig",
        ),
        (
            "wrong_base",
            attrs.define(type("L", (LoggerConfig,), {})),
            EchoDataset,
            "derived from baseline.config.DatasetConfig",
        ),
        ("nofactory", EchoConfig, 42, "factory must be callable"),
    ],
)
def test_bad_registration_is_a_load_failure(
    name: str, config_cls: Any, factory: Any, expected: str
) -> None:
    class Bad:
        @hookimpl
        def baseline_register_datasets(self, register: Any) -> None:
            register(name, config_cls, factory)

    plugin_set = build_plugin_set(
        [
            PluginSource(Bad(), "bad", "bad-dist", "0.1"),
            PluginSource(EchoPlugin(), "echo", "echo-dist", "1"),
        ]
    )
    assert [f.distribution for f in plugin_set.failures] == ["bad-dist"]
    assert expected in plugin_set.failures[0].error
    assert plugin_set.registry.names("dataset") == ["echo"]


def test_plugin_raising_during_registration_is_isolated() -> None:
    class Exploding:
        @hookimpl
        def baseline_register_models(self, register: Any) -> None:
            raise RuntimeError("boom")

    plugin_set = build_plugin_set(
        [
            PluginSource(Exploding(), "exploding", "exploding-dist", "0.1"),
            PluginSource(EchoPlugin(), "echo", "echo-dist", "1"),
        ]
    )
    assert plugin_set.failures[0].error == "raised while registering: RuntimeError: boom"
    assert plugin_set.registry.names("dataset") == ["echo"]
    with pytest.raises(
        ConfigError,
        match=r"unknown model 'x'.*Not loaded: plugin 'exploding' from exploding-dist 0.1 failed to load",
    ):
        plugin_set.registry.get("model", "x")


def test_plugin_with_a_bad_hook_signature_is_isolated() -> None:
    class WrongArgs:
        @hookimpl
        def baseline_register_datasets(self, register: Any, extra: Any) -> None:
            pass

    plugin_set = build_plugin_set([PluginSource(WrongArgs(), "wrong", "wrong-dist", "0.1")])
    assert plugin_set.failures and plugin_set.failures[0].distribution == "wrong-dist"


def test_same_plugin_registering_a_name_twice() -> None:
    class Twice:
        @hookimpl
        def baseline_register_datasets(self, register: Any) -> None:
            register("echo", EchoConfig, EchoDataset)
            register("echo", EchoConfig, EchoDataset)

    plugin_set = build_plugin_set([PluginSource(Twice(), "twice", "twice-dist", "0.1")])
    assert "registers dataset 'echo' more than once" in plugin_set.failures[0].error


BROKEN_DIST = "baseline_broken_fake"


def _fake_dist(root: Path, module_body: str) -> Path:
    """A minimal installed distribution (dist-info + module) on a directory for sys.path."""
    dist_info = root / f"{BROKEN_DIST}-0.3.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {BROKEN_DIST}\nVersion: 0.3\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[baseline.plugins]\nbroken = baseline_broken_module\n"
    )
    (root / "baseline_broken_module.py").write_text(module_body)
    return root


def test_broken_installed_plugin_is_reported_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_dist(tmp_path, "import a_module_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(root))
    plugin_set = discover()
    failure = next(f for f in plugin_set.failures if f.entry_point == "broken")
    assert failure.distribution == BROKEN_DIST and failure.version == "0.3"
    assert "ModuleNotFoundError" in failure.error
    assert "local_text" in plugin_set.registry.names("dataset")


def test_cli_lists_plugins_and_broken_ones(tmp_path: Path) -> None:
    root = _fake_dist(tmp_path, "raise RuntimeError('cannot import me')\n")
    env_path = f"{root}"
    result = subprocess.run(
        [sys.executable, "-m", "baseline", "plugins"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        check=True,
    )
    for expected in (
        "baseline-text",
        "baseline-bpe",
        "baseline-decoder",
        "baseline-holdout",
        "logger console",
    ):
        assert expected in result.stdout
    assert (
        "failed: plugin 'broken' from baseline_broken_fake 0.3 failed to load: RuntimeError: cannot import me"
        in result.stdout
    )


def test_baseline_plugins_does_not_import_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        from baseline.cli import main
        main(["plugins"])
        heavy = [
            m
            for m in (
                "torch", "wandb", "datasets", "tensorboard", "mlflow", "matplotlib", "transformers"
            )
            if m in sys.modules
        ]
        assert not heavy, heavy
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)


@settings(max_examples=50, deadline=None)
@given(st.lists(names, unique=True, min_size=1, max_size=8), st.data())
def test_registry_lookup_property(registered: list[str], data: st.DataObject) -> None:
    registry = ComponentRegistry()
    # One config class per component: the registry maps a config class back to its name.
    classes = {
        name: attrs.frozen(kw_only=True)(type(f"EchoConfig_{name}", (EchoConfig,), {}))
        for name in registered
    }
    for name in registered:
        registry.add(Component("dataset", name, classes[name], EchoDataset, "d", "1"))
    assert registry.names("dataset") == sorted(registered)
    for name in registered:
        assert registry.get("dataset", name).name == name
        assert registry.name_of("dataset", classes[name]()) == name
    missing = data.draw(names.filter(lambda n: n not in registered))
    with pytest.raises(ConfigError) as caught:
        registry.get("dataset", missing)
    assert f"Installed: {', '.join(sorted(registered))}" in str(caught.value)
    with pytest.raises(PluginError):
        registry.add(Component("dataset", registered[0], EchoConfig, EchoDataset, "other", "2"))


def test_plugin_raising_in_its_factory_is_one_clear_error(tiny_data: dict[str, Any]) -> None:
    from baseline.errors import DataError
    from baseline.experiment.loading import experiment_from_data
    from baseline.pipeline import model_pipeline

    @attrs.frozen(kw_only=True)
    class BrokenConfig(DatasetConfig):
        pass

    def broken_factory(config: BrokenConfig) -> Any:
        raise ValueError("cannot open the source")

    class BrokenBuild:
        @hookimpl
        def baseline_register_datasets(self, register: Any) -> None:
            register("broken_build", BrokenConfig, broken_factory)

    plugin_set = in_process_plugins(BrokenBuild())
    tiny_data["dataset"] = {"name": "broken_build"}
    with pytest.raises(
        DataError,
        match=r"^dataset 'broken_build' from test-plugins failed to build: ValueError: cannot open the source$",
    ):
        model_pipeline(experiment_from_data(tiny_data, plugin_set.registry), plugins=plugin_set)
    assert not (Path(tiny_data["run"]["artifacts_root"]) / "tiny").exists()
