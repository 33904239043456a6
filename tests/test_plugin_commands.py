"""Commands that plugins add to ``baseline`` (hook ``baseline_register_commands``): parsed,
run, listed, and their failures reported in one line naming the plugin."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from baseline.cli import main
from baseline.errors import ConfigError
from baseline.plugins.discovery import PluginSource, build_plugin_set
from baseline.plugins.hookspecs import RegisterCommand, hookimpl
from baseline.plugins.listing import print_plugins
from baseline.testing import in_process_plugins, using_plugins


def _build_hello(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="world")
    parser.add_argument("--fail", choices=("config", "bug"), default=None)


def _run_hello(args: argparse.Namespace) -> int:
    if args.fail == "config":
        raise ConfigError("must be a greeting", key_path="hello.name", source="hello.toml")
    if args.fail == "bug":
        raise ValueError("the plugin has a bug\nsecond line")
    print(f"hello {args.name}")
    return 0


class HelloPlugin:
    @staticmethod
    @hookimpl
    def baseline_register_commands(register: RegisterCommand) -> None:
        register("hello", _build_hello, _run_hello, help="say hello")


def test_a_plugin_command_runs_and_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with using_plugins(HelloPlugin()):
        assert main(["hello", "--name", "sweeps"]) == 0
        assert capsys.readouterr().out == "hello sweeps\n"
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "hello" in out and "say hello" in out
        with pytest.raises(SystemExit):
            main(["hello", "--help"])
        assert "--name" in capsys.readouterr().out
    print_plugins(in_process_plugins(HelloPlugin(), installed=False))
    assert "command hello" in capsys.readouterr().out


def test_a_baseline_error_is_one_line_like_a_core_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASELINE_DEBUG", raising=False)
    with using_plugins(HelloPlugin()):
        assert main(["hello", "--fail", "config"]) == 2
    assert capsys.readouterr().err == "error: hello.toml: hello.name: must be a greeting\n"


def test_an_unexpected_error_names_the_command_and_its_distribution(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASELINE_DEBUG", raising=False)
    with using_plugins(HelloPlugin()):
        assert main(["hello", "--fail", "bug"]) == 1
    assert capsys.readouterr().err == (
        "error: command 'hello' from test-plugins 0 failed: ValueError: the plugin has a bug "
        "(set BASELINE_DEBUG=1 to see the traceback)\n"
    )
    monkeypatch.setenv("BASELINE_DEBUG", "1")
    with using_plugins(HelloPlugin()), pytest.raises(Exception) as raised:
        main(["hello", "--fail", "bug"])
    assert isinstance(raised.value.__cause__, ValueError)


def test_usage_errors_and_typos_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with using_plugins(HelloPlugin()):
        with pytest.raises(SystemExit) as exit_info:
            main(["hello", "--fail", "nope"])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.startswith("error: baseline hello: argument --fail")
        with pytest.raises(SystemExit):
            main(["helo"])
        assert "did you mean 'hello'?" in capsys.readouterr().err


class ClashingPlugin:
    """Takes a core command's name, another plugin's name, and one that fails to build."""

    @staticmethod
    @hookimpl
    def baseline_register_commands(register: RegisterCommand) -> None:
        register("runs", _build_hello, _run_hello)
        register("hello", _build_hello, _run_hello)

        def broken(_parser: argparse.ArgumentParser) -> None:
            raise RuntimeError("no arguments today")

        register("broken", broken, _run_hello)


def test_clashes_and_broken_builds_fail_only_their_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin_set = build_plugin_set(
        [
            PluginSource(HelloPlugin(), "hello", "dist-a", "1.0"),
            PluginSource(ClashingPlugin(), "clash", "dist-b", "2.0"),
        ]
    )
    assert not plugin_set.failures
    from baseline.plugins.discovery import activated

    with activated(plugin_set):
        assert main(["hello"]) == 2
        assert capsys.readouterr().err == (
            "error: command 'hello' is registered twice: by dist-a 1.0 and by dist-b 2.0; "
            "uninstall one of them\n"
        )
        assert main(["broken"]) == 2
        assert capsys.readouterr().err == (
            "error: command 'broken' from dist-b 2.0 cannot build its arguments: "
            "RuntimeError: no arguments today\n"
        )
        (tmp_path / "runs").mkdir()
        assert main(["runs", str(tmp_path / "runs")]) == 0  # the core's command, not the plugin's
        assert "no runs in" in capsys.readouterr().err


class BadNamePlugin:
    @staticmethod
    @hookimpl
    def baseline_register_commands(register: RegisterCommand) -> None:
        register("Sweep It", _build_hello, _run_hello)


class TwicePlugin:
    @staticmethod
    @hookimpl
    def baseline_register_commands(register: RegisterCommand) -> None:
        register("twice", _build_hello, _run_hello)
        register("twice", _build_hello, _run_hello)


def test_malformed_registrations_make_the_plugin_fail_to_load() -> None:
    plugin_set = in_process_plugins(BadNamePlugin(), TwicePlugin(), installed=False)
    assert not plugin_set.commands
    errors = sorted(failure.error for failure in plugin_set.failures)
    assert errors == [
        "command name 'Sweep It' is invalid: use lowercase letters, digits or '-', starting "
        "with a letter",
        "registers command 'twice' more than once",
    ]
