"""baseline plugin: split ``holdout``, a deterministic train/validation holdout by segment."""

from __future__ import annotations

import attrs
import numpy as np

from baseline.config import SplitConfig, at_least, between
from baseline.errors import ConfigError
from baseline.plugins.hookspecs import Register, hookimpl
from baseline.plugins.protocols import SplitPlan

__all__ = ["HoldoutSplit", "HoldoutSplitConfig"]


@attrs.frozen(kw_only=True)
class HoldoutSplitConfig(SplitConfig):
    """Hold out whole segments for validation.

    Segments are taken in corpus order (or in an order shuffled by ``seed``) until
    ``train_fraction`` of the corpus' UTF-8 bytes are in the training split; the rest
    validate. The split is decided before tokenization (the tokenizer is then fitted on the
    training side only), so it does not depend on the tokenizer.
    """

    train_fraction: float = attrs.field(
        default=0.9, validator=between(0.0, 1.0, high_inclusive=False)
    )
    seed: int = attrs.field(default=42, validator=at_least(0))
    shuffle: bool = False


class HoldoutSplit:
    """Splits segments by cumulative UTF-8 size."""

    def __init__(self, config: HoldoutSplitConfig) -> None:
        self.config = config

    def split(self, segment_byte_counts: np.ndarray) -> SplitPlan:
        """Return sorted train and validation segment indices; each side gets >= 1 segment."""
        counts = np.asarray(segment_byte_counts, dtype=np.int64)
        if len(counts) < 2:
            raise ConfigError(
                f"holdout needs at least 2 segments, the dataset has {len(counts)}; "
                "set dataset.segment_delimiter so the text splits into segments",
                key_path="split",
            )
        if not self.config.shuffle:
            # The common case, without per-segment copies: corpora of millions of segments.
            cut = self._cut(np.cumsum(counts))
            return SplitPlan(
                train=np.arange(cut, dtype=np.int64),
                validation=np.arange(cut, len(counts), dtype=np.int64),
            )
        order = np.random.default_rng(self.config.seed).permutation(len(counts))
        cut = self._cut(np.cumsum(counts[order]))
        return SplitPlan(train=np.sort(order[:cut]), validation=np.sort(order[cut:]))

    def _cut(self, cumulative: np.ndarray) -> int:
        """Segments (in order) that the train side gets: at least one, leaving one."""
        target = self.config.train_fraction * cumulative[-1]
        cut = int(np.searchsorted(cumulative, target, side="left")) + 1
        return min(max(cut, 1), len(cumulative) - 1)


@hookimpl
def baseline_register_splits(register: Register) -> None:
    """Register the ``holdout`` split."""
    register("holdout", HoldoutSplitConfig, HoldoutSplit)
