"""Block profiles of NeuroAL's block step: the linear one is the paper's schedule, every other profile's λ
candidate is its own top-up's allocation at the matching strength, and prune, compare and sweep take them."""
from __future__ import annotations

import numpy as np
import pytest

import neuroal_jax as nj
from neuroal_jax.models import family_of
from neuroal_jax.pruning import block_distribution
from neuroal_jax.topups import PruneJob, get_topup
from neuroal_jax.topups.neuroal.profiles import (
    BLOCK_PROFILES,
    ProfileInputs,
    block_profile,
    block_schedule,
    linear_profile,
)
from neuroal_jax.topups.neuroal.schedules import BLOCK_LAMBDAS, block_candidates

pytestmark = pytest.mark.xdist_group("profiles")
WINDOWS = np.random.default_rng(0).integers(0, 128, (6, 32))


def job(deep_llama, top_up, options, sparsity=0.6):
    return get_topup(top_up)(PruneJob(*deep_llama, WINDOWS, sparsity, "wanda", options=options, batch_size=4,
                                      progress=False))


def candidate(deep_llama, name, lam, sparsity=0.6):
    profile = block_profile(name, ProfileInputs(*deep_llama, WINDOWS, batch_size=4, progress=False))
    return block_candidates(deep_llama[0], sparsity, [lam], profile)[0]


def test_the_linear_profile_is_the_papers_schedule(deep_llama):
    cfg = deep_llama[0]
    got = block_candidates(cfg, 0.7, BLOCK_LAMBDAS, block_profile("linear", ProfileInputs(*deep_llama, WINDOWS)))
    assert got == block_candidates(cfg, 0.7, BLOCK_LAMBDAS)
    assert got == [block_distribution(cfg, block_schedule(4, 0.7, lam)) for lam in BLOCK_LAMBDAS]
    assert list(linear_profile(4).values) == [1, 2, 3, 4]


@pytest.mark.parametrize("name, top_up, options", [
    ("owl", "owl", {"owl_lambda": 0.08}),
    ("owl", "owl", {"owl_lambda": 0.2}),
    ("dlp", "dlp", {"dlp_alpha": 0.15}),
    ("dlp", "dlp", {"dlp_alpha": 0.05}),
])
def test_a_profile_at_lambda_is_its_top_up_at_that_strength(deep_llama, name, top_up, options):
    """The OWL profile at λ is `--top-up owl --owl-lambda λ`; DLP's at λ is `--top-up dlp --dlp-alpha λ`: the same
    floats, so the same masks."""
    lam = next(iter(options.values()))
    expected = job(deep_llama, top_up, options).dist
    got = candidate(deep_llama, name, lam)
    assert got == expected
    assert len(set(got.values())) == 4  # the profile separates the blocks


def test_the_alphapruning_profile_at_the_matching_lambda(deep_llama):
    """AlphaPruning's mapping s·r_b / mean(r), r_b = 1 - ε + 2ε·minmax(α)_b, is the profile's at
    λ = ε·s / (1 - ε + 2ε·mean(minmax α)) (all blocks the same size): equal to float64 rounding."""
    eps, s = 0.3, 0.6
    alloc = job(deep_llama, "alphapruning", {"alpha_epsilon": eps}, s)
    alpha = np.array([alloc.info["alpha"][str(b)] for b in range(4)])
    mm = (alpha - alpha.min()) / np.ptp(alpha)
    lam = eps * s / (1 - eps + 2 * eps * mm.mean())
    got = candidate(deep_llama, "alphapruning", lam, s)
    np.testing.assert_allclose([got[k] for k in alloc.dist], list(alloc.dist.values()), rtol=0, atol=1e-12)
    assert np.argmax(alpha) == np.argmax([got[f"{b}.self_attn.q_proj"] for b in range(4)])  # larger α → sparser


