"""Qwen3, Phi-3 (fused qkv_proj / gate_up_proj, LongRoPE) and Gemma 2 end to end.

Logit and per-layer-input parity with transformers are the parity cases "qwen3", "phi3", "phi3_longrope" and
"gemma2" of tests/test_parity.py (and their export round trips in tests/test_roundtrip.py). Here: a pruned model
exported and read back by transformers, NeuroAL's block and row steps on each family (the row step's δ on fused
layers), a Qwen3 GGUF, and the bad-input contract for the new config attributes.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cli_run import assert_clean_error, run_cli_all, snapshot  # noqa: E402
from neuroal_jax import prune  # noqa: E402
from neuroal_jax.config import ModelConfig  # noqa: E402
from neuroal_jax.models import family_of, forward, init_params, layer_key, prunable_layers  # noqa: E402
from neuroal_jax.topups.neuroal.schedules import row_deltas  # noqa: E402
from test_parity import TOL, VOCAB, build, torch_logits  # noqa: E402

transformers.logging.set_verbosity_error()

#: One parity case per new family (phi3 twice: MHA with default RoPE and a window, GQA with LongRoPE, tied head).
FAMILY_CASES = {"qwen3": "qwen3", "phi3": "phi3", "phi3_longrope": "phi3", "gemma2": "gemma2"}
SEQLEN = 32


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """case -> a HF folder saved by transformers (random O(1) weights, norms included)."""
    root = tmp_path_factory.mktemp("families")
    for case in FAMILY_CASES:
        build(case, root / case)
    return {case: root / case for case in FAMILY_CASES}


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "tokens.npy"
    np.save(path, np.random.default_rng(0).integers(0, VOCAB, 4096).astype(np.int64))
    return path


def run(folder, calib, **kw):
    base = dict(method="wanda", sparsity=0.5, top_up="uniform", calib=f"tokens:{calib}", nsamples=8, seqlen=SEQLEN,
                progress=False)
    return prune(str(folder), **{**base, **kw})


# ---------------------------------------------------------------- prune -> export -> transformers

@pytest.mark.parametrize("case", list(FAMILY_CASES))
def test_pruned_export_reads_back_in_transformers(folders, calib, tmp_path, case):
    result = run(folders[case], calib, out=tmp_path / "run")
    cfg = result.config
    assert cfg.family == FAMILY_CASES[case]
    assert abs(result.report["sparsity"] - 0.5) < 1e-3
    model = transformers.AutoModelForCausalLM.from_pretrained(result.out, dtype=torch.float32).eval()
    modules = dict(model.named_modules())
    for key, mask in result.masks.items():  # fused layers are pruned as one matrix under their HF name
        b, name = key.split(".", 1)
        W = modules[f"model.layers.{b}.{name}"].weight.detach().numpy()
        assert np.array_equal(W != 0, np.asarray(mask)), key
    tokens = np.random.default_rng(1).integers(0, VOCAB, (2, SEQLEN))
    ref = torch_logits(model, tokens)
    diff = np.abs(np.asarray(forward(cfg, result.params, tokens)) - ref).max()
    print(f"{case}: max |logit diff| after pruning and export = {diff:.2e} (relative {diff / np.abs(ref).max():.1e})")
    assert diff <= TOL


def test_nm_structure_on_fused_layers(folders, calib):
    """2:4 groups run along each fused layer's inputs (the hidden size), as for any other layer."""
    result = run(folders["phi3"], calib, structure="2:4")
    for key in ("0.self_attn.qkv_proj", "1.mlp.gate_up_proj"):
        mask = np.asarray(result.masks[key])
        assert (mask.reshape(mask.shape[0], -1, 4).sum(axis=-1) == 2).all(), key


# ---------------------------------------------------------------- NeuroAL on each family

NEUROAL = {"neuroal_step": "both", "lambdas_block": (0.01, 0.05), "lambdas_row": (0.05,)}


