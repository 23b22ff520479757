"""SparseGPT (OBS) in JAX against a plain NumPy transcription of the algorithm (docs/algorithm.md §2)."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroal_jax.pruning.sparsegpt import (
    block_threshold_ranks,
    inverse_hessian_factor,
    sparsegpt_core,
    sparsegpt_prune,
)

# --------------------------------------------------------------------------- NumPy transcription

def ref_upper_inverse_factor(H):
    """U upper with UᵀU = H⁻¹ via L = chol(H), H⁻¹ = L⁻ᵀL⁻¹, U = chol(H⁻¹)ᵀ (float64)."""
    L = np.linalg.cholesky(H)
    Linv = np.linalg.inv(L)
    return np.linalg.cholesky(Linv.T @ Linv).T


def ref_sparsegpt(W, H, sparsity, n=0, m=0, blocksize=128, percdamp=0.01):
    """Straightforward loops, float64. Returns (W_new, keep)."""
    W = np.array(W, np.float64)
    H = np.array(H, np.float64)
    rows, cols = W.shape
    dead = np.diag(H) == 0
    for j in np.flatnonzero(dead):
        H[j, j] = 1.0
        W[:, j] = 0.0
    damp = percdamp * np.mean(np.diag(H))
    for j in range(cols):
        H[j, j] += damp
    Hinv = ref_upper_inverse_factor(H)
    pruned_all = np.zeros((rows, cols), bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].copy()
        Q1 = np.zeros_like(W1)
        E1 = np.zeros_like(W1)
        H1 = Hinv[i1:i2, i1:i2]
        d = np.diag(H1)
        if n == 0:
            sal = W1 ** 2 / d[None, :] ** 2
            thresh = np.sort(sal.ravel())[int(sal.size * sparsity)]
            P = sal <= thresh
        else:
            P = np.zeros(W1.shape, bool)
        for i in range(i2 - i1):
            if n and i % m == 0:
                sal = W1[:, i:i + m] ** 2 / d[None, i:i + m] ** 2
                for r in range(rows):
                    for c in np.argsort(sal[r], kind="stable")[:n]:
                        P[r, i + c] = True
            w = W1[:, i].copy()
            q = np.where(P[:, i], 0.0, w)
            err = (w - q) / H1[i, i]
            for j in range(i, i2 - i1):
                W1[:, j] -= err * H1[i, j]
            Q1[:, i] = q
            E1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= E1 @ Hinv[i1:i2, i2:]
        pruned_all[:, i1:i2] = P
    return W, ~pruned_all


def make_layer(seed, rows=32, cols=256, samples=4, tokens=64, dead=()):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((samples, tokens, cols)).astype(np.float32)
    X[..., list(dead)] = 0.0
    X *= rng.uniform(0.5, 2.0, cols).astype(np.float32)  # uneven column scales
    W = rng.standard_normal((rows, cols)).astype(np.float32)
    H = (2.0 / samples) * sum(x.T.astype(np.float64) @ x.astype(np.float64) for x in X)
    return X, W, H.astype(np.float32)


# --------------------------------------------------------------------------- equivalence

CASES = [
    dict(sparsity=0.5, n=0, m=0, blocksize=128, cols=256),
    dict(sparsity=0.7, n=0, m=0, blocksize=128, cols=320),  # partial last block (64 columns)
    dict(sparsity=0.3, n=0, m=0, blocksize=64, cols=48),  # layer narrower than a block
    dict(sparsity=0.5, n=2, m=4, blocksize=128, cols=256),
    dict(sparsity=0.0, n=4, m=8, blocksize=64, cols=192),
]


@pytest.mark.parametrize("case", CASES,
                         ids=lambda c: f"s{c['sparsity']}-{c['n']}:{c['m']}-bs{c['blocksize']}-in{c['cols']}")
def test_matches_numpy_transcription(case):
    _, W, H = make_layer(0, cols=case["cols"], dead=(3,))
    W_new, keep = sparsegpt_prune(W, H, case["sparsity"], case["n"], case["m"], blocksize=case["blocksize"])
    W_ref, keep_ref = ref_sparsegpt(W, H, case["sparsity"], case["n"], case["m"], case["blocksize"])
    assert W_new.dtype == jnp.float32 and keep.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(keep), keep_ref)
    np.testing.assert_allclose(np.asarray(W_new), W_ref, atol=1e-4, rtol=1e-4)
    assert not np.asarray(keep)[:, 3].any()  # dead column pruned
    assert np.all(np.asarray(W_new)[~np.asarray(keep)] == 0)


def test_threshold_is_inclusive_like_reference():
    # entries <= the element at rank int(numel * s) are pruned: one more than int(numel * s)
    _, W, H = make_layer(1, rows=16, cols=256)
    for s in (0.0, 0.5):
        _, keep = sparsegpt_prune(W, H, s, blocksize=128)
        pruned_per_block = (~np.asarray(keep)).reshape(16, 2, 128).sum(axis=(0, 2))
        np.testing.assert_array_equal(pruned_per_block, int(16 * 128 * s) + 1)
    assert block_threshold_ranks(16, 300, 0.5, 128) == (1024, 352)
    assert block_threshold_ranks(16, 64, 0.5, 128) == (1024, 512)


def test_reconstruction_beats_magnitude():
    X, W, H = make_layer(2)
    Xf = X.reshape(-1, X.shape[-1]).astype(np.float64)
    W_new, keep = sparsegpt_prune(W, H, 0.5)
    W_mag = W.copy()
    idx = np.argsort(np.abs(W), axis=1, kind="stable")[:, : W.shape[1] // 2]
    np.put_along_axis(W_mag, idx, 0.0, axis=1)
    err_obs = np.linalg.norm(Xf @ W.T - Xf @ np.asarray(W_new, np.float64).T)
    err_mag = np.linalg.norm(Xf @ W.T - Xf @ W_mag.T)
    assert abs((~np.asarray(keep)).mean() - 0.5) < 1e-3
    assert err_obs < 0.9 * err_mag


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_exact_counts(n, m):
    _, W, H = make_layer(3, rows=16, cols=128)
    W_new, keep = sparsegpt_prune(W, H, 0.0, n, m)
    pruned = ~np.asarray(keep).reshape(16, -1, m)
    assert np.all(pruned.sum(-1) == n)
    assert np.all(np.asarray(W_new)[~np.asarray(keep)] == 0)


def test_inverse_factor_matches_torch_pipeline():
    torch = pytest.importorskip("torch")
    _, _, H = make_layer(4, cols=64, dead=(5,))
    U, dead, used, ok = inverse_hessian_factor(H, 0.01)
    Ht = torch.tensor(H)
    d = torch.diag(Ht) == 0
    Ht[d, d] = 1
    Ht[range(64), range(64)] += 0.01 * torch.mean(torch.diag(Ht))
    Ut = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Ht)), upper=True)
    assert bool(ok) and np.asarray(dead).tolist() == d.tolist() and float(used) == np.float32(0.01)
    np.testing.assert_allclose(np.asarray(U), Ut.numpy(), rtol=1e-4, atol=1e-5)
    assert np.all(np.tril(np.asarray(U), -1) == 0)


def test_saliency_matches_first_block_mask():
    _, W, H = make_layer(5, rows=8, cols=128)
    Hinv, dead, _, _ = inverse_hessian_factor(H)
    W0 = np.where(np.asarray(dead)[None, :], 0.0, np.asarray(W, np.float32))
    sal = W0 ** 2 / np.diagonal(np.asarray(Hinv))[None, :] ** 2  # the OBS saliency W² / diag(H⁻¹)²
    _, keep = sparsegpt_prune(W, H, 0.5, blocksize=128)  # one block: mask from the initial saliency
    thresh = np.sort(sal.ravel())[int(sal.size * 0.5)]
    np.testing.assert_array_equal(np.asarray(keep), ~(sal <= thresh))


def test_core_vmaps_over_sparsities():
    _, W, H = make_layer(6, rows=8, cols=128)
    ks = [block_threshold_ranks(8, 128, s, 64) for s in (0.3, 0.6)]
    kb = jnp.array([k[0] for k in ks])
    kl = jnp.array([k[1] for k in ks])
    f = jax.vmap(lambda a, b: sparsegpt_core(W, H, a, b, blocksize=64)[:2])
    Wv, keepv = f(kb, kl)
    for i, s in enumerate((0.3, 0.6)):
        W1, k1 = sparsegpt_prune(W, H, s, blocksize=64)
        np.testing.assert_array_equal(np.asarray(keepv[i]), np.asarray(k1))
        np.testing.assert_allclose(np.asarray(Wv[i]), np.asarray(W1), atol=1e-6)


# --------------------------------------------------------------------------- damping and failures

def test_indefinite_hessian_retries_with_more_damping():
    rng = np.random.default_rng(7)
    cols = 64
    Q, _ = np.linalg.qr(rng.standard_normal((cols, cols)))
    lam = rng.uniform(0.5, 1.5, cols)
    lam[0] = -0.05 * lam.mean()  # indefinite: 1% damping is not enough, 10% is
    H = (Q * lam) @ Q.T
    W = rng.standard_normal((8, cols)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match=r"used percdamp=0\.1"):
        W_new, keep = sparsegpt_prune(W, H.astype(np.float32), 0.5)
    assert np.all(np.isfinite(np.asarray(W_new)))
    W_ref, keep_ref = ref_sparsegpt(W, H.astype(np.float32), 0.5, percdamp=0.1)
    np.testing.assert_array_equal(np.asarray(keep), keep_ref)
    np.testing.assert_allclose(np.asarray(W_new), W_ref, atol=1e-4, rtol=1e-4)


def test_rank_deficient_hessian_is_finite():
    X, W, H = make_layer(8, rows=8, cols=64, samples=2, tokens=8)  # rank(H) <= 16 < 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1% damping suffices: no warning
        W_new, _ = sparsegpt_prune(W, H, 0.5)
    assert np.all(np.isfinite(np.asarray(W_new)))


def test_hopeless_hessian_raises():
    W = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="Cholesky"):
        sparsegpt_prune(W, -np.eye(8, dtype=np.float32), 0.5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sparsity=1.0), "sparsity"),
    (dict(sparsity=-0.1), "sparsity"),
    (dict(sparsity=0.5, prune_n=4, prune_m=4), "0 < n < m"),
    (dict(sparsity=0.5, prune_n=2, prune_m=0), "0 < n < m"),
    (dict(sparsity=0.5, prune_n=2, prune_m=3), r"divisible by m \(3\)"),
    (dict(sparsity=0.5, prune_n=2, prune_m=4, blocksize=6), r"blocksize \(6\)"),
    (dict(sparsity=0.5, blocksize=0), "blocksize"),
    (dict(sparsity=0.5, percdamp=0.0), "percdamp"),
])
def test_bad_inputs(kwargs, match):
    W = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match=match):
        sparsegpt_prune(W, np.eye(8, dtype=np.float32), **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="H must have shape"):
        sparsegpt_prune(np.ones((4, 8)), np.eye(7), 0.5)
    with pytest.raises(ValueError, match="2-D"):
        sparsegpt_prune(np.ones(8), np.eye(8), 0.5)
