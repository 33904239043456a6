"""The module paths from before the core was grouped into wings, kept working for old plugins.

``baseline.training``, ``baseline.hookspecs``, ``baseline.file_locks`` and the other old
top-level modules no longer exist. :func:`install` (called by ``import baseline``) adds a
finder at the end of :data:`sys.meta_path` that answers only for those names: importing one
imports its new module and returns that same module object, with a ``DeprecationWarning``
naming the new path. Nothing is imported until an old name is.

``baseline.config``, ``baseline.plugins``, ``baseline.metrics`` and ``baseline.distributed``
were modules and are packages now; their packages give the old names through a module
``__getattr__`` (``baseline.config`` re-exports its classes).

The public import paths are listed in ``docs/writing-a-plugin.md`` (Public import paths).
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib import import_module
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Final, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

#: Old module -> its new module(s). ``init_from`` was split: its lineage part (fit records of
#: a run's weights) is in ``baseline.data.lineage``; the old name holds the names of both.
MOVED_MODULES: Final[dict[str, tuple[str, ...]]] = {
    "baseline.converter": ("baseline.config.converter",),
    "baseline.requirements": ("baseline.config.requirements",),
    "baseline.hookspecs": ("baseline.plugins.hookspecs",),
    "baseline.protocols": ("baseline.plugins.protocols",),
    "baseline.registry": ("baseline.plugins.registry",),
    "baseline.components": ("baseline.plugins.components",),
    "baseline.plugin_output": ("baseline.plugins.output_checks",),
    "baseline.versions": ("baseline.plugins.versions",),
    "baseline.loading": ("baseline.experiment.loading",),
    "baseline.validation": ("baseline.experiment.validation",),
    "baseline.parallel": ("baseline.distributed.wrapping",),
    "baseline.artifacts": ("baseline.runs.artifacts",),
    "baseline.file_locks": ("baseline.runs.locks",),
    "baseline.run_files": ("baseline.runs.records",),
    "baseline.checkpoint": ("baseline.runs.checkpoint",),
    "baseline.dcp_checkpoint": ("baseline.runs.sharded_checkpoint",),
    "baseline.run_lookup": ("baseline.runs.lookup",),
    "baseline.runs_table": ("baseline.runs.table",),
    "baseline.plotting": ("baseline.runs.plots",),
    "baseline.init_from": ("baseline.runs.source_run", "baseline.data.lineage"),
    "baseline.data_preparation": ("baseline.data.preparation",),
    "baseline.segment_sizes": ("baseline.data.segments",),
    "baseline.fit_record": ("baseline.data.fit_record",),
    "baseline.token_cache": ("baseline.data.token_cache",),
    "baseline.tokens": ("baseline.data.tokens",),
    "baseline.windows": ("baseline.data.windows",),
    "baseline.prepared_data": ("baseline.data.prepared",),
    "baseline.diagnostics": ("baseline.metrics.diagnostics",),
    "baseline.console_logger": ("baseline.metrics.console_logger",),
    "baseline.training": ("baseline.train.trainer",),
    "baseline.optim": ("baseline.train.optim",),
    "baseline.batched_muon": ("baseline.train.muon",),
    "baseline.signals": ("baseline.train.signals",),
    "baseline.inference": ("baseline.tools.inference",),
    "baseline.generation": ("baseline.tools.generation",),
    "baseline.evaluation": ("baseline.tools.evaluation",),
    "baseline.export": ("baseline.tools.export",),
}

_HERE = os.path.realpath(__file__)
_IMPORTLIB = os.path.dirname(os.path.realpath(import_module.__code__.co_filename)) + os.sep


def _bootstrap(filename: str) -> bool:
    return "importlib" in filename and "_bootstrap" in filename


def _internal(filename: str) -> bool:
    """Frames of the import system and of this module, skipped to find the importer."""
    if filename.startswith("<frozen importlib"):
        return True
    resolved = os.path.realpath(filename)
    return resolved == _HERE or resolved.startswith(_IMPORTLIB)


def _warn(message: str) -> None:
    """Warn with the location of the ``import`` statement, not of the import machinery."""
    frame = sys._getframe()
    level = 1
    while frame.f_back is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back
        # warnings.warn already steps over the import system's bootstrap frames
        if not _bootstrap(frame.f_code.co_filename):
            level += 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)


def moved_message(old: str, new: tuple[str, ...]) -> str:
    return (
        f"{old} is deprecated: it moved to {' and '.join(new)}; import from there "
        "(docs/writing-a-plugin.md, 'Public import paths')"
    )


class _MovedModuleLoader:
    """Gives the new module (or, for a split module, a module with the names of both)."""

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        new = MOVED_MODULES[spec.name]
        _warn(moved_message(spec.name, new))
        modules = [import_module(name) for name in new]
        if len(modules) == 1:
            return modules[0]
        merged = ModuleType(spec.name, f"Deprecated: the names of {', '.join(new)}.")
        for module in reversed(modules):  # the first module wins a name both define
            merged.__dict__.update(
                (key, value) for key, value in vars(module).items() if not key.startswith("__")
            )
        return merged

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: :meth:`create_module` returned a module that is already loaded."""


class MovedModuleFinder:
    """Meta-path finder for the old module names in :data:`MOVED_MODULES` (and no others)."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        # Not an importlib.abc.Loader subclass: importing importlib.abc costs 15 ms.
        return ModuleSpec(fullname, cast("Loader", _MovedModuleLoader()))


def install() -> None:
    """Add :class:`MovedModuleFinder` to the end of :data:`sys.meta_path`, once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
