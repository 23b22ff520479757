"""NeuroAL search: chunked vs whole, pluggable metrics, settings (fidelity to the reference: test_reference.py)."""
import jax.numpy as jnp
import numpy as np
import pytest

from neuroal_jax.pruning import sequential_prune
from neuroal_jax.topups.neuroal.alignment import METRICS, register_metric
from neuroal_jax.topups.neuroal.search import SearchSettings, neuroal_search


def test_every_lambda_chunk_gives_identical_results(tiny_llama):
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


def test_auto_chunk_shrinks_with_the_memory_and_changes_nothing(tiny_llama, monkeypatch):
    """--lambda-chunk auto (the default) under a fake free-memory figure: with room for 2.5 candidates it runs 2 at a
    time, with plenty all of them; the results are the same bit for bit."""
    import neuroal_jax.runtime as runtime
    from neuroal_jax.topups.neuroal.candidates import MEMORY_SHARE, candidate_bytes
    cfg, params = tiny_llama
    w = np.random.default_rng(0).integers(0, cfg.vocab_size, (4, 32)).astype(np.int32)
    per, shared = candidate_bytes(cfg, 4, 32, 4, vmapped=False)
    runs = []
    for free in ((shared + 2.5 * per) / MEMORY_SHARE, 1e12):
        monkeypatch.setattr(runtime, "free_memory", lambda device=None, free=free: int(free))
        runs.append(neuroal_search(cfg, params, w, 0.6, "wanda", SearchSettings(lambdas_block=(0.0, 0.05, 0.1, 0.2)),
                                   progress=False))
    assert (runs[0].block.chunk, runs[1].block.chunk) == (2, 4)
    assert runs[0].info()["lambda_chunk_row"] == 2 and runs[1].info()["lambda_chunk_row"] == len(runs[1].row.lambdas)
    for a, b in ((runs[0].block, runs[1].block), (runs[0].row, runs[1].row)):
        np.testing.assert_array_equal(a.totals, b.totals)
    for k in runs[0].dist:
        np.testing.assert_array_equal(runs[0].dist[k], runs[1].dist[k])


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
    r = neuroal_search(cfg, params, w, 0.6, "sparsegpt",
                       SearchSettings(neuroal_step="block", lambdas_block=(0.01, 0.1)), progress=False)
    assert r.row is None and r.block.best_lambda in (0.01, 0.1) and np.all(np.isfinite(r.block.totals))
    pruned, masks = sequential_prune(cfg, params, w, r.dist, "sparsegpt", progress=False)
    assert 0.59 < 1 - np.mean([np.mean(np.asarray(m)) for m in masks.values()]) < 0.62


def test_margins_runner_up_and_noise_arithmetic():
    from neuroal_jax.topups.neuroal.picks import NEAR_TIE, margin, near_tie, pick, runner_up, within_noise
    v = [3.0, 1.0, 1.004, 2.0]
    assert (pick(v), runner_up(v)) == (1, 2) and margin(v) == pytest.approx(0.004)
    assert near_tie(margin(v)) == (0.004 < NEAR_TIE) and not near_tie(margin([1.0, 2.0]))
    assert margin([5.0]) is None and runner_up([5.0]) is None and margin([0.0, 0.5]) == 0.5  # absolute at zero
    assert (pick([2.0, 1.0, 1.0]), runner_up([2.0, 1.0, 1.0]), margin([2.0, 1.0, 1.0])) == (1, 2, 0.0)
    # three window sets: candidate 1's gap to the pick (0) is 0.05, 0.2, 0 (std 0.104), candidate 2's a steady 1.0
    sets = [[1.0, 1.05, 2.0], [2.0, 2.2, 3.0], [0.5, 0.5, 1.5]]
    assert within_noise(sets) == [[1], [], [1]]
    assert near_tie(10.0, [1]) and not near_tie(1e-9, [])  # measured noise overrides the margin
    with pytest.raises(ValueError, match="S >= 2"):
        within_noise([[1.0, 2.0]])


def test_a_near_tie_is_reported_and_warned(tiny_llama, tmp_path):
    """A metric that scores every candidate alike gives a margin of 0: the report says near-tie and prune warns; the
    margin and runner-up in the report are those of the alignment curve it holds."""
    import neuroal_jax as nj
    from neuroal_jax.errors import AllocationWarning
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).integers(0, tiny_llama[0].vocab_size, 4096))
    w = f"tokens:{tmp_path / 'calib.npy'}"
    kw = dict(method="wanda", sparsity=0.6, nsamples=4, seqlen=32, top_up="neuroal", progress=False)
    register_metric("test_flat", lambda a_dense, a_sparse: jnp.zeros(()), override=True)
    try:
        with pytest.warns(AllocationWarning, match=r"block step picked λ 0 by test_flat, a near-tie: λ 0.1 is within"):
            tie = nj.prune(tiny_llama, calib=w, options={"neuroal_step": "block", "lambdas_block": (0.0, 0.1),
                                                          "alignment": "test_flat"}, **kw).report
    finally:
        METRICS._entries.pop("test_flat")
    assert tie["near_tie_block"] and tie["margin_block"] == 0.0 and tie["runner_up_block"] == 0.1
    from neuroal_jax.outputs.report import format_summary
    assert "NeuroAL (test_flat): block λ 0 (margin 0.00% to λ 0.1, a near-tie)" in format_summary(tie)
    report = nj.prune(tiny_llama, calib=w, options={"lambdas_block": (0.0, 0.1, 0.2)}, **kw).report
    for step in ("block", "row"):
        curve = sorted(report[f"alignment_{step}"], key=lambda c: c["alignment"])
        assert report[f"runner_up_{step}"] == curve[1]["lambda"]
        assert report[f"margin_{step}"] == pytest.approx((curve[1]["alignment"] - curve[0]["alignment"])
                                                         / curve[0]["alignment"])
