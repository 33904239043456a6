"""``[run] init_from``: start a run from the weights of a trained run (fine-tuning).

The source run directory gives the new run three things:

- its **weights**: the final model or, for a run that did not finish, the model of its newest
  usable checkpoint, a single file or an FSDP run's DCP directory
  (:mod:`baseline.runs.weights`). They are loaded into the
  freshly built model before the trainer moves it to its device and builds the optimizer, so
  the optimizer state starts fresh. A resumed run continues from its own checkpoint instead.
- its **tokenizer file**, which the new run loads instead of fitting a tokenizer: the
  vocabulary the weights were trained with. ``[tokenizer]`` must therefore be the source
  run's (path keys aside: they are not used), and ``[model]`` must be the source run's.
- its **weights record** (a :mod:`baseline.data.fit_record` record): which
  segments of which dataset the weights (and the source run's own source runs) learned
  from. A new run on another corpus reuses them deliberately; a new run on the same corpus
  whose validation segments the weights trained on is refused, since its validation figures
  would be optimistic.

Reading the source (:func:`source_run`) needs only JSON files and imports no torch:
``baseline validate`` reports a missing or mismatched source.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from baseline.config import PATH_METADATA_KEY, ExperimentConfig
from baseline.config.diff import describe_differences, differing_keys, field_defaults
from baseline.errors import ConfigError
from baseline.runs.layout import RunDirectory
from baseline.runs.lookup import project_runs

__all__ = [
    "SourceRun",
    "load_source_weights",
    "resumed_tokenizer_file",
    "source_run",
]

log = logging.getLogger("baseline")

KEY_PATH = "run.init_from"


@attrs.frozen
class SourceRun:
    """A trained run directory that a new run starts from."""

    run_dir: Path
    #: The source run's normalized experiment config (``run_config.json``).
    config: Mapping[str, Any] = attrs.field(repr=False)
    #: The final model, or the newest checkpoint (file or DCP directory) when the run has no
    #: final model (an older one is used when it is damaged).
    weights: Path
    from_checkpoint: bool
    tokenizer_file: Path
    #: The source's files.
    run: RunDirectory = attrs.field(repr=False)

    def describe(self) -> dict[str, Any]:
        """What this run's config records about the source."""
        return {
            "run_dir": str(self.run_dir),
            "weights": str(self.weights),
            "from_checkpoint": self.from_checkpoint,
            "tokenizer_file": str(self.tokenizer_file),
        }


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path.parent} is not a run directory (no {path.name}); point it at the "
            "directory of a trained run",
            key_path=KEY_PATH,
        ) from None
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{path}: unreadable {what} ({type(error).__name__})", key_path=KEY_PATH
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: unreadable {what} (not a JSON object)", key_path=KEY_PATH)
    return data


def read_source_run(init_from: str | Path) -> SourceRun:
    """Read the source run directory; a missing or unfinished-and-empty run is an error."""
    run_dir = Path(init_from)
    if not run_dir.is_dir():
        what = "does not exist" if not run_dir.exists() else "is not a directory"
        raise ConfigError(
            f"{run_dir} {what}; point it at the directory of a trained run", key_path=KEY_PATH
        )
    layout = RunDirectory.read(run_dir)
    run_config = _read_json(layout.run_config, "run config")
    config = run_config.get("config")
    if not isinstance(config, dict):
        raise ConfigError(f"{layout.run_config}: holds no experiment config", key_path=KEY_PATH)
    if layout.inference_config.is_file():
        _read_json(layout.inference_config, "inference config")
    newest = layout.newest_checkpoint()
    if layout.finished:
        weights, from_checkpoint = layout.final_model, False
    elif newest is not None:
        weights, from_checkpoint = newest.path, True
    else:
        raise ConfigError(
            f"{run_dir} has no weights: neither a final model ({layout.final_model.name}) nor a "
            f"checkpoint ({layout.checkpoint_paths(bool(layout.sharded))[0].name}); train it "
            "first, or point at another run",
            key_path=KEY_PATH,
        )
    tokenizer_file = layout.tokenizer_file()
    if tokenizer_file is None or not tokenizer_file.is_file():
        raise ConfigError(
            f"{run_dir} has no tokenizer file"
            + (f" ({tokenizer_file.name})" if tokenizer_file is not None else "")
            + "; the new run reuses the source run's tokenizer, so the source must have one",
            key_path=KEY_PATH,
        )
    return SourceRun(run_dir, config, weights, from_checkpoint, tokenizer_file, layout)


def section_differences(
    section: str,
    source: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any],
    ignore: frozenset[str] = frozenset(),
) -> list[str]:
    """``key (source X, this run Y)`` for each key of ``section`` whose values differ."""
    old, new = {section: source}, {section: current}
    keys = differing_keys(old, new, defaults=defaults, ignore=ignore)
    return describe_differences(old, new, keys, old_name="source", defaults=defaults)


