"""Mask-preserving recovery training (`neuroal_jax.recovery`): pruned entries stay exactly 0 in both modes, through
the export; the loss goes down; untrained adapters change nothing; a resumed run ends where an uninterrupted one
does; and every bad input is one line before any work."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from cli_run import assert_clean_error, run_cli, snapshot
from conftest import TINY_LLAMA
from converters import load_model
from converters.hf import export_hf
from neuroal_jax import finetune, load_masks, prune
from neuroal_jax.models import init_params
from neuroal_jax.outputs.checkpoint import MASKS_DIR, save_masks
from neuroal_jax.recovery import loop
from neuroal_jax.recovery.settings import FinetuneSettings
from neuroal_jax.recovery.train import assemble, block_masks, init_trainable

pytestmark = pytest.mark.xdist_group("finetune")
SEQLEN = 32
#: A few steps at a learning rate large enough that a tiny model learns a periodic stream in them.
FAST = dict(steps=8, batch_size=2, seqlen=SEQLEN, save_every=2, progress=False)
LR = {"masked": 3e-3, "lora": 1e-2}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """A tiny Llama pruned with Wanda at 50 % (a prune output folder: model + masks/), and a periodic token stream
    (a 40-token pattern repeated) to train on."""
    d = tmp_path_factory.mktemp("ft")
    pattern = np.random.default_rng(1).integers(0, TINY_LLAMA.vocab_size, 40)
    np.save(d / "tokens.npy", np.tile(pattern, 200).astype(np.int64))
    params = init_params(TINY_LLAMA, seed=0, scale=0.1)
    prune((TINY_LLAMA, params), method="wanda", sparsity=0.5, calib=f"tokens:{d / 'tokens.npy'}", nsamples=4,
          seqlen=SEQLEN, out=d / "pruned", progress=False)
    export_hf(TINY_LLAMA, params, d / "plain")  # a model without masks/
    return d


def data(d) -> str:
    return f"tokens:{d / 'tokens.npy'}"


@pytest.fixture(scope="module", params=["masked", "lora"])
def trained(request, pruned):
    mode = request.param
    out = pruned / f"ft-{mode}"
    result = finetune(pruned / "pruned", data=data(pruned), out=out, mode=mode, lr=LR[mode], eval=[data(pruned)],
                      eval_nsamples=4, **FAST)
    return mode, result, out


def test_pruned_entries_stay_exactly_zero(pruned, trained):
    mode, result, out = trained
    masks = load_masks(pruned / "pruned")
    reloaded = load_model(out).params
    for params in (result.params, reloaded):
        for key, m in masks.items():
            b, layer = key.split(".", 1)
            w = np.asarray(params["blocks"][int(b)][layer]["weight"])
            assert np.all(w[~m] == 0), key
    assert result.report["layer_sparsity_after"] == result.report["layer_sparsity_before"]
    assert result.report["sparsity_after"] == result.report["sparsity_before"] == pytest.approx(0.5)
    saved = load_masks(out)
    assert all(np.array_equal(saved[k], masks[k]) for k in masks)


def test_the_kept_weights_move_and_the_loss_goes_down(pruned, trained):
    mode, result, _ = trained
    before = load_model(pruned / "pruned").params
    moved = [not np.array_equal(np.asarray(result.params["blocks"][0][layer]["weight"]),
                                np.asarray(before["blocks"][0][layer]["weight"])) for layer in ("self_attn.q_proj",
                                                                                                  "mlp.down_proj")]
    assert all(moved), mode
    losses = result.report["loss_curve"]
    assert len(losses) == FAST["steps"] and np.mean(losses[-2:]) < losses[0] - 0.1, losses
    (spec, before_ppl), = result.report["perplexity_before"].items()
    assert result.report["perplexity_after"][spec] < before_ppl
    assert (result.out / "plots" / "loss.png").is_file()


@pytest.mark.parametrize("dtype", [np.float32, "bfloat16"])
def test_untrained_adapters_and_weights_change_nothing(dtype):
    """LoRA starts with B = 0 and the masked mode with the model's own weights: the assembled model is the model,
    bit for bit (in float32 and bfloat16)."""
    import ml_dtypes
    dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    params = jax.tree.map(lambda x: np.asarray(x, dtype), init_params(TINY_LLAMA, seed=3, scale=0.1))
    rng = np.random.default_rng(0)
    masks = {}
    for b, p in enumerate(params["blocks"]):
        for layer in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                      "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            masks[f"{b}.{layer}"] = rng.random(p[layer]["weight"].shape) < 0.5
            p[layer]["weight"] = np.where(masks[f"{b}.{layer}"], p[layer]["weight"], 0).astype(dtype)
    for mode in ("masked", "lora"):
        s = FinetuneSettings(mode=mode, train=("linear", "norms")).resolved(None)
        got = assemble(params, init_trainable(TINY_LLAMA, params, s), block_masks(TINY_LLAMA, masks),
                       s.lora_alpha / s.lora_rank)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(got)):
            assert np.asarray(b).dtype == np.asarray(a).dtype
            assert np.array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8)), mode


def test_resume_after_an_interruption_ends_with_the_same_weights(pruned, monkeypatch):
    """An uninterrupted run, and a run stopped in step 5 (after the checkpoint of step 4) then resumed:
    the same final model, bit for bit; the resumed run's partial folder is gone."""
    common = dict(data=data(pruned), mode="masked", lr=LR["masked"], accumulate=2, **FAST)
    whole = finetune(pruned / "pruned", out=pruned / "whole", **common)
    calls, real_step = [0], loop.train_step

    def stops_in_step_5(*args):
        calls[0] += 1
        if calls[0] == 4 * 2 + 1:  # the first micro-batch of step 5 (2 per step)
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(loop, "train_step", stops_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        finetune(pruned / "pruned", out=pruned / "resumed", **common)
    monkeypatch.setattr(loop, "train_step", real_step)
    partial = pruned / ".resumed.partial"
    assert (partial / "checkpoints" / "4").is_dir() and not (pruned / "resumed").exists()
    with pytest.raises(FileExistsError, match="pass --resume to continue it, or --force"):
        finetune(pruned / "pruned", out=pruned / "resumed", **common)
    with pytest.raises(ValueError, match="other settings"):
        finetune(pruned / "pruned", out=pruned / "resumed", resume=True, **{**common, "lr": 1e-3})
    resumed = finetune(pruned / "pruned", out=pruned / "resumed", resume=True, **common)
    assert not partial.exists()
    assert resumed.report["loss_curve"] == whole.report["loss_curve"]
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params)):
        assert np.array_equal(a, b)
    assert ((pruned / "whole" / "model.safetensors").read_bytes()
            == (pruned / "resumed" / "model.safetensors").read_bytes())


