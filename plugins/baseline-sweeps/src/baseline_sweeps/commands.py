"""The forms of ``baseline sweep``: run (or continue) a sweep, join one, and read its results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import attrs

from baseline.errors import ConfigError, DataError
from baseline_sweeps.plan import Plan, describe_point, run_name
from baseline_sweeps.spec import CommandLine, SweepSpec, build_spec
from baseline_sweeps.store import (
    SWEEP_JSON,
    Store,
    SweepRecord,
    connect,
    default_url,
    masked,
    read_description,
)


def _command_line(args: argparse.Namespace) -> CommandLine:
    return CommandLine(
        name=args.name,
        params=tuple(args.param),
        fixed=tuple(args.fixed),
        metric=args.metric,
        goal=args.goal,
        method=args.method,
        trials=args.trials,
        seed=args.seed,
        repeats=args.repeats,
        retries=args.retries,
        workers=args.workers,
        pruner=args.pruner,
        storage=args.storage,
    )


def _stderr(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _describe(spec: SweepSpec) -> str:
    runs = f"{spec.trials} trials" + (f" x {spec.repeats} repeats" if spec.repeats > 1 else "")
    params = "; ".join(f"{param.key} {param.describe()}" for param in spec.params)
    return (
        f"sweep {spec.name}: {spec.method}, {runs}, {spec.goal} {spec.metric}, "
        f"pruner {spec.pruner.name}; {params}"
    )


def _warn_without_validation(plan: Plan) -> None:
    """A pruner needs values during training: periodic validation of some logger."""
    spec = plan.spec
    if spec.pruner.name == "none" or not spec.metric.startswith("val_"):
        return
    logging = plan.base.config.logging
    if any(
        settings.metrics_request(logging).val_every_n_steps for settings in logging.loggers.values()
    ):
        return
    source, key_path = spec.where("pruner")
    where = ": ".join(part for part in (source, key_path) if part)
    _stderr(
        f"warning: {where}: the trials validate only at the end of each epoch (every logger's "
        "val_every_n_steps is 0), so the pruner sees few values; set one, e.g. "
        "logging.console.val_every_n_steps=50, in the sweep's set"
    )


def _store_url(directory: Path, spec: SweepSpec) -> str:
    if spec.storage:
        return spec.storage
    described = read_description(directory)
    if described and described.get("storage"):
        if described.get("storage_password"):
            raise spec.error(
                "storage",
                f"the sweep's store {described['storage']} needs its password, which is not "
                "kept; give --storage URL",
            )
        return str(described["storage"])
    return default_url(directory)


def sweep(args: argparse.Namespace) -> int:
    """``baseline sweep EXPERIMENT [SWEEP_FILE]``: check every trial, then run or continue."""
    from baseline_sweeps.runner import run_sweep

    if not args.target:
        raise ConfigError(
            "give an experiment file: baseline sweep EXPERIMENT [SWEEP_FILE] (see --help)",
            source="baseline sweep",
        )
    experiment = args.target
    spec = build_spec(
        args.second, _command_line(args), default_name=f"{Path(experiment).stem}-sweep"
    )
    plan = Plan(experiment, spec)
    checked = plan.check_all()
    _warn_without_validation(plan)
    if args.dry_run:
        return _dry_run(plan, checked)
    url = _store_url(plan.directory, spec)
    plan.directory.mkdir(parents=True, exist_ok=True)
    store = Store(
        plan.directory, connect(url, source="--storage" if spec.storage else ""), spec.name
    )
    record = SweepRecord(
        spec,
        str(Path(experiment).resolve()),
        str(Path(args.second).resolve()) if args.second else None,
        plan.base.config_data,
    )
    created = store.create_or_continue(record)
    store.write_description(record, url)
    print(_describe(spec))
    print(
        f"{'new store' if created else 'continuing'} {store.directory} ({masked(url)}); "
        f"{spec.workers} worker{'s' if spec.workers > 1 else ''}; every trial's config is "
        f"valid ({checked} checked)"
    )
    sys.stdout.flush()
    return run_sweep(plan, store, spec.workers)


def _dry_run(plan: Plan, checked: int) -> int:
    from baseline_sweeps.sampling import sampled_points

    spec = plan.spec
    print(_describe(spec) + " (dry run: nothing is written)")
    print(f"store: {plan.directory}; runs: {plan.artifacts_root}/{spec.name}-<k>")
    points = spec.points() if spec.method == "grid" else sampled_points(spec)
    for point, params in enumerate(points):
        for repeat in range(spec.repeats):
            seed = f" run.seed={plan.base_seed + repeat}" if spec.repeats > 1 else ""
            print(f"trial {point}: {run_name(spec, point, repeat)}  {describe_point(params)}{seed}")
    if spec.method != "grid" and len(points) < spec.trials:
        print(f"trials {len(points)}..{spec.trials - 1}: chosen by TPE from the finished trials")
    if plan.grouping:
        print(f"every trial also sets: {' '.join(plan.grouping)}")
    print(f"every trial's config is valid ({checked} checked)")
    return 0


def locate(name: str, root: str, storage: str | None) -> tuple[Store, SweepRecord, str]:
    """The store of the sweep ``name`` (a sweep of ``root``, or a sweep's directory)."""
    path = Path(name)
    directory = path if (path / SWEEP_JSON).is_file() else Path(root) / name
    described = read_description(directory)
    study = str(described["name"]) if described else path.name
    if storage:
        url = storage
    elif described is not None:
        if described.get("storage_password"):
            raise ConfigError(
                f"the store {described.get('storage')} needs its password, which is not kept; "
                "give --storage URL",
                source=str(directory / SWEEP_JSON),
            )
        url = str(described.get("storage") or default_url(directory))
    else:
        raise DataError(
            f"{directory}: no sweep there (no {SWEEP_JSON}); give the directory of the sweeps "
            "with --root DIR, or the store with --storage URL"
        )
    store = Store(directory, connect(url, source="--storage" if storage else ""), study)
    record = store.record()
    if record is None:
        raise DataError(f"no sweep {study!r} in {masked(url)}")
    return store, record, url


def join(args: argparse.Namespace) -> int:
    """``baseline sweep --join NAME``: this machine's workers on a sweep that exists."""
    from baseline_sweeps.runner import run_sweep

    located, record, url = locate(args.join, args.root, args.storage)
    spec = record.spec
    changes: dict[str, Any] = {"storage": url}
    if args.workers is not None:
        changes["workers"] = args.workers
    if args.retries is not None:
        changes["retries"] = args.retries
    spec = attrs.evolve(spec, **changes)
    experiment = args.target or record.experiment
    if not Path(experiment).is_file():
        raise ConfigError(
            f"the sweep's experiment file {experiment} is not on this machine; give its path: "
            f"baseline sweep EXPERIMENT --join {args.join}",
            source="--join",
        )
    plan = Plan(experiment, spec)
    store = Store(plan.directory, located.storage, spec.name)
    store.write_description(record, url)
    print(_describe(spec))
    print(f"joining {plan.directory} ({masked(url)}) with {spec.workers} worker(s)")
    sys.stdout.flush()
    return run_sweep(plan, store, spec.workers)


def results(args: argparse.Namespace) -> int:
    """``baseline sweep table|best|plot NAME``."""
    from baseline_sweeps.results import (
        best_experiment,
        best_row,
        plot,
        point_rows,
        render,
        write_text,
    )

    if not args.second:
        raise ConfigError(
            f"give the sweep: baseline sweep {args.target} NAME",
            source=f"baseline sweep {args.target}",
        )
    store, record, _url = locate(args.second, args.root, args.storage)
    spec = record.spec
    trials = store.trials()
    rows = point_rows(trials, spec)
    if args.target == "table":
        render(rows, spec, args.fmt, sys.stdout)
        return 0
    if args.target == "best":
        row = best_row(rows, spec)
        artifacts_root = Path(record.config["run"]["artifacts_root"])

        def rebuild() -> dict[str, Any]:
            plan = Plan(record.experiment, spec)
            return dict(plan.check(row.params, row.trial, 0).config_data)

        text, _data = best_experiment(row, spec, artifacts_root, rebuild)
        write_text(text, args.output)
        if args.output:
            value = "-" if row.value is None else f"{row.value:.4f}"
            print(f"{args.output}: trial {row.trial} of sweep {spec.name}, {spec.metric} {value}")
        return 0
    output = Path(args.output) if args.output else store.directory / f"{spec.name}.png"
    drawn = plot(trials, spec, output)
    count = len(spec.params)
    print(
        f"{output}: {spec.metric} against {count} parameter{'s' if count > 1 else ''}, {drawn} runs"
    )
    return 0
