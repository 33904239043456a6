"""Read, split, fit, tokenize: the data of a run, prepared in an order that cannot leak.

1. Measure every segment (its UTF-8 size) in one pass; for a split of protocol 2 the same
   pass records each segment's text and source on disk (:mod:`baseline.data.segments`).
   A split of protocol 1 of a dataset whose files are unchanged since an earlier run takes
   the sizes (and the dataset's fingerprint) that run recorded: no pass
   (:mod:`baseline.data.measured`).
2. Split the segments into training and validation: a split sees them all, sizes or text,
   but learns nothing that reaches the model.
3. Fit the tokenizer on the training segments only: not one validation segment reaches it.
   With ``run.init_from`` the source run's tokenizer file is loaded instead (after checking
   that the source's weights learned from none of this split's validation segments).
4. Tokenize every segment (or reuse the token cache) and cut the stream into the token
   ranges of each side.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from baseline.config import PATH_METADATA_KEY, ExperimentConfig
from baseline.data.lineage import reload_own_tokenizer, reuse_source_tokenizer
from baseline.data.measured import (
    DatasetFiles,
    MeasuredRecord,
    dataset_files,
    forget_record,
    load_record,
    save_record,
)
from baseline.data.prepared import PreparedData
from baseline.data.segments import SegmentStore, record_segments, split_protocol
from baseline.data.token_cache import (
    adapter_fingerprint,
    cache_key,
    load_or_build,
    segment_scratch,
)
from baseline.data.tokens import TokenStream, build_token_stream, check_split_plan
from baseline.data.windows import range_window_starts
from baseline.errors import ConfigError, DataError, PluginError
from baseline.plugins.calls import plugin_call, plugin_iter
from baseline.plugins.components import Components
from baseline.plugins.output_checks import PluginOutputError
from baseline.plugins.protocols import SEGMENTS_SPLIT_PROTOCOL, DatasetAdapter, FitSource
from baseline.runs.locks import lock_wait_limit
from baseline.runs.source_run import SourceRun

log = logging.getLogger("baseline")


def token_cache_root(config: ExperimentConfig) -> Path:
    """Where token streams (and segment sizes) are cached for this experiment."""
    if config.run.token_cache_dir is not None:
        return Path(config.run.token_cache_dir)
    return Path(config.run.artifacts_root) / ".token_cache"


def dataset_identity(
    dataset: DatasetAdapter, dataset_config: Any, fingerprint: str | None = None
) -> str | None:
    """A hash of the dataset's fingerprint and its settings other than file paths: equal when
    it yields the same segments, wherever the files live (a copy of the corpus elsewhere is
    the same dataset for a fit record).

    ``fingerprint``: the adapter's, when known already (else ``fingerprint()`` is called).
    ``None`` when the adapter has no ``fingerprint()``.
    """
    if fingerprint is None:
        fingerprint = adapter_fingerprint(dataset)
    if fingerprint is None:
        return None
    settings = {
        field.name: getattr(dataset_config, field.name)
        for field in attrs.fields(type(dataset_config))
        if not field.metadata.get(PATH_METADATA_KEY)
    }
    return cache_key(
        {"dataset": type(dataset_config).__qualname__, **settings, "fingerprint": fingerprint}
    )


def segment_delimiter(dataset: DatasetAdapter, dataset_name: str) -> str:
    """What the end-of-segment token stands for (the adapter's ``segment_delimiter``)."""
    delimiter = getattr(dataset, "segment_delimiter", "")
    if not isinstance(delimiter, str):
        raise PluginError(
            f"dataset {dataset_name!r}: segment_delimiter must be a str, got "
            f"{type(delimiter).__name__}"
        )
    return delimiter


class SegmentsChanged(DataError):
    """The dataset yielded other segments than the split saw (another pass, or a record)."""


def training_segments(
    segments: Iterator[str], train_mask: np.ndarray, sizes: np.ndarray | None = None
) -> Iterator[str]:
    """The segments whose ``train_mask`` entry is true; stops after the last of them.

    With ``sizes`` (what the split saw), every segment up to the last training one must have
    its measured UTF-8 size: a segment out of place stops the pass before it is yielded.
    """
    train_indices = np.flatnonzero(train_mask)
    if not len(train_indices):
        return
    last = int(train_indices[-1])
    expected: list[int] = []
    for index, segment in enumerate(segments):
        if index >= len(train_mask):
            raise SegmentsChanged(
                f"the dataset yielded more than the {len(train_mask):,} segments it had when "
                "it was measured; its segments() must yield the same segments on every pass"
            )
        if sizes is not None:
            if index % _SIZES_BLOCK == 0:
                expected = sizes[index : index + _SIZES_BLOCK].tolist()
            size = len(segment.encode("utf-8"))
            if size != expected[index % _SIZES_BLOCK]:
                raise SegmentsChanged(
                    f"the dataset's segment {index:,} has {size:,} bytes, "
                    f"{expected[index % _SIZES_BLOCK]:,} when it was measured; its segments() "
                    "must yield the same segments on every pass"
                )
        if train_mask[index]:
            yield segment
        if index == last:
            return


_SIZES_BLOCK = 1 << 16


def sourced_segments(dataset: DatasetAdapter) -> Iterable[tuple[str, str]]:
    """``(text, source)`` of every segment: the adapter's optional ``segments_with_sources()``,
    or its ``segments()`` with ``""`` as every source."""
    with_sources = getattr(dataset, "segments_with_sources", None)
    if with_sources is None:
        return ((text, "") for text in dataset.segments())
    return (_checked_pair(item) for item in with_sources())


def _checked_pair(item: Any) -> tuple[str, str]:
    if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str)):
        raise PluginError(
            "dataset segments_with_sources() must yield (text, source) pairs of strings, got "
            f"{type(item).__name__}"
        )
    return item


