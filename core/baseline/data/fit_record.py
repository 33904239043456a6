"""Fit records: what a tokenizer file (or anything else fitted on data) learned from.

A tokenizer that saves what it learned writes a small JSON record beside its file
(``<file>.fit.json``): the dataset's identity, how many segments it had, and which of them
were training segments (a compressed bitmap plus its digest). Reusing the file later is
checked against the current split: a file that learned from any segment that is now a
validation segment is refused, because every validation figure would then be optimistic.
A file fitted on another corpus is a deliberate reuse and is allowed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from baseline.errors import ConfigError
from baseline.plugins.protocols import FitSource
from baseline.runs.artifacts import atomic_write_text

__all__ = [
    "FIT_RECORD_SUFFIX",
    "check_fit_record",
    "check_record",
    "fit_record_path",
    "mask_digest",
    "read_fit_record",
    "whole_corpus_source",
    "write_fit_record",
]

FIT_RECORD_SUFFIX = ".fit.json"
FIT_RECORD_FORMAT = 1


def fit_record_path(fitted_file: Path) -> Path:
    """Where the record of ``fitted_file`` lives: ``<file>.fit.json`` beside it."""
    return fitted_file.with_name(fitted_file.name + FIT_RECORD_SUFFIX)


def mask_digest(train_mask: np.ndarray) -> str:
    """SHA-256 of the training-segment bitmap (and the segment count)."""
    packed = np.packbits(np.asarray(train_mask, dtype=bool))
    digest = hashlib.sha256(str(len(train_mask)).encode("ascii") + b":" + packed.tobytes())
    return digest.hexdigest()


def whole_corpus_source(num_segments: int, dataset_name: str = "texts") -> FitSource:
    """A source where every one of ``num_segments`` segments is training text (tests, tools)."""
    return FitSource(dataset_name, None, np.ones(num_segments, dtype=bool))


def _encode_mask(train_mask: np.ndarray) -> str:
    packed = np.packbits(np.asarray(train_mask, dtype=bool))
    return base64.b64encode(zlib.compress(packed.tobytes(), 9)).decode("ascii")


def _decode_mask(encoded: str, num_segments: int) -> np.ndarray:
    packed = np.frombuffer(zlib.decompress(base64.b64decode(encoded)), dtype=np.uint8)
    return np.unpackbits(packed, count=num_segments).astype(bool)


def write_fit_record(fitted_file: Path, source: FitSource, **extra: Any) -> Path:
    """Write the record of ``fitted_file`` (atomically); call it before writing the file."""
    record = {
        "format": FIT_RECORD_FORMAT,
        "file": fitted_file.name,
        "dataset": source.dataset_name,
        "dataset_identity": source.dataset_identity,
        "num_segments": source.num_segments,
        "num_train_segments": source.num_train_segments,
        "train_segments_digest": mask_digest(source.train_mask),
        "train_segments": _encode_mask(source.train_mask),
        **extra,
    }
    path = fit_record_path(fitted_file)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def _refit_hint(key_path: str) -> str:
    return f"delete it (and its {FIT_RECORD_SUFFIX}) or point {key_path} at a new file"


def read_fit_record(fitted_file: Path, *, key_path: str, fix: str | None = None) -> dict[str, Any]:
    """The record of ``fitted_file`` as a dict.

    Raises :class:`~baseline.errors.ConfigError` (naming ``key_path``, ending with ``fix`` or
    the default hint to refit) when there is no record or it cannot be read.
    """
    record_path = fit_record_path(fitted_file)
    hint = fix or _refit_hint(key_path)
    try:
        record: dict[str, Any] = json.loads(record_path.read_text(encoding="utf-8"))
        _decode_mask(record["train_segments"], int(record["num_segments"]))
        if "dataset_identity" not in record:
            raise KeyError("dataset_identity")
    except FileNotFoundError:
        tail = fix or f"{hint} to fit one on this split's training segments"
        raise ConfigError(
            f"{fitted_file} has no fit record ({record_path.name}), so nothing shows it was "
            "not fitted on validation text (files written before fit records existed have "
            f"none); {tail}",
            key_path=key_path,
        ) from None
    except (OSError, ValueError, KeyError, TypeError, zlib.error) as error:
        raise ConfigError(
            f"{record_path} is unreadable ({type(error).__name__}); {hint}", key_path=key_path
        ) from None
    return record


def check_fit_record(
    fitted_file: Path, source: FitSource, *, key_path: str, fix: str | None = None
) -> str:
    """Check that reusing ``fitted_file`` with ``source``'s split is honest.

    Returns a sentence for the log saying what the file was fitted on. Raises
    :class:`~baseline.errors.ConfigError` (naming ``key_path``) when the file has no readable
    record, or learned from segments that are validation segments of this split. ``fix``
    replaces the default advice (delete the file or point ``key_path`` at a new one).
    """
    record = read_fit_record(fitted_file, key_path=key_path, fix=fix)
    return check_record(record, fitted_file, source, key_path=key_path, fix=fix)


def check_record(
    record: dict[str, Any],
    fitted_file: Path,
    source: FitSource,
    *,
    key_path: str,
    fix: str | None = None,
) -> str:
    """:func:`check_fit_record` for a record already read (``fitted_file`` names it)."""
    hint = fix or _refit_hint(key_path)
    refit = fix or f"{hint} to fit one on this split's training segments"
    recorded_mask = _decode_mask(record["train_segments"], int(record["num_segments"]))
    identity = record["dataset_identity"]
    same_dataset = identity is not None and identity == source.dataset_identity
    if identity is not None and source.dataset_identity is not None and not same_dataset:
        return (
            f"{fitted_file.name} was fitted on another corpus ({record.get('dataset')!r}, "
            f"identity {str(identity)[:12]}); reused deliberately, it saw none of this "
            "dataset's validation text"
        )
    if len(recorded_mask) != source.num_segments:
        if same_dataset:  # cannot happen unless the dataset is not deterministic
            raise ConfigError(
                f"{fitted_file} was fitted on {len(recorded_mask):,} segments of this dataset, "
                f"which now has {source.num_segments:,}; {hint}",
                key_path=key_path,
            )
        raise ConfigError(
            f"{fitted_file} was fitted on a dataset of {len(recorded_mask):,} segments that "
            f"cannot be told apart from this one ({source.num_segments:,} segments, no "
            f"fingerprint); {hint}",
            key_path=key_path,
        )
    leaked = int(np.count_nonzero(recorded_mask & ~source.train_mask))
    validation = source.num_segments - source.num_train_segments
    if leaked:
        raise ConfigError(
            f"{fitted_file} was fitted on a different split of this dataset: {leaked:,} of "
            f"this split's {validation:,} validation segments were in its training text; "
            f"{refit}",
            key_path=key_path,
        )
    if record.get("train_segments_digest") == mask_digest(source.train_mask):
        return f"{fitted_file.name} was fitted on this split's training segments"
    return (
        f"{fitted_file.name} was fitted on {int(recorded_mask.sum()):,} segments of this "
        "dataset, all of them training segments of this split"
    )
