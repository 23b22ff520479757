"""Logit and per-layer-input parity with transformers' PyTorch models on tiny random checkpoints.

Each case builds a HF model offline from a config, gives it O(1) random weights (so attention,
norms and biases all matter), saves it with `save_pretrained`, loads it with
`converters.hf.load_hf` and compares our JAX forward (and block outputs) with torch.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from converters.hf import load_hf  # noqa: E402
from converters.hf_tables import TABLES  # noqa: E402
from neuroal_jax.models import NEXT_BLOCK, block_apply, block_contexts, embed, family_of, forward  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

TOL = 1e-4
SEQ, BATCH, VOCAB = 16, 2, 128
SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_attention_heads=4,
             max_position_embeddings=256)


def _llama(**kw):
    return transformers.LlamaConfig(**{**SMALL, "num_hidden_layers": 2, "num_key_value_heads": 4, **kw})


PHI3_TOKENS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)  # Phi3Config's default ids exceed VOCAB
#: case name -> HF config factory (2-3 blocks, hidden 64, float32).
CASES = {
    "llama_mha": lambda: _llama(),
    "llama_gqa": lambda: _llama(num_key_value_heads=2, tie_word_embeddings=True),
    "llama_llama3_rope": lambda: _llama(num_key_value_heads=2, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}),
    "mistral_window": lambda: transformers.MistralConfig(
        **SMALL, num_hidden_layers=2, num_key_value_heads=2, head_dim=16, sliding_window=5),
    "qwen2_bias": lambda: transformers.Qwen2Config(
        **SMALL, num_hidden_layers=2, num_key_value_heads=2, tie_word_embeddings=False),
    "opt": lambda: transformers.OPTConfig(
        vocab_size=VOCAB, hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, dropout=0.0),
    "phi": lambda: transformers.PhiConfig(**SMALL, num_hidden_layers=2, partial_rotary_factor=0.4),
    "gemma3": lambda: transformers.Gemma3TextConfig(
        **SMALL, num_hidden_layers=3, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        sliding_window=5, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "gemma3_softcap": lambda: transformers.Gemma3TextConfig(
        **SMALL, num_hidden_layers=2, num_key_value_heads=1, head_dim=16, sliding_window=6,
        layer_types=["full_attention", "sliding_attention"], final_logit_softcapping=3.0),
    "qwen3": lambda: transformers.Qwen3Config(
        **SMALL, num_hidden_layers=3, num_key_value_heads=2, head_dim=24, attention_bias=True,
        use_sliding_window=True, sliding_window=5, max_window_layers=1),
    "phi3": lambda: transformers.Phi3Config(**SMALL, **PHI3_TOKENS, num_hidden_layers=2, sliding_window=6),
    # windows of SEQ tokens use the short factors, LONG ones the long factors; both scale by the attention factor
    "phi3_longrope": lambda: transformers.Phi3Config(
        **SMALL, **PHI3_TOKENS, num_hidden_layers=2, num_key_value_heads=2, partial_rotary_factor=0.75,
        tie_word_embeddings=True, original_max_position_embeddings=32, rope_scaling={
            "rope_type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
            "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]}),
    "gemma2": lambda: transformers.Gemma2Config(
        **SMALL, num_hidden_layers=3, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        sliding_window=5, attn_logit_softcapping=2.0, final_logit_softcapping=3.0),
}


def randomize_(model, seed: int) -> None:
    """O(1) random weights: norm weights near 1 (Gemma's near 0), biases and matrices random."""
    gen = torch.Generator().manual_seed(seed)
    gemma = model.config.model_type.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_((0.0 if gemma else 1.0) + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            elif "embed" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(1.5 * noise / p.shape[1] ** 0.5)


def build(case: str, folder):
    """(torch model, our cfg, our params, tokens [B,T]) for one case, saved under `folder`."""
    transformers.set_seed(0)
    hf_cfg = CASES[case]()
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32).eval()
    randomize_(model, seed=len(case))
    model.save_pretrained(folder)
    cfg, params, _ = load_hf(folder)
    tokens = np.random.default_rng(len(case)).integers(0, VOCAB, (BATCH, SEQ))
    return model, cfg, params, tokens


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    return {case: build(case, root / case) for case in CASES}


def torch_logits(model, tokens) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.float().numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(built, case):
    model, cfg, params, tokens = built[case]
    ours = np.asarray(forward(cfg, params, tokens))
    ref = torch_logits(model, tokens)
    assert ours.shape == ref.shape == (BATCH, SEQ, VOCAB)
    assert np.abs(ref).max() > 0.5, "degenerate test model"
    diff = np.abs(ours - ref).max()
    print(f"{case}: max |logit diff| = {diff:.2e} (relative to max |logit|: {diff / np.abs(ref).max():.1e})")
    assert diff <= TOL


@pytest.mark.parametrize("case, attr, off", [
    ("mistral_window", "sliding_window", 10**6), ("gemma3", "sliding_window", 10**6),
    ("gemma3_softcap", "final_logit_softcapping", None), ("qwen3", "sliding_window", 10**6),
    ("phi3", "sliding_window", None), ("gemma2", "sliding_window", 10**6), ("gemma2", "final_logit_softcapping", None),
])
def test_window_and_softcap_matter(built, case, attr, off):
    """Torch with the feature switched off disagrees with us: the parity above is not vacuous."""
    model, cfg, params, tokens = built[case]
    ours = np.asarray(forward(cfg, params, tokens))
    saved = getattr(model.config, attr)
    setattr(model.config, attr, off)
    try:
        assert np.abs(ours - torch_logits(model, tokens)).max() > 1e-2
    finally:
        setattr(model.config, attr, saved)


def hf_layer(model, case: str, cfg, index: int):
    return model.get_submodule(f"{TABLES[cfg.family].blocks}.{index}")


def hooked_inputs(model, case, cfg, tokens) -> list[dict[str, np.ndarray]]:
    """Per block: {prunable layer: the input its torch module saw}, via forward hooks."""
    seen = [{} for _ in range(cfg.num_layers)]
    handles = []
    for b in range(cfg.num_layers):
        layer = hf_layer(model, case, cfg, b)
        for name in family_of(cfg).prunable:
            def hook(mod, args, out, b=b, name=name):
                seen[b][name] = args[0].detach().numpy().reshape(BATCH, SEQ, -1)
            handles.append(layer.get_submodule(name).register_forward_hook(hook))
    try:
        torch_logits(model, tokens)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("case", ["llama_gqa", "opt", "phi", "gemma3", "qwen3", "phi3", "phi3_longrope", "gemma2"])
def test_block_inputs_match_forward_hooks(built, case):
    model, cfg, params, tokens = built[case]
    fam = family_of(cfg)
    torch_lin = [n for n, m in hf_layer(model, case, cfg, 0).named_modules() if isinstance(m, torch.nn.Linear)]
    # module registration order, as find_layers gives; Phi-3 registers o_proj before qkv_proj, ours go in forward
    # order (the first layer reads the block input: docs/algorithm.md §6)
    assert list(fam.prunable) == torch_lin or (cfg.family == "phi3" and sorted(fam.prunable) == sorted(torch_lin))
    seen = hooked_inputs(model, case, cfg, tokens)
    x = embed(cfg, params, tokens)
    for b, (p, ctx) in enumerate(zip(params["blocks"], block_contexts(cfg, SEQ))):
        x, inputs = block_apply(cfg, p, x, ctx)
        assert set(inputs) == set(fam.prunable)
        for name, a in inputs.items():
            assert a.shape == (BATCH, SEQ, p[name]["weight"].shape[1]), (b, name)
            np.testing.assert_allclose(np.asarray(a), seen[b][name], atol=TOL, rtol=0, err_msg=f"block {b} {name}")


@pytest.mark.parametrize("case", list(CASES))
def test_consumer_map_fits_shapes(built, case):
    """Every prunable layer has a consumer whose input columns match its rows, once per stacked part of a fused
    layer (except the attention projections under GQA, whose rows stay uniform)."""
    _, cfg, params, _ = built[case]
    fam, p = family_of(cfg), params["blocks"][0]
    assert set(fam.consumers) == set(fam.prunable) and set(fam.row_tiles) <= set(fam.prunable)
    attn_out = fam.consumers[fam.prunable[0]]
    for layer, consumer in fam.consumers.items():
        target = fam.prunable[0] if consumer == NEXT_BLOCK else consumer
        rows, cols = p[layer]["weight"].shape[0], p[target]["weight"].shape[1]
        gqa = cfg.num_kv_heads != cfg.num_heads and consumer == attn_out
        assert rows == cols * fam.row_tiles.get(layer, 1) or gqa, (layer, consumer)


LONG = 128  # long enough for the chunked causal attention (models.layers.QUERY_CHUNKS chunks)


@pytest.mark.parametrize("case", ["llama_gqa", "mistral_window", "gemma3_softcap", "qwen3", "phi3_longrope", "gemma2"])
def test_long_windows_match_transformers(built, case):
    model, cfg, params, _ = built[case]
    tokens = np.random.default_rng(1).integers(0, VOCAB, (1, LONG))
    diff = np.abs(np.asarray(forward(cfg, params, tokens)) - torch_logits(model, tokens)).max()
    assert diff <= TOL, diff


@pytest.mark.parametrize("window, softcap", [(None, None), (40, None), (None, 5.0)])
def test_chunked_attention_equals_one_chunk_exactly(window, softcap):
    """Skipping the keys after each query chunk changes no bit: their probabilities are exactly 0."""
    import jax

    from neuroal_jax.models import layers as L

    T = 256
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, T, h, 16)) for i, h in enumerate((6, 2, 2)))
    mask = L.causal_mask(T, window)
    chunked = L.attention(q, k, v, mask, 0.25, softcap)
    whole = L._attend(q, k, v, mask, 0.25, softcap)
    assert L.QUERY_CHUNKS > 1
    np.testing.assert_array_equal(np.asarray(chunked), np.asarray(whole))
