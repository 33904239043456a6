"""``baseline export``: write a run as a self-contained Hugging Face directory.

A finished run exports its final model; a run that did not finish, its newest checkpoint
(:func:`baseline.tools.inference.load_run` says which step).

The core knows no Hugging Face format: the conversion belongs to the plugins that own the
run's model and tokenizer, through their adapters' optional ``export_hf`` methods (see
:class:`baseline.plugins.protocols.ExportInfo`). The core checks the destination, gives both
adapters one fresh temporary directory beside it, checks that the expected files were written, and
renames it into place, so a failure leaves nothing half-written and a refused destination
untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import attrs

from baseline.errors import ConfigError, DataError
from baseline.plugins.discovery import PluginSet, default_plugins
from baseline.plugins.protocols import ExportInfo

#: The export formats ``baseline export --format`` accepts.
FORMATS = ("hf",)

#: Files every Hugging Face export must hold (the tokenizer may add more).
REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


@attrs.frozen
class ExportResult:
    """What :func:`export_run` wrote."""

    out_dir: Path
    files: tuple[str, ...]
    model_name: str
    tokenizer_name: str


#: The marker a previous export leaves in its directory: ``--overwrite`` replaces only such a
#: directory (nothing else that happens to be at ``OUT_DIR``).
EXPORT_MARKER = ".baseline-export.json"


def check_destination(out_dir: Path, *, overwrite: bool, run_dir: Path | None = None) -> None:
    """Refuse an ``OUT_DIR`` that is a file, the run itself or a directory above it, or a
    non-empty directory unless ``overwrite`` is given and it holds a previous export."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; choose a directory path", key_path="OUT_DIR")
    if run_dir is not None and run_dir.resolve().is_relative_to(out_dir.resolve()):
        what = "is the run" if run_dir.resolve() == out_dir.resolve() else "holds the run"
        raise ConfigError(
            f"{out_dir} {what} being exported ({run_dir}); replacing it would delete the run. "
            "Choose another OUT_DIR",
            key_path="OUT_DIR",
        )
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise ConfigError(
            f"{out_dir} exists and is not empty; choose another OUT_DIR or pass --overwrite "
            "to replace a previous export",
            key_path="OUT_DIR",
        )
    if not (out_dir / EXPORT_MARKER).is_file():
        raise ConfigError(
            f"{out_dir} is not a previous export (it has no {EXPORT_MARKER}); --overwrite "
            "replaces only what baseline export wrote. Choose another OUT_DIR",
            key_path="OUT_DIR",
        )


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    fmt: str = "hf",
    overwrite: bool = False,
    plugins: PluginSet | None = None,
) -> ExportResult:
    """Write the run in ``run_dir`` (its final model, or its newest checkpoint when it did not
    finish) to ``out_dir`` in format ``fmt`` (``hf``)."""
    from baseline.tools.inference import load_run, open_run

    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", key_path="--format"
        )
    run_path, out_path = Path(run_dir), Path(out_dir)
    check_destination(out_path, overwrite=overwrite, run_dir=run_path)
    if not run_path.is_dir() and run_path.exists():
        raise DataError(f"{run_path}: not a directory; give a run directory (RUN_DIR)")
    open_run(run_path)  # fails early, with the fix, when it holds no weights
    plugin_set = plugins or default_plugins()
    run = load_run(run_path, plugins=plugin_set)
    registry = plugin_set.registry
    names = (run.inference_config["model"]["name"], run.inference_config["tokenizer"]["name"])
    for kind, name, adapter in (
        ("model", names[0], run.model_adapter),
        ("tokenizer", names[1], run.tokenizer),
    ):
        if not callable(getattr(adapter, "export_hf", None)):
            distribution = registry.get(kind, name).distribution
            raise DataError(
                f"{run_path}: {kind} {name!r} from {distribution} cannot be exported to the "
                "Hugging Face format (its adapter has no export_hf method; see "
                "docs/writing-a-plugin.md#exporting-to-hugging-face)"
            )
    info = ExportInfo(
        run_dir=run_path,
        vocab_size=int(run.inference_config["vocab_size"]),
        seq_len=run.seq_len,
        end_of_segment_id=run.end_of_segment_id,
        end_of_segment_text=run.end_of_segment_text,
        inference_config=run.inference_config,
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.export-", dir=out_path.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would otherwise become OUT_DIR's mode
    try:
        run.model_adapter.export_hf(run.model, staging, info)
        run.tokenizer.export_hf(staging, info)  # type: ignore[attr-defined]
        missing = [name for name in REQUIRED_FILES if not (staging / name).is_file()]
        if missing:
            raise ConfigError(
                f"the export of model {names[0]!r} and tokenizer {names[1]!r} wrote no "
                f"{', '.join(missing)}; a plugin's export_hf is incomplete",
                key_path="export",
            )
        files = tuple(sorted(p.name for p in staging.iterdir()))
        marker = {"run_dir": str(run_path.resolve()), "files": list(files)}
        (staging / EXPORT_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _replace(staging, out_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out_path, files, names[0], names[1])


def _replace(staging: Path, out_path: Path) -> None:
    """Rename ``staging`` to ``out_path``; an existing ``out_path`` is moved aside first and
    deleted only once the new directory is in place."""
    aside: Path | None = None
    if out_path.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.old-", dir=out_path.parent))
        aside.rmdir()
        out_path.rename(aside)
    try:
        staging.rename(out_path)
    except BaseException:
        if aside is not None:
            with contextlib.suppress(OSError):
                aside.rename(out_path)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
