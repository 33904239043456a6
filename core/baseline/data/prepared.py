"""The data a run trains on, as plain values: what the trainer needs and nothing else."""

from __future__ import annotations

import attrs
import numpy as np

from baseline.config import TrainConfig
from baseline.data.windows import EvalWindows, TrainWindows
from baseline.plugins.protocols import FitSource

TokenRange = tuple[int, int]


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

    @property
    def tokens_per_byte(self) -> float:
        """Validation tokens per validation byte: turns nats per token into bits per byte."""
        return self.validation_tokens / max(1, self.validation_bytes)

    def windows(
        self, train: TrainConfig, *, seed: int, rank: int, world_size: int
    ) -> tuple[TrainWindows, EvalWindows]:
        """This rank's training and validation windows under ``[train]``'s settings."""
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