def test_masks_from_zeros_and_bfloat16(pruned):
    """--mask-from-zeros on the pruned folder finds the prune's masks; a bfloat16 run keeps them and its dtype."""
    result = finetune(pruned / "pruned", data=data(pruned), out=pruned / "bf16", mask_from_zeros=True,
                      dtype="bfloat16", lr=LR["masked"], **{**FAST, "steps": 2})
    masks = load_masks(pruned / "pruned")
    assert all(np.array_equal(result.masks[k], masks[k]) for k in masks)
    from converters.safetensors_io import read_header
    header, _ = read_header(pruned / "bf16" / "model.safetensors")
    assert {t["dtype"] for t in header.values()} == {"BF16"}
    reloaded = load_model(pruned / "bf16").params
    for key, m in masks.items():
        b, layer = key.split(".", 1)
        assert np.all(np.asarray(reloaded["blocks"][int(b)][layer]["weight"], np.float32)[~m] == 0), key
    assert result.report["layer_sparsity_after"] == result.report["layer_sparsity_before"]


def test_a_killed_run_resumes_to_the_uninterrupted_weights(pruned, tmp_path):
    """SIGKILL during a command-line run once a checkpoint is on disk, then --resume: the same model file as a run
    that was never stopped."""
    import signal
    import time

    from cli_run import start_cli
    argv = finetune_argv(pruned / "pruned", pruned, tmp_path / "killed", "--steps", "60", "--save-every", "1",
                         "--lr", "1e-3")
    proc = start_cli(argv)
    checkpoints = tmp_path / ".killed.partial" / "checkpoints"
    deadline = time.time() + 300
    while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed").exists()
    resumed = run_cli(*argv, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    whole = run_cli(*finetune_argv(pruned / "pruned", pruned, tmp_path / "whole", "--steps", "60", "--save-every",
                                   "1000", "--lr", "1e-3"))
    assert whole.returncode == 0, whole.stderr
    assert ((tmp_path / "killed" / "model.safetensors").read_bytes()
            == (tmp_path / "whole" / "model.safetensors").read_bytes())
    assert not (tmp_path / ".killed.partial").exists()


# ---------------------------------------------------------------- bad input: one line, nothing written

def finetune_argv(model, d, out, *extra):
    return ["finetune", "--model", model, "--data", data(d), "--seqlen", str(SEQLEN), "--steps", "2",
            "--out", out, "--quiet", *extra]


@pytest.fixture(scope="module")
def wrong_masks(pruned):
    """A prune output whose masks are transposed."""
    import shutil
    d = pruned / "wrong"
    shutil.copytree(pruned / "pruned", d)
    masks = load_masks(d)
    shutil.rmtree(d / MASKS_DIR)
    save_masks(d / MASKS_DIR, {k: m.T for k, m in masks.items()})
    return d


@pytest.fixture(scope="module")
def other_masks(pruned):
    """The 50 % prune's weights with the masks of a 70 % prune of the same model (another run's masks/)."""
    import shutil
    import warnings

    from neuroal_jax.errors import SparsityWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SparsityWarning)  # the tiny layers' rows round 70 % down to 69 %
        prune((TINY_LLAMA, init_params(TINY_LLAMA, seed=0, scale=0.1)), method="wanda", sparsity=0.7,
              calib=f"tokens:{pruned / 'tokens.npy'}", nsamples=4, seqlen=SEQLEN, out=pruned / "p70", progress=False)
    d = pruned / "mixed"
    shutil.copytree(pruned / "pruned", d)
    shutil.rmtree(d / MASKS_DIR)
    shutil.copytree(pruned / "p70" / MASKS_DIR, d / MASKS_DIR)
    np.save(pruned / "empty.npy", np.zeros((0, SEQLEN), np.int64))
    return d


