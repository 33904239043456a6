"""The sweep definition: a sweep file's ``[sweep]`` and ``[params]`` tables and the command
line's options (``--param KEY=VALUES``, ``--trials``, ...), checked and normalized into a
:class:`SweepSpec`.

Every problem is a :class:`~baseline.errors.ConfigError` naming where the value came from:
``sweep.toml: params.train.learning_rate: empty range: low 0.01 >= high 0.001``, or
``--param: train.learning_rate: ...`` for the command line. Nothing heavy is imported here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from baseline.errors import ConfigError
from baseline.plugins.registry import did_you_mean

METHODS = ("grid", "random", "tpe")
GOALS = ("minimize", "maximize")
PRUNERS = ("none", "median", "successive_halving")
#: What the sweep sets on every trial itself: these keys cannot be parameters or fixed values.
RESERVED_KEYS = (
    "run.run_name",
    "run.artifacts_root",
    "run.resume_from_checkpoint",
    "run.overwrite",
)
#: Of those, the keys a fixed override (``--set``, ``[sweep] set``) may give: every trial then
#: runs under that root, and the store lives beside it.
FIXED_ALLOWED_KEYS = ("run.artifacts_root",)
#: The most points a grid may have.
MAX_GRID_POINTS = 10_000
_LAYERS = ("first", "middle", "last")
#: Every key the core writes to ``metrics.jsonl`` (docs/metrics.md).
METRICS: tuple[str, ...] = (
    "val_bpb",
    "val_loss",
    "val_perplexity",
    "train_loss",
    "train_perplexity",
    "train_loss_epoch",
    "train_perplexity_epoch",
    "tokens_per_second",
    "step_time_ms",
    "learning_rate",
    "global_grad_norm",
    "peak_memory_gib",
    "mfu",
    *(f"activation_norm_{layer}" for layer in _LAYERS),
    *(f"ln_weight_grad_norm_{layer}" for layer in _LAYERS),
    *(f"ln_bias_grad_norm_{layer}" for layer in _LAYERS),
    *(f"attention_entropy_{layer}" for layer in _LAYERS),
)

SWEEP_KEYS = (
    "name",
    "metric",
    "goal",
    "method",
    "trials",
    "seed",
    "repeats",
    "retries",
    "workers",
    "startup_trials",
    "storage",
    "set",
    "pruner",
)
PRUNER_KEYS = ("name", "startup_trials", "warmup_steps", "min_resource", "reduction_factor")
RANGE_KEYS = ("low", "high", "step", "log")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KEY = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)+$")

Scalar = str | int | float | bool


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal (what ``--set key=<literal>`` parses back to ``value``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def show(value: Any) -> str:
    """A value as a person reads it in a table: ``0.003``, ``gelu``, ``true``."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    return toml_value(value)


