"""Output metrics: what each candidate's pruned model outputs on the search windows, next to the dense model's.

The alignment metrics (`alignment.py`) compare activation norms layer by layer; an output metric looks at the
next-token distributions instead. Once per candidate, after the last block, the candidate's final stream goes
through the final norm and the LM head (`models.hidden_to_logits`), and the metric compares, token by token, those
logits with the dense model's log-probabilities (from one dense pass over the same windows); the candidate's value
is the mean over every next-token position of the search windows (lower = better). Register your own without
touching the search:

    import jax.numpy as jnp
    from neuroal_jax import register_output_metric

    @register_output_metric("output_top1")
    def top1(logp_dense, logits_sparse, target):   # one token: f32[V], f32[V], int32 -> f32 scalar
        return (jnp.argmax(logits_sparse) != jnp.argmax(logp_dense)).astype(jnp.float32)

then `neuroal-jax prune ... --top-up neuroal --alignment output_top1` (or `options={"alignment": "output_top1"}`),
or `neuroal-jax sweep --metrics neuron,output_top1`. Output metrics run under jit, vmapped over the tokens of a
chunk and looped (or vmapped) over the candidates, so write them with jnp. They get the dense model's
log-probabilities (log_softmax, computed once per chunk for every candidate and metric) and the candidate's raw
logits (`jax.nn.log_softmax(logits_sparse)` if a metric needs its log-probabilities; `output_kl` shows a faster
spelling), all float32 whatever the model's dtype. A name is an alignment metric or an output metric, never both.

Cost (docs/algorithm.md §5): one LM-head pass per candidate and one for the dense model per λ chunk, in chunks of
`token_chunk` tokens so that only [chunk, V] logits exist at once per candidate (never [N, T, V]); the dense
model's final stream [N, T, H] is carried through the blocks when the dense stream is the candidate's own.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from ...config import ModelConfig
from ...models import hidden_to_logits
from ...registry import Registry
from .alignment import METRICS
from .kernel import over_candidates

F32 = jnp.float32

OutputMetricFn = Callable  # (logp_dense f32[V], logits_sparse f32[V], target int32) -> f32 scalar
OUTPUT_METRICS: Registry[OutputMetricFn] = Registry("output metric")
OUTPUT_METRICS.keep_apart(METRICS)
# register_output_metric(name, fn) or @register_output_metric(name)
register_output_metric = OUTPUT_METRICS.register

#: Bytes of one [chunk, V] block of float32 logits: the token chunk is sized from it.
OUTPUT_CHUNK_BYTES = 16 * 2**20


def get_output_metric(name: str) -> OutputMetricFn:
    return OUTPUT_METRICS[name]


def metric_names() -> tuple[str, ...]:
    """Every name `--alignment` and `sweep --metrics` accept: the alignment metrics, then the output metrics."""
    return (*METRICS.names(), *OUTPUT_METRICS.names())


def unknown_metric(name) -> str | None:
    """None for a registered metric of either kind, else the reason with the valid names."""
    return None if name in METRICS or name in OUTPUT_METRICS else \
        f"is not a registered alignment metric or output metric (valid: {', '.join(metric_names())})"


def split_metrics(metrics) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(alignment metrics, output metrics) of `metrics`, each in the given order."""
    metrics = tuple(metrics)
    return tuple(m for m in metrics if m not in OUTPUT_METRICS), tuple(m for m in metrics if m in OUTPUT_METRICS)


@register_output_metric("output_kl")
def output_kl(logp_dense, logits_sparse, target):
    """KL(p_dense ‖ p_candidate) of the next-token distributions (nats): Σ p_dense (log p_dense − z) + logsumexp(z)
    with z the candidate's logits (Σ p_dense = 1), one pass over z where XLA:CPU is 3.5× slower with
    `log_softmax(z)` spelled out (SmolLM2's V = 49152)."""
    return jnp.sum(jnp.exp(logp_dense) * (logp_dense - logits_sparse)) + jax.nn.logsumexp(logits_sparse)


