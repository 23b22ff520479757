"""Exact mask functions (neuroal_jax.pruning.masks) against NumPy stable-argsort references."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroal_jax.pruning import keep_and_ties, masks
from pallas_kernels.topk_mask import ordered_int32_keys


# ------------------------------------------------------------------ NumPy references
def ref_topk(scores, keep, ties="low"):
    """Keep the keep[r] highest of each row; ties by a stable sort (see masks docs)."""
    s = np.asarray(jnp.asarray(scores).astype(jnp.float32))
    rows, cols = s.shape
    out = np.zeros((rows, cols), bool)
    for r in range(rows):
        if ties == "low":  # stable descending: lower column first among equals
            order = np.argsort(-s[r], kind="stable")
        else:  # higher column first among equals
            order = cols - 1 - np.argsort(-s[r, ::-1], kind="stable")
        out[r, order[: int(keep[r])]] = True
    return out


def ref_prune_rows(scores, sparsity):
    s = np.asarray(scores, np.float32)
    k = int(s.shape[1] * sparsity)
    out = np.ones(s.shape, bool)
    for r in range(s.shape[0]):
        out[r, np.argsort(s[r], kind="stable")[:k]] = False
    return out


def row_mask(scores, target):
    """The engine's row masks: keep counts and tie rule of a target (one sparsity or per-row), then top-k."""
    keep, ties = keep_and_ties(target, np.shape(scores)[-2:])
    return np.asarray(masks.topk_mask(scores, keep, ties))


def ref_prune_rows_vector(scores, row_sparsity):
    cols = scores.shape[1]
    keep = [int((1 - float(x)) * cols) for x in row_sparsity]
    return ref_topk(scores, keep, "low")


def ref_prune_layer(scores, sparsity):
    s = np.asarray(scores, np.float32).ravel()
    out = np.ones(s.shape, bool)
    out[np.argsort(s, kind="stable")[: int(s.size * sparsity)]] = False
    return out.reshape(scores.shape)


def ref_prune_nm(scores, n, m):
    s = np.asarray(scores, np.float32)
    out = np.ones(s.shape, bool)
    for r in range(s.shape[0]):
        for g in range(0, s.shape[1], m):
            out[r, g + np.argsort(s[r, g:g + m], kind="stable")[:n]] = False
    return out


def random_scores(rng, shape, kind="normal"):
    if kind == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "ties":  # small integer set: heavy ties
        return rng.integers(-2, 3, size=shape).astype(np.float32)
    if kind == "zeros":  # +0.0 / -0.0 mix plus a few others
        vals = np.array([0.0, -0.0, 1.0, -1.0, 0.0, -0.0], np.float32)
        return rng.choice(vals, size=shape)
    raise ValueError(kind)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ------------------------------------------------------------------------ keys
def test_ordered_keys_preserve_order_and_merge_signed_zero():
    vals = np.array(
        [-np.inf, -3e38, -1.0, -1e-30, -1e-45, -0.0, 0.0, 1e-45, 1e-30, 1.0, 3e38, np.inf],
        np.float32,
    )
    keys = np.asarray(ordered_int32_keys(jnp.asarray(vals)))
    assert keys[5] == keys[6] == 0
    assert np.all(np.diff(np.delete(keys, 5)) > 0)
    assert keys.min() > np.iinfo(np.int32).min  # padding key stays below every float


# ------------------------------------------------------------------ topk_keep_mask
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
@pytest.mark.parametrize("ties", ["low", "high"])
def test_topk_keep_mask_matches_argsort(rng, kind, ties):
    rows, cols = 24, 37
    scores = random_scores(rng, (rows, cols), kind)
    keep = rng.integers(0, cols + 1, size=rows).astype(np.int32)
    keep[:4] = [0, 1, cols, cols - 1]
    got = np.asarray(masks.topk_keep_mask(scores, keep, ties))
    np.testing.assert_array_equal(got, ref_topk(scores, keep, ties))
    np.testing.assert_array_equal(got.sum(1), keep)


@pytest.mark.parametrize("ties", ["low", "high"])
def test_topk_keep_mask_all_equal_rows(ties):
    cols = 10
    scores = np.zeros((4, cols), np.float32)
    scores[1] = -0.0
    scores[2] = 7.5
    scores[3, ::2] = -0.0  # +0/-0 mix: all equal
    keep = np.array([3, 0, 10, 4], np.int32)
    got = np.asarray(masks.topk_keep_mask(scores, keep, ties))
    for r, k in enumerate(keep):
        expect = np.zeros(cols, bool)
        if ties == "low":
            expect[:k] = True
        else:
            expect[cols - k:] = True
        np.testing.assert_array_equal(got[r], expect)


