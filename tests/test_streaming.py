"""Block streaming (lazy reading, per-block writing) and resumable runs give the in-memory result."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import TINY_LLAMA
from converters.hf import export_hf, load_hf
from converters.stream import LazyBlocks, open_streamed
from neuroal_jax import load_masks
from neuroal_jax.api import prune
from neuroal_jax.models import init_params

DEEP = dataclasses.replace(TINY_LLAMA, num_layers=12)
NEUROAL = {"lambdas_block": [0.02, 0.1], "lambdas_row": [0.0, 0.05], "search_samples": 4}


@pytest.fixture(scope="module")
def deep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("deep") / "llama"
    export_hf(DEEP, init_params(DEEP, seed=1, scale=0.1), out)
    return out


def _run(model, out, top_up, tokens, **kw):
    return prune(model, method="wanda", sparsity=0.6, top_up=top_up, calib=f"tokens:{tokens}", nsamples=8,
                 seqlen=32, eval=[f"tokens:{tokens}"], eval_nsamples=4, out=out, progress=False,
                 options=NEUROAL if top_up == "neuroal" else None, **kw)


@pytest.mark.parametrize("top_up", ["uniform", "owl", "neuroal"])
def test_streamed_equals_in_memory(deep_dir, tiny_tokens, tmp_path, top_up):
    mem = _run(str(deep_dir), tmp_path / "mem", top_up, tiny_tokens)
    st = _run(str(deep_dir), tmp_path / "st", top_up, tiny_tokens, stream=True)
    assert isinstance(st.params["blocks"], LazyBlocks) and st.masks is None
    ours, ref = load_masks(tmp_path / "st"), load_masks(tmp_path / "mem")
    assert ours.keys() == ref.keys() and all(np.array_equal(ours[k], ref[k]) for k in ref)
    _, w_st, _ = load_hf(tmp_path / "st")
    _, w_mem, _ = load_hf(tmp_path / "mem")
    for a, b in zip(jax.tree_util.tree_leaves(w_st), jax.tree_util.tree_leaves(w_mem)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert st.report["perplexity"] == mem.report["perplexity"]
    assert st.report["sparsity"] == mem.report["sparsity"]
    assert (tmp_path / "st" / "model.safetensors.index.json").is_file()
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_lazy_blocks_read_on_access(deep_dir):
    model = open_streamed(deep_dir)
    _, params, _ = load_hf(deep_dir)
    blocks = model.params["blocks"]
    assert len(blocks) == 12
    for b in (0, 7, -1):
        got, want = blocks[b], params["blocks"][b]
        assert got.keys() == want.keys()
        assert all(np.array_equal(got[m]["weight"], want[m]["weight"]) for m in want)
    assert blocks[3] is not blocks[3]  # nothing cached
    with pytest.raises(IndexError, match="block 12 out of range"):
        blocks[12]


@pytest.mark.slow
def test_gguf_blocks_stream_like_the_full_load():
    from converters import load_model
    full = load_model("smollm2-135m", tokenizer=False)
    lazy = open_streamed("smollm2-135m", tokenizer=False)
    assert lazy.config == full.config
    for b in (0, 29):
        want, got = full.params["blocks"][b], lazy.params["blocks"][b]
        assert all(np.array_equal(got[m][k], want[m][k]) for m in want for k in want[m])
    assert np.array_equal(lazy.params["embed"]["weight"], full.params["embed"]["weight"])


def test_interrupted_run_needs_resume_or_force(deep_dir, tiny_tokens, tmp_path):
    from neuroal_jax.outputs.files import new_folder
    part = new_folder(tmp_path / ".out.partial", "partial")
    (part / "run.json").write_text("{}")
    for stream in (True, False):
        with pytest.raises(FileExistsError,
                           match="interrupted run .* pass --stream --resume to continue it, or --force to discard it"):
            _run(str(deep_dir), tmp_path / "out", "uniform", tiny_tokens, stream=stream)
    with pytest.raises(ValueError, match="other settings or inputs"):
        _run(str(deep_dir), tmp_path / "out", "uniform", tiny_tokens, resume=True)
    _run(str(deep_dir), tmp_path / "out", "uniform", tiny_tokens, force=True)  # discards it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stream_needs_out(deep_dir, tiny_tokens):
    with pytest.raises(ValueError, match="needs an output folder"):
        _run(str(deep_dir), None, "uniform", tiny_tokens, stream=True)


def _cli(deep_dir, tokens, out, *extra):
    return [sys.executable, "-m", "neuroal_jax.cli", "prune", "--model", str(deep_dir), "--method", "wanda",
            "--sparsity", "0.6", "--top-up", "neuroal", "--lambdas-block", "0.02,0.1", "--lambdas-row", "0,0.05",
            "--search-samples", "4", "--calib", f"tokens:{tokens}", "--nsamples", "8", "--seqlen", "32",
            "--out", str(out), "--quiet", "--stream", *extra]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_output(deep_dir, tiny_tokens, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run(_cli(deep_dir, tiny_tokens, tmp_path / "whole"), env=env, check=True, capture_output=True)
    out, part = tmp_path / "cut", tmp_path / ".cut.partial"
    proc = subprocess.Popen(_cli(deep_dir, tiny_tokens, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (part / "masks" / "block-00002").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in (part / "masks").iterdir() if p.name.startswith("block-"))
    assert not out.exists() and 3 <= len(done) < 12, done  # killed mid-way
    subprocess.run(_cli(deep_dir, tiny_tokens, out, "--resume"), env=env, check=True, capture_output=True)
    assert not part.exists()
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    files = sorted(p.name for p in whole.glob("*.safetensors"))
    assert files == sorted(p.name for p in cut.glob("*.safetensors")) and len(files) == 13
    assert all((whole / f).read_bytes() == (cut / f).read_bytes() for f in files)
    a, b = load_masks(whole), load_masks(cut)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (whole, cut))
    assert (ra["lambda_block"], ra["lambda_row"]) == (rb["lambda_block"], rb["lambda_row"])
    assert ra["alignment_row"] == rb["alignment_row"]
    assert ra["layer_sparsity"] == rb["layer_sparsity"]


def test_bfloat16_streamed_equals_in_memory_and_reloads(deep_dir, tiny_tokens, tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    f32 = _run(str(deep_dir), None, "uniform", tiny_tokens)
    mem = _run(str(deep_dir), tmp_path / "mem", "uniform", tiny_tokens, dtype="bfloat16")
    st = _run(str(deep_dir), tmp_path / "st", "uniform", tiny_tokens, dtype="bfloat16", stream=True)
    assert str(mem.params["blocks"][0]["mlp.up_proj"]["weight"].dtype) == "bfloat16"
    ours, ref = load_masks(tmp_path / "st"), load_masks(tmp_path / "mem")
    assert all(np.array_equal(ours[k], ref[k]) for k in ref)
    assert st.report["perplexity"] == mem.report["perplexity"] and mem.report["dtype"] == "bfloat16"
    (_, p32), (_, p16) = next(iter(f32.report["perplexity"].items())), next(iter(mem.report["perplexity"].items()))
    assert p16 == pytest.approx(p32, rel=0.05) and p16 != p32
    assert json.loads((tmp_path / "st" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "st"))
    W = model.model.layers[3].mlp.down_proj.weight
    assert W.dtype == torch.bfloat16
    assert np.array_equal((W == 0).numpy(), ~ours["3.mlp.down_proj"])
