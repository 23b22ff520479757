"""Mixed N:M: a whole N_b per block with the target mean, from NeuroAL's block step or OWL; every group of M in
block b holds exactly N_b zeros, and the uniform allocation is today's uniform N:M."""
from __future__ import annotations

import numpy as np
import pytest

import neuroal_jax as nj
from neuroal_jax.pruning import Structure, masks
from neuroal_jax.pruning.targets import check_nm_mean, nm_allocation

pytestmark = pytest.mark.xdist_group("mixed_nm")


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("nm") / "calib.npy"
    np.save(path, np.random.default_rng(1).integers(0, 128, 2048))
    return f"tokens:{path}"


def prune(model, calib, structure, top_up, **options):
    st = Structure.parse(structure)
    return nj.prune(model, method="wanda", sparsity=st.n / st.m, structure=structure, top_up=top_up, calib=calib,
                    nsamples=6, seqlen=32, batch_size=4, options=options or None, progress=False)


def zeros_per_group(result, m: int) -> dict:
    """{block: the set of pruned counts over every group of m of its layers}."""
    out = {}
    for key, mask in result.masks.items():
        groups = ~np.asarray(mask).reshape(mask.shape[0], -1, m)
        out.setdefault(int(key.split(".")[0]), set()).update(np.unique(groups.sum(-1)).tolist())
    return out


# ---------------------------------------------------------------- the allocation

@pytest.mark.parametrize("structure, blocks", [("4:8", 30), ("2:4", 7), ("5.6:8", 30), ("4.5:8", 4), ("1:4", 3)])
def test_allocation_has_the_exact_mean_and_stays_in_range(structure, blocks):
    st = Structure.parse(structure)
    rng = np.random.default_rng(blocks)
    for spread in (0.0, 0.05, 0.2, 0.6):
        target = np.clip(st.n / st.m + spread * rng.uniform(-1, 1, blocks), 0.01, 0.99)
        n = nm_allocation(target, st)
        assert n.sum() == round(st.n * blocks) and n.min() >= 1 and n.max() <= st.m - 1
        assert np.abs(n - target * st.m).max() < 1 + 1e-9 or spread == 0.6  # only clipping moves a block further


def test_a_uniform_target_gives_n_everywhere():
    for n, m in ((1, 4), (2, 4), (3, 4), (4, 8), (7, 8)):
        assert (nm_allocation(np.full(5, n / m), Structure("nm", n, m)) == n).all()


def test_a_mean_that_whole_n_cannot_meet_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"4.25:8.*Σ N_b = 8.5.*e.g. 4:8 or 4.5:8"):
        check_nm_mean(Structure.parse("4.25:8"), 2)
    assert check_nm_mean(Structure.parse("4.5:8"), 2) == 9


def test_rows_with_their_own_n_are_exact_nm():
    scores = np.random.default_rng(0).standard_normal((2, 6, 32)).astype(np.float32)
    n_rows = np.array([[1, 2, 3, 1, 2, 3], [4, 4, 4, 4, 4, 4]])
    kept = np.asarray(masks.prune_nm_rows(scores, n_rows, 8))
    assert ((~kept).reshape(2, 6, 4, 8).sum(-1) == n_rows[..., None]).all()
    np.testing.assert_array_equal(kept[1], np.asarray(masks.prune_nm(scores[1], 4, 8)))


# ---------------------------------------------------------------- pruning

@pytest.mark.parametrize("structure", ["4:8", "2:4"])
def test_neuroal_mixed_nm_is_exact_per_block(deep_llama, calib, structure):
    st = Structure.parse(structure)
    r = prune(deep_llama, calib, structure, "neuroal", lambdas_block=(0.25,))
    n_b = {int(b): n for b, n in r.report["nm_block_n"].items()}
    assert zeros_per_group(r, st.m) == {b: {n} for b, n in n_b.items()}
    assert sum(n_b.values()) == 4 * st.n and len(set(n_b.values())) > 1  # mixed, with the exact mean
    assert n_b[0] < n_b[3]  # the linear profile: block 0 densest
    assert r.report["sparsity"] == st.n / st.m and r.report["neuroal_step"] == "block"