def test_every_profile_keeps_the_mean_and_widens_with_lambda(deep_llama):
    inputs = ProfileInputs(*deep_llama, WINDOWS, batch_size=4, progress=False)
    for name in BLOCK_PROFILES:
        profile = block_profile(name, inputs)
        spans = []
        for lam in (0.02, 0.1, 0.2):
            s = profile.block_sparsity(0.6, lam)
            assert s.mean() == pytest.approx(0.6, abs=1e-12), name
            spans.append(np.ptp(s))
        assert spans == pytest.approx([0.04, 0.2, 0.4]), name


def test_a_registered_profile_shapes_the_candidates(deep_llama, monkeypatch):
    from neuroal_jax.topups.neuroal.profiles import register_profile
    monkeypatch.setattr(BLOCK_PROFILES, "_entries", dict(BLOCK_PROFILES._entries))  # unregistered afterwards

    @register_profile("weight_norm_test", "mean |W| per block: larger, sparser")
    def weight_norm(inputs):
        names = family_of(inputs.cfg).prunable
        return [-np.mean([np.abs(np.asarray(b[n]["weight"])).mean() for n in names]) for b in inputs.params["blocks"]]

    alloc = job(deep_llama, "neuroal", {"neuroal_step": "block", "block_profile": "weight_norm_test",
                                  "lambdas_block": (0.1,)})
    block = [alloc.dist[f"{b}.self_attn.q_proj"] for b in range(4)]
    assert alloc.info["block_profile"] == "weight_norm_test" and block == sorted(block)  # weights grow with depth
    assert block[-1] - block[0] == pytest.approx(0.2)


def test_prune_with_the_owl_profile_is_the_owl_top_up(tiny_llama, deep_llama, tmp_path):
    """The search at the one λ of OWL's default is `--top-up owl`, mask for mask; the report names the profile."""
    kw = dict(method="wanda", sparsity=0.6, calib=f"tokens:{tmp_path / 'c.npy'}", nsamples=6, seqlen=32,
              batch_size=4, progress=False)
    np.save(tmp_path / "c.npy", np.random.default_rng(1).integers(0, 128, 2048))
    owl = nj.prune(deep_llama, top_up="owl", **kw)
    neuroal = nj.prune(deep_llama, top_up="neuroal", options={"neuroal_step": "block", "block_profile": "owl",
                                                        "lambdas_block": (0.08,)}, **kw)
    assert neuroal.report["block_profile"] == "owl" and neuroal.report["lambda_block"] == 0.08
    assert neuroal.report["block_profile_values"] == list(owl.report["owl_outlier_ratios"].values())
    for k in owl.masks:
        np.testing.assert_array_equal(np.asarray(neuroal.masks[k]), np.asarray(owl.masks[k]), err_msg=k)


def test_compare_passes_the_profile_to_neuroal(deep_llama, tmp_path):
    from converters.hf import export_hf
    np.save(tmp_path / "c.npy", np.random.default_rng(1).integers(0, 128, 2048))
    spec = f"tokens:{tmp_path / 'c.npy'}"
    export_hf(*deep_llama, tmp_path / "model")
    summary = nj.compare(tmp_path / "model", top_ups="dlp,neuroal", sparsity=0.6, calib=spec, eval=spec, nsamples=6,
                         seqlen=32, batch_size=4, progress=False,
                         options={"block_profile": "dlp", "neuroal_step": "block", "lambdas_block": (0.15,)}).report
    rows = {r["top_up"]: r for r in summary["rows"]}
    assert rows["neuroal"]["lambda_block"] == 0.15
    assert rows["neuroal"]["perplexity"] == rows["dlp"]["perplexity"]  # DLP's default α is 0.15


