"""hf_text through the whole pipeline, one short training run per source kind.

Needs the standard plugins (bpe, baseline_decoder, holdout); the nox ``plugin`` session
installs this plugin alone with the core, and then these tests are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

pytest.importorskip("baseline_bpe")
pytest.importorskip("baseline_decoder")
pytest.importorskip("baseline_holdout")

from hf_sources import SOURCE_KINDS, Source

from baseline.experiment.loading import experiment_from_data, load_experiment
from baseline.experiment.validation import validate_experiment_config
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.testing import tiny_experiment_data
from baseline_hf_datasets import HFTextDatasetConfig
from baseline_hf_datasets.dataset import HFTextDataset

EXPERIMENT = Path(__file__).resolve().parents[3] / "experiments" / "tiny_shakespeare_hf.toml"


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_trains_end_to_end(tmp_path: Path, sources: dict[str, Source], kind: str) -> None:
    data: dict[str, Any] = tiny_experiment_data(tmp_path)
    data["dataset"] = {"name": "hf_text", **sources[kind].table}
    # A few steps: one epoch over a quarter of the windows, single-threaded kernels.
    data["train"].update(epochs=1, data_fraction=0.25, num_threads=1)
    plugins = default_plugins()  # the installed plugins, this one included
    config = experiment_from_data(data, plugins.registry)
    assert isinstance(config.dataset, HFTextDatasetConfig)
    result = model_pipeline(config, plugins=plugins)
    assert result.steps > 0
    assert (result.run_dir / "baseline_model.pt").is_file()
    assert (result.run_dir / "metrics.jsonl").stat().st_size > 0


@pytest.mark.skipif(not EXPERIMENT.is_file(), reason="runs from a checkout of the repository")
def test_tiny_shakespeare_hf_experiment_reads_its_lines() -> None:
    registry = default_plugins().registry
    config = load_experiment(EXPERIMENT, registry)
    validate_experiment_config(config, registry)
    dataset = config.dataset
    assert isinstance(dataset, HFTextDatasetConfig)
    assert dataset.base_dir == str(EXPERIMENT.parent)
    first = HFTextDataset(attrs.evolve(dataset, streaming=True, max_segments=3))
    assert list(first.segments()) == [
        "First Citizen:",
        "Before we proceed any further, hear me speak.",
        "All:",
    ]
