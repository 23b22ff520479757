"""Base scores (docs/algorithm.md §2) and calibration statistics (§1) against hand-computed NumPy values."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroal_jax.pruning import scores as S
from neuroal_jax.pruning.scores import LayerStats


@pytest.fixture
def small():
    W = np.array([[1.0, -2.0, 0.5],
                  [-3.0, 0.0, 4.0]], np.float32)  # [out=2, in=3]
    a = np.array([2.0, 0.5, 1.0], np.float32)  # [in]
    return W, a


def test_magnitude(small):
    W, a = small
    np.testing.assert_array_equal(np.asarray(S.get_score("magnitude")(W, LayerStats(a))),
                                  [[1.0, 2.0, 0.5], [3.0, 0.0, 4.0]])


def test_wanda(small):
    W, a = small
    got = np.asarray(S.get_score("wanda")(W, LayerStats(a)))
    np.testing.assert_allclose(got, [[2.0, 1.0, 0.5], [6.0, 0.0, 4.0]], rtol=0, atol=0)


def test_multiflow(small):
    W, a = small
    # G = |W| * a = [[2, 1, .5], [6, 0, 4]]; row means [7/6, 10/3]; column means [4, .5, 2.25]
    per_out = np.array([3.5 / 3, 10.0 / 3])
    per_in = np.array([4.0, 0.5, 2.25])
    want = np.abs(W) * np.outer(per_out, per_in)
    got = np.asarray(S.get_score("multiflow")(W, LayerStats(a)))
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("name", ["magnitude", "wanda", "multiflow"])
def test_scores_float32_and_jit(name):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((5, 7)).astype(np.float16)  # cast to float32 inside
    stats = LayerStats(act_norm=jnp.asarray(rng.random(7), jnp.float32), hessian=None)
    fn = S.get_score(name)
    eager = fn(W, stats)
    jitted = jax.jit(fn)(jnp.asarray(W), stats)  # LayerStats is a pytree (None leaf allowed)
    assert eager.dtype == jnp.float32 and eager.shape == (5, 7)
    # multiflow's means may be reduced in another order once fused under jit: last-bit differences
    np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=1e-6, atol=0)


def test_registry():
    assert {"magnitude", "wanda", "multiflow"} <= set(S.SCORES)
    assert "sparsegpt" not in S.SCORES  # SparseGPT changes weights: not a score
    with pytest.raises(ValueError, match=r"unknown score 'nope'; valid: magnitude, wanda, multiflow"):
        S.get_score("nope")
    with pytest.raises(ValueError, match="already registered"):
        S.register_score("wanda")(lambda W, s: W)


def test_register_custom_score():
    @S.register_score("_test_square")
    def square(W, stats):
        return jnp.square(jnp.asarray(W, jnp.float32))

    assert S.get_score("_test_square") is square
    np.testing.assert_array_equal(np.asarray(square(np.array([[2.0, -3.0]]), None)), [[4.0, 9.0]])
    S.register_score("_test_square", override=True)(square)


def test_layer_stats_pytree():
    st = LayerStats(jnp.ones(3), jnp.eye(3))
    leaves = jax.tree_util.tree_leaves(st)
    assert len(leaves) == 2
    assert len(jax.tree_util.tree_leaves(LayerStats(jnp.ones(3)))) == 1


def test_statistics_of_a_block_match_its_raw_inputs(tiny_llama):
    """Activation norms and Hessians from one dense block forward equal the definitions of docs/algorithm.md §1
    computed in float64 from the layer inputs the block returns."""
    from neuroal_jax.models import block_apply, block_contexts, embed
    from neuroal_jax.pruning.statistics import collect_block_stats, embed_batches

    cfg, params = tiny_llama
    windows = np.random.default_rng(0).integers(0, cfg.vocab_size, (5, 16))
    xs = embed_batches(cfg, params, windows, batch_size=2)  # 3 batches: the running mean crosses them
    ctx = block_contexts(cfg, 16)[0]
    _, stats = collect_block_stats(cfg, params["blocks"][0], xs, ctx, hessian=True)
    _, inputs = block_apply(cfg, params["blocks"][0], embed(cfg, params, windows), ctx)
    for name, X in inputs.items():
        X = np.asarray(X, np.float64)  # [N, T, in]
        np.testing.assert_allclose(stats.act_norm[name], np.sqrt((X ** 2).sum(axis=(0, 1)) / len(X)), rtol=1e-5)
        np.testing.assert_allclose(stats.hessian[name], 2 / len(X) * np.einsum("nti,ntj->ij", X, X),
                                   rtol=1e-4, atol=1e-4)


def test_running_mean_is_the_mean():
    from neuroal_jax.pruning.statistics import running_mean, running_mean_norms
    rows = np.random.default_rng(4).random((7, 5)).astype(np.float32)
    np.testing.assert_allclose(running_mean(rows), rows.astype(np.float64).mean(0), rtol=1e-6)
    assert running_mean(rows).dtype == np.float32
    np.testing.assert_allclose(running_mean_norms(rows), np.sqrt(rows.astype(np.float64).mean(0)), rtol=1e-6)
