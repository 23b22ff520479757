"""One call from a model to a pruned, evaluated, exported model.

    from neuroal_jax import prune
    result = prune("smollm2-135m", method="wanda", sparsity=0.5, top_up="owl",
                   calib="pydoc", nsamples=32, seqlen=256, eval=["pydoc"], out="runs/smol-owl")
    result.report["perplexity"]   # {"pydoc": ...}

Phases (each timed in `report["timings"]`, seconds): load, calibration (+ eval_data), allocation,
prune, eval, export. Every input is validated before any work; with `out`, everything is written
inside one atomic folder, so a failure leaves nothing behind.

Output folder (`out`):
    config.json, model.safetensors, tokenizer files   the pruned model, a Hugging Face PyTorch checkpoint
    masks/                                            orbax checkpoint: masks (True = kept) + sparsity targets
    report.json                                       settings, achieved sparsity, timings, perplexity, top-up info
    plots/*.png                                       sparsity per block / layer, top-up specific plots
"""
from __future__ import annotations

import contextlib
import importlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .allocation import ALLOCATIONS, PruneJob, get_allocation
from .config import DTYPES, ModelConfig
from .pruning import Structure, check_method, check_sparsity, sequential_prune, sparsity_summary

#: Modules that register top-ups in `neuroal_jax.allocation.ALLOCATIONS` when imported.
TOPUP_MODULES = ("neuroal_jax.allocation", "neuroal_jax.alphapruning", "neuroal_jax.dsnot", "neuroal_jax.search")
#: Top-ups that work with N:M structure (it fixes every layer's sparsity at N/M; DSnoT rejects N:M itself).
NM_TOPUPS = ("uniform",)


def load_topup_modules() -> list:
    """Import every module that registers a top-up; the ones not written yet are skipped."""
    loaded = []
    for name in TOPUP_MODULES:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError as e:
            if not (isinstance(e, ModuleNotFoundError) and e.name == name):  # exists, but an import inside fails
                warnings.warn(f"top-up module {name} could not be imported: {e}", stacklevel=2)
    return loaded


def available_topups() -> list[str]:
    """Names of the registered top-ups (after importing every top-up module)."""
    load_topup_modules()
    return list(ALLOCATIONS)


@dataclass
class PruneResult:
    config: ModelConfig
    params: dict  # the pruned params
    masks: dict | None  # {"<block>.<module>": bool[out, in]}, True = kept (None when streamed: load_masks(out))
    dist: dict  # {"<block>.<module>": float | float64[out]}: the targets the pruning used
    report: dict  # what report.json holds
    out: Path | None  # the output folder, if one was written
    tokenizer: Any = None


# ---------------------------------------------------------------- validation

def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _eval_specs(specs) -> list[str]:
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = specs.split(",")
    return [s.strip() for s in specs if s and s.strip()]


def check_topup(top_up: str) -> str:
    load_topup_modules()
    get_allocation(top_up)  # raises with the valid names
    return top_up


def check_structure(structure: str | Structure, sparsity: float, top_up: str) -> Structure:
    """Parse the structure; N:M fixes the sparsity at N/M, which only uniform-sparsity top-ups keep."""
    st = structure if isinstance(structure, Structure) else Structure.parse(structure)
    if st.kind == "nm":
        if abs(sparsity - st.n / st.m) > 1e-9:
            raise ValueError(f"structure {st} prunes exactly {st.n}/{st.m} = {st.n / st.m:g} of every row; "
                             f"got sparsity {sparsity:g} (pass sparsity={st.n / st.m:g})")
        if top_up not in NM_TOPUPS:
            raise ValueError(f"top-up {top_up!r} changes per-layer sparsity, which structure {st} fixes; "
                             f"with N:M use one of: {', '.join(NM_TOPUPS)}")
    return st


def check_model_fits(cfg: ModelConfig, params: dict, structure: Structure, seqlen: int) -> None:
    """Checks that need the model: context length, and N:M groups dividing every layer's inputs."""
    if seqlen > cfg.max_position_embeddings:
        raise ValueError(f"seqlen {seqlen} exceeds the model's context length {cfg.max_position_embeddings}; "
                         "pass a smaller seqlen")
    if structure.kind == "nm":
        from .models import family_of
        shapes = family_of(cfg).param_shapes(cfg)["blocks"]
        for b, block in enumerate(shapes):
            for name in family_of(cfg).prunable:
                inp = block[name]["weight"][1]
                if inp % structure.m:
                    raise ValueError(f"structure {structure}: layer {b}.{name} has {inp} input features, "
                                     f"not divisible by M={structure.m}")


