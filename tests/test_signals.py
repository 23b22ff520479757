"""A stop signal stops `neuroal-jax prune` at any moment of its export and write phase (issue 24).

SIGTERM and SIGINT are sent to tiny real runs (fresh processes) at seeded random moments spread over the time from
the first file written into the temporary output folder (config.json) to the process's exit: the model, the masks
(orbax), the report, the plots (matplotlib's first import), the rename into place, and the interpreter's shutdown.
A signal raised in a callback that Python cannot propagate (a gc callback such as jax's `_xla_gc_callback`, a
__del__) used to be printed as "Exception ignored ... Interrupted: SIGTERM" and dropped, and the run went on to
"wrote" and exit 0 (also a SIGINT in jax's atexit clean-up); one raised in a C extension's import ended as
"error: initialization failed"; one during orbax's write of the masks left `.out.tmp-*/masks.orbax-checkpoint-tmp`
behind (orbax's threads went on writing after the cleanup). The in-process tests below pin each of these down
deterministically; the real runs check that nothing else loses a signal.

The rule for each signal, which no swallowed signal can pass:
- sent while the process was alive and not yet exiting (/proc/PID/stat read just before the kill): the exit
  status is 128 + the signal (143, 130) with the one line `neuroal-jax: terminated` / `interrupted`, or the process
  was killed by the signal's default action (-15, -2) after it had printed "wrote" (the run had finished and given
  back the handlers). Exit 0, or any other status, is a failure;
- not sent (the process had already exited or was exiting): exit 0;
- every time: no traceback, no "Exception ignored", no temporary folder `.out.tmp-*` and no lock `.out.lock` left,
  and --out either absent or complete (the same files as an uninterrupted run: it is published by one rename).

NEUROAL_SIGNAL_PROBES and NEUROAL_SIGNAL_SEED change the number of signals and the seed (e.g. to hunt a rare race).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cli_run import start_cli
from conftest import TINY_LLAMA
from neuroal_jax import cli
from neuroal_jax.outputs.files import MARKER, files_under
from neuroal_jax.runtime import STOP_SIGNALS, Interrupted, handle_termination, received_signal, signal_of

pytestmark = pytest.mark.xdist_group("signals")

PROBES = int(os.environ.get("NEUROAL_SIGNAL_PROBES", "12"))
SEED = int(os.environ.get("NEUROAL_SIGNAL_SEED", "2024"))
CONCURRENT = 2
PF_EXITING = 0x4  # linux/sched.h: the task is in do_exit(); a signal can no longer change its exit status


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from converters.hf import export_hf
    from neuroal_jax.models import init_params
    d = tmp_path_factory.mktemp("signals")
    export_hf(TINY_LLAMA, init_params(TINY_LLAMA, seed=0, scale=0.1), d / "model")
    np.save(d / "calib.npy", np.random.default_rng(0).integers(0, TINY_LLAMA.vocab_size, 4096))
    return d


def prune_argv(inputs: Path, out: Path) -> list:
    return ["prune", "--model", inputs / "model", "--method", "magnitude", "--sparsity", "0.5", "--top-up", "uniform",
            "--calib", f"tokens:{inputs / 'calib.npy'}", "--nsamples", "4", "--seqlen", "32", "--out", out, "--quiet"]


def ours_left(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".out."))


def files(out: Path) -> list[str] | None:
    """The files of a published --out, orbax's content-named data files as `d/*`; None when its marker (written
    last, with the list of files, before the rename) is missing or does not list exactly what is there."""
    try:
        listed = json.loads((out / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return None
    if listed != files_under(out):
        return None
    return sorted({re.sub(r"(^|/)d/[0-9a-f]+$", r"\1d/*", f) for f in listed})


def alive(pid: int) -> bool:
    """Running and not yet exiting (not a zombie, not in do_exit)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()  # state is field 3, flags field 9
    return fields[0] not in "ZXx" and not int(fields[6]) & PF_EXITING