def measure(config: ExperimentConfig, components: Components, scratch: Path) -> SegmentStore:
    """Each segment's UTF-8 size (and, for a split of protocol 2, its text and source),
    streamed to files in ``scratch``.

    Always one pass over the dataset: it is what the split sees, and the pass also lets a
    dataset whose fingerprint hashes what it yields (``hf_text``) know its fingerprint.
    """
    started = time.perf_counter()
    label = components.label("dataset")
    if split_protocol(components.split) == SEGMENTS_SPLIT_PROTOCOL:
        pairs = plugin_iter(label, lambda: sourced_segments(components.dataset))
        store = record_segments(pairs, scratch, keep_text=True)
    else:
        items = ((text, "") for text in plugin_iter(label, components.dataset.segments))
        store = record_segments(items, scratch, keep_text=False)
    sizes = store.sizes
    log.info(
        "dataset: %s segments, %s bytes (%.1fs)",
        f"{len(sizes):,}",
        f"{int(sizes.sum()):,}",
        time.perf_counter() - started,
    )
    return store


def load_token_stream(
    config: ExperimentConfig,
    components: Components,
    config_data: Mapping[str, Any],
    dataset_fingerprint: str | None = None,
) -> TokenStream:
    """Tokenize the corpus, or reuse the cached stream of an identical dataset and tokenizer
    (``dataset_fingerprint``: the dataset's, when known already)."""
    started = time.perf_counter()
    dataset_label, tokenizer_label = components.label("dataset"), components.label("tokenizer")
    if dataset_fingerprint is None:
        with plugin_call(dataset_label):
            dataset_fingerprint = adapter_fingerprint(components.dataset)
    with plugin_call(tokenizer_label):
        tokenizer_fingerprint = adapter_fingerprint(components.tokenizer)
    segments = functools.partial(plugin_iter, dataset_label, components.dataset.segments)
    if dataset_fingerprint is None or tokenizer_fingerprint is None:
        stream = build_token_stream(segments(), components.tokenizer, label=tokenizer_label)
        log.info(
            "token stream: %s tokens (%.1fs; not cached: an adapter has no fingerprint)",
            f"{len(stream.tokens):,}",
            time.perf_counter() - started,
        )
        return stream
    key = cache_key(
        {
            "dataset": config_data["dataset"],
            "tokenizer": config_data["tokenizer"],
            "dataset_fingerprint": dataset_fingerprint,
            "tokenizer_fingerprint": tokenizer_fingerprint,
        }
    )
    stream, hit = load_or_build(
        token_cache_root(config), key, segments, components.tokenizer, label=tokenizer_label
    )
    log.info(
        "token stream: %s tokens in %s segments, %s (%.1fs)",
        f"{len(stream.tokens):,}",
        f"{stream.num_segments:,}",
        "loaded from the token cache, tokenization skipped" if hit else "tokenized and cached",
        time.perf_counter() - started,
    )
    return stream


