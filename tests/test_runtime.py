"""The command-line tools re-execute themselves once with huge-page malloc (neuroal_jax.runtime)."""
import os
import subprocess
import sys
import textwrap

import pytest

from neuroal_jax.runtime import HUGEPAGE_TUNABLE, hugepage_env

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")

CALLER = textwrap.dedent("""
    import sys
    from neuroal_jax.runtime import reexec_with_hugepages
    reexec_with_hugepages(["-m", "show_env", "a", "b c"])
    print("not re-executed")
""")


def run(tmp_path, env_extra):
    (tmp_path / "show_env.py").write_text(
        "import os, sys\nprint(sys.argv[1:], os.environ.get('GLIBC_TUNABLES'), os.environ.get('NEUROAL_JAX_HUGEPAGES'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "NEUROAL_JAX_HUGEPAGES")}
    env.update(env_extra, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run([sys.executable, "-c", CALLER], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_reexecs_once_with_tunable_and_arguments(tmp_path):
    assert run(tmp_path, {}) == f"['a', 'b c'] {HUGEPAGE_TUNABLE} 0"


def test_keeps_other_tunables(tmp_path):
    assert run(tmp_path, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == \
        f"['a', 'b c'] glibc.malloc.arena_max=2:{HUGEPAGE_TUNABLE} 0"


@pytest.mark.parametrize("env", [{"NEUROAL_JAX_HUGEPAGES": "0"}, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}])
def test_opt_out_or_already_set_runs_in_place(tmp_path, env):
    assert run(tmp_path, env) == "not re-executed"


def test_hugepage_env_is_a_copy():
    env = {"PATH": "/bin"}
    assert hugepage_env(env) == {"PATH": "/bin", "GLIBC_TUNABLES": HUGEPAGE_TUNABLE} and env == {"PATH": "/bin"}
