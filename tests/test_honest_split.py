"""Nothing that learns from data sees a validation segment: recorded, not assumed.

The ``recording`` tokenizer of :mod:`baseline.testing` appends every text its ``fit``
receives to a file; each test compares that record with the split computed independently
from the dataset's segments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from core_support import write_toml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("baseline_text")
pytest.importorskip("baseline_holdout")

from baseline.data.preparation import prepare_data
from baseline.errors import ConfigError
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.components import Components
from baseline.testing import (
    RecordingTokenizer,
    RecordingTokenizerConfig,
    RecordingTokenizerPlugin,
    in_process_plugins,
    read_fit_recording,
    tiny_experiment_data,
)
from baseline_holdout import HoldoutSplit, HoldoutSplitConfig
from baseline_text import LocalTextDataset, LocalTextDatasetConfig

BIN = Path(sys.executable).parent
WORDS = [
    "thou",
    "art",
    "more",
    "lovely",
    "and",
    "more",
    "temperate",
    "rough",
    "winds",
    "do",
    "shake",
    "the",
    "darling",
    "buds",
]


def unique_corpus(count: int = 240, seed: int = 0) -> list[str]:
    """Segments of varied length, each one unique (its index is in it)."""
    rng = np.random.default_rng(seed)
    return [
        f"{index}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(3, 40))))
        for index in range(count)
    ]


def recording_experiment(tmp_path: Path, *, shuffle: bool) -> dict[str, Any]:
    data = tiny_experiment_data(tmp_path, corpus="\n\n".join(unique_corpus()))
    data["tokenizer"] = {"name": "recording", "record_path": str(tmp_path / "fit.jsonl")}
    data["split"].update(shuffle=shuffle, seed=5, train_fraction=0.75)
    data["train"].update(max_steps=2, batch_size=4)
    return data


def expected_split(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Training and validation texts, from the dataset and the split adapters themselves."""
    dataset = LocalTextDataset(
        LocalTextDatasetConfig(
            path=data["dataset"]["path"], segment_delimiter=data["dataset"]["segment_delimiter"]
        )
    )
    segments = list(dataset.segments())
    split_options = {k: v for k, v in data["split"].items() if k != "name"}
    sizes = np.array([len(s.encode("utf-8")) for s in segments], dtype=np.int64)
    plan = HoldoutSplit(HoldoutSplitConfig(**split_options)).split(sizes)
    return [segments[i] for i in plan.train], [segments[i] for i in plan.validation]


@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
def test_fit_receives_exactly_the_training_segments(tmp_path: Path, shuffle: bool) -> None:
    data = recording_experiment(tmp_path, shuffle=shuffle)
    plugins = in_process_plugins(RecordingTokenizerPlugin)
    result = model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    train, validation = expected_split(data)
    [received] = read_fit_recording(tmp_path / "fit.jsonl").values()
    assert received == train
    assert not set(received) & set(validation)
    run_data = json.loads((result.run_dir / "run_config.json").read_text())["data"]
    assert (run_data["train_segments"], run_data["validation_segments"]) == (
        len(train),
        len(validation),
    )


def test_a_second_run_fits_again_on_the_training_segments_only(tmp_path: Path) -> None:
    data = recording_experiment(tmp_path, shuffle=True)
    plugins = in_process_plugins(RecordingTokenizerPlugin)
    for name in ("first", "second"):  # the second reuses the token cache
        data["run"]["run_name"] = name
        model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    train, _ = expected_split(data)
    [received] = read_fit_recording(tmp_path / "fit.jsonl").values()
    assert received == train + train


def _write_test_distribution(site: Path) -> None:
    """An installed distribution (on PYTHONPATH) whose entry point registers ``recording``."""
    info = site / "baseline_recording_test-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: baseline-recording-test\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[baseline.plugins]\nrecording = baseline.testing:RecordingTokenizerPlugin\n"
    )


def test_under_two_processes_no_rank_fits_on_validation(tmp_path: Path) -> None:
    data = recording_experiment(tmp_path, shuffle=True)
    data["train"].update(batch_size=4, num_threads=1)
    write_toml(tmp_path / "exp.toml", data)
    site = tmp_path / "site"
    _write_test_distribution(site)
    env = {k: v for k, v in os.environ.items() if k not in ("BASELINE_DEBUG", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(site)])))
    completed = subprocess.run(
        [str(BIN / "baseline-run"), "exp.toml", "--nproc", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    train, validation = expected_split(data)
    recorded = read_fit_recording(tmp_path / "fit.jsonl")
    assert len(recorded) == 2  # both ranks prepared their data
    for received in recorded.values():
        assert received == train
        assert not set(received) & set(validation)


class ListDataset:
    """Segments from a list, with no fingerprint (nothing is cached)."""

    segment_delimiter = "\n\n"

    def __init__(self, segments: list[str]) -> None:
        self._segments = segments

    def segments(self) -> Iterator[str]:
        yield from self._segments


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    segments=st.lists(
        st.text(min_size=1, max_size=80).filter(str.strip), min_size=2, max_size=60, unique=True
    ),
    fraction=st.floats(0.05, 0.95),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_property_fit_never_sees_a_validation_segment(
    tmp_path: Path, segments: list[str], fraction: float, shuffle: bool, seed: int
) -> None:
    # A fresh directory per call: hypothesis may run one example twice (a replay from its
    # database), and the recording tokenizer appends to its file.
    workdir = Path(tempfile.mkdtemp(prefix="case-", dir=tmp_path))
    data = tiny_experiment_data(workdir)
    data["train"].update(seq_len=2, batch_size=1, stride=1)
    plugins = in_process_plugins(RecordingTokenizerPlugin)
    config = experiment_from_data(data, plugins.registry)
    record = workdir / "fit.jsonl"
    split = HoldoutSplit(HoldoutSplitConfig(train_fraction=fraction, shuffle=shuffle, seed=seed))
    components = Components(
        dataset=ListDataset(segments),
        tokenizer=RecordingTokenizer(RecordingTokenizerConfig(record_path=str(record))),
        model=None,  # type: ignore[arg-type]  # not built while preparing data
        split=split,
    )
    sizes = np.array([len(s.encode("utf-8")) for s in segments], dtype=np.int64)
    plan = split.split(sizes)
    try:
        prepared = prepare_data(config, components, {"dataset": {"name": "list"}})
    except ConfigError:  # a side too small for a window: refused after fitting
        prepared = None
    [received] = read_fit_recording(record).values()
    assert received == [segments[i] for i in plan.train]
    assert not set(received) & {segments[i] for i in plan.validation}
    if prepared is not None:
        delimiter_bytes = len(ListDataset.segment_delimiter.encode())
        assert prepared.validation_bytes == int(
            sizes[plan.validation].sum() + len(plan.validation) * delimiter_bytes
        )


def test_a_copy_of_the_corpus_elsewhere_is_the_same_dataset_for_a_fit_record(
    tmp_path: Path,
) -> None:
    import shutil

    plugins = in_process_plugins()
    data = tiny_experiment_data(tmp_path, corpus="\n\n".join(unique_corpus()))
    data["train"]["max_steps"] = 1
    model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
    copy = tmp_path / "elsewhere" / "corpus.txt"
    copy.parent.mkdir()
    shutil.copy(data["dataset"]["path"], copy)
    data["dataset"]["path"] = str(copy)
    data["split"]["train_fraction"] = 0.6  # its validation side was training text before
    data["run"]["run_name"] = "second"
    with pytest.raises(ConfigError, match="was fitted on a different split of this dataset"):
        model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)
