"""λ sweeps (neuroal_jax.sweeps): each candidate's outcome is `prune` with that λ alone, the picks are the
search's, results do not depend on chunking, metrics share one pass, registered metrics take part."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import neuroal_jax as nj
from cli_run import run_cli
from neuroal_jax.outputs.files import MARKER
from neuroal_jax.sweeps.summary import format_summary, mark_noise, metric_summary, sensitivity, spearman
from neuroal_jax.topups.neuroal import SearchSettings, neuroal_search
from neuroal_jax.topups.neuroal import candidates as S

pytestmark = pytest.mark.xdist_group("sweep")
BLOCK = (0.0, 0.05, 0.1)
ROW = (0.0, 0.1, 0.2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(0)
    np.save(d / "calib.npy", rng.integers(0, 128, 4096).astype(np.int64))
    np.save(d / "test.npy", rng.integers(0, 128, 600).astype(np.int64))
    return d


def common(data):
    return dict(method="wanda", sparsity=0.6, calib=f"tokens:{data / 'calib.npy'}", nsamples=8, seqlen=32,
                eval=f"tokens:{data / 'test.npy'}", batch_size=4, progress=False)


@pytest.fixture(scope="module")
def block_sweep(tiny_llama, data):
    return nj.sweep(tiny_llama, step="block", lambdas_block=BLOCK, search_samples=4, **common(data)).report


@pytest.fixture(scope="module")
def row_sweep(tiny_llama, data):
    return nj.sweep(tiny_llama, step="row", lambda_block=0.05, lambdas_row=ROW, search_samples=4,
                    **common(data)).report


def spec(data):
    return f"tokens:{data / 'test.npy'}"


def test_every_block_candidate_is_prune_with_that_lambda_alone(tiny_llama, data, block_sweep):
    """Same functions, same shapes: the sweep's perplexity and sparsities are prune's, to the bit."""
    for c in block_sweep["runs"][0]["candidates"]:
        r = nj.prune(tiny_llama, top_up="neuroal",
                     options={"neuroal_step": "block", "lambdas_block": (c["lambda_block"],), "search_samples": 4},
                     **common(data))
        assert r.report["lambda_block"] == c["lambda_block"]
        assert r.report["perplexity"][spec(data)] == c["perplexity"][spec(data)]
        assert r.report["sparsity"] == c["sparsity"]
        assert r.report["block_sparsity"] == c["block_sparsity"]


def test_every_row_candidate_is_prune_with_those_lambdas_alone(tiny_llama, data, row_sweep):
    run = row_sweep["runs"][0]
    assert run["lambda_block"] == 0.05 and run["lambda_block_from"] == "given"
    for c in run["candidates"]:
        r = nj.prune(tiny_llama, top_up="neuroal", options={"neuroal_step": "both", "lambdas_block": (0.05,),
                                                            "lambdas_row": (c["lambda_row"],), "search_samples": 4},
                     **common(data))
        assert r.report["perplexity"][spec(data)] == c["perplexity"][spec(data)]
        assert r.report["sparsity"] == c["sparsity"]


def test_picks_are_the_searchs_and_every_metric_reports(tiny_llama, data, block_sweep):
    run = block_sweep["runs"][0]
    from neuroal_jax.topups.neuroal.output_metrics import metric_names
    assert list(run["summary"]["metrics"]) == list(metric_names())  # all: the alignment and the output metrics
    from neuroal_jax.evaluation.data import calibration_windows
    win = calibration_windows(common(data)["calib"], None, 8, 32, 0, 128)
    for metric in ("neuron", "cosine", "output_kl"):
        res = neuroal_search(*tiny_llama, win, 0.6, "wanda",
                             SearchSettings(neuroal_step="block", lambdas_block=BLOCK, search_samples=4,
                                            alignment=metric), progress=False)
        assert run["summary"]["metrics"][metric]["pick"]["lambda_block"] == res.block.best_lambda
        assert [c["alignment"][metric] for c in run["candidates"]] == list(res.block.totals)


def test_summary_arithmetic():
    cands = [{"lambda_block": l, "lambda_row": None, "alignment": {"a": a, "b": b}, "perplexity": {"e": p}}
             for l, a, b, p in ((0.1, 3.0, 1.0, 30.0), (0.2, 1.0, 2.0, 20.0), (0.3, 2.0, 3.0, 10.0))]
    s = metric_summary(cands, ("a", "b"), ("e",))
    assert s["oracle"]["e"] == {"lambda_block": 0.3, "lambda_row": None, "perplexity": 10.0}
    assert s["metrics"]["a"]["pick"]["lambda_block"] == 0.2 and s["metrics"]["a"]["regret"]["e"] == pytest.approx(1.0)
    assert s["metrics"]["b"]["pick"]["lambda_block"] == 0.1 and s["metrics"]["b"]["regret"]["e"] == pytest.approx(2.0)
    assert s["metrics"]["b"]["spearman"]["e"] == pytest.approx(-1.0)
    assert s["metrics"]["a"]["spearman"]["e"] == pytest.approx(0.5)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert s["metrics"]["a"]["margin"] == pytest.approx(1.0) and s["metrics"]["a"]["runner_up"]["lambda_block"] == 0.3
    assert not s["metrics"]["a"]["near_tie"]
    runs = [{"calib": "c", "block_profile": "linear", "search_samples": 2, "seed": seed, "summary": {"metrics": {"a": {
        "pick": {"lambda_block": 0.1, "lambda_row": None}, "perplexity": {"e": p}}}}}
        for seed, p in ((0, 10.0), (1, 14.0))]
    (row,) = sensitivity(runs, ("a",), ("e",))
    assert row["perplexity"]["e"]["mean"] == 12.0 and row["perplexity"]["e"]["std"] == pytest.approx(np.sqrt(8.0))


def test_noise_over_seeds_marks_near_ties():
    """Metric a: candidate 0.2's gap to the pick 0.1 is 0.05, 0.25, 0 over the seeds (std 0.132): within noise on
    seeds 0 and 2, not on seed 1; candidate 0.3's is steady and large. Metric b's pick wins by a wide, steady
    margin. Runs with other candidates are left alone."""
    def run(seed, a, lams=(0.1, 0.2, 0.3)):
        cands = [{"lambda_block": lam, "lambda_row": None, "alignment": {"a": x, "b": 2.0 * k + 1},
                  "perplexity": {"e": 10.0 + k}} for k, (lam, x) in enumerate(zip(lams, a))]
        return {"calib": "c", "block_profile": "linear", "search_samples": 2, "seed": seed, "candidates": cands,
                "summary": metric_summary(cands, ("a", "b"), ("e",))}

    runs = [run(0, (1.0, 1.05, 5.0)), run(1, (1.0, 1.25, 5.0)), run(2, (1.0, 1.0, 5.0)), run(0, (1.0, 1.3), (0.5, 0.6))]
    mark_noise(runs, ("a", "b"))
    for r, close in zip(runs[:3], (True, False, True)):
        a, b = r["summary"]["metrics"]["a"], r["summary"]["metrics"]["b"]
        assert a["within_noise"] == ([{"lambda_block": 0.2, "lambda_row": None}] if close else [])
        assert a["near_tie"] == close
        assert b["within_noise"] == [] and not b["near_tie"]
    assert "within_noise" not in runs[3]["summary"]["metrics"]["a"]
    assert not runs[1]["summary"]["metrics"]["a"]["near_tie"] and runs[1]["summary"]["metrics"]["a"]["margin"] == 0.25
    table = format_summary(runs[0], ("e",))
    assert "margin" in table and "a: λ 0.1; within the spread over seeds: 0.2" in table and "b: λ" not in table


def test_results_do_not_depend_on_the_lambda_chunk(tiny_llama, data, block_sweep):
    chunked = nj.sweep(tiny_llama, step="block", lambdas_block=BLOCK, search_samples=4, lambda_chunk=2,
                       **common(data)).report
    assert chunked["runs"][0]["candidates"] == block_sweep["runs"][0]["candidates"]


def test_metrics_share_one_search_pass(tiny_llama, data, monkeypatch):
    calls = []
    real = S.candidates_block
    monkeypatch.setattr(S, "candidates_block", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(step="block", lambdas_block=BLOCK, search_samples=4, outcomes="picks", **common(data))
    nj.sweep(tiny_llama, metrics="neuron", **kw)
    one = len(calls)
    nj.sweep(tiny_llama, metrics="all", **kw)
    assert one > 0 and len(calls) == 2 * one


def test_a_metric_registered_in_a_test_has_its_pick_and_regret(tiny_llama, data):
    import jax.numpy as jnp

    from neuroal_jax.topups.neuroal.alignment import METRICS

    @nj.register_metric("test_l1_sweep")
    def l1(a_dense, a_sparse):
        return jnp.abs(a_dense - a_sparse).sum() / a_dense.size

    try:
        r = nj.sweep(tiny_llama, step="block", lambdas_block=BLOCK, search_samples=4, metrics="neuron,test_l1_sweep",
                     **common(data)).report
    finally:
        METRICS._entries.pop("test_l1_sweep")
    e = r["runs"][0]["summary"]["metrics"]["test_l1_sweep"]
    assert e["pick"]["lambda_block"] in BLOCK and e["regret"][spec(data)] >= 0
    assert list(r["runs"][0]["summary"]["metrics"]) == ["neuron", "test_l1_sweep"]


def test_grid_and_sensitivity(tiny_llama, data, block_sweep, tmp_path):
    grid = nj.sweep(tiny_llama, step="grid", lambdas_block=(0.0, 0.1), lambdas_row=(0.0, 0.1), search_samples=4,
                    metrics="neuron", **common(data)).report
    cands = grid["runs"][0]["candidates"]
    assert [(c["lambda_block"], c["lambda_row"]) for c in cands] == [(0.0, 0.0), (0.0, 0.1), (0.1, 0.0), (0.1, 0.1)]
    # seeds × |Cλ|: block candidates' final pruning depends only on the seed's windows, so it is reused across |Cλ|
    sens = nj.sweep(tiny_llama, step="block", lambdas_block=BLOCK, seeds=(0, 1), search_samples=(2, 4),
                    metrics="neuron", **common(data)).report
    assert [(r["seed"], r["search_samples"]) for r in sens["runs"]] == [(0, 2), (0, 4), (1, 2), (1, 4)]
    assert sens["runs"][1]["candidates"][0]["perplexity"] == block_sweep["runs"][0]["candidates"][0]["perplexity"]
    rows = {r["search_samples"]: r for r in sens["sensitivity"]}
    from neuroal_jax.sweeps.plots import save_sweep_plots
    written = save_sweep_plots(sens, tmp_path / "plots")
    assert {str(p.relative_to(tmp_path / "plots")) for p in written} == {
        "search_samples.png", *(f"run-{i:02d}/{n}.png" for i in range(4) for n in ("perplexity", "metrics"))}
    assert rows[4]["seeds"] == [0, 1] and len(rows[4]["perplexity"][spec(data)]["values"]) == 2
    for r in sens["runs"]:  # each seed's candidates compared with the other seed's
        e = r["summary"]["metrics"]["neuron"]
        assert e["near_tie"] == bool(e["within_noise"]) and all(p["lambda_block"] in BLOCK for p in e["within_noise"])
    picks = nj.sweep(tiny_llama, step="block", lambdas_block=BLOCK, search_samples=4, outcomes="picks",
                     metrics="neuron", **common(data)).report
    evaluated = [c for c in picks["runs"][0]["candidates"] if c["perplexity"]]
    assert len(evaluated) == 1 and picks["runs"][0]["summary"]["metrics"]["neuron"]["regret"][spec(data)] is None


def test_cli_writes_json_csv_and_plots(tiny_llama_dir, data, tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli("sweep", "--model", tiny_llama_dir, "--method", "wanda", "--sparsity", "0.6", "--step", "row",
                   "--lambdas-block", "0,0.1", "--lambdas-row", "0,0.1,0.2", "--calib", f"tokens:{data / 'calib.npy'}",
                   "--nsamples", "8", "--seqlen", "32", "--eval", f"tokens:{data / 'test.npy'}", "--search-samples",
                   "4", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "regret" in proc.stdout and "margin" in proc.stdout
    assert "block search (neuron)" in proc.stdout and "linear block profile" in proc.stdout
    result = json.loads((out / "sweep.json").read_text())
    with open(out / "sweep.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + 3 and rows[0][:6] == ["calib", "seed", "block_profile", "search_samples", "lambda_block",
                                                  "lambda_row"]
    assert result["runs"][0]["lambda_block"] in (0.0, 0.1)
    for name in ("perplexity", "metrics", "row_sparsity"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 0
    assert (out / MARKER).exists()


@pytest.mark.slow
def test_devices_give_the_one_device_results(tmp_path):
    """Candidates spread over 2 devices (forced host devices, subprocess): the same outcomes and picks."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    tests = Path(__file__).parent
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, str(tests / "scripts" / "sharded_sweep.py"), str(tests),
                          str(tmp_path / "tokens.npy")], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    one, two = (json.loads(line) for line in out.stdout.splitlines() if line.startswith("["))
    for a, b in zip(one, two):
        assert a["perplexity"] == b["perplexity"] and a["block_sparsity"] == b["block_sparsity"]
        for m in a["alignment"]:
            assert b["alignment"][m] == pytest.approx(a["alignment"][m], rel=1e-6)


def test_several_calibration_sources(tiny_llama, data):
    np.save(data / "other.npy", np.random.default_rng(7).integers(0, 128, 4096).astype(np.int64))
    kw = {**common(data), "calib": f"tokens:{data / 'calib.npy'},tokens:{data / 'other.npy'}"}
    r = nj.sweep(tiny_llama, step="block", lambdas_block=BLOCK, search_samples=4, metrics="neuron", outcomes="picks",
                 **kw).report
    assert [run["calib"] for run in r["runs"]] == [f"tokens:{data / n}" for n in ("calib.npy", "other.npy")]
    assert [row["calib"] for row in r["sensitivity"]] == [run["calib"] for run in r["runs"]]
    with pytest.raises(ValueError, match="repeats a dataset"):
        nj.sweep(tiny_llama, **{**kw, "calib": f"tokens:{data / 'calib.npy'},tokens:{data / 'calib.npy'}"})
