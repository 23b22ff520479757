"""`sweep`: every λ candidate's alignment under every metric and its final pruned model's perplexity.

    from neuroal_jax import sweep
    result = sweep("smollm2-135m", method="wanda", sparsity=0.7, step="block", metrics="all",
                   calib="pydoc", nsamples=32, seqlen=256, eval="pydoc", out="runs/sweep")
    result.report["runs"][0]["summary"]["metrics"]["neuron"]   # pick, perplexity at the pick, regret, spearman

Settings (the `neuroal-jax sweep` flags; `SweepSettings`): several `seeds`, `search_samples` or `calib`
sources repeat the search and the final pruning per combination (one "run" each) and add the
sensitivity rows (mean ± std over seeds); several `block_profile`s sweep each profile's λs (one run each,
compared on plots/profiles.png). A final pruning already done for the same calibration windows
and distribution is reused (e.g. block candidates across |Cλ|).

Output folder (`out`, written atomically; `force` replaces only an earlier output of ours):
    sweep.json   settings, every run's candidates (λs, alignments, perplexities, sparsities), summaries,
                 sensitivity, profiles (several block profiles pooled), timings
    sweep.csv    one row per run and candidate
    plots/       perplexity.png, metrics.png (per run in run-<i>/ when several), search_samples.png,
                 row_sparsity.png, profiles.png (see sweeps.plots)
"""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UsageError
from ..evaluation.data import DatasetSpec, calibration_windows, eval_windows
from ..options import Target
from ..outputs.files import atomic_file, output_folder, write_json
from ..outputs.report import versions
from ..pruning import Structure, check_method, check_sparsity
from ..runs import (
    DataSettings,
    EvalSettings,
    OutputSettings,
    check_dtype,
    check_model_fits,
    check_output,
    resolve_model,
    run_settings,
)
from ..topups.neuroal.picks import pick
from ..topups.neuroal.profiles import Profile, ProfileInputs, block_profile
from .candidates import Candidates, search_candidates
from .outcomes import dist_digest, final_outcomes
from .plots import save_sweep_plots
from .settings import SweepSettings
from .summary import csv_rows, mark_noise, metric_summary, pooled_profiles, sensitivity


@dataclass(frozen=True, kw_only=True)
class SweepRequest:
    method: str
    sparsity: float
    settings: SweepSettings  # resolved: defaults filled in
    data: DataSettings  # calib: one spec or several; seed unused (the settings' seeds); seqlen None until loaded
    evaluation: EvalSettings
    output: OutputSettings  # out: the checked path
    dtype: str
    progress: bool

    @property
    def calibs(self) -> list[DatasetSpec]:
        return self.data.calib_specs()


@dataclass(frozen=True)
class SweepResult:
    report: dict  # what sweep.json holds: settings, runs (candidates, summaries), sensitivity, timings
    out: Path | None  # the output folder, if one was written


def check_sweep(model, *, method, sparsity, dtype, progress, settings: dict, **run) -> SweepRequest:
    """Validate every argument of `sweep` before any work; `run`: the keywords of `DataSettings` (calib may
    name several sets), `EvalSettings` and `OutputSettings`."""
    sparsity = check_sparsity(sparsity)
    check_method(method)
    data, evaluation, output = run_settings(run, "sweep")
    calibs = data.calib_specs()
    if not calibs:
        raise UsageError(f"calib (--calib) must name at least one dataset, got {data.calib!r}")
    if len({str(c) for c in calibs}) != len(calibs):
        raise UsageError(f"calib (--calib) repeats a dataset: {data.calib!r}")
    if not evaluation.eval:
        raise UsageError("a sweep needs at least one evaluation set (eval, --eval): it ranks λs by perplexity")
    check_dtype(dtype)
    resolved = SweepSettings.from_dict(settings, "sweep").resolved(Target(method, sparsity, Structure(),
                                                                          data.nsamples))
    rows = [str(c) for c in calibs if c.holds_rows()]
    if len(resolved.seeds) > 1 and rows:
        raise UsageError(f"seeds (--seeds) {','.join(map(str, resolved.seeds))}: {rows[0]} holds [n, L] rows, and "
                         "calibration takes its first rows whatever the seed, so every seed gives the same windows; "
                         "give one seed, or a 1-D token stream (or text) to sample windows from")
    return SweepRequest(method=method, sparsity=sparsity, settings=resolved, data=data, evaluation=evaluation,
                        output=check_output(output, model, calibs, evaluation.specs()), dtype=dtype, progress=progress)


