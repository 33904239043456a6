"""The interfaces adapters implement, and the small records passed between core and adapters.

Adapters are plain classes; they satisfy these protocols structurally (no base class
needed). ``baseline.testing`` has contract checks that exercise each protocol.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    import numpy as np
    import torch


@runtime_checkable
class DatasetAdapter(Protocol):
    """Yields the corpus as text segments (documents); the core tokenizes and joins them."""

    def segments(self) -> Iterator[str]:
        """Yield every segment, in a deterministic order; may be called more than once."""
        ...

    # Optional: ``fingerprint() -> str``, a hash that changes whenever ``segments()`` would
    # yield something else. With it (and the tokenizer's), token streams are cached on disk
    # and tokenizer files can tell whether they were fitted on this dataset.
    #
    # Optional: ``segment_delimiter: str``, the text that separates segments in the source
    # (``"\n\n"`` for paragraphs, ``"\n"`` for lines). The end-of-segment token stands for
    # it: bits per byte count its bytes, and generated text renders the token as it. Without
    # the attribute the token stands for nothing (0 bytes, rendered as nothing).
    #
    # Optional: ``segments_with_sources() -> Iterator[tuple[str, str]]``, ``(text, source)``
    # for each segment ``segments()`` yields, in the same order: ``source`` says where the
    # segment comes from (a file name, a row). The core calls it instead of ``segments()``
    # for the measuring pass when the split takes :class:`Segments` (``Segments.source``).
    #
    # Optional: ``source_files() -> Sequence[str | Path]``, every file ``segments()`` reads.
    # While none of them changes, a split of protocol 1 gets the sizes (and the core the
    # fingerprint) an earlier run measured, without a pass (:mod:`baseline.data.measured`).


@runtime_checkable
class TokenizerAdapter(Protocol):
    """Turns text into token ids and back, and persists itself to a file."""

    @property
    def vocab_size(self) -> int:
        """Number of token ids the model must embed (specials included)."""
        ...

    @property
    def end_of_segment_id(self) -> int:
        """Token appended after every segment when the token stream is built."""
        ...

    def fit(self, texts: Iterator[str], source: FitSource) -> None:
        """Make the tokenizer ready: load its configured file, or train on ``texts`` and save.

        ``texts`` yields the training segments only (never a validation segment) and is
        consumed only when training is needed. ``source`` says which dataset and which of its
        segments ``texts`` are: a tokenizer that saves what it learned records it beside the
        file (:func:`baseline.data.fit_record.write_fit_record`) and, when it reuses a file, checks
        that the file did not learn from this split's validation segments
        (:func:`baseline.data.fit_record.check_fit_record`).
        """
        ...

    def load(self, path: Path) -> None:
        """Load a tokenizer written by :meth:`save` (inference, and runs with ``run.init_from``)."""
        ...

    def save(self, directory: Path) -> str:
        """Write the tokenizer into ``directory``; return the file name written."""
        ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a sequence of token ids."""
        ...

    # Optional: ``fingerprint() -> str``, a hash of everything that determines the encoding.
    #
    # Optional: ``export_hf(directory: Path, info: ExportInfo) -> None``, write the tokenizer
    # as a Hugging Face tokenizer (``tokenizer.json``, ``tokenizer_config.json`` and its
    # special tokens, ``info.end_of_segment_id`` as EOS) that ``AutoTokenizer.from_pretrained``
    # loads and that encodes text to the same ids (see :class:`ExportInfo`).


