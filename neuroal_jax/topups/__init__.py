"""Top-ups: how much of each block, layer or row to prune. Importing this package registers every one.

    base.py          PruneJob, Allocation, TopUp and the TOPUPS registry
    options.py       typed options: one dataclass per top-up gives its flags, defaults, help and checks
    uniform.py, owl.py, alphapruning.py, dsnot.py, dlp.py
    neuroal/         the NeuroAL λ search, its alignment metrics and its sharding over devices

A new top-up is one file here (a function and its options dataclass, `@register_topup`) plus its import below.
"""
from . import uniform, owl, alphapruning, dsnot, dlp  # noqa: F401,I001  (registration order: what --help shows)
from .neuroal import search  # noqa: F401  (registers "neuroal")
from .base import TOPUPS, Allocation, PruneJob, TopUp, get_topup, register_topup
from ..options import Options, Target, option

__all__ = ["TOPUPS", "Allocation", "Options", "PruneJob", "Target", "TopUp", "get_topup", "option", "register_topup"]
