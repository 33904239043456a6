"""Experiment files: TOML text -> :class:`ExperimentConfig` and back to plain data.

``[dataset] name = "local_text"`` (likewise ``tokenizer``, ``model``, ``split``) selects a
registered component, and the rest of the table is structured into that component's config
class with cattrs. ``[logging] provider`` names one logger or a list, each with an optional
``[logging.<provider>]`` table. Every problem becomes one :class:`ConfigError` naming the
file and the key path.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from baseline.config import (
    PATH_METADATA_KEY,
    ComponentConfig,
    ExperimentConfig,
    LoggerConfig,
    LoggingConfig,
    RunConfig,
    TrainConfig,
)
from baseline.config.converter import config_converter
from baseline.config.mixture import (
    INLINE_METADATA_KEY,
    MIXTURE_NAME,
    NAMED_TABLE_METADATA_KEY,
    MixtureConfig,
)
from baseline.config.requirements import check_requirements
from baseline.errors import ConfigError, FieldError
from baseline.experiment.mixture import mixture_data, structure_mixture
from baseline.experiment.suggestions import (
    OVERRIDE_SOURCE,
    misspelt_required,
    misspelt_required_message,
    set_by_override,
)
from baseline.plugins.registry import ComponentRegistry, did_you_mean

T = TypeVar("T")

COMPONENT_SECTIONS = {
    "dataset": "dataset",
    "tokenizer": "tokenizer",
    "model": "model",
    "split": "split",
}
PLAIN_SECTIONS: dict[str, type[Any]] = {"run": RunConfig, "train": TrainConfig}
SECTIONS = ("run", "dataset", "tokenizer", "model", "train", "split", "logging")
LOGGING_KEYS = (
    "provider",
    "log_every_n_steps",
    "samples_per_validation",
    "sample_tokens",
    "on_logger_error",
)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML file; any failure is a :class:`ConfigError` naming the file."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found; check the path", source=source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a TOML file", source=source) from None
    except OSError as error:
        raise ConfigError(f"cannot read file: {error.strerror}", source=source) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text; save it as UTF-8", source=source) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"invalid TOML: {error}", source=source) from None


def parse_override(assignment: str) -> tuple[str, Any]:
    """Split ``key.path=value``; the value is parsed as TOML, or kept as a bare string."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", key):
        raise ConfigError(
            f"invalid override {assignment!r}; expected KEY.PATH=VALUE, e.g. train.epochs=2",
            source="--set",
        )
    try:
        value = tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.path=value`` assignment applied."""
    result: dict[str, Any] = _deep_copy(data)
    for assignment in overrides:
        key, value = parse_override(assignment)
        parts = key.split(".")
        table = result
        for depth, part in enumerate(parts[:-1]):
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"cannot set {key!r}: {'.'.join(parts[: depth + 1])} is not a table",
                    source="--set",
                )
            table = child
        table[parts[-1]] = value
    return result


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def load_experiment(
    path: str | os.PathLike[str],
    registry: ComponentRegistry,
    overrides: Iterable[str] = (),
) -> ExperimentConfig:
    """Read, override and structure an experiment file (without cross-field validation).

    A problem that a ``--set`` assignment caused is reported as ``--set: key.path: ...``.
    """
    overrides = list(overrides)
    file_data = read_toml(path)
    data = apply_overrides(file_data, overrides)
    try:
        return experiment_from_data(data, registry, base_dir=Path(path).resolve().parent)
    except ConfigError as error:
        keys = [parse_override(assignment)[0] for assignment in overrides]
        by_override = set_by_override(error.key_path, keys, file_data)
        raise error.with_source(OVERRIDE_SOURCE if by_override else str(path)) from None


def experiment_from_data(
    data: Mapping[str, Any], registry: ComponentRegistry, *, base_dir: Path | None = None
) -> ExperimentConfig:
    """Structure plain data (a parsed TOML document) into an :class:`ExperimentConfig`.

    Relative paths are resolved against ``base_dir`` when given.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a table of sections, got {type(data).__name__}")
    for key, value in data.items():
        if key not in SECTIONS:
            raise ConfigError(
                f"unknown section{did_you_mean(key, SECTIONS)} Sections: {', '.join(SECTIONS)}",
                key_path=key,
            )
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"must be a table ([{key}]), got {type(value).__name__}", key_path=key
            )
    sections: dict[str, Any] = {}
    for key, cls in PLAIN_SECTIONS.items():
        if key in data:
            sections[key] = structure(data[key], cls, key)
    if "run" in sections:
        # A missing plugin is reported with the pip command before its component is looked up.
        check_requirements(sections["run"].requires)
    for key, kind in COMPONENT_SECTIONS.items():
        if key not in data:
            raise ConfigError(
                f"missing section [{key}]; add it with name = one of: "
                f"{', '.join(registry.names(kind)) or '(none installed)'}",
                key_path=key,
            )
        sections[key] = _structure_component(data[key], kind, key, registry)
    if "logging" in data:
        sections["logging"] = _structure_logging(data["logging"], registry)
    else:
        sections["logging"] = LoggingConfig(
            loggers={"console": _default_logger_config("console", registry)}
        )
    config = ExperimentConfig(**sections)
    return resolve_paths(config, base_dir) if base_dir is not None else config