def test_topk_keep_mask_bfloat16(rng):
    scores = jnp.asarray(random_scores(rng, (16, 50)), jnp.bfloat16)  # many bf16 ties
    keep = rng.integers(0, 51, size=16).astype(np.int32)
    for ties in ("low", "high"):
        np.testing.assert_array_equal(
            np.asarray(masks.topk_keep_mask(scores, keep, ties)), ref_topk(scores, keep, ties)
        )


def test_topk_keep_mask_under_jit(rng):
    scores = random_scores(rng, (8, 20), "ties")
    keep = rng.integers(0, 21, size=8).astype(np.int32)
    got = jax.jit(lambda s, k: masks.topk_keep_mask(s, k, "high"))(scores, keep)
    np.testing.assert_array_equal(np.asarray(got), ref_topk(scores, keep, "high"))


def test_leading_batch_axis_equals_per_slice(rng):
    scores = random_scores(rng, (3, 2, 12, 30), "ties")
    keep = rng.integers(0, 31, size=(3, 2, 12)).astype(np.int32)
    got = np.asarray(masks.topk_mask(scores, keep, "low", impl="jnp"))
    for a in range(3):
        for b in range(2):
            np.testing.assert_array_equal(got[a, b], ref_topk(scores[a, b], keep[a, b]))
    # keep with a candidate axis against one shared score matrix (broadcast)
    got_b = np.asarray(masks.topk_mask(scores[0, 0], keep[:, 0], "high", impl="jnp"))
    assert got_b.shape == (3, 12, 30)
    for a in range(3):
        np.testing.assert_array_equal(got_b[a], ref_topk(scores[0, 0], keep[a, 0], "high"))


# ------------------------------------------------------------------ granularities
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.7, 0.999])
@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_row_masks_one_sparsity(rng, sparsity, kind):
    scores = random_scores(rng, (16, 48), kind)
    got = row_mask(scores, sparsity)
    np.testing.assert_array_equal(got, ref_prune_rows(scores, sparsity))
    assert (got.sum(1) == 48 - int(48 * sparsity)).all()
    if sparsity == 0.0:
        assert got.all()


def test_row_counts_use_python_float_truncation():
    # 0.7 * 10 = 7.000000000000001 -> 7; 0.3 * 10 = 3.0000000000000004 -> 3
    scores = np.arange(20, dtype=np.float32).reshape(2, 10)
    assert (row_mask(scores, 0.7).sum(1) == 3).all()
    assert (row_mask(scores, 0.3).sum(1) == 7).all()


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
def test_row_masks_per_row_sparsity(rng, kind):
    rows, cols = 20, 40
    scores = random_scores(rng, (rows, cols), kind)
    row_s = rng.uniform(0.01, 0.99, size=rows)
    row_s[:3] = [0.0, 0.999, 0.5]
    got = row_mask(scores, row_s)
    np.testing.assert_array_equal(got, ref_prune_rows_vector(scores, row_s))


def test_per_row_counts_of_candidates_against_one_score_matrix(rng):
    scores = random_scores(rng, (10, 32), "ties")
    row_s = rng.uniform(0.01, 0.99, size=(15, 10))  # 15 lambda candidates
    keep = np.stack([keep_and_ties(r, scores.shape)[0] for r in row_s])
    got = np.asarray(masks.topk_mask(scores, keep, "low"))
    assert got.shape == (15, 10, 32)
    for c in range(15):
        np.testing.assert_array_equal(got[c], ref_prune_rows_vector(scores, row_s[c]))


def test_keep_from_row_sparsity_float64():
    s = np.array([0.3, 0.7, 0.01, 0.99, 0.0])
    expect = [int((1 - x) * 4096) for x in s]
    np.testing.assert_array_equal(masks.keep_from_row_sparsity(s, 4096), expect)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.999])
@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_prune_layer(rng, sparsity, kind):
    scores = random_scores(rng, (12, 25), kind)
    got = np.asarray(masks.prune_layer(scores, sparsity))
    np.testing.assert_array_equal(got, ref_prune_layer(scores, sparsity))


