"""Read, split, fit, tokenize: the data of a ``mixture`` dataset, in the same leak-proof order
as one dataset's (:mod:`baseline.data.preparation`), source by source.

1. Each source is measured and split on its own (by its own ``split`` table, or
   ``[split]``), before anything learns from any text.
2. The tokenizer is fitted on training segments only, of every source, in proportion to the
   mix: with ``T = min(training bytes / weight)`` over the sources, a source gives about
   ``weight * T`` bytes of its training segments, spread evenly over them (the source with
   the fewest bytes per unit of weight gives all of its). Not one validation segment of any
   source reaches ``fit``.
3. The token stream holds every source's segments, source after source (cached like one
   dataset's, keyed without the weights: another mix reuses it); each source's sides of its
   split become token ranges of their own, so no window crosses from one source into another.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from baseline.config import ExperimentConfig
from baseline.config.mixture import MixtureConfig
from baseline.data.lineage import reload_own_tokenizer, reuse_source_tokenizer
from baseline.data.preparation import (
    SegmentsChanged,
    check_data_size,
    dataset_identity,
    load_token_stream,
    measure,
    segment_delimiter,
    token_cache_root,
    training_segments,
)
from baseline.data.prepared import PreparedData, SourceData
from baseline.data.presence import dataset_key_under
from baseline.data.segments import split_protocol
from baseline.data.token_cache import adapter_fingerprint, cache_key, segment_scratch
from baseline.data.tokens import check_split_plan
from baseline.data.windows import range_window_starts
from baseline.errors import ConfigError, PluginError
from baseline.plugins.calls import plugin_call, plugin_iter
from baseline.plugins.components import Components
from baseline.plugins.mixture import SourceAdapters
from baseline.plugins.output_checks import PluginOutputError
from baseline.plugins.protocols import SEGMENTS_SPLIT_PROTOCOL, FitSource
from baseline.runs.locks import lock_wait_limit
from baseline.runs.source_run import SourceRun

log = logging.getLogger("baseline")


@attrs.frozen
class MeasuredSource:
    """One source after its own split: sizes, sides, identity and its adapters."""

    adapters: SourceAdapters
    sizes: np.ndarray
    train: np.ndarray
    validation: np.ndarray
    identity: str | None

    @property
    def train_mask(self) -> np.ndarray:
        """True for the source's training segments."""
        mask = np.zeros(len(self.sizes), dtype=bool)
        mask[self.train] = True
        return mask

    @property
    def train_bytes(self) -> int:
        """UTF-8 bytes of the training segments."""
        return int(self.sizes[self.train].sum())


@contextlib.contextmanager
def source_errors(source: SourceAdapters) -> Iterator[None]:
    """Key paths of a source's ``ConfigError`` under its table: a ``local_text`` source's
    ``dataset.path`` is ``dataset.sources.<name>.path``."""
    try:
        yield
    except ConfigError as error:
        path = error.key_path
        if path == "split" or path.startswith("split."):
            path = f"{source.key_path}.split" + path[len("split") :]
        else:
            path = dataset_key_under(path, source.key_path)
        raise ConfigError(error.message, key_path=path, source=error.source) from None


def fit_masks(measured: list[MeasuredSource]) -> list[np.ndarray]:
    """The segments of each source that the tokenizer fits on: training segments only, in
    proportion to the mix (see the module docstring)."""
    weights = [part.adapters.weight for part in measured]
    budget = min(
        part.train_bytes / weight
        for part, weight in zip(measured, weights, strict=True)
        if weight > 0
    )
    masks = []
    for part, weight in zip(measured, weights, strict=True):
        mask = np.zeros(len(part.sizes), dtype=bool)
        if weight > 0 and part.train_bytes > 0:
            fraction = min(1.0, budget * weight / part.train_bytes)
            positions = np.arange(len(part.train), dtype=np.float64)
            keep = np.floor((positions + 1) * fraction) > np.floor(positions * fraction)
            mask[part.train[keep]] = True
        masks.append(mask)
    return masks


def _fit_side(part: MeasuredSource, mask: np.ndarray) -> Iterator[str]:
    return training_segments(part.adapters.dataset.segments(), mask, part.sizes)


