"""Output metrics (topups/neuroal/output_metrics.py): each candidate's value is what its pruned model outputs, checked
against independent computations (the perplexity code, `forward`); chunking the tokens changes nothing beyond
rounding; registered ones take part in prune and sweep; they run wherever the search runs."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import neuroal_jax as nj
from cli_run import assert_clean_error, run_cli_all
from neuroal_jax.evaluation.perplexity import perplexity
from neuroal_jax.models import forward
from neuroal_jax.pruning import sequential_prune
from neuroal_jax.topups.neuroal import METRICS, OUTPUT_METRICS, register_metric, register_output_metric
from neuroal_jax.topups.neuroal.candidates import candidate_bytes, evaluate_candidates
from neuroal_jax.topups.neuroal.output_metrics import metric_names, token_chunk
from neuroal_jax.topups.neuroal.schedules import block_candidates
from neuroal_jax.topups.neuroal.search import SearchSettings, neuroal_search

pytestmark = [pytest.mark.xdist_group("output_metrics"),
              pytest.mark.filterwarnings("ignore::neuroal_jax.errors.SparsityWarning")]  # tiny models: ±1 point
BLOCK, ROW = (0.0, 0.1, 0.2), (0.0, 0.1)


@pytest.fixture(scope="module")
def windows(tiny_llama):
    return np.random.default_rng(0).integers(0, tiny_llama[0].vocab_size, (4, 32)).astype(np.int32)


@pytest.fixture(scope="module")
def both_steps(tiny_llama, windows):
    """The search (both steps) under output_nll, with output_kl and neuron scored in the same pass."""
    cfg, params = tiny_llama
    s = SearchSettings(lambdas_block=BLOCK, lambdas_row=ROW, alignment="output_nll")
    return neuroal_search(cfg, params, windows, 0.6, "wanda", s, progress=False)


def pruned(tiny_llama, windows, dist):
    cfg, params = tiny_llama
    return sequential_prune(cfg, params, windows, dist, "wanda", batch_size=len(windows), progress=False)[0]


def test_output_nll_is_the_perplexity_codes_nll_of_each_pruned_candidate(tiny_llama, windows, both_steps):
    """Independent: prune the whole model with the candidate's distribution, then log perplexity on the same
    windows (the evaluation code's batches and head)."""
    cfg, _ = tiny_llama
    for step in (both_steps.block, both_steps.row):
        assert step.metric == "output_nll" and "output_nll" not in step.per_layer
        for i, dist in enumerate(step.dists):
            nll = math.log(perplexity(cfg, pruned(tiny_llama, windows, dist), windows, batch_size=4, progress=False))
            assert step.totals[i] == pytest.approx(nll, rel=1e-5, abs=1e-6), (i, step.lambdas[i])
        assert step.choice == int(np.argmin(step.totals))
    info = both_steps.info()
    assert info["alignment_layers_block"] is None and info["alignment_layers_row"] is None
    assert [c["alignment"] for c in info["alignment_block"]] == [float(v) for v in both_steps.block.totals]


def test_output_kl_is_the_kl_of_forward_dense_vs_pruned(tiny_llama, windows):
    """Independent: float64 KL(p_dense ‖ p_pruned) over every next-token position from two `forward`s."""
    cfg, params = tiny_llama
    dists = block_candidates(cfg, 0.6, BLOCK)
    totals, per_layer, _ = evaluate_candidates(cfg, params, windows, dists, "wanda", ("output_kl", "neuron"),
                                               progress=False)
    assert set(per_layer) == {"neuron"}

    def log_softmax(z):
        z = np.asarray(z, np.float64)[:, :-1]
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_p = log_softmax(forward(cfg, params, windows))
    for i, dist in enumerate(dists):
        log_q = log_softmax(forward(cfg, pruned(tiny_llama, windows, dist), windows))
        kl = float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), -1)))
        assert totals["output_kl"][i] == pytest.approx(kl, rel=1e-4, abs=1e-7), i
    assert np.all(totals["output_kl"] > 0)