def test_prune_layer_batched(rng):
    scores = random_scores(rng, (3, 6, 10), "ties")
    got = np.asarray(masks.prune_layer(scores, 0.4))
    for b in range(3):
        np.testing.assert_array_equal(got[b], ref_prune_layer(scores[b], 0.4))


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
def test_prune_nm(rng, n, m, kind):
    scores = random_scores(rng, (8, 32), kind)
    got = np.asarray(masks.prune_nm(scores, n, m))
    np.testing.assert_array_equal(got, ref_prune_nm(scores, n, m))
    pruned_per_group = (~got).reshape(8, 32 // m, m).sum(-1)
    assert (pruned_per_group == n).all()


# --------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_sparsity_raises(bad):
    scores = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\)") as err:
        masks.prune_layer(scores, bad)
    assert repr(bad) in str(err.value) or str(bad) in str(err.value)


def test_bad_row_sparsity_raises():
    with pytest.raises(ValueError, match=r"row_sparsity\[1\] = 1\.2"):
        masks.keep_from_row_sparsity(np.array([0.5, 1.2, 0.1]), 8)


@pytest.mark.parametrize("bad", [-1, 9])
def test_bad_keep_raises(bad):
    keep = np.array([1, bad, 2], np.int32)
    with pytest.raises(ValueError, match=rf"\[0, 8\].*= {bad}"):
        masks.topk_keep_mask(np.ones((3, 8), np.float32), keep)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"keep shape \(4,\)"):
        masks.topk_keep_mask(np.ones((3, 8), np.float32), np.ones(4, np.int32))
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        masks.topk_keep_mask(np.ones(8, np.float32), np.ones(1, np.int32))
    with pytest.raises(ValueError, match="integer"):
        masks.topk_keep_mask(np.ones((3, 8), np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="ties"):
        masks.topk_keep_mask(np.ones((3, 8), np.float32), np.ones(3, np.int32), "middle")


@pytest.mark.parametrize("n,m,msg", [(0, 4, "n=0"), (4, 4, "n=4, m=4"), (2, 3, "C=8, m=3")])
def test_bad_nm_raises(n, m, msg):
    with pytest.raises(ValueError, match=msg):
        masks.prune_nm(np.ones((2, 8), np.float32), n, m)


# --------------------------------------------------------------------- dispatcher
def test_dispatcher_env_override(monkeypatch, rng):
    monkeypatch.delenv(masks.ENV_IMPL, raising=False)
    expect_auto = "pallas" if jax.default_backend() == "gpu" else "jnp"
    assert masks.resolve_impl() == expect_auto
    assert masks.resolve_impl("jnp") == "jnp"
    monkeypatch.setenv(masks.ENV_IMPL, "pallas")
    assert masks.resolve_impl() == "pallas"
    assert masks.resolve_impl("jnp") == "jnp"  # explicit argument wins
    scores = random_scores(rng, (8, 24), "ties")
    keep = rng.integers(0, 25, size=8).astype(np.int32)
    got = np.asarray(masks.topk_mask(scores, keep, "high"))  # Pallas (interpret on CPU)
    np.testing.assert_array_equal(got, ref_topk(scores, keep, "high"))
    monkeypatch.setenv(masks.ENV_IMPL, "jnp")
    assert masks.resolve_impl() == "jnp"


def test_dispatcher_unknown_impl(monkeypatch):
    scores, keep = np.ones((2, 4), np.float32), np.ones(2, np.int32)
    with pytest.raises(ValueError, match="auto, pallas, jnp"):
        masks.topk_mask(scores, keep, impl="triton")
    monkeypatch.setenv(masks.ENV_IMPL, "cuda")
    with pytest.raises(ValueError, match=r"'cuda'.*NEUROAL_TOPK_IMPL.*auto, pallas, jnp"):
        masks.topk_mask(scores, keep)


def test_masks_under_jit(rng):
    scores = random_scores(rng, (6, 20), "ties")
    keep, ties = keep_and_ties(0.5, scores.shape)
    got = jax.jit(lambda s: masks.topk_mask(s, keep, ties))(scores)
    np.testing.assert_array_equal(np.asarray(got), ref_prune_rows(scores, 0.5))
    got = jax.jit(lambda s: masks.prune_nm(s, 2, 4))(scores)
    np.testing.assert_array_equal(np.asarray(got), ref_prune_nm(scores, 2, 4))
