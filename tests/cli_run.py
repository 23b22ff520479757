"""Running `neuroal-jax` as a user does (a fresh process), and checking what it left on disk."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_env() -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("NEUROAL_DEBUG", None)
    return env


def start_cli(argv: list[str], cwd: Path = REPO) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "neuroal_jax.cli", *map(str, argv)], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli_all(*argvs: list[str], cwd: Path = REPO) -> list[subprocess.CompletedProcess]:
    """`python -m neuroal_jax.cli ARGS` for each argv, in concurrent fresh processes."""
    procs = [start_cli(argv, cwd) for argv in argvs]
    done = []
    for argv, proc in zip(argvs, procs):
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return done


def run_cli(*argv, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return run_cli_all(list(argv), cwd=cwd)[0]


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one `neuroal-jax: error:` line of a run that failed cleanly (exit 2, no traceback)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("neuroal-jax: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def assert_clean_error(proc: subprocess.CompletedProcess, *names: str) -> None:
    """Exit 2, one `neuroal-jax: error:` line naming every `names`, no traceback."""
    line = error_line(proc)
    for name in names:
        assert name in line, (name, line)


def snapshot(folder: Path) -> dict:
    """{relative path: sha256} of every file under `folder` (hidden ones included), and every folder."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out
