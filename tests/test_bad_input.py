"""The bad-input contract of `neuroal-jax`, one test per case, run as a user runs it (a fresh process).

Every refusal exits 2 with one line `neuroal-jax: error: ...` that names the value (and the valid choices),
before any work, and leaves the user's files byte-identical with no temporary folders of ours behind.
Interrupted runs (Ctrl-C, SIGTERM, SIGKILL) leave nothing behind either, except a --stream run's finished
blocks, kept for --resume. The README's "What happens on bad input" lists the same cases.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from cli_run import assert_clean_error, error_line, run_cli, run_cli_all, snapshot, start_cli
from conftest import TINY_LLAMA
from converters.hf import export_hf
from neuroal_jax.models import init_params
from neuroal_jax.outputs.files import MARKER

pytestmark = pytest.mark.xdist_group("bad_input")
DEEP = dataclasses.replace(TINY_LLAMA, num_layers=12)
VOCAB = TINY_LLAMA.vocab_size


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """A user's folder: a model (as downloaded: no marker of ours), a calibration file and a note."""
    d = tmp_path_factory.mktemp("user") / "D"
    export_hf(TINY_LLAMA, init_params(TINY_LLAMA, seed=0, scale=0.1), d / "model")
    (d / "model" / MARKER).unlink()
    np.save(d / "calib.npy", np.random.default_rng(0).integers(0, VOCAB, 4096))
    (d / "notes.txt").write_text("my notes")
    return d


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory):
    """12 blocks: long enough to interrupt a run in the middle."""
    d = tmp_path_factory.mktemp("deep") / "model"
    export_hf(DEEP, init_params(DEEP, seed=1, scale=0.1), d)
    np.save(d.parent / "calib.npy", np.random.default_rng(0).integers(0, VOCAB, 4096))
    return d


def prune_argv(model, calib, out, *extra, top_up="uniform", sparsity="0.5"):
    return ["prune", "--model", model, "--method", "wanda", "--sparsity", sparsity, "--top-up", top_up,
            "--calib", f"tokens:{calib}", "--nsamples", "4", "--seqlen", "32", "--out", out, "--quiet", *extra]


