"""Declarative Hugging Face <-> neuroal_jax tables, one per family.

Each table says which HF module holds each top-level param, where the decoder layers live,
which HF config attributes map to which `ModelConfig` field, which attributes must have one
supported value, and which are harmless (dropouts, init scales). Anything else in a config is
rejected by name. A few transforms (`derive`/`underive`) cover what is not a plain renaming.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from neuroal_jax.config import ModelConfig
from neuroal_jax.errors import UsageError
from neuroal_jax.models import gemma3

#: Attributes of every HF config that do not change the forward pass.
GENERIC_IGNORED = frozenset({
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache",
    "initializer_range", "attention_dropout", "_name_or_path", "output_attentions",
    "output_hidden_states", "return_dict", "tokenizer_class", "id2label", "label2id",
    "is_encoder_decoder", "_attn_implementation_autoset",
})
COMMON_FIELDS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "intermediate_size": "intermediate_size",
    "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
    "num_key_value_heads": "num_kv_heads", "head_dim": "head_dim",
    "max_position_embeddings": "max_position_embeddings", "rms_norm_eps": "norm_eps",
    "hidden_act": "hidden_act", "tie_word_embeddings": "tie_word_embeddings",
    "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id",
}
#: HF module names of the top-level params in the Llama layout.
LLAMA_TOP = {"embed": "model.embed_tokens", "final_norm": "model.norm", "lm_head": "lm_head"}
ROPE_TYPES = ("default", "linear", "llama3")


def _no_change(_):
    return {}


@dataclass(frozen=True)
class HFTable:
    family: str
    model_types: tuple[str, ...]
    architecture: str
    blocks: str  # HF prefix of the decoder layers, e.g. "model.layers"
    top: dict[str, str]  # our top-level name -> HF module name
    fields: dict[str, str]  # HF attribute -> ModelConfig field
    fixed: dict[str, object] = field(default_factory=dict)  # HF attribute -> the only supported value
    ignored: frozenset[str] = frozenset()
    defaults: dict[str, object] = field(default_factory=dict)  # ModelConfig field -> value when absent
    rope_keys: frozenset[str] = frozenset({"rope_theta", "rope_scaling", "rope_parameters"})
    derive: Callable[[dict], dict] = _no_change  # HF config -> extra ModelConfig fields
    underive: Callable[[ModelConfig], dict] = _no_change  # ModelConfig -> extra HF attributes


# ---------------------------------------------------------------- rope transforms

def rope_from_hf(hf: dict, params_key: str | None = None) -> tuple[float, tuple | None, dict]:
    """(theta, scaling as sorted pairs or None, remaining rope params) from v4 or v5 style configs."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict) and params_key is not None:
        params = params.get(params_key)
    if isinstance(params, dict):
        params = dict(params)
        theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    else:
        theta, params = hf.get("rope_theta", 10000.0), dict(hf.get("rope_scaling") or {})
    extra = {k: params.pop(k) for k in ("partial_rotary_factor",) if k in params}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise UsageError(f"unsupported config attribute rope_scaling.rope_type={kind!r} "
                         f"(supported: {list(ROPE_TYPES)})")
    if kind == "default":
        return float(theta), None, extra
    params.pop("type", None)
    params["rope_type"] = kind
    return float(theta), tuple(sorted(params.items())), extra


def rope_to_hf(cfg: ModelConfig) -> dict:
    return {"rope_theta": cfg.rope_theta, "rope_scaling": cfg.rope_scaling_dict}


def _rope(hf: dict) -> dict:
    theta, scaling, extra = rope_from_hf(hf)
    return {"rope_theta": theta, "rope_scaling": scaling, **extra}


# ---------------------------------------------------------------- families

def _llama_derive(hf):
    return {**_rope(hf), "o_bias": bool(hf.get("attention_bias", False))}


