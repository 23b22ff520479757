"""NeuroAL search vs the reference fixture, vectorised vs sequential, pluggable metrics."""
import jax.numpy as jnp
import numpy as np
import pytest

import reference_fixture as F
from converters.hf import load_hf
from neuroal_jax.alignment import METRICS, register_metric
from neuroal_jax.pruning import layer_keys, sequential_prune
from neuroal_jax.search import (ROW_LAMBDAS, SearchSettings, block_distribution, block_schedule,
                                evaluate_candidates, neuroal_search, row_distribution)

pytestmark = pytest.mark.xdist_group("fixture")
METHODS = ("magnitude", "wanda", "multiflow")


@pytest.fixture(scope="module")
def model():
    cfg, params, _ = load_hf(F.model_dir())
    return cfg, params


@pytest.fixture(scope="module")
def searches(model):
    cfg, params = model
    w = F.calib_tokens()
    return {(m, s): neuroal_search(cfg, params, w, 0.7, m, SearchSettings(neuroal_step=s), progress=False)
            for m in METHODS for s in ("block", "row", "both")}


def _close(ours, ref, rtol=1e-4, atol=1e-9):
    np.testing.assert_allclose(np.asarray(ours, np.float64), np.asarray(ref, np.float64), rtol=rtol, atol=atol)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("step", ["block", "row", "both"])