def test_chunked_logits_equal_unchunked(tiny_llama, windows):
    """Token chunks of 7 (the last one padded), 31 and all 124 next-token positions at once: the same values up to
    float32 summation order (measured on the build machine: at most 4e-7 relative, chunks of 1 included; 1e-5
    allowed, the bound of a float32 sum of 124 terms); the alignment metrics of the same pass are untouched, bit
    for bit."""
    cfg, params = tiny_llama
    dists = block_candidates(cfg, 0.6, BLOCK)
    runs = [evaluate_candidates(cfg, params, windows, dists, "wanda", ("output_kl", "output_nll", "neuron"),
                                progress=False, token_chunk_size=c)[0] for c in (7, 31, 124)]
    for r in runs[1:]:
        for m in ("output_kl", "output_nll"):
            np.testing.assert_allclose(r[m], runs[0][m], rtol=1e-5, atol=1e-9)
        np.testing.assert_array_equal(r["neuron"], runs[0]["neuron"])
    alone = evaluate_candidates(cfg, params, windows, dists, "wanda", ("neuron",), progress=False)[0]
    np.testing.assert_array_equal(alone["neuron"], runs[0]["neuron"])


def test_the_memory_estimate_counts_the_logits():
    """--lambda-chunk auto: an output metric's token chunks of logits are in the estimate (a large vocabulary,
    short windows: they outweigh a block's work)."""
    import dataclasses

    from conftest import TINY_LLAMA
    cfg = dataclasses.replace(TINY_LLAMA, vocab_size=49152)
    for vmapped in (False, True):
        per, shared = candidate_bytes(cfg, 8, 32, 4, vmapped)
        per_o, shared_o = candidate_bytes(cfg, 8, 32, 4, vmapped, outputs=True)
        assert per_o >= per and shared_o > shared
        logits = 3 * 4 * token_chunk(cfg.vocab_size, 8 * 31) * cfg.vocab_size  # a chunk's logits and softmax
        assert (per_o if vmapped else shared_o) >= logits


def test_a_registered_output_metric_is_used_by_prune_and_sweep(tiny_llama, tmp_path):
    """An inverted NLL picks the candidate output_nll rates worst, in prune and in sweep (same pass, exact)."""
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).integers(0, 128, 4096))
    kw = dict(method="wanda", sparsity=0.6, calib=f"tokens:{tmp_path / 'calib.npy'}", nsamples=4, seqlen=32,
              batch_size=4, progress=False)

    @register_output_metric("test_worst_nll")
    def worst(logp_dense, logits_sparse, target):
        return -(jax.nn.logsumexp(logits_sparse) - logits_sparse[target])

    try:
        r = nj.prune(tiny_llama, top_up="neuroal", options={"neuroal_step": "block", "lambdas_block": BLOCK,
                                                            "alignment": "test_worst_nll"}, **kw).report
        sw = nj.sweep(tiny_llama, step="block", lambdas_block=BLOCK, metrics="output_nll,test_worst_nll,neuron",
                      eval=f"tokens:{tmp_path / 'calib.npy'}", **kw).report
    finally:
        OUTPUT_METRICS._entries.pop("test_worst_nll")
    curve = [c["alignment"] for c in r["alignment_block"]]
    assert r["alignment_metric"] == "test_worst_nll" and r["lambda_block"] == BLOCK[int(np.argmin(curve))]
    run = sw["runs"][0]
    assert list(run["summary"]["metrics"]) == ["output_nll", "test_worst_nll", "neuron"]
    nll = [c["alignment"]["output_nll"] for c in run["candidates"]]
    assert [c["alignment"]["test_worst_nll"] for c in run["candidates"]] == [-v for v in nll]
    assert [-v for v in nll] == curve
    assert run["summary"]["metrics"]["test_worst_nll"]["pick"]["lambda_block"] == BLOCK[int(np.argmax(nll))]
    from neuroal_jax.sweeps.summary import format_summary
    table = format_summary(run, sw["settings"]["eval"]).splitlines()
    assert table[0].startswith("metric          eval") and table[3].startswith("test_worst_nll  tokens:calib.npy")


def test_sweep_all_includes_the_output_metrics():
    from neuroal_jax.options import Target
    from neuroal_jax.pruning import Structure
    s = nj.SweepSettings().resolved(Target("wanda", 0.6, Structure(), 8))
    assert s.metrics == metric_names() and {"output_kl", "output_nll", "neuron"} <= set(s.metrics)
    assert metric_names() == (*METRICS.names(), *OUTPUT_METRICS.names())


def test_a_name_is_one_kind_of_metric_only():
    with pytest.raises(ValueError, match="output metric 'neuron': the name is already a registered alignment metric"):
        register_output_metric("neuron", lambda d, s, t: 0.0)
    with pytest.raises(ValueError, match="alignment metric 'output_kl': .*already a registered output metric"):
        register_metric("output_kl", lambda a, b: 0.0, override=True)
    with pytest.raises(ValueError, match="output metric 'output_kl' is already registered"):
        register_output_metric("output_kl", lambda d, s, t: 0.0)
    assert "neuron" not in OUTPUT_METRICS and "output_kl" not in METRICS


