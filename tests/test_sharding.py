"""λ candidates sharded over a device mesh give the single-device search (4 CPU devices, subprocess)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuroal_jax.topups.neuroal.sharding import make_mesh, padded_width

TESTS = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.xdist_group("fixture")
@pytest.mark.parametrize("chunk, metric", [(0, "neuron"), (3, "neuron"), (3, "output_kl")])
def test_sharded_search_equals_one_device(chunk, metric):
    """output_kl: the candidates' final streams sharded, the dense stream and the LM head replicated; its values are
    small (about 5e-3 here) and the vmapped head rounds otherwise than the looped one: measured 8e-6 relative, 1e-4
    allowed."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, str(TESTS / "scripts" / "sharded_search.py"), str(TESTS), str(chunk),
                          metric], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(runs) == 3
    one = runs[0]
    assert [r["stream_devices"] for r in runs] == [[1], [4], [4]]
    for r in runs[1:]:
        assert (r["lambda_block"], r["lambda_row"]) == (one["lambda_block"], one["lambda_row"])
        rtol = 1e-6 if metric == "neuron" else 1e-4
        np.testing.assert_allclose(r["block"], one["block"], rtol=rtol)
        np.testing.assert_allclose(r["row"], one["row"], rtol=rtol)
        assert r["masks"] == one["masks"]


def test_padded_width_keeps_two_candidates_per_device():
    assert padded_width(14, None) == 14
    assert padded_width(1, None) == 2
    assert padded_width(1, make_mesh(1)) == 2


def test_make_mesh_rejects_bad_device_counts():
    with pytest.raises(ValueError, match="devices must be between 1 and the 1 available"):
        make_mesh(devices=3)
    with pytest.raises(ValueError, match="model_parallel must divide"):
        make_mesh(devices=1, model_parallel=2)