def measure_sources(
    config: ExperimentConfig, components: Components, scratch: Path
) -> list[MeasuredSource]:
    """Measure and split each source on its own."""
    measured = []
    for index, source in enumerate(components.sources):
        directory = scratch / f"source-{index}"
        directory.mkdir()
        own = attrs.evolve(
            components,
            dataset=source.dataset,
            split=source.split,
            labels={**components.labels, **source.labels},
            sources=(),
        )
        mixture = config.dataset
        assert isinstance(mixture, MixtureConfig)
        with source_errors(source):
            store = measure(config, own, directory)
            with plugin_call(source.labels["dataset"]):
                fingerprint = adapter_fingerprint(source.dataset)
                identity = dataset_identity(
                    source.dataset, mixture.sources[source.name].dataset, fingerprint
                )
            with plugin_call(source.labels["split"]):
                if split_protocol(source.split) == SEGMENTS_SPLIT_PROTOCOL:
                    plan = source.split.split(store)
                else:
                    sized_split: Any = source.split
                    plan = sized_split.split(store.sizes)
                sizes = np.array(store.sizes)
                store.close()
                check_split_plan(plan, len(sizes))
        train = np.unique(np.asarray(plan.train, dtype=np.int64))
        validation = np.unique(np.asarray(plan.validation, dtype=np.int64))
        where = (
            f"{source.key_path}.split"
            if mixture.sources[source.name].split is not None
            else "split"
        )
        for side, indices in (("training", train), ("validation", validation)):
            if not len(indices):
                raise ConfigError(
                    f"source {source.name!r} has no {side} segments ({len(sizes):,} segments, "
                    f"split by {where}); give it more text or change {where}",
                    key_path=source.key_path,
                )
        log.info(
            "source %s: %s segments, %s bytes; %s training and %s validation segments",
            source.name,
            f"{len(sizes):,}",
            f"{int(sizes.sum()):,}",
            f"{len(train):,}",
            f"{len(validation):,}",
        )
        measured.append(MeasuredSource(source, sizes, train, validation, identity))
    return measured


def mixture_identity(measured: list[MeasuredSource]) -> str | None:
    """A hash of each source's name and identity; ``None`` when one has none."""
    if any(part.identity is None for part in measured):
        return None
    return cache_key({"mixture": [[part.adapters.name, part.identity] for part in measured]})


def prepare_mixture_data(
    config: ExperimentConfig,
    components: Components,
    config_data: Mapping[str, Any],
    init: SourceRun | None = None,
    tokenizer_file: Path | None = None,
) -> PreparedData:
    """:func:`baseline.data.preparation.prepare_data` for a mixture (``components.sources``)."""
    labels = {
        kind: components.label(kind, str(config_data.get(kind, {}).get("name", "")))
        for kind in ("dataset", "tokenizer", "split")
    }
    components = attrs.evolve(components, labels=labels)
    with (
        lock_wait_limit(config.run.lock_timeout_s),  # for the tokenizer's and the cache's
        segment_scratch(token_cache_root(config)) as scratch,
    ):
        return prepare_mixture(config, components, config_data, scratch, init, tokenizer_file)


