"""DSnoT top-up: the prune-and-regrow refinement of one layer, the input moments, and the pass on the tiny Llama."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from neuroal_jax.models import block_apply, block_contexts
from neuroal_jax.pruning import (
    Structure,
    collect_block_stats,
    embed_batches,
    keep_and_ties,
    layer_mask,
    sequential_prune,
    uniform_distribution,
)
from neuroal_jax.topups import PruneJob, get_topup
from neuroal_jax.topups.dsnot import DSnoTRefine, dsnot_mask

WINDOWS = np.random.default_rng(0).integers(0, 128, (4, 32))

# One row, D = W (m = 1, v = 1, a = 1): the base mask (s = 0.5, Wanda = |W|) prunes columns 0-3, e = -0.2.
ROW_W = np.array([[0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8]], np.float32)
ROW_BASE = np.array([[False] * 4 + [True] * 4])
ONES = np.ones(8, np.float32)


def kept(mask):
    return np.flatnonzero(np.asarray(mask)[0]).tolist()


def test_hand_worked_cycles():
    run = lambda cycles, **kw: kept(dsnot_mask(ROW_W, ROW_BASE, ONES, ONES, kw.pop("var", ONES), cycles, **kw))
    # cycle 1: e < 0 → regrow the most negative pruned D (col 3), prune the kept D > 0 of lowest Wanda (col 4)
    assert run(1) == [3, 5, 6, 7]
    # e = -0.2 + 0.5 + 0.4 = 0.7 > 0 → regrow the largest pruned D (col 2), prune the kept D < 0 of lowest Wanda (5)
    assert run(2) == [2, 3, 6, 7]
    assert run(0) == [4, 5, 6, 7]
    assert run(50, threshold=0.25) == [4, 5, 6, 7]  # |e| = 0.2 is already below the threshold
    # the variance divides the regrowing metric: a large v_3 makes col 1 the first to regrow
    var = ONES.copy()
    var[3] = 10.0
    assert run(1, var=var) == [1, 5, 6, 7]
    assert run(1, var=var, var_power=0.0) == [3, 5, 6, 7]


def test_candidates_run_out_without_changing_counts():
    # 4 pruned and 4 kept weights: after 4 swaps every candidate is used; the row stops with its count intact
    new = dsnot_mask(ROW_W, ROW_BASE, ONES, ONES, ONES, 50, threshold=0.0)
    assert np.sum(np.asarray(new)) == 4


def _random_layer(seed, out=32, inp=512, tokens=256, s=0.6):
    """A layer with inputs of non-zero column means (so the mean error dominates), its Wanda base mask and stats.

    Wide enough that 50 cycles never exhaust a sign group of candidates, as in real layers (in ≥ 2048): on very
    narrow layers the swap sequence walks into wrong-signed candidates and DSnoT (here and in the reference)
    can make the error worse."""
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((out, inp)) * 0.1).astype(np.float32)
    X = (rng.standard_normal(inp) + 0.3 * rng.standard_normal((tokens, inp)) * rng.uniform(0.2, 2, inp))
    X = X.astype(np.float32)
    a = np.sqrt(np.sum(X**2, axis=0))
    base = np.asarray(layer_mask("wanda", jnp.asarray(W), a, s, Structure()))
    return W, X, base, a, X.sum(axis=0), X.var(axis=0)


def test_row_counts_unchanged_and_zero_cycles_is_the_base():
    W, X, base, a, m, v = _random_layer(0)
    new = np.asarray(dsnot_mask(W, base, a, m, v))
    assert (new != base).any()
    np.testing.assert_array_equal(new.sum(axis=1), base.sum(axis=1))
    np.testing.assert_array_equal(np.asarray(dsnot_mask(W, base, a, m, v, 0)), base)
    # per-row targets (e.g. NeuroAL's row step) keep their per-row counts too
    keep, _ = keep_and_ties(np.linspace(0.3, 0.8, W.shape[0]), W.shape)
    base_rows = np.asarray(layer_mask("wanda", jnp.asarray(W), a, np.linspace(0.3, 0.8, W.shape[0]), Structure()))
    np.testing.assert_array_equal(base_rows.sum(axis=1), keep)
    np.testing.assert_array_equal(np.asarray(dsnot_mask(W, base_rows, a, m, v)).sum(axis=1), keep)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reconstruction_error_not_worse_than_wanda(seed):
    W, X, base, a, m, v = _random_layer(seed)
    new = np.asarray(dsnot_mask(W, base, a, m, v))
    err = lambda mask: np.linalg.norm(X @ W.T - X @ (W * mask).T)
    mean_err = lambda mask: np.abs(((W * ~mask) @ m)).sum()  # Σ_r |e_r|, what DSnoT drives down
    assert err(new) <= err(base)
    assert mean_err(new) < mean_err(base)


def test_input_moments(tiny_llama):
    cfg, params = tiny_llama
    xs = embed_batches(cfg, params, WINDOWS, 8)
    ctx = block_contexts(cfg, WINDOWS.shape[1])[0]
    _, plain = collect_block_stats(cfg, params["blocks"][0], xs, ctx)
    _, stats = collect_block_stats(cfg, params["blocks"][0], xs, ctx, moments=True)
    assert plain.input_sum is None and plain.input_var is None
    _, inputs = block_apply(cfg, params["blocks"][0], xs[0], ctx)
    for name, x in inputs.items():
        np.testing.assert_array_equal(stats.act_norm[name], plain.act_norm[name])  # unchanged by moments
        x = np.asarray(x, np.float64)
        np.testing.assert_allclose(stats.input_sum[name], x.sum(axis=1).mean(axis=0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(stats.input_var[name], x.var(axis=1).mean(axis=0), rtol=1e-4, atol=1e-6)


def _prune(cfg, params, alloc):
    return sequential_prune(cfg, params, WINDOWS, alloc.dist, "wanda", refine=alloc.refine, progress=False)[1]


def test_dsnot_on_tiny_llama(tiny_llama):
    cfg, params = tiny_llama
    job = lambda **o: PruneJob(cfg, params, WINDOWS, 0.6, "wanda", options=o, progress=False)
    uniform = _prune(cfg, params, get_topup("uniform")(job()))
    alloc = get_topup("dsnot")(job())
    assert alloc.dist == uniform_distribution(cfg, 0.6)
    masks = _prune(cfg, params, alloc)
    for key, m in masks.items():
        np.testing.assert_array_equal(np.sum(m, axis=1), np.sum(uniform[key], axis=1))
        if key.startswith("0.mlp."):  # MLP layers are not refined (reference); block 0 sees the same stream
            np.testing.assert_array_equal(m, uniform[key])
    assert sum(alloc.info["dsnot_swaps"].values()) > 0
    # zero cycles: exactly the base masks
    masks0 = _prune(cfg, params, get_topup("dsnot")(job(dsnot_max_cycles=0, dsnot_skip="none")))
    for key in masks0:
        np.testing.assert_array_equal(masks0[key], uniform[key])


def test_dsnot_options_and_errors(tiny_llama):
    cfg, params = tiny_llama
    job = lambda method="wanda", structure=Structure(), **o: PruneJob(cfg, params, WINDOWS, 0.5, method, structure,
                                                                     options=o, progress=False)
    refine = get_topup("dsnot")(job(dsnot_skip="none", dsnot_max_cycles=7)).refine
    assert isinstance(refine, DSnoTRefine) and refine.max_cycles == 7 and not refine.skipped("mlp.up_proj")
    assert DSnoTRefine(skip="self_attn").skipped("self_attn.q_proj")
    with pytest.raises(ValueError, match="sparsegpt"):
        get_topup("dsnot")(job("sparsegpt"))
    with pytest.raises(ValueError, match="2:4"):
        get_topup("dsnot")(job(structure=Structure.parse("2:4")))
    with pytest.raises(ValueError, match="dsnot_skip"):
        get_topup("dsnot")(job(dsnot_skip="attention"))
