"""``baseline export``: write a finished run as a self-contained Hugging Face directory.

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
from baseline.runs.artifacts import INFERENCE_CONFIG_FILENAME

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


def check_destination(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse an ``OUT_DIR`` that is a file, or a non-empty directory without ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; choose a directory path", key_path="OUT_DIR")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(
            f"{out_dir} exists and is not empty; choose another OUT_DIR or pass --overwrite "
            "to replace it",
            key_path="OUT_DIR",
        )


def _read_inference_config(run_dir: Path) -> None:
    """Fail early, with the fix, when ``run_dir`` holds no finished run."""
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a directory; give a run directory (RUN_DIR)")
    if not (run_dir / INFERENCE_CONFIG_FILENAME).is_file():
        unfinished = any(run_dir.glob("*checkpoint*.pt"))
        hint = (
            "training did not finish; resume it with baseline-run ... --resume, then export"
            if unfinished
            else "is it a run directory?"
        )
        raise DataError(
            f"{run_dir}: has no final model ({INFERENCE_CONFIG_FILENAME} not found); {hint}"
        )
    try:
        info = json.loads((run_dir / INFERENCE_CONFIG_FILENAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{run_dir / INFERENCE_CONFIG_FILENAME}: unreadable ({error})") from None
    weights = run_dir / str(info.get("model", {}).get("file", ""))
    if not weights.is_file():
        raise DataError(
            f"{run_dir}: has no final model ({weights.name} not found); train it to the end "
            "(baseline-run ... --resume), then export"
        )


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    fmt: str = "hf",
    overwrite: bool = False,
    plugins: PluginSet | None = None,
) -> ExportResult:
    """Write the finished run in ``run_dir`` to ``out_dir`` in format ``fmt`` (``hf``)."""
    from baseline.tools.inference import load_run

    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", key_path="--format"
        )
    run_path, out_path = Path(run_dir), Path(out_dir)
    check_destination(out_path, overwrite=overwrite)
    _read_inference_config(run_path)
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
