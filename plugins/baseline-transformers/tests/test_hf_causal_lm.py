"""``hf_causal_lm`` and ``hf_tokenizer`` in real runs: training with diagnostics, export and
reload, fine-tuning a ``save_pretrained`` Llama, exact resume after SIGTERM."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from hf_support import hf_experiment_data, make_tokenizer_dir, save_tiny_llama

from baseline.config import LoggerConfig
from baseline.errors import RunInterrupted
from baseline.experiment.loading import experiment_from_data
from baseline.pipeline import model_pipeline
from baseline.plugins.discovery import default_plugins
from baseline.plugins.hookspecs import hookimpl
from baseline.plugins.protocols import MetricRecord, RunInfo
from baseline.testing import using_plugins
from baseline.tools.export import export_run
from baseline.tools.generation import SamplingOptions, generate
from baseline.tools.inference import LoadedRun, load_run

TEXT = "To be, or not to be, that is the question 7"


def run_pipeline(data: dict[str, Any]) -> Path:
    plugins = default_plugins()
    return model_pipeline(experiment_from_data(data, plugins.registry), plugins=plugins).run_dir


def assert_export_matches(run: LoadedRun, out: Path) -> None:
    """The exported directory loads with transformers alone and computes what the run does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    hf.eval()
    ids = run.tokenizer.encode_batch([TEXT])[0]
    assert tokenizer(TEXT, add_special_tokens=False)["input_ids"] == ids
    assert tokenizer.decode(ids) == TEXT
    tokens = torch.tensor([ids[: run.seq_len]])
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, run.model(tokens), atol=1e-5, rtol=0)
    prompt = TEXT[:6]
    text = generate(
        run, prompt, SamplingOptions(max_new_tokens=8, temperature=0, stop_at_segment_end=True)
    )[0]
    prompt_ids = torch.tensor([run.tokenizer.encode_batch([prompt])[0]])
    with torch.no_grad():
        generated = hf.generate(prompt_ids, max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(generated[0, prompt_ids.shape[1] :], skip_special_tokens=True) == text


def test_from_scratch_with_every_diagnostic_then_export(tmp_path: Path) -> None:
    data = hf_experiment_data(tmp_path)
    data["train"].update(max_steps=4)
    data["logging"]["console"] = {
        "enable_activation_norms": True,
        "enable_ln_grad_norms": True,
        "enable_attention_entropy": True,
        "diagnostics_every_n_steps": 2,
        "attention_entropy_every_n_steps": 2,
        "attention_entropy_token_cap": 8,
    }
    run_dir = run_pipeline(data)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*(r for r in records if r["phase"] == "diagnostics"))
    for name in ("activation_norm", "ln_weight_grad_norm", "attention_entropy"):
        assert {f"{name}_{p}" for p in ("first", "middle", "last")} <= keys
    assert any("global_grad_norm" in r for r in records)
    info = json.loads((run_dir / "inference_config.json").read_text())
    assert info["model"]["name"] == "hf_causal_lm" and info["tokenizer"]["file"] == "hf_tokenizer"

    run = load_run(run_dir)
    assert type(run.model.hf).__name__ == "LlamaForCausalLM"
    assert run.model.hf.config.vocab_size == run.tokenizer.vocab_size == 300
    assert run.model.hf.config.max_position_embeddings == 16
    assert run.model.hf.config.head_dim == 8  # derived from hidden_size 32 and 4 heads
    assert run.model.hf.model.layers[0].self_attn.q_proj.weight.shape == (32, 32)
    result = export_run(run_dir, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(result.files)
    assert_export_matches(run, tmp_path / "hf")


def test_fine_tune_a_save_pretrained_llama_and_export_it(tmp_path: Path) -> None:
    tokenizer_dir = make_tokenizer_dir(tmp_path / "tokenizer")
    pretrained = save_tiny_llama(tmp_path / "llama", vocab_size=300)
    data = hf_experiment_data(tmp_path, tokenizer_dir=tokenizer_dir)
    data["model"] = {"name": "hf_causal_lm", "pretrained": str(pretrained)}
    data["train"].update(max_steps=3)
    run_dir = run_pipeline(data)

    from safetensors.torch import load_file

    before = load_file(pretrained / "model.safetensors")
    run = load_run(run_dir)
    after = {k.removeprefix("hf."): v for k, v in run.model.state_dict().items()}
    # training started from the pretrained weights and changed them
    shared = [k for k in before if k in after]
    assert shared and all(before[k].shape == after[k].shape for k in shared)
    assert any(not torch.equal(before[k], after[k]) for k in shared)
    export_run(run_dir, tmp_path / "hf")
    assert_export_matches(run, tmp_path / "hf")


# -- exact resume after SIGTERM ---------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SignalAtStepConfig(LoggerConfig):
    step: int = 1


class SignalAtStep:
    """Sends SIGTERM to its own process when the train record of ``step`` is logged."""

    def __init__(self, config: SignalAtStepConfig) -> None:
        self.config = config

    def start(self, run: RunInfo) -> SignalAtStep:
        return self

    def log(self, record: MetricRecord) -> None:
        if record.phase == "train" and record.step == self.config.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def finish(self, exit_code: int) -> None:
        pass


class SignalPlugin:
    @hookimpl
    def baseline_register_loggers(self, register: Any) -> None:
        register("signal_at_step", SignalAtStepConfig, SignalAtStep)


def test_resume_after_sigterm_is_exact(tmp_path: Path) -> None:
    data = hf_experiment_data(tmp_path)
    data["model"]["config"]["attention_dropout"] = 0.1  # the RNG state must be restored too
    data["train"].update(max_steps=6)
    data["run"]["checkpoint_every_n_steps"] = 100
    data["logging"]["log_every_n_steps"] = 1
    with using_plugins(SignalPlugin()) as plugins:
        registry = plugins.registry
        straight = model_pipeline(experiment_from_data(data, registry), plugins=plugins).run_dir
        data["run"]["run_name"] = "interrupted"
        data["logging"]["provider"] = ["console", "signal_at_step"]
        data["logging"]["signal_at_step"] = {"step": 3}
        with pytest.raises(RunInterrupted) as caught:
            model_pipeline(experiment_from_data(data, registry), plugins=plugins)
        assert caught.value.exit_code == 128 + signal.SIGTERM
        data["logging"]["signal_at_step"]["step"] = -1
        data["run"]["resume_from_checkpoint"] = True
        resumed = model_pipeline(experiment_from_data(data, registry), plugins=plugins).run_dir
    left = torch.load(straight / "baseline_model.pt", weights_only=True)
    right = torch.load(resumed / "baseline_model.pt", weights_only=True)
    assert left.keys() == right.keys()
    assert all(torch.equal(left[k], right[k]) for k in left)