def test_lambdas_that_round_to_one_allocation_are_searched_once(deep_llama, calib):
    from neuroal_jax.topups.neuroal.schedules import block_candidates, distinct
    lams = (0.01, 0.02, 0.03, 0.1, 0.11, 0.2, 0.25)
    kept, dists = distinct(lams, block_candidates(deep_llama[0], 0.5, lams, structure=Structure.parse("4:8")))
    assert len(kept) < len(lams) and kept[0] == 0.01 and len({tuple(sorted(d.items())) for d in dists}) == len(kept)
    r = prune(deep_llama, calib, "4:8", "neuroal", lambdas_block=lams)
    assert [c["lambda"] for c in r.report["alignment_block"]] == list(kept)


def test_owl_mixed_nm_with_a_fractional_mean(deep_llama, calib):
    r = prune(deep_llama, calib, "5.5:8", "owl", owl_lambda=0.2)
    n_b = {int(b): n for b, n in r.report["nm_block_n"].items()}
    assert zeros_per_group(r, 8) == {b: {n} for b, n in n_b.items()} and sum(n_b.values()) == 22
    assert r.report["sparsity"] == 5.5 / 8 and r.report["structure"] == "5.5:8"


@pytest.mark.parametrize("top_up, options", [("neuroal", {"lambdas_block": (0.0,)}), ("owl", {"owl_lambda": 0.0})])
def test_the_uniform_allocation_is_todays_uniform_nm(deep_llama, calib, top_up, options):
    uniform = prune(deep_llama, calib, "4:8", "uniform")
    mixed = prune(deep_llama, calib, "4:8", top_up, **options)
    assert set(mixed.report["nm_block_n"].values()) == {4}
    for k in uniform.masks:
        np.testing.assert_array_equal(np.asarray(mixed.masks[k]), np.asarray(uniform.masks[k]), err_msg=k)


@pytest.mark.parametrize("kw, match", [
    (dict(structure="4.5:8", top_up="uniform"), r"fractional mean N.*owl, neuroal"),
    (dict(structure="4:8", top_up="neuroal", options={"neuroal_step": "both"}), r"--neuroal-step both.*valid: block"),
    (dict(structure="4:8", top_up="neuroal", method="sparsegpt"), r"sparsegpt supports unstructured"),
    (dict(structure="layer", top_up="neuroal"), r"structure layer is not supported \(valid: row, N:M\)"),
    (dict(structure="4:8", top_up="dlp"), r"top-up 'dlp' does not work with structure 4:8.*uniform, owl, neuroal"),
    (dict(structure="4.3:8", top_up="neuroal"), r"4.3:8.*Σ N_b = 17.2.*e.g. 4.25:8 or 4.5:8"),
])
def test_refusals(deep_llama, calib, kw, match):
    st = Structure.parse(kw["structure"])
    sparsity = st.n / st.m if st.kind == "nm" else 0.5
    with pytest.raises(ValueError, match=match):
        nj.prune(deep_llama, **{"method": "wanda", "sparsity": sparsity, "calib": calib, "nsamples": 6, "seqlen": 32,
                          "progress": False, **kw})


def test_compare_with_a_structure(deep_llama, calib, tmp_path):
    from converters.hf import export_hf
    export_hf(*deep_llama, tmp_path / "model")
    summary = nj.compare(tmp_path / "model", top_ups="uniform,owl,neuroal", structure="4:8", sparsity=0.5,
                         calib=calib, eval=calib, nsamples=6, seqlen=32, batch_size=4, progress=False).report
    assert summary["settings"]["structure"] == "4:8"
    assert [r["sparsity"] for r in summary["rows"][1:]] == [0.5, 0.5, 0.5]