def check_compatible(
    config: ExperimentConfig, config_data: Mapping[str, Any], source: SourceRun
) -> None:
    """The model and tokenizer configs must be the source run's, key by key."""
    model = section_differences(
        "model",
        source.config.get("model", {}),
        config_data["model"],
        defaults=field_defaults(config.model, "model"),
    )
    if model:
        raise ConfigError(
            f"{source.run_dir} was trained with another [model]; its weights fit only the same "
            f"model. These keys differ: {', '.join(model)}; use the source run's [model] table",
            key_path=KEY_PATH,
        )
    path_keys = frozenset(
        f"tokenizer.{field.name}"
        for field in attrs.fields(type(config.tokenizer))
        if field.metadata.get(PATH_METADATA_KEY)
    )
    tokenizer = section_differences(
        "tokenizer",
        source.config.get("tokenizer", {}),
        config_data["tokenizer"],
        defaults=field_defaults(config.tokenizer, "tokenizer"),
        ignore=path_keys,
    )
    if tokenizer:
        unused = f" ({', '.join(sorted(path_keys))} may differ: unused)" if path_keys else ""
        raise ConfigError(
            f"this run reuses the tokenizer of {source.run_dir} ({source.tokenizer_file.name}), "
            f"so [tokenizer] must be that run's; these keys differ: {', '.join(tokenizer)}; use "
            f"the source run's [tokenizer] table{unused}",
            key_path=KEY_PATH,
        )


def source_run(config: ExperimentConfig, config_data: Mapping[str, Any]) -> SourceRun | None:
    """The run ``run.init_from`` names, read and checked against ``config`` (``None`` when the
    key is unset). ``config_data`` is ``config`` as plain data (``experiment_to_data``)."""
    if config.run.init_from is None:
        return None
    source = read_source_run(config.run.init_from)
    if config.run.run_name is not None:
        own = Path(config.run.artifacts_root) / config.run.run_name
        if own.resolve() == source.run_dir.resolve():
            raise ConfigError(
                f"{source.run_dir} is this run's own directory; continue it with --resume, or "
                "choose another run.run_name",
                key_path=KEY_PATH,
            )
    check_compatible(config, config_data, source)
    return source


def _resumed_run_dir(config: ExperimentConfig, run_dir: Path | None) -> Path | None:
    """The directory of the run that resumes (``--resume``): ``run_dir``, by default the one
    ``run.run_name`` names, or without one the project's newest; ``None`` when not resuming."""
    if not config.run.resume_from_checkpoint or run_dir is not None:
        return run_dir if config.run.resume_from_checkpoint else None
    root = Path(config.run.artifacts_root)
    if config.run.run_name:
        return root / config.run.run_name
    return next(iter(project_runs(root, config.run.project_name)), None)


def resumes_own_checkpoint(config: ExperimentConfig, run_dir: Path | None = None) -> bool:
    """Whether the run resumes and its directory (``run_dir``, or the one ``--resume`` picks)
    holds a checkpoint of either kind: the run continues from it, not from the source."""
    resumed = _resumed_run_dir(config, run_dir)
    return (
        resumed is not None and RunDirectory.of(resumed, config.run).newest_checkpoint() is not None
    )


def resumed_tokenizer_file(config: ExperimentConfig, run_dir: Path | None = None) -> Path | None:
    """The run's own copy of its source's tokenizer file when a ``run.init_from`` run resumes
    from a checkpoint of its own (see :func:`resumes_own_checkpoint`): it then needs nothing of
    its source, which may have moved or been deleted since. ``None`` otherwise (and when the
    copy is missing): the source is read as for a new run."""
    resumed = _resumed_run_dir(config, run_dir)
    if config.run.init_from is None or resumed is None:
        return None
    layout = RunDirectory.of(resumed, config.run)
    tokenizer = layout.tokenizer_file()
    if layout.newest_checkpoint() is None or tokenizer is None or not tokenizer.is_file():
        return None
    return tokenizer


def recorded_init_from(source: SourceRun | None, run_dir: Path) -> dict[str, Any]:
    """What ``run_config.json`` records of the source: :meth:`SourceRun.describe`, or for a run
    resumed without reading its source, what its ``run_config.json`` recorded before."""
    if source is not None:
        return {"init_from": source.describe()}
    recorded = (RunDirectory(run_dir).read_run_config() or {}).get("init_from")
    return {"init_from": recorded} if recorded is not None else {}


# -- the weights -----------------------------------------------------------------------------


def load_source_weights(model: Any, source: SourceRun, seq_len: int) -> str:
    """Copy the source run's weights into ``model`` (bit for bit); return a log sentence.

    A parameter that is missing, unexpected or of another shape is an error naming it.
    """
    from baseline.runs.weights import read_weights

    def mismatch(path: Path, problems: list[str]) -> ConfigError:
        source_seq_len = source.config.get("train", {}).get("seq_len")
        hint = (
            f"; train.seq_len is {source_seq_len} in the source and {seq_len} here"
            if source_seq_len is not None and source_seq_len != seq_len
            else ""
        )
        return ConfigError(
            f"the weights in {path} do not fit this model: {'; '.join(problems[:5])}"
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
            + hint,
            key_path=KEY_PATH,
        )

    weights = read_weights(source.run, model.state_dict(), mismatch, where="the source")
    model.load_state_dict(weights.state)
    how = f"run.init_from: {weights.note}" if weights.note else "run.init_from"
    return f"model: weights loaded from {weights.path} ({how}); the optimizer starts fresh"
