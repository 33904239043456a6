"""Hypothesis properties: config round trips and the loader's error contract."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baseline.errors import ConfigError
from baseline.experiment.loading import experiment_from_data, experiment_to_data
from baseline.plugins.discovery import default_plugins

REGISTRY = default_plugins().registry

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
fraction = st.floats(min_value=0.01, max_value=0.99)
path_text = st.text(alphabet="abcdefghij/_-.", min_size=1, max_size=20).map(
    lambda s: "/data/" + s.strip("/") + "x"
)


def experiment_data() -> st.SearchStrategy[dict[str, Any]]:
    heads = st.sampled_from([1, 2, 4, 8])
    return st.fixed_dictionaries(
        {
            "run": st.fixed_dictionaries(
                {},
                optional={
                    "project_name": st.text(min_size=1, max_size=10).filter(str.strip),
                    "run_name": st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}", fullmatch=True),
                    "checkpoint_every_n_steps": st.integers(0, 10_000),
                    "seed": st.integers(0, 2**31),
                    "requires": st.lists(
                        st.sampled_from(["baseline-bpe>=0.1", "baseline-text"]), max_size=2
                    ),
                },
            ),
            "dataset": st.fixed_dictionaries(
                {"name": st.just("local_text"), "path": path_text},
                optional={"segment_delimiter": st.text(min_size=1, max_size=4)},
            ),
            "tokenizer": st.fixed_dictionaries(
                {"name": st.just("bpe"), "vocab_path": path_text},
                optional={
                    "base_vocab_size": st.integers(257, 70_000),
                    "num_special_tokens": st.integers(1, 8),
                    "min_frequency": st.integers(1, 5),
                },
            ),
            "model": heads.flatmap(
                lambda h: st.fixed_dictionaries(
                    {
                        "name": st.just("baseline_decoder"),
                        "n_heads": st.just(h),
                        "d_model": st.integers(1, 64).map(lambda m: m * h),
                    },
                    optional={
                        "layers": st.integers(1, 24),
                        "dropout": st.floats(0.0, 0.9),
                        "bias": st.booleans(),
                        "tie_embeddings": st.booleans(),
                        "mlp_ratio": st.floats(0.5, 8.0),
                    },
                )
            ),
            "train": st.fixed_dictionaries(
                {},
                optional={
                    "epochs": st.integers(1, 100),
                    "learning_rate": st.floats(1e-6, 1.0),
                    "batch_size": st.integers(1, 4096),
                    "seq_len": st.integers(1, 4096),
                    "data_fraction": st.floats(0.01, 1.0),
                    "weight_decay": st.floats(0.0, 1.0),
                    "lr_schedule": st.sampled_from(["constant", "cosine"]),
                    "device": st.sampled_from(["auto", "cpu"]),
                    "grad_clip_norm": st.floats(0.0, 10.0),
                },
            ),
            "split": st.fixed_dictionaries(
                {"name": st.just("holdout")},
                optional={
                    "train_fraction": fraction,
                    "seed": st.integers(0, 2**31),
                    "shuffle": st.booleans(),
                },
            ),
            "logging": st.fixed_dictionaries(
                {"provider": st.sampled_from(["console", ["console"]])},
                optional={
                    "log_every_n_steps": st.integers(1, 1000),
                    "console": st.fixed_dictionaries({}, optional={"progress_bar": st.booleans()}),
                },
            ),
        }
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(experiment_data())
def test_unstructure_round_trip(data: dict[str, Any]) -> None:
    config = experiment_from_data(data, REGISTRY)
    plain = json.loads(json.dumps(experiment_to_data(config, REGISTRY)))
    assert experiment_from_data(plain, REGISTRY) == config
    assert experiment_to_data(experiment_from_data(plain, REGISTRY), REGISTRY) == plain


toml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), finite, st.text(max_size=8)
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _mutations(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = [(section, key) for section, table in base.items() for key in table]

    @st.composite
    def mutate(draw: st.DrawFn) -> dict[str, Any]:
        data = json.loads(json.dumps(base))
        for _ in range(draw(st.integers(1, 4))):
            section, key = draw(st.sampled_from([*keys, ("extra", "x")]))
            value = draw(toml_values)
            data.setdefault(section, {})
            if value is None:
                data[section].pop(key, None)
            elif isinstance(data[section], dict):
                data[section][key] = value
        if draw(st.booleans()):
            data[draw(st.text(max_size=6))] = draw(toml_values)
        return data

    return mutate()


def _base(tmp: Path) -> dict[str, Any]:
    from baseline.testing import tiny_experiment_data

    return tiny_experiment_data(tmp)


_BASE = _base(Path(tempfile.mkdtemp(prefix="baseline-hypothesis-")))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations(_BASE))
def test_random_documents_load_or_raise_config_error(data: dict[str, Any]) -> None:
    from baseline.experiment.validation import validate_experiment_config

    try:
        config = experiment_from_data(data, REGISTRY)
        validate_experiment_config(config, REGISTRY)
    except ConfigError as error:
        assert "\n" not in str(error)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8")))
def test_random_files_load_or_raise_config_error(content: bytes) -> None:
    from baseline.experiment.loading import load_experiment

    with tempfile.NamedTemporaryFile(suffix=".toml") as handle:
        handle.write(content)
        handle.flush()
        try:
            load_experiment(handle.name, REGISTRY)
        except ConfigError as error:
            assert str(error).startswith(handle.name) and "\n" not in str(error)