@pytest.mark.filterwarnings("ignore::neuroal_jax.errors.SparsityWarning")  # tiny rows: ±1 weight is 1-2 points
@pytest.mark.parametrize("case", list(FAMILY_CASES))
def test_neuroal_both_steps(folders, calib, case):
    result = run(folders[case], calib, top_up="neuroal", options=NEUROAL)
    cfg = result.config
    keys = {layer_key(b, n) for b in range(cfg.num_layers) for n in prunable_layers(cfg)}
    assert set(result.dist) == set(result.masks) == keys
    kept = sum(int(np.asarray(m).sum()) for m in result.masks.values())
    total = sum(np.asarray(m).size for m in result.masks.values())
    assert abs((1 - kept / total) - result.report["sparsity"]) < 1e-9
    assert abs(result.report["sparsity"] - 0.5) < 0.02, result.report["sparsity"]
    for key, rows in result.dist.items():  # every row meets its own target
        mask = np.asarray(result.masks[key])
        np.testing.assert_allclose(1 - mask.mean(axis=1), rows, atol=1 / mask.shape[1] + 1e-9, err_msg=key)
    if cfg.family != "phi3":
        return
    # the fused layers of block 0 take their consumer's δ once per part: equal parts, not uniform
    I, gate_up = cfg.intermediate_size, result.dist["0.mlp.gate_up_proj"]
    assert np.array_equal(gate_up[:I], gate_up[I:]) and np.ptp(gate_up) > 0
    qkv = result.dist["0.self_attn.qkv_proj"]
    if cfg.num_kv_heads == cfg.num_heads:
        assert np.array_equal(qkv, np.tile(qkv[:len(qkv) // 3], 3)) and np.ptp(qkv) > 0
    else:  # grouped-query attention: uniform rows, like q/k/v of the unfused families
        assert np.ptp(qkv) == 0


def _fake_deltas(cfg: ModelConfig, seed: int = 0) -> dict:
    shapes = family_of(cfg).param_shapes(cfg)["blocks"]
    rng = np.random.default_rng(seed)
    return {layer_key(b, n): rng.random(shapes[b][n]["weight"][1]).astype(np.float32)
            for b in range(cfg.num_layers) for n in prunable_layers(cfg)}


PHI3 = ModelConfig(family="phi3", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4,
                   num_kv_heads=4, head_dim=8, max_position_embeddings=64)


def test_row_deltas_of_fused_layers():
    deltas = _fake_deltas(PHI3)
    out = row_deltas(PHI3, deltas)
    for b in range(PHI3.num_layers - 1):
        np.testing.assert_array_equal(out[f"{b}.self_attn.qkv_proj"], np.tile(deltas[f"{b}.self_attn.o_proj"], 3))
        np.testing.assert_array_equal(out[f"{b}.mlp.gate_up_proj"], np.tile(deltas[f"{b}.mlp.down_proj"], 2))
        assert out[f"{b}.self_attn.o_proj"] is deltas[f"{b}.mlp.gate_up_proj"]
        assert out[f"{b}.mlp.down_proj"] is deltas[f"{b + 1}.self_attn.qkv_proj"]
    assert all(out[f"2.{n}"] is None for n in prunable_layers(PHI3))  # the last block has no consumer
    assert out["0.self_attn.qkv_proj"].shape == (3 * 32,) and out["0.mlp.gate_up_proj"].shape == (2 * 48,)
    gqa = row_deltas(PHI3.replace(num_kv_heads=2), _fake_deltas(PHI3.replace(num_kv_heads=2)))
    assert gqa["0.self_attn.qkv_proj"] is None and gqa["0.mlp.gate_up_proj"] is not None


def test_row_deltas_of_unfused_families_are_the_consumers_own():
    """No tiling anywhere else: the very δ arrays of the consumers, as before fused layers existed."""
    for family in ("llama", "qwen3", "gemma2"):
        cfg = PHI3.replace(family=family)
        deltas = _fake_deltas(cfg)
        out = row_deltas(cfg, deltas)
        assert out["0.self_attn.q_proj"] is deltas["0.self_attn.o_proj"]
        assert out["0.mlp.gate_proj"] is out["0.mlp.up_proj"] is deltas["0.mlp.down_proj"]


# ---------------------------------------------------------------- GGUF (llama.cpp architecture "qwen3")

def test_synthetic_qwen3_gguf(tmp_path):
    from converters.gguf import load_gguf
    from test_gguf import LLAMA_NAMES, assert_same_params, common_meta, gguf_name, write_gguf

    cfg = ModelConfig(family="qwen3", vocab_size=96, hidden_size=64, intermediate_size=80, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=24, max_position_embeddings=128, norm_eps=1e-6, rope_theta=1e6,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    params = init_params(cfg, seed=3, scale=0.1)
    names = {**LLAMA_NAMES, "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
    from converters.hf import tensors_from_params
    tensors = {gguf_name(n, names): np.asarray(a) for n, a in tensors_from_params(cfg, params).items()}
    assert "blk.1.attn_q_norm.weight" in tensors and "output.weight" in tensors
    meta = {**common_meta("qwen3", cfg), "qwen3.attention.layer_norm_rms_epsilon": cfg.norm_eps,
            "qwen3.attention.key_length": 24, "qwen3.attention.value_length": 24, "general.name": "tiny",
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}
    write_gguf(tmp_path / "q3.gguf", "qwen3", meta, tensors)
    got_cfg, got = load_gguf(tmp_path / "q3.gguf")
    assert got_cfg == cfg
    assert_same_params(got, params)


# ---------------------------------------------------------------- bad input

def _edited(folder, dest, **changes):
    shutil.copytree(folder, dest)
    hf = json.loads((dest / "config.json").read_text())
    hf.update(changes)
    (dest / "config.json").write_text(json.dumps(hf))
    return dest


def test_bad_configs_are_refused_by_name(folders, calib, tmp_path):
    """An unsupported phi3 RoPE type and an unknown qwen3 attribute: exit 2, one line naming the value, nothing
    written."""
    hf = json.loads((folders["phi3"] / "config.json").read_text())
    hf.pop("rope_scaling", None)
    rope = {**(hf.pop("rope_parameters", None) or {}), "rope_type": "dynamic", "factor": 2.0}
    phi3 = _edited(folders["phi3"], tmp_path / "phi3", rope_parameters=rope)
    qwen3 = _edited(folders["qwen3"], tmp_path / "qwen3", my_new_feature=7)
    before = {p: snapshot(p) for p in (phi3, qwen3)}

    def argv(model, out):
        return ["prune", "--model", model, "--method", "wanda", "--sparsity", "0.5", "--top-up", "uniform",
                "--calib", f"tokens:{calib}", "--nsamples", "4", "--seqlen", "32", "--out", out, "--quiet"]

    bad_rope, unknown = run_cli_all(argv(phi3, tmp_path / "out1"), argv(qwen3, tmp_path / "out2"))
    assert_clean_error(bad_rope, "rope_type='dynamic'", "longrope")
    assert_clean_error(unknown, "my_new_feature=7", "qwen3")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()
    assert {p: snapshot(p) for p in (phi3, qwen3)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phi3", "qwen3"]


@pytest.mark.parametrize("hf, match", [
    ({"model_type": "qwen3", "use_sliding_window": False, "layer_types": ["sliding_attention"] * 2},
     r"layer_types with sliding_attention layers while use_sliding_window=False"),
    ({"model_type": "qwen3", "layer_types": ["full_attention", "chunked_attention"]},
     r"layer_types containing \['chunked_attention'\]"),
    ({"model_type": "phi3", "rope_scaling": {"rope_type": "linear", "factor": 2.0}}, r"rope_type='linear'"),
    ({"model_type": "phi3", "rope_scaling": {"type": "su", "short_factor": [1.0] * 8, "long_factor": [1.0] * 3}},
     r"rope_scaling\.long_factor=\(1\.0, 1\.0, 1\.0\) \(longrope needs a list of 8 numbers"),
    ({"model_type": "phi3", "mlp_bias": True}, r"mlp_bias=True \(only False"),
    ({"model_type": "gemma2", "sliding_window": None}, r"sliding_window=None"),
    ({"model_type": "gemma2", "use_bidirectional_attention": True}, r"use_bidirectional_attention=True"),
])
def test_unsupported_values_name_the_value(hf, match):
    from converters.hf import config_from_hf
    base = {"vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    with pytest.raises(ValueError, match=match):
        config_from_hf({**base, **hf})


def test_config_defaults_follow_transformers():
    """Attributes a config.json leaves out take transformers' defaults; an explicit null switches soft-capping off."""
    from converters.hf import config_from_hf
    base = {"vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    qwen3 = config_from_hf({**base, "model_type": "qwen3"})
    assert (qwen3.head_dim, qwen3.sliding_window, qwen3.layer_types, qwen3.tie_word_embeddings) == (128, None, None,
                                                                                                    False)
    windowed = config_from_hf({**base, "model_type": "qwen3", "use_sliding_window": True, "max_window_layers": 1})
    assert windowed.sliding_window == 4096 and windowed.layer_types == ("full_attention", "sliding_attention")
    gemma2 = config_from_hf({**base, "model_type": "gemma2"})
    assert (gemma2.attn_logit_softcapping, gemma2.final_logit_softcapping, gemma2.layer_types) == (
        50.0, 30.0, ("sliding_attention", "full_attention"))
    off = config_from_hf({**base, "model_type": "gemma2", "attn_logit_softcapping": None,
                          "final_logit_softcapping": None})
    assert off.attn_logit_softcapping is None and off.final_logit_softcapping is None
    phi3 = config_from_hf({**base, "model_type": "phi3", "rope_scaling": {
        "type": "su", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8}, "max_position_embeddings": 8192})
    assert phi3.rope_scaling_dict == {"rope_type": "longrope", "short_factor": (1.0,) * 8, "long_factor": (2.0,) * 8,
                                      "original_max_position_embeddings": 4096}
    assert ModelConfig.from_dict(json.loads(json.dumps(phi3.to_dict()))) == phi3
