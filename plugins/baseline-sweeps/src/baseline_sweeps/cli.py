"""``baseline sweep``: its arguments (:func:`build`, argparse only, so ``baseline --help`` stays
fast) and what each form does (:func:`run`, which imports the rest on first use)."""

from __future__ import annotations

import argparse

HELP = "hyperparameter sweeps of an experiment (grid, random, TPE; Optuna)"
USAGE = """baseline sweep EXPERIMENT [SWEEP_FILE] [--param KEY=VALUES]... [options]
       baseline sweep [EXPERIMENT] --join NAME [--storage URL] [--workers K]
       baseline sweep table NAME [--format table|md|csv|json]
       baseline sweep best NAME [-o FILE]
       baseline sweep plot NAME [-o FILE]"""
DESCRIPTION = """Run the trials of a sweep: each an ordinary run <artifacts_root>/<sweep>-<k> of
EXPERIMENT with the sweep's overrides. The sweep's store is <artifacts_root>/../sweeps/<sweep>;
running the same command again continues it. SWEEP_FILE has a [sweep] table (metric, goal,
method, trials, seed, repeats, retries, pruner, set) and a [params] table (KEY = [values] or
{low, high, step, log}); --param KEY=V1,V2 (or LOW..HIGH, log:LOW..HIGH) sweeps without a
file. table, best and plot read a sweep's results (NAME: a sweep of --root, or its
directory). See docs/sweeps.md."""
RESULTS = ("table", "best", "plot")


def build(parser: argparse.ArgumentParser) -> None:
    """The arguments of every form of ``baseline sweep`` (one parser)."""
    parser.usage = USAGE
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("target", nargs="?", metavar="EXPERIMENT|table|best|plot")
    parser.add_argument("second", nargs="?", metavar="SWEEP_FILE|NAME")
    sweep = parser.add_argument_group("running a sweep")
    sweep.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUES",
        help="sweep KEY over a comma list of values (3e-3,8e-3), a range (LOW..HIGH) or a "
        "log range (log:LOW..HIGH); repeatable",
    )
    sweep.add_argument(
        "--set",
        dest="fixed",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of every trial (repeatable)",
    )
    sweep.add_argument("--name", help="the sweep's name (default: the sweep file's name)")
    sweep.add_argument("--metric", help="metric to optimize (default: val_bpb)")
    sweep.add_argument("--goal", help="minimize (default) or maximize")
    sweep.add_argument("--method", help="grid, random or tpe")
    sweep.add_argument("--trials", type=int, help="trial budget (points to run)")
    sweep.add_argument("--seed", type=int, help="seed of the sampler")
    sweep.add_argument("--repeats", type=int, help="runs per point, with seeds run.seed + r")
    sweep.add_argument("--retries", type=int, help="runs again of a failed trial (default 1)")
    sweep.add_argument("--pruner", help="none, median or successive_halving")
    sweep.add_argument("--workers", type=int, help="trials at once on this machine (default 1)")
    sweep.add_argument("--storage", metavar="URL", help="the store's database (default: SQLite)")
    sweep.add_argument("--join", metavar="NAME", help="add this machine's workers to sweep NAME")
    sweep.add_argument(
        "--dry-run", action="store_true", help="check every trial's config and print the trials"
    )
    results = parser.add_argument_group("reading results (table, best, plot)")
    results.add_argument(
        "--root",
        default="artifacts/sweeps",
        help="directory of the sweeps (default: artifacts/sweeps)",
    )
    results.add_argument(
        "--format", dest="fmt", choices=("table", "md", "csv", "json"), default="table"
    )
    results.add_argument("-o", "--output", metavar="FILE", help="file to write (best, plot)")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the form the arguments name."""
    from baseline_sweeps import commands

    if args.target in RESULTS:
        return commands.results(args)
    if args.join:
        return commands.join(args)
    return commands.sweep(args)
