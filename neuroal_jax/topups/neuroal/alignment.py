"""Alignment metrics: pure functions (a_dense[in], a_sparse[in]) -> scalar, lower = better aligned.

NeuroAL sums a metric over every prunable layer of the model to score a candidate sparsity
distribution. Register your own without touching the search:

    from neuroal_jax import register_metric

    @register_metric("l1")
    def l1(a_dense, a_sparse):
        return jnp.abs(a_dense - a_sparse).sum() / a_dense.size

then `neuroal-jax prune ... --top-up neuroal --alignment l1` (or `options={"alignment": "l1"}`).
Metrics run under jit and vmap (a leading λ axis), so write them with jnp. The other kind of metric, read from the
final next-token distributions instead of the layers (`output_kl`, `output_nll`, `register_output_metric`), is in
`output_metrics.py`; a name is one kind or the other.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from ...registry import Registry

MetricFn = Callable  # (a_dense f32[in], a_sparse f32[in]) -> f32 scalar
METRICS: Registry[MetricFn] = Registry("alignment metric")
register_metric = METRICS.register  # register_metric(name, fn) or @register_metric(name)


def get_metric(name: str) -> MetricFn:
    return METRICS[name]


def _normalised(a):
    return a / jnp.sum(a)


@register_metric("neuron")
def neuron(a_dense, a_sparse):
    """NeuroAL's neuron alignment: ‖aᴰ/Σaᴰ − aˢ/Σaˢ‖₂ / len(aᴰ) (docs/algorithm.md §5)."""
    return jnp.linalg.norm(_normalised(a_dense) - _normalised(a_sparse)) / a_dense.size


@register_metric("cosine")
def cosine(a_dense, a_sparse):
    """Cosine distance 1 − cos(aᴰ, aˢ)."""
    return 1.0 - jnp.dot(a_dense, a_sparse) / (jnp.linalg.norm(a_dense) * jnp.linalg.norm(a_sparse))


@register_metric("js")
def js(a_dense, a_sparse):
    """Jensen–Shannon divergence (nats) of the sum-normalised vectors."""
    p, q = _normalised(a_dense), _normalised(a_sparse)
    m = 0.5 * (p + q)

    def kl(x, y):
        return jnp.sum(jnp.where(x > 0, x * jnp.log(jnp.where(x > 0, x, 1.0) / jnp.where(y > 0, y, 1.0)), 0.0))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


@register_metric("rel_l2")
def rel_l2(a_dense, a_sparse):
    """Relative L2 distance of the raw vectors ‖aᴰ − aˢ‖₂ / ‖aᴰ‖₂."""
    return jnp.linalg.norm(a_dense - a_sparse) / jnp.linalg.norm(a_dense)
