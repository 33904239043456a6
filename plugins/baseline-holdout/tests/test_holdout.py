"""The holdout split: contract, determinism and fractions (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import baseline_holdout
from baseline.errors import ConfigError
from baseline.experiment.loading import structure
from baseline.testing import check_split_adapter, in_process_plugins
from baseline_holdout import HoldoutSplit, HoldoutSplitConfig


def split(**kwargs: object) -> HoldoutSplit:
    return HoldoutSplit(HoldoutSplitConfig(**kwargs))  # type: ignore[arg-type]


def test_contract() -> None:
    check_split_adapter(split(), [5, 7, 3, 9, 2, 8, 4])
    check_split_adapter(split(shuffle=True, seed=3), [5, 7, 3, 9, 2, 8, 4])


def test_unshuffled_holdout_keeps_the_tail_for_validation() -> None:
    plan = split(train_fraction=0.5).split(np.full(10, 10))
    assert plan.train.tolist() == [0, 1, 2, 3, 4] and plan.validation.tolist() == [5, 6, 7, 8, 9]


def test_seed_changes_a_shuffled_split() -> None:
    counts = np.full(50, 10)
    a, b = split(shuffle=True, seed=1).split(counts), split(shuffle=True, seed=2).split(counts)
    assert a.validation.tolist() != b.validation.tolist()


def test_needs_two_segments() -> None:
    with pytest.raises(ConfigError, match="holdout needs at least 2 segments"):
        split().split(np.array([100]))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2.0])
def test_train_fraction_range(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"split.train_fraction: must be in \(0.0, 1.0\)"):
        structure({"train_fraction": fraction}, HoldoutSplitConfig, "split")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 500), min_size=2, max_size=200),
    st.floats(0.05, 0.95),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_split_properties(counts: list[int], fraction: float, seed: int, shuffle: bool) -> None:
    adapter = split(train_fraction=fraction, seed=seed, shuffle=shuffle)
    plan = check_split_adapter(adapter, counts)  # disjoint, in range, both non-empty, deterministic
    assert sorted([*plan.train.tolist(), *plan.validation.tolist()]) == list(range(len(counts)))
    array = np.asarray(counts)
    train_tokens = array[plan.train].sum()
    # The cut is at the first segment boundary at or past the target (one segment of slack).
    assert train_tokens >= min(fraction * array.sum(), array.sum() - array[plan.validation].max())
    if not shuffle:
        assert plan.train.max() < plan.validation.min()


def test_registers_holdout() -> None:
    assert in_process_plugins(baseline_holdout, installed=False).registry.names("split") == [
        "holdout"
    ]