@runtime_checkable
class ModelAdapter(Protocol):
    """Builds the network; the module maps token ids ``(B, T)`` to logits ``(B, T, vocab)``.

    Optional: a ``diagnostics`` attribute, the names from
    :data:`baseline.config.MODEL_DIAGNOSTICS` its modules support. ``activation_norms`` and
    ``ln_grad_norms`` need the module to be a :class:`LayeredModel`; ``attention_entropy``
    needs it to be both a :class:`LayeredModel` (which layers are first, middle and last)
    and an :class:`AttentionProbe`. Experiments that request a diagnostic the adapter does
    not list are refused at validation time.

    Optional: ``export_hf(model: torch.nn.Module, directory: Path, info: ExportInfo) -> None``,
    write the built and trained ``model`` as a Hugging Face causal LM (``config.json``,
    ``model.safetensors``, ``generation_config.json``) that
    ``AutoModelForCausalLM.from_pretrained`` loads and that computes the same logits
    (``baseline export``; see :class:`ExportInfo`). A configuration with no equivalent raises
    :class:`baseline.errors.ConfigError` naming the ``model.<key>`` at fault.
    """

    def build(self, vocab_size: int, seq_len: int) -> torch.nn.Module:
        """Return a freshly initialised module for this vocabulary and context length."""
        ...


@runtime_checkable
class LayeredModel(Protocol):
    """A built model made of a stack of layers (transformer blocks)."""

    def diagnostic_layers(self) -> Sequence[torch.nn.Module]:
        """The layers in order; the core hooks the first, middle and last of them.

        A layer's forward output (or its first element) is the hidden state after it, and
        its ``LayerNorm``/``RMSNorm`` submodules are the ones ``ln_grad_norms`` reports
        (optional: a ``diagnostic_norms(layer) -> Sequence[torch.nn.Module]`` method on the
        model names them instead, for norm classes of other libraries).
        """
        ...


@runtime_checkable
class AttentionProbe(Protocol):
    """A built model that can report the attention probabilities of some of its layers."""

    def attention_probabilities(
        self, tokens: torch.Tensor, layers: Sequence[int], max_heads: int
    ) -> Mapping[int, torch.Tensor]:
        """Run ``tokens`` ``(B, T)`` through the model and return, for each layer index in
        ``layers``, the causal attention probabilities ``(B, H, T, T)`` of its first
        ``max_heads`` heads (``H <= max_heads``). Called without gradients, in eval mode, on
        short inputs: only the requested heads' maps should be materialised.
        """
        ...


@runtime_checkable
class ShardableModel(Protocol):
    """A built model that says how FSDP (``train.parallelism = "fsdp"``) should shard it."""

    def fsdp_units(self) -> Sequence[torch.nn.Module]:
        """The submodules to shard one by one (typically the transformer blocks). Each is
        gathered just before its forward pass and freed after it; the model's remaining
        parameters form one more unit. Without this method the whole model is one unit."""
        ...


@attrs.frozen(eq=False)
class FitSource:
    """What a tokenizer's ``fit`` receives: the training segments of one dataset.

    ``train_mask[i]`` is true when segment ``i`` (in the dataset's order) is a training
    segment; ``dataset_identity`` changes whenever the dataset would yield other segments
    (``None`` when the dataset adapter has no fingerprint).
    """

    dataset_name: str
    dataset_identity: str | None
    train_mask: np.ndarray

    @property
    def num_segments(self) -> int:
        """Segments in the dataset, both sides of the split."""
        return len(self.train_mask)

    @property
    def num_train_segments(self) -> int:
        """Segments ``fit`` may read."""
        return int(self.train_mask.sum())


@attrs.frozen(kw_only=True)
class ExportInfo:
    """What the adapters' optional ``export_hf`` methods learn about the run being exported.

    The adapters write into ``directory`` (a fresh temporary directory that ``baseline export``
    renames to the destination only when both succeeded).
    """

    #: The run directory (``inference_config.json``, the final model, the tokenizer file).
    run_dir: Path
    vocab_size: int
    #: The context length the model was trained with.
    seq_len: int
    #: The token the core appended after every segment: the exported EOS.
    end_of_segment_id: int
    #: The dataset delimiter the end-of-segment token stands for (``""`` when unknown).
    end_of_segment_text: str
    #: ``inference_config.json`` as parsed.
    inference_config: Mapping[str, Any]


