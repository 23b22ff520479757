"""The sweep's options: one frozen dataclass, the source of the `neuroal-jax sweep` flags, the API's keyword
arguments and the "settings" recorded in sweep.json (the options machinery of `neuroal_jax.options`)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import UsageError
from ..options import Options, Target, all_of, at_least, in_range, option, unique
from ..pruning.methods import method_info
from ..topups.neuroal.output_metrics import metric_names
from ..topups.neuroal.profiles import BLOCK_PROFILES, LINEAR, known_profiles
from ..topups.neuroal.schedules import BLOCK_LAMBDAS, ROW_LAMBDAS, default_block_lambdas
from ..topups.neuroal.settings import (
    DEFAULT_SEARCH_SAMPLES,
    check_search_samples,
    dense_stream_option,
    devices_option,
    lambda_chunk_option,
    lambdas_option,
)
from ..topups.neuroal.sharding import make_mesh

SWEEP_STEPS = ("block", "row", "grid")
OUTCOMES = ("all", "picks")
ALL = "all"


def _known_metrics(names) -> str | None:
    unknown = [n for n in names if n != ALL and n not in metric_names()]
    return None if not unknown else (f"names unknown alignment or output metric(s) {', '.join(map(repr, unknown))} "
                                     f"(valid: {ALL}, {', '.join(metric_names())})")


@dataclass(frozen=True)
class SweepSettings(Options):
    """What a sweep varies and measures (the `neuroal-jax sweep` flags of the same names)."""
    step: str = option("block", "candidates: block (the block λs), row (the row λs at one block λ) or grid "
                                "(block × row)", choices=SWEEP_STEPS)
    metrics: tuple[str, ...] = option((ALL,), "metrics, all scored in the one search pass: alignment metrics (per "
                                              "layer) and output metrics (of the final next-token distributions), "
                                              "by name, or all (both kinds)", check=all_of(_known_metrics, unique),
                                      metavar="M1,M2,...")
    block_profile: tuple[str, ...] = option((LINEAR,), "block profiles whose λ candidates to sweep, side by side (one "
                                                       "run each): names in the block-profile registry ("
                                                       + ", ".join(BLOCK_PROFILES) + ")",
                                            check=known_profiles, metavar="P1,P2,...")
    lambdas_block: tuple[float, ...] | None = lambdas_option("block", BLOCK_LAMBDAS, "; without 0.25 when sparsity "
                                                                                     ">= 0.8")
    lambdas_row: tuple[float, ...] | None = lambdas_option("row", ROW_LAMBDAS)
    lambda_block: float | None = option(None, "row step: the block λ its candidates start from (default: the block "
                                              "search's pick under the first metric)",
                                        check=in_range(0.0, 1.0, high_open=True), metavar="L")
    seeds: tuple[int, ...] = option((0,), "calibration sampling seeds; several repeat the search and the final "
                                          "pruning per seed (sensitivity)", check=unique, metavar="S1,S2,...")
    search_samples: tuple[int, ...] | None = option(
        None, "|Cλ|: the search runs on the first N calibration windows; several values repeat it per N (default: "
              f"{DEFAULT_SEARCH_SAMPLES}, or --nsamples if fewer)", check=all_of(at_least(1), unique),
        metavar="N1,N2,...")
    outcomes: str = option("all", "final-prune and evaluate every candidate (all), or only each metric's pick "
                                  "(picks: cheaper sensitivity runs, without oracle, regret or rank correlation)",
                           choices=OUTCOMES)
    lambda_chunk: int | str = lambda_chunk_option()
    dense_stream: str = dense_stream_option()
    devices: int | None = devices_option()

    def complete(self, target: Target) -> "SweepSettings":
        metrics = [m for name in self.metrics for m in (metric_names() if name == ALL else [name])]
        return replace(self, metrics=tuple(dict.fromkeys(metrics)),
                       lambdas_block=self.lambdas_block or default_block_lambdas(target.sparsity),
                       lambdas_row=self.lambdas_row or ROW_LAMBDAS,
                       search_samples=self.search_samples or (min(DEFAULT_SEARCH_SAMPLES, target.nsamples),))

    def validate(self, target: Target) -> None:
        if not method_info(target.method).row_targets and self.step != "block":
            raise UsageError(f"{target.method} supports only the block step (--step block), got --step {self.step}")
        if self.lambda_block is not None and self.step != "row":
            raise UsageError(f"option lambda_block (--lambda-block) applies to --step row only, got --step {self.step}")
        check_search_samples(self.search_samples, target.nsamples)
        self.mesh()

    def mesh(self):
        return None if self.devices is None else make_mesh(self.devices, 1)
