"""``baseline export`` of ``baseline_decoder`` runs with ``bpe`` tokenizers: each exportable
variant, and the model of every shipped experiment file, loads with ``transformers`` alone
and computes what the run computes.

``nox -s hf_compat`` runs this file under the newest transformers 4.x and 5.x: the exported
``config.json`` and ``tokenizer_config.json`` carry what both versions read.
"""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

pytest.importorskip("baseline_decoder")
pytest.importorskip("baseline_bpe")

from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.testing import tiny_experiment_data
from baseline.tools.export import export_run
from baseline.tools.generation import SamplingOptions, generate
from baseline.tools.inference import load_run

#: Short enough that prompt + 50 new tokens fit in seq_len (GPT-2 has only that many positions).
PROMPT = "To be"
TEXT = "Now is the winter of our discontent, made glorious summer!  Ünïcode ✓ <|endofsegment|>"

#: variant name -> (the [model] keys, the transformers class it becomes)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "gpt2-default": ({}, "GPT2LMHeadModel"),
    "gpt2-bias-relu2-untied": (
        {"bias": True, "mlp": "relu2", "tie_embeddings": False},
        "GPT2LMHeadModel",
    ),
    "llama-style": (
        {"norm": "rmsnorm", "mlp": "swiglu", "position_encoding": "rope", "n_kv_heads": 1},
        "LlamaForCausalLM",
    ),
    "llama-bias-untied": (
        {
            "norm": "rmsnorm",
            "mlp": "swiglu",
            "position_encoding": "rope",
            "bias": True,
            "tie_embeddings": False,
            "rope_base": 500.0,
        },
        "LlamaForCausalLM",
    ),
    "qwen3-qk-norm": (
        {"norm": "rmsnorm", "mlp": "swiglu", "position_encoding": "rope", "qk_norm": True},
        "Qwen3ForCausalLM",
    ),
    # the decoder's default block with RoPE and q/k LayerNorm (experiments/tiny_shakespeare)
    "persimmon-qk-norm": (
        {"position_encoding": "rope", "qk_norm": True, "n_heads": 4},
        "PersimmonForCausalLM",
    ),
    "persimmon-bias-relu2-untied": (
        {
            "position_encoding": "rope",
            "qk_norm": True,
            "bias": True,
            "mlp": "relu2",
            "tie_embeddings": False,
            "rope_base": 500.0,
        },
        "PersimmonForCausalLM",
    ),
    "persimmon-no-qk-norm": ({"position_encoding": "rope"}, "PersimmonForCausalLM"),
}