@attrs.frozen
class SplitPlan:
    """Segment indices (into the dataset's segment order) for training and validation."""

    train: np.ndarray
    validation: np.ndarray


#: The split protocol that passes a :class:`Segments` view (declare it as a class attribute,
#: ``split_protocol = SEGMENTS_SPLIT_PROTOCOL``); a split without the attribute is protocol 1
#: and receives the segments' UTF-8 sizes as an int64 array.
SEGMENTS_SPLIT_PROTOCOL = 2


@runtime_checkable
class Segments(Protocol):
    """The corpus as a split of protocol 2 sees it: every segment, before tokenization.

    Recorded during the one pass that measures the corpus, so reading it does not read the
    dataset again. Text is read lazily from disk: memory stays bounded by what the split
    itself keeps.
    """

    @property
    def sizes(self) -> np.ndarray:
        """``sizes[i]`` is the UTF-8 size of segment ``i`` (int64, a read-only memory map)."""
        ...

    def __len__(self) -> int:
        """Segments in the corpus."""
        ...

    def text(self, index: int) -> str:
        """Segment ``index``'s text (one read; iterate for a pass over all of them)."""
        ...

    def source(self, index: int) -> str:
        """Where segment ``index`` comes from, as its dataset names it (``local_text``: the
        file; ``hf_text``: the row, or a column's value); ``""`` when the dataset does not say."""
        ...

    def __iter__(self) -> Iterator[tuple[int, str, str]]:
        """``(index, text, source)`` of every segment in order, streamed from disk."""
        ...


@runtime_checkable
class SplitAdapter(Protocol):
    """Assigns each segment of the corpus to training or validation.

    The split runs before anything learns from the data (the tokenizer is fitted on the
    training side only), so it sees what is known before tokenization. A split with the class
    attribute ``split_protocol = 2`` receives the segments themselves (:class:`Segments`:
    sizes, text, source); one without it (protocol 1) receives each segment's size in UTF-8
    bytes as an int64 array, possibly a read-only memory map (do not write to it).
    """

    def split(self, segments: Segments) -> SplitPlan:
        """Return disjoint train/validation segment indices; deterministic for a config."""
        ...


@attrs.frozen
class RunInfo:
    """What a logger learns about a run when it starts."""

    project_name: str
    run_name: str
    run_dir: Path
    #: The normalized experiment config as plain data (what ``run_config.json`` holds).
    config: Mapping[str, Any]
    #: ``None`` when training runs until a ``max_*`` limit.
    epochs: int | None
    steps_per_epoch: int
    #: ``None`` when only a time limit ends training.
    total_steps: int | None
    #: First step of this process (non-zero when resuming).
    start_step: int = 0
    #: The module being trained, for loggers that watch parameters (``None`` when a logger
    #: is exercised without a model).
    model: Any = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class MetricRecord:
    """Metrics logged at one point of training.

    ``phase`` is ``train`` for step metrics, ``diagnostics`` for the gradient, activation
    and attention diagnostics, ``validation`` for validation results (periodic or at the end
    of an epoch) and ``epoch`` for end-of-epoch summaries.
    """

    step: int
    tokens_seen: int
    epoch: int
    phase: Literal["train", "diagnostics", "validation", "epoch"]
    values: Mapping[str, float]


@runtime_checkable
class LoggerSession(Protocol):
    """One logger's view of one run."""

    def log(self, record: MetricRecord) -> None:
        """Record metrics."""
        ...

    def finish(self, exit_code: int) -> None:
        """Close the session; ``exit_code`` is non-zero when the run failed or was stopped."""
        ...


@runtime_checkable
class LoggerAdapter(Protocol):
    """Starts a :class:`LoggerSession` for a run."""

    def start(self, run: RunInfo) -> LoggerSession:
        """Open the session (create the remote run, draw the progress bar, ...)."""
        ...
