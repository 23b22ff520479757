"""`neuroal_jax.prune`: report, masks checkpoint, exported model, input validation, atomic output."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import neuroal_jax
from neuroal_jax import api, load_distribution, load_masks, prune, runs
from neuroal_jax.topups import TOPUPS

SEQLEN = 64


def run(model, tokens, **kw):
    base = dict(method="wanda", sparsity=0.5, top_up="uniform", calib=f"tokens:{tokens}", nsamples=8,
                seqlen=SEQLEN, progress=False)
    return prune(model, **{**base, **kw})


@pytest.fixture(scope="module")
def pruned(tiny_llama, tiny_tokens, tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "run"
    result = run(tiny_llama, tiny_tokens, eval=[f"tokens:{tiny_tokens}"], eval_nsamples=4, out=out)
    return result


def no_leftovers(parent, name):
    """Nothing named like `name` or its temporary siblings in `parent`."""
    return [p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")]


# ---------------------------------------------------------------- results

def test_report_keys_and_values(pruned, tiny_llama):
    cfg, _ = tiny_llama
    r = pruned.report
    for key in ("model", "method", "top_up", "target_sparsity", "sparsity", "layer_sparsity", "block_sparsity",
                "timings", "perplexity", "structure", "calib", "nsamples", "seqlen", "seed", "options", "versions"):
        assert key in r, key
    assert ((r["method"], r["top_up"], r["structure"], r["nsamples"], r["seqlen"])
            == ("wanda", "uniform", "row", 8, SEQLEN))
    assert r["target_sparsity"] == 0.5
    assert r["sparsity"] == pytest.approx(0.5, abs=1e-9)  # in-features 64 and 96: floor(in/2) is exact
    assert len(r["layer_sparsity"]) == cfg.num_layers * 7
    assert all(re.fullmatch(r"\d+\.(self_attn|mlp)\.[a-z_]+_proj", k) for k in r["layer_sparsity"])
    assert "1.mlp.down_proj" in r["layer_sparsity"] and "0.self_attn.q_proj" in r["layer_sparsity"]
    assert set(r["block_sparsity"]) == {"0", "1"}
    assert {"load", "calibration", "allocation", "prune", "eval", "export", "total"} <= set(r["timings"])
    (spec, ppl), = r["perplexity"].items()
    assert spec.startswith("tokens:") and math.isfinite(ppl) and ppl > 1
    assert r["versions"]["neuroal_jax"] == neuroal_jax.__version__ and r["versions"]["jax"]


def test_report_json_on_disk(pruned):
    on_disk = json.loads((pruned.out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(pruned.report))


def test_output_folder(pruned):
    out = pruned.out
    for name in ("config.json", "model.safetensors", "report.json", "masks", "plots/block_sparsity.png",
                 "plots/layer_sparsity.png"):
        assert (out / name).exists(), name
    assert not (out / "plots" / "owl_outlier_ratios.png").exists()  # uniform has no OWL info
    assert no_leftovers(out.parent, out.name) == [out.name]


def test_masks_roundtrip(pruned):
    for folder in (pruned.out, pruned.out / "masks"):
        masks = load_masks(folder)
        assert masks.keys() == pruned.masks.keys()
        for k, m in masks.items():
            assert m.dtype == bool and np.array_equal(m, np.asarray(pruned.masks[k])), k
    dist = load_distribution(pruned.out)
    assert dist == pytest.approx(pruned.dist)


def test_masks_match_pruned_weights(pruned):
    for k, m in pruned.masks.items():
        b, name = k.split(".", 1)
        W = np.asarray(pruned.params["blocks"][int(b)][name]["weight"])
        assert np.array_equal(W != 0, np.asarray(m)), k


def test_export_reloads_in_transformers(pruned, tiny_llama):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from neuroal_jax.models import forward
    cfg, _ = tiny_llama
    model = AutoModelForCausalLM.from_pretrained(str(pruned.out), dtype=torch.float32).eval()
    modules = dict(model.named_modules())
    for k, m in pruned.masks.items():
        b, name = k.split(".", 1)
        W = modules[f"model.layers.{b}.{name}"].weight.detach().numpy()
        assert np.array_equal(W == 0, ~np.asarray(m)), k
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 32))
    with torch.no_grad():
        theirs = model(torch.as_tensor(tokens)).logits.numpy()
    ours = np.asarray(forward(cfg, pruned.params, tokens))
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


def test_owl_info_merged_and_plotted(tiny_llama, tiny_tokens, tmp_path):
    result = run(tiny_llama, tiny_tokens, top_up="owl", options={"owl_lambda": 0.1}, out=tmp_path / "owl")
    r = result.report
    assert r["top_up"] == "owl" and r["options"] == {"owl_m": 5.0, "owl_lambda": 0.1} and r["owl_lambda"] == 0.1
    assert set(r["owl_outlier_ratios"]) == {"0", "1"}
    assert (tmp_path / "owl" / "plots" / "owl_outlier_ratios.png").exists()
    assert r["block_sparsity"]["0"] != r["block_sparsity"]["1"]


@pytest.mark.parametrize("top_up", list(TOPUPS))
def test_every_registered_top_up(tiny_llama, tiny_tokens, tmp_path, top_up):
    """Any top-up in the registry runs through prune; its info is in report.json and the plots are written."""
    options = {"lambdas_block": [0.01, 0.05], "lambdas_row": [0.0, 0.05]} if top_up == "neuroal" else None
    result = run(tiny_llama, tiny_tokens, top_up=top_up, options=options, out=tmp_path / top_up)
    on_disk = json.loads((tmp_path / top_up / "report.json").read_text())
    assert on_disk["top_up"] == top_up and 0.3 < on_disk["sparsity"] < 0.7
    assert {"block_sparsity.png", "layer_sparsity.png"} <= {p.name for p in (tmp_path / top_up / "plots").iterdir()}
    assert set(load_masks(tmp_path / top_up)) == set(result.masks)
    if top_up == "alphapruning" and "alpha" in on_disk:
        assert (tmp_path / top_up / "plots" / "alpha.png").exists()
    if top_up == "neuroal":
        assert (tmp_path / top_up / "plots" / "neuroal_alignment.png").exists()
        # after the row step, each layer's per-row targets are summarised (min, quartiles, max) and plotted
        assert (tmp_path / top_up / "plots" / "row_sparsity.png").exists()
        for key, spread in on_disk["distribution"].items():
            rows = 1 - np.asarray(result.masks[key]).mean(axis=1)  # row structure: every row meets its target
            np.testing.assert_allclose([spread["min"], spread["median"], spread["max"]],
                                       np.percentile(rows, [0, 50, 100]), atol=1 / result.masks[key].shape[1])
    else:
        assert not (tmp_path / top_up / "plots" / "row_sparsity.png").exists()


def test_nm_structure(tiny_llama, tiny_tokens):
    result = run(tiny_llama, tiny_tokens, structure="2:4", method="magnitude")
    assert result.out is None and result.report["structure"] == "2:4"
    for k, m in result.masks.items():
        groups = np.asarray(m).reshape(m.shape[0], -1, 4)
        assert (groups.sum(-1) == 2).all(), k


# ---------------------------------------------------------------- bad inputs

@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if prune gets as far as loading the model."""
    def fail(*a, **k):
        raise AssertionError("validation should have failed before loading the model")
    monkeypatch.setattr(api, "resolve_model", fail)


