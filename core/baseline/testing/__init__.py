"""Helpers and adapter contract checks for tests, the core's and plugin authors' alike.

Typical use in a plugin's own tests::

    from baseline.testing import check_dataset_adapter, in_process_plugins

    def test_contract(tmp_path):
        check_dataset_adapter(MyDataset(MyDatasetConfig(path=...)))

    def test_registers():
        plugin_set = in_process_plugins(my_plugin_module, installed=False)
        assert plugin_set.registry.get("dataset", "my_dataset")

Every check raises ``AssertionError`` with a message naming the broken rule.

A logger plugin runs the logger contract suite, :class:`baseline.testing.loggers.LoggerContract`
(also importable from here; it needs pytest), on real tiny runs through the components of
:mod:`baseline.testing.components`, which need nothing but the core.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from baseline.config import TokenizerConfig, path_field
from baseline.data.fit_record import whole_corpus_source
from baseline.data.segments import SegmentList, split_protocol
from baseline.plugins.discovery import PluginSet, PluginSource, activated, discover
from baseline.plugins.hookspecs import Register, hookimpl
from baseline.plugins.protocols import (
    SEGMENTS_SPLIT_PROTOCOL,
    DatasetAdapter,
    FitSource,
    LoggerAdapter,
    MetricRecord,
    ModelAdapter,
    RunInfo,
    SplitAdapter,
    TokenizerAdapter,
)
from baseline.testing.components import (
    ContractPlugin,
    contract_experiment_data,
    write_experiment,
)

__all__ = [
    "SAMPLE_TEXTS",
    "ContractPlugin",
    "LoggedRun",
    "LoggerContract",
    "RecordingTokenizer",
    "RecordingTokenizerConfig",
    "RecordingTokenizerPlugin",
    "check_dataset_adapter",
    "check_logger_adapter",
    "check_model_adapter",
    "check_split_adapter",
    "check_tokenizer_adapter",
    "contract_experiment_data",
    "in_process_plugins",
    "read_fit_recording",
    "tiny_experiment_data",
    "using_plugins",
    "write_experiment",
]

#: Texts with ASCII, accents, CJK, emoji, whitespace runs and newlines, for round trips.
SAMPLE_TEXTS = (
    "ROMEO:\nBut, soft! what light through yonder window breaks?",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n",
    "accents: café naïve façade",
    "日本語のテキスト",
    "emoji 🙂🚀 and symbols <|> {} [] \\",
    "a",
)


def __getattr__(name: str) -> Any:
    """``LoggerContract`` and ``LoggedRun``, imported on first use (they need pytest)."""
    if name in ("LoggerContract", "LoggedRun"):
        from baseline.testing import loggers

        return getattr(loggers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def in_process_plugins(
    *plugins: object, installed: bool = True, distribution: str = "test-plugins"
) -> PluginSet:
    """A plugin set from plugin objects (modules, classes or instances with hookimpls).

    With ``installed`` the installed plugins are discovered too, as in a real run.
    """
    sources = [
        PluginSource(plugin, getattr(plugin, "__name__", type(plugin).__name__), distribution, "0")
        for plugin in plugins
    ]
    return discover(sources, installed=installed)


@contextlib.contextmanager
def using_plugins(*plugins: object, installed: bool = True) -> Iterator[PluginSet]:
    """Activate in-process plugins for the CLI and ``model_pipeline`` inside a ``with`` block."""
    with activated(in_process_plugins(*plugins, installed=installed)) as plugin_set:
        yield plugin_set


@attrs.frozen(kw_only=True)
class RecordingTokenizerConfig(TokenizerConfig):
    """The ``recording`` tokenizer: bytes as ids, and a log of every text ``fit`` receives."""

    #: JSON-lines file that ``fit`` appends every text it is given to (with the process id).
    record_path: str = path_field()


class RecordingTokenizer:
    """A byte-level tokenizer (ids 0-255, end-of-segment 256) whose ``fit`` learns nothing
    but appends every text it is handed to ``record_path``: what proves, in a test, which
    segments reach a tokenizer's ``fit`` (see :func:`read_fit_recording`)."""

    vocab_size = 257
    end_of_segment_id = 256

    def __init__(self, config: RecordingTokenizerConfig) -> None:
        self.config = config

    def fit(self, texts: Iterator[str], source: FitSource) -> None:
        """Append each text (and the source's segment counts) to ``record_path``."""
        path = Path(self.config.record_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "source": {
                            "dataset": source.dataset_name,
                            "segments": source.num_segments,
                            "train_segments": source.num_train_segments,
                        },
                    }
                )
                + "\n"
            )
            for text in texts:
                handle.write(json.dumps({"pid": os.getpid(), "text": text}) + "\n")

    def load(self, path: Path) -> None:
        """Nothing to load: the encoding is fixed."""

    def save(self, directory: Path) -> str:
        """Write a marker file (the encoding needs no state)."""
        (directory / "recording_tokenizer.json").write_text("{}\n", encoding="utf-8")
        return "recording_tokenizer.json"

    def fingerprint(self) -> str:
        """Constant: the encoding never changes."""
        return "recording-bytes-1"

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """UTF-8 bytes of each text."""
        return [list(text.encode("utf-8")) for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the byte ids; the end-of-segment id is dropped."""
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class RecordingTokenizerPlugin:
    """A plugin object registering tokenizer ``recording`` (for :func:`in_process_plugins`, or
    as the entry point ``baseline.testing:RecordingTokenizerPlugin`` of a test distribution)."""

    @staticmethod
    @hookimpl
    def baseline_register_tokenizers(register: Register) -> None:
        """Register the ``recording`` tokenizer."""
        register("recording", RecordingTokenizerConfig, RecordingTokenizer)


def read_fit_recording(path: Path) -> dict[int, list[str]]:
    """The texts each process's ``RecordingTokenizer.fit`` received, by process id."""
    texts: dict[int, list[str]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        received = texts.setdefault(entry["pid"], [])
        if "text" in entry:
            received.append(entry["text"])
    return texts


def tiny_experiment_data(workdir: str | Path, *, corpus: str | None = None) -> dict[str, Any]:
    """Plain experiment data (as parsed TOML) for a run of a few seconds with the standard
    plugins (local_text, bpe, baseline_decoder, holdout) and the console logger.

    ``workdir`` (created if missing) receives the corpus, ``corpus.txt``: ``corpus`` or 240
    short segments of :data:`SAMPLE_TEXTS`, separated by blank lines. The returned dict has
    the sections ``run`` (artifacts in ``workdir/runs``, run name ``tiny``), ``dataset``
    (``local_text``), ``tokenizer`` (``bpe``, 302 ids, vocab file ``workdir/bpe.json``),
    ``model`` (``baseline_decoder``, d_model 32, 2 layers), ``train`` (2 epochs, batch 8,
    seq_len 16), ``split`` (``holdout``, 80% training) and ``logging`` (``console``); change
    any key before writing it as TOML or passing it to
    :func:`baseline.experiment.loading.experiment_from_data`.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    corpus_path = workdir / "corpus.txt"
    if corpus is None:
        lines = [f"{text} {i}" for i in range(60) for text in SAMPLE_TEXTS[:4]]
        corpus = "\n\n".join(lines)
    corpus_path.write_text(corpus, encoding="utf-8")
    return {
        "run": {
            "project_name": "test",
            "artifacts_root": str(workdir / "runs"),
            "run_name": "tiny",
            "checkpoint_every_n_steps": 5,
            "seed": 7,
        },
        "dataset": {"name": "local_text", "path": str(corpus_path), "segment_delimiter": "\n\n"},
        "tokenizer": {
            "name": "bpe",
            "base_vocab_size": 300,
            "num_special_tokens": 2,
            "vocab_path": str(workdir / "bpe.json"),
        },
        "model": {"name": "baseline_decoder", "d_model": 32, "n_heads": 2, "layers": 2},
        "train": {
            "epochs": 2,
            "learning_rate": 3e-3,
            "batch_size": 8,
            "seq_len": 16,
            "warmup_steps": 2,
        },
        "split": {"name": "holdout", "train_fraction": 0.8, "seed": 1},
        "logging": {"provider": "console", "log_every_n_steps": 2},
    }


def check_dataset_adapter(adapter: DatasetAdapter) -> list[str]:
    """Segments are non-empty strings, and a second pass yields the same segments."""
    assert isinstance(adapter, DatasetAdapter), "adapter has no segments() method"
    first = list(adapter.segments())
    assert first, "segments() yielded nothing"
    for index, segment in enumerate(first):
        assert isinstance(segment, str), f"segment {index} is {type(segment).__name__}, not str"
        assert segment.strip(), f"segment {index} is empty or whitespace only"
    assert list(adapter.segments()) == first, "segments() is not deterministic across passes"
    return first


def check_tokenizer_adapter(
    make: Any, training_texts: Sequence[str], workdir: Path, texts: Sequence[str] = SAMPLE_TEXTS
) -> TokenizerAdapter:
    """``make()`` returns a fresh adapter. Fit, round trip ``texts``, save and reload.

    ``fit`` gets ``training_texts`` with a :class:`~baseline.plugins.protocols.FitSource`
    saying they are all training segments of one (fingerprint-less) dataset. Checks ids are within
    ``vocab_size``, ``decode(encode(t)) == t``, the end-of-segment id is valid, and a
    tokenizer loaded from :meth:`save`'s file encodes identically.
    """
    tokenizer: TokenizerAdapter = make()
    tokenizer.fit(iter(training_texts), whole_corpus_source(len(training_texts)))
    # isinstance() reads the protocol's properties, which may need a fitted tokenizer.
    assert isinstance(tokenizer, TokenizerAdapter), "adapter does not satisfy TokenizerAdapter"
    assert tokenizer.vocab_size > 0, "vocab_size must be positive"
    assert 0 <= tokenizer.end_of_segment_id < tokenizer.vocab_size, "end_of_segment_id out of range"
    encoded = tokenizer.encode_batch(list(texts))
    assert len(encoded) == len(texts), "encode_batch returned a different number of sequences"
    for text, ids in zip(texts, encoded, strict=True):
        outside = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
        assert not outside, (
            f"encode_batch must return ids in 0..{tokenizer.vocab_size - 1} (below vocab_size="
            f"{tokenizer.vocab_size}), got {outside[:3]} for {text!r}"
        )
        assert tokenizer.end_of_segment_id not in ids, f"special token in the encoding of {text!r}"
        decoded = tokenizer.decode(ids)
        assert decoded == text, f"round trip changed {text!r} into {decoded!r}"
    workdir.mkdir(parents=True, exist_ok=True)
    file_name = tokenizer.save(workdir)
    assert (workdir / file_name).is_file(), f"save() did not write {file_name}"
    reloaded: TokenizerAdapter = make()
    reloaded.load(workdir / file_name)
    assert reloaded.encode_batch(list(texts)) == encoded, "a reloaded tokenizer encodes differently"
    assert reloaded.vocab_size == tokenizer.vocab_size, (
        "a reloaded tokenizer has another vocab size"
    )
    return tokenizer


def check_model_adapter(adapter: ModelAdapter, *, vocab_size: int = 64, seq_len: int = 12) -> Any:
    """The module maps ``(B, T)`` ids to ``(B, T, vocab)`` logits, is causal, and trains."""
    import torch

    assert isinstance(adapter, ModelAdapter), "adapter has no build() method"
    torch.manual_seed(0)
    model = adapter.build(vocab_size, seq_len)
    assert isinstance(model, torch.nn.Module), "build() must return a torch.nn.Module"
    model.eval()
    tokens = torch.randint(0, vocab_size, (3, seq_len))
    logits = model(tokens)
    _assert_logits(logits, (3, seq_len, vocab_size))
    assert torch.isfinite(logits).all(), "logits are not finite"
    changed = tokens.clone()
    cut = seq_len // 2
    changed[:, cut:] = (changed[:, cut:] + 1) % vocab_size
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert torch.allclose(before[:, :cut], after[:, :cut], atol=1e-5), (
        "the model is not causal: changing later tokens changed earlier logits"
    )
    shorter = model(tokens[:, : seq_len - 2])
    _assert_logits(shorter, (3, seq_len - 2, vocab_size), "for inputs shorter than seq_len ")
    model.train()
    loss = torch.nn.functional.cross_entropy(
        model(tokens[:, :-1]).reshape(-1, vocab_size), tokens[:, 1:].reshape(-1)
    )
    loss.backward()  # type: ignore[no-untyped-call]
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), "some parameters got no gradient"
    return model


def _assert_logits(logits: Any, expected: tuple[int, int, int], when: str = "") -> None:
    """The rule the core checks on the first training step (baseline.plugins.output_checks)."""
    import torch

    rule = f"forward must return {when}logits of shape (batch, seq_len, vocab_size) = {expected}"
    assert isinstance(logits, torch.Tensor), f"{rule}, got a {type(logits).__name__}"
    assert tuple(logits.shape) == expected, f"{rule}, got shape {tuple(logits.shape)}"


def check_split_adapter(
    adapter: SplitAdapter, segments: Sequence[int] | Sequence[str] | Sequence[tuple[str, str]]
) -> Any:
    """Train and validation are disjoint, in range, non-empty, and deterministic.

    ``segments`` are the segments' UTF-8 sizes (ints: protocol 1 only), texts, or
    ``(text, source)`` pairs. A split of protocol 2 gets them as ``Segments``, one of protocol 1
    their sizes, read-only, as the core may pass a memory map.
    """
    assert isinstance(adapter, SplitAdapter), "adapter has no split() method"
    texts = not all(isinstance(item, int | np.integer) for item in segments)
    given: Any = SegmentList.of(segments) if texts else None  # type: ignore[arg-type]
    if split_protocol(adapter) == SEGMENTS_SPLIT_PROTOCOL:
        assert given is not None, "a split of split_protocol 2 needs texts, not sizes"
    else:
        given = given.sizes if texts else np.array(segments, dtype=np.int64)
        given.setflags(write=False)
    counts = np.zeros(len(given))
    plan = adapter.split(given)
    train, validation = np.asarray(plan.train), np.asarray(plan.validation)
    assert len(train) and len(validation), "both sides of the split must be non-empty"
    for name, side in (("train", train), ("validation", validation)):
        assert side.min() >= 0 and side.max() < len(counts), f"{name} indices out of range"
        assert len(np.unique(side)) == len(side), f"{name} repeats a segment"
    assert not np.intersect1d(train, validation).size, "a segment is in both train and validation"
    again = adapter.split(given)
    assert np.array_equal(again.train, plan.train), "split is not deterministic"
    assert np.array_equal(again.validation, plan.validation), "split is not deterministic"
    return plan


def check_logger_adapter(adapter: LoggerAdapter, run_dir: Path) -> None:
    """A session starts, accepts a record of every phase, and finishes with 0 and non-zero."""
    assert isinstance(adapter, LoggerAdapter), "adapter has no start() method"
    run_dir.mkdir(parents=True, exist_ok=True)
    info = RunInfo(
        project_name="contract",
        run_name="contract-run",
        run_dir=run_dir,
        config={"train": {"epochs": 1}},
        epochs=1,
        steps_per_epoch=4,
        total_steps=4,
    )
    records: list[Mapping[str, float]] = [
        {"train_loss": 3.0, "tokens_per_second": 1000.0, "learning_rate": 1e-3},
        {"val_loss": 2.5, "val_perplexity": math.exp(2.5), "val_bpb": 1.5},
        {"train_loss_epoch": 3.0, "val_loss": 2.5},
    ]
    for exit_code in (0, 1):
        session = adapter.start(info)
        for phase, values in zip(("train", "validation", "epoch"), records, strict=True):
            session.log(MetricRecord(step=4, tokens_seen=64, epoch=1, phase=phase, values=values))  # type: ignore[arg-type]
        session.finish(exit_code)
