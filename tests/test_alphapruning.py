"""AlphaPruning top-up: the ESD exponent fit, the α → sparsity mapping, and the pass on the tiny Llama."""
from __future__ import annotations

import numpy as np
import pytest

from neuroal_jax.models import family_of
from neuroal_jax.pruning import layer_keys, sequential_prune, sparsity_summary
from neuroal_jax.topups import PruneJob, get_topup
from neuroal_jax.topups.alphapruning import alpha_sparsities, block_means, esd_alpha, histc_f32, torch_linspace_f32

WINDOWS = np.random.default_rng(0).integers(0, 128, (4, 32))


@pytest.fixture(autouse=True)
def _single_threaded_blas():
    """Small SVDs are faster on one BLAS thread, and much faster on a loaded machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


def power_law_matrix(shape, alpha: float, rng) -> np.ndarray:
    """W whose squared singular values are the quantiles of a Pareto law p(λ) ∝ λ^-α, λ ≥ 1."""
    out, inp = shape
    n = min(shape)
    lam = (1 - (np.arange(n) + 0.5) / n) ** (-1 / (alpha - 1))
    U, _ = np.linalg.qr(rng.standard_normal((out, n)))
    V, _ = np.linalg.qr(rng.standard_normal((inp, n)))
    return ((U * np.sqrt(lam)) @ V.T).astype(np.float32)


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_alpha_of_power_law_spectrum(alpha):
    W = power_law_matrix((300, 200), alpha, np.random.default_rng(1))
    assert esd_alpha(W) == pytest.approx(alpha, abs=0.05)
    assert esd_alpha(W.T) == pytest.approx(esd_alpha(W), abs=1e-4)  # same spectrum


def test_histogram_helpers_follow_torch_conventions():
    x = np.array([0.0, 0.5, 1.0, 1.0, 2.0], np.float32)
    counts = histc_f32(x, 4, np.float32(0.0), np.float32(2.0))
    np.testing.assert_array_equal(counts, [1, 1, 2, 1])  # the right edge falls into the last bin
    edges = torch_linspace_f32(np.float32(-1.0), np.float32(3.0), 5)
    np.testing.assert_array_equal(edges, np.array([-1, 0, 1, 2, 3], np.float32))
    assert edges[-1] == np.float32(3.0)  # the second half is evaluated from the end point


def test_mapping_direction_and_weighted_mean():
    metric = np.array([2.0, 2.0, 5.0, 5.0, 3.5, 3.5])
    sizes = np.array([100, 300, 100, 300, 100, 300])
    s = alpha_sparsities(metric, sizes, 0.5, 0.3)
    # linear in the metric: min → (1-ε)·c, max → (1+ε)·c, the middle → c
    assert s[0] < s[4] < s[2]
    np.testing.assert_allclose(s[[0, 2, 4]] / s[4], [0.7, 1.3, 1.0], rtol=1e-12)
    assert np.sum(sizes * s) / np.sum(sizes) == pytest.approx(0.5, abs=1e-9)
    # awkward totals: the reference rounds Σ size · s to float32, so the mean is s to float32 precision
    sizes = np.array([4096 * 4096] * 4 + [4096 * 11008] * 3)
    s = alpha_sparsities(np.linspace(2, 4, 7), sizes, 0.7, 0.3)
    assert np.sum(sizes * s) / np.sum(sizes) == pytest.approx(0.7, rel=1e-7)
    # a constant metric gives every layer s
    np.testing.assert_allclose(alpha_sparsities(np.full(4, 3.0), np.ones(4, int), 0.6, 0.3), 0.6, rtol=1e-7)


def test_block_means():
    np.testing.assert_allclose(block_means([1.0, 2.0, 3.0, 10.0, 20.0, 30.0], 3), [2.0, 20.0])


def _job(cfg, params, sparsity, **options):
    return PruneJob(cfg, params, WINDOWS, sparsity, "wanda", options=options, progress=False)


def test_larger_alpha_block_is_pruned_more(tiny_llama):
    cfg, params = tiny_llama
    rng = np.random.default_rng(0)
    blocks = []
    for b, block in enumerate(params["blocks"]):
        alpha = (2.5, 4.5)[b]
        new = dict(block)
        for name in family_of(cfg).prunable:
            new[name] = {**block[name], "weight": power_law_matrix(np.shape(block[name]["weight"]), alpha, rng)}
        blocks.append(new)
    alloc = get_topup("alphapruning")(_job(cfg, {**params, "blocks": blocks}, 0.5))
    a = alloc.info["alpha"]
    assert a["0"] < a["1"]
    assert set(alloc.info["alpha_layer"]) == set(layer_keys(cfg))
    bs = alloc.info["alpha_block_sparsity"]
    # two blocks of equal size: ratios 1 ∓ ε, rescaled to mean 0.5
    assert bs["0"] == pytest.approx(0.5 * 0.7, abs=1e-9) and bs["1"] == pytest.approx(0.5 * 1.3, abs=1e-9)
    assert alloc.dist["0.mlp.up_proj"] == bs["0"] and alloc.dist["1.self_attn.k_proj"] == bs["1"]


def test_alphapruning_on_tiny_llama(tiny_llama):
    cfg, params = tiny_llama
    s = 0.7
    alloc = get_topup("alphapruning")(_job(cfg, params, s, alpha_epsilon=0.2))
    sizes = {k: int(np.size(params["blocks"][int(k.split(".")[0])][k.split(".", 1)[1]]["weight"]))
             for k in layer_keys(cfg)}
    mean = sum(alloc.dist[k] * sizes[k] for k in sizes) / sum(sizes.values())
    assert mean == pytest.approx(s, abs=1e-9)
    assert alloc.info["alpha_epsilon"] == 0.2
    assert all(np.isfinite(v) and v > 1 for v in alloc.info["alpha_layer"].values())
    _, masks = sequential_prune(cfg, params, WINDOWS, alloc.dist, "wanda", progress=False)
    summary = sparsity_summary(cfg, masks)
    # every row prunes int(in · s_layer) weights: the target up to that truncation
    trunc = {k: int(m.shape[1] * alloc.dist[k]) / m.shape[1] for k, m in masks.items()}
    assert summary["sparsity"] == pytest.approx(sum(trunc[k] * sizes[k] for k in sizes) / sum(sizes.values()))
    assert summary["sparsity"] == pytest.approx(s, abs=1 / 64)
    for b, target in alloc.info["alpha_block_sparsity"].items():
        assert summary["block_sparsity"][b] == pytest.approx(target, abs=0.02)
