"""``baseline_decoder`` onto the equivalent ``transformers`` architecture (``baseline export``).

Imports ``transformers`` (an optional dependency: ``pip install baseline-decoder[hf]``). Four
targets cover the variants whose computation ``transformers`` has:

- ``GPT2LMHeadModel``: LayerNorm, a GELU (tanh) or squared-ReLU MLP, learned positions,
  one key/value head per query head, no q/k norm. Missing biases are written as zeros.
- ``PersimmonForCausalLM``: LayerNorm, a GELU (tanh) or squared-ReLU MLP, RoPE on every
  channel (``partial_rotary_factor = 1``), one key/value head per query head, with or without
  q/k LayerNorm per head before RoPE (``qk_layernorm``; the decoder's default). Persimmon
  always has biases (linear layers and norms): missing ones are written as zeros.
- ``LlamaForCausalLM``: RMSNorm, SwiGLU, RoPE, any key/value head count, no q/k norm;
  ``bias`` maps to ``attention_bias`` and ``mlp_bias``.
- ``Qwen3ForCausalLM``: Llama plus q/k RMSNorm per head before RoPE (the decoder's
  placement), without biases (Qwen3's MLP has none).

Any other combination raises a one-line ``ConfigError`` naming the option: learned positions
with q/k norm or with ``norm = "rmsnorm"``, grouped-query attention or SwiGLU with LayerNorm,
GELU or squared ReLU with RMSNorm, and biases with RMSNorm q/k norm.

``config.json`` is readable by transformers 4.x and 5.x alike: the RoPE settings are written
both as 5.x's ``rope_parameters`` and as 4.x's top-level ``rope_theta`` (and, for Persimmon,
``partial_rotary_factor``), so neither version falls back to its default base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from baseline.errors import ConfigError
from baseline.plugins.protocols import ExportInfo
from baseline_decoder import BaselineDecoderConfig

#: RMSNorm and LayerNorm epsilon of the decoder (torch's defaults as used in model.py).
NORM_EPS = 1e-5


def target_architecture(config: BaselineDecoderConfig) -> str:
    """``gpt2``, ``persimmon``, ``llama`` or ``qwen3``; a ``ConfigError`` naming the option
    without one."""

    def refuse(key: str, why: str) -> ConfigError:
        return ConfigError(
            f"{why}; no transformers architecture computes this combination, so the run "
            "cannot be exported to the Hugging Face format",
            key_path=f"model.{key}",
        )

    if config.norm == "layernorm":
        if config.mlp == "swiglu":
            raise refuse("mlp", 'swiglu with norm = "layernorm" (GPT-2 or Persimmon style)')
        if config.kv_heads != config.n_heads:
            raise refuse("n_kv_heads", 'grouped-query attention with norm = "layernorm"')
        if config.position_encoding == "rope":
            return "persimmon"
        if config.qk_norm:
            raise refuse(
                "qk_norm", 'qk_norm with learned positions and norm = "layernorm" (GPT-2 style)'
            )
        return "gpt2"
    if config.position_encoding != "rope":
        raise refuse("position_encoding", 'learned positions with norm = "rmsnorm"')
    if config.mlp != "swiglu":
        raise refuse("mlp", f'mlp = {config.mlp!r} with norm = "rmsnorm" (Llama style)')
    if config.qk_norm:
        if config.bias:
            raise refuse("bias", "bias = true with qk_norm = true (Qwen3 has no MLP biases)")
        return "qwen3"
    return "llama"


def export_decoder(
    model: torch.nn.Module, config: BaselineDecoderConfig, directory: Path, info: ExportInfo
) -> None:
    """Write ``model`` (a trained ``DecoderModel``) as the equivalent ``transformers`` model."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "exporting baseline_decoder needs transformers: "
            "pip install -c constraints.txt 'baseline-decoder[hf]' (or baseline-transformers)",
            key_path="model.name",
        ) from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    architecture = target_architecture(config)
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if architecture == "gpt2":
        hf_config: Any = transformers.GPT2Config(
            bos_token_id=None,  # GPT-2's 50256 lies outside a small vocabulary
            eos_token_id=info.end_of_segment_id,
            vocab_size=info.vocab_size,
            n_positions=info.seq_len,
            n_embd=config.d_model,
            n_layer=config.layers,
            n_head=config.n_heads,
            n_inner=config.mlp_hidden,
            activation_function="gelu_new" if config.mlp == "gelu" else "relu2",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            layer_norm_epsilon=NORM_EPS,
            tie_word_embeddings=config.tie_embeddings,
        )
        weights = _gpt2_weights(state, config)
        model_cls: Any = transformers.GPT2LMHeadModel
    elif architecture == "persimmon":
        hf_config = transformers.PersimmonConfig(
            vocab_size=info.vocab_size,
            hidden_size=config.d_model,
            intermediate_size=config.mlp_hidden,
            num_hidden_layers=config.layers,
            num_attention_heads=config.n_heads,
            # F.gelu(approximate="tanh") exactly (gelu_new computes the same formula by hand)
            hidden_act="gelu_pytorch_tanh" if config.mlp == "gelu" else "relu2",
            max_position_embeddings=info.seq_len,
            layer_norm_eps=NORM_EPS,
            qk_layernorm=config.qk_norm,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            tie_word_embeddings=config.tie_embeddings,
            # 5.x reads rope_parameters, 4.x the top-level keys (each ignores the other's)
            rope_parameters=_rope_parameters(config, partial_rotary_factor=1.0),
            **_v4_rope_keys(config, partial_rotary_factor=1.0),
        )
        weights = _persimmon_weights(state, config)
        model_cls = transformers.PersimmonForCausalLM
    else:
        common = {
            "vocab_size": info.vocab_size,
            "hidden_size": config.d_model,
            "intermediate_size": config.mlp_hidden,
            "num_hidden_layers": config.layers,
            "num_attention_heads": config.n_heads,
            "num_key_value_heads": config.kv_heads,
            "head_dim": config.head_size,
            "hidden_act": "silu",
            "max_position_embeddings": info.seq_len,
            "rms_norm_eps": NORM_EPS,
            "rope_parameters": _rope_parameters(config),
            **_v4_rope_keys(config),
            "attention_bias": config.bias,
            "attention_dropout": 0.0,
            "tie_word_embeddings": config.tie_embeddings,
        }
        if architecture == "llama":
            hf_config = transformers.LlamaConfig(mlp_bias=config.bias, **common)
            model_cls = transformers.LlamaForCausalLM
        else:
            hf_config = transformers.Qwen3Config(use_sliding_window=False, **common)
            model_cls = transformers.Qwen3ForCausalLM
        weights = _llama_weights(state, config)
    hf_config.bos_token_id = None
    hf_config.eos_token_id = info.end_of_segment_id
    hf_config.pad_token_id = info.end_of_segment_id
    hf_model = model_cls(hf_config).float()
    missing, unexpected = hf_model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if config.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(
            f"baseline_decoder -> {architecture}: missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}"
        )
    if config.tie_embeddings:
        hf_model.tie_weights()
    hf_model.generation_config = transformers.GenerationConfig(
        eos_token_id=info.end_of_segment_id, pad_token_id=info.end_of_segment_id
    )
    hf_model.save_pretrained(directory)
    _write_rope_for_both_versions(directory / "config.json", architecture, config)