def prepare_data(
    config: ExperimentConfig,
    components: Components,
    config_data: Mapping[str, Any],
    init: SourceRun | None = None,
    tokenizer_file: Path | None = None,
) -> PreparedData:
    """Measure and split the segments, fit the tokenizer on the training side, tokenize.

    With ``init`` (the run ``run.init_from`` names) the tokenizer loads that run's file
    instead of fitting; with ``tokenizer_file`` (a resumed ``init_from`` run's own copy of
    it) that file.
    """
    with (
        lock_wait_limit(config.run.lock_timeout_s),  # for the tokenizer's and the cache's
        segment_scratch(token_cache_root(config)) as scratch,
    ):
        return _prepare(config, components, config_data, scratch, init, tokenizer_file)


def _prepare(
    config: ExperimentConfig,
    components: Components,
    config_data: Mapping[str, Any],
    scratch: Path,
    init: SourceRun | None = None,
    tokenizer_file: Path | None = None,
) -> PreparedData:
    labels = {
        kind: components.label(kind, str(config_data.get(kind, {}).get("name", "")))
        for kind in ("dataset", "tokenizer", "split")
    }
    components = attrs.evolve(components, labels=labels)
    cache_root = token_cache_root(config)
    files: DatasetFiles | None = None
    record: MeasuredRecord | None = None
    if split_protocol(components.split) != SEGMENTS_SPLIT_PROTOCOL:
        # The sizes are all the split needs: maybe an earlier run recorded them.
        with plugin_call(labels["dataset"]):
            files = dataset_files(components.dataset, config.dataset)
        record = load_record(cache_root, files) if files is not None else None
    if record is None:
        store = measure(config, components, scratch)
        with plugin_call(labels["dataset"]):
            fingerprint = adapter_fingerprint(components.dataset)
        prepared = _split_fit_tokenize(
            config, components, config_data, store, fingerprint, init, tokenizer_file
        )
        if files is not None and fingerprint is not None:
            save_record(cache_root, scratch, files, store.sizes, fingerprint)
        return prepared
    assert files is not None
    log.info(
        "dataset: %s segments, %s bytes (as measured by an earlier run: its %s unchanged, "
        "not read again)",
        f"{len(record.sizes):,}",
        f"{int(record.sizes.sum()):,}",
        "file is" if len(files.files) == 1 else "files are",
    )
    try:
        return _split_fit_tokenize(
            config, components, config_data, record, record.fingerprint, init, tokenizer_file
        )
    except SegmentsChanged as error:
        forget_record(cache_root, scratch, files.key)
        raise SegmentsChanged(
            f"{error} (the segment sizes an earlier run recorded for the dataset's unchanged "
            "files are removed: run again to measure it afresh)"
        ) from None


