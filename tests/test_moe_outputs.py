"""A mixture-of-experts run's outputs: a resumed streamed prune reports the expert token counts of every block, the
blocks pruned before the interruption included, as an uninterrupted run does."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from converters.hf import export_hf, load_hf  # noqa: E402
from neuroal_jax.api import prune  # noqa: E402
from neuroal_jax.models.moe import router  # noqa: E402
from neuroal_jax.pruning import sequential  # noqa: E402

VOCAB, EXPERTS, BLOCKS = 256, 4, 3


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory):
    """A tiny Mixtral (3 blocks, 4 experts, top-2) whose last expert no token reaches (its router row ties with the
    two before it: top-k takes the lower indices), in the Hub layout; and a calibration token file."""
    root = tmp_path_factory.mktemp("moe-outputs")
    transformers.set_seed(0)
    config = transformers.MixtralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=32,
                                        num_hidden_layers=BLOCKS, num_attention_heads=4, num_key_value_heads=2,
                                        num_local_experts=EXPERTS, num_experts_per_tok=2)
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(root / "hub")
    cfg, params, _ = load_hf(root / "hub")
    for block in params["blocks"]:
        w = np.array(block[router(cfg)]["weight"])
        w[-2:] = w[-3]
        block[router(cfg)] = {"weight": w}
    export_hf(cfg, params, root / "model")
    np.save(root / "calib.npy", np.random.default_rng(0).integers(0, VOCAB, 4096))
    return root / "model", root / "calib.npy"


def test_resumed_streamed_run_reports_every_blocks_tokens(mixtral, tmp_path, monkeypatch):
    """A streamed prune stopped in block 2 (blocks 0 and 1 on disk), then resumed: report.json's moe_tokens and
    moe_fallback are the uninterrupted run's; the per-block counts kept for the resume are not in the output."""
    model, calib = mixtral

    def run(out, **kw):
        return prune(str(model), method="wanda", sparsity=0.5, calib=f"tokens:{calib}", nsamples=8, seqlen=32,
                     eval=[], out=out, stream=True, progress=False, **kw)

    run(tmp_path / "whole")
    real = sequential.prune_on_stream

    def stops_in_block_2(cfg, b, *args):
        if b == 2:
            raise KeyboardInterrupt
        return real(cfg, b, *args)

    monkeypatch.setattr(sequential, "prune_on_stream", stops_in_block_2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(sequential, "prune_on_stream", real)
    part = tmp_path / ".cut.partial"
    assert sorted(p.name for p in (part / "masks").iterdir()) == ["block-00000", "block-00001"]
    run(tmp_path / "cut", resume=True)
    whole, cut = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("whole", "cut"))
    assert sorted(cut["moe_tokens"]) == ["0", "1", "2"]
    assert cut["moe_tokens"] == whole["moe_tokens"]
    assert cut["moe_fallback"] == whole["moe_fallback"] == [f"{b}.block_sparse_moe.experts.{EXPERTS - 1}"
                                                            for b in range(BLOCKS)]
    assert not part.exists() and not (tmp_path / "cut" / "routing").exists()
