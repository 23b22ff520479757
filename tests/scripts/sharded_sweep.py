"""Run a tiny block sweep on 1 and on 2 (forced host) devices; print one JSON line per run."""
import json
import sys

import numpy as np

sys.path.insert(0, sys.argv[1])
import jax  # noqa: E402

from conftest import TINY_LLAMA  # noqa: E402
from neuroal_jax import sweep  # noqa: E402
from neuroal_jax.models import init_params  # noqa: E402

params = init_params(TINY_LLAMA, seed=0, scale=0.1)
np.save(sys.argv[2], np.random.default_rng(0).integers(0, 128, 4096).astype(np.int64))
assert len(jax.devices()) == 2
for devices in (None, 2):
    r = sweep((TINY_LLAMA, params), method="wanda", sparsity=0.6, step="block", lambdas_block=(0.0, 0.05, 0.1),
              calib=f"tokens:{sys.argv[2]}", nsamples=8, seqlen=32, eval=f"tokens:{sys.argv[2]}", eval_nsamples=8,
              search_samples=4, devices=devices, lambda_chunk=3, progress=False)
    print(json.dumps(r.report["runs"][0]["candidates"]))
