"""DLP: block sparsities from the mean (or median) Wanda score of each block (docs/algorithm.md §4)."""
import dataclasses
import json

import numpy as np
import pytest

from neuroal_jax import prune
from neuroal_jax.models import family_of, init_params
from neuroal_jax.pruning import dense_activation_norms
from neuroal_jax.topups import PruneJob, get_topup
from neuroal_jax.topups.dlp import block_statistic

WINDOWS = np.random.default_rng(0).integers(0, 128, (6, 32))


def expected_block_sparsity(cfg, params, sparsity, alpha, statistic):
    """The formula written out: S_l = s + 2α (s_l - mean s) / (max s - min s), clipped, in float64."""
    norms = dense_activation_norms(cfg, params, WINDOWS, progress=False)
    stats = []
    for b, block in enumerate(params["blocks"]):
        flat = np.concatenate([(np.abs(np.asarray(block[n]["weight"], np.float64))
                                * np.asarray(norms[f"{b}.{n}"], np.float64)[None, :]).ravel()
                               for n in family_of(cfg).prunable])
        stats.append(flat.mean() if statistic == "mean" else np.sort(flat)[(flat.size - 1) // 2])
    s = np.asarray(stats)
    return np.clip(sparsity + 2 * alpha * (s - s.mean()) / (s.max() - s.min()), 0.01, 0.99)


@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_block_sparsities_follow_the_formula(tiny_llama, statistic):
    deep = dataclasses.replace(tiny_llama[0], num_layers=4)
    params = init_params(deep, seed=3, scale=0.1)
    options = {"dlp_alpha": 0.1, "dlp_statistic": statistic}
    alloc = get_topup("dlp")(PruneJob(deep, params, WINDOWS, 0.6, "wanda", options=options, progress=False))
    got = np.array([alloc.info["dlp_block_sparsity"][str(b)] for b in range(4)])
    np.testing.assert_allclose(got, expected_block_sparsity(deep, params, 0.6, 0.1, statistic), rtol=1e-5)
    assert got.mean() == pytest.approx(0.6, abs=1e-12) and got.max() - got.min() == pytest.approx(0.2, abs=1e-9)
    assert all(alloc.dist[f"{b}.{n}"] == got[b] for b in range(4) for n in family_of(deep).prunable)


def test_median_is_the_lower_middle_value_as_torch():
    values = [np.array([[4.0, 1.0], [3.0, 2.0]], np.float32)]  # middle values 2 and 3
    assert block_statistic(values, "median") == 2.0
    torch = pytest.importorskip("torch")
    flat = np.random.default_rng(1).random(1000).astype(np.float32)
    assert block_statistic([flat], "median") == float(torch.median(torch.from_numpy(flat)))


def test_one_block_is_uniform_and_says_so(tiny_llama):
    cfg, params = tiny_llama
    one = dataclasses.replace(cfg, num_layers=1)
    alloc = get_topup("dlp")(PruneJob(one, {**params, "blocks": params["blocks"][:1]}, WINDOWS, 0.7, "wanda",
                                      progress=False))
    assert alloc.info["dlp_block_sparsity"] == {"0": 0.7} and "uniform" in alloc.info["dlp_note"]


def test_dlp_through_prune_with_any_base_method(tiny_llama, tiny_tokens, tmp_path):
    result = prune(tiny_llama, method="multiflow", sparsity=0.7, top_up="dlp", options={"dlp_alpha": 0.05},
                   calib=f"tokens:{tiny_tokens}", nsamples=4, seqlen=32, progress=False, out=tmp_path / "dlp")
    report = json.loads((tmp_path / "dlp" / "report.json").read_text())
    assert report["options"] == {"dlp_alpha": 0.05, "dlp_statistic": "mean"}
    assert set(report["dlp_block_sparsity"]) == {"0", "1"} and report["sparsity"] == pytest.approx(0.7, abs=0.005)
    assert result.report["block_sparsity"]["0"] != result.report["block_sparsity"]["1"]


@pytest.mark.parametrize("options, match", [
    ({"dlp_alpha": 1.5}, r"dlp_alpha \(--dlp-alpha\) .* must be in \[0.0, 1.0\], got 1.5"),
    ({"dlp_statistic": "mode"}, r"dlp_statistic \(--dlp-statistic\) .* unknown value 'mode'; valid: mean, median"),
])
def test_bad_options(tiny_llama, tiny_tokens, options, match):
    with pytest.raises(ValueError, match=match):
        prune(tiny_llama, method="wanda", sparsity=0.7, top_up="dlp", options=options, calib=f"tokens:{tiny_tokens}",
              nsamples=4, seqlen=32, progress=False)