def _rope_parameters(config: BaselineDecoderConfig, **extra: float) -> dict[str, Any]:
    """transformers 5.x's ``rope_parameters``: plain RoPE with the decoder's base."""
    return {"rope_type": "default", "rope_theta": config.rope_base, **extra}


def _v4_rope_keys(config: BaselineDecoderConfig, **extra: float) -> dict[str, Any]:
    """The same settings as transformers 4.x's config classes take them: top-level keys."""
    return {"rope_theta": config.rope_base, **extra}


def _write_rope_for_both_versions(
    path: Path, architecture: str, config: BaselineDecoderConfig
) -> None:
    """Add 4.x's top-level RoPE keys to a ``config.json`` written by 5.x (which keeps only
    ``rope_parameters``): without them 4.x silently uses its defaults (base 10000; Persimmon
    also rotates only half of each head)."""
    if architecture == "gpt2":
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    extra = {"partial_rotary_factor": 1.0} if architecture == "persimmon" else {}
    for key, value in _v4_rope_keys(config, **extra).items():
        data.setdefault(key, value)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _gpt2_weights(state: dict[str, torch.Tensor], config: BaselineDecoderConfig) -> dict[str, Any]:
    """GPT-2 names; its ``Conv1D`` layers store ``(in, out)``, the transpose of ``Linear``."""
    d = config.d_model

    def bias(name: str, size: int) -> torch.Tensor:
        return state.get(name, torch.zeros(size))

    out: dict[str, Any] = {
        "transformer.wte.weight": state["token_embedding.weight"],
        "transformer.wpe.weight": state["position_embedding.weight"],
        "transformer.ln_f.weight": state["ln_final.weight"],
        "transformer.ln_f.bias": bias("ln_final.bias", d),
        "lm_head.weight": state["lm_head.weight"],
    }
    for i in range(config.layers):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        pairs = {
            "ln_1": "ln_attn",
            "ln_2": "ln_mlp",
            "attn.c_attn": "attn.qkv",
            "attn.c_proj": "attn.proj",
            "mlp.c_fc": "mlp.fc",
            "mlp.c_proj": "mlp.proj",
        }
        for hf_name, name in pairs.items():
            weight = state[f"{src}{name}.weight"]
            is_norm = hf_name.startswith("ln_")
            out[f"{dst}{hf_name}.weight"] = weight if is_norm else weight.t().contiguous()
            out[f"{dst}{hf_name}.bias"] = bias(f"{src}{name}.bias", weight.shape[0])
    return out