def _split_fit_tokenize(
    config: ExperimentConfig,
    components: Components,
    config_data: Mapping[str, Any],
    measured: SegmentStore | MeasuredRecord,
    fingerprint: str | None,
    init: SourceRun | None,
    tokenizer_file: Path | None,
) -> PreparedData:
    """Split the measured segments, fit the tokenizer on the training side, tokenize."""
    labels = components.labels
    dataset_name = str(config_data["dataset"].get("name", "dataset"))
    sizes = measured.sizes
    with plugin_call(labels["dataset"]):
        identity = dataset_identity(components.dataset, config.dataset, fingerprint)
    with plugin_call(labels["split"]):  # its plan is checked as its output
        if split_protocol(components.split) == SEGMENTS_SPLIT_PROTOCOL:
            assert isinstance(measured, SegmentStore)
            plan = components.split.split(measured)
        else:  # protocol 1: the sizes alone, as the split's older signature expects
            sized_split: Any = components.split
            plan = sized_split.split(sizes)
        if isinstance(measured, SegmentStore):
            measured.close()
        check_split_plan(plan, len(sizes))
    train = np.asarray(plan.train, dtype=np.int64)
    validation = np.asarray(plan.validation, dtype=np.int64)
    train_mask = np.zeros(len(sizes), dtype=bool)
    train_mask[train] = True

    started = time.perf_counter()
    source = FitSource(dataset_name, identity, train_mask)
    if init is not None:
        reuse_source_tokenizer(components.tokenizer, init, source, labels["tokenizer"])
    elif tokenizer_file is not None:
        reload_own_tokenizer(components.tokenizer, tokenizer_file, labels["tokenizer"])
    else:  # the dataset's errors (and its extra segments) name the dataset, not the tokenizer
        segments = plugin_iter(
            labels["dataset"],
            lambda: training_segments(components.dataset.segments(), train_mask, sizes),
        )
        with plugin_call(labels["tokenizer"]):
            components.tokenizer.fit(segments, source)
    log.info(
        "tokenizer ready: %d tokens in vocabulary (%.1fs); split: %s training and %s validation "
        "segments, only the training ones reach the tokenizer",
        components.tokenizer.vocab_size,
        time.perf_counter() - started,
        f"{len(train):,}",
        f"{len(validation):,}",
    )

    try:
        stream = load_token_stream(config, components, config_data, fingerprint)
    except PluginOutputError as error:
        raise PluginError(f"{labels['tokenizer']}: {error}") from None
    if stream.num_segments != len(sizes) or not np.array_equal(stream.byte_counts, sizes):
        raise SegmentsChanged(
            f"dataset {dataset_name!r} yielded other segments when tokenized than when "
            f"measured ({stream.num_segments:,} against {len(sizes):,}); its segments() must "
            "yield the same segments on every pass"
        )
    delimiter = segment_delimiter(components.dataset, dataset_name)
    delimiter_bytes = len(delimiter.encode("utf-8"))
    prepared = PreparedData(
        tokens=stream.tokens,
        train_ranges=stream.ranges(train),
        validation_ranges=stream.ranges(validation),
        train_tokens=stream.token_count(train),
        validation_tokens=stream.token_count(validation),
        validation_bytes=stream.byte_count(validation) + len(validation) * delimiter_bytes,
        num_segments=stream.num_segments,
        train_segments=len(train),
        validation_segments=len(validation),
        end_of_segment_text=delimiter,
        fit_source=source,
    )
    check_data_size(config, prepared)
    return prepared


def check_data_size(config: ExperimentConfig, data: PreparedData) -> None:
    """Refuse a split too small for one training batch or one validation window."""
    train = config.train
    window = train.seq_len + 1
    train_windows = range_window_starts(data.train_ranges, train.seq_len, train.effective_stride)
    if not len(train_windows):
        raise ConfigError(
            f"the training split has {data.train_tokens:,} tokens and no run of segments as "
            f"long as one window of seq_len + 1 = {window}; lower train.seq_len or use more data",
            key_path="train.seq_len",
        )
    used = int(len(train_windows) * train.data_fraction)
    if used < train.batch_size:
        raise ConfigError(
            f"the training split gives {used:,} windows (seq_len={train.seq_len}, "
            f"stride={train.effective_stride}, data_fraction={train.data_fraction}), fewer than "
            f"one batch of {train.batch_size}; lower train.batch_size or use more data",
            key_path="train.batch_size",
        )
    if not len(range_window_starts(data.validation_ranges, train.seq_len, train.seq_len)):
        raise ConfigError(
            f"the validation split has {data.validation_tokens:,} tokens "
            f"({data.num_segments:,} segments in all) and no window of {window} tokens; "
            "lower split.train_fraction or train.seq_len",
            key_path="split",
        )
