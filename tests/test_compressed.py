"""Compressed sparse checkpoints (`--save-format compressed`, compressed-tensors' sparse-bitmask format): bit-exact
round trips through our loader, the same weights and logits in transformers as the dense export, and prune / export
/ eval-ppl on compressed folders."""
from __future__ import annotations

import json
import re

import jax
import ml_dtypes
import numpy as np
import pytest

from cli_run import assert_clean_error, run_cli
from conftest import TINY_LLAMA
from converters.compressed import FORMAT, check_save_format
from converters.hf import export_hf, load_hf
from converters.hf_tables import TABLES
from neuroal_jax.models import init_params

try:
    check_save_format("compressed")
except ImportError as e:  # the main environment: these tests run in .venv-compressed (scripts/run_tests.sh)
    pytest.skip(f"{e}; scripts/run_tests.sh runs these in .venv-compressed", allow_module_level=True)
import torch  # noqa: E402  (the compressed extra brings torch and transformers < 4.56)
import transformers  # noqa: E402

pytestmark = pytest.mark.xdist_group("compressed")


def sparse_params(dtype=np.float32, sparsity=0.7, seed=0) -> dict:
    """Tiny Llama params whose linear layers have `sparsity` of their entries at 0."""
    params = init_params(TINY_LLAMA, seed=seed, scale=0.1)
    rng = np.random.default_rng(seed)
    for p in params["blocks"]:
        for leaves in p.values():
            w = leaves.get("weight")
            if w is not None and w.ndim == 2:
                leaves["weight"] = np.where(rng.random(w.shape) < sparsity, 0.0, w).astype(dtype)
    return jax.tree.map(lambda x: np.asarray(x, dtype), params)


def bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a)).view(np.uint8)


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16], ids=["float32", "bfloat16"])
def test_pytree_compressed_pytree_is_bit_exact(tmp_path, dtype):
    params = sparse_params(dtype)
    folder = export_hf(TINY_LLAMA, params, tmp_path / "c", save_format="compressed")
    hf = json.loads((folder / "config.json").read_text())
    sparsity = hf["quantization_config"]["sparsity_config"]
    assert sparsity["format"] == FORMAT and sparsity["global_sparsity"] == pytest.approx(0.7, abs=0.02)
    cfg, loaded, _ = load_hf(folder, dtype=dtype)
    assert cfg == TINY_LLAMA
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(loaded)):
        assert np.asarray(b).dtype == np.dtype(dtype)
        assert np.array_equal(bits(a), bits(b)), jax.tree_util.keystr(path)


def test_transformers_reads_the_same_model_as_the_dense_export(tmp_path):
    params = sparse_params()
    dense = export_hf(TINY_LLAMA, params, tmp_path / "dense")
    compressed = export_hf(TINY_LLAMA, params, tmp_path / "compressed", save_format="compressed")
    assert (compressed / "model.safetensors").stat().st_size < 0.6 * (dense / "model.safetensors").stat().st_size
    models = [transformers.AutoModelForCausalLM.from_pretrained(str(f), torch_dtype=torch.float32)
              for f in (dense, compressed)]
    states = [m.state_dict() for m in models]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    tokens = torch.tensor(np.random.default_rng(0).integers(0, TINY_LLAMA.vocab_size, (2, 24)))
    with torch.no_grad():
        logits = [m(tokens).logits for m in models]
    assert torch.equal(logits[0], logits[1])


def test_prune_writes_compressed_and_every_command_reads_it(tmp_path):
    """prune --save-format compressed, then eval-ppl and export read the folder as the dense one; the masks are the
    same as a dense prune's."""
    from neuroal_jax import load_masks
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).integers(0, TINY_LLAMA.vocab_size, 4096))
    export_hf(TINY_LLAMA, init_params(TINY_LLAMA, seed=0, scale=0.1), tmp_path / "model")
    common = ["prune", "--model", tmp_path / "model", "--method", "wanda", "--sparsity", "0.6", "--top-up", "uniform",
              "--calib", f"tokens:{tmp_path / 'calib.npy'}", "--nsamples", "4", "--seqlen", "32", "--quiet"]
    for fmt in ("dense", "compressed"):
        proc = run_cli(*common, "--out", tmp_path / fmt, "--save-format", fmt)
        assert proc.returncode == 0, proc.stderr
    masks = [load_masks(tmp_path / fmt) for fmt in ("dense", "compressed")]
    assert all(np.array_equal(masks[0][k], masks[1][k]) for k in masks[0])
    _, dense, _ = load_hf(tmp_path / "dense")
    _, comp, _ = load_hf(tmp_path / "compressed")
    assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(jax.tree.leaves(dense), jax.tree.leaves(comp)))
    ppl = []
    for fmt in ("dense", "compressed"):
        proc = run_cli("eval-ppl", "--model", tmp_path / fmt, "--dataset", f"tokens:{tmp_path / 'calib.npy'}",
                       "--seqlen", "32", "--eval-nsamples", "4", "--quiet", "--json", tmp_path / f"{fmt}.json")
        assert proc.returncode == 0, proc.stderr
        ppl.append(json.loads((tmp_path / f"{fmt}.json").read_text())["perplexity"])
    assert ppl[0] == ppl[1]
    proc = run_cli("export", "--model", tmp_path / "compressed", "--out", tmp_path / "dense-again")
    assert proc.returncode == 0, proc.stderr
    _, again, _ = load_hf(tmp_path / "dense-again")
    assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(jax.tree.leaves(dense), jax.tree.leaves(again)))


