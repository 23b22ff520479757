"""pytree -> export_hf -> load_hf is bit-exact for every family, and transformers reads the export.

The configs are the parity cases' (tests/test_parity.py), so jitted forwards compiled there are
reused here when both files run in one session.
"""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from converters.hf import config_from_hf, config_to_hf, export_hf, load_hf  # noqa: E402
from neuroal_jax.models import forward, init_params  # noqa: E402
from test_parity import BATCH, CASES, SEQ, TOL, VOCAB  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

#: At least one case per family (llama, mistral, qwen2, opt, phi, gemma3, qwen3, phi3, gemma2).
ROUNDTRIP_CASES = ["llama_gqa", "llama_llama3_rope", "mistral_window", "qwen2_bias", "opt", "phi", "gemma3",
                   "gemma3_softcap", "qwen3", "phi3", "phi3_longrope", "gemma2"]


def our_config(case: str, tmp_path):
    """Our ModelConfig of a parity case, through the config.json transformers writes."""
    CASES[case]().save_pretrained(tmp_path)
    return config_from_hf(json.loads((tmp_path / "config.json").read_text()))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """case -> (cfg, params, exported folder)."""
    out = {}
    for i, case in enumerate(ROUNDTRIP_CASES):
        root = tmp_path_factory.mktemp(case)
        cfg = our_config(case, root / "hf-config")
        params = init_params(cfg, seed=i, scale=0.15)
        out[case] = cfg, params, export_hf(cfg, params, root / "export")
    return out


def test_every_family_is_covered(exported):
    from converters.hf_tables import TABLES
    from neuroal_jax.models.moe import NAMES as MOE  # the MoE families' round trips: tests/test_moe.py
    assert {cfg.family for cfg, _, _ in exported.values()} == set(TABLES) - set(MOE)


@pytest.mark.parametrize("case", ROUNDTRIP_CASES)
def test_export_load_is_bit_exact(exported, case):
    cfg, params, folder = exported[case]
    cfg2, params2, _ = load_hf(folder)
    assert cfg2 == cfg
    assert config_to_hf(cfg2) == json.loads((folder / "config.json").read_text())
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    leaves2 = jax.tree_util.tree_flatten_with_path(params2)[0]
    assert [k for k, _ in leaves] == [k for k, _ in leaves2]
    for (path, a), (_, b) in zip(leaves, leaves2):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, jax.tree_util.keystr(path)
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), jax.tree_util.keystr(path)


@pytest.mark.parametrize("case", ROUNDTRIP_CASES)
def test_transformers_reads_the_export(exported, case):
    cfg, params, folder = exported[case]
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert type(model).__name__ == config_to_hf(cfg)["architectures"][0]
    tokens = np.random.default_rng(1).integers(0, VOCAB, (BATCH, SEQ))
    with torch.no_grad():
        ref = model(torch.as_tensor(tokens)).logits.float().numpy()
    ours = np.asarray(forward(cfg, params, tokens))
    assert np.abs(ref).max() > 0.3, "degenerate test model"
    diff = np.abs(ours - ref).max()
    print(f"{case}: max |logit diff| after export = {diff:.2e}")
    assert diff <= TOL