def ours_left(parent: Path, name: str) -> list[str]:
    """Temporary folders, locks or partial runs of ours next to `name`."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def wait_for(cond, proc, timeout=300):
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.01)


# ---------------------------------------------------------------- 1. --force deletes only our own output

def test_force_never_deletes_user_data(user_dir, tmp_path):
    before = snapshot(user_dir)
    model, calib = user_dir / "model", user_dir / "calib.npy"
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    results = run_cli_all(
        prune_argv(model, calib, user_dir, "--force"),                       # --out holds the model and data
        prune_argv(model, calib, model, "--force", "--stream"),              # --out is the model
        prune_argv(model, calib, foreign, "--force"),                        # a folder we did not write
        ["export", "--model", model, "--out", model, "--force"],
        ["compare", "--model", model, "--method", "wanda", "--sparsity", "0.5", "--calib", f"tokens:{calib}",
         "--eval", f"tokens:{calib}", "--nsamples", "4",
         "--seqlen", "32", "--top-ups", "uniform", "--out", user_dir, "--force"])
    assert_clean_error(results[0], f"--out {user_dir}", "holds an input", "--model")
    assert_clean_error(results[1], f"--out {model}", "holds an input")
    assert_clean_error(results[2], str(foreign), "not written by neuroal-jax")
    assert_clean_error(results[3], "holds an input", "--model")
    assert_clean_error(results[4], "holds an input", "--model")
    assert snapshot(user_dir) == before and (foreign / "keep.txt").read_text() == "mine"
    assert ours_left(user_dir.parent, "D") == [] and ours_left(tmp_path, "theirs") == []


def test_force_replaces_our_output_only_while_it_holds_only_ours(user_dir, tmp_path):
    out = tmp_path / "run"
    argv = prune_argv(user_dir / "model", user_dir / "calib.npy", out)
    assert run_cli(*argv).returncode == 0
    assert json.loads((out / MARKER).read_text())["tool"] == "neuroal-jax"
    assert run_cli(*argv, "--force").returncode == 0          # our own output: replaced
    (out / "plots" / "mine.txt").write_text("added by the user")
    before = snapshot(out)
    assert_clean_error(run_cli(*argv, "--force"), str(out), "plots/mine.txt")
    assert snapshot(out) == before and ours_left(tmp_path, "run") == []


# ---------------------------------------------------------------- 2. token ids are checked

def test_token_ids_outside_the_vocabulary(user_dir, tmp_path):
    for name, bad in (("high.npy", VOCAB), ("negative.npy", -1)):
        ids = np.random.default_rng(0).integers(0, VOCAB, (8, 32))
        ids[3, 17] = bad
        np.save(tmp_path / name, ids)
    model = user_dir / "model"
    high, neg = run_cli_all(prune_argv(model, tmp_path / "high.npy", tmp_path / "out"),
                            ["eval-ppl", "--model", model, "--dataset", f"tokens:{tmp_path / 'negative.npy'}",
                             "--seqlen", "32"])
    assert_clean_error(high, "high.npy", "token id 128", f"vocab_size {VOCAB}")
    assert_clean_error(neg, "negative.npy", "token id -1", f"vocab_size {VOCAB}")
    assert not (tmp_path / "out").exists() and ours_left(tmp_path, "out") == []


# ---------------------------------------------------------------- 3. no evaluation data dropped silently

def test_long_rows_are_cut_into_windows_and_calibration_rows_must_fit(user_dir, tmp_path):
    np.save(tmp_path / "long.npy", np.random.default_rng(1).integers(0, VOCAB, (1, 16 * 32 + 5)))
    ppl, calib = run_cli_all(
        ["eval-ppl", "--model", user_dir / "model", "--dataset", f"tokens:{tmp_path / 'long.npy'}", "--seqlen", "32",
         "--json", tmp_path / "ppl.json", "--quiet"],
        prune_argv(user_dir / "model", tmp_path / "long.npy", tmp_path / "out"))
    assert ppl.returncode == 0, ppl.stderr
    assert json.loads((tmp_path / "ppl.json").read_text())["windows"] == 16  # all of it, the 5-token tail excepted
    assert_clean_error(calib, "long.npy", "windows of 517 tokens", "seqlen is 32")


# ---------------------------------------------------------------- 4. OWL with any M

def test_owl_m(user_dir, tmp_path):
    model, calib = user_dir / "model", user_dir / "calib.npy"
    big, zero, neg = run_cli_all(*(prune_argv(model, calib, tmp_path / f"owl{m}", "--owl-m", m, top_up="owl")
                                   for m in ("1000", "0", "-1")))
    assert big.returncode == 0 and "Traceback" not in big.stderr and "RuntimeWarning" not in big.stderr
    report = json.loads((tmp_path / "owl1000" / "report.json").read_text())
    assert "allocation is uniform" in report["owl_note"] and set(report["block_sparsity"].values()) == {0.5}
    assert f"neuroal-jax: warning: {report['owl_note']}" in big.stderr.splitlines()
    for proc, m in ((zero, "0.0"), (neg, "-1.0")):
        assert_clean_error(proc, "--owl-m", "must be > 0", m)


# ---------------------------------------------------------------- 5. --search-samples as given, or an error

def test_search_samples(user_dir, tmp_path):
    model, calib = user_dir / "model", user_dir / "calib.npy"
    fast = ("--top-up", "neuroal", "--neuroal-step", "block", "--lambdas-block", "0.01,0.1")
    runs = run_cli_all(*(prune_argv(model, calib, tmp_path / f"s{n}", *fast[2:], "--search-samples", n,
                                    top_up="neuroal") for n in ("0", "-1", "32")),
                       prune_argv(model, calib, tmp_path / "default", *fast[2:], top_up="neuroal"))
    assert_clean_error(runs[0], "--search-samples", "must be >= 1", "0")
    assert_clean_error(runs[1], "--search-samples", "must be >= 1", "-1")
    assert_clean_error(runs[2], "--search-samples", "at most the number of calibration windows (4)", "32")
    assert runs[3].returncode == 0, runs[3].stderr
    report = json.loads((tmp_path / "default" / "report.json").read_text())
    assert report["options"]["search_samples"] == 4 and report["search_samples"] == 4  # min(8, --nsamples)


# ---------------------------------------------------------------- 6. resume checks its inputs

@pytest.mark.slow
def test_resume_refuses_changed_inputs_and_accepts_spelled_out_defaults(deep_model, tmp_path):
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).integers(0, VOCAB, 4096))
    out, part = tmp_path / "out", tmp_path / ".out.partial"
    argv = prune_argv(deep_model, calib, out, "--lambdas-block", "0.02,0.1", "--lambdas-row", "0,0.05",
                      "--stream", top_up="neuroal")
    proc = start_cli(argv)
    wait_for(lambda: (part / "masks" / "block-00002").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    original = calib.read_bytes()
    np.save(calib, np.random.default_rng(7).integers(0, VOCAB, 4096))  # overwritten in place
    before = snapshot(part)
    assert_clean_error(run_cli(*argv, "--resume"), "--resume", "calibration windows of tokens:", "changed")
    assert snapshot(part) == before
    calib.write_bytes(original)
    done = run_cli(*argv, "--resume", "--neuroal-step", "both", "--search-samples", "4", "--dense-stream", "candidate")
    assert done.returncode == 0, done.stderr
    assert out.is_dir() and ours_left(tmp_path, "out") == []


# ---------------------------------------------------------------- 7. compare validates everything first

def test_compare_validates_before_the_dense_evaluation(user_dir, tmp_path):
    model, calib = user_dir / "model", user_dir / "calib.npy"
    base = ["compare", "--model", model, "--method", "wanda", "--sparsity", "0.5", "--calib", f"tokens:{calib}",
            "--eval", f"tokens:{calib}", "--nsamples", "4",
            "--seqlen", "32", "--out", tmp_path / "cmp"]
    empty, unknown, sparsity, nm, profile, stray, structure = run_cli_all(
        [*base, "--top-ups", ""], [*base, "--top-ups", "uniform,nosuch"],
        [*base, "--top-ups", "uniform", "--sparsity", "1.5"], [*base, "--top-ups", "owl", "--method", "nosuch"],
        [*base, "--top-ups", "uniform,neuroal", "--block-profile", "steep"],
        [*base, "--top-ups", "uniform,dlp", "--owl-m", "3"],
        [*base, "--top-ups", "uniform,dlp", "--structure", "4:8", "--sparsity", "0.5"])
    assert_clean_error(empty, "--top-ups", "at least one")
    assert_clean_error(unknown, "nosuch", "uniform, owl")
    assert_clean_error(sparsity, "1.5")
    assert_clean_error(nm, "nosuch", "wanda")
    assert_clean_error(profile, "--block-profile", "'steep'", "valid: linear, owl, dlp, alphapruning")
    assert_clean_error(stray, "owl_m", "none of the top-ups uniform, dlp")
    assert_clean_error(structure, "'dlp'", "structure 4:8", "uniform, owl, neuroal")
    assert not (tmp_path / "cmp").exists()


def test_compare_api_fails_before_any_perplexity(user_dir, monkeypatch):
    import neuroal_jax.evaluation.perplexity as evaluation
    from neuroal_jax.comparison import compare

    def no_work(*a, **k):
        raise AssertionError("compare evaluated before validating")
    monkeypatch.setattr(evaluation, "perplexity", no_work)
    with pytest.raises(ValueError, match="search_samples"):
        compare(str(user_dir / "model"), top_ups=["uniform", "neuroal"], calib=f"tokens:{user_dir / 'calib.npy'}",
                eval=[f"tokens:{user_dir / 'calib.npy'}"], nsamples=4, seqlen=32, options={"search_samples": 9})


# ---------------------------------------------------------------- 8. report keys are exact and unique

def test_alignment_records_keep_every_lambda(user_dir, tmp_path):
    lams = [0.051, 0.054, 0.058, 0.2]
    proc = run_cli(*prune_argv(user_dir / "model", user_dir / "calib.npy", tmp_path / "out", "--neuroal-step", "block",
                               "--lambdas-block", ",".join(map(str, lams)), top_up="neuroal", sparsity="0.7"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["lambda"] for r in report["alignment_block"]] == lams
    assert report["lambda_block"] in lams


# ---------------------------------------------------------------- 9. nothing left behind after kills

@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_an_in_memory_run_leaves_nothing(deep_model, tmp_path, sig, code):
    out = tmp_path / "out"
    proc = start_cli(prune_argv(deep_model, deep_model.parent / "calib.npy", out,
                                "--lambdas-block", "0.02,0.1", "--lambdas-row", "0,0.05", top_up="neuroal"))
    wait_for(lambda: any(n.startswith(".out.tmp-") for n in ours_left(tmp_path, "out")), proc)
    time.sleep(1.0)  # well into the work
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and "Traceback" not in err, err
    assert not out.exists() and ours_left(tmp_path, "out") == []


def test_sigkill_leftovers_are_removed_by_the_next_run(user_dir, tmp_path):
    out = tmp_path / "out"
    argv = prune_argv(user_dir / "model", user_dir / "calib.npy", out)
    proc = start_cli(argv)
    wait_for(lambda: any(n.startswith(".out.tmp-") for n in ours_left(tmp_path, "out")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(n.startswith(".out.tmp-") for n in ours_left(tmp_path, "out"))
    assert run_cli(*argv).returncode == 0
    assert out.is_dir() and ours_left(tmp_path, "out") == []


def test_a_run_killed_while_marking_its_folder_leaves_nothing_behind(tmp_path):
    """SIGKILL between creating the temporary folder and renaming its marker into place leaves a folder with only
    the marker's temporary file: ours, so the next run removes it; a folder with anything else is kept."""
    from neuroal_jax.outputs.files import clean_stale
    killed, empty, user = (tmp_path / f".out.tmp-{i}-abcdef" for i in (1, 2, 3))
    for d in (killed, empty, user):
        d.mkdir()
    (killed / f".{MARKER}.tmp1-abcdef").write_text("{")
    (user / "mine.txt").write_text("the user's")
    clean_stale(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [user.name]


def test_out_may_not_be_the_current_folder_or_above(user_dir, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    before = snapshot(tmp_path)
    here, parent = run_cli_all(prune_argv(user_dir / "model", user_dir / "calib.npy", ".", "--force"),
                               prune_argv(user_dir / "model", user_dir / "calib.npy", "..", "--force"), cwd=work)
    for proc in (here, parent):
        assert_clean_error(proc, "is the current folder or one that contains it")
    assert snapshot(tmp_path) == before


def test_an_interrupted_stream_run_is_not_orphaned(user_dir, tmp_path):
    from neuroal_jax.outputs.files import new_folder
    part = new_folder(tmp_path / ".out.partial", "partial")
    argv = prune_argv(user_dir / "model", user_dir / "calib.npy", tmp_path / "out")
    assert_clean_error(run_cli(*argv), str(part), "--resume", "--force")
    assert run_cli(*argv, "--force").returncode == 0
    assert ours_left(tmp_path, "out") == []


# ---------------------------------------------------------------- 10. one run per output

@pytest.mark.slow
def test_a_second_run_on_the_same_out_is_refused(deep_model, tmp_path):
    calib = deep_model.parent / "calib.npy"
    out = tmp_path / "out"
    first = start_cli(prune_argv(deep_model, calib, out, "--stream", "--lambdas-block", "0.02,0.1",
                                 "--lambdas-row", "0,0.05", top_up="neuroal"))
    wait_for(lambda: (tmp_path / ".out.lock").exists(), first)
    second = run_cli(*prune_argv(deep_model, calib, out, "--stream", "--force"))
    assert_clean_error(second, "another neuroal-jax run is writing", str(out))
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert out.is_dir() and ours_left(tmp_path, "out") == []


# ---------------------------------------------------------------- 11. nothing accepted silently

def test_bad_option_values(user_dir, tmp_path):
    model, calib, out = user_dir / "model", user_dir / "calib.npy", tmp_path / "out"
    cases = [
        (("--lambdas-block", "0.1,1.0"), "neuroal", ["--lambdas-block", "must be in [0.0, 1.0)"]),
        (("--lambdas-row=-0.1",), "neuroal", ["--lambdas-row", "must be in [0.0, 1.0)"]),
        (("--lambdas-block", "0.1,nan"), "neuroal", ["--lambdas-block", "finite", "nan"]),
        (("--lambdas-row", "inf"), "neuroal", ["--lambdas-row", "finite", "inf"]),
        (("--lambdas-row", "0.1,0.1"), "neuroal", ["--lambdas-row", "must not repeat"]),
        (("--option", "foo=1"), "uniform", ["'foo'", "top-up 'uniform'"]),
        (("--option", "owl_x=1"), "owl", ["'owl_x'", "valid: owl_m, owl_lambda"]),
        (("--owl-m", "3"), "uniform", ["--owl-m", "--top-up owl"]),
        (("--dsnot-max-cycles", "-1"), "dsnot", ["--dsnot-max-cycles", ">= 0", "-1"]),
        (("--lambda-chunk", "many"), "neuroal", ["--lambda-chunk", "auto or an integer >= 1", "many"]),
        (("--lambda-chunk", "0"), "neuroal", ["--lambda-chunk", "auto or an integer >= 1", "'0'"]),
        (("--distributed", "--coordinator", "localhost:1", "--process-id", "1", "--num-processes", "2",
          "--coordinator-timeout", "0"), "uniform", ["--coordinator-timeout", "> 0", "0"]),
        (("--block-profile", "steep"), "neuroal", ["--block-profile", "'steep'",
                                                   "valid: linear, owl, dlp, alphapruning"]),
        (("--block-profile", "owl", "--neuroal-step", "row"), "neuroal",
         ["--block-profile owl", "--neuroal-step row", "valid with --neuroal-step block or both"]),
        (("--method", "sparsegpt", "--neuroal-step", "block"), "neuroal",
         ["sparsegpt inside NeuroAL's search hangs XLA:CPU", "wanda"]),
        (("--block-profile", "linear,owl"), "neuroal",
         ["--block-profile linear,owl", "compared by an output metric only", "--alignment neuron"]),
        (("--block-profile", "owl,owl", "--alignment", "output_nll"), "neuroal",
         ["--block-profile", "must not repeat"]),
        (("--structure", "4:8", "--neuroal-step", "both"), "neuroal", ["4:8", "--neuroal-step both", "valid: block"]),
    ]
    procs = run_cli_all(*(prune_argv(model, calib, out, *extra, top_up=t) for extra, t, _ in cases))
    for proc, (_, _, names) in zip(procs, cases):
        assert_clean_error(proc, *names)
    assert not out.exists()


def test_missed_sparsity_target_warns(user_dir, tmp_path):
    model, calib = user_dir / "model", user_dir / "calib.npy"
    owl, zero = run_cli_all(
        prune_argv(model, calib, tmp_path / "owl", "--owl-lambda", "0.5", top_up="owl", sparsity="0.7"),
        prune_argv(model, calib, tmp_path / "zero", "--neuroal-step", "block", "--lambdas-block", "0.05",
                   top_up="neuroal", sparsity="0"))
    for proc, name in ((owl, "owl"), (zero, "zero")):
        assert proc.returncode == 0, proc.stderr
        warnings = [line for line in proc.stderr.splitlines() if line.startswith("neuroal-jax: warning:")]
        assert len(warnings) == 1 and "misses the target" in warnings[0], proc.stderr
        assert json.loads((tmp_path / name / "report.json").read_text())["warnings"] == [
            warnings[0].removeprefix("neuroal-jax: warning: ")]


# ---------------------------------------------------------------- 12. early and clear errors

def test_unwritable_outputs_fail_before_any_work(user_dir, tmp_path):
    model, calib = user_dir / "model", user_dir / "calib.npy"
    ppl = ["eval-ppl", "--model", model, "--dataset", f"tokens:{calib}", "--seqlen", "32", "--json"]
    procs = run_cli_all(prune_argv(model, calib, "/proc/x"), prune_argv(model, calib, "/dev/null/x"),
                        [*ppl, tmp_path / "missing" / "r.json"], [*ppl, user_dir / "notes.txt"], [*ppl, "/proc/x.json"])
    assert_clean_error(procs[0], "cannot write --out /proc/x")
    assert_clean_error(procs[1], "cannot write --out /dev/null/x", "not a folder")
    assert_clean_error(procs[2], "cannot write --json", "does not exist")
    assert_clean_error(procs[3], "notes.txt", "not written by neuroal-jax")
    assert_clean_error(procs[4], "cannot write --json /proc/x.json")
    for proc in procs:
        assert "perplexity" not in proc.stdout and "wrote" not in proc.stdout  # failed before the work
    assert (user_dir / "notes.txt").read_text() == "my notes"


def test_unreadable_inputs_are_named(user_dir, tmp_path):
    from test_gguf import write_tiny_llama
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama",')
    (tmp_path / "text.npy").write_text("not numpy")
    write_tiny_llama(tmp_path / "m.gguf", TINY_LLAMA, init_params(TINY_LLAMA, seed=0, scale=0.1))
    data = (tmp_path / "m.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:len(data) // 2])
    calib = f"tokens:{user_dir / 'calib.npy'}"
    procs = run_cli_all(["eval-ppl", "--model", broken, "--dataset", calib, "--seqlen", "32"],
                        ["eval-ppl", "--model", user_dir / "model", "--dataset", f"tokens:{tmp_path / 'text.npy'}"],
                        ["eval-ppl", "--model", tmp_path / "cut.gguf", "--dataset", calib, "--seqlen", "32"],
                        ["eval-ppl", "--model", user_dir / "model", "--dataset", calib, "--eval-nsamples", "0"])
    assert_clean_error(procs[0], str(broken / "config.json"), "not valid JSON")
    assert_clean_error(procs[1], "text.npy", "not a .npy file")
    assert_clean_error(procs[2], "cut.gguf", "truncated or corrupt")
    assert_clean_error(procs[3], "--eval-nsamples", ">= 1", "0")


def test_a_mixed_nm_mean_that_whole_n_per_block_cannot_meet(user_dir, tmp_path):
    """2 blocks: a mean N of 4.25 needs Σ N_b = 8.5; the message gives the nearest valid means."""
    model, calib, out = user_dir / "model", user_dir / "calib.npy", tmp_path / "out"
    before = snapshot(user_dir)
    proc = run_cli(*prune_argv(model, calib, out, "--structure", "4.25:8", top_up="neuroal", sparsity="0.53125"))
    assert_clean_error(proc, "4.25:8", "Σ N_b = 8.5", "e.g. 4:8 or 4.5:8")
    proc = run_cli(*prune_argv(model, calib, out, "--structure", "4.5:8", top_up="uniform", sparsity="0.5625"))
    assert_clean_error(proc, "4.5:8", "fractional mean N", "owl, neuroal")
    assert not out.exists() and snapshot(user_dir) == before and ours_left(tmp_path, "out") == []


def test_nm_sparsity_within_a_millionth_is_the_exact_fraction(tmp_path):
    cfg = dataclasses.replace(TINY_LLAMA, hidden_size=48, intermediate_size=96, num_heads=3, num_kv_heads=3)
    export_hf(cfg, init_params(cfg, seed=0, scale=0.1), tmp_path / "model")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).integers(0, VOCAB, 4096))
    ok, far = run_cli_all(*(prune_argv(tmp_path / "model", tmp_path / "calib.npy", tmp_path / f"out{i}", "--structure",
                                       "2:3", sparsity=s) for i, s in enumerate(("0.666667", "0.6667"))))
    assert ok.returncode == 0, ok.stderr
    report = json.loads((tmp_path / "out0" / "report.json").read_text())
    assert report["target_sparsity"] == 2 / 3 and report["sparsity"] == pytest.approx(2 / 3, abs=1e-12)
    assert_clean_error(far, "2:3", "0.6667")


# ---------------------------------------------------------------- 13. permissions, and a process that cannot re-execute

def test_outputs_respect_the_umask(user_dir, tmp_path):
    model, calib = user_dir / "model", user_dir / "calib.npy"
    procs = run_cli_all(prune_argv(model, calib, tmp_path / "mem"),
                        prune_argv(model, calib, tmp_path / "st", "--stream"))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    umask = os.umask(0)
    os.umask(umask)
    for name in ("mem", "st"):
        for p in (tmp_path / name, tmp_path / name / "masks", tmp_path / name / "plots"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o777 & ~umask, p
        assert stat.S_IMODE((tmp_path / name / "report.json").stat().st_mode) == 0o666 & ~umask


def test_reexec_that_cannot_run_continues_in_place(monkeypatch):
    from neuroal_jax import runtime

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv(runtime.OPT_OUT, raising=False)
    monkeypatch.setattr(runtime.os, "execve", denied)
    assert runtime.reexec_with_hugepages(["-c", "pass"]) is None


def test_the_error_line_is_the_only_output_on_stderr(user_dir, tmp_path):
    proc = run_cli(*prune_argv(user_dir / "model", user_dir / "calib.npy", tmp_path / "o", sparsity="1.5"))
    assert error_line(proc) == "neuroal-jax: error: sparsity must be in [0, 1), got 1.5"
    assert proc.stderr.strip() == error_line(proc)


def test_sweep_bad_inputs(user_dir, tmp_path, tmp_path_factory):
    """Every bad sweep input: one line naming the value and the valid choices, exit 2, nothing written."""
    model, calib = user_dir / "model", user_dir / "calib.npy"
    foreign = tmp_path_factory.mktemp("foreign") / "results"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("the user's")
    base = ["sweep", "--model", model, "--method", "wanda", "--sparsity", "0.5", "--calib", f"tokens:{calib}",
            "--eval", f"tokens:{calib}", "--nsamples", "4", "--seqlen", "32", "--out", tmp_path / "out", "--quiet"]
    cases = [
        (["--metrics", "neuron,nosuch"], ["'nosuch'", "valid: all, neuron, cosine, js, rel_l2"]),
        (["--lambdas-block", ""], ["--lambdas-block", "expected a non-empty list of numbers"]),
        (["--lambdas-row", "0.1,abc"], ["--lambdas-row", "expected comma-separated numbers", "0.1,abc"]),
        (["--lambdas-block", "0.1,1.0"], ["--lambdas-block", "must be in [0.0, 1.0)", "(0.1, 1.0)"]),
        (["--lambda-block", "-0.1", "--step", "row"], ["--lambda-block", "must be in [0.0, 1.0)", "-0.1"]),
        (["--step", "grid", "--method", "sparsegpt"], ["sparsegpt", "--step block", "--step grid"]),
        (["--step", "row", "--method", "sparsegpt"], ["sparsegpt", "--step block", "--step row"]),
        (["--step", "diagonal"], ["--step", "'diagonal'", "valid: block, row, grid"]),
        (["--seeds", "0,1.5"], ["--seeds", "expected comma-separated integers", "0,1.5"]),
        (["--search-samples", "2,9"], ["--search-samples", "at most the number of calibration windows (4)", "9"]),
        (["--search-samples", "0"], ["--search-samples", "must be >= 1"]),
        (["--lambda-block", "0.1"], ["--lambda-block", "--step row only", "--step block"]),
        (["--outcomes", "some"], ["--outcomes", "'some'", "valid: all, picks"]),
        (["--block-profile", "linear,steep"], ["--block-profile", "('linear', 'steep')",
                                               "valid: linear, owl, dlp, alphapruning"]),
        (["--block-profile", "owl,owl"], ["--block-profile", "must not repeat"]),
        (["--out", user_dir, "--force"], [str(user_dir)]),  # holds the inputs
        (["--out", foreign, "--force"], [str(foreign), "not written by neuroal-jax"]),  # not ours
    ]
    before = snapshot(user_dir)
    procs = run_cli_all(*([*base, *extra] for extra, _ in cases))
    for (extra, names), proc in zip(cases, procs):
        assert_clean_error(proc, *names)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert snapshot(user_dir) == before and sorted(p.name for p in foreign.parent.iterdir()) == ["results"]
    assert (foreign / "mine.txt").read_text() == "the user's"


# ---------------------------------------------------------------- 14. data, outputs and messages: checked first

@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """An empty [0, L] tokens file, a 2-D tokens file, a text file in Latin-1 and a binary one."""
    d = tmp_path_factory.mktemp("data")
    np.save(d / "empty.npy", np.zeros((0, 32), np.int64))
    np.save(d / "rows.npy", np.random.default_rng(0).integers(0, VOCAB, (8, 32)))
    (d / "latin1.txt").write_bytes("plain words, then a caf\xe9".encode("latin-1"))
    (d / "binary.txt").write_bytes(b"text at first\x00\x01\x02")
    return d


def test_an_empty_evaluation_set_is_refused_before_any_work_by_every_command(user_dir, bad_data, tmp_path):
    model, calib = user_dir / "model", user_dir / "calib.npy"
    empty = f"tokens:{bad_data / 'empty.npy'}"
    sweep = ["sweep", "--model", model, "--method", "wanda", "--sparsity", "0.5", "--calib", f"tokens:{calib}",
             "--nsamples", "4", "--seqlen", "32", "--lambdas-block", "0.02", "--quiet"]
    compare = ["compare", "--model", model, "--method", "wanda", "--sparsity", "0.5", "--top-ups", "uniform",
               "--calib", f"tokens:{calib}", "--nsamples", "4",
               "--seqlen", "32", "--quiet"]
    procs = run_cli_all(["eval-ppl", "--model", model, "--dataset", empty, "--seqlen", "32"],
                        prune_argv(model, calib, tmp_path / "prune", "--eval", empty),
                        [*sweep, "--eval", empty, "--out", tmp_path / "sweep"],
                        [*compare, "--eval", f"tokens:{calib},{empty}", "--out", tmp_path / "compare"],
                        prune_argv(model, bad_data / "empty.npy", tmp_path / "calib"))
    for proc in procs[:4]:
        assert_clean_error(proc, "empty.npy", "holds no sequence", "no window of 32 tokens")
        assert "perplexity" not in proc.stdout
    assert_clean_error(procs[4], "calibration data", "empty.npy", "holds 0 windows", "--nsamples")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_text_that_is_not_utf8_is_refused_with_its_byte_offset(user_dir, bad_data, tmp_path):
    model, calib = user_dir / "model", user_dir / "calib.npy"
    latin, binary = run_cli_all(prune_argv(model, calib, tmp_path / "a", "--eval", f"text:{bad_data / 'latin1.txt'}"),
                                ["eval-ppl", "--model", model, "--dataset", f"text:{bad_data / 'binary.txt'}"])
    assert_clean_error(latin, "latin1.txt", "not UTF-8", "0xe9 at offset 23")
    assert_clean_error(binary, "binary.txt", "binary", "NUL byte at offset 13")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_several_seeds_with_calibration_rows_are_refused(user_dir, bad_data, tmp_path):
    rows = f"tokens:{bad_data / 'rows.npy'}"
    proc = run_cli("sweep", "--model", user_dir / "model", "--method", "wanda", "--sparsity", "0.5", "--calib", rows,
                   "--eval", rows, "--nsamples", "4", "--seqlen", "32", "--seeds", "0,1", "--out", tmp_path / "o")
    assert_clean_error(proc, "--seeds", "0,1", "rows.npy", "every seed gives the same windows")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_outputs_inside_an_input_folder_or_onto_a_marker_are_refused(user_dir, tmp_path):
    model, calib = user_dir / "model", user_dir / "calib.npy"
    ours = tmp_path / "ours"
    assert run_cli(*prune_argv(model, calib, ours)).returncode == 0
    before = snapshot(user_dir), snapshot(ours)
    procs = run_cli_all(prune_argv(model, calib, model / "pruned"),
                        prune_argv(model, calib, model / "deep" / "pruned", "--stream"),
                        ["export", "--model", model, "--out", model / "hf"],
                        ["eval-ppl", "--model", model, "--dataset", f"tokens:{calib}", "--seqlen", "32",
                         "--json", ours / MARKER])
    for proc in procs[:3]:
        assert_clean_error(proc, str(model), "is inside an input of this run (--model")
    assert_clean_error(procs[3], MARKER, "marker of a neuroal-jax output folder")
    assert (snapshot(user_dir), snapshot(ours)) == before


def test_a_held_output_lock_refuses_every_command_at_once(user_dir, tmp_path):
    """export took no lock: two exports to one --out both printed "wrote" and one replaced the other."""
    from neuroal_jax.outputs.files import output_lock
    model, calib, out = user_dir / "model", user_dir / "calib.npy", tmp_path / "out"
    with output_lock(out):
        procs = run_cli_all(["export", "--model", model, "--out", out], prune_argv(model, calib, out),
                            ["sweep", "--model", model, "--method", "wanda", "--sparsity", "0.5", "--calib",
                             f"tokens:{calib}", "--eval", f"tokens:{calib}", "--nsamples", "4", "--seqlen", "32",
                             "--out", out])
    for proc in procs:
        assert_clean_error(proc, "another neuroal-jax run is writing", str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_two_exports_to_one_out_write_it_once(user_dir, tmp_path):
    out = tmp_path / "out"
    procs = run_cli_all(*(["export", "--model", user_dir / "model", "--out", out] for _ in range(2)))
    assert sorted(p.returncode for p in procs) == [0, 2], [p.stderr for p in procs]
    line = error_line(next(p for p in procs if p.returncode == 2))
    assert "another neuroal-jax run is writing" in line or "already exists; pass --force" in line
    assert sum("wrote" in p.stdout for p in procs) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_on_a_folder_not_ours_is_refused_without_reading_it(tmp_path, monkeypatch):
    """`--out ~ --force` walked the whole home folder before refusing: the marker alone decides."""
    from neuroal_jax.outputs import files
    home = tmp_path / "home"
    (home / "deep" / "er").mkdir(parents=True)
    (home / "deep" / "er" / "f.txt").write_text("x")

    def walked(folder):
        raise AssertionError(f"walked {folder}")
    monkeypatch.setattr(files, "files_under", walked)
    with pytest.raises(files.OutputError, match="not written by neuroal-jax"):
        files.check_replaceable(home)


def test_unreadable_masks_are_one_line_naming_their_folder(user_dir, tmp_path):
    import shutil
    model, calib = user_dir / "model", user_dir / "calib.npy"
    assert run_cli(*prune_argv(model, calib, tmp_path / "p")).returncode == 0
    corrupt, empty = tmp_path / "corrupt", tmp_path / "empty"
    shutil.copytree(tmp_path / "p", corrupt)
    shutil.copytree(tmp_path / "p", empty)
    for f in (corrupt / "masks").rglob("manifest.ocdbt"):
        f.write_bytes(b"garbage")
    shutil.rmtree(empty / "masks")
    (empty / "masks").mkdir()
    argv = ["finetune", "--data", f"tokens:{calib}", "--seqlen", "32", "--steps", "1", "--quiet", "--out"]
    bad, none = run_cli_all([*argv, tmp_path / "o1", "--model", corrupt], [*argv, tmp_path / "o2", "--model", empty])
    line = error_line(bad)
    assert str(corrupt / "masks") in line and "corrupt masks checkpoint" in line and len(line) < 300
    assert_clean_error(none, str(empty / "masks"), "holds no masks checkpoint")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_tables_show_data_file_names_and_keep_columns_apart():
    from neuroal_jax.comparison import format_table
    from neuroal_jax.sweeps.summary import format_sensitivity
    spec = "tokens:/some/where/calibration_windows.npy"
    table = format_table({"rows": [{"top_up": "dense", "sparsity": 0.0, "perplexity": {spec: 12.5}}]})
    assert "sparsity  ppl tokens:calibration_windows.npy" in table.splitlines()[0]
    rows = [{"calib": spec, "block_profile": "linear", "search_samples": 8, "metric": "neuron",
             "picks": [{"lambda_block": 0.1, "lambda_row": None}], "perplexity": {spec: {"mean": 3.0, "std": None}}}]
    line = format_sensitivity(rows, [spec]).splitlines()[2]
    assert line.count("tokens:calibration_windows.npy") == 2
