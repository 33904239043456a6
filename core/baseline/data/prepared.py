"""The data a run trains on, as plain values: what the trainer needs and nothing else."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from baseline.config import TrainConfig
from baseline.data.windows import EvalWindows, TrainWindows
from baseline.plugins.protocols import FitSource

TokenRange = tuple[int, int]


@attrs.frozen
class SourceData:
    """One source of a mixture in the token stream: its weight (normalized), the token ranges
    of each side of its own split, and the sizes its metrics need."""

    name: str
    weight: float
    train_ranges: list[TokenRange]
    validation_ranges: list[TokenRange]
    train_tokens: int
    validation_tokens: int
    #: UTF-8 bytes of the validation text, each end-of-segment token counted as the source's
    #: delimiter (as :attr:`PreparedData.validation_bytes`).
    validation_bytes: int
    num_segments: int
    train_segments: int
    validation_segments: int

    @property
    def tokens_per_byte(self) -> float:
        """Validation tokens per validation byte of this source."""
        return self.validation_tokens / max(1, self.validation_bytes)

    def record(self) -> dict[str, Any]:
        """What ``run_config.json`` keeps of this source."""
        return {
            "weight": self.weight,
            "train_tokens": self.train_tokens,
            "validation_tokens": self.validation_tokens,
            "validation_bytes": self.validation_bytes,
            "segments": self.num_segments,
            "train_segments": self.train_segments,
            "validation_segments": self.validation_segments,
        }


@attrs.frozen
class SourceEval:
    """The validation windows of one source of a mixture, with its weight and tokens per byte."""

    name: str
    weight: float
    windows: EvalWindows
    tokens_per_byte: float


@attrs.frozen
class PreparedData:
    """The token array and the token ranges of each side of the split.

    ``validation_bytes`` is the UTF-8 size of the validation text, counting for every
    end-of-segment token the bytes of the delimiter it stands for (``end_of_segment_text``),
    so that bits per byte compare across tokenizers.
    """

    #: All tokens in segment order (a read-only memory map when the stream is cached).
    tokens: np.ndarray
    train_ranges: list[TokenRange]
    validation_ranges: list[TokenRange]
    train_tokens: int
    validation_tokens: int
    validation_bytes: int
    num_segments: int
    train_segments: int
    validation_segments: int
    #: What the end-of-segment token stands for in the source text.
    end_of_segment_text: str = ""
    #: The dataset and its training segments (what the tokenizer and the weights learn from).
    fit_source: FitSource | None = attrs.field(default=None, eq=False, repr=False)
    #: A mixture's sources, in the order of the file (empty for one dataset).
    sources: tuple[SourceData, ...] = ()
    #: A mixture's ``dataset.on_exhausted``.
    on_exhausted: str = "repeat"

    @property
    def tokens_per_byte(self) -> float:
        """Validation tokens per validation byte: turns nats per token into bits per byte."""
        return self.validation_tokens / max(1, self.validation_bytes)

    def windows(
        self, train: TrainConfig, *, seed: int, rank: int, world_size: int
    ) -> tuple[Any, EvalWindows]:
        """This rank's training and validation windows under ``[train]``'s settings (for a
        mixture, :class:`~baseline.data.mixture_windows.MixtureTrainWindows`)."""
        train_windows: Any
        if self.sources:
            from baseline.data.mixture_windows import MixtureTrainWindows

            train_windows = MixtureTrainWindows(
                self.tokens,
                [source.train_ranges for source in self.sources],
                [source.weight for source in self.sources],
                seq_len=train.seq_len,
                stride=train.effective_stride,
                batch_size=train.batch_size,
                data_fraction=train.data_fraction,
                seed=seed,
                on_exhausted=self.on_exhausted,
                rank=rank,
                world_size=world_size,
            )
        else:
            train_windows = TrainWindows(
                self.tokens,
                self.train_ranges,
                seq_len=train.seq_len,
                stride=train.effective_stride,
                batch_size=train.batch_size,
                data_fraction=train.data_fraction,
                seed=seed,
                rank=rank,
                world_size=world_size,
            )
        eval_windows = EvalWindows(
            self.tokens,
            self.validation_ranges,
            seq_len=train.seq_len,
            batch_size=train.effective_eval_batch_size,
            rank=rank,
            world_size=world_size,
        )
        return train_windows, eval_windows

    def source_evals(self, train: TrainConfig, *, rank: int, world_size: int) -> list[SourceEval]:
        """This rank's validation windows of each source of a mixture (empty for one dataset)."""
        return [
            SourceEval(
                source.name,
                source.weight,
                EvalWindows(
                    self.tokens,
                    source.validation_ranges,
                    seq_len=train.seq_len,
                    batch_size=train.effective_eval_batch_size,
                    rank=rank,
                    world_size=world_size,
                ),
                source.tokens_per_byte,
            )
            for source in self.sources
        ]
