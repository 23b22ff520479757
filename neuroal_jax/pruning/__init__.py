"""The pruning engine: scores, exact masks, calibration statistics, SparseGPT and the sequential pass.

    targets.py      Distribution (what to prune), Structure (row | layer | N:M), achieved sparsity
    methods.py      the base methods: one record each (updates weights? needs a Hessian? per-row targets?)
    scores.py       the score registry: magnitude, wanda, multiflow
    masks.py        exact row-wise top-k masks (threshold search; Pallas on GPU), layer and N:M masks
    statistics.py   activation norms, Hessians and input moments from the block functions
    sparsegpt.py    SparseGPT's OBS update
    sequential.py   the block-by-block pass on the sparse stream
"""
from .methods import Method, check_method, method_info, methods
from .scores import SCORES, LayerStats, get_score, register_score
from .sequential import layer_mask, prune_block, prune_blocks, sequential_prune
from .statistics import BlockStats, collect_block_stats, dense_activation_norms, embed_batches
from .targets import (
                      Distribution,
                      Structure,
                      block_distribution,
                      check_sparsity,
                      keep_and_ties,
                      layer_keys,
                      sparsity_summary,
                      uniform_distribution,
)

__all__ = ["SCORES", "BlockStats", "Distribution", "LayerStats", "Method", "Structure", "block_distribution",
           "check_method", "check_sparsity", "collect_block_stats", "dense_activation_norms", "embed_batches",
           "get_score", "keep_and_ties", "layer_keys", "layer_mask", "method_info", "methods", "prune_block",
           "prune_blocks", "register_score", "sequential_prune", "sparsity_summary", "uniform_distribution"]