def run_probe(inputs: Path, folder: Path, sig: int | None, delay: float) -> dict:
    """Start a prune into folder/out; `delay` seconds after config.json appears in its temporary folder, send
    `sig` (None: no signal) if the process is still alive."""
    folder.mkdir()
    out = folder / "out"
    proc = start_cli(prune_argv(inputs, out))
    t0 = time.perf_counter()
    started = None
    while proc.poll() is None:
        if any((d / "config.json").exists() for d in folder.glob(".out.tmp-*")):
            started = time.perf_counter()
            break
        time.sleep(0.002)
    sent = False
    if started is not None and sig is not None:
        time.sleep(max(0.0, delay - (time.perf_counter() - started)))
        if alive(proc.pid):
            proc.send_signal(sig)
            sent = True
    stdout, stderr = proc.communicate(timeout=300)
    ended = time.perf_counter()
    return {"folder": folder, "out": out, "sig": sig, "delay": delay, "sent": sent, "rc": proc.returncode,
            "stdout": stdout, "stderr": stderr, "phase": None if started is None else ended - started,
            "total": ended - t0}


def problems(probe: dict, reference: list[str]) -> list[str]:
    """What is wrong with a probe's outcome under the module's rule (empty: nothing)."""
    found = []
    rc, sig, err, out = probe["rc"], probe["sig"], probe["stderr"], probe["out"]
    if "Traceback" in err or "Exception ignored" in err:
        found.append("a traceback or an ignored exception on stderr")
    if probe["sent"]:
        line = "neuroal-jax: terminated" if sig != signal.SIGINT else "neuroal-jax: interrupted"
        if rc == 0:
            found.append("the signal was swallowed: exit 0")
        elif rc == 128 + sig:
            if line not in err:
                found.append(f"no '{line}' line")
        elif rc == -sig:
            if "wrote" not in probe["stdout"]:
                found.append("killed by the signal's default action before the run had finished")
        else:
            found.append(f"exit status {rc}, not {128 + sig}")
    elif rc != 0:
        found.append(f"exit status {rc} without a signal")
    if ours_left(probe["folder"]):
        found.append(f"left behind: {ours_left(probe['folder'])}")
    if out.exists() and files(out) != reference:
        found.append(f"--out is incomplete: {files(out)}")
    return found


def describe(probe: dict) -> str:
    sig = signal.Signals(probe["sig"]).name if probe["sig"] else "none"
    return (f"{sig} {probe['delay']:.3f} s after config.json (sent: {probe['sent']}), exit {probe['rc']}\n"
            f"stderr: {probe['stderr'][-1500:]}")


# ---------------------------------------------------------------- in process: each way a signal was lost

def wait_for_signal(seconds: float = 5.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.005)


