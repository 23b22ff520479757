"""NeuroAL (Cunegatti et al., TMLR 2025): choose block and row sparsities by neuron alignment, vectorised over λ.

The search, in reading order (each part builds on the ones before):

    schedules.py   the candidates: λ grids, block distributions, row distributions from δ
    kernel.py      one block, every candidate: dense pass, masks, sparse pass, alignment (jitted)
    candidates.py  evaluating a set of candidates block by block (chunk sizing, sharding)
    settings.py    the options (SearchSettings) and their checks
    search.py      the driver: the block and row steps, the registered top-up

and what it plugs into:

    profiles.py    the block-profile registry: the per-block shape λ scales (linear, owl, dlp, alphapruning)
    alignment.py   the alignment-metric registry (neuron, cosine, js, rel_l2)
    output_metrics.py  the output-metric registry (output_kl, output_nll): the final next-token distributions
    sharding.py    candidates (and optionally weight rows) over a device mesh
"""
from .alignment import METRICS, get_metric, register_metric
from .output_metrics import OUTPUT_METRICS, get_output_metric, register_output_metric
from .search import SearchResult, neuroal_search
from .settings import SearchSettings

__all__ = ["METRICS", "OUTPUT_METRICS", "SearchResult", "SearchSettings", "get_metric", "get_output_metric",
           "neuroal_search", "register_metric", "register_output_metric"]
