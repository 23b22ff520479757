"""One call from a model to a pruned, evaluated, exported model.

    from neuroal_jax import prune
    result = prune("smollm2-135m", method="wanda", sparsity=0.5, top_up="owl",
                   calib="pydoc", nsamples=32, seqlen=256, eval=["pydoc"], out="runs/smol-owl")
    result.report["perplexity"]   # {"pydoc": ...}

Phases (each timed in `report["timings"]`, seconds): load, calibration (+ eval_data), allocation,
prune, eval, export. Every input is validated before any work; with `out`, everything is written
inside one atomic folder, so a failure leaves nothing behind.

Output folder (`out`):
    config.json, model.safetensors, tokenizer files   the pruned model, a Hugging Face PyTorch checkpoint (dense, or
                                                      sparse-bitmask compressed with save_format="compressed")
    masks/                                            orbax checkpoint: masks (True = kept) + sparsity targets
    report.json                                       settings, achieved sparsity, timings, perplexity, top-up info
    plots/*.png                                       sparsity per block / layer, top-up specific plots
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .config import ModelConfig
from .errors import SparsityWarning, UsageError
from .evaluation.data import DatasetSpec
from .outputs.files import output_lock, publish, remove_ours, sibling, temp_sibling
from .outputs.report import build_report, moe_info, write_report
from .pruning import Structure, check_method, check_sparsity, sequential_prune, sparsity_summary
from .runs import (
    DataSettings,
    EvalSettings,
    OutputSettings,
    Timer,
    check_dtype,
    check_model_fits,
    check_output,
    interrupted_run,
    resolve_model,
    run_settings,
)
from .topups import TOPUPS, Allocation, Options, PruneJob, Target, TopUp

#: The achieved sparsity may differ from the target by this much before prune warns (0.5 points).
SPARSITY_TOLERANCE = 0.005


@dataclass
class PruneResult:
    config: ModelConfig
    params: dict  # the pruned params
    masks: dict | None  # {"<block>.<module>": bool[out, in]}, True = kept (None when streamed: load_masks(out))
    dist: dict  # {"<block>.<module>": float | float64[out]}: the targets the pruning used
    report: dict  # what report.json holds
    out: Path | None  # the output folder, if one was written
    tokenizer: Any = None


# ---------------------------------------------------------------- validation (the checks every run shares: runs.py)

def check_topup(top_up: str) -> TopUp:
    return TOPUPS[top_up]  # raises with the valid names


def check_structure(structure: str | Structure, sparsity: float) -> tuple[Structure, float]:
    """(structure, sparsity): N:M prunes exactly N/M of every row, so the sparsity must be N/M (within 1e-6;
    the exact value is then used)."""
    st = structure if isinstance(structure, Structure) else Structure.parse(structure)
    if st.kind == "nm":
        exact = st.n / st.m
        if abs(sparsity - exact) > 1e-6:
            raise UsageError(f"structure {st} prunes exactly {st.n}/{st.m} = {exact:g} of every row; "
                             f"got sparsity {sparsity:g} (pass sparsity={exact:g})")
        sparsity = exact
    return st, sparsity


@dataclass(frozen=True, kw_only=True)
class PruneRequest:
    """Every argument of `prune`, checked (`check_request`)."""
    method: str
    sparsity: float
    topup: TopUp
    options: Options  # resolved: defaults filled in
    structure: Structure
    data: DataSettings  # seqlen None until the model is loaded (`DataSettings.for_model`)
    evaluation: EvalSettings
    output: OutputSettings  # out: the checked path
    dtype: str
    stream: bool
    resume: bool
    progress: bool

    @property
    def calib(self) -> DatasetSpec:
        return self.data.calib_specs()[0]

    @property
    def out(self) -> Path | None:
        return self.output.out

    def settings(self) -> dict:
        """What report.json records of the request (and a resumed run must repeat)."""
        return {"structure": str(self.structure), **self.data.to_dict(), "calib": str(self.calib),
                "eval_nsamples": self.evaluation.eval_nsamples, "dtype": self.dtype, "stream": self.stream,
                "options": self.options.to_dict()}


def check_request(model, *, method, sparsity, top_up, structure, options, progress, dtype, stream, resume,
                  **settings) -> PruneRequest:
    """Validate every argument of `prune` before any work (see its docstring); `settings`: the keywords of
    `DataSettings`, `EvalSettings` and `OutputSettings`."""
    sparsity = check_sparsity(sparsity)
    check_method(method)
    topup = check_topup(top_up)
    st, sparsity = check_structure(structure, sparsity)
    data, evaluation, output = run_settings(settings, "prune")
    if len(data.calib_specs()) != 1:
        raise UsageError(f"calib (--calib) must name one dataset, got {data.calib!r}")
    if options is not None and not isinstance(options, (dict, Options)):
        raise UsageError(f"options must be a dict, got {type(options).__name__}")
    resolved = topup.resolve(options, Target(method, sparsity, st, data.nsamples))
    check_dtype(dtype)
    stream = stream or resume
    if stream and output.out is None:
        raise UsageError("stream=True (--stream, --resume) writes the model block by block and needs an output folder")
    if output.save_format != "dense" and stream:
        raise UsageError(f"save_format {output.save_format!r} (--save-format) is written from memory, not block by "
                         "block: drop --stream, or write the streamed output and convert it with neuroal-jax export")
    output = check_output(output, model, data.calib_specs(), evaluation.specs())
    if output.out is not None:
        interrupted_run(output.out, stream and resume, output.force)
    return PruneRequest(method=method, sparsity=sparsity, topup=topup, options=resolved, structure=st, data=data,
                        evaluation=evaluation, output=output, dtype=dtype, stream=stream, resume=resume,
                        progress=progress)


# ---------------------------------------------------------------- pieces


def write_outputs(folder: Path, cfg: ModelConfig, params: dict, tokenizer, masks: dict, dist: dict,
                  make_report: Callable[[], dict], save_format: str = "dense") -> dict:
    """Model (HF PyTorch checkpoint, dense or compressed), masks/ (orbax), plots/ and report.json into an existing
    folder. `make_report` is called after the model and masks are written, so its timings include them."""
    from converters.hf import write_hf

    from .outputs.checkpoint import MASKS_DIR, save_masks
    write_hf(folder, cfg, params, tokenizer, save_format)
    save_masks(folder / MASKS_DIR, masks, dist)
    return write_report(folder, make_report())


# ---------------------------------------------------------------- where a run writes

class InMemoryRun:
    """A run that holds the pruned model in memory and writes `out` (if any) at the end, from a temporary
    folder renamed into place."""

    def __init__(self, req: PruneRequest, folder: Path | None):
        self.req, self.folder = req, folder

    def saved_allocation(self, record: dict) -> Allocation | None:
        return None

    def keep_allocation(self, allocation: Allocation) -> None:
        pass

    def prune(self, job: PruneJob, allocation: Allocation):
        routing = {}  # a mixture of experts' token counts per block and expert
        pruned, masks = sequential_prune(job.cfg, job.params, job.windows, allocation.dist, job.method, job.structure,
                                         job.batch_size, allocation.refine, job.progress, routing=routing)
        allocation.info.update(moe_info(job.cfg, routing))
        return pruned, masks, sparsity_summary(job.cfg, masks)

    def finish(self, cfg, pruned, tokenizer, masks, dist, make_report: Callable[[], dict]) -> tuple[dict, dict]:
        if self.folder is None:
            return make_report(), pruned
        report = write_outputs(self.folder, cfg, pruned, tokenizer, masks, dist, make_report,
                               self.req.output.save_format)
        publish(self.folder, self.req.out, "prune")
        return report, pruned


def writes_outputs() -> bool:
    """Whether this process writes output folders: always, except the processes other than 0 of a multi-process
    run (orbax, which writes the masks, stores NumPy data from process 0 only: it assumes one shared folder)."""
    import jax
    return jax.process_index() == 0


@contextlib.contextmanager
def run_destination(req: PruneRequest):
    """The run's destination: with `out`, the output lock is held, stale temporary folders of ours are removed,
    and an interrupted run's folder is discarded when `force` (unless resuming). In a multi-process run only
    process 0 writes `out` (`writes_outputs`); the others compute the same result in memory."""
    if req.out is None or not writes_outputs():
        yield InMemoryRun(req, None)
        return
    with output_lock(req.out):
        stale = interrupted_run(req.out, req.stream and req.resume, req.output.force)  # again: we hold the lock
        if stale is not None:
            remove_ours(stale)
        part = sibling(req.out, "partial")
        if req.stream:
            from .streaming import StreamedRun
            yield StreamedRun(req, part)
            return
        tmp = temp_sibling(req.out, "prune")
        try:
            yield InMemoryRun(req, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- the call

def prune(model, *, method: str = "wanda", sparsity: float = 0.5, top_up: str = "uniform",
          structure: str | Structure = "row", options: dict | None = None,
          calib: str = DataSettings.calib, nsamples: int = DataSettings.nsamples,
          seqlen: int | None = DataSettings.seqlen, seed: int = DataSettings.seed,
          batch_size: int = DataSettings.batch_size, moe_statistics: str = DataSettings.moe_statistics,
          eval: Sequence[str] | str = EvalSettings.eval,
          eval_nsamples: int | None = EvalSettings.eval_nsamples, out: str | os.PathLike | None = OutputSettings.out,
          force: bool = OutputSettings.force, save_format: str = OutputSettings.save_format,
          dtype: str = "float32", stream: bool = False, resume: bool = False, progress: bool = True) -> PruneResult:
    """Prune `model` one-shot with `method` scores and `top_up` sparsity allocation.

    model: spec string for `converters.load_model` (built-in name, .gguf, HF folder or Hub id), a
        LoadedModel, or a (ModelConfig, params) pair.
    method: magnitude | wanda | multiflow | sparsegpt.   top_up: a name in `TOPUPS`
        (uniform, owl, alphapruning, dsnot, dlp, neuroal).
    structure: "row" (per-row, default), "layer" or "N:M" (then sparsity must be N/M). With top-ups owl and
        neuroal N:M is mixed: a whole N_b per block with mean N, which may be fractional ("5.6:8" at 0.7).
    calib: calibration data spec (c4, wikitext2, ptb, pydoc, text:PATH, tokens:PATH.npy); `nsamples`
        windows of `seqlen` tokens (default: min(2048, the model's context); an error if it exceeds the context),
        sampled with `seed`. moe_statistics: a mixture of experts' expert statistics over the tokens "routed" to
        each expert, or over "all" tokens (docs/algorithm.md, "Mixture of experts").
    eval: perplexity test sets (same spec syntax), each on at most `eval_nsamples` windows of `seqlen`.
    options: the top-up's options, e.g. {"owl_m": 5, "owl_lambda": 0.08} (its options dataclass lists them);
        the report records every option's value, defaults included.
    out: write the output folder (atomically). An existing folder needs `force`, and is replaced only if
        neuroal-jax wrote it and it holds nothing else (`neuroal_jax.outputs.files`).
    dtype: "float32" or "bfloat16" weights and activations (statistics and scores stay float32).
    save_format: "dense" safetensors, or "compressed": compressed-tensors' sparse-bitmask format for the prunable
        layers (converters.compressed; needs the `compressed` extra; not with stream).
    stream: read the model and write `out` one block at a time (needs `out`; see neuroal_jax.streaming);
        the result's params then read their blocks lazily from `out`. resume: continue an interrupted
        streamed run of the same settings and inputs (implies stream).
    """
    req = check_request(model, method=method, sparsity=sparsity, top_up=top_up, structure=structure, options=options,
                        progress=progress, dtype=dtype, stream=stream, resume=resume, calib=calib, nsamples=nsamples,
                        seqlen=seqlen, seed=seed, batch_size=batch_size, moe_statistics=moe_statistics, eval=eval,
                        eval_nsamples=eval_nsamples,
                        out=out, force=force, save_format=save_format)
    timer = Timer()
    with run_destination(req) as run:
        with timer("load"):
            name, cfg, params, tokenizer, source = resolve_model(model, req.dtype, req.stream)
        cfg = req.data.configure(cfg)
        req = replace(req, data=req.data.for_model(cfg))
        check_model_fits(cfg, req.structure, req.data.seqlen, req.method, search=req.topup.name == "neuroal")
        windows, test_sets = load_data(req, tokenizer, cfg.vocab_size, timer)
        settings = {"model_source": source, "family": cfg.family, **req.settings()}
        record = {"model": name, "method": req.method, "top_up": req.topup.name, "sparsity": req.sparsity,
                  **settings}
        job = PruneJob(cfg, params, windows, req.sparsity, req.method, req.structure, req.options,
                       req.data.batch_size, req.progress)
        with timer("allocation"):
            allocation = run.saved_allocation({"settings": record, "inputs": input_fingerprint(
                source, params, req.calib, windows, test_sets) if req.stream else None})
            if allocation is None:
                allocation = req.topup(job)
                run.keep_allocation(allocation)
        with timer("prune"):
            pruned, masks, summary = run.prune(job, allocation)
        notes = sparsity_notes(req, summary)
        ppl = evaluate(cfg, pruned, test_sets, req, timer)
        export_started = time.perf_counter()

        def make_report() -> dict:
            timings = timer.rounded()
            if req.out is not None:
                timings["export"] = round(time.perf_counter() - export_started, 3)
            timings["total"] = round(sum(timings.values()), 3)
            return build_report(model=name, method=req.method, top_up=req.topup.name, target_sparsity=req.sparsity,
                                summary=summary, timings=timings, perplexity=ppl,
                                settings=settings,
                                dist=allocation.dist, info=allocation.info, notes=notes)

        report, pruned = run.finish(cfg, pruned, tokenizer, masks, allocation.dist, make_report)
    return PruneResult(cfg, pruned, masks, allocation.dist, report, req.out if writes_outputs() else None, tokenizer)


def load_data(req: PruneRequest, tokenizer, vocab_size: int, timer: Timer) -> tuple[np.ndarray, dict]:
    """Calibration windows and {eval spec: windows}, token ids checked against the vocabulary."""
    from .evaluation.data import calibration_windows, eval_windows
    with timer("calibration"):
        d = req.data
        windows = calibration_windows(req.calib, tokenizer, d.nsamples, d.seqlen, d.seed, vocab_size)
    test_sets = {}
    if req.evaluation.eval:
        with timer("eval_data"):
            test_sets = {s: eval_windows(s, tokenizer, d.seqlen, req.evaluation.eval_nsamples, vocab_size)
                         for s in req.evaluation.eval}
    return windows, test_sets


def input_fingerprint(source, params, calib: DatasetSpec, windows, test_sets) -> dict:
    """Digests of what a run reads: the model's files (sizes and modification times) or its in-memory weights,
    the calibration windows and every evaluation set's windows. A resumed run must see the same."""
    from .streaming import array_digest, files_digest, params_digest
    return {"model": files_digest(source) if source else params_digest(params),
            f"calibration windows of {calib}": array_digest(windows),
            **{f"evaluation windows of {s}": array_digest(w) for s, w in test_sets.items()}}


def evaluate(cfg, params, test_sets: dict, req: PruneRequest, timer: Timer) -> dict:
    from .evaluation.perplexity import perplexity
    ppl = {}
    if test_sets:
        with timer("eval"):
            for s, w in test_sets.items():
                ppl[s] = perplexity(cfg, params, w, batch_size=req.data.batch_size, progress=req.progress,
                                    desc=f"perplexity {s}")
    return ppl


def sparsity_notes(req: PruneRequest, summary: dict) -> list[str]:
    """A warning (also kept in the report) when the achieved sparsity misses the target by > 0.5 points."""
    miss = summary["sparsity"] - req.sparsity
    if abs(miss) <= SPARSITY_TOLERANCE:
        return []
    note = (f"achieved sparsity {summary['sparsity']:.4f} misses the target {req.sparsity:.4f} by "
            f"{100 * abs(miss):.2f} points (top-up {req.topup.name}: its per-layer targets, clipped to "
            "[0.01, 0.99] where the schedule leaves that range, are in report.json's 'distribution')")
    warnings.warn(note, SparsityWarning, stacklevel=3)
    return [note]
