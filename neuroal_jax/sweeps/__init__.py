"""λ sweeps: every NeuroAL candidate's alignment under every metric and its final pruned model's perplexity,
vectorised over candidates (`neuroal-jax sweep`, `neuroal_jax.sweep`)."""
from .run import sweep
from .settings import SweepSettings

__all__ = ["sweep", "SweepSettings"]
