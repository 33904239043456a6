"""Bad inputs: one line naming the key or path and the fix, exit status 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hf_support import TINY_LLAMA, hf_experiment_data, make_tokenizer_dir

from baseline.errors import BaselineError, ConfigError
from baseline.experiment.loading import experiment_from_data
from baseline.experiment.validation import validate_experiment_config
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.tools.export import export_run

BASELINE = [sys.executable, "-m", "baseline.cli"]


def validate(data: dict[str, Any]) -> None:
    plugins = default_plugins()
    validate_experiment_config(experiment_from_data(data, plugins.registry), plugins.registry)


def run(data: dict[str, Any]) -> None:
    plugins = default_plugins()
    model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins)


def one_line(error: BaselineError) -> str:
    text = str(error)
    assert "\n" not in text and error.exit_code == 2
    return text


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Any]:
    return hf_experiment_data(tmp_path)


# -- the model ----------------------------------------------------------------------------------


def test_unknown_model_type(data: dict[str, Any]) -> None:
    data["model"]["model_type"] = "lama"
    with pytest.raises(ConfigError) as caught:
        validate(data)
    text = one_line(caught.value)
    assert text.startswith("model.model_type: 'lama' is not a causal-LM architecture")
    assert "did you mean 'llama'" in text


def test_a_config_key_the_architecture_does_not_have(data: dict[str, Any]) -> None:
    data["model"]["config"]["hidden_sise"] = 32
    with pytest.raises(ConfigError) as caught:
        validate(data)
    text = one_line(caught.value)
    assert text.startswith("model.config.hidden_sise: LlamaConfig (llama) has no key 'hidden_sise'")
    assert "hidden_size" in text


@pytest.mark.parametrize("key", ["vocab_size", "max_position_embeddings"])
def test_run_owned_config_keys(data: dict[str, Any], key: str) -> None:
    data["model"]["config"][key] = 64
    with pytest.raises(ConfigError) as caught:
        validate(data)
    assert one_line(caught.value).startswith(f"model.config.{key}: is set by the run")


def test_model_type_and_pretrained_together(data: dict[str, Any], tmp_path: Path) -> None:
    data["model"]["pretrained"] = str(tmp_path)
    with pytest.raises(ConfigError) as caught:
        validate(data)
    assert "set exactly one of model_type" in one_line(caught.value)


def test_pretrained_dir_without_config_json(data: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    data["model"] = {"name": "hf_causal_lm", "pretrained": str(empty)}
    with pytest.raises(ConfigError) as caught:
        validate(data)
    assert one_line(caught.value) == (
        f"model.pretrained: {empty} has no config.json; give a directory written by "
        "save_pretrained (config.json and model.safetensors)"
    )


def test_a_hub_name_fails_fast_with_the_recipe(data: dict[str, Any]) -> None:
    data["model"] = {"name": "hf_causal_lm", "pretrained": "someone/tiny-llama"}
    with pytest.raises(ConfigError) as caught:
        validate(data)
    text = one_line(caught.value)
    assert text.startswith("model.pretrained: 'someone/tiny-llama' is not a local path")
    assert "A.from_pretrained('someone/tiny-llama').save_pretrained('DIR')" in text


# -- the tokenizer ------------------------------------------------------------------------------


def test_tokenizer_dir_without_tokenizer_json(data: dict[str, Any], tmp_path: Path) -> None:
    directory = tmp_path / "no-tokenizer"
    directory.mkdir()
    (directory / "tokenizer_config.json").write_text("{}")
    data["tokenizer"]["path"] = str(directory)
    with pytest.raises(ConfigError) as caught:
        run(data)
    assert one_line(caught.value).startswith(
        f"tokenizer.path: tokenizer 'hf_tokenizer' from baseline-transformers: {directory} has no tokenizer.json"
    )
    assert not (tmp_path / "runs" / "tiny").exists()


def test_tokenizer_without_eos(data: dict[str, Any], tmp_path: Path) -> None:
    data["tokenizer"]["path"] = str(make_tokenizer_dir(tmp_path / "no-eos", eos=None))
    with pytest.raises(ConfigError) as caught:
        run(data)
    assert one_line(caught.value).startswith(
        f"tokenizer.eos_token: tokenizer 'hf_tokenizer' from baseline-transformers: {tmp_path / 'no-eos'} has no EOS token; "
        "set tokenizer.eos_token"
    )
    data["tokenizer"]["eos_token"] = "</nope>"
    with pytest.raises(ConfigError) as caught:
        run(data)
    assert "'</nope>' is not a token of" in one_line(caught.value)


# -- export -------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BASELINE, *args], capture_output=True, text=True, timeout=120)


def test_export_of_a_run_without_final_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "unfinished"
    run_dir.mkdir()
    (run_dir / "baseline_checkpoint.pt").write_bytes(b"")
    result = cli("export", str(run_dir), str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr == f"error: {run_dir}: not a run directory (no run_config.json)\n"
    assert not (tmp_path / "out").exists()


def test_export_into_a_non_empty_dir_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("export", str(tmp_path / "any-run"), str(out))
    assert result.returncode == 2
    assert result.stderr == (
        f"error: OUT_DIR: {out} exists and is not empty; choose another OUT_DIR or pass "
        "--overwrite to replace a previous export\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "keep.txt").read_text() == "mine"


def test_a_failed_export_leaves_nothing(tmp_path: Path) -> None:
    """A variant without an equivalent fails after the run loaded: no OUT_DIR, no staging."""
    pytest.importorskip("baseline_decoder")
    pytest.importorskip("baseline_bpe")
    from baseline.testing import tiny_experiment_data

    data = tiny_experiment_data(tmp_path / "work")
    data["model"]["mlp"] = "swiglu"  # with layernorm: neither GPT-2, Persimmon nor Llama
    data["train"].update(epochs=1, max_steps=2)
    run(data)
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as caught:
        export_run(tmp_path / "work" / "runs" / "tiny", out)
    assert one_line(caught.value).startswith('model.mlp: swiglu with norm = "layernorm"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"mlp": "swiglu"}, "mlp"),
        ({"position_encoding": "rope", "mlp": "swiglu"}, "mlp"),
        ({"n_kv_heads": 2}, "n_kv_heads"),
        ({"position_encoding": "rope", "qk_norm": True, "n_kv_heads": 2}, "n_kv_heads"),
        # learned positions with q/k LayerNorm: no transformers architecture has both
        ({"qk_norm": True}, "qk_norm"),
        ({"norm": "rmsnorm"}, "position_encoding"),
        ({"norm": "rmsnorm", "position_encoding": "rope", "mlp": "gelu"}, "mlp"),
        (
            {
                "norm": "rmsnorm",
                "position_encoding": "rope",
                "mlp": "swiglu",
                "qk_norm": True,
                "bias": True,
            },
            "bias",
        ),
    ],
)
def test_decoder_variants_without_equivalent_name_the_option(
    options: dict[str, Any], key: str
) -> None:
    pytest.importorskip("baseline_decoder")
    from baseline_decoder import BaselineDecoderConfig
    from baseline_decoder.hf_export import target_architecture

    with pytest.raises(ConfigError) as caught:
        target_architecture(BaselineDecoderConfig(n_heads=4, **options))
    assert one_line(caught.value).startswith(f"model.{key}: ")
    assert "cannot be exported to the Hugging Face format" in str(caught.value)


def test_validate_reports_model_errors_on_the_command_line(tmp_path: Path) -> None:
    """`baseline validate` of a TOML file: one line with the file and key, exit 2."""
    pytest.importorskip("baseline_text")  # the experiment's dataset and split
    pytest.importorskip("baseline_holdout")
    tokenizer = make_tokenizer_dir(tmp_path / "tokenizer")
    toml = tmp_path / "hf.toml"
    config = ", ".join(f"{k} = {v}" for k, v in TINY_LLAMA.items())
    toml.write_text(
        f"""