def prepare_mixture(
    config: ExperimentConfig,
    components: Components,
    config_data: Mapping[str, Any],
    scratch: Path,
    init: SourceRun | None = None,
    tokenizer_file: Path | None = None,
) -> PreparedData:
    """Measure and split each source, fit the tokenizer on the training side of every source
    in proportion to the mix, tokenize (see the module docstring)."""
    mixture = config.dataset
    assert isinstance(mixture, MixtureConfig)
    measured = measure_sources(config, components, scratch)
    identity = mixture_identity(measured)
    weights_source = FitSource(
        "mixture", identity, np.concatenate([part.train_mask for part in measured])
    )
    # What fit reads: the training segments in proportion to the mix. What it is told (and
    # its fit record keeps): every training segment, a superset, so that a record never
    # hides a validation segment and another mix of the same split reuses the file.
    masks = fit_masks(measured)
    fed = int(sum(int(mask.sum()) for mask in masks))
    labels = components.labels
    started = time.perf_counter()
    if init is not None:
        reuse_source_tokenizer(components.tokenizer, init, weights_source, labels["tokenizer"])
    elif tokenizer_file is not None:
        reload_own_tokenizer(components.tokenizer, tokenizer_file, labels["tokenizer"])
    else:

        def fit_segments() -> Iterator[str]:
            for part, mask in zip(measured, masks, strict=True):
                with source_errors(part.adapters):
                    yield from plugin_iter(
                        part.adapters.labels["dataset"],
                        functools.partial(_fit_side, part, mask),
                    )

        with plugin_call(labels["tokenizer"]):
            components.tokenizer.fit(fit_segments(), weights_source)
    log.info(
        "tokenizer ready: %d tokens in vocabulary (%.1fs); fitted on %s training segments of "
        "%d sources in proportion to the mix, no validation segment of any source",
        components.tokenizer.vocab_size,
        time.perf_counter() - started,
        f"{fed:,}",
        len(measured),
    )

    # The cache key leaves the weights out: another mix of the same sources reuses the stream.
    cache_data = dict(config_data)
    cache_data["dataset"] = {
        "name": "mixture",
        "sources": {
            name: {k: v for k, v in source.items() if k != "weight"}
            for name, source in config_data["dataset"]["sources"].items()
        },
    }
    with plugin_call(labels["dataset"]):
        fingerprint = adapter_fingerprint(components.dataset)
    try:
        stream = load_token_stream(config, components, cache_data, fingerprint)
    except PluginOutputError as error:
        raise PluginError(f"{labels['tokenizer']}: {error}") from None
    all_sizes = np.concatenate([part.sizes for part in measured])
    if stream.num_segments != len(all_sizes) or not np.array_equal(stream.byte_counts, all_sizes):
        raise SegmentsChanged(
            "a source of the mixture yielded other segments when tokenized than when measured "
            f"({stream.num_segments:,} against {len(all_sizes):,}); its segments() must yield "
            "the same segments on every pass"
        )

    sources: list[SourceData] = []
    base = 0
    for part in measured:
        source = part.adapters
        delimiter = segment_delimiter(source.dataset, source.name)
        train, validation = part.train + base, part.validation + base
        sources.append(
            SourceData(
                name=source.name,
                weight=source.weight,
                train_ranges=stream.ranges(train),
                validation_ranges=stream.ranges(validation),
                train_tokens=stream.token_count(train),
                validation_tokens=stream.token_count(validation),
                validation_bytes=stream.byte_count(validation)
                + len(validation) * len(delimiter.encode("utf-8")),
                num_segments=len(part.sizes),
                train_segments=len(train),
                validation_segments=len(validation),
            )
        )
        base += len(part.sizes)
    prepared = PreparedData(
        tokens=stream.tokens,
        train_ranges=[r for s in sources for r in s.train_ranges],
        validation_ranges=[r for s in sources for r in s.validation_ranges],
        train_tokens=sum(s.train_tokens for s in sources),
        validation_tokens=sum(s.validation_tokens for s in sources),
        validation_bytes=sum(s.validation_bytes for s in sources),
        num_segments=stream.num_segments,
        train_segments=sum(s.train_segments for s in sources),
        validation_segments=sum(s.validation_segments for s in sources),
        end_of_segment_text=segment_delimiter(
            measured[0].adapters.dataset, measured[0].adapters.name
        ),
        fit_source=weights_source,
        sources=tuple(sources),
        on_exhausted=mixture.on_exhausted,
    )
    check_source_sizes(config, prepared)
    check_data_size(config, prepared)
    return prepared


def check_source_sizes(config: ExperimentConfig, data: PreparedData) -> None:
    """Every source of positive weight holds a training window; every source a validation one."""
    train = config.train
    for source in data.sources:
        key_path = f"dataset.sources.{source.name}"
        if source.weight > 0 and not len(
            range_window_starts(source.train_ranges, train.seq_len, train.effective_stride)
        ):
            raise ConfigError(
                f"source {source.name!r} has {source.train_tokens:,} training tokens and no run "
                f"of segments as long as one window of seq_len + 1 = {train.seq_len + 1}; give "
                "it more text or lower train.seq_len",
                key_path=key_path,
            )
        if not len(range_window_starts(source.validation_ranges, train.seq_len, train.seq_len)):
            raise ConfigError(
                f"source {source.name!r} has {source.validation_tokens:,} validation tokens and "
                f"no window of {train.seq_len + 1} tokens; give it more text, a larger "
                "validation side or lower train.seq_len",
                key_path=key_path,
            )
