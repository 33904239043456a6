"""What a run's weights learned from: the weights record (``weights.fit.json``) of a run and
the lineage of ``run.init_from`` sources, checked against this run's split so that no weights
(and no reused tokenizer) saw a validation segment."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from baseline.data.fit_record import (
    check_record,
    fit_record_path,
    read_fit_record,
    write_fit_record,
)
from baseline.errors import ConfigError
from baseline.plugins.calls import plugin_call
from baseline.plugins.protocols import FitSource, TokenizerAdapter
from baseline.runs.layout import RunDirectory
from baseline.runs.source_run import KEY_PATH, SourceRun

log = logging.getLogger("baseline")

_LEAK_FIX = (
    "give this run the source run's [split] (or train on another corpus), or start without "
    "run.init_from"
)


def weights_record_path(run_dir: Path) -> Path:
    """The run's weights record: what the run's weights learned from."""
    return fit_record_path(RunDirectory(run_dir).weights_record)


def _lineage(source: SourceRun) -> list[dict[str, Any]]:
    """The source run's weights record followed by those of its own sources."""
    record_path = weights_record_path(source.run_dir)
    if not record_path.is_file():
        raise ConfigError(
            f"{source.run_dir} has no {record_path.name}: nothing shows which segments its "
            "weights learned from (runs of versions before weights records have none), so "
            "this run's validation text may be among them; train the source run again with "
            "this version, or start without run.init_from",
            key_path=KEY_PATH,
        )
    record = read_fit_record(RunDirectory(source.run_dir).weights_record, key_path=KEY_PATH)
    inherited = record.get("inherited") or []
    return [
        {key: value for key, value in record.items() if key != "inherited"},
        *(item for item in inherited if isinstance(item, dict)),
    ]


def check_lineage(source: SourceRun, fit: FitSource) -> str:
    """Refuse a source whose weights (or whose sources' weights) learned from a validation
    segment of this split; return what the source's weights learned from, for the log."""
    sentences = []
    for index, record in enumerate(_lineage(source)):
        # The source as it is now (it may have moved), then its sources as recorded.
        run_dir = source.run_dir if index == 0 else Path(str(record.get("run_dir", "?")))
        sentences.append(check_record(record, run_dir, fit, key_path=KEY_PATH, fix=_LEAK_FIX))
    return sentences[0]


def reuse_source_tokenizer(
    tokenizer: TokenizerAdapter, source: SourceRun, fit: FitSource, label: str = "tokenizer"
) -> None:
    """Load the source run's tokenizer file instead of fitting, after the lineage check (an
    error of ``load`` names the tokenizer, ``label``)."""
    learned = check_lineage(source, fit)
    with plugin_call(label):
        tokenizer.load(source.tokenizer_file)
    log.info(
        "tokenizer: reused from %s (run.init_from), not fitted; the source run %s",
        source.tokenizer_file,
        learned,
    )


def reload_own_tokenizer(tokenizer: TokenizerAdapter, path: Path, label: str = "tokenizer") -> None:
    """Load a resumed ``run.init_from`` run's own copy of its source's tokenizer file: the
    source is not read (it may be gone); its lineage was checked when the run started, and
    the data and split cannot change on resume."""
    with plugin_call(label):
        tokenizer.load(path)
    log.info("tokenizer: loaded from %s, this run's copy of its source's (resumed)", path)


def write_weights_record(run_dir: Path, fit: FitSource, source: SourceRun | None) -> Path:
    """Write ``weights.fit.json``: the training segments of this run, and the records of the
    run it started from (so a chain of ``init_from`` runs is checked as a whole). Without
    ``source`` (a new run, or one resumed without reading its source) the lineage the run's
    existing record holds is kept."""
    record = RunDirectory(run_dir).weights_record
    init_from, inherited = None, []
    if source is not None:
        init_from, inherited = str(source.run_dir.resolve()), _lineage(source)
    elif fit_record_path(record).is_file():
        with contextlib.suppress(ConfigError):
            kept = read_fit_record(record, key_path=KEY_PATH)
            init_from, inherited = kept.get("init_from"), kept.get("inherited") or []
    return write_fit_record(
        record, fit, run_dir=str(run_dir.resolve()), init_from=init_from, inherited=inherited
    )