[run]
project_name = "t"
[dataset]
name = "local_text"
path = "corpus.txt"
[tokenizer]
name = "hf_tokenizer"
path = "{tokenizer}"
[model]
name = "hf_causal_lm"
model_type = "llama"
config = {{ {config}, rope_thetaa = 3.0 }}
[train]
max_steps = 1
[split]
name = "holdout"
"""
    )
    result = cli("validate", str(toml))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"error: {toml}: model.config.rope_thetaa: LlamaConfig (llama) has no key 'rope_thetaa'"
    )


def test_pretrained_overrides_and_positions_are_checked(
    data: dict[str, Any], tmp_path: Path
) -> None:
    from hf_support import save_tiny_llama

    pretrained = save_tiny_llama(tmp_path / "llama", vocab_size=300)  # 64 positions
    data["model"] = {"name": "hf_causal_lm", "pretrained": str(pretrained), "config": {"x": 1}}
    with pytest.raises(ConfigError) as caught:
        validate(data)
    assert one_line(caught.value).startswith("model.config.x: LlamaConfig (llama) has no key 'x'")
    data["model"]["config"] = {}
    data["train"]["seq_len"] = 65
    with pytest.raises(ConfigError) as caught:
        run(data)
    assert one_line(caught.value).startswith(
        "train.seq_len: model 'hf_causal_lm' from baseline-transformers: must be <= 64, the "
        f"max_position_embeddings of {pretrained}"
    )
