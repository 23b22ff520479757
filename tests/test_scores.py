"""Base scores (SPEC §2) and the statistics helpers (SPEC §1) against hand-computed NumPy values."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroal_jax import scores as S
from neuroal_jax.scores import LayerStats


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
    with pytest.raises(ValueError, match=r"unknown score 'nope'.*magnitude.*multiflow.*wanda"):
        S.get_score("nope")
    with pytest.raises(ValueError, match="already registered"):
        S.register_score("wanda")(lambda W, s: W)


def test_register_custom_score():
    @S.register_score("_test_square")
    def square(W, stats):
        return jnp.square(jnp.asarray(W, jnp.float32))

    try:
        assert S.get_score("_test_square") is square
        np.testing.assert_array_equal(np.asarray(square(np.array([[2.0, -3.0]]), None)), [[4.0, 9.0]])
        S.register_score("_test_square", override=True)(square)
    finally:
        S.SCORES.pop("_test_square", None)


def test_layer_stats_pytree():
    st = LayerStats(jnp.ones(3), jnp.eye(3))
    leaves = jax.tree_util.tree_leaves(st)
    assert len(leaves) == 2
    assert len(jax.tree_util.tree_leaves(LayerStats(jnp.ones(3)))) == 1


def _calib(rng, n=5, tokens=7, cols=4):
    return rng.standard_normal((n, tokens, cols)).astype(np.float32)  # X_n: tokens × in


def test_act_norm_from_sumsq_matches_raw_x():
    X = _calib(np.random.default_rng(1))
    want = np.sqrt(sum(np.linalg.norm(x.astype(np.float64), axis=0) ** 2 for x in X) / len(X))
    sumsq = np.square(X).sum(axis=(0, 1))  # Σ over samples and tokens
    np.testing.assert_allclose(np.asarray(S.act_norm_from_sumsq(sumsq, len(X))), want, rtol=1e-5)


def test_hessian_from_xtx_matches_raw_x():
    X = _calib(np.random.default_rng(2))
    want = 2.0 / len(X) * sum(x.astype(np.float64).T @ x.astype(np.float64) for x in X)
    xtx = sum(x.T @ x for x in X)
    got = np.asarray(S.hessian_from_xtx(xtx, len(X)))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_running_updates_equal_closed_form():
    X = _calib(np.random.default_rng(3))
    acc = jnp.zeros(4, jnp.float32)
    H = jnp.zeros((4, 4), jnp.float32)
    for n, x in enumerate(X):
        acc = S.act_sumsq_running_update(acc, np.square(x).sum(0), n)
        H = S.hessian_running_update(H, x, n)
    sumsq = np.square(X).sum(axis=(0, 1))
    np.testing.assert_allclose(np.sqrt(np.asarray(acc)), np.asarray(S.act_norm_from_sumsq(sumsq, len(X))), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(H), np.asarray(S.hessian_from_xtx(sum(x.T @ x for x in X), len(X))),
                               rtol=1e-5, atol=1e-5)


def test_running_update_float32_recurrence():
    # acc = acc * f32(n/(n+1)) + s / f32(n+1), step by step in float32 (the reference's rounding)
    rng = np.random.default_rng(4)
    rows = rng.random((6, 3)).astype(np.float32)
    want = np.zeros(3, np.float32)
    acc = jnp.zeros(3, jnp.float32)
    for n, r in enumerate(rows):
        want = want * np.float32(n / (n + 1)) + r / np.float32(n + 1)
        acc = S.act_sumsq_running_update(acc, r, n)
    np.testing.assert_array_equal(np.asarray(acc), want)


def test_stats_reject_bad_counts():
    with pytest.raises(ValueError, match="positive"):
        S.act_norm_from_sumsq(np.ones(3), 0)
    with pytest.raises(ValueError, match="positive"):
        S.hessian_from_xtx(np.eye(3), -1)


def test_act_norm_sparsegpt_wrapper_quirk():
    # the reference wrapper: acc *= n_old/n; acc += ‖sqrt(2/n) X_n‖² / n (n = samples seen so far)
    X = _calib(np.random.default_rng(5))
    acc = np.zeros(X.shape[-1], np.float64)
    for i, x in enumerate(X):
        n = i + 1
        acc = acc * ((n - 1) / n) + np.linalg.norm(np.sqrt(2.0 / n) * x.astype(np.float64), axis=0) ** 2 / n
    per_sample = np.square(X).sum(axis=1)  # [N, in]
    np.testing.assert_allclose(np.asarray(S.act_norm_sparsegpt_wrapper(per_sample)), np.sqrt(acc), rtol=1e-5)
    with pytest.raises(ValueError, match="at least one sample"):
        S.act_norm_sparsegpt_wrapper(np.zeros((0, 3)))
