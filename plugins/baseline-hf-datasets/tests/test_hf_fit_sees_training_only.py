"""hf_text through the core's data preparation: the tokenizer's ``fit`` receives exactly the
training segments, streamed or not, split in order or shuffled (recorded, not assumed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("baseline_holdout")
pytest.importorskip("baseline_decoder")
pytest.importorskip("baseline_bpe")

from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.testing import (
    RecordingTokenizerPlugin,
    in_process_plugins,
    read_fit_recording,
    tiny_experiment_data,
)
from baseline_holdout import HoldoutSplit, HoldoutSplitConfig


@pytest.mark.parametrize("streaming", [False, True], ids=["arrow", "streaming"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
def test_fit_receives_exactly_the_training_rows(
    tmp_path: Path, streaming: bool, shuffle: bool
) -> None:
    rng = np.random.default_rng(3)
    lines = [f"line {i}: " + "ab cd ef " * int(rng.integers(1, 12)) for i in range(300)]
    corpus = tmp_path / "lines.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = tiny_experiment_data(tmp_path)
    data["dataset"] = {
        "name": "hf_text",
        "path": "text",
        "data_files": [str(corpus)],
        "streaming": streaming,
    }
    data["tokenizer"] = {"name": "recording", "record_path": str(tmp_path / "fit.jsonl")}
    data["split"].update(shuffle=shuffle, seed=11, train_fraction=0.7)
    data["train"].update(max_steps=2, num_threads=1)
    plugins = in_process_plugins(RecordingTokenizerPlugin)
    model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)

    sizes = np.array([len(line.encode("utf-8")) for line in lines], dtype=np.int64)
    plan = HoldoutSplit(HoldoutSplitConfig(train_fraction=0.7, seed=11, shuffle=shuffle)).split(
        sizes
    )
    [received] = read_fit_recording(tmp_path / "fit.jsonl").values()
    assert received == [lines[i] for i in plan.train]
    assert not set(received) & {lines[i] for i in plan.validation}