def test_unknown_metrics_are_one_line_exit_2(tiny_llama_dir, tiny_tokens, tmp_path):
    common = ["--model", tiny_llama_dir, "--method", "wanda", "--sparsity", "0.5", "--calib", f"tokens:{tiny_tokens}",
              "--nsamples", "4", "--seqlen", "32", "--quiet"]
    prune, sweep = run_cli_all(
        ["prune", *common, "--top-up", "neuroal", "--alignment", "output_nope", "--out", tmp_path / "p"],
        ["sweep", *common, "--eval", f"tokens:{tiny_tokens}", "--metrics", "output_kl,output_nope",
         "--out", tmp_path / "s"])
    assert_clean_error(prune, "--alignment", "'output_nope'", "neuron", "output_kl", "output_nll")
    assert_clean_error(sweep, "--metrics", "'output_nope'", "valid: all,", "output_kl", "output_nll")
    assert not (tmp_path / "p").exists() and not (tmp_path / "s").exists()


# ---------------------------------------------------------------- wherever the search runs

def _prune(model, calib, **kw):
    options = {"alignment": "output_kl", **kw.pop("options", {})}
    return nj.prune(model, method="wanda", calib=f"tokens:{calib}", nsamples=4, seqlen=32, batch_size=4,
                    top_up="neuroal", options=options, progress=False, **{"sparsity": 0.6, **kw})


def _check_pick(report, step="block"):
    curve = report[f"alignment_{step}"]
    assert report["alignment_metric"] == "output_kl" and all(np.isfinite(c["alignment"]) for c in curve)
    assert report[f"lambda_{step}"] == curve[int(np.argmin([c["alignment"] for c in curve]))]["lambda"]


def test_block_profiles_and_mixed_nm(deep_llama, tiny_tokens):
    owl = _prune(deep_llama, tiny_tokens, options={"neuroal_step": "block", "block_profile": "owl",
                                                   "lambdas_block": (0.0, 0.08, 0.2)}).report
    assert owl["block_profile"] == "owl"
    _check_pick(owl)
    nm = _prune(deep_llama, tiny_tokens, sparsity=0.5, structure="4:8", options={"lambdas_block": (0.0, 0.25)})
    _check_pick(nm.report)
    assert nm.report["structure"] == "4:8" and np.mean(list(nm.report["nm_block_n"].values())) == 4


def test_a_one_device_mesh_gives_the_plain_search(tiny_llama, windows):
    """--devices 1: candidates vmapped and placed on a mesh; the values are the looped search's up to rounding (the
    vmapped head rounds otherwise: measured up to 8e-6 relative on the 4-device test, 1e-4 allowed)."""
    cfg, params = tiny_llama
    kw = dict(lambdas_block=BLOCK, lambdas_row=ROW, alignment="output_kl")
    plain = neuroal_search(cfg, params, windows, 0.6, "wanda", SearchSettings(**kw), progress=False)
    mesh = neuroal_search(cfg, params, windows, 0.6, "wanda", SearchSettings(devices=1, **kw), progress=False)
    for a, b in ((plain.block, mesh.block), (plain.row, mesh.row)):
        np.testing.assert_allclose(b.totals, a.totals, rtol=1e-4)
        assert a.choice == b.choice


def test_bfloat16_streamed_equals_in_memory(deep_llama, tiny_tokens, tmp_path):
    from converters.hf import export_hf
    export_hf(*deep_llama, tmp_path / "model")
    kw = dict(dtype="bfloat16", options={"lambdas_block": (0.0, 0.1), "lambdas_row": (0.0, 0.05)})
    mem = _prune(str(tmp_path / "model"), tiny_tokens, out=tmp_path / "mem", **kw).report
    st = _prune(str(tmp_path / "model"), tiny_tokens, out=tmp_path / "st", stream=True, **kw).report
    for r in (mem, st):
        _check_pick(r)
        _check_pick(r, "row")
    assert st["alignment_block"] == mem["alignment_block"] and st["alignment_row"] == mem["alignment_row"]
    assert mem["dtype"] == "bfloat16"


def test_output_metric_values_are_zero_for_the_dense_model():
    logits = jnp.asarray(np.random.default_rng(0).standard_normal(16), jnp.float32)
    assert abs(float(OUTPUT_METRICS["output_kl"](jax.nn.log_softmax(logits), logits + 3.0, 3))) < 1e-6
    assert float(OUTPUT_METRICS["output_nll"](None, logits, 3)) == pytest.approx(
        float(jax.nn.logsumexp(logits) - logits[3]))
