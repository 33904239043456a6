"""``[run] requires``: check that the plugin distributions an experiment needs are installed."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement

from baseline.errors import ConfigError


def check_requirements(requirements: Iterable[str]) -> None:
    """Raise a :class:`ConfigError` with the pip command for the first unmet requirement."""
    for index, text in enumerate(requirements):
        key_path = f"run.requires[{index}]"
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            raise ConfigError(
                f"invalid requirement {text!r} ({str(error).splitlines()[0]}); "
                'write it like "baseline-bpe>=0.1"',
                key_path=key_path,
            ) from None
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            raise ConfigError(
                f'{requirement.name} is not installed; run: pip install "{text}"',
                key_path=key_path,
            ) from None
        if requirement.specifier and not requirement.specifier.contains(
            installed, prereleases=True
        ):
            raise ConfigError(
                f"{requirement.name} {installed} is installed but {text!r} is required; "
                f'run: pip install --upgrade "{text}"',
                key_path=key_path,
            )