def test_compressed_with_stream_and_quantized_configs_are_refused(tmp_path):
    params = sparse_params()
    folder = export_hf(TINY_LLAMA, params, tmp_path / "c", save_format="compressed")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).integers(0, TINY_LLAMA.vocab_size, 4096))
    prune = ["prune", "--model", folder, "--method", "wanda", "--sparsity", "0.5", "--top-up", "uniform",
             "--calib", f"tokens:{tmp_path / 'calib.npy'}", "--nsamples", "4", "--seqlen", "32", "--quiet"]
    assert_clean_error(run_cli(*prune, "--out", tmp_path / "o1", "--stream"), "sparse-bitmask", "--stream")
    assert_clean_error(run_cli(*prune, "--out", tmp_path / "o2", "--save-format", "compressed", "--stream"),
                       "--save-format", "--stream")
    hf = json.loads((folder / "config.json").read_text())
    hf["quantization_config"] = {"quant_method": "compressed-tensors", "config_groups": {"g": {}},
                                 "sparsity_config": None}
    (folder / "config.json").write_text(json.dumps(hf))
    assert_clean_error(run_cli("eval-ppl", "--model", folder, "--dataset", f"tokens:{tmp_path / 'calib.npy'}",
                               "--seqlen", "32"), "quantization_config", "sparse-bitmask")
    assert not any(p.name.startswith(("o1", "o2", ".o1", ".o2")) for p in tmp_path.iterdir())


def test_finetune_writes_compressed(tmp_path):
    """finetune --save-format compressed: the folder reads back as the trained model, bit for bit."""
    from neuroal_jax import finetune, prune
    np.save(tmp_path / "tokens.npy", np.random.default_rng(0).integers(0, TINY_LLAMA.vocab_size, 4096))
    data = f"tokens:{tmp_path / 'tokens.npy'}"
    prune((TINY_LLAMA, init_params(TINY_LLAMA, seed=0, scale=0.1)), method="wanda", sparsity=0.5, calib=data,
          nsamples=4, seqlen=32, out=tmp_path / "pruned", progress=False)
    result = finetune(tmp_path / "pruned", data=data, steps=2, batch_size=2, seqlen=32, out=tmp_path / "ft",
                      save_format="compressed", progress=False)
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["quantization_config"]["sparsity_config"]
    _, loaded, _ = load_hf(tmp_path / "ft")
    assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(jax.tree.leaves(result.params),
                                                                jax.tree.leaves(loaded)))


MOE_SMALL = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 max_position_embeddings=128, num_experts_per_tok=2)
MOE_CASES = {  # tests/test_moe.py's tiny models, 4 experts
    "mixtral": lambda: transformers.MixtralConfig(**MOE_SMALL, intermediate_size=32, num_local_experts=4),
    "qwen3_moe": lambda: transformers.Qwen3MoeConfig(**MOE_SMALL, head_dim=16, intermediate_size=48,
                                                     moe_intermediate_size=32, num_experts=4, norm_topk_prob=True),
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(**MOE_SMALL, intermediate_size=48, moe_intermediate_size=32,
                                                     shared_expert_intermediate_size=40, num_experts=4),
}


@pytest.mark.parametrize("family", list(MOE_CASES))
def test_moe_prune_writes_experts_compressed_and_routers_dense(tmp_path, family):
    """A MoE prune with save_format="compressed": every expert projection under its Hub name compressed, the routers
    (and qwen2_moe's shared-expert gate) dense and bit-identical, one sparsity target per layer name (not per expert
    and block), and transformers and our loader read back the pruned weights exactly."""
    from converters.hf import tensors_from_params
    from converters.safetensors_io import load_file, read_header
    from neuroal_jax import prune
    from neuroal_jax.models import prunable_layers
    from neuroal_jax.models.moe import dense_layers
    transformers.set_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(MOE_CASES[family](), torch_dtype=torch.float32)
    model.save_pretrained(tmp_path / "model")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).integers(0, 256, 4096))
    result = prune(str(tmp_path / "model"), method="wanda", sparsity=0.5, calib=f"tokens:{tmp_path / 'calib.npy'}",
                   nsamples=8, seqlen=32, eval=[], out=tmp_path / "out", save_format="compressed", progress=False)
    cfg, out = result.config, tmp_path / "out"
    original = load_file(tmp_path / "model" / "model.safetensors")
    names = set(read_header(out / "model.safetensors")[0])
    blocks = TABLES[cfg.family].blocks
    assert any(".experts.3." in n for n in prunable_layers(cfg))
    for b in range(cfg.num_layers):
        for layer in prunable_layers(cfg):
            hub = f"{blocks}.{b}.{layer}"
            assert f"{hub}.weight" in original and f"{hub}.weight" not in names, hub
            assert {f"{hub}.{part}" for part in ("compressed", "bitmask", "row_offsets", "shape")} <= names, hub
        for layer in dense_layers(cfg):
            hub = f"{blocks}.{b}.{layer}.weight"
            assert hub in names and np.array_equal(bits(load_file(out / "model.safetensors", [hub])[hub]),
                                                   bits(original[hub])), hub
    sparsity = json.loads((out / "config.json").read_text())["quantization_config"]["sparsity_config"]
    assert len(sparsity["targets"]) == len({re.sub(r"\.\d+\.", ".N.", n) for n in prunable_layers(cfg)})
    assert sparsity["global_sparsity"] == pytest.approx(0.5, abs=0.01)
    pruned = tensors_from_params(cfg, result.params)
    _, loaded, _ = load_hf(out)
    assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(jax.tree.leaves(result.params),
                                                                jax.tree.leaves(loaded)))
    state = transformers.AutoModelForCausalLM.from_pretrained(str(out), torch_dtype=torch.float32).state_dict()
    assert pruned.keys() <= state.keys()
    assert all(np.array_equal(bits(state[k].numpy()), bits(v)) for k, v in pruned.items())