def check_out(out, force: bool) -> Path | None:
    if out is None:
        return None
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"output folder {out} already exists; pass --force (force=True) to replace it")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    return out


# ---------------------------------------------------------------- pieces

def check_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of a --dtype name (weights and activations; statistics stay float32)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32)


def _cast(params: dict, dtype: np.dtype) -> dict:
    import jax
    import jax.numpy as jnp
    if params["embed"]["weight"].dtype == dtype:
        return params
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)


def resolve_model(model, dtype: str = "float32", stream: bool = False) -> tuple[str, ModelConfig, dict, Any, str | None]:
    """(name, config, params, tokenizer, source) of a spec string / path (the name is the spec as given),
    a LoadedModel, or a (config, params) pair; params in `dtype`. stream=True opens a spec with lazily
    read blocks (converters.stream.open_streamed)."""
    np_dtype = check_dtype(dtype)
    if isinstance(model, (str, os.PathLike)):
        if stream:
            from converters.stream import open_streamed as load_model
        else:
            from converters import load_model
        loaded = load_model(os.fspath(model), dtype=np_dtype)
        return os.fspath(model), loaded.config, loaded.params, loaded.tokenizer, _source(loaded)
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], ModelConfig):
        return "in-memory", model[0], _cast(model[1], np_dtype), None, None
    if hasattr(model, "config") and hasattr(model, "params"):
        return (str(getattr(model, "name", "in-memory")), model.config, _cast(model.params, np_dtype),
                getattr(model, "tokenizer", None), _source(model))
    raise ValueError(f"model must be a spec string, a LoadedModel or a (config, params) pair, got {type(model).__name__}")


def _source(loaded) -> str | None:
    src = getattr(loaded, "source", None)
    return None if src is None else os.fspath(src) if isinstance(src, os.PathLike) else str(src)


