"""neuroal_jax: a functional JAX reimplementation of NeuroAL (adaptive neuron-alignment top-up for LLM pruning).

    import neuroal_jax as nj
    result = nj.prune("smollm2-135m", method="wanda", sparsity=0.5, top_up="neuroal",
                      calib="pydoc", nsamples=32, seqlen=256, out="runs/smol")
    masks = nj.load_masks("runs/smol")   # {"<block>.<module>": bool (out, in)}, True = kept

The package, one room per idea: `models/` (families), `pruning/` (scores, masks, statistics, the pass),
`topups/` (uniform, OWL, AlphaPruning, DSnoT, DLP, NeuroAL), `evaluation/` (data, perplexity, zero-shot),
`outputs/` (files, masks checkpoint, report, plots), `streaming` (block-streamed, resumable runs), `runs` (what
every run shares), `sweeps/` (λ sweeps and metric studies), `recovery/` (mask-preserving fine-tuning after pruning),
then `api` (prune), `comparison` (compare), `cli/` (the command line); `errors` (UsageError, our warnings).
The names below load on first use, so `import neuroal_jax` (and the CLI's start) stays light.
"""
from .config import ModelConfig

__version__ = "0.1.0"

#: name -> the module that defines it
_API = {
    "prune": "api", "PruneResult": "api", "finetune": "recovery", "FinetuneSettings": "recovery",
    "compare": "comparison", "sweep": "sweeps", "SweepSettings": "sweeps",
    "load_masks": "outputs.checkpoint", "load_distribution": "outputs.checkpoint", "save_masks": "outputs.checkpoint",
    "register_topup": "topups", "get_topup": "topups", "PruneJob": "topups", "Allocation": "topups",
    "Options": "topups", "option": "topups",
    "register_metric": "topups.neuroal", "get_metric": "topups.neuroal", "neuroal_search": "topups.neuroal",
    "register_output_metric": "topups.neuroal",
    "SearchSettings": "topups.neuroal",
    "register_score": "pruning", "sequential_prune": "pruning",
}
__all__ = ["ModelConfig", *_API]


def __getattr__(name: str):
    if name in _API:
        from importlib import import_module
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
