"""Model configuration: one frozen dataclass for every family.

A config is hashable, so jitted functions take it as a static argument.
Family-specific fields have neutral defaults; the converters fill them in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import UsageError

DTYPES = ("float32", "bfloat16")  # weights and activations; statistics and scores stay float32


@dataclass(frozen=True)
class ModelConfig:
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    norm_eps: float = 1e-6
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    # attention
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, object], ...] | None = None  # sorted (key, value) pairs; lists as tuples
    partial_rotary_factor: float = 1.0  # phi: rotary on the first fraction of each head
    attention_bias: bool = False  # bias on q, k, v
    o_bias: bool = False  # bias on the attention output projection
    mlp_bias: bool = False
    lm_head_bias: bool = False
    query_pre_attn_scalar: float | None = None  # gemma3: scale = scalar ** -0.5
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None  # gemma2/3, qwen3: "sliding_attention" | "full_attention"
    rope_local_base_freq: float | None = None  # gemma3 sliding layers
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    # mixture of experts (models/moe.py); num_experts 0: a dense model
    num_experts: int = 0
    num_experts_per_tok: int = 0  # top-k routing
    moe_intermediate_size: int = 0  # each expert's hidden width
    norm_topk_prob: bool = True  # renormalise the top-k router probabilities to sum to 1
    shared_expert_intermediate_size: int = 0  # qwen2_moe's sigmoid-gated shared expert; 0: none
    #: not a model fact but the calibration setting the statistics read (pruning/statistics.py): an expert's
    #: statistics over the tokens "routed" to it, or over "all" tokens. Never exported.
    moe_statistics: str = "routed"
    #: not a model fact either (never exported): how the routed MLP computes, "grouped" (each expert on its own
    #: tokens, models/moe.py) or "dense" (every expert on every token; what differentiation needs)
    moe_dispatch: str = "grouped"
    # special tokens (kept for export)
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None

    def check_seqlen(self, seqlen: int) -> int:
        """`seqlen`, or a ValueError when windows that long do not fit the model's context."""
        if seqlen > self.max_position_embeddings:
            raise UsageError(f"seqlen {seqlen} exceeds the model's context length {self.max_position_embeddings}; "
                             "pass a smaller seqlen")
        return seqlen

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @property
    def rope_scaling_dict(self) -> dict | None:
        return dict(self.rope_scaling) if self.rope_scaling is not None else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        for key in ("layer_types", "eos_token_id"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in d["rope_scaling"])
        return cls(**d)