class Timer:
    """Accumulates wall time per phase: `with timer("prune"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def rounded(self) -> dict:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def write_outputs(folder: Path, cfg: ModelConfig, params: dict, tokenizer, masks: dict, dist: dict,
                  make_report: Callable[[], dict]) -> dict:
    """Model (HF PyTorch checkpoint), masks/ (orbax), plots/ and report.json into an existing empty folder.

    `make_report` is called after the model and masks are written, so its timings include them."""
    from converters.hf import export_hf

    from .checkpoint import MASKS_DIR, save_masks
    from .plots import save_plots
    from .report import write_json
    staging = folder / ".hf-export"
    export_hf(cfg, params, staging, tokenizer=tokenizer)
    for f in staging.iterdir():
        os.replace(f, folder / f.name)
    staging.rmdir()
    save_masks(folder / MASKS_DIR, masks, dist)
    report = make_report()
    save_plots(report, folder / "plots")
    write_json(folder / "report.json", report)
    return report


# ---------------------------------------------------------------- the call

def prune(model, *, method: str = "wanda", sparsity: float = 0.5, top_up: str = "uniform",
          structure: str | Structure = "row", calib: str = "c4", nsamples: int = 128, seqlen: int = 2048,
          seed: int = 0, out: str | os.PathLike | None = None, eval: Sequence[str] | str = (),
          eval_nsamples: int | None = None, force: bool = False, options: dict | None = None,
          batch_size: int = 8, progress: bool = True, dtype: str = "float32", stream: bool = False,
          resume: bool = False) -> PruneResult:
    """Prune `model` one-shot with `method` scores and `top_up` sparsity allocation.

    model: spec string for `converters.load_model` (built-in name, .gguf, HF folder or Hub id), a
        LoadedModel, or a (ModelConfig, params) pair.
    method: magnitude | wanda | multiflow | sparsegpt.   top_up: a name in `ALLOCATIONS`
        (uniform, owl, alphapruning, dsnot, neuroal when installed).
    structure: "row" (per-row, default), "layer" or "N:M" (then sparsity must be N/M).
    calib: calibration data spec (c4, wikitext2, ptb, pydoc, text:PATH, tokens:PATH.npy); `nsamples`
        windows of `seqlen` tokens (an error if seqlen exceeds the model's context), sampled with `seed`.
    eval: perplexity test sets (same spec syntax), each on at most `eval_nsamples` windows of `seqlen`.
    options: top-up options, e.g. {"owl_m": 5, "owl_lambda": 0.08}; recorded in the report.
    out: write the output folder (atomically; an existing folder needs `force`).
    dtype: "float32" or "bfloat16" weights and activations (statistics and scores stay float32).
    stream: read the model and write `out` one block at a time (needs `out`; see neuroal_jax.streaming);
        the result's params then read their blocks lazily from `out`. resume: continue an interrupted
        streamed run of the same settings (implies stream).
    """
    from .data import calibration_windows, eval_windows, parse_spec
    from .evaluation import perplexity
    from .report import build_report

    # -- validate everything before any work
    sparsity = check_sparsity(sparsity)
    check_method(method)
    check_topup(top_up)
    st = check_structure(structure, sparsity, top_up)
    nsamples, seqlen = _positive_int("nsamples", nsamples), _positive_int("seqlen", seqlen, 2)
    batch_size, seed = _positive_int("batch_size", batch_size), int(seed)
    if eval_nsamples is not None:
        eval_nsamples = _positive_int("eval_nsamples", eval_nsamples)
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"options must be a dict, got {type(options).__name__}")
    options = dict(options or {})
    specs = _eval_specs(eval)
    parse_spec(calib)
    for s in specs:
        parse_spec(s)
    np_dtype = check_dtype(dtype)
    stream = stream or resume
    if stream and out is None:
        raise ValueError("stream=True (--stream, --resume) writes the model block by block and needs an output folder")
    out = check_out(out, force)

    timer = Timer()
    with timer("load"):
        name, cfg, params, tokenizer, source = resolve_model(model, dtype, stream)
    check_model_fits(cfg, params, st, seqlen)
    settings = {"model_source": source, "family": cfg.family, "structure": str(st), "calib": calib,
                "nsamples": nsamples, "seqlen": seqlen, "seed": seed, "dtype": dtype, "stream": stream,
                "batch_size": batch_size, "eval_nsamples": eval_nsamples, "options": options}
    if stream:
        from . import streaming
        part, resumed = streaming.open_run(out, {"model": name, "method": method, "top_up": top_up,
                                                 "sparsity": sparsity, **settings}, force, resume)

    with timer("calibration"):
        windows = calibration_windows(calib, tokenizer, nsamples, seqlen, seed)
    if specs:
        with timer("eval_data"):
            test_sets = {s: eval_windows(s, tokenizer, seqlen, eval_nsamples) for s in specs}

    with timer("allocation"):
        allocation = streaming.load_allocation(part) if stream and resumed else None
        if allocation is None:
            job = PruneJob(cfg, params, windows, sparsity, method, st, options, batch_size, progress)
            allocation = get_allocation(top_up)(job)
            if stream and allocation.refine is None:  # a refining top-up (DSnoT) is rebuilt on resume
                streaming.save_allocation(part, allocation)
    with timer("prune"):
        if stream:
            summary = streaming.streamed_prune(cfg, params, windows, allocation.dist, method, st, batch_size,
                                               allocation.refine, progress, part, np_dtype)
            pruned, masks = streaming.reopen_pruned(cfg, params, part, np_dtype), None
        else:
            pruned, masks = sequential_prune(cfg, params, windows, allocation.dist, method, st, batch_size,
                                             allocation.refine, progress)
            summary = sparsity_summary(cfg, masks)

    ppl = {}
    if specs:
        with timer("eval"):
            for s, w in test_sets.items():
                ppl[s] = perplexity(cfg, pruned, w, batch_size=batch_size, progress=progress, desc=f"perplexity {s}")

    def make_report(export_started: float | None = None) -> dict:
        timings = timer.rounded()
        if export_started is not None:
            timings["export"] = round(time.perf_counter() - export_started, 3)
        timings["total"] = round(sum(timings.values()), 3)
        return build_report(model=name, method=method, top_up=top_up, target_sparsity=sparsity, summary=summary,
                            timings=timings, perplexity=ppl, settings=settings, dist=allocation.dist,
                            info=allocation.info)

    if out is None:
        report = make_report()
    elif stream:
        report = _finish_streamed(part, out, tokenizer, make_report)
        pruned = streaming.reopen_pruned(cfg, params, out, np_dtype)
    else:
        from .io_utils import atomic_dir
        t0 = time.perf_counter()
        with atomic_dir(out, force=force) as tmp:
            report = write_outputs(tmp, cfg, pruned, tokenizer, masks, allocation.dist, lambda: make_report(t0))
    return PruneResult(cfg, pruned, masks, allocation.dist, report, out, tokenizer)


def _finish_streamed(part: Path, out: Path, tokenizer, make_report: Callable[[], dict]) -> dict:
    """Tokenizer, report and plots into the finished run's folder, then rename it to `out`."""
    from .plots import save_plots
    from .report import write_json
    from .streaming import finish_run
    if tokenizer is not None:
        tokenizer.save_pretrained(str(part))
    report = make_report()
    save_plots(report, part / "plots")
    write_json(part / "report.json", report)
    finish_run(part, out)
    return report
