"""neuroal_jax: a functional JAX reimplementation of NeuroAL (adaptive neuron-alignment top-up for LLM pruning)."""
from .config import ModelConfig

__version__ = "0.1.0"
__all__ = ["ModelConfig"]