def test_sweep_compares_profiles_side_by_side(deep_llama, tmp_path):
    np.save(tmp_path / "c.npy", np.random.default_rng(1).integers(0, 128, 2048))
    spec = f"tokens:{tmp_path / 'c.npy'}"
    kw = dict(method="wanda", sparsity=0.6, calib=spec, eval=spec, nsamples=6, seqlen=32, batch_size=4,
              metrics="neuron", lambdas_block=(0.02, 0.08, 0.15), search_samples=4, progress=False)
    both = nj.sweep(deep_llama, block_profile="linear,owl", out=tmp_path / "sweep", **kw).report
    linear = nj.sweep(deep_llama, **kw).report
    assert [r["block_profile"] for r in both["runs"]] == ["linear", "owl"]
    assert both["settings"]["model"] == linear["settings"]["model"]
    assert both["runs"][0]["candidates"] == linear["runs"][0]["candidates"]
    owl_at_008 = nj.prune(deep_llama, top_up="owl", calib=spec, eval=spec, nsamples=6, seqlen=32, batch_size=4,
                          method="wanda", sparsity=0.6, progress=False)
    assert both["runs"][1]["candidates"][1]["perplexity"] == owl_at_008.report["perplexity"]
    assert both["runs"][0]["candidates"][1]["perplexity"] != both["runs"][1]["candidates"][1]["perplexity"]
    assert (tmp_path / "sweep" / "plots" / "profiles.png").stat().st_size > 0
    (pool,) = both["profiles"]  # both profiles' candidates in one pool: the pick and oracle over profiles and λs
    pooled = [(r["block_profile"], c) for r in both["runs"] for c in r["candidates"]]
    best = min(pooled, key=lambda pc: pc[1]["alignment"]["neuron"])
    oracle = min(pooled, key=lambda pc: pc[1]["perplexity"][spec])
    summary = pool["summary"]
    assert summary["metrics"]["neuron"]["pick"] == {"block_profile": best[0], "lambda_block": best[1]["lambda_block"],
                                                    "lambda_row": None}
    assert summary["oracle"][spec]["block_profile"] == oracle[0]
    assert summary["oracle"][spec]["perplexity"] == oracle[1]["perplexity"][spec]
    assert linear["profiles"] == []
    header = (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["calib", "seed", "block_profile", "search_samples"]


def test_an_output_metric_picks_the_profile_and_lambda_together(deep_llama, tmp_path):
    """Several profiles pool their candidates: the pick is the lowest output_nll over every profile's λs, the same
    value each profile's own search gives it; λ 0 (the uniform distribution in every profile) is scored once."""
    np.save(tmp_path / "c.npy", np.random.default_rng(1).integers(0, 128, 2048))
    kw = dict(method="wanda", sparsity=0.6, calib=f"tokens:{tmp_path / 'c.npy'}", nsamples=6, seqlen=32,
              batch_size=4, progress=False, top_up="neuroal")
    opts = {"neuroal_step": "block", "lambdas_block": (0.0, 0.08, 0.2), "alignment": "output_nll"}
    one = {p: nj.prune(deep_llama, options={**opts, "block_profile": p}, **kw).report for p in ("linear", "owl")}
    both = nj.prune(deep_llama, options={**opts, "block_profile": "linear,owl"}, **kw).report
    curve = both["alignment_block"]
    assert [(c["block_profile"], c["lambda"]) for c in curve] == [("linear", 0.0), ("linear", 0.08), ("linear", 0.2),
                                                                  ("owl", 0.08), ("owl", 0.2)]
    for c in curve:  # each candidate's value is its own profile's search's, up to rounding across batch shapes
        alone = {r["lambda"]: r["alignment"] for r in one[c["block_profile"]]["alignment_block"]}
        assert c["alignment"] == pytest.approx(alone[c["lambda"]], rel=1e-5)
    best = min(curve, key=lambda c: c["alignment"])
    assert (both["block_profile"], both["lambda_block"]) == (best["block_profile"], best["lambda"])
    assert both["block_profiles"] == ["linear", "owl"] and both["options"]["block_profile"] == ["linear", "owl"]
    assert both["block_profile_values"] == one[best["block_profile"]]["block_profile_values"]
