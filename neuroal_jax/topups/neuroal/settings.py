"""NeuroAL's options: `SearchSettings` (the top-up's `--neuroal-*` flags, the API's options) and the option
definitions the sweep (`neuroal_jax.sweeps`) shares with the search."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...errors import UsageError
from ...options import Options, Target, all_of, at_least, in_range, option, unique
from ...pruning.methods import method_info
from .candidates import AUTO
from .output_metrics import split_metrics, unknown_metric
from .profiles import BLOCK_PROFILES, LINEAR, known_profiles
from .schedules import BLOCK_LAMBDAS, ROW_LAMBDAS, default_block_lambdas
from .sharding import make_mesh

STEPS = ("block", "row", "both")
DEFAULT_SEARCH_SAMPLES = 8
DENSE_STREAMS = ("candidate", "model")


LAMBDA_CHECK = all_of(in_range(0.0, 1.0, high_open=True), unique)


# ---------------------------------------------------------------- one definition per option the sweep shares

def lambdas_option(step: str, grid: tuple[float, ...], note: str = ""):
    return option(None, f"NeuroAL: {step}-step λ values in [0, 1), comma-separated (default: "
                  + ",".join(f"{v:g}" for v in grid) + note + ")", check=LAMBDA_CHECK, metavar="L1,L2,...")


def parse_chunk(value) -> int | str:
    """--lambda-chunk: "auto" (None too) or a positive integer (an integer string on the command line)."""
    if value is None or value == AUTO:
        return AUTO
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"expected {AUTO} or an integer >= 1")
    return int(value)


def _chunk_error(value) -> str | None:
    try:
        parse_chunk(value)
    except ValueError:
        return f"must be >= 1 or {AUTO}"
    return None


def lambda_chunk_option():
    return option(AUTO, "NeuroAL: evaluate this many λ candidates at a time; auto: as many as fit in 70 % of the "
                        "free memory of the device (host RAM on a CPU) by an estimate of each candidate's bytes",
                  parse=parse_chunk, check=_chunk_error, metavar="K|auto")


def dense_stream_option():
    return option("candidate", "NeuroAL: dense activations on each candidate's sparse stream (candidate: the "
                               "reference code) or on the dense model's stream (model: the paper's Algorithm 1)",
                  choices=DENSE_STREAMS)


def devices_option():
    return option(None, "NeuroAL: shard the λ candidates over the first N devices (default: one device)",
                  check=at_least(1), metavar="N")


def check_search_samples(values, nsamples: int) -> None:
    for v in values:
        if v > nsamples:
            raise UsageError(f"option search_samples (--search-samples) must be at most the number of calibration "
                             f"windows ({nsamples}), got {v}")


# ---------------------------------------------------------------- the top-up's options

@dataclass(frozen=True)
class SearchSettings(Options):
    """NeuroAL's options (the top-up's `--neuroal-*` flags)."""
    neuroal_step: str | None = option(None, "NeuroAL: which λ search to run (default: both; block with N:M "
                                            "structure, which fixes the rows)", choices=STEPS)
    block_profile: tuple[str, ...] | None = option(
        None, f"NeuroAL: the block step's per-block profile that λ scales (default: {LINEAR}); several "
              "(comma-separated) pool their candidates, so the metric picks the profile and λ together, with an "
              "output metric only: " + "; ".join(f"{n}: {p.help}" for n, p in BLOCK_PROFILES.items()),
        check=known_profiles, metavar="NAME[,NAME...]")
    lambdas_block: tuple[float, ...] | None = lambdas_option("block", BLOCK_LAMBDAS,
                                                             "; without 0.25 when sparsity >= 0.8")
    lambdas_row: tuple[float, ...] | None = lambdas_option("row", ROW_LAMBDAS)
    search_samples: int | None = option(
        None, "NeuroAL: the λ search runs on the first N calibration windows (default: 8, or --nsamples if fewer)",
        check=at_least(1), metavar="N")
    alignment: str = option("neuron", "NeuroAL: the metric whose lowest value picks λ: an alignment metric (per "
                                      "layer, summed: neuron, cosine, js, rel_l2; register_metric) or an output "
                                      "metric (of the final next-token distributions on the search windows, one LM "
                                      "head pass per candidate: output_kl = KL(dense ‖ candidate), output_nll = the "
                                      "candidate's NLL; register_output_metric)",
                            check=unknown_metric, metavar="NAME")
    lambda_chunk: int | str = lambda_chunk_option()
    dense_stream: str = dense_stream_option()
    devices: int | None = devices_option()
    model_parallel: int = option(1, "NeuroAL: also split every weight's rows over M of those devices (M divides N)",
                                 check=at_least(1), metavar="M")

    def mesh(self):
        if self.devices is None and self.model_parallel == 1:
            return None
        return make_mesh(self.devices, self.model_parallel)

    def complete(self, target: Target) -> "SearchSettings":
        """The step, the block profile, the λ grids and the number of search windows made explicit."""
        step = self.neuroal_step or ("block" if target.structure.kind == "nm" else "both")
        return replace(self, neuroal_step=step,
                       block_profile=self.block_profile or (None if step == "row" else (LINEAR,)),
                       lambdas_block=self.lambdas_block or default_block_lambdas(target.sparsity),
                       lambdas_row=self.lambdas_row or ROW_LAMBDAS,
                       search_samples=self.search_samples or min(DEFAULT_SEARCH_SAMPLES, target.nsamples))

    def validate(self, target: Target) -> None:
        method = method_info(target.method)
        if not method.row_targets and self.neuroal_step != "block":
            raise UsageError(f"{method.name} supports only the NeuroAL block step (--neuroal-step block)")
        profiles = ",".join(self.block_profile or ())
        if self.block_profile is not None and self.neuroal_step == "row":
            raise UsageError(f"option block_profile (--block-profile) shapes the block step, which --neuroal-step row "
                             f"skips; got --block-profile {profiles} (valid with --neuroal-step block or both)")
        if len(self.block_profile or ()) > 1 and not split_metrics([self.alignment])[1]:
            raise UsageError(f"several block profiles (--block-profile {profiles}) are compared by an output metric "
                             f"only (--alignment output_kl or output_nll); got --alignment {self.alignment}, an "
                             "alignment metric, which ranks different profiles' candidates against their perplexity "
                             "(docs/selection.md, Across block profiles); give one profile or an output metric")
        if target.structure.kind == "layer":
            raise UsageError(f"NeuroAL allocates per-row or mixed N:M sparsities; structure {target.structure} is not "
                             "supported (valid: row, N:M)")
        if target.structure.kind == "nm":
            if self.neuroal_step != "block":
                raise UsageError(f"structure {target.structure} fixes N:M in every row, so NeuroAL has only its block "
                                 f"step; got --neuroal-step {self.neuroal_step} (valid: block)")
            if method.updates_weights:
                raise UsageError(f"NeuroAL's search with {method.name} supports unstructured sparsity only, got "
                                 f"structure {target.structure}")
        self.mesh()  # the device counts exist
        check_search_samples([self.search_samples], target.nsamples)
