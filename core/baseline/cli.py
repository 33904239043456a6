"""Command line: ``baseline run|validate|plugins|runs|plot|sample|export|eval|new-plugin``, the
commands of plugins (``baseline_register_commands``), and ``baseline-run``. Every user-facing
failure prints one line on stderr and exits non-zero (2 for bad input, 1 for a failed training
run, 130/143 when interrupted); no traceback unless ``BASELINE_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from baseline.errors import BaselineError
from baseline.tools import scaffold

if TYPE_CHECKING:
    from baseline.experiment.resolved import ResolvedExperiment

DEBUG_ENV = "BASELINE_DEBUG"
#: Words a user may type for a command (``baseline train``), suggested as the command.
COMMAND_ALIASES = {"train": "run", "check": "validate", "generate": "sample", "evaluate": "eval"}


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (exit 2), and a mistyped choice gets a did-you-mean."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            from baseline.plugins.registry import did_you_mean

            command = isinstance(action, argparse._SubParsersAction)
            choices = [str(choice) for choice in action.choices]
            hint = did_you_mean(str(value), choices, COMMAND_ALIASES if command else {})
            message = f"{'command' if command else 'value'} {value!r}{hint}"
            message += f" Choose from: {', '.join(choices)}"
            raise argparse.ArgumentError(None if command else action, f"unknown {message}")
        super()._check_value(action, value)

    def error(self, message: str) -> NoReturn:
        _print_stderr_line(f"error: {self.prog}: {message} (see {self.prog} --help)")
        raise SystemExit(2)


def _add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="path to an experiment TOML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, value parsed as TOML (repeatable): --set train.epochs=2",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    _add_experiment_arguments(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue the run from its newest checkpoint"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing run directory"
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="train with N processes on this machine (launches torchrun; DDP, gloo on CPU, "
        "nccl on CUDA)",
    )


def _add_inspection_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """``runs`` and ``plot``: look at run directories (their files only; no torch)."""
    runs = commands.add_parser("runs", help="list the runs under an artifacts root")
    runs.add_argument(
        "artifacts_root",
        nargs="?",
        default="artifacts/runs",
        metavar="ARTIFACTS_ROOT",
        help="directory of run directories (run.artifacts_root; default: artifacts/runs)",
    )
    runs.add_argument("--json", action="store_true", help="print the runs as a JSON list")
    plot = commands.add_parser("plot", help="plot one metric of several runs into an image")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    plot.add_argument(
        "--metric",
        default="val_bpb",
        help="a key of the metrics: val_bpb (default), val_loss, train_loss, learning_rate, ...",
    )
    plot.add_argument(
        "--x",
        choices=("tokens", "step", "time"),
        default="tokens",
        help="x-axis: tokens seen (default), optimizer step, or training time in seconds",
    )
    plot.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="image to write; the format follows the suffix (.png, .svg, .pdf)",
    )


def _add_eval_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``eval``: score a finished run on a text (its model and tokenizer; no experiment)."""
    evaluate = commands.add_parser(
        "eval", help="loss, perplexity and bits/byte of a trained run on a text"
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or a stopped one)")
    text = evaluate.add_mutually_exclusive_group(required=True)
    text.add_argument(
        "--data", metavar="FILE", help="a UTF-8 text, cut into segments at the run's delimiter"
    )
    text.add_argument(
        "--dataset", metavar="EXPERIMENT", help="every segment of this experiment's [dataset]"
    )
    evaluate.add_argument("--json", action="store_true", help="print the figures as JSON")
    evaluate.add_argument(
        "--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="default: auto"
    )
    evaluate.add_argument(
        "--batch-size", type=int, default=None, help="windows per batch (default: the run's)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``baseline`` argument parser."""
    parser: argparse.ArgumentParser = _Parser(
        prog="baseline",
        description="Train small language models from a TOML experiment file.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="train an experiment end to end")
    _add_run_arguments(run)
    validate = commands.add_parser("validate", help="check an experiment file without training")
    _add_experiment_arguments(validate)
    commands.add_parser("plugins", help="list installed plugins and their components")
    _add_inspection_commands(commands)
    _add_eval_command(commands)
    sample = commands.add_parser("sample", help="generate text from a finished run")
    sample.add_argument("run_dir", help="a run directory (a stopped one: its newest checkpoint)")
    source = sample.add_mutually_exclusive_group()
    source.add_argument("--prompt", default="", help="text to continue (default: a new segment)")
    source.add_argument("--prompt-file", help="read the prompt from this UTF-8 file")
    sample.add_argument("--max-new-tokens", type=int, default=200)
    sample.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    sample.add_argument("--top-k", type=int, default=None)
    sample.add_argument("--top-p", type=float, default=None)
    sample.add_argument("--seed", type=int, default=None)
    sample.add_argument("--num-samples", type=int, default=1)
    sample.add_argument(
        "--stop-at-segment-end",
        action="store_true",
        help="end each sample at its first end-of-segment token (by default the token is "
        "written as the dataset's delimiter, e.g. a blank line, and sampling goes on)",
    )
    export = commands.add_parser(
        "export", help="write a trained run as a Hugging Face model and tokenizer directory"
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or a stopped one)")
    export.add_argument("out_dir", metavar="OUT_DIR", help="the directory to write (created)")
    export.add_argument(
        "--format", dest="fmt", choices=("hf",), default="hf", help="hf: transformers (default)"
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR when it exists and is not empty"
    )
    scaffold.add_parser(commands)
    return parser


def _load(path: str, overrides: Sequence[str]) -> ResolvedExperiment:
    """Load, validate and resolve an experiment file (its components looked up once)."""
    from baseline.experiment.loading import load_experiment
    from baseline.experiment.validation import validate_experiment_config
    from baseline.plugins.discovery import default_plugins

    registry = default_plugins().registry
    config = load_experiment(path, registry, overrides)
    return validate_experiment_config(config, registry, source=path)


def _print_stderr_line(text: str) -> None:
    """One whole line to stderr in one write (atomic on a pipe up to PIPE_BUF bytes): torchrun
    ranks sharing a pipe under ``PYTHONUNBUFFERED`` cannot interleave their lines."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _launch_torchrun(args: argparse.Namespace) -> int:
    """Re-run this command under ``torchrun --standalone --nproc_per_node N``."""
    if args.nproc < 1:
        _print_stderr_line("error: --nproc: must be >= 1")
        return 2
    from baseline.distributed.launch import torchrun_argv

    command = ["run", args.experiment]
    for assignment in args.overrides:
        command += ["--set", assignment]
    command += [
        flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite)) if on
    ]
    os.execv(sys.executable, torchrun_argv(args.nproc, command))


def command_run(args: argparse.Namespace) -> int:
    """Train the experiment."""
    if args.nproc is not None and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args)
    overrides = list(args.overrides)
    if args.resume:
        overrides.append("run.resume_from_checkpoint=true")
    if args.overwrite:
        overrides.append("run.overwrite=true")
    resolved = _load(args.experiment, overrides)
    from baseline.pipeline import model_pipeline

    model_pipeline(resolved, source=args.experiment)
    return 0


def command_validate(args: argparse.Namespace) -> int:
    """Load and validate the experiment; print a summary."""
    from baseline.data.presence import check_data_files
    from baseline.errors import ConfigError

    resolved = _load(args.experiment, args.overrides)
    try:
        if resolved.sources:
            found = []
            for source in resolved.sources:
                built = source.build()
                files = check_data_files(built.dataset, built.labels["dataset"], built.key_path)
                found.append((f"{source.name}: ", files))
        else:
            dataset = resolved.components["dataset"]
            found = [("", check_data_files(dataset.build(), dataset.label))]
    except ConfigError as error:
        raise error.with_source(args.experiment) from None
    print(f"{args.experiment}: valid ({resolved.summary()})")
    print("data: " + "; ".join(f"{name}{files.describe()}" for name, files in found))
    if resolved.sources:  # a mixture: what each source gives, from the config alone
        import math

        from baseline.data.mixture import MixtureProgress

        train = resolved.config.train
        per_step = train.batch_size * train.grad_accumulation_steps
        limits = [train.max_steps] if train.max_steps is not None else []
        if train.max_tokens is not None:
            limits.append(math.ceil(train.max_tokens / (per_step * train.seq_len)))
        progress = MixtureProgress(
            [source.name for source in resolved.sources],
            [source.weight for source in resolved.sources],
            None,
            windows_per_step=per_step,
            seq_len=train.seq_len,
        )
        for line in progress.plan(min(limits) if limits else None):
            print(line)
    return 0


def command_plugins(_args: argparse.Namespace) -> int:
    """List installed plugins, their components and load failures."""
    from baseline.plugins.discovery import default_plugins
    from baseline.plugins.listing import print_plugins

    print_plugins(default_plugins())
    return 0


def command_sample(args: argparse.Namespace) -> int:
    """Print samples from a trained run."""
    from baseline.errors import ConfigError
    from baseline.tools.generation import SamplingOptions, generate
    from baseline.tools.inference import load_run

    prompt = args.prompt
    if args.prompt_file:
        try:
            with open(args.prompt_file, encoding="utf-8") as handle:
                prompt = handle.read()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"cannot read the prompt: {error}", key_path="--prompt-file"
            ) from None
    options = SamplingOptions(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        num_samples=args.num_samples,
        stop_at_segment_end=args.stop_at_segment_end,
    )
    options.check()
    samples = generate(load_run(args.run_dir), prompt, options)
    for index, text in enumerate(samples):
        if len(samples) > 1:
            print(f"--- sample {index + 1} ---")
        print(prompt + text)
    return 0


def command_export(args: argparse.Namespace) -> int:
    """Write a finished run as a Hugging Face directory (by its plugins' ``export_hf``)."""
    from baseline.tools.export import export_run

    result = export_run(args.run_dir, args.out_dir, fmt=args.fmt, overwrite=args.overwrite)
    print(
        f"{result.out_dir}: model {result.model_name} and tokenizer {result.tokenizer_name} "
        f"exported ({', '.join(result.files)}); load with "
        f"AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained"
    )
    return 0


def command_runs(args: argparse.Namespace) -> int:
    """Print the runs under an artifacts root, newest first."""
    import json
    from pathlib import Path

    from baseline.runs.table import render_lines, render_table, summarize_runs

    root = Path(args.artifacts_root)
    summaries = summarize_runs(root)
    try:
        if args.json:
            print(json.dumps([summary.to_json() for summary in summaries], indent=2))
        elif not summaries:
            _print_stderr_line(f"no runs in {root}")
        elif sys.stdout.isatty():
            render_table(summaries, root)
        else:
            render_lines(summaries, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # `baseline runs | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def command_plot(args: argparse.Namespace) -> int:
    """Draw one metric of several runs into an image file."""
    from pathlib import Path

    from baseline.runs.plots import X_AXES, plot_runs

    _, series = plot_runs([Path(p) for p in args.run_dirs], args.metric, args.x, Path(args.output))
    points = sum(len(one.x) for one in series)
    print(
        f"{args.output}: {args.metric} against {X_AXES[args.x]}, "
        f"{len(series)} run{'s' if len(series) > 1 else ''}, {points} points"
    )
    return 0


def command_eval(args: argparse.Namespace) -> int:
    """Print the loss, perplexity and bits per byte of a finished run on a text."""
    import json

    from baseline.tools.evaluation import evaluate_run

    result = evaluate_run(
        args.run_dir,
        data=args.data,
        dataset=args.dataset,
        device=args.device,
        batch_size=args.batch_size,
    )
    print(json.dumps(result.to_json(), indent=2) if args.json else result.render())
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": command_run,
    "validate": command_validate,
    "plugins": command_plugins,
    "runs": command_runs,
    "plot": command_plot,
    "sample": command_sample,
    "export": command_export,
    "eval": command_eval,
    "new-plugin": scaffold.command_new_plugin,
}


def _execute(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return handler(args)
    except BaselineError as error:
        if os.environ.get(DEBUG_ENV):
            raise
        _print_stderr_line(f"error: {error}")
        return error.exit_code
    except KeyboardInterrupt:
        _print_stderr_line("interrupted")
        return 130
    except Exception as error:
        if os.environ.get(DEBUG_ENV):
            raise
        _print_stderr_line(
            f"error: unexpected {type(error).__name__}: {error} "
            f"(set {DEBUG_ENV}=1 to see the traceback)"
        )
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``baseline``."""
    from baseline.distributed.launch import finish_worker

    argv = sys.argv[1:] if argv is None else list(argv)
    parser, handlers = build_parser(), dict(COMMANDS)
    if not argv or argv[0] not in COMMANDS:  # --help, a plugin's command, or a typo
        from baseline.plugins.discovery import add_plugin_commands

        handlers.update(add_plugin_commands(parser, COMMANDS))
    args = parser.parse_args(argv)
    return finish_worker(_execute(handlers[args.command], args))


def run_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``baseline-run`` (the same as ``baseline run``)."""
    parser = _Parser(prog="baseline-run", description="Train an experiment end to end.")
    _add_run_arguments(parser)
    from baseline.distributed.launch import finish_worker  # a torchrun worker exits cleanly

    return finish_worker(_execute(command_run, parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