@attrs.frozen
class Param:
    """One swept key: a set of values, or a range ``[low, high]`` (``integer`` when both ends
    are integers; ``log``-uniform; quantized by ``step``)."""

    key: str
    values: tuple[Scalar, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False
    #: Where it was written, for messages: ``(source, key path)``. Not part of its identity.
    origin: tuple[str, str] = attrs.field(default=("", ""), eq=False, repr=False)

    def grid_values(self) -> tuple[Scalar, ...] | None:
        """The values a grid takes; ``None`` for a continuous range (no ``step``)."""
        if self.values:
            return self.values
        assert self.low is not None and self.high is not None
        if self.integer:
            step = int(self.step or 1)
            return tuple(range(int(self.low), int(self.high) + 1, step))
        if self.step is None or self.log:
            return None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return tuple(round(self.low + index * self.step, 12) for index in range(count))

    def describe(self) -> str:
        """``{0.003, 0.008}``, ``log-uniform [0.0001, 0.01]``, ``integers [64, 256] step 32``."""
        if self.values:
            return "{" + ", ".join(show(value) for value in self.values) + "}"
        kind = "integers" if self.integer else "uniform"
        if self.log:
            kind = "log-uniform integers" if self.integer else "log-uniform"
        text = f"{kind} [{show(self.low)}, {show(self.high)}]"
        return f"{text} step {show(self.step)}" if self.step is not None else text

    def to_json(self) -> dict[str, Any]:
        """Plain data (stored with the sweep; :meth:`from_json` reads it back)."""
        if self.values:
            return {"key": self.key, "values": list(self.values)}
        data: dict[str, Any] = {"key": self.key, "low": self.low, "high": self.high}
        data.update(step=self.step, log=self.log, integer=self.integer)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Param:
        if "values" in data:
            return cls(str(data["key"]), values=tuple(data["values"]))
        return cls(
            str(data["key"]),
            low=data["low"],
            high=data["high"],
            step=data.get("step"),
            log=bool(data.get("log")),
            integer=bool(data.get("integer")),
        )


@attrs.frozen
class PrunerSpec:
    """``[sweep.pruner]``: ``none``, ``median`` (optuna's MedianPruner: stop a trial whose
    value is worse than the median of the other trials' at the same step) or
    ``successive_halving``."""

    name: str = "none"
    #: median: trials that finish before any is pruned.
    startup_trials: int = 2
    #: median: steps before a trial may be pruned.
    warmup_steps: int = 0
    #: successive_halving: steps of the first rung (``None``: optuna's ``auto``).
    min_resource: int | None = None
    reduction_factor: int = 3

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class SweepSpec:
    """A whole sweep. :meth:`identity` is what must match for a store to continue it."""

    name: str
    params: tuple[Param, ...]
    metric: str = "val_bpb"
    goal: str = "minimize"
    method: str = "grid"
    #: Points to run (each ``repeats`` times); a grid's default is every point.
    trials: int
    seed: int = 0
    repeats: int = 1
    retries: int = 1
    workers: int = 1
    #: tpe: trials sampled at random before TPE models the results.
    startup_trials: int = 2
    storage: str | None = None
    #: ``key=value`` overrides given to every trial.
    fixed: tuple[str, ...] = ()
    pruner: PrunerSpec = PrunerSpec()
    #: The sweep file (or ``--param``), for messages.
    source: str = attrs.field(default="--param", eq=False)
    #: Whether it came from a sweep file (key paths ``params.x``, ``sweep.x``).
    from_file: bool = attrs.field(default=False, eq=False)

    @property
    def direction(self) -> str:
        return self.goal

    def param(self, key: str) -> Param:
        return next(param for param in self.params if param.key == key)

    def where(self, field: str) -> tuple[str, str]:
        """``(source, key path)`` of a ``[sweep]`` field, for messages."""
        return (self.source, f"sweep.{field}") if self.from_file else (f"--{field}", "")

    def error(self, field: str, message: str) -> ConfigError:
        source, key_path = self.where(field)
        return ConfigError(message, key_path=key_path, source=source)

    def points(self) -> list[dict[str, Scalar]]:
        """A grid's points to run, in order: every point, or a subset of ``trials`` of them
        drawn with ``seed`` (keeping the grid's order)."""
        axes = [param.grid_values() or () for param in self.params]
        everything = [
            dict(zip((p.key for p in self.params), combo, strict=True))
            for combo in itertools.product(*axes)
        ]
        if self.trials >= len(everything):
            return everything
        chosen = sorted(random.Random(self.seed).sample(range(len(everything)), self.trials))
        return [everything[index] for index in chosen]

    def identity(self) -> dict[str, Any]:
        """The fields that make this sweep what it is (workers, retries and the storage may
        change between runs of the same sweep)."""
        return {
            "name": self.name,
            "metric": self.metric,
            "goal": self.goal,
            "method": self.method,
            "trials": self.trials,
            "seed": self.seed,
            "repeats": self.repeats,
            "startup_trials": self.startup_trials,
            "set": list(self.fixed),
            "params": [param.to_json() for param in self.params],
            "pruner": self.pruner.to_json(),
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.identity(), "retries": self.retries, "workers": self.workers}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "") -> SweepSpec:
        return cls(
            name=data["name"],
            params=tuple(Param.from_json(item) for item in data["params"]),
            metric=data["metric"],
            goal=data["goal"],
            method=data["method"],
            trials=data["trials"],
            seed=data["seed"],
            repeats=data["repeats"],
            retries=data.get("retries", 1),
            workers=data.get("workers", 1),
            startup_trials=data.get("startup_trials", 2),
            fixed=tuple(data["set"]),
            pruner=PrunerSpec(**data["pruner"]),
            source=source or data["name"],
        )