def test_chosen_lambdas_and_final_masks_equal_reference(model, searches, method, step):
    cfg, params = model
    meta, arrays = F.case(method, f"neuroal_{step}")
    result = searches[(method, step)]
    assert (result.block and result.block.best_lambda) == meta["best_lambda_block"]
    assert (result.row and result.row.best_lambda) == meta["best_lambda_row"]
    _, masks = sequential_prune(cfg, params, F.calib_tokens(), result.dist, method, progress=False)
    ref = F.kept_masks(arrays)
    assert sum(int((np.asarray(masks[k]) != ref[k]).sum()) for k in ref) == 0
    for k, s in meta["per_layer_sparsity"].items():
        assert 1 - float(np.mean(np.asarray(masks[F.our_key(k)]))) == pytest.approx(s, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_block_step_alignment_of_every_candidate(searches, method):
    meta, arrays = F.case(method, "neuroal_both")
    block = searches[(method, "both")].block
    assert list(block.lambdas) == meta["block_lambdas"]
    _close(block.totals, meta["block_totals"])
    _close(np.stack([block.per_layer[k] for k in layer_keys_for(block)], axis=1), arrays["block_per_layer"])
    # δ of the chosen candidate feeds the row step
    for k, v in arrays.items():
        if k.startswith("align_best_block/"):
            _close(block.deltas[block.choice][F.our_key(k.split("/", 1)[1])], v, rtol=1e-4, atol=1e-5)


def layer_keys_for(step):
    return list(step.per_layer)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("step, delta_key", [("row", "align_uniform/"), ("both", "align_best_block/")])
def test_row_step_alignment_of_every_candidate(model, method, step, delta_key):
    """Row candidates built from the reference's own δ: every value matches (isolates the row step
    from float32 rounding of δ, which can move a per-row count by one near an integer)."""
    cfg, params = model
    meta, arrays = F.case(method, f"neuroal_{step}")
    deltas = {F.our_key(k[len(delta_key):]): v for k, v in arrays.items() if k.startswith(delta_key)}
    lam_b = meta["best_lambda_block"] or 0.0
    base = block_distribution(cfg, block_schedule(cfg.num_layers, 0.7, lam_b))
    dists = [row_distribution(cfg, base, deltas, l) for l in ROW_LAMBDAS]
    totals, per_layer, _ = evaluate_candidates(cfg, params, F.calib_tokens()[:8], dists, method, progress=False)
    _close(totals, meta["row_totals"])
    _close(np.stack([per_layer[k] for k in layer_keys(cfg)], axis=1), arrays["row_per_layer"])
    if step == "row":
        # ... and the reference's final per-row distribution is the chosen candidate's
        chosen = dists[int(np.argmin(totals))]
        for k, v in F.distribution(arrays, meta).items():
            np.testing.assert_array_equal(chosen[k], v)


def test_vectorised_equals_sequential_loop(tiny_llama):
    cfg, params = tiny_llama
    w = np.random.default_rng(0).integers(0, cfg.vocab_size, (4, 32)).astype(np.int32)
    runs = [neuroal_search(cfg, params, w, 0.6, "wanda", SearchSettings(lambda_chunk=c), progress=False)
            for c in (None, 1, 4)]
    for r in runs[1:]:
        for a, b in ((runs[0].block, r.block), (runs[0].row, r.row)):
            np.testing.assert_array_equal(a.totals, b.totals)
            assert a.choice == b.choice
        for k in runs[0].dist:
            np.testing.assert_array_equal(runs[0].dist[k], r.dist[k])


def test_registered_metric_changes_the_search(tiny_llama):
    cfg, params = tiny_llama
    w = np.random.default_rng(0).integers(0, cfg.vocab_size, (4, 32)).astype(np.int32)

    def inverted(a_dense, a_sparse):  # prefers the *least* aligned candidate
        return -METRICS["neuron"](a_dense, a_sparse)

    register_metric("test_inverted", inverted, override=True)
    base = neuroal_search(cfg, params, w, 0.6, "wanda", SearchSettings(neuroal_step="block"), progress=False)
    inv = neuroal_search(cfg, params, w, 0.6, "wanda", SearchSettings(neuroal_step="block", alignment="test_inverted"),
                         progress=False)
    np.testing.assert_allclose(inv.block.totals, -base.block.totals, rtol=1e-6)
    assert inv.block.best_lambda == base.block.lambdas[int(np.argmax(base.block.totals))]
    assert inv.info()["alignment_block"] == [{"lambda": l, "alignment": float(v)}
                                             for l, v in zip(inv.block.lambdas, inv.block.totals)]


@pytest.mark.parametrize("name", ["cosine", "js", "rel_l2", "neuron"])
def test_builtin_metrics_are_zero_for_identical_and_positive_otherwise(name):
    a = jnp.asarray([1.0, 2.0, 3.0, 4.0])
    assert abs(float(METRICS[name](a, a))) < 1e-6
    assert float(METRICS[name](a, a * jnp.asarray([1.0, 0.5, 1.0, 2.0]))) > 1e-4


def test_paper_dense_stream_runs_and_differs(tiny_llama):
    cfg, params = tiny_llama
    w = np.random.default_rng(0).integers(0, cfg.vocab_size, (4, 32)).astype(np.int32)
    ref = neuroal_search(cfg, params, w, 0.6, "wanda", SearchSettings(neuroal_step="block"), progress=False)
    paper = neuroal_search(cfg, params, w, 0.6, "wanda", SearchSettings(neuroal_step="block", dense_stream="model"),
                           progress=False)
    assert paper.block.totals.shape == ref.block.totals.shape
    assert not np.allclose(paper.block.totals, ref.block.totals, rtol=1e-9)


@pytest.mark.parametrize("settings, match", [
    (SearchSettings(neuroal_step="columns"), "neuroal_step .*unknown value 'columns'"),
    (SearchSettings(alignment="nope"), "alignment .*not a registered alignment metric.*'nope'"),
    (SearchSettings(dense_stream="x"), "dense_stream .*unknown value 'x'"),
    (SearchSettings(lambda_chunk=0), "lambda_chunk .*must be >= 1"),
    (SearchSettings(search_samples=3), "search_samples .*at most the number of calibration windows"),
])
def test_bad_settings(tiny_llama, settings, match):
    cfg, params = tiny_llama
    with pytest.raises(ValueError, match=match):
        neuroal_search(cfg, params, np.zeros((2, 8), np.int32), 0.5, "wanda", settings, progress=False)


def test_sparsegpt_rejects_row_step(tiny_llama):
    cfg, params = tiny_llama
    with pytest.raises(ValueError, match="sparsegpt supports only the NeuroAL block step"):
        neuroal_search(cfg, params, np.zeros((2, 8), np.int32), 0.5, "sparsegpt", SearchSettings(), progress=False)


def test_sparsegpt_block_step_runs_and_prunes(tiny_llama):
    cfg, params = tiny_llama
    w = np.random.default_rng(0).integers(0, cfg.vocab_size, (4, 32)).astype(np.int32)
    r = neuroal_search(cfg, params, w, 0.6, "sparsegpt", SearchSettings(neuroal_step="block", lambdas_block=(0.01, 0.1)),
                       progress=False)
    assert r.row is None and r.block.best_lambda in (0.01, 0.1) and np.all(np.isfinite(r.block.totals))
    pruned, masks = sequential_prune(cfg, params, w, r.dist, "sparsegpt", progress=False)
    assert 0.59 < 1 - np.mean([np.mean(np.asarray(m)) for m in masks.values()]) < 0.62
