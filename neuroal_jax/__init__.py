"""neuroal_jax: a functional JAX reimplementation of NeuroAL (adaptive neuron-alignment top-up for LLM pruning).

    from neuroal_jax import prune, load_masks
    result = prune("smollm2-135m", method="wanda", sparsity=0.5, top_up="neuroal",
                   calib="pydoc", nsamples=32, seqlen=256, out="runs/smol")
    masks = load_masks("runs/smol")   # {"<block>.<module>": bool (out, in)}, True = kept

`prune` and the checkpoint readers are imported lazily, so `import neuroal_jax` stays light.
"""
from .config import ModelConfig

__version__ = "0.1.0"

_LAZY = {
    "prune": ".api", "PruneResult": ".api",  # the one-call pipeline
    "load_masks": ".checkpoint", "load_distribution": ".checkpoint", "save_masks": ".checkpoint",
    "register_metric": ".alignment", "get_metric": ".alignment",  # NeuroAL alignment metrics
    "register_topup": ".allocation", "get_topup": ".allocation",  # top-ups
    "PruneJob": ".allocation", "Allocation": ".allocation", "Options": ".options",
}
__all__ = ["ModelConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