def fingerprint(data: Any) -> str:
    """A short hash of plain data (the base experiment's config)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# -- reading ---------------------------------------------------------------------------------


def read_sweep_file(path: str) -> dict[str, Any]:
    """The parsed TOML of a sweep file; problems are one-line errors naming it."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found; check the path", source=path) from None
    except OSError as error:
        raise ConfigError(f"cannot read file: {error.strerror}", source=path) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text; save it as UTF-8", source=path) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"invalid TOML: {error}", source=path) from None


def _fail(source: str, key_path: str, message: str) -> ConfigError:
    return ConfigError(message, key_path=key_path, source=source)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(key path, spec)`` of each parameter of a ``[params]`` table (dotted keys nest)."""
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping) and not (set(value) & {"low", "high", "values"}):
            yield from _flatten(value, path)
        else:
            yield path, value


def param_from(key: str, value: Any, source: str, key_path: str) -> Param:
    """Check one parameter: a list of values, ``{values = [...]}``, or a range table."""
    origin = (source, key_path)
    if not _KEY.match(key):
        raise _fail(source, key_path, "not a key path; write section.key, e.g. train.learning_rate")
    if key in RESERVED_KEYS:
        raise _fail(source, key_path, "is set by the sweep for each trial; it cannot be swept")
    if isinstance(value, Mapping) and "values" in value:
        extra = sorted(set(value) - {"values"})
        if extra:
            raise _fail(source, key_path, f"a list of values takes no {', '.join(extra)}")
        value = value["values"]
    if isinstance(value, list | tuple):
        if not value:
            raise _fail(source, key_path, "empty list of values; give at least one")
        for item in value:
            if not isinstance(item, str | int | float | bool):
                raise _fail(
                    source,
                    key_path,
                    f"values must be strings, numbers or booleans, got {type(item).__name__}",
                )
        if len({(type(v), v) for v in value}) != len(value):
            raise _fail(source, key_path, f"lists a value twice: {list(value)}")
        return Param(key, values=tuple(value), origin=origin)
    if not isinstance(value, Mapping):
        raise _fail(
            source,
            key_path,
            f"expected a list of values or a range {{low = ..., high = ...}}, got {value!r}; "
            "to give every trial one value, use [sweep] set",
        )
    unknown = sorted(set(value) - set(RANGE_KEYS))
    if unknown:
        hint = did_you_mean(unknown[0], RANGE_KEYS)
        raise _fail(
            source, key_path, f"unknown range key {unknown[0]!r}{hint} Keys: low, high, step, log"
        )
    low, high, step, log = value.get("low"), value.get("high"), value.get("step"), value.get("log")
    if low is None or high is None:
        raise _fail(source, key_path, "a range needs both low and high")
    if not _is_number(low) or not _is_number(high):
        raise _fail(source, key_path, f"low and high must be numbers, got {low!r} and {high!r}")
    if low >= high:
        raise _fail(source, key_path, f"empty range: low {low!r} >= high {high!r}")
    if log is not None and not isinstance(log, bool):
        raise _fail(source, key_path, f"log must be true or false, got {log!r}")
    integer = isinstance(low, int) and isinstance(high, int)
    if step is not None:
        if not _is_number(step) or step <= 0:
            raise _fail(source, key_path, f"step must be a number > 0, got {step!r}")
        if integer and not isinstance(step, int):
            raise _fail(source, key_path, f"an integer range needs an integer step, got {step!r}")
        if log:
            raise _fail(source, key_path, "a log range cannot have a step")
        if step > high - low:
            raise _fail(source, key_path, f"empty range: step {step!r} > high - low")
    if log and low <= 0:
        raise _fail(source, key_path, f"a log range needs low > 0, got {low!r}")
    return Param(
        key,
        low=low,
        high=high,
        step=step,
        log=bool(log),
        integer=integer,
        origin=origin,
    )


def parse_cli_param(assignment: str) -> Param:
    """``--param KEY=V1,V2`` (a set of values), ``KEY=LOW..HIGH`` or ``KEY=log:LOW..HIGH``;
    each value is read as TOML, or kept as a bare string (``gelu``)."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not text.strip():
        raise _fail(
            "--param",
            "",
            f"expected KEY=VALUES, e.g. train.learning_rate=3e-3,8e-3; got {assignment!r}",
        )
    text = text.strip()
    log = text.startswith("log:")
    body = text.removeprefix("log:")
    if ".." in body and "," not in body:
        low_text, _, high_text = body.partition("..")
        spec = {"low": _literal(low_text), "high": _literal(high_text)}
        if log:
            spec["log"] = True
        return param_from(key, spec, "--param", key)
    if log:
        raise _fail("--param", key, "log: needs a range, e.g. log:1e-4..1e-2")
    return param_from(key, [_literal(item) for item in body.split(",")], "--param", key)