@pytest.mark.parametrize("kw, match", [
    (dict(sparsity=1.0), r"sparsity must be in \[0, 1\), got 1.0"),
    (dict(sparsity=-0.1), r"got -0.1"),
    (dict(method="nosuch"), r"unknown pruning method 'nosuch'"),
    (dict(top_up="nosuch"), r"unknown top-up 'nosuch'"),
    (dict(structure="4:2"), r"0 < N < M.*'4:2'"),
    (dict(structure="2:2"), r"'2:2'"),
    (dict(structure="banana"), r"unknown structure 'banana'"),
    (dict(structure="2:4", sparsity=0.6), r"sparsity=0.5"),
    (dict(structure="2:4", top_up="dlp"), r"top-up 'dlp' does not work with structure 2:4.*uniform, owl, neuroal"),
    (dict(structure="2:4", top_up="dsnot"), r"top-up 'dsnot'"),
    (dict(top_up="owl", options={"owl_m": 0}), r"owl_m .* must be > 0"),
    (dict(top_up="owl", options={"owl_x": 1}),
     r"unknown option\(s\) 'owl_x' for top-up 'owl'; valid: owl_m, owl_lambda"),
    (dict(top_up="neuroal", options={"search_samples": 9}), r"at most the number of calibration windows \(8\)"),
    (dict(calib="nosuch"), r"unknown dataset spec 'nosuch'"),
    (dict(eval=["nosuch"]), r"unknown dataset spec 'nosuch'"),
    (dict(nsamples=0), r"nsamples"),
])
def test_rejected_before_any_work(tiny_llama, tiny_tokens, no_work, kw, match):
    with pytest.raises(ValueError, match=match):
        run(tiny_llama, tiny_tokens, **kw)


def test_existing_out_without_force(tiny_llama, tiny_tokens, tmp_path, no_work):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        run(tiny_llama, tiny_tokens, out=out)
    assert (out / "keep.txt").read_text() == "mine"


def test_nm_needs_divisible_in_features(tiny_llama, tiny_tokens):
    # hidden 64 and intermediate 96 are not multiples of 5
    with pytest.raises(ValueError, match=r"input features, not divisible by M=5"):
        run(tiny_llama, tiny_tokens, structure="3:5", sparsity=0.6)


def test_seqlen_beyond_context(tiny_llama, tiny_tokens):
    with pytest.raises(ValueError, match=r"seqlen 512 exceeds the model's context length 256"):
        run(tiny_llama, tiny_tokens, seqlen=512)


def test_calibration_too_short(tiny_llama, tmp_path):
    short = tmp_path / "short.npy"
    np.save(short, np.arange(40))
    with pytest.raises(ValueError, match="too short"):
        run(tiny_llama, short)


def test_failure_while_pruning_leaves_nothing(tiny_llama, tiny_tokens, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(api, "sequential_prune", boom)
    with pytest.raises(RuntimeError, match="boom"):
        run(tiny_llama, tiny_tokens, out=tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_nothing(tiny_llama, tiny_tokens, tmp_path, monkeypatch):
    import neuroal_jax.outputs.checkpoint as ckpt

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(ckpt, "save_masks", boom)
    with pytest.raises(OSError, match="disk full"):
        run(tiny_llama, tiny_tokens, out=tmp_path / "run")
    assert list(tmp_path.iterdir()) == []
    # with force, a failed run keeps the old output as it was
    monkeypatch.undo()
    old = run(tiny_llama, tiny_tokens, out=tmp_path / "old").out
    before = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}
    monkeypatch.setattr(ckpt, "save_masks", boom)
    with pytest.raises(OSError, match="disk full"):
        run(tiny_llama, tiny_tokens, out=old, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file()} == before


def test_bad_model_argument():
    with pytest.raises(ValueError, match="model must be"):
        runs.resolve_model(42)
