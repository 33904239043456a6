"""A ``[dataset] name = "mixture"`` table: each source structured through the registry like
an ordinary ``[dataset]`` table, and back to plain data.

Every problem is one :class:`ConfigError` naming the TOML key path of the source
(``dataset.sources.code.weight: must be >= 0, got -1``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from baseline.config import ComponentConfig
from baseline.config.mixture import MIXTURE_NAME, MixtureConfig, MixtureSource
from baseline.errors import ConfigError
from baseline.plugins.registry import ComponentRegistry, did_you_mean

#: Keys of the mixture table itself; every other key is an error.
MIXTURE_KEYS = ("name", "sources", "on_exhausted")
#: A source name: it becomes a metric suffix (``val_bpb/code``) and a ``--set`` key.
_SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_\-]*$")

Structure = Callable[[Any, type[Any], str], Any]


def structure_mixture(
    table: Mapping[str, Any],
    key_path: str,
    registry: ComponentRegistry,
    structure: Structure,
) -> MixtureConfig:
    """The :class:`MixtureConfig` of a ``[dataset]`` table whose ``name`` is ``mixture``.

    ``structure(data, cls, key_path)`` is the loader's strict structuring function.
    """
    for key in table:
        if key not in MIXTURE_KEYS:
            raise ConfigError(
                f"unknown key{did_you_mean(key, MIXTURE_KEYS)} A mixture has: "
                f"{', '.join(MIXTURE_KEYS)}; each source is a [{key_path}.sources.<name>] table",
                key_path=f"{key_path}.{key}",
            )
    sources_path = f"{key_path}.sources"
    tables = table.get("sources")
    if not isinstance(tables, Mapping) or not tables:
        raise ConfigError(
            "a mixture needs at least one source: add [dataset.sources.<name>] tables with "
            "weight and name (a dataset component)",
            key_path=sources_path,
        )
    seen: dict[str, str] = {}
    sources: dict[str, MixtureSource] = {}
    for name, source_table in tables.items():
        path = f"{sources_path}.{name}"
        if not _SOURCE_NAME.match(name):
            raise ConfigError(
                "a source name must start with a lowercase letter and hold only lowercase "
                "letters, digits, '_' and '-' (it names the source's metrics)",
                key_path=path,
            )
        folded = name.replace("-", "_")
        if folded in seen:
            raise ConfigError(
                f"source name used twice: {seen[folded]!r} and {name!r} name the same metrics",
                key_path=path,
            )
        seen[folded] = name
        sources[name] = _structure_source(source_table, path, registry, structure)
    weights = [source.weight for source in sources.values()]
    if not any(weight > 0 for weight in weights):
        listed = ", ".join(f"{name}={source.weight}" for name, source in sources.items())
        raise ConfigError(
            f"the weights are all zero ({listed}); give at least one source a positive weight",
            key_path=sources_path,
        )
    rest = {"on_exhausted": table["on_exhausted"]} if "on_exhausted" in table else {}
    try:
        return MixtureConfig(sources=sources, **rest)
    except ValueError as error:  # FieldError of on_exhausted
        raise ConfigError(
            getattr(error, "message", str(error)), key_path=f"{key_path}.on_exhausted"
        ) from None


def _structure_source(
    table: Any, path: str, registry: ComponentRegistry, structure: Structure
) -> MixtureSource:
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"must be a table ([{path}]) with weight and name, got {type(table).__name__}",
            key_path=path,
        )
    weight = table.get("weight")
    if weight is None:
        raise ConfigError(
            "missing required key; the source's share of training tokens", key_path=f"{path}.weight"
        )
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise ConfigError(f"must be a finite number, got {weight!r}", key_path=f"{path}.weight")
    if weight < 0:
        raise ConfigError(f"must be >= 0, got {weight!r}", key_path=f"{path}.weight")
    name = table.get("name")
    if name is None:
        raise ConfigError(
            f"missing 'name'; one of: {', '.join(registry.names('dataset')) or '(none installed)'}",
            key_path=f"{path}.name",
        )
    if not isinstance(name, str):
        raise ConfigError(f"expected a string, got {name!r}", key_path=f"{path}.name")
    if name == MIXTURE_NAME:
        raise ConfigError(
            "a mixture cannot be a source of a mixture; list its sources here instead",
            key_path=f"{path}.name",
        )
    try:
        component = registry.get("dataset", name)
    except ConfigError as error:
        raise ConfigError(error.message, key_path=f"{path}.name") from None
    fields = {k: v for k, v in table.items() if k not in ("name", "weight", "split")}
    dataset = structure(fields, component.config_cls, path)
    split_name: str | None = None
    split: ComponentConfig | None = None
    if "split" in table:
        split_name, split = _structure_split(table["split"], f"{path}.split", registry, structure)
    return MixtureSource(
        weight=float(weight),
        dataset_name=name,
        dataset=dataset,
        split_name=split_name,
        split=split,  # type: ignore[arg-type]
    )


def _structure_split(
    table: Any, path: str, registry: ComponentRegistry, structure: Structure
) -> tuple[str, ComponentConfig]:
    if not isinstance(table, Mapping) or not isinstance(table.get("name"), str):
        raise ConfigError(
            f"a source's split is a table with name = one of: "
            f"{', '.join(registry.names('split')) or '(none installed)'}",
            key_path=path,
        )
    try:
        component = registry.get("split", table["name"])
    except ConfigError as error:
        raise ConfigError(error.message, key_path=f"{path}.name") from None
    fields = {k: v for k, v in table.items() if k != "name"}
    config: ComponentConfig = structure(fields, component.config_cls, path)
    return component.name, config


def mixture_data(
    config: MixtureConfig, unstructure: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """Plain data for ``config`` (without the ``name``), as the TOML file writes it."""
    sources: dict[str, Any] = {}
    for name, source in config.sources.items():
        plain: dict[str, Any] = {
            "weight": source.weight,
            "name": source.dataset_name,
            **unstructure(source.dataset),
        }
        if source.split is not None:
            plain["split"] = {"name": source.split_name, **unstructure(source.split)}
        sources[name] = plain
    return {"on_exhausted": config.on_exhausted, "sources": sources}