#: The transformers class of each target of :func:`baseline_decoder.hf_export.target_architecture`.
CLASSES = {
    "gpt2": "GPT2LMHeadModel",
    "persimmon": "PersimmonForCausalLM",
    "llama": "LlamaForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}

EXPERIMENTS_DIR = Path(__file__).resolve().parents[3] / "experiments"
#: Every shipped experiment file: a new one joins the export test on its own.
EXPERIMENT_FILES = sorted(
    path.name for path in EXPERIMENTS_DIR.iterdir() if path.suffix in (".toml", ".py")
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One corpus, bpe file and token cache for every variant's run."""
    return tmp_path_factory.mktemp("decoder-export")


def train(
    workdir: Path, name: str, model: dict[str, Any], tokenizer: dict[str, Any] | None = None
) -> Path:
    """A few real training steps of a tiny ``baseline_decoder`` (hidden 32, 2 layers)."""
    data = tiny_experiment_data(workdir)
    data["run"]["run_name"] = name
    data["model"].update(model)
    data["tokenizer"].update(tokenizer or {})
    data["train"].update(epochs=1, max_steps=8, seq_len=64, batch_size=4, learning_rate=1e-2)
    plugins = default_plugins()
    return model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins).run_dir


def check_export(workdir: Path, run_dir: Path, expected_class: str) -> None:
    """Export ``run_dir``, load it with ``transformers`` alone and compare it with the run:
    the tokenizer's ids and text, the logits of a full window (fp32, ``atol`` 1e-5) and 50
    greedily generated tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = workdir / f"{run_dir.name}-hf"
    result = export_run(run_dir, out)
    assert {"config.json", "model.safetensors", "generation_config.json"} <= set(result.files)
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(result.files)
    run = load_run(run_dir)
    check_readable_by_both_versions(out, run.model.config)

    hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert type(hf).__name__ == expected_class
    hf.eval()

    # the tokenizer: the same ids, and back to the same text
    ids = run.tokenizer.encode_batch([TEXT])[0]
    assert tokenizer(TEXT)["input_ids"] == ids
    assert tokenizer.decode(ids) == TEXT == run.tokenizer.decode(ids)
    assert tokenizer.eos_token_id == run.end_of_segment_id == hf.config.eos_token_id

    # the logits, on every position of a full window
    tokens = torch.tensor([run.tokenizer.encode_batch([TEXT * 3])[0][: run.seq_len]])
    assert tokens.shape[1] == run.seq_len
    with torch.no_grad():
        expected = run.model(tokens)
        got = hf(tokens).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    # greedy generation: 50 tokens, or up to the end of the segment where both stop
    text = generate(
        run, PROMPT, SamplingOptions(max_new_tokens=50, temperature=0, stop_at_segment_end=True)
    )[0]
    prompt_ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    assert prompt_ids.shape[1] + 50 <= run.seq_len
    with torch.no_grad():
        generated = hf.generate(prompt_ids, max_new_tokens=50, do_sample=False)
    new = generated[0, prompt_ids.shape[1] :]
    assert tokenizer.decode(new, skip_special_tokens=True) == text
    assert len(new) == 50 or new[-1] == run.end_of_segment_id


def check_readable_by_both_versions(out: Path, config: Any) -> None:
    """What the other major version of transformers reads is written too: 4.x's top-level
    ``rope_theta`` (and Persimmon's ``partial_rotary_factor``) beside 5.x's
    ``rope_parameters``, and a tokenizer class 4.x knows."""
    hf_config = json.loads((out / "config.json").read_text())
    if config.position_encoding == "rope":
        assert hf_config["rope_theta"] == config.rope_base
        assert hf_config["rope_parameters"]["rope_theta"] == config.rope_base
        if hf_config["model_type"] == "persimmon":
            assert hf_config["partial_rotary_factor"] == 1.0
            assert hf_config["rope_parameters"]["partial_rotary_factor"] == 1.0
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exported_decoder_matches_the_run(workdir: Path, variant: str) -> None:
    model_keys, expected_class = VARIANTS[variant]
    check_export(workdir, train(workdir, variant, model_keys), expected_class)


def experiment_components(path: Path) -> tuple[Any, Any]:
    """The model and tokenizer configs an experiment file declares: the TOML's tables (the
    model's defaults filled in), or what a ``.py`` file's ``build_config()`` returns."""
    from baseline_decoder import BaselineDecoderConfig

    if path.suffix == ".py":
        spec = importlib.util.spec_from_file_location(f"experiment_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.build_config()
        tokenizer = {"name": "bpe", **attrs.asdict(config.tokenizer, recurse=False)}
        return config.model, tokenizer
    # The TOML's [model] table alone: loading the whole file would need every plugin it names
    # (its logger, say), and the paths it trains on.
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    model = dict(data["model"])
    if model.pop("name") != "baseline_decoder":
        return data["model"], data["tokenizer"]
    return BaselineDecoderConfig(**model), data["tokenizer"]


@pytest.mark.parametrize("experiment", EXPERIMENT_FILES)
def test_every_experiment_exports_like_the_run(tmp_path: Path, experiment: str) -> None:
    """The model of each shipped experiment, at tiny widths but with every architecture
    option of the file (norm, mlp, positions, q/k norm, key/value heads, bias, tying, RoPE
    base), is exportable and computes in transformers what the run computes."""
    from baseline_decoder import BaselineDecoderConfig
    from baseline_decoder.hf_export import target_architecture

    model, tokenizer = experiment_components(EXPERIMENTS_DIR / experiment)
    if not isinstance(model, BaselineDecoderConfig):
        name = model.get("name", "") if isinstance(model, dict) else type(model).__module__
        if name.startswith(("hf_", "baseline_transformers")):
            pytest.skip(f"{experiment}: model {name} is a transformers model already")
        pytest.fail(f"{experiment}: model {name!r} has no export test")
    tiny = attrs.evolve(model, d_model=32, layers=2)
    model_keys = {
        field.name: getattr(tiny, field.name)
        for field in attrs.fields(BaselineDecoderConfig)
        if getattr(tiny, field.name) is not None
    }
    assert tiny.n_heads == model.n_heads and tiny.kv_heads == model.kv_heads
    expected_class = CLASSES[target_architecture(tiny)]
    tokenizer_keys = {}
    if tokenizer.get("name") == "bpe":
        tokenizer_keys["num_special_tokens"] = tokenizer.get("num_special_tokens", 1)
    run_dir = train(tmp_path, Path(experiment).stem, model_keys, tokenizer_keys)
    check_export(tmp_path, run_dir, expected_class)