@register_output_metric("output_nll")
def output_nll(logp_dense, logits_sparse, target):
    """The candidate's negative log-likelihood of the next token (its mean is log perplexity on the windows)."""
    return jax.nn.logsumexp(logits_sparse) - logits_sparse[target]


# ---------------------------------------------------------------- every candidate's value, in token chunks

def token_chunk(vocab_size: int, tokens: int) -> int:
    """Tokens per chunk: [chunk, V] float32 logits of about OUTPUT_CHUNK_BYTES (at least 8 tokens, at most all)."""
    return max(1, min(tokens, max(8, OUTPUT_CHUNK_BYTES // (4 * vocab_size))))


def output_bytes(cfg: ModelConfig, windows: int, seqlen: int, itemsize: int, vmapped: bool) -> tuple[int, int]:
    """(bytes per candidate, bytes shared) of the output pass, an upper estimate: each candidate's final stream
    cut into token chunks (a copy, two when transposed), and per chunk the float32 logits and two more arrays of
    their size (what a metric computes from them), per candidate when vmapped, one candidate's at a time when
    looped; shared, the dense model's final stream and its chunk's logits and log-probabilities."""
    tokens = windows * seqlen
    logits = 3 * 4 * token_chunk(cfg.vocab_size, windows * (seqlen - 1)) * cfg.vocab_size
    copy = 2 * tokens * cfg.hidden_size * itemsize
    dense = tokens * cfg.hidden_size * itemsize + logits
    return (copy + logits, dense) if vmapped else (copy, dense + logits)


@partial(jax.jit, static_argnums=(0, 1), static_argnames=("chunk", "loop"))
def output_alignment(cfg: ModelConfig, metrics: tuple, head: dict, xs, dense_x, tokens, chunk: int,
                     loop: str = "vmap") -> dict:
    """{metric: [K]} mean over the next-token positions of tokens [N, T] of each output metric, from the candidates'
    final streams xs [K, N, T, H] and the dense model's dense_x [N, T, H]. A `lax.scan` over chunks of `chunk`
    tokens (the last one padded, its padding ignored): per chunk the dense log-probabilities once, then each
    candidate's logits (`over_candidates(loop)`), so at most [chunk, V] logits per candidate exist at once."""
    K, N, T, H = xs.shape
    n = N * (T - 1)
    nc = -(-n // chunk)
    pad = nc * chunk - n

    def chunks(x):  # [..., N, T, H] -> [..., nc, chunk, H]: positions 0..T-2 predict the tokens 1..T-1
        x = x[..., :-1, :].reshape(*x.shape[:-3], n, H)
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, pad), (0, 0)])
        return x.reshape(*x.shape[:-2], nc, chunk, H)

    targets = jnp.pad(tokens[:, 1:].reshape(n), (0, pad)).reshape(nc, chunk)
    valid = (jnp.arange(nc * chunk) < n).reshape(nc, chunk)
    fns = [get_output_metric(m) for m in metrics]
    over = over_candidates(loop)

    def step(acc, inputs):
        x, d, t, v = inputs  # [K, chunk, H], [chunk, H], [chunk], [chunk]
        logp_dense = jax.nn.log_softmax(hidden_to_logits(cfg, head, d), axis=-1)

        def one(xk):
            logits = hidden_to_logits(cfg, head, xk)
            return jnp.stack([jnp.sum(jnp.where(v, jax.vmap(f)(logp_dense, logits, t).astype(F32), 0.0))
                              for f in fns])

        return acc + over(one, x), None

    acc, _ = jax.lax.scan(step, jnp.zeros((K, len(fns)), F32),
                          (jnp.moveaxis(chunks(xs), 1, 0), chunks(dense_x), targets, valid))
    return {m: acc[:, i] / n for i, m in enumerate(metrics)}