@pytest.mark.parametrize("case", ["no masks", "mask shapes", "steps 0", "lora rank", "save format",
                                  "no compressed-tensors", "masks of another run", "nothing pruned",
                                  "lora options in masked mode", "lr diverges", "empty eval", "too few windows",
                                  "out inside the model"])
def test_bad_finetune_inputs_are_one_line_errors(pruned, wrong_masks, other_masks, tmp_path, case):
    out = tmp_path / "out"
    argv, names, python = {
        "no masks": (finetune_argv(pruned / "plain", pruned, out), ["masks/", "--mask-from-zeros"], None),
        "mask shapes": (finetune_argv(wrong_masks, pruned, out), ["do not match", "0.self_attn.k_proj"], None),
        "steps 0": (finetune_argv(pruned / "pruned", pruned, out, "--steps", "0"), ["--steps", ">= 1", "0"], None),
        "lora rank": (finetune_argv(pruned / "pruned", pruned, out, "--mode", "lora", "--lora-rank", "33"),
                      ["--lora-rank", "33", "1 to 32"], None),
        "save format": (finetune_argv(pruned / "pruned", pruned, out, "--save-format", "gguf"),
                        ["--save-format", "gguf", "dense", "compressed"], None),
        "no compressed-tensors": (finetune_argv(pruned / "pruned", pruned, out, "--save-format", "compressed"),
                                  ["compressed-tensors", "pip install 'neuroal-jax[compressed]'"],
                                  "import sys; sys.modules['compressed_tensors'] = None"),
        "masks of another run": (finetune_argv(other_masks, pruned, out),
                                 ["masks disagree with the model's weights", "pruned entries hold non-zero",
                                  "--mask-from-zeros", "--allow-mask-mismatch"], None),
        "nothing pruned": (finetune_argv(pruned / "plain", pruned, out, "--mask-from-zeros"),
                           ["--mask-from-zeros", "no zero", "nothing is pruned"], None),
        "lora options in masked mode": (finetune_argv(pruned / "pruned", pruned, out, "--lora-rank", "4"),
                                        ["--lora-rank 4", "--mode lora only", "masked"], None),
        "lr diverges": (finetune_argv(pruned / "pruned", pruned, out, "--lr", "1e6", "--steps", "6"),
                        ["diverged", "lower --lr", "1e+06"], None),
        "empty eval": (finetune_argv(pruned / "pruned", pruned, out, "--eval", f"tokens:{pruned / 'empty.npy'}"),
                       ["empty.npy", "holds no sequence", "no window"], None),
        "too few windows": (finetune_argv(pruned / "pruned", pruned, out, "--data", f"tokens:{pruned / 'empty.npy'}"),
                            ["training data", "empty.npy", "--steps × --accumulate × --batch-size", "asks for 8"],
                            None),
        "out inside the model": (finetune_argv(pruned / "pruned", pruned, pruned / "pruned" / "ft"),
                                 ["is inside an input", "--model"], None),
    }[case]
    before = snapshot(pruned)
    proc = run_cli(*argv) if python is None else run_cli_hiding(python, argv)
    assert_clean_error(proc, *names)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []
    assert snapshot(pruned) == before


def run_cli_hiding(prelude: str, argv):
    """The CLI in a fresh process after `prelude` (e.g. making a package unimportable)."""
    import subprocess
    import sys

    from cli_run import REPO, cli_env
    code = f"{prelude}; from neuroal_jax.cli import main; sys.exit(main({[str(a) for a in argv]!r}))"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=600)


def test_masks_that_disagree_with_the_weights_are_applied_when_allowed(pruned, other_masks):
    result = finetune(other_masks, data=data(pruned), allow_mask_mismatch=True, **{**FAST, "steps": 2})
    assert result.report["allow_mask_mismatch"] is True
    assert result.report["sparsity_before"] == pytest.approx(0.5, abs=0.01)
    masks = load_masks(other_masks).values()
    assert result.report["sparsity_after"] == pytest.approx(1 - sum(m.sum() for m in masks)
                                                            / sum(m.size for m in masks))
    assert result.report["sparsity_after"] > 0.65


def test_an_out_that_another_run_is_writing_gets_the_lock_message(pruned, tmp_path):
    """Not "an interrupted run ... --resume": the partial folder belongs to a run that still holds the lock."""
    from neuroal_jax.outputs.files import new_folder, output_lock, sibling
    out = tmp_path / "out"
    with output_lock(out):
        new_folder(sibling(out, "partial"), "partial")
        proc = run_cli(*finetune_argv(pruned / "pruned", pruned, out))
    assert_clean_error(proc, "another neuroal-jax run is writing", str(out))
