"""Building blocks shared by the model families (pure jnp, weights in (out, in) layout)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..config import ModelConfig
from ..errors import UsageError

F32 = jnp.float32


def linear(x, p: dict):
    """x[..., in] @ W[out, in]ᵀ (+ b[out]), accumulated in float32 and returned in x's dtype (bfloat16 inputs
    then take the CPU's bfloat16 dot instructions where it has them, and the GPU's tensor cores)."""
    y = jnp.einsum("...i,oi->...o", x, p["weight"], preferred_element_type=F32)
    return (y + p["bias"] if "bias" in p else y).astype(x.dtype)


def rms_norm(x, weight, eps: float, offset: float = 0.0):
    """RMSNorm computed in float32; Gemma stores `weight - 1` (offset=1)."""
    xf = x.astype(F32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (y * (offset + weight.astype(F32))).astype(x.dtype)


def layer_norm(x, p: dict, eps: float):
    xf = x.astype(F32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y * p["weight"] + p["bias"]).astype(x.dtype)


ACTIVATIONS = {
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


def activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise UsageError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}") from None


# ---------------------------------------------------------------- rotary embeddings

def rope_inv_freq(dim: int, theta: float, scaling: dict | None) -> np.ndarray:
    """Inverse frequencies [dim/2] in float32 (as HF computes them), with HF's `linear` and `llama3` scalings."""
    inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim)
    inv = inv.astype(np.float32)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "linear":
        inv = inv / np.float32(scaling["factor"])
    elif kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_ctx = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        low_wl, high_wl = old_ctx / low, old_ctx / high
        scaled = np.where(wavelen > low_wl, inv / factor, inv)
        smooth = (old_ctx / wavelen - low) / (high - low)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen >= high_wl) & (wavelen <= low_wl)
        inv = np.where(is_mid, mid, scaled).astype(np.float32)
    elif kind != "default":
        raise UsageError(f"unsupported rope type {kind!r} for this family; supported: ['default', 'linear', 'llama3']")
    return inv