def _qwen2_derive(hf):
    if hf.get("use_sliding_window"):
        raise UsageError("unsupported config attribute use_sliding_window=True (qwen2 per-layer sliding "
                         "windows are not implemented)")
    return {**_rope(hf), "attention_bias": True, "sliding_window": None}


def _qwen2_underive(cfg):
    return {**rope_to_hf(cfg), "use_sliding_window": False}


def _opt_derive(hf):
    if hf.get("word_embed_proj_dim", hf["hidden_size"]) != hf["hidden_size"]:
        raise UsageError(f"unsupported config attribute word_embed_proj_dim={hf['word_embed_proj_dim']} "
                         f"(must equal hidden_size={hf['hidden_size']}; OPT-350m's projections are not supported)")
    bias = bool(hf.get("enable_bias", True))
    heads = hf["num_attention_heads"]
    return {"attention_bias": bias, "o_bias": bias, "mlp_bias": bias, "norm_eps": 1e-5,
            "num_kv_heads": heads, "head_dim": hf["hidden_size"] // heads,
            "tie_word_embeddings": hf.get("tie_word_embeddings", True)}


def _opt_underive(cfg):
    return {"enable_bias": cfg.attention_bias, "word_embed_proj_dim": cfg.hidden_size}


def _phi_derive(hf):
    rope = _rope(hf)  # v5 configs keep partial_rotary_factor in rope_parameters, v4 ones at the top level
    if hf.get("partial_rotary_factor") is not None:
        rope.setdefault("partial_rotary_factor", float(hf["partial_rotary_factor"]))
    return {**rope, "attention_bias": True, "o_bias": True, "mlp_bias": True, "lm_head_bias": True}


def _phi_underive(cfg):
    return {**rope_to_hf(cfg), "partial_rotary_factor": cfg.partial_rotary_factor}


#: Gemma3TextConfig's RoPE base of the full-attention layers when a config leaves it out.
GEMMA3_THETA = 1_000_000.0


def _gemma3_derive(hf):
    theta, scaling, _ = rope_from_hf({"rope_theta": GEMMA3_THETA, **hf}, gemma3.FULL)
    local = hf.get("rope_local_base_freq")
    if local is None:
        local, local_scaling, _ = rope_from_hf({**hf, "rope_theta": gemma3.DEFAULT_LOCAL_BASE, "rope_scaling": None},
                                               gemma3.SLIDING)
        if local_scaling is not None:
            raise UsageError(f"unsupported config attribute rope_parameters.sliding_attention="
                             f"{hf['rope_parameters']['sliding_attention']!r} (only default RoPE on sliding layers)")
    types = hf.get("layer_types")
    if types is None:
        pattern = hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", gemma3.SLIDING_PATTERN))
        types = gemma3.default_layer_types(hf["num_hidden_layers"], pattern)
    bad = sorted(set(types) - {gemma3.FULL, gemma3.SLIDING})
    if bad:
        raise UsageError(f"unsupported config attribute layer_types containing {bad}")
    return {"rope_theta": float(theta), "rope_scaling": scaling, "rope_local_base_freq": float(local),
            "layer_types": tuple(types), "o_bias": bool(hf.get("attention_bias", False))}


def _gemma3_underive(cfg):
    return {**rope_to_hf(cfg), "rope_local_base_freq": cfg.rope_local_base_freq,
            "layer_types": list(cfg.layer_types)}


_LLAMA_FIELDS = {**COMMON_FIELDS, "attention_bias": "attention_bias", "mlp_bias": "mlp_bias"}
_NO_BIAS_FIELDS = dict(COMMON_FIELDS)

