"""A real multi-process run: two `neuroal-jax prune --distributed` processes on localhost (a local coordinator, CPU
collectives through gloo) run the sharded NeuroAL search on the fixture model, one CPU device each. They must agree
with a one-process run (λs, every candidate's alignment to rtol 1e-6, masks); process 0 writes the output; and a
process that cannot reach its coordinator, a process 0 whose peers never come, and bad distributed flags must stop
(within the timeout, or before connecting) with one clear line, writing nothing."""
from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pytest

import reference_fixture as F
from cli_run import assert_clean_error, run_cli, run_cli_all
from neuroal_jax import load_masks

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def prune_argv(out, *extra):
    return ["prune", "--model", F.model_dir(), "--method", "wanda", "--sparsity", "0.7", "--top-up", "neuroal",
            "--neuroal-step", "both", "--calib", f"tokens:{F.ROOT / 'calib_tokens.npy'}", "--nsamples", "16",
            "--seqlen", "128", "--out", out, "--quiet", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    port = free_port()
    both = run_cli_all(*[prune_argv(d / f"p{i}", "--distributed", "--coordinator", f"localhost:{port}",
                                    "--num-processes", "2", "--process-id", str(i), "--devices", "2",
                                    "--coordinator-timeout", "120") for i in (0, 1)])
    single = run_cli(*prune_argv(d / "single"))
    for proc in (*both, single):
        assert proc.returncode == 0, proc.stderr
    for i, proc in enumerate(both):
        (d / f"stdout{i}.txt").write_text(proc.stdout)
    return d


def report(folder) -> dict:
    return json.loads((folder / "report.json").read_text())


def test_two_processes_equal_one(runs):
    one, two = report(runs / "single"), report(runs / "p0")
    assert (two["lambda_block"], two["lambda_row"]) == (one["lambda_block"], one["lambda_row"])
    for step in ("alignment_block", "alignment_row"):
        assert [r["lambda"] for r in two[step]] == [r["lambda"] for r in one[step]]
        np.testing.assert_allclose([r["alignment"] for r in two[step]], [r["alignment"] for r in one[step]],
                                   rtol=1e-6)
    masks = [load_masks(runs / name) for name in ("single", "p0")]
    assert all(np.array_equal(masks[0][k], masks[1][k]) for k in masks[0])


def test_process_0_writes_and_every_process_computes_the_same(runs):
    """Process 0 writes --out; process 1 writes nothing (orbax stores the masks' data from process 0 only) and
    prints the same summary (λs aside, which the summary does not show: the sparsities)."""
    assert (runs / "p0" / "model.safetensors").is_file() and not (runs / "p1").exists()
    assert [p.name for p in runs.iterdir() if p.name.startswith(".p1")] == []
    out0, out1 = ((runs / f"stdout{i}.txt").read_text().splitlines() for i in (0, 1))
    assert [x for x in out0 if x.startswith("sparsity")] == [x for x in out1 if x.startswith("sparsity")]
    assert "process 1 of 2" in out1[-1]


def test_an_unreachable_coordinator_is_a_clear_error_in_bounded_time(tmp_path):
    t0 = time.monotonic()
    proc = run_cli(*prune_argv(tmp_path / "out", "--distributed", "--coordinator", f"localhost:{free_port()}",
                               "--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "3"))
    assert time.monotonic() - t0 < 60
    assert_clean_error(proc, "could not reach the coordinator", "--process-id 0", "3 s")
    assert list(tmp_path.iterdir()) == []


def test_process_0_whose_peers_never_come_is_a_clear_error_in_bounded_time(tmp_path):
    """JAX's coordination service would abort process 0 (SIGABRT, a C++ stack trace): our check-in comes first."""
    t0 = time.monotonic()
    proc = run_cli(*prune_argv(tmp_path / "out", "--distributed", "--coordinator", f"localhost:{free_port()}",
                               "--num-processes", "2", "--process-id", "0", "--coordinator-timeout", "3"))
    assert time.monotonic() - t0 < 60
    assert_clean_error(proc, "1 other process expected, 0 reached process 0", "within 3 s", "--process-id 1",
                       "--num-processes 2")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def no_cluster_env(monkeypatch):
    """An environment where JAX's cluster detection finds nothing (the CLI's subprocesses inherit os.environ)."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "OMPI_", "PMI_", "TPU_", "JAX_COORDINATOR", "JAX_PROCESS",
                            "KUBERNETES_SERVICE")):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("flags, names", [
    (("--distributed", "--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "5"),
     ["--process-id 5", "out of range", "--num-processes 2", "0 to 1"]),
    (("--distributed",),
     ["--distributed needs", "--coordinator HOST:PORT", "--num-processes N", "--process-id I",
      "no cluster environment", "SLURM"]),
    (("--distributed", "--coordinator", "localhost:1"),
     ["--distributed needs --num-processes N and --process-id I", "no cluster environment"]),
    (("--distributed", "--coordinator", "localhost", "--num-processes", "2", "--process-id", "1"),
     ["--coordinator", "HOST:PORT", "'localhost'"]),
    (("--coordinator", "localhost:1"), ["--coordinator is only valid with --distributed"]),
    (("--num-processes", "2", "--process-id", "1"),
     ["--num-processes, --process-id are only valid with --distributed"]),
    (("--coordinator-timeout", "5"), ["--coordinator-timeout is only valid with --distributed"]),
], ids=["process-id-out-of-range", "distributed-alone", "no-num-processes", "no-port", "coordinator-alone",
        "ids-alone", "timeout-alone"])
def test_bad_distributed_flags_are_refused_before_connecting(tmp_path, no_cluster_env, flags, names):
    t0 = time.monotonic()
    proc = run_cli(*prune_argv(tmp_path / "out", *flags, "--coordinator-timeout", "60")
                   if "--distributed" in flags else prune_argv(tmp_path / "out", *flags))
    assert time.monotonic() - t0 < 40  # no wait for a coordinator (its timeout is 60 s)
    assert_clean_error(proc, *names)
    assert list(tmp_path.iterdir()) == []