def _structure_component(
    table: Mapping[str, Any], kind: str, key_path: str, registry: ComponentRegistry
) -> ComponentConfig:
    if "name" not in table:
        raise ConfigError(
            f"missing 'name'; one of: {', '.join(registry.names(kind)) or '(none installed)'}",
            key_path=key_path,
        )
    name = table["name"]
    if not isinstance(name, str):
        raise ConfigError(f"expected a string, got {name!r}", key_path=f"{key_path}.name")
    if kind == "dataset" and name == MIXTURE_NAME:  # sources resolved like [dataset] tables
        return structure_mixture(table, key_path, registry, structure)
    if kind == "dataset" and name not in registry.names(kind):
        hint = did_you_mean(name, [*registry.names(kind), MIXTURE_NAME])
        if MIXTURE_NAME in hint:  # the core's mixture is not in the registry
            raise ConfigError(f"unknown dataset {name!r}{hint}", key_path=f"{key_path}.name")
    component = registry.get(kind, name)
    fields = {k: v for k, v in table.items() if k != "name"}
    return structure(fields, component.config_cls, key_path)


def _structure_logging(table: Mapping[str, Any], registry: ComponentRegistry) -> LoggingConfig:
    plain = {k: v for k, v in table.items() if k in LOGGING_KEYS}
    if isinstance(plain.get("provider"), str):
        plain["provider"] = [plain["provider"]]  # one provider may be written without a list
    tables = {k: v for k, v in table.items() if k not in LOGGING_KEYS}
    base = structure(plain, LoggingConfig, "logging")
    loggers: dict[str, Any] = {}
    for name, sub in tables.items():
        if not isinstance(sub, Mapping):
            raise ConfigError(
                f"unknown key{did_you_mean(name, LOGGING_KEYS)} Keys: {', '.join(LOGGING_KEYS)}, "
                "or a [logging.<provider>] table",
                key_path=f"logging.{name}",
            )
        if name not in base.provider:
            hint = did_you_mean(name, base.provider)  # [logging.consle] for console
            fix = f"{hint} Or add" if hint != "." else "; add"
            raise ConfigError(
                f"settings for a logger that is not enabled{fix} {name!r} to logging.provider "
                f"(now {list(base.provider)})",
                key_path=f"logging.{name}",
            )
    for provider in base.provider:
        component = registry.get("logger", provider)
        loggers[provider] = structure(
            tables.get(provider, {}), component.config_cls, f"logging.{provider}"
        )
    return attrs.evolve(base, loggers=loggers)


def _default_logger_config(provider: str, registry: ComponentRegistry) -> LoggerConfig:
    component = registry.get("logger", provider)
    config = structure({}, component.config_cls, f"logging.{provider}")
    assert isinstance(config, LoggerConfig)
    return config