TABLES: dict[str, HFTable] = {t.family: t for t in [
    HFTable("llama", ("llama",), "LlamaForCausalLM", "model.layers", LLAMA_TOP, _LLAMA_FIELDS,
            fixed={"pretraining_tp": 1}, defaults={"hidden_act": "silu"}, derive=_llama_derive, underive=rope_to_hf),
    HFTable("mistral", ("mistral",), "MistralForCausalLM", "model.layers", LLAMA_TOP,
            {**_NO_BIAS_FIELDS, "sliding_window": "sliding_window"}, defaults={"hidden_act": "silu"}, derive=_rope,
            underive=rope_to_hf),
    HFTable("qwen2", ("qwen2",), "Qwen2ForCausalLM", "model.layers", LLAMA_TOP,
            {**_NO_BIAS_FIELDS, "sliding_window": "sliding_window"},
            ignored=frozenset({"use_sliding_window", "max_window_layers", "layer_types"}),
            defaults={"hidden_act": "silu"},
            derive=_qwen2_derive, underive=_qwen2_underive),
    HFTable("opt", ("opt",), "OPTForCausalLM", "model.decoder.layers",
            {"embed": "model.decoder.embed_tokens", "positions": "model.decoder.embed_positions",
             "final_norm": "model.decoder.final_layer_norm", "lm_head": "lm_head"},
            {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "ffn_dim": "intermediate_size",
             "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
             "max_position_embeddings": "max_position_embeddings", "activation_function": "hidden_act",
             "tie_word_embeddings": "tie_word_embeddings", "bos_token_id": "bos_token_id",
             "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id"},
            fixed={"do_layer_norm_before": True, "_remove_final_layer_norm": False,
                   "layer_norm_elementwise_affine": True},
            ignored=frozenset({"dropout", "layerdrop", "init_std", "activation_dropout", "prefix",
                               "enable_bias", "word_embed_proj_dim"}),
            defaults={"hidden_act": "relu"},
            rope_keys=frozenset(), derive=_opt_derive, underive=_opt_underive),
    HFTable("phi", ("phi",), "PhiForCausalLM", "model.layers",
            {"embed": "model.embed_tokens", "final_norm": "model.final_layernorm", "lm_head": "lm_head"},
            {**{k: v for k, v in COMMON_FIELDS.items() if k != "rms_norm_eps"}, "layer_norm_eps": "norm_eps"},
            fixed={"qk_layernorm": False, "tie_word_embeddings": False},  # a tied head would lose lm_head.bias
            ignored=frozenset({"embd_pdrop", "resid_pdrop"}),
            defaults={"hidden_act": "gelu_new", "norm_eps": 1e-5, "partial_rotary_factor": 0.5,
                      "tie_word_embeddings": False},
            rope_keys=frozenset({"rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor"}),
            derive=_phi_derive, underive=_phi_underive),
    HFTable("gemma3", ("gemma3_text",), "Gemma3ForCausalLM", "model.layers", LLAMA_TOP,
            {**{k: v for k, v in COMMON_FIELDS.items() if k != "hidden_act"},
             "hidden_activation": "hidden_act", "attention_bias": "attention_bias",
             "query_pre_attn_scalar": "query_pre_attn_scalar", "sliding_window": "sliding_window",
             "final_logit_softcapping": "final_logit_softcapping"},
            # transformers' Gemma3Attention never passes attn_logit_softcapping to its attention kernels
            fixed={"use_bidirectional_attention": False, "attn_logit_softcapping": None},
            ignored=frozenset({"sliding_window_pattern", "_sliding_window_pattern", "cache_implementation",
                               "hidden_act"}),
            defaults={"hidden_act": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256, "sliding_window": 4096},
            rope_keys=frozenset({"rope_theta", "rope_scaling", "rope_parameters", "rope_local_base_freq",
                                 "layer_types"}),
            derive=_gemma3_derive, underive=_gemma3_underive),
]}


def table_for_model_type(model_type: str) -> HFTable:
    for t in TABLES.values():
        if model_type in t.model_types:
            return t
    known = sorted(m for t in TABLES.values() for m in t.model_types)
    raise UsageError(f"unknown model family: HF model_type {model_type!r} is not supported; supported: {known}")
