"""Converter errors name the problem; safetensors I/O is bit-exact (bfloat16 included)."""
from __future__ import annotations

import json
import shutil
import struct

import ml_dtypes
import numpy as np
import pytest

from converters import safetensors_io
from converters.hf import config_from_hf, export_hf, load_hf
from converters.safetensors_io import SafetensorsError


@pytest.fixture
def folder(tiny_llama_dir, tmp_path):
    """A private copy of the tiny exported Llama, free to corrupt."""
    return shutil.copytree(tiny_llama_dir, tmp_path / "model")


def edit_config(folder, **changes):
    path = folder / "config.json"
    hf = json.loads(path.read_text())
    hf.update(changes)
    path.write_text(json.dumps(hf))


def test_the_copy_loads(folder, tiny_llama):
    cfg, params, _ = load_hf(folder)
    assert cfg == tiny_llama[0]


def test_unknown_model_type(folder):
    edit_config(folder, model_type="gpt2")
    with pytest.raises(ValueError, match=r"unknown model family: HF model_type 'gpt2'"):
        load_hf(folder)


def test_missing_model_type():
    with pytest.raises(ValueError, match="no model_type"):
        config_from_hf({"hidden_size": 64})


def test_unhandled_config_attribute(folder):
    edit_config(folder, foo_bar=3)
    with pytest.raises(ValueError, match=r"unhandled config attribute.*foo_bar=3"):
        load_hf(folder)


@pytest.mark.parametrize("key", ["rope_scaling", "rope_parameters"])
def test_unsupported_rope_type(folder, key):
    edit_config(folder, **{key: {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}})
    with pytest.raises(ValueError, match=r"rope_scaling\.rope_type='yarn'"):
        load_hf(folder)


