"""NeuroAL (Cunegatti et al., TMLR 2025): choose block and row sparsities by neuron alignment, vectorised over λ.

    search.py      the block and row steps, every candidate of a step in one pass over the blocks
    profiles.py    the block-profile registry: the per-block shape λ scales (linear, owl, dlp, alphapruning)
    alignment.py   the alignment-metric registry (neuron, cosine, js, rel_l2)
    sharding.py    candidates (and optionally weight rows) over a device mesh
"""
from .alignment import METRICS, get_metric, register_metric
from .search import SearchResult, SearchSettings, neuroal_search

__all__ = ["METRICS", "SearchResult", "SearchSettings", "get_metric", "neuroal_search", "register_metric"]
