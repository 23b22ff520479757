"""Run by tests/test_sharding.py in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4:
the NeuroAL search (both steps, wanda 70 %) on the fixture model with no mesh, a 4-device λ mesh and a
2 λ × 2 row-split mesh; prints one JSON line per run with λs, alignment curves and a mask digest.
argv: tests/, lambda_chunk (0: auto), and optionally the metric (default neuron)."""
import hashlib
import json
import sys

import jax
import numpy as np

sys.path.insert(0, sys.argv[1])  # tests/
import neuroal_jax.topups.neuroal.candidates as S  # noqa: E402
import reference_fixture as F  # noqa: E402
from converters.hf import load_hf  # noqa: E402
from neuroal_jax.pruning import sequential_prune  # noqa: E402
from neuroal_jax.topups.neuroal.search import SearchSettings, neuroal_search  # noqa: E402

placements = set()
_candidates_block = S.candidates_block


def recording(*args, **kw):  # how many devices hold the candidates' next stream
    out = _candidates_block(*args, **kw)
    placements.add(len(out[0].sharding.device_set))
    return out


S.candidates_block = recording

cfg, params, _ = load_hf(F.model_dir())
windows = F.calib_tokens()
assert len(jax.devices()) == 4, jax.devices()
for devices, mp in ((None, 1), (4, 1), (4, 2)):
    placements.clear()
    s = SearchSettings(neuroal_step="both", devices=devices, model_parallel=mp, lambda_chunk=int(sys.argv[2]) or None,
                       alignment=sys.argv[3] if len(sys.argv) > 3 else "neuron")
    r = neuroal_search(cfg, params, windows, 0.7, "wanda", s, progress=False)
    _, masks = sequential_prune(cfg, params, windows, r.dist, "wanda", progress=False)
    digest = hashlib.sha1(b"".join(np.packbits(np.asarray(masks[k])).tobytes() for k in sorted(masks))).hexdigest()
    print(json.dumps({"devices": devices, "model_parallel": mp, "lambda_block": r.block.best_lambda,
                      "lambda_row": r.row.best_lambda, "block": r.block.totals.tolist(),
                      "row": r.row.totals.tolist(), "masks": digest,
                      "stream_devices": sorted(placements)}), flush=True)