def structure(data: Any, cls: type[T], key_path: str) -> T:
    """Structure ``data`` into ``cls`` with the strict converter, mapping errors to key paths."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"must be a table, got {type(data).__name__}", key_path=key_path)
    try:
        result: T = config_converter().structure(dict(data), cls)
        return result
    except (ClassValidationError, IterableValidationError) as error:
        problems = _collect_problems(error, key_path, cls)
    except FieldError as error:
        problems = [(f"{key_path}.{error.field}", error.message)]
    path, message = problems[0]
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    raise ConfigError(message, key_path=path)


def _collect_problems(
    error: BaseException, path: str, cls: type[Any] | None
) -> list[tuple[str, str]]:
    """Flatten a cattrs validation error into ``(key path, message)`` pairs."""
    problems: list[tuple[str, str]] = []
    if isinstance(error, ClassValidationError | IterableValidationError):
        with_notes, without = error.group_exceptions()
        unknown = [
            k for e in without if isinstance(e, ForbiddenExtraKeysError) for k in e.extra_fields
        ]
        missing = [str(getattr(n, "name", "")) for e, n in with_notes if isinstance(e, KeyError)]
        misspelt = misspelt_required(unknown, missing)  # `lenght` for the missing `length`
        problems += [(f"{path}.{k}", misspelt_required_message(v)) for k, v in misspelt.items()]
        for sub, note in with_notes:
            name = getattr(note, "name", None)
            if isinstance(sub, KeyError) and name in misspelt.values():
                continue
            sub_path = f"{path}.{name}" if name is not None else f"{path}[{note.index}]"
            sub_cls = getattr(note, "type", None)
            nested = sub_cls if isinstance(sub_cls, type) and attrs.has(sub_cls) else None
            problems.extend(_collect_problems(sub, sub_path, nested))
        for sub in without:
            if isinstance(sub, ForbiddenExtraKeysError) and misspelt:
                sub = ForbiddenExtraKeysError("", sub.cl, sub.extra_fields - set(misspelt))
                if not sub.extra_fields:
                    continue
            problems.extend(_collect_problems(sub, path, getattr(error, "cl", cls)))
    elif isinstance(error, ForbiddenExtraKeysError):
        known = [a.name for a in attrs.fields(error.cl)] if attrs.has(error.cl) else []
        for extra in sorted(error.extra_fields):
            hint = did_you_mean(extra, known)
            problems.append(
                (f"{path}.{extra}", f"unknown key{hint} Valid keys: {', '.join(known)}")
            )
    elif isinstance(error, FieldError):
        problems.append((f"{path}.{error.field}", error.message))
    elif isinstance(error, KeyError):
        key = str(error.args[0]) if error.args else ""
        key_path = path if path.endswith(f".{key}") else f"{path}.{key}"
        problems.append((key_path, "missing required key"))
    else:
        problems.append((path, _friendly(error)))
    return problems


def _friendly(error: BaseException) -> str:
    text = str(error)
    literal = re.fullmatch(r"(.*) not in literal typing\.Literal\[(.*)\]", text)
    if literal:
        return f"must be one of {literal.group(2)}, got {literal.group(1)!r}"
    return text or type(error).__name__


def resolve_paths(config: Any, base_dir: Path) -> Any:
    """Return ``config`` with relative path fields made absolute against ``base_dir``."""
    if not attrs.has(type(config)):
        return config
    changes: dict[str, Any] = {}
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        if field.metadata.get(PATH_METADATA_KEY) and isinstance(value, str):
            try:
                expanded = Path(value).expanduser()
                if not expanded.is_absolute():
                    changes[field.name] = str((base_dir / expanded).resolve())
                elif str(expanded) != value:
                    changes[field.name] = str(expanded)
            except (ValueError, RuntimeError, OSError) as error:  # a NUL byte, ~nosuchuser
                raise ConfigError(
                    f"not a usable path: {value!r} ({error})", key_path=field.name
                ) from None
        elif attrs.has(type(value)):
            try:
                resolved = resolve_paths(value, base_dir)
            except ConfigError as error:
                if field.metadata.get(INLINE_METADATA_KEY):  # a mixture source's dataset keys
                    raise
                raise error.under(field.name) from None
            if resolved is not value:
                changes[field.name] = resolved
        elif isinstance(value, Mapping) and any(attrs.has(type(v)) for v in value.values()):
            resolved_items = {}
            for k, v in value.items():  # logger tables: logging.<provider>.<key>
                try:
                    resolved_items[k] = resolve_paths(v, base_dir)
                except ConfigError as error:
                    if field.metadata.get(NAMED_TABLE_METADATA_KEY):  # dataset.sources.<name>
                        raise error.under(f"{field.name}.{k}") from None
                    raise error.under(k) from None
            changes[field.name] = resolved_items
    return attrs.evolve(config, **changes) if changes else config


def experiment_to_data(config: ExperimentConfig, registry: ComponentRegistry) -> dict[str, Any]:
    """Plain TOML/JSON data for ``config``; :func:`experiment_from_data` loads it back equal.

    A validated experiment has this already (``ResolvedExperiment.config_data``).
    """
    names = {
        key: MIXTURE_NAME
        if isinstance(getattr(config, key), MixtureConfig)
        else registry.name_of(kind, getattr(config, key))
        for key, kind in COMPONENT_SECTIONS.items()
    }
    loggers: dict[str, ComponentConfig] = {}
    for provider in config.logging.provider:
        settings: ComponentConfig | None = config.logging.loggers.get(provider)
        if settings is None:  # configs built in Python may leave a logger's settings out
            settings = registry.get("logger", provider).config_cls()
        loggers[provider] = settings
    return experiment_data(config, names, loggers)


def experiment_data(
    config: ExperimentConfig, names: Mapping[str, str], loggers: Mapping[str, ComponentConfig]
) -> dict[str, Any]:
    """Plain data for ``config``, given each component section's registered name and each
    enabled logger's settings (defaults filled in): no registry needed."""
    plain = unstructure_config
    data: dict[str, Any] = {"run": plain(config.run)}
    for key in COMPONENT_SECTIONS:
        section = getattr(config, key)
        if isinstance(section, MixtureConfig):
            data[key] = {"name": MIXTURE_NAME, **mixture_data(section, plain)}
        else:
            data[key] = {"name": names[key], **plain(section)}
    data["train"] = plain(config.train)
    logging_data: dict[str, Any] = {
        key: value for key, value in plain(config.logging).items() if key != "loggers"
    }
    for provider in config.logging.provider:
        logging_data[provider] = plain(loggers[provider])
    data["logging"] = logging_data
    return data


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value


def unstructure_config(config: Any) -> dict[str, Any]:
    """Plain data for one config object (``None`` fields dropped, tuples as lists)."""
    result: dict[str, Any] = _drop_none(config_converter().unstructure(config))
    return result
