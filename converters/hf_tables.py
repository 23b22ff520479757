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

def rope_from_hf(hf: dict, params_key: str | None = None, types: tuple[str, ...] = ROPE_TYPES,
                 aliases: dict[str, str] | None = None) -> tuple[float, tuple | None, dict]:
    """(theta, scaling as sorted pairs (lists as tuples) or None, remaining rope params) from v4 or v5 style
    configs; rope types outside `types` are refused, `aliases` renames old type names."""
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
    kind = (aliases or {}).get(kind, kind)
    if kind not in types:
        raise UsageError(f"unsupported config attribute rope_scaling.rope_type={kind!r} "
                         f"(supported: {list(types)})")
    if kind == "default":
        return float(theta), None, extra
    params.pop("type", None)
    params["rope_type"] = kind
    return float(theta), tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items())), extra


def rope_to_hf(cfg: ModelConfig) -> dict:
    scaling = cfg.rope_scaling_dict
    if scaling is not None:
        scaling = {k: list(v) if isinstance(v, tuple) else v for k, v in scaling.items()}
    return {"rope_theta": cfg.rope_theta, "rope_scaling": scaling}


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


# ---------------------------------------------------------------- qwen3, phi3, gemma2

def _num_layers(hf: dict, family: str) -> int:
    if hf.get("num_hidden_layers") is None:
        raise UsageError(f"config.json lacks required attribute(s) for {family}: ['num_hidden_layers']")
    return int(hf["num_hidden_layers"])


def _checked_layer_types(types, num_layers: int) -> tuple[str, ...]:
    bad = sorted(set(types) - {gemma3.FULL, gemma3.SLIDING})
    if bad:
        raise UsageError(f"unsupported config attribute layer_types containing {bad} "
                         f"(supported: {[gemma3.FULL, gemma3.SLIDING]})")
    if len(types) != num_layers:
        raise UsageError(f"unsupported config attribute layer_types with {len(types)} entries "
                         f"(num_hidden_layers={num_layers})")
    return tuple(types)


#: Qwen3Config's defaults.
QWEN3_SLIDING_WINDOW, QWEN3_MAX_WINDOW_LAYERS = 4096, 28


def _qwen3_derive(hf):
    n = _num_layers(hf, "qwen3")
    window = hf.get("sliding_window", QWEN3_SLIDING_WINDOW) if hf.get("use_sliding_window") else None
    types = hf.get("layer_types")
    if types is None:  # transformers' default: sliding from layer max_window_layers on, when there is a window
        first = hf.get("max_window_layers", QWEN3_MAX_WINDOW_LAYERS)
        types = [gemma3.SLIDING if window is not None and i >= first else gemma3.FULL for i in range(n)]
    types = _checked_layer_types(types, n)
    sliding = gemma3.SLIDING in types
    if sliding and window is None:
        raise UsageError(f"unsupported config attribute layer_types with sliding_attention layers while "
                         f"use_sliding_window={hf.get('use_sliding_window')!r}, sliding_window="
                         f"{hf.get('sliding_window')!r} (sliding layers need use_sliding_window=true and a window)")
    return {**_rope(hf), "o_bias": bool(hf.get("attention_bias", False)),
            "sliding_window": window if sliding else None, "layer_types": types if sliding else None}


def _qwen3_underive(cfg):
    types = cfg.layer_types if cfg.layer_types is not None else (gemma3.FULL,) * cfg.num_layers
    return {**rope_to_hf(cfg), "use_sliding_window": cfg.sliding_window is not None, "layer_types": list(types)}


#: Attributes some Phi-3/Phi-4 configs carry that transformers' Phi3ForCausalLM ignores: only these values
#: (no biases, every layer full attention, no interpolation) describe the model it builds.
PHI3_ONLY = {"attention_bias": False, "mlp_bias": False, "lm_head_bias": False, "full_attn_mod": 1,
             "interpolate_factor": 1}
#: Phi3Config's default pre-training length (it overrides rope_parameters' own for longrope).
PHI3_ORIGINAL_MAX_POSITIONS = 4096
PHI3_ROPE_TYPES = ("default", "longrope")