@pytest.mark.parametrize("hf, match", [
    ({"model_type": "phi", "qk_layernorm": True}, r"qk_layernorm=True"),
    ({"model_type": "phi", "tie_word_embeddings": True}, r"tie_word_embeddings=True"),
    ({"model_type": "opt", "do_layer_norm_before": False}, r"do_layer_norm_before=False"),
    ({"model_type": "opt", "word_embed_proj_dim": 32}, r"word_embed_proj_dim=32"),
    ({"model_type": "gemma3_text", "attn_logit_softcapping": 50.0}, r"attn_logit_softcapping=50\.0"),
    ({"model_type": "llama", "hidden_act": "swish2"}, r"hidden_act='swish2'"),
])
def test_unsupported_family_attributes(hf, match):
    base = {"vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    with pytest.raises(ValueError, match=match):
        config_from_hf({**base, **hf})


def test_missing_weight_file(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weight file"):
        load_hf(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        load_hf(tmp_path / "nowhere")


def test_truncated_safetensors(folder):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(SafetensorsError, match="truncated safetensors file"):
        load_hf(folder)


def test_garbage_safetensors_header(folder):
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 16) + b"\xff\xfenot json!!!!!!" + bytes(64))
    with pytest.raises(SafetensorsError, match="corrupt safetensors header"):
        load_hf(folder)


def test_header_longer_than_file(folder):
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(SafetensorsError, match="exceeds file size"):
        load_hf(folder)


def test_wrong_shaped_weight(folder):
    path = folder / "model.safetensors"
    tensors = {k: np.array(v) for k, v in safetensors_io.load_file(path).items()}
    name = "model.layers.1.mlp.up_proj.weight"
    tensors[name] = np.zeros((95, 64), np.float32)
    safetensors_io.save_file(tensors, path)
    with pytest.raises(ValueError, match=r"\['blocks'\]\[1\]\['mlp.up_proj'\]\['weight'\] has shape \(95, 64\), "
                                         r"expected \(96, 64\)"):
        load_hf(folder)


def test_unmapped_and_missing_tensors(folder):
    path = folder / "model.safetensors"
    tensors = {k: np.array(v) for k, v in safetensors_io.load_file(path).items()}
    tensors["model.extra.weight"] = np.zeros(3, np.float32)
    safetensors_io.save_file(tensors, path)
    with pytest.raises(ValueError, match=r"tensors the llama table does not map: \['model.extra.weight'\]"):
        load_hf(folder)
    del tensors["model.extra.weight"], tensors["model.norm.weight"]
    safetensors_io.save_file(tensors, path)
    with pytest.raises(ValueError, match=r"missing \['final_norm'\]\['weight'\]"):
        load_hf(folder)


def test_export_refuses_existing_folder_unless_forced(tiny_llama, tmp_path):
    cfg, params = tiny_llama
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(FileExistsError, match="already exists; pass --force"):
        export_hf(cfg, params, out)
    with pytest.raises(ValueError, match="not written by neuroal-jax"):  # not ours: never replaced
        export_hf(cfg, params, out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["stale.txt"]  # untouched
    ours = tmp_path / "ours"
    export_hf(cfg, params, ours)
    export_hf(cfg, params, ours, force=True)
    assert sorted(p.name for p in ours.iterdir()) == [".neuroal-jax.json", "config.json", "model.safetensors"]
    assert load_hf(ours)[0] == cfg
    assert not list(tmp_path.glob(".out.*")) and not list(tmp_path.glob(".ours.*"))  # no temporary folders left


def test_export_rejects_wrong_params(tiny_llama, tmp_path):
    cfg, params = tiny_llama
    bad = {**params, "final_norm": {"weight": np.zeros(3, np.float32)}}
    with pytest.raises(ValueError, match=r"\['final_norm'\]\['weight'\] has shape \(3,\)"):
        export_hf(cfg, bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bfloat16_round_trip_is_bit_exact(tmp_path):
    bits = np.array([0x0000, 0x8000, 0x0001, 0x807F, 0x3F80, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC1],
                    np.uint16)  # zeros, subnormals, 1, max, -max, +-inf, a NaN payload
    special = bits.view(ml_dtypes.bfloat16)
    rng = np.random.default_rng(0)
    tensors = {
        "special": special,
        "random": rng.standard_normal((3, 5, 7)).astype(ml_dtypes.bfloat16),
        "f32": rng.standard_normal((4, 4)).astype(np.float32),
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
    }
    path = tmp_path / "t.safetensors"
    safetensors_io.save_file(tensors, path)
    back = safetensors_io.load_file(path)
    assert sorted(back) == sorted(tensors)
    for name, a in tensors.items():
        b = back[name]
        assert b.dtype == a.dtype and b.shape == a.shape, name
        assert a.tobytes() == b.tobytes(), name
    header, _ = safetensors_io.read_header(path)
    assert header["special"]["dtype"] == "BF16"


def test_scalar_round_trip_keeps_its_shape(tmp_path):
    path = tmp_path / "s.safetensors"
    safetensors_io.save_file({"scalar": np.asarray(1.5, ml_dtypes.bfloat16)}, path)
    assert safetensors_io.load_file(path)["scalar"].shape == ()


def test_bfloat16_file_matches_the_safetensors_package(tmp_path):
    """Our writer's BF16 bytes read the same in the reference implementation (torch side)."""
    st = pytest.importorskip("safetensors.torch")
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(1).standard_normal((8, 3)).astype(ml_dtypes.bfloat16)
    safetensors_io.save_file({"w": a}, tmp_path / "ours.safetensors")
    t = st.load_file(str(tmp_path / "ours.safetensors"))["w"]
    assert t.dtype == torch.bfloat16
    assert np.array_equal(t.view(torch.int16).numpy().view(np.uint16), a.view(np.uint16))
    st.save_file({"w": t}, str(tmp_path / "theirs.safetensors"))
    back = safetensors_io.load_file(tmp_path / "theirs.safetensors")["w"]
    assert back.tobytes() == a.tobytes()


# ---------------------------------------------------------------- transformers-4 style configs

def test_v4_phi_config_keeps_top_level_partial_rotary_factor():
    """microsoft/phi-2's config.json keeps partial_rotary_factor next to rope_theta."""
    hf = {"model_type": "phi", "architectures": ["PhiForCausalLM"], "vocab_size": 128, "hidden_size": 64,
          "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
          "partial_rotary_factor": 0.4, "rope_theta": 10000.0, "rope_scaling": None, "qk_layernorm": False,
          "layer_norm_eps": 1e-5, "hidden_act": "gelu_new", "tie_word_embeddings": False,
          "resid_pdrop": 0.1, "embd_pdrop": 0.0}
    cfg = config_from_hf(hf)
    assert cfg.partial_rotary_factor == 0.4 and cfg.lm_head_bias and not cfg.tie_word_embeddings
    assert config_from_hf({k: v for k, v in hf.items() if k != "tie_word_embeddings"}).tie_word_embeddings is False


def test_v4_gemma3_config():
    """google/gemma-3-1b style: rope_local_base_freq and sliding_window_pattern instead of layer_types."""
    hf = {"model_type": "gemma3_text", "vocab_size": 128, "hidden_size": 64, "intermediate_size": 96,
          "num_hidden_layers": 7, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
          "query_pre_attn_scalar": 16, "rope_theta": 1000000, "rope_local_base_freq": 10000,
          "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "sliding_window": 512,
          "sliding_window_pattern": 6, "attn_logit_softcapping": None, "final_logit_softcapping": None,
          "cache_implementation": "hybrid", "hidden_activation": "gelu_pytorch_tanh", "eos_token_id": [1, 106]}
    cfg = config_from_hf(hf)
    assert cfg.layer_types == ("sliding_attention",) * 5 + ("full_attention", "sliding_attention")
    assert (cfg.rope_theta, cfg.rope_local_base_freq, cfg.rope_scaling_dict) == (
        1e6, 1e4, {"rope_type": "linear", "factor": 8.0})
    assert cfg.eos_token_id == (1, 106) and cfg.tie_word_embeddings and cfg.attn_logit_softcapping is None
    no_rope = {k: v for k, v in hf.items() if not k.startswith("rope")}
    assert (config_from_hf(no_rope).rope_theta, config_from_hf(no_rope).rope_local_base_freq) == (1e6, 1e4)


def test_opt_checkpoint_without_model_prefix(tmp_path):
    from neuroal_jax.models import init_params
    cfg = config_from_hf({"model_type": "opt", "vocab_size": 128, "hidden_size": 64, "ffn_dim": 96,
                          "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 32})
    params = init_params(cfg)
    folder = export_hf(cfg, params, tmp_path / "opt")
    path = folder / "model.safetensors"
    tensors = {k.removeprefix("model."): np.array(v) for k, v in safetensors_io.load_file(path).items()}
    safetensors_io.save_file(tensors, path)
    _, params2, _ = load_hf(folder)
    assert np.array_equal(params2["positions"]["weight"], params["positions"]["weight"])
