"""neuroal_jax.runtime: the tools re-execute themselves once with huge-page malloc; the CPU's bfloat16 support."""
import os
import subprocess
import sys
import textwrap

import numpy as np
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
        "import os, sys\nprint(sys.argv[1:], os.environ.get('GLIBC_TUNABLES'), "
        "os.environ.get('NEUROAL_JAX_HUGEPAGES'))\n")
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


@pytest.mark.parametrize("flags, expected", [("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),
                                             ("fpu amx_tile amx_bf16 amx_int8", True), ("fpu avx2 fma", False)])
def test_cpu_bfloat16_flags(tmp_path, flags, expected):
    from neuroal_jax.runtime import cpu_has_bfloat16

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_bfloat16(str(info)) is expected
    assert cpu_has_bfloat16(str(tmp_path / "absent")) is None


@pytest.mark.parametrize("has, warns", [(False, True), (True, False), (None, False)])
def test_bfloat16_on_a_cpu_without_it_warns(monkeypatch, has, warns):
    import warnings

    from neuroal_jax import errors, runs, runtime
    from neuroal_jax.config import ModelConfig

    monkeypatch.setattr(runtime, "cpu_has_bfloat16", lambda: has)
    cfg = ModelConfig(family="llama", vocab_size=8, hidden_size=4, intermediate_size=8, num_layers=1, num_heads=1,
                      num_kv_heads=1, head_dim=4, max_position_embeddings=16)
    params = {"embed": {"weight": np.zeros((8, 4), np.float32)}}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        runs.resolve_model((cfg, params), "bfloat16")
        runs.resolve_model((cfg, params), "float32")
    precision = [w for w in seen if issubclass(w.category, errors.PrecisionWarning)]
    assert len(precision) == int(warns)
    if warns:
        assert "avx512_bf16 or amx_bf16" in str(precision[0].message)
