"""GGUF (llama.cpp) checkpoints -> (ModelConfig, params), with the `gguf` package only (no torch).

Declarative, like `hf_tables`: one `GGUFArch` per GGUF architecture says which GGUF tensor is which
Hugging Face tensor and which GGUF metadata key is which HF config attribute. The result goes through
`converters.hf.config_from_hf` and `converters.hf.params_from_tensors`, so a GGUF model is validated by
the same code as a HF checkpoint. What llama.cpp's converter changes in the values is undone here:

- Llama-architecture files store the rows of Q and K permuted (llama.cpp's `permute`, which turns
  HF's rotate-half RoPE layout into interleaved pairs); `unpermute_qk` reverses it, as transformers'
  GGUF loader does (the permutation of K uses the KV head count).
- Gemma files store every RMSNorm weight as `w + 1` (the HF forward computes x * (1 + w)).
- There is no `output.weight` when the LM head is tied to the embedding.
- Phi-2 files may fuse q/k/v into one `attn_qkv` tensor; it is split back in row order q, k, v.
- Qwen3-MoE files stack each projection of all experts into one 3-D tensor (`ffn_gate_exps`, `ffn_up_exps`,
  `ffn_down_exps`; numpy shape [experts, out, in], i.e. ggml ne = {in, out, experts}); `split_experts`
  cuts it back into one [out, in] weight per expert, as HF names them (`mlp.experts.<e>.gate_proj`).

Unknown architectures, tensors and model-changing metadata keys are `ValueError`s that name them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from neuroal_jax.config import ModelConfig
from neuroal_jax.errors import UsageError

#: Metadata namespaces that never change the forward pass (the tokenizer is read separately).
HARMLESS_NAMESPACES = ("general.", "tokenizer.", "quantize.", "GGUF.")
#: Tokenizer metadata that becomes HF config attributes (kept for export).
TOKEN_ID_KEYS = {
    "tokenizer.ggml.bos_token_id": "bos_token_id",
    "tokenizer.ggml.eos_token_id": "eos_token_id",
    "tokenizer.ggml.padding_token_id": "pad_token_id",
}
#: Large tokenizer arrays, skipped when reading the model metadata.
TOKENIZER_ARRAYS = frozenset({"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                              "tokenizer.ggml.merges", "tokenizer.ggml.precompiled_charsmap"})


@dataclass(frozen=True)
class GGUFArch:
    """How one GGUF architecture maps onto a Hugging Face model type (see the module docstring)."""

    arch: str  # general.architecture
    model_type: str  # HF model_type: picks the HFTable, hence our model family
    block_tensors: dict[str, str]  # GGUF module inside blk.N -> HF module inside model.layers.N
    top_tensors: dict[str, str]  # top-level GGUF module -> full HF module name
    metadata: dict[str, str]  # "<arch>." key suffix -> HF config attribute
    derived: frozenset[str] = frozenset()  # key suffixes read by `derive` (or checked by it)
    ignored: frozenset[str] = frozenset()  # key suffixes that do not change the forward pass
    permute_qk: bool = False  # undo llama.cpp's Q/K row permutation
    norm_offset: float = 0.0  # llama.cpp stores norm weights as HF weight + offset
    derive: Callable[["GGUFFacts"], dict] = lambda facts: {}  # -> extra HF config attributes
    blocks_prefix: str = "model.layers"


@dataclass(frozen=True)
class GGUFFacts:
    """What `derive` functions may look at: the arch-stripped metadata and the tensor names."""

    meta: dict[str, Any]  # "<arch>." key suffix -> value
    tensor_names: frozenset[str]
    hf: dict[str, Any]  # the HF attributes mapped so far (plain renamings)

    def has_tensor(self, suffix: str) -> bool:
        """Whether any block has a tensor named blk.N.<suffix>."""
        return any(n.startswith("blk.") and n.split(".", 2)[2] == suffix for n in self.tensor_names)


# ---------------------------------------------------------------- metadata -> HF config pieces

COMMON_METADATA = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "vocab_size": "vocab_size",
    "rope.freq_base": "rope_theta",
}
RMS_METADATA = {**COMMON_METADATA, "attention.layer_norm_rms_epsilon": "rms_norm_eps"}
HEAD_KEYS = frozenset({"attention.key_length", "attention.value_length", "rope.dimension_count"})
ROPE_SCALING_KEYS = frozenset({"rope.scaling.type", "rope.scaling.factor", "rope.scaling.original_context_length",
                               "rope.scaling.finetuned"})


def head_dim_of(facts: GGUFFacts) -> int:
    """attention.key_length, else hidden / heads; value_length must agree."""
    hf = facts.hf
    head_dim = facts.meta.get("attention.key_length", hf["hidden_size"] // hf["num_attention_heads"])
    value = facts.meta.get("attention.value_length", head_dim)
    if value != head_dim:
        raise UsageError(f"unsupported GGUF metadata attention.value_length={value} "
                         f"(must equal attention.key_length={head_dim})")
    return int(head_dim)


def rope_scaling_of(facts: GGUFFacts) -> dict | None:
    """HF rope_scaling from rope.scaling.*; `config_from_hf` rejects the types we do not implement."""
    kind = facts.meta.get("rope.scaling.type", "none")
    if kind == "none":
        return None
    scaling = {"rope_type": kind, "factor": float(facts.meta.get("rope.scaling.factor", 1.0))}
    if "rope.scaling.original_context_length" in facts.meta:
        scaling["original_max_position_embeddings"] = int(facts.meta["rope.scaling.original_context_length"])
    return scaling


def full_rotary(facts: GGUFFacts) -> dict:
    """head_dim and rope_scaling for models that rotate whole heads (rope.dimension_count == head_dim)."""
    head_dim = head_dim_of(facts)
    rot = facts.meta.get("rope.dimension_count", head_dim)
    if rot != head_dim:
        raise UsageError(f"unsupported GGUF metadata rope.dimension_count={rot} "
                         f"(partial rotary embeddings need it to equal the head size {head_dim})")
    return {"head_dim": head_dim, "rope_scaling": rope_scaling_of(facts)}


def llama_derive(facts: GGUFFacts) -> dict:
    bias = facts.has_tensor("attn_q.bias")
    if facts.has_tensor("attn_output.bias") != bias:
        raise UsageError("unsupported GGUF tensors: Llama attention biases on q/k/v but not on the output "
                         "projection (or the reverse)")
    return {**full_rotary(facts), "attention_bias": bias, "mlp_bias": facts.has_tensor("ffn_up.bias")}


def qwen2_derive(facts: GGUFFacts) -> dict:
    return full_rotary(facts)


#: llama.cpp scales Gemma-3 27B queries by (hidden / heads) ** -0.5, every other size by head_dim ** -0.5.
GEMMA3_27B_BLOCKS = 62


def gemma3_derive(facts: GGUFFacts) -> dict:
    out = full_rotary(facts)
    hf = facts.hf
    if hf["num_hidden_layers"] == GEMMA3_27B_BLOCKS:
        out["query_pre_attn_scalar"] = hf["hidden_size"] // hf["num_attention_heads"]
    else:
        out["query_pre_attn_scalar"] = out["head_dim"]
    pattern = facts.meta.get("attention.sliding_window_pattern")
    if isinstance(pattern, list):  # one bool per layer: True = sliding window
        out["layer_types"] = ["sliding_attention" if p else "full_attention" for p in pattern]
    elif pattern is not None:
        out["sliding_window_pattern"] = int(pattern)
    return out


#: Metadata keys of a routed MoE (see `moe_derive`) and the HF attributes they become.
MOE_METADATA = {"expert_count": "num_experts", "expert_used_count": "num_experts_per_tok",
                "expert_feed_forward_length": "moe_intermediate_size"}
#: gguf.ExpertGatingFuncType.SOFTMAX: the only router our MoE families compute.
SOFTMAX_GATING = 1


def moe_derive(arch: str) -> Callable[[GGUFFacts], dict]:
    """derive for llama.cpp's qwen3moe: full rotary heads, the expert keys required, softmax routing with the
    top-k weights renormalised. llama.cpp's qwen3moe graph hard-codes both (build_moe_ffn with norm_w = true
    and softmax gating, whatever the file says), and transformers' GGUF loader sets norm_topk_prob=True for it;
    a file that says otherwise contradicts the runtime that defines the format and is refused."""
    def derive(facts: GGUFFacts) -> dict:
        missing = [f"{arch}.{k}" for k in MOE_METADATA if k not in facts.meta]
        if missing:
            raise UsageError(f"GGUF metadata lacks {', '.join(missing)} (required for architecture {arch})")
        gating = facts.meta.get("expert_gating_func", SOFTMAX_GATING)
        if gating != SOFTMAX_GATING:
            raise UsageError(f"unsupported GGUF metadata {arch}.expert_gating_func={gating!r} "
                             f"(only {SOFTMAX_GATING}, softmax routing, is supported)")
        if not facts.meta.get("expert_weights_norm", True):
            raise UsageError(f"unsupported GGUF metadata {arch}.expert_weights_norm="
                             f"{facts.meta['expert_weights_norm']!r} (llama.cpp's {arch} always renormalises "
                             "the top-k router weights)")
        return {**full_rotary(facts), "norm_topk_prob": True}
    return derive


def phi2_derive(facts: GGUFFacts) -> dict:
    head_dim = head_dim_of(facts)
    if head_dim * facts.hf["num_attention_heads"] != facts.hf["hidden_size"]:
        raise UsageError(f"unsupported GGUF metadata attention.key_length={head_dim} for phi2 "
                         "(must be embedding_length / head_count)")
    rot = facts.meta.get("rope.dimension_count", head_dim // 2)
    return {"partial_rotary_factor": rot / head_dim, "rope_scaling": rope_scaling_of(facts)}


# ---------------------------------------------------------------- the tables

LLAMA_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
LLAMA_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
#: Stands for the expert index in the HF name of a stacked expert tensor (see `split_experts`).
EXPERT_SLOT = "*"
QWEN3MOE_BLOCK = {
    **{k: v for k, v in LLAMA_BLOCK.items() if not k.startswith("ffn_") or k == "ffn_norm"},
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate_inp": "mlp.gate",  # the router, [experts, hidden]
    "ffn_gate_exps": f"mlp.experts.{EXPERT_SLOT}.gate_proj",
    "ffn_up_exps": f"mlp.experts.{EXPERT_SLOT}.up_proj",
    "ffn_down_exps": f"mlp.experts.{EXPERT_SLOT}.down_proj",
}

ARCHS: dict[str, GGUFArch] = {a.arch: a for a in [
    GGUFArch("llama", "llama", LLAMA_BLOCK, LLAMA_TOP, RMS_METADATA,
             derived=HEAD_KEYS | ROPE_SCALING_KEYS, permute_qk=True, derive=llama_derive),
    GGUFArch("qwen2", "qwen2", LLAMA_BLOCK, LLAMA_TOP, RMS_METADATA,
             derived=HEAD_KEYS | ROPE_SCALING_KEYS, derive=qwen2_derive),
    GGUFArch("qwen3", "qwen3", {**LLAMA_BLOCK, "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"},
             LLAMA_TOP, RMS_METADATA, derived=HEAD_KEYS | ROPE_SCALING_KEYS, derive=full_rotary),
    GGUFArch("qwen3moe", "qwen3_moe", QWEN3MOE_BLOCK, LLAMA_TOP, {**RMS_METADATA, **MOE_METADATA},
             derived=HEAD_KEYS | ROPE_SCALING_KEYS | {"expert_gating_func", "expert_weights_norm"},
             derive=moe_derive("qwen3moe")),
    GGUFArch("gemma3", "gemma3_text",
             {"attn_norm": "input_layernorm",
              "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
              "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
              "attn_output": "self_attn.o_proj",
              "post_attention_norm": "post_attention_layernorm",
              "ffn_norm": "pre_feedforward_layernorm",
              "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
              "post_ffw_norm": "post_feedforward_layernorm"},
             LLAMA_TOP,
             {**RMS_METADATA, "attention.sliding_window": "sliding_window",
              "rope.freq_base_swa": "rope_local_base_freq",
              "final_logit_softcapping": "final_logit_softcapping",
              "attn_logit_softcapping": "attn_logit_softcapping"},
             derived=HEAD_KEYS | ROPE_SCALING_KEYS | {"attention.sliding_window_pattern"},
             norm_offset=1.0, derive=gemma3_derive),
    GGUFArch("phi2", "phi",
             {"attn_norm": "input_layernorm",
              "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
              "attn_qkv": "self_attn.qkv_proj",  # split by `split_qkv`
              "attn_output": "self_attn.dense",
              "ffn_up": "mlp.fc1", "ffn_down": "mlp.fc2"},
             {"token_embd": "model.embed_tokens", "output_norm": "model.final_layernorm", "output": "lm_head"},
             {**COMMON_METADATA, "attention.layer_norm_epsilon": "layer_norm_eps"},
             derived=HEAD_KEYS | ROPE_SCALING_KEYS, derive=phi2_derive),
]}

#: Tensors some GGUF files carry that we cannot represent, with the reason.
UNSUPPORTED_TENSORS = {
    "rope_freqs": "per-frequency RoPE factors (Llama-3.1-style rope scaling) are not supported",
    "attn_rot_embd": "precomputed rotary tables are not supported",
}


def get_arch(name: str) -> GGUFArch:
    try:
        return ARCHS[name]
    except KeyError:
        raise UsageError(f"unsupported GGUF architecture {name!r}; supported: {sorted(ARCHS)}") from None


# ---------------------------------------------------------------- value transforms

def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's `permute` of Q/K rows (weights [rows, in] or biases [rows]).

    llama.cpp views each head's rows as (2, half) and stores them as (half, 2): rotate-half pairs
    (i, i + half) become adjacent rows. For K, `n_heads` is the KV head count.
    """
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def split_qkv(w: np.ndarray, q_rows: int, kv_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fused [q; k; v] tensor (rows first) -> (q, k, v)."""
    if w.shape[0] != q_rows + 2 * kv_rows:
        raise UsageError(f"fused attn_qkv has {w.shape[0]} rows, expected {q_rows} + 2 x {kv_rows}")
    return w[:q_rows], w[q_rows:q_rows + kv_rows], w[q_rows + kv_rows:]


def split_experts(hf_name: str, arr: np.ndarray, n_experts: int) -> dict[str, np.ndarray]:
    """A stacked expert tensor [experts, out, in] (numpy order) -> {HF name of expert e: its [out, in] weight}.

    llama.cpp's converter stacks the experts' HF weights along a new first axis (torch.stack(dim=0)), which ggml
    sees as ne = {in, out, experts}; reversed into numpy order that is [experts, out, in], so expert e is arr[e]
    with no transpose (transformers' GGUF loader reads it the same way).
    """
    if arr.ndim != 3 or arr.shape[0] != n_experts:
        raise UsageError(f"stacked expert tensor for {hf_name} has shape {arr.shape}, expected "
                         f"[{n_experts} experts, out, in]")
    return {hf_name.replace(EXPERT_SLOT, str(e)): arr[e] for e in range(n_experts)}


# ---------------------------------------------------------------- reading

def _fast_reader_class():
    """GGUFReader whose field parsing slices a plain ndarray view instead of the np.memmap.

    GGUFReader parses metadata arrays (a 262k-token vocabulary) one element at a time through
    `_get`, and slicing an np.memmap runs Python code per slice; slicing a plain ndarray view of the
    same mapping is ~3x faster overall. Same values, still memory-mapped. Falls back to the stock
    reader if a future gguf release drops `_get`.
    """
    from gguf import GGUFReader

    if not hasattr(GGUFReader, "_get"):
        return GGUFReader

    class FastGGUFReader(GGUFReader):
        def _get(self, offset, dtype, count=1, override_order=None):
            plain = self.__dict__.get("_plain")
            if plain is None:
                plain = self.__dict__["_plain"] = self.data.view(np.ndarray)
            dtype, count = np.dtype(dtype), int(count)
            arr = plain[offset:offset + dtype.itemsize * count].view(dtype)[:count]
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    return FastGGUFReader


def open_gguf(path: str | os.PathLike):
    """A (memory-mapped) GGUF reader; pass it to `load_gguf` and `gguf_tokenizer` to parse the file once."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    try:
        return _fast_reader_class()(path)
    except Exception as e:  # the gguf package's reader raises whatever its parsing hits first
        raise UsageError(f"{path} is not a readable GGUF file: truncated or corrupt "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None


def _reader(source):
    return source if hasattr(source, "tensors") and hasattr(source, "fields") else open_gguf(source)


def _float32_value(v: float) -> float:
    """A float32 metadata value as its shortest decimal (1e-05, not 9.999999747378752e-06)."""
    return float(str(np.float32(v)))


def read_metadata(reader, skip: frozenset[str] = TOKENIZER_ARRAYS) -> dict[str, Any]:
    """All metadata key -> Python value, float32 values rounded to their shortest decimal."""
    from gguf import GGUFValueType

    meta = {}
    for key, fld in reader.fields.items():
        if key in skip:
            continue
        value = fld.contents()
        if fld.types and fld.types[0] == GGUFValueType.FLOAT32:
            value = _float32_value(value)
        meta[key] = value
    return meta


def _scalar_heads(key: str, value):
    """head_count(_kv) may be a per-layer array; we need one value for every layer."""
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise UsageError(f"unsupported GGUF metadata {key}={value} (per-layer head counts differ)")
        return value[0]
    return value


def hf_config_from_gguf(meta: dict[str, Any], tensor_shapes: dict[str, tuple[int, ...]]) -> dict:
    """A HF config.json dict from GGUF metadata and the tensor shapes (numpy order)."""
    table = get_arch(meta.get("general.architecture", "<missing general.architecture>"))
    prefix = table.arch + "."
    arch_meta = {k[len(prefix):]: v for k, v in meta.items() if k.startswith(prefix)}
    strange = [k for k in meta if not k.startswith(prefix) and not k.startswith(HARMLESS_NAMESPACES)]
    unknown = sorted(set(arch_meta) - table.metadata.keys() - table.derived - table.ignored)
    if strange or unknown:
        shown = [f"{k}={meta[k]!r}" for k in strange] + [f"{prefix}{k}={arch_meta[k]!r}" for k in unknown]
        raise UsageError(f"unhandled GGUF metadata for architecture {table.arch}: {', '.join(shown)}")
    hf: dict[str, Any] = {"model_type": table.model_type}
    for key, attr in table.metadata.items():
        if key in arch_meta:
            hf[attr] = _scalar_heads(prefix + key, arch_meta[key])
    hf.update({attr: meta[k] for k, attr in TOKEN_ID_KEYS.items() if k in meta})
    if "token_embd.weight" not in tensor_shapes:
        raise UsageError("GGUF file has no token_embd.weight tensor")
    rows = tensor_shapes["token_embd.weight"][0]
    if hf.setdefault("vocab_size", rows) != rows:
        raise UsageError(f"GGUF metadata {prefix}vocab_size={hf['vocab_size']} but token_embd.weight has {rows} rows")
    hf["tie_word_embeddings"] = "output.weight" not in tensor_shapes
    hf.update(table.derive(GGUFFacts(arch_meta, frozenset(tensor_shapes), dict(hf))))
    return hf


def hf_tensor_name(table: GGUFArch, gguf_name: str) -> str | None:
    """The HF name of a GGUF tensor, or None when the table does not map it."""
    module, _, kind = gguf_name.rpartition(".")
    if module.startswith("blk."):
        _, index, leaf = module.split(".", 2)
        hf_module = table.block_tensors.get(leaf)
        return None if hf_module is None else f"{table.blocks_prefix}.{index}.{hf_module}.{kind}"
    hf_module = table.top_tensors.get(module)
    return None if hf_module is None else f"{hf_module}.{kind}"


def _check_tensor_names(table: GGUFArch, names) -> None:
    unmapped = [n for n in names if hf_tensor_name(table, n) is None]
    if not unmapped:
        return
    reasons = {n: UNSUPPORTED_TENSORS[leaf] for n in unmapped
               if (leaf := n.rpartition(".")[0].split(".")[-1]) in UNSUPPORTED_TENSORS}
    detail = "; ".join(f"{n}: {r}" for n, r in reasons.items())
    raise UsageError(f"GGUF tensors the {table.arch} table does not map: {unmapped[:8]}"
                     + (f" ({detail})" if detail else ""))


def convert_tensor(table: GGUFArch, cfg: ModelConfig, gguf_name: str, arr: np.ndarray) -> dict[str, np.ndarray]:
    """One dequantized GGUF tensor -> {HF name: array}, llama.cpp's value transforms undone."""
    hf_name = hf_tensor_name(table, gguf_name)
    module = gguf_name.rpartition(".")[0]
    leaf = module.split(".")[-1]
    if table.permute_qk and leaf in ("attn_q", "attn_k"):
        arr = unpermute_qk(arr, cfg.num_heads if leaf == "attn_q" else cfg.num_kv_heads)
    if table.norm_offset and leaf.endswith("norm"):
        arr = arr - np.float32(table.norm_offset)
    if leaf == "attn_qkv":
        q_rows, kv_rows = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        stem, kind = hf_name.rsplit(".qkv_proj.", 1)
        return {f"{stem}.{p}_proj.{kind}": part for p, part in zip("qkv", split_qkv(arr, q_rows, kv_rows))}
    if EXPERT_SLOT in hf_name:
        return split_experts(hf_name, arr, cfg.num_experts)
    return {hf_name: arr}


def gguf_model(reader) -> tuple[ModelConfig, GGUFArch, dict[str, tuple[int, ...]]]:
    """(config, architecture table, {tensor name: shape in HF order}) of an open GGUF file."""
    from .hf import config_from_hf

    meta = read_metadata(reader)
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}
    table = get_arch(meta.get("general.architecture", "<missing general.architecture>"))
    _check_tensor_names(table, shapes)
    return config_from_hf(hf_config_from_gguf(meta, shapes)), table, shapes


def dequantized(table: GGUFArch, cfg: ModelConfig, shapes: dict, tensors) -> dict[str, np.ndarray]:
    """{HF name: float32 array} of some GGUF reader tensors, dequantized, llama.cpp's transforms undone."""
    from gguf.quants import dequantize

    out = {}
    for t in tensors:
        arr = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shapes[t.name])
        out.update(convert_tensor(table, cfg, t.name, arr))
    return out


def load_gguf(source, dtype=np.float32) -> tuple[ModelConfig, dict]:
    """(config, params) of a GGUF file (a path or an `open_gguf` reader); tensors dequantized to `dtype`."""
    from .hf import params_from_tensors

    reader = _reader(source)
    cfg, table, shapes = gguf_model(reader)
    tensors = dequantized(table, cfg, shapes, reader.tensors)
    return cfg, params_from_tensors(cfg, tensors, source=str(Path(reader.data.filename)), dtype=dtype)


# ---------------------------------------------------------------- tokenizer

def gguf_tokenizer(source):
    """The HF fast tokenizer a GGUF file (path or `open_gguf` reader) describes, built without torch.

    transformers' own `AutoTokenizer.from_pretrained(folder, gguf_file=...)` reads the metadata with a
    reader that imports torch; we read it with the `gguf` package and hand it to the same builder
    (`convert_gguf_tokenizer`), then wrap the backend with the same special tokens and flags.
    """
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            _SPECIAL_TOKENS,
            GGUF_TOKENIZER_MAPPING,
            convert_gguf_tokenizer,
        )
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # transformers 4.x: only the torch-importing path exists
        from transformers import AutoTokenizer
        path = Path(str(getattr(getattr(source, "data", None), "filename", source)))
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)

    reader = _reader(source)
    meta = read_metadata(reader, skip=frozenset({"tokenizer.ggml.precompiled_charsmap"}))
    groups = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
              for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    tok, tok_config = groups["tokenizer"], groups["tokenizer_config"]
    if "tokens" not in tok:
        raise UsageError(f"{reader.data.filename}: the GGUF file has no tokenizer (tokenizer.ggml.tokens)")
    if tok.get("tokenizer_type") == "llama":
        tok_config.setdefault("add_bos_token", True)  # llama.cpp's default for sentencepiece vocabularies
    elif tok.get("tokenizer_type") == "gemma4":
        tok_config["add_bos_token"] = False
    for name, key in _SPECIAL_TOKENS.items():
        token_id = meta.get(f"tokenizer.ggml.{key}")
        tok_config[name] = tok["tokens"][token_id] if token_id is not None else None
    backend, extra = convert_gguf_tokenizer(meta["general.architecture"], tok)
    return TokenizersBackend(tokenizer_object=backend, **tok_config, **extra)


__all__ = ["ARCHS", "GGUFArch", "GGUFFacts", "get_arch", "gguf_tokenizer", "hf_config_from_gguf", "hf_tensor_name",
           "load_gguf", "open_gguf", "read_metadata", "split_experts", "split_qkv", "unpermute_qk"]