def _llama_weights(state: dict[str, torch.Tensor], config: BaselineDecoderConfig) -> dict[str, Any]:
    """Llama/Qwen3 names; the fused ``qkv`` and ``fc`` (gate rows, then up rows) are split."""
    q_width, kv_width = config.d_model, config.kv_heads * config.head_size
    hidden = config.mlp_hidden
    out: dict[str, Any] = {
        "model.embed_tokens.weight": state["token_embedding.weight"],
        "model.norm.weight": state["ln_final.weight"],
        "lm_head.weight": state["lm_head.weight"],
    }
    for i in range(config.layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        out[f"{dst}input_layernorm.weight"] = state[f"{src}ln_attn.weight"]
        out[f"{dst}post_attention_layernorm.weight"] = state[f"{src}ln_mlp.weight"]
        for kind in ("weight", "bias"):
            qkv = state.get(f"{src}attn.qkv.{kind}")
            if qkv is None:
                continue
            q, k, v = qkv.split((q_width, kv_width, kv_width), dim=0)
            out[f"{dst}self_attn.q_proj.{kind}"] = q
            out[f"{dst}self_attn.k_proj.{kind}"] = k
            out[f"{dst}self_attn.v_proj.{kind}"] = v
            out[f"{dst}self_attn.o_proj.{kind}"] = state[f"{src}attn.proj.{kind}"]
            gate, up = state[f"{src}mlp.fc.{kind}"].split((hidden, hidden), dim=0)
            out[f"{dst}mlp.gate_proj.{kind}"] = gate
            out[f"{dst}mlp.up_proj.{kind}"] = up
            out[f"{dst}mlp.down_proj.{kind}"] = state[f"{src}mlp.proj.{kind}"]
        if config.qk_norm:
            out[f"{dst}self_attn.q_norm.weight"] = state[f"{src}attn.q_norm.weight"]
            out[f"{dst}self_attn.k_norm.weight"] = state[f"{src}attn.k_norm.weight"]
    return out


def _persimmon_weights(
    state: dict[str, torch.Tensor], config: BaselineDecoderConfig
) -> dict[str, Any]:
    """Persimmon names. Its fused ``query_key_value`` holds each head's q, k and v rows
    together (``(heads, 3, head_dim)``), the decoder's ``qkv`` all q rows, then all k, then
    all v (``(3, heads, head_dim)``); the rows are regrouped. Absent biases become zeros."""
    d, heads, head = config.d_model, config.n_heads, config.head_size

    def bias(name: str, size: int) -> torch.Tensor:
        return state.get(name, torch.zeros(size))

    def per_head(rows: torch.Tensor) -> torch.Tensor:
        grouped = rows.reshape(3, heads, head, *rows.shape[1:]).transpose(0, 1)
        return grouped.reshape(rows.shape).contiguous()

    out: dict[str, Any] = {
        "model.embed_tokens.weight": state["token_embedding.weight"],
        "model.final_layernorm.weight": state["ln_final.weight"],
        "model.final_layernorm.bias": bias("ln_final.bias", d),
        "lm_head.weight": state["lm_head.weight"],
    }
    for i in range(config.layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        pairs = {
            "input_layernorm": ("ln_attn", d),
            "post_attention_layernorm": ("ln_mlp", d),
            "self_attn.query_key_value": ("attn.qkv", 3 * d),
            "self_attn.dense": ("attn.proj", d),
            "mlp.dense_h_to_4h": ("mlp.fc", config.mlp_hidden),
            "mlp.dense_4h_to_h": ("mlp.proj", d),
        }
        if config.qk_norm:
            pairs["self_attn.q_layernorm"] = ("attn.q_norm", head)
            pairs["self_attn.k_layernorm"] = ("attn.k_norm", head)
        for hf_name, (name, size) in pairs.items():
            weight = state[f"{src}{name}.weight"]
            bias_ = bias(f"{src}{name}.bias", size)
            if name == "attn.qkv":
                weight, bias_ = per_head(weight), per_head(bias_)
            out[f"{dst}{hf_name}.weight"] = weight
            out[f"{dst}{hf_name}.bias"] = bias_
    return out
