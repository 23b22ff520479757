"""Pallas top-k mask kernel: interpret mode vs the jnp reference, and CUDA lowering."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroal_jax.pruning.masks import topk_keep_mask
from pallas_kernels.topk_mask import block_config, topk_mask

TUNED_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (8192, 28672), (28672, 8192)]


def make_scores(rng, shape, kind):
    if kind == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "ties":
        return rng.integers(-3, 4, size=shape).astype(np.float32)
    if kind == "zeros":  # +0.0 / -0.0 (equal) and a few other values, denormals too
        vals = np.array([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45], np.float32)
        return rng.choice(vals, size=shape)
    raise ValueError(kind)


def make_keep(rng, rows, cols):
    keep = rng.integers(0, cols + 1, size=rows).astype(np.int32)
    keep[:4] = [0, 1, cols, cols // 2]
    return keep


def check(scores, keep, ties, **kw):
    got = np.asarray(topk_mask(scores, keep, ties, interpret=True, **kw))
    expect = np.asarray(topk_keep_mask(scores, keep, ties))
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_array_equal(got.sum(-1), np.broadcast_to(keep, got.shape[:-1]))


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("ties", ["low", "high"])
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
def test_kernel_matches_reference_100x300(rng, kind, ties):
    scores = make_scores(rng, (100, 300), kind)
    check(scores, make_keep(rng, 100, 300), ties)


@pytest.mark.parametrize("shape", [(576, 1536), (192, 576)])
@pytest.mark.parametrize("ties", ["low", "high"])
def test_kernel_model_shapes_heavy_ties(rng, shape, ties):
    scores = make_scores(rng, shape, "ties")
    check(scores, make_keep(rng, *shape), ties)


def test_kernel_bfloat16(rng):
    scores = jnp.asarray(make_scores(rng, (64, 200), "normal"), jnp.bfloat16)
    keep = make_keep(rng, 64, 200)
    for ties in ("low", "high"):
        check(scores, keep, ties)


def test_kernel_keep_extremes_and_small_blocks(rng):
    scores = make_scores(rng, (40, 33), "ties")
    for keep in (np.zeros(40, np.int32), np.ones(40, np.int32), np.full(40, 33, np.int32)):
        check(scores, keep, "high", block_rows=8)  # several grid steps, padded rows


def test_kernel_batched(rng):
    scores = make_scores(rng, (3, 24, 70), "ties")
    keep = rng.integers(0, 71, size=(3, 24)).astype(np.int32)
    check(scores, keep, "low")
    # one score matrix shared by 5 keep vectors (lambda candidates)
    keep5 = rng.integers(0, 71, size=(5, 24)).astype(np.int32)
    check(scores[0], keep5, "high")


def test_block_config_table():
    assert block_config(4096, 4096) == (4, 8)
    assert block_config(4096, 11008) == (1, 8)
    assert block_config(8192, 28672) == (1, 16)
    for rows, cols in TUNED_SHAPES:
        br, _ = block_config(rows, cols)
        assert br & (br - 1) == 0 and rows % br == 0


@pytest.mark.parametrize("ties", ["low", "high"])
@pytest.mark.parametrize("shape", TUNED_SHAPES)
def test_kernel_lowers_for_cuda(shape, ties):
    """Triton lowering of the kernel runs on this CPU host (no GPU needed)."""
    rows, cols = shape
    dtype = jnp.bfloat16 if ties == "high" else jnp.float32
    lowered = (
        jax.jit(lambda s, k: topk_mask(s, k, ties))
        .trace(jax.ShapeDtypeStruct(shape, dtype), jax.ShapeDtypeStruct((rows,), jnp.int32))
        .lower(lowering_platforms=("cuda",))
    )
    text = lowered.as_text()
    assert "triton_kernel_call" in text or "__gpu$xla.gpu.triton" in text