def _phi3_derive(hf):
    for k, v in PHI3_ONLY.items():
        if hf.get(k) is not None and hf[k] != v:
            raise UsageError(f"unsupported config attribute {k}={hf[k]!r} (only {v!r} is supported)")
    # like Phi3Config: old "su" and "yarn" types are LongRoPE
    theta, scaling, extra = rope_from_hf(hf, types=PHI3_ROPE_TYPES, aliases={"su": "longrope", "yarn": "longrope"})
    if hf.get("partial_rotary_factor") is not None:
        extra.setdefault("partial_rotary_factor", float(hf["partial_rotary_factor"]))
    if scaling is not None:
        rope = dict(scaling)
        rope["original_max_position_embeddings"] = int(hf.get("original_max_position_embeddings",
                                                              PHI3_ORIGINAL_MAX_POSITIONS))
        heads = hf.get("num_attention_heads") or 1
        half = int((hf.get("head_dim") or hf.get("hidden_size", 0) // heads)
                   * extra.get("partial_rotary_factor", 1.0)) // 2
        for key in ("short_factor", "long_factor"):
            if not isinstance(rope.get(key), tuple) or len(rope[key]) != half:
                raise UsageError(f"unsupported config attribute rope_scaling.{key}={rope.get(key)!r} (longrope needs "
                                 f"a list of {half} numbers: half the rotary dimension)")
        scaling = tuple(sorted(rope.items()))
    return {"rope_theta": theta, "rope_scaling": scaling, **extra}


def _phi3_underive(cfg):
    out = {**rope_to_hf(cfg), "partial_rotary_factor": cfg.partial_rotary_factor}
    if cfg.rope_scaling is not None:
        out["original_max_position_embeddings"] = cfg.rope_scaling_dict["original_max_position_embeddings"]
    return out


#: Gemma2Config's defaults when a config leaves them out (an explicit null switches soft-capping off).
GEMMA2_ATTN_SOFTCAP, GEMMA2_FINAL_SOFTCAP, GEMMA2_SLIDING_PATTERN = 50.0, 30.0, 2


def _gemma2_derive(hf):
    n = _num_layers(hf, "gemma2")
    if hf.get("use_bidirectional_attention"):
        raise UsageError(f"unsupported config attribute use_bidirectional_attention="
                         f"{hf['use_bidirectional_attention']!r} (only causal attention)")
    if "sliding_window" in hf and hf["sliding_window"] is None:
        raise UsageError("unsupported config attribute sliding_window=None (gemma2's sliding layers need a window)")
    types = hf.get("layer_types") or gemma3.default_layer_types(n, GEMMA2_SLIDING_PATTERN)
    return {**_rope(hf), "layer_types": _checked_layer_types(types, n),
            "o_bias": bool(hf.get("attention_bias", False)),
            "attn_logit_softcapping": hf.get("attn_logit_softcapping", GEMMA2_ATTN_SOFTCAP),
            "final_logit_softcapping": hf.get("final_logit_softcapping", GEMMA2_FINAL_SOFTCAP)}


def _gemma2_underive(cfg):
    return {**rope_to_hf(cfg), "layer_types": list(cfg.layer_types)}


TABLES.update({t.family: t for t in [
    HFTable("qwen3", ("qwen3",), "Qwen3ForCausalLM", "model.layers", LLAMA_TOP,
            {**_NO_BIAS_FIELDS, "attention_bias": "attention_bias", "sliding_window": "sliding_window"},
            ignored=frozenset({"use_sliding_window", "max_window_layers", "layer_types"}),
            defaults={"hidden_act": "silu", "head_dim": 128, "tie_word_embeddings": False,
                      "max_position_embeddings": 32768},
            derive=_qwen3_derive, underive=_qwen3_underive),
    HFTable("phi3", ("phi3",), "Phi3ForCausalLM", "model.layers", LLAMA_TOP,
            {**_NO_BIAS_FIELDS, "sliding_window": "sliding_window"},
            ignored=frozenset({"embd_pdrop", "resid_pdrop", "auto_map", *PHI3_ONLY}),
            defaults={"hidden_act": "silu", "norm_eps": 1e-5, "tie_word_embeddings": False,
                      "max_position_embeddings": 4096},
            rope_keys=frozenset({"rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor",
                                 "original_max_position_embeddings"}),
            derive=_phi3_derive, underive=_phi3_underive),
    HFTable("gemma2", ("gemma2",), "Gemma2ForCausalLM", "model.layers", LLAMA_TOP,
            {**{k: v for k, v in COMMON_FIELDS.items() if k != "hidden_act"},
             "hidden_activation": "hidden_act", "attention_bias": "attention_bias",
             "query_pre_attn_scalar": "query_pre_attn_scalar", "sliding_window": "sliding_window",
             "attn_logit_softcapping": "attn_logit_softcapping", "final_logit_softcapping": "final_logit_softcapping"},
            # sliding_window_size: an alias some early Gemma 2 configs carry; transformers reads sliding_window
            ignored=frozenset({"hidden_act", "cache_implementation", "use_bidirectional_attention", "layer_types",
                               "sliding_window_size"}),
            defaults={"hidden_act": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256, "sliding_window": 4096,
                      "head_dim": 256, "max_position_embeddings": 8192},
            derive=_gemma2_derive, underive=_gemma2_underive),
]})


# ---------------------------------------------------------------- mixture of experts (neuroal_jax/models/moe.py)

#: Router settings that only matter in training (auxiliary losses, jitter noise under model.train()).
MOE_TRAINING_ONLY = frozenset({"output_router_logits", "router_aux_loss_coef", "router_jitter_noise"})


def _moe_required(hf: dict, family: str, *keys: str) -> None:
    missing = [k for k in keys if hf.get(k) is None]
    if missing:
        raise UsageError(f"config.json lacks required attribute(s) for {family}: {missing}")


def _expert_count(hf: dict, family: str) -> int:
    """The number of routed experts: num_experts or num_local_experts (transformers aliases the two)."""
    count = hf.get("num_experts", hf.get("num_local_experts"))
    if count is None:
        raise UsageError(f"config.json lacks required attribute(s) for {family}: ['num_experts' or "
                         "'num_local_experts'] (the number of experts)")
    if int(count) < 1:
        raise UsageError(f"unsupported config attribute num_experts={count!r} (a {family} model needs experts)")
    return int(count)


def _qwen_moe_layers(hf: dict, family: str) -> None:
    """Every decoder layer must be a MoE layer: dense-MLP layers (mlp_only_layers, decoder_sparse_step > 1) are
    not implemented, nor per-layer sliding windows."""
    if hf.get("mlp_only_layers"):
        raise UsageError(f"unsupported config attribute mlp_only_layers={hf['mlp_only_layers']!r} ({family} layers "
                         "with a dense MLP are not implemented)")
    if hf.get("decoder_sparse_step", 1) != 1:
        raise UsageError(f"unsupported config attribute decoder_sparse_step={hf['decoder_sparse_step']!r} (only 1: "
                         f"{family} layers with a dense MLP are not implemented)")
    if hf.get("use_sliding_window"):
        raise UsageError(f"unsupported config attribute use_sliding_window=True ({family} sliding windows are not "
                         "implemented)")


def _mixtral_derive(hf):
    _moe_required(hf, "mixtral", "num_experts_per_tok", "intermediate_size")
    return {**_rope(hf), "num_experts": _expert_count(hf, "mixtral"), "moe_intermediate_size": hf["intermediate_size"],
            "norm_topk_prob": True}


def _mixtral_underive(cfg):
    return {**rope_to_hf(cfg), "num_local_experts": cfg.num_experts}


def _qwen3_moe_derive(hf):
    _qwen_moe_layers(hf, "qwen3_moe")
    _moe_required(hf, "qwen3_moe", "num_experts_per_tok", "moe_intermediate_size")
    return {**_rope(hf), "num_experts": _expert_count(hf, "qwen3_moe"), "sliding_window": None,
            "o_bias": bool(hf.get("attention_bias", False))}


def _qwen2_moe_derive(hf):
    _qwen_moe_layers(hf, "qwen2_moe")
    _moe_required(hf, "qwen2_moe", "num_experts_per_tok", "moe_intermediate_size", "shared_expert_intermediate_size")
    return {**_rope(hf), "num_experts": _expert_count(hf, "qwen2_moe"), "sliding_window": None,
            "attention_bias": bool(hf.get("qkv_bias", True))}


def _qwen_moe_underive(cfg):
    return {**rope_to_hf(cfg), "num_experts": cfg.num_experts, "decoder_sparse_step": 1, "mlp_only_layers": [],
            "use_sliding_window": False}


_QWEN_MOE_FIELDS = {**_NO_BIAS_FIELDS, "num_experts_per_tok": "num_experts_per_tok",
                    "moe_intermediate_size": "moe_intermediate_size", "norm_topk_prob": "norm_topk_prob"}
_QWEN_MOE_IGNORED = MOE_TRAINING_ONLY | {"num_experts", "num_local_experts", "mlp_only_layers", "decoder_sparse_step",
                                         "use_sliding_window", "sliding_window", "max_window_layers", "layer_types"}
TABLES.update({t.family: t for t in [
    HFTable("mixtral", ("mixtral",), "MixtralForCausalLM", "model.layers", LLAMA_TOP,
            {**_NO_BIAS_FIELDS, "sliding_window": "sliding_window", "num_experts_per_tok": "num_experts_per_tok"},
            ignored=MOE_TRAINING_ONLY | {"num_experts", "num_local_experts"},
            defaults={"hidden_act": "silu", "norm_eps": 1e-5}, derive=_mixtral_derive, underive=_mixtral_underive),
    HFTable("qwen3_moe", ("qwen3_moe",), "Qwen3MoeForCausalLM", "model.layers", LLAMA_TOP,
            {**_QWEN_MOE_FIELDS, "attention_bias": "attention_bias"}, ignored=_QWEN_MOE_IGNORED,
            defaults={"hidden_act": "silu", "norm_topk_prob": False}, derive=_qwen3_moe_derive,
            underive=_qwen_moe_underive),
    HFTable("qwen2_moe", ("qwen2_moe",), "Qwen2MoeForCausalLM", "model.layers", LLAMA_TOP,
            {**_QWEN_MOE_FIELDS, "shared_expert_intermediate_size": "shared_expert_intermediate_size",
             "qkv_bias": "attention_bias"}, ignored=_QWEN_MOE_IGNORED,
            defaults={"hidden_act": "silu", "norm_topk_prob": False}, derive=_qwen2_moe_derive,
            underive=_qwen_moe_underive),
]})


def table_for_model_type(model_type: str) -> HFTable:
    for t in TABLES.values():
        if model_type in t.model_types:
            return t
    known = sorted(m for t in TABLES.values() for m in t.model_types)
    raise UsageError(f"unknown model family: HF model_type {model_type!r} is not supported; supported: {known}")