def rope_tables(seqlen: int, dim: int, theta: float, scaling: dict | None):
    """cos, sin [seqlen, dim] for positions 0..seqlen-1 (HF's rotate-half layout)."""
    inv = jnp.asarray(rope_inv_freq(dim, theta, scaling))
    freqs = jnp.arange(seqlen, dtype=F32)[:, None] * inv[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def longrope_tables(seqlen: int, dim: int, theta: float, scaling: dict, max_positions: int):
    """cos, sin [seqlen, dim] of Phi-3's LongRoPE, as transformers computes them: per-frequency divisors
    `long_factor` when the window is longer than `original_max_position_embeddings`, else `short_factor`; the
    tables are multiplied by `attention_factor`, by default sqrt(1 + ln(factor) / ln(original)) with
    factor = `factor` or max_positions / original (1 when factor <= 1)."""
    original = scaling["original_max_position_embeddings"]
    factor = scaling.get("factor")
    factor = max_positions / original if factor is None else factor
    attn = scaling.get("attention_factor")
    if attn is None:
        attn = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    ext = np.asarray(scaling["long_factor" if seqlen > original else "short_factor"], np.float32)
    if ext.shape != (dim // 2,):
        raise UsageError(f"longrope factors have {ext.size} entries; the rotary dimension {dim} needs {dim // 2}")
    inv = (1.0 / (ext * theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))).astype(np.float32)
    freqs = jnp.arange(seqlen, dtype=F32)[:, None] * jnp.asarray(inv)[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb) * np.float32(attn), jnp.sin(emb) * np.float32(attn)


def apply_rope(x, cos, sin):
    """x[B, T, heads, D]; rotates the first cos.shape[-1] features, passes the rest."""
    rd = cos.shape[-1]
    rot, rest = x[..., :rd], x[..., rd:]
    half = rd // 2
    rotated = jnp.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
    c, s = cos[None, :, None, :].astype(x.dtype), sin[None, :, None, :].astype(x.dtype)
    return jnp.concatenate([rot * c + rotated * s, rest], axis=-1)


# ---------------------------------------------------------------- attention

#: Per-layer attention types of families that mix them (config.layer_types).
SLIDING, FULL = "sliding_attention", "full_attention"


def causal_mask(seqlen: int, window: int | None = None):
    """bool[T, T]: query i sees key j iff j <= i (and i - j < window)."""
    i = jnp.arange(seqlen)[:, None]
    j = jnp.arange(seqlen)[None, :]
    mask = j <= i
    if window is not None:
        mask = mask & (i - j < window)
    return mask


def typed_contexts(types, seqlen: int, window: int | None, rope) -> list[dict]:
    """One ctx per layer of `types` (SLIDING: the causal mask within `window`, FULL: the causal mask), with the
    tables (cos, sin) of `rope(kind)`; one ctx per kind, shared by reference."""
    variants = {}
    for kind in sorted(set(types)):
        if kind not in (SLIDING, FULL):
            raise UsageError(f"unsupported layer type {kind!r}; supported: {[FULL, SLIDING]}")
        cos, sin = rope(kind)
        mask = causal_mask(seqlen, window) if kind == SLIDING else causal_mask(seqlen)
        variants[kind] = {"cos": cos, "sin": sin, "mask": mask}
    return [variants[kind] for kind in types]


QUERY_CHUNKS = 4  # causal attention in this many query chunks (for windows of ≥ 128 tokens)


def query_chunks(seqlen: int) -> int:
    """How many query chunks `attention` uses for windows of `seqlen` tokens."""
    return QUERY_CHUNKS if seqlen >= 128 and seqlen % QUERY_CHUNKS == 0 else 1


def attention(q, k, v, mask, scale: float, softcap: float | None = None):
    """Causal attention: q[B,T,H,D], k/v[B,T,KV,D] (grouped-query: H % KV == 0), mask bool[T,T] with
    mask[i, j] False for every j > i (`causal_mask`) -> [B,T,H,D].

    The queries go in chunks, each against the keys up to its last position only: the keys after it are
    masked for the whole chunk, so skipping them changes no value (the masked logits' probabilities are
    exactly 0) and saves 3/8 of the products and of the softmax with 4 chunks."""
    T = q.shape[1]
    n = query_chunks(T)
    c = T // n
    parts = [_attend(q[:, i * c:(i + 1) * c], k[:, :(i + 1) * c], v[:, :(i + 1) * c],
                     mask[i * c:(i + 1) * c, :(i + 1) * c], scale, softcap) for i in range(n)]
    return parts[0] if n == 1 else jnp.concatenate(parts, axis=1)


def _attend(q, k, v, mask, scale: float, softcap: float | None):
    """q[B,Tq,H,D] against k/v[B,Tk,KV,D] under mask bool[Tq,Tk].

    Heads go first and query heads are grouped by their shared k/v head: per (window, k/v head) one
    [G·Tq, D] × [D, Tk] product and one [G·Tq, Tk] × [Tk, D] product (no repeated k/v, plain batched matmuls)."""
    B, Tq, H, D = q.shape
    Tk, kv = k.shape[1], k.shape[2]
    g = H // kv
    qg = q.reshape(B, Tq, kv, g, D).transpose(0, 2, 3, 1, 4).reshape(B, kv, g * Tq, D)
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KV, Tk, D]
    logits = jnp.einsum("bhqd,bhkd->bhqk", qg, kh, preferred_element_type=F32).reshape(B, kv, g, Tq, Tk) * scale
    if softcap is not None:
        logits = jnp.tanh(logits / softcap) * softcap
    logits = jnp.where(mask, logits, jnp.finfo(F32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype).reshape(B, kv, g * Tq, Tk)
    out = jnp.einsum("bhqk,bhkd->bhqd", probs, vh, preferred_element_type=F32).reshape(B, kv, g, Tq, D)
    return out.transpose(0, 3, 1, 2, 4).reshape(B, Tq, H, D).astype(v.dtype)


def split_heads(x, n_heads: int, head_dim: int):
    return x.reshape(*x.shape[:-1], n_heads, head_dim)


def merge_heads(x):
    return x.reshape(*x.shape[:-2], -1)


def rotary_dim(cfg: ModelConfig) -> int:
    return int(cfg.head_dim * cfg.partial_rotary_factor)