def _literal(text: str) -> Any:
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


@attrs.frozen(kw_only=True)
class CommandLine:
    """What the command line sets; ``None``: not given."""

    name: str | None = None
    params: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    metric: str | None = None
    goal: str | None = None
    method: str | None = None
    trials: int | None = None
    seed: int | None = None
    repeats: int | None = None
    retries: int | None = None
    workers: int | None = None
    pruner: str | None = None
    storage: str | None = None


def build_spec(
    sweep_file: str | None, command_line: CommandLine, *, default_name: str
) -> SweepSpec:
    """The sweep of a sweep file (if any) with the command line's options over it."""
    data: Mapping[str, Any] = read_sweep_file(sweep_file) if sweep_file else {}
    source = sweep_file or "--param"
    for key in data:
        if key not in ("sweep", "params"):
            raise _fail(
                source,
                key,
                f"unknown table{did_you_mean(key, ('sweep', 'params'))} Tables: sweep, params",
            )
    table = data.get("sweep", {})
    if not isinstance(table, Mapping):
        raise _fail(source, "sweep", "must be a table ([sweep])")
    for key in table:
        if key not in SWEEP_KEYS:
            hint = did_you_mean(key, SWEEP_KEYS)
            raise _fail(source, f"sweep.{key}", f"unknown key{hint} Keys: {', '.join(SWEEP_KEYS)}")

    def origin(field: str, flag: Any) -> tuple[str, str]:
        if flag is not None:
            return f"--{field}", ""
        return source, f"sweep.{field}"

    def pick(field: str, flag: Any, default: Any) -> tuple[Any, tuple[str, str]]:
        if flag is not None:
            return flag, (f"--{field}", "")
        return table.get(field, default), (source, f"sweep.{field}")

    def integer(field: str, flag: Any, default: Any, minimum: int) -> int:
        value, (src, path) = pick(field, flag, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(src, path, f"expected an integer, got {value!r}")
        if value < minimum:
            raise _fail(src, path, f"must be >= {minimum}, got {value}")
        return value

    def choice(field: str, flag: Any, default: str, choices: Sequence[str]) -> str:
        value, (src, path) = pick(field, flag, default)
        if value not in choices:
            hint = did_you_mean(str(value), choices)
            raise _fail(
                src, path, f"unknown {field} {value!r}{hint} Choose from: {', '.join(choices)}"
            )
        return str(value)

    stem = Path(sweep_file).stem if sweep_file else default_name
    name, (src, path) = pick("name", command_line.name, stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(
            src,
            path,
            "a sweep name is letters, digits, '.', '_' or '-', starting with a letter or digit; "
            f"got {name!r}",
        )

    params: list[Param] = []
    raw_params = data.get("params", {})
    if not isinstance(raw_params, Mapping):
        raise _fail(source, "params", "must be a table ([params])")
    for key, value in _flatten(raw_params):
        params.append(param_from(key, value, source, f"params.{key}"))
    for assignment in command_line.params:
        param = parse_cli_param(assignment)
        if any(p.key == param.key for p in params):
            raise _fail(
                "--param", param.key, "is swept twice (in the sweep file or by another --param)"
            )
        params.append(param)
    if not params:
        raise _fail(
            source,
            "params",
            "no parameters to sweep; add a [params] table or --param KEY=VALUES",
        )

    # lists of values, or ranges with a step: a grid by default; else a random search
    finite = all(param.values or param.step is not None for param in params)
    method = choice("method", command_line.method, "grid" if finite else "random", METHODS)
    metric, (src, path) = pick("metric", command_line.metric, "val_bpb")
    if metric not in METRICS:
        hint = did_you_mean(str(metric), METRICS)
        raise _fail(src, path, f"no trial logs {metric!r}{hint} Metrics: {', '.join(METRICS)}")
    goal = choice("goal", command_line.goal, "minimize", GOALS)
    seed = integer("seed", command_line.seed, 0, 0)
    repeats = integer("repeats", command_line.repeats, 1, 1)
    retries = integer("retries", command_line.retries, 1, 0)
    workers = integer("workers", command_line.workers, 1, 1)

    if method == "grid":
        for param in params:
            if param.grid_values() is None:
                src, path = param.origin
                raise _fail(
                    src,
                    path,
                    f"a grid needs a list of values or a range with a step, got {param.describe()}",
                )
        size = math.prod(len(param.grid_values() or ()) for param in params)
        if size > MAX_GRID_POINTS:
            raise _fail(
                *origin("method", command_line.method),
                f"the grid has {size:,} points, more than {MAX_GRID_POINTS:,}; "
                "use method random or tpe",
            )
        trials = integer("trials", command_line.trials, size, 1)
        if trials > size:
            src, path = origin("trials", command_line.trials)
            raise _fail(src, path, f"the grid has {size} points, fewer than trials = {trials}")
    else:
        value, (src, path) = pick("trials", command_line.trials, None)
        if value is None:
            raise _fail(
                source, "sweep.trials", f"method {method!r} needs a trial budget (trials = N)"
            )
        trials = integer("trials", command_line.trials, None, 1)
    startup = integer("startup_trials", None, max(2, min(10, trials // 3)), 1)

    fixed_raw, (src, path) = pick("set", None, [])
    if not isinstance(fixed_raw, list) or not all(isinstance(item, str) for item in fixed_raw):
        raise _fail(
            src, path, 'must be a list of "key=value" strings, e.g. ["train.max_time_s=30"]'
        )
    fixed = [*fixed_raw, *command_line.fixed]
    for assignment in fixed:
        key = assignment.partition("=")[0].strip()
        set_source, set_path = (source, "sweep.set") if assignment in fixed_raw else ("--set", "")
        if "=" not in assignment or not _KEY.match(key):
            raise _fail(set_source, set_path, f'expected "key.path=value", got {assignment!r}')
        if key in RESERVED_KEYS and key not in FIXED_ALLOWED_KEYS:
            raise _fail(set_source, set_path, f"{key} is set by the sweep for each trial")
        if any(param.key == key for param in params):
            raise _fail(set_source, set_path, f"{key} is also a parameter")

    pruner = _pruner(table.get("pruner"), command_line.pruner, source)
    storage, (src, path) = pick("storage", command_line.storage, None)
    if storage is not None and (not isinstance(storage, str) or "://" not in storage):
        raise _fail(
            src, path, f"expected a database URL such as postgresql://user@host/db, got {storage!r}"
        )
    return SweepSpec(
        name=name,
        params=tuple(params),
        metric=str(metric),
        goal=goal,
        method=method,
        trials=trials,
        seed=seed,
        repeats=repeats,
        retries=retries,
        workers=workers,
        startup_trials=startup,
        storage=storage,
        fixed=tuple(fixed),
        pruner=pruner,
        source=source,
        from_file=sweep_file is not None,
    )


def _pruner(table: Any, flag: str | None, source: str) -> PrunerSpec:
    if table is None:
        table = {}
    if isinstance(table, str):
        table = {"name": table}
    if not isinstance(table, Mapping):
        raise _fail(source, "sweep.pruner", "must be a table ([sweep.pruner]) or a name")
    for key in table:
        if key not in PRUNER_KEYS:
            hint = did_you_mean(key, PRUNER_KEYS)
            raise _fail(
                source, f"sweep.pruner.{key}", f"unknown key{hint} Keys: {', '.join(PRUNER_KEYS)}"
            )
    name = flag if flag is not None else table.get("name", "median" if table else "none")
    if name not in PRUNERS:
        src, path = ("--pruner", "") if flag is not None else (source, "sweep.pruner.name")
        hint = did_you_mean(str(name), PRUNERS)
        raise _fail(src, path, f"unknown pruner {name!r}{hint} Choose from: {', '.join(PRUNERS)}")
    values: dict[str, Any] = {"name": name}
    for key, minimum in (
        ("startup_trials", 0),
        ("warmup_steps", 0),
        ("min_resource", 1),
        ("reduction_factor", 2),
    ):
        if key in table:
            value = table[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise _fail(
                    source, f"sweep.pruner.{key}", f"must be an integer >= {minimum}, got {value!r}"
                )
            values[key] = value
    return PrunerSpec(**values)