@pytest.mark.parametrize("sig, raised", [(signal.SIGTERM, Interrupted), (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_raised_in_a_gc_callback_is_raised_again(capsys, sig, raised):
    """The handler's exception, raised inside a gc callback, would be printed as "Exception ignored" and dropped."""
    fired = []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(phase)
            os.kill(os.getpid(), sig)  # the handler runs here, inside the callback

    gc.callbacks.append(callback)
    try:
        with pytest.raises(raised) as e, handle_termination():
            gc.collect()
            assert fired
            wait_for_signal()
    finally:
        gc.callbacks.remove(callback)
    assert signal_of(e.value) == sig and received_signal() == sig
    assert "Exception ignored" not in capsys.readouterr().err


def command(monkeypatch, func) -> None:
    """Make `func` the command that `cli.main` runs."""
    class Parser:
        def parse_args(self, argv):
            return argparse.Namespace(command=argv[0], func=func)
    monkeypatch.setattr(cli, "build_parser", Parser)


def test_an_error_caused_by_the_signal_is_the_termination(capsys, monkeypatch):
    """A C extension's import interrupted by the signal raises ImportError("initialization failed") (pybind11)."""
    def interrupted_import(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except KeyboardInterrupt as e:
            raise ImportError("initialization failed") from e
        return 0

    command(monkeypatch, interrupted_import)
    assert cli.main(["export"]) == 143
    assert capsys.readouterr().err == "neuroal-jax: terminated; nothing was written\n"


def test_a_signal_swallowed_by_a_library_still_ends_the_command_as_terminated(capsys, monkeypatch):
    def swallowing(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except BaseException:
            pass
        return 0

    command(monkeypatch, swallowing)
    assert cli.main(["export"]) == 143
    assert capsys.readouterr().err == "neuroal-jax: terminated after the command had finished\n"


def test_a_signal_during_orbax_writes_is_raised_once_they_are_done(tmp_path):
    """orbax's writer threads would go on writing masks into the temporary folder that the cleanup removes."""
    from neuroal_jax.outputs.checkpoint import load_masks, save_masks
    real_save = save_masks.__globals__["_checkpointer"]

    class Signalled:  # the signal comes while orbax's save waits for its threads
        def save(self, directory, tree):
            os.kill(os.getpid(), signal.SIGTERM)
            real_save().save(directory, tree)

    masks = {"blocks.0.q_proj": np.ones((4, 8), bool)}
    with pytest.MonkeyPatch.context() as m, pytest.raises(Interrupted), handle_termination():
        m.setitem(save_masks.__globals__, "_checkpointer", Signalled)
        save_masks(tmp_path / "masks", masks)
    assert load_masks(tmp_path / "masks").keys() == masks.keys()  # finished before the signal was raised
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


def test_an_ignored_signal_stays_ignored_and_the_handlers_are_restored():
    """nohup's SIGHUP stays ignored; afterwards every handler is the one before, or `after`."""
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    hook = sys.unraisablehook
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with handle_termination():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (before[signal.SIGTERM], signal.SIG_IGN)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN and sys.unraisablehook is hook
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
        with handle_termination(after=signal.SIG_DFL):
            pass
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------- real runs, signals at random moments

@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/stat")
def test_a_stop_signal_at_any_moment_of_the_export_stops_the_run_and_leaves_nothing(inputs, tmp_path):
    with ThreadPoolExecutor(CONCURRENT) as pool:
        # two undisturbed runs, side by side as the probes will run: the files of a complete --out, and how long
        # the phase lasts from config.json to the exit
        refs = list(pool.map(lambda i: run_probe(inputs, tmp_path / f"ref{i}", None, 0.0), range(CONCURRENT)))
        for ref in refs:
            assert ref["rc"] == 0 and ref["phase"] is not None, ref["stderr"]
        reference = files(refs[0]["out"])
        assert reference is not None, "the marker does not list the files of an uninterrupted run"
        assert {"report.json", "model.safetensors", "config.json", "masks/commit_success.txt"} <= set(reference)
        assert all(files(ref["out"]) == reference and not problems(ref, reference) for ref in refs)
        phase = max(ref["phase"] for ref in refs)

        rng = random.Random(SEED)
        plan = [(signal.SIGTERM if i % 2 == 0 else signal.SIGINT, rng.uniform(0.0, phase)) for i in range(PROBES)]
        probes = list(pool.map(lambda a: run_probe(inputs, tmp_path / f"p{a[0]}", *a[1]), enumerate(plan)))

    failures = [f"probe {i}: {'; '.join(found)}\n{describe(p)}"
                for i, p in enumerate(probes) if (found := problems(p, reference))]
    outcomes = sorted((p["sent"], p["rc"]) for p in probes)
    assert not failures, (f"seed {SEED}, phase {phase:.2f} s, outcomes (sent, exit) {outcomes}\n"
                          + "\n\n".join(failures))
    signalled = sum(p["sent"] for p in probes)
    assert signalled >= PROBES // 2, f"only {signalled} of {PROBES} runs were still alive at their signal: {outcomes}"