def sweep(model, *, method: str = "wanda", sparsity: float = 0.7, calib: str = DataSettings.calib,
          nsamples: int = DataSettings.nsamples, seqlen: int | None = DataSettings.seqlen,
          batch_size: int = DataSettings.batch_size, moe_statistics: str = DataSettings.moe_statistics,
          eval=EvalSettings.eval,
          eval_nsamples: int | None = EvalSettings.eval_nsamples, out: str | os.PathLike | None = OutputSettings.out,
          force: bool = OutputSettings.force, dtype: str = "float32", progress: bool = True,
          **settings) -> SweepResult:
    """Sweep NeuroAL's λ candidates of `model` pruned with `method` at `sparsity`; the result's `.report` is what
    sweep.json holds.

    model, method, sparsity, nsamples, seqlen, batch_size, eval, eval_nsamples, out, force, dtype: as `prune`.
    calib: one calibration spec, or several (a list or "pydoc,text:PATH").
    settings: `SweepSettings` by name: step ("block" | "row" | "grid"), metrics ("all" or names),
        block_profile (one name or several: "linear,owl,dlp"), lambdas_block, lambdas_row, lambda_block, seeds,
        search_samples, outcomes ("all" | "picks"),
        lambda_chunk, dense_stream, devices. Unknown names and bad values are errors before any work.
    """
    req = check_sweep(model, method=method, sparsity=sparsity, dtype=dtype, progress=progress, settings=settings,
                      calib=",".join(calib) if isinstance(calib, (list, tuple)) else calib, nsamples=nsamples,
                      seqlen=seqlen, batch_size=batch_size, moe_statistics=moe_statistics, eval=eval,
                      eval_nsamples=eval_nsamples, out=out, force=force)
    if req.output.out is None:
        return SweepResult(run_sweep(model, req)[0], None)
    with output_folder(req.output.out, force=req.output.force, kind="sweep") as tmp:  # holds the lock from the start
        result, pick_dist = run_sweep(model, req)
        write_sweep(tmp, result, pick_dist)
    return SweepResult(result, req.output.out)


def run_sweep(model, req: SweepRequest) -> tuple[dict, dict | None]:
    """(what sweep.json holds, the first run's pick under the first metric for the row-spread plot, or None)."""
    s = req.settings
    t0 = time.perf_counter()
    name, cfg, params, tokenizer, _ = resolve_model(model, req.dtype)
    cfg = req.data.configure(cfg)
    req = replace(req, data=req.data.for_model(cfg))
    d, e = req.data, req.evaluation
    check_model_fits(cfg, Structure(), d.seqlen, req.method, search=True)
    test_sets = {x: eval_windows(x, tokenizer, d.seqlen, e.eval_nsamples, cfg.vocab_size) for x in e.eval}
    calib_sets = {(c, seed): calibration_windows(c, tokenizer, d.nsamples, d.seqlen, seed, cfg.vocab_size)
                  for c in req.calibs for seed in s.seeds}  # every data set read (and checked) before any work
    timings = {"load": time.perf_counter() - t0, "search": 0.0, "final": 0.0}
    cache, runs, pick_dist = {}, [], None
    for calib_spec in req.calibs:
        for seed in s.seeds:
            windows = calib_sets[calib_spec, seed]
            inputs = ProfileInputs(cfg, params, windows, d.batch_size, req.progress)
            for profile_name in s.block_profile:
                profile = block_profile(profile_name, inputs)
                for n in s.search_samples:
                    cands = search_candidates(cfg, params, windows[:n], req.sparsity, req.method, s, profile,
                                              req.progress)
                    timings["search"] += cands.seconds
                    t1 = time.perf_counter()
                    outcomes = _outcomes(cfg, params, windows, cands, (str(calib_spec), seed), cache, req, test_sets)
                    timings["final"] += time.perf_counter() - t1
                    runs.append(_run_record(str(calib_spec), seed, n, profile, cands, outcomes, req))
                    if pick_dist is None and s.step != "block":
                        pick_dist = cands.dists[pick(cands.alignment[s.metrics[0]])]
    mark_noise(runs, s.metrics)
    timings["total"] = time.perf_counter() - t0
    result = {"settings": {"model": name, "family": cfg.family, "method": req.method, "sparsity": req.sparsity,
                           "calib": [str(c) for c in req.calibs], "nsamples": d.nsamples, "seqlen": d.seqlen,
                           "eval": list(e.eval), "eval_nsamples": e.eval_nsamples,
                           "eval_windows": {x: int(len(w)) for x, w in test_sets.items()},
                           "batch_size": d.batch_size, "moe_statistics": d.moe_statistics, "dtype": req.dtype,
                           **s.to_dict(), "versions": versions()},
              "runs": runs,
              "sensitivity": sensitivity(runs, s.metrics, e.eval) if len(runs) > 1 else [],
              "profiles": pooled_profiles(runs, s.metrics, e.eval),
              "timings": {k: round(v, 3) for k, v in timings.items()}}
    return result, pick_dist


def _outcomes(cfg, params, windows, cands: Candidates, setting: tuple, cache: dict, req: SweepRequest,
              test_sets: dict) -> dict:
    """{candidate index: Outcome} for every candidate (outcomes "all") or each metric's pick ("picks"); a final
    pruning of the same windows and distribution done earlier is reused."""
    s = req.settings
    wanted = range(len(cands.dists)) if s.outcomes == "all" else sorted({pick(v) for v in cands.alignment.values()})
    keys = {i: (*setting, dist_digest(cands.dists[i])) for i in wanted}
    todo = list({keys[i]: i for i in wanted if keys[i] not in cache}.values())
    done = final_outcomes(cfg, params, windows, [cands.dists[i] for i in todo], req.method, test_sets,
                          req.data.batch_size, s.lambda_chunk, s.devices, req.progress) if todo else []
    cache.update({keys[i]: o for i, o in zip(todo, done)})
    return {i: cache[keys[i]] for i in wanted}


def _run_record(calib: str, seed: int, n: int, profile: Profile, cands: Candidates, outcomes: dict,
                req: SweepRequest) -> dict:
    candidates = []
    for i, (lb, lr) in enumerate(cands.lambdas):
        o = outcomes.get(i)
        candidates.append({"lambda_block": lb, "lambda_row": lr,
                           "alignment": {m: float(v[i]) for m, v in cands.alignment.items()},
                           "perplexity": None if o is None else o.perplexity,
                           "sparsity": None if o is None else o.sparsity,
                           "block_sparsity": None if o is None else o.block_sparsity})
    return {"calib": calib, "seed": seed, "search_samples": n, **profile.info(), **cands.base, "candidates": candidates,
            "summary": metric_summary(candidates, req.settings.metrics, req.evaluation.eval),
            "search_seconds": round(cands.seconds, 3)}


def write_sweep(folder: Path, result: dict, pick_dist: dict | None) -> None:
    """sweep.json, sweep.csv and plots/ into `folder` (each file written atomically)."""
    s = result["settings"]
    write_json(folder / "sweep.json", result)
    header, rows = csv_rows(result["runs"], s["metrics"], s["eval"])
    with atomic_file(folder / "sweep.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    save_sweep_plots(result, folder / "plots", pick_dist)
