"""`finetune`: recover a pruned model's quality with training that keeps every pruned weight at exactly zero.

    from neuroal_jax import finetune
    result = finetune("runs/smol-neuroal", data="pydoc", steps=200, seqlen=256, eval=["pydoc"],
                      out="runs/smol-neuroal-ft")
    result.report["perplexity_before"], result.report["perplexity_after"]

The masks come from the model folder's `masks/` (a `neuroal-jax prune` output), or with mask_from_zeros=True
from the model's own zero weights (any Hugging Face folder, GGUF or built-in model).

While it runs, `.<out>.partial/` next to `out` holds run.json (settings and digests of the inputs) and
checkpoints/ (orbax: the trainable weights, the optimizer state and the loss curve every `save_every` steps);
an interrupted run continues from its last checkpoint with resume=True (`--resume`), to the same final weights
as an uninterrupted run. The output folder, written atomically like `prune`'s:

    config.json, model.safetensors, tokenizer   the trained model (dense, or sparse-bitmask with save_format)
    masks/                                      the masks it kept (orbax, as `prune` writes them)
    report.json                                 settings, loss curve, perplexity before / after, sparsity before /
                                                after, tokens, time, peak memory
    plots/loss.png                              the loss curve
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import UsageError
from ..evaluation.data import DatasetSpec, parse_spec
from ..options import flag_of
from ..outputs.files import output_lock, remove_ours, sibling
from ..pruning.targets import prunable_weights
from ..runs import (
    DataSettings,
    EvalSettings,
    OutputSettings,
    Timer,
    check_dtype,
    check_output,
    interrupted_run,
    model_path,
    resolve_model,
    settings_of,
)
from .loop import TrainingDiverged
from .settings import FinetuneSettings

CHECKPOINTS = "checkpoints"


@dataclass
class FinetuneResult:
    config: ModelConfig
    params: dict  # the trained model (LoRA merged)
    masks: dict  # {"<block>.<layer>": bool [out, in]}, True = kept
    report: dict
    out: Path | None


@dataclass(frozen=True, kw_only=True)
class FinetuneRequest:
    """Every argument of `finetune`, checked (`check_request`)."""
    settings: FinetuneSettings  # resolved
    data: DatasetSpec  # the training text
    windows: DataSettings  # seqlen only (None until the model is loaded): the training settings sample the windows
    evaluation: EvalSettings
    output: OutputSettings  # out: the checked path
    dtype: str
    mask_from_zeros: bool
    allow_mask_mismatch: bool
    resume: bool
    progress: bool

    @property
    def out(self) -> Path | None:
        return self.output.out

    def record(self) -> dict:
        """What report.json records of the request (and a resumed run must repeat)."""
        return {"data": str(self.data), "seqlen": self.windows.seqlen, "eval_nsamples": self.evaluation.eval_nsamples,
                "dtype": self.dtype, "mask_from_zeros": self.mask_from_zeros,
                "allow_mask_mismatch": self.allow_mask_mismatch, **self.settings.to_dict()}


# ---------------------------------------------------------------- checks before any work

def check_request(model, *, data, seqlen, dtype, mask_from_zeros, allow_mask_mismatch, resume, progress,
                  settings: dict, **run) -> FinetuneRequest:
    """Validate every argument of `finetune` before any work; `run`: the keywords of `EvalSettings` and
    `OutputSettings`."""
    s = FinetuneSettings.from_dict(settings, "finetune").resolved(None)
    check_given_settings(s, settings)
    if mask_from_zeros and allow_mask_mismatch:
        raise UsageError("--allow-mask-mismatch applies to the masks of masks/; with --mask-from-zeros the masks are "
                         "the weights' own zeros: give one of them")
    data_spec = parse_spec(data)
    windows = settings_of(DataSettings, {"seqlen": seqlen}, "finetune")
    evaluation, output = (settings_of(cls, run, "finetune") for cls in (EvalSettings, OutputSettings))
    check_dtype(dtype)
    output = check_output(output, model, [data_spec], evaluation.specs(), "--data")
    if resume and output.out is None:
        raise UsageError("resume=True (--resume) continues an interrupted run of an output folder; give out (--out)")
    if output.out is not None:
        interrupted_run(output.out, resume, output.force, "--resume")
    req = FinetuneRequest(settings=s, data=data_spec, windows=windows, evaluation=evaluation, output=output,
                          dtype=dtype, mask_from_zeros=bool(mask_from_zeros),
                          allow_mask_mismatch=bool(allow_mask_mismatch), resume=resume, progress=progress)
    check_masks_source(model, req)
    return req


def check_given_settings(s: FinetuneSettings, given: dict) -> None:
    """Settings that would do nothing are refused: the LoRA options without --mode lora."""
    lora = [k for k in ("lora_rank", "lora_alpha") if given.get(k) is not None]
    if lora and s.mode != "lora":
        shown = ", ".join(f"{flag_of(k)} {given[k]}" for k in lora)
        raise UsageError(f"{shown}: LoRA options apply to --mode lora only, and the mode is {s.mode}; drop them or "
                         "pass --mode lora")


def check_masks_source(model, req: FinetuneRequest) -> None:
    """A model without masks needs mask_from_zeros; masks must fit the model's weights; LoRA's rank its layers.
    Reads only config.json and masks/ of a folder."""
    from converters.hf import read_config

    from ..models import family_of
    from ..outputs.checkpoint import MASKS_DIR, load_masks
    path = model_path(model)
    folder = Path(path) if path and Path(path).is_dir() else None
    if not req.mask_from_zeros and (folder is None or not (folder / MASKS_DIR).exists()):
        raise UsageError(f"{model} has no {MASKS_DIR}/ folder (it is not a neuroal-jax prune output): pass "
                         "--mask-from-zeros (mask_from_zeros=True) to keep its zero weights at zero instead")
    if folder is None or not (folder / "config.json").exists():
        return
    cfg = read_config(folder)
    shapes = prunable_weights(cfg, family_of(cfg).param_shapes(cfg)["blocks"])
    if not req.mask_from_zeros:
        check_mask_shapes(load_masks(folder), shapes, folder / MASKS_DIR)
    check_lora_rank(req.settings, shapes)


def check_mask_shapes(masks: dict, shapes: dict[str, tuple], where) -> None:
    missing = [k for k in shapes if k not in masks]
    unknown = [k for k in masks if k not in shapes]
    wrong = [f"{k} {tuple(np.shape(masks[k]))} (weight {tuple(shapes[k])})" for k in shapes
             if k in masks and tuple(np.shape(masks[k])) != tuple(shapes[k])]
    if missing or unknown or wrong:
        parts = ([f"no mask for {', '.join(missing[:4])}"] if missing else []) + (
            [f"masks for no layer: {', '.join(unknown[:4])}"] if unknown else []) + (
            [f"shapes differ: {', '.join(wrong[:4])}"] if wrong else [])
        raise UsageError(f"the masks in {where} do not match the model's prunable weights: " + "; ".join(parts))


def check_lora_rank(s: FinetuneSettings, shapes: dict[str, tuple]) -> None:
    if s.mode != "lora":
        return
    smallest = min(min(shape) for shape in shapes.values())
    if s.lora_rank > smallest:
        name = next(k for k, v in shapes.items() if min(v) == smallest)
        raise UsageError(f"option lora_rank (--lora-rank) {s.lora_rank} exceeds the smaller side of layer {name} "
                         f"{shapes[name]}; valid: 1 to {smallest}")


# ---------------------------------------------------------------- pieces

def model_masks(cfg: ModelConfig, params: dict, model, req: FinetuneRequest) -> tuple[dict, dict]:
    """(masks, their sparsity targets): the folder's masks/ (which must agree with the weights' zeros unless
    allow_mask_mismatch), or the weights' nonzero entries (of which there must be some zeros)."""
    from ..outputs.checkpoint import MASKS_DIR, load_distribution, load_masks
    zeros = nonzero(cfg, params)
    if req.mask_from_zeros:
        if all(m.all() for m in zeros.values()):
            raise UsageError(f"--mask-from-zeros: {model} has no zero in its prunable weights, so nothing is pruned "
                             "and there is no mask to keep; prune it first (neuroal-jax prune)")
        return zeros, {}
    folder = Path(model_path(model))
    masks = load_masks(folder)
    check_mask_shapes(masks, {k: np.shape(w) for k, w in zeros.items()}, folder / MASKS_DIR)
    if not req.allow_mask_mismatch:
        check_masks_match_weights(masks, zeros, folder / MASKS_DIR)
    return masks, load_distribution(folder)


def check_masks_match_weights(masks: dict, nonzeros: dict, where: Path) -> None:
    """The masks must be the weights' own zeros: no pruned entry holds a non-zero weight, no kept entry a zero."""
    pruned_nonzero = {k: int((~masks[k] & nz).sum()) for k, nz in nonzeros.items()}
    kept_zero = {k: int((masks[k] & ~nz).sum()) for k, nz in nonzeros.items()}
    bad, extra = sum(pruned_nonzero.values()), sum(kept_zero.values())
    if bad or extra:
        first = next(k for k in nonzeros if pruned_nonzero[k] or kept_zero[k])
        total = sum(m.size for m in masks.values())
        raise UsageError(f"the masks in {where} disagree with the model's weights: "
                         f"{bad:,} pruned entries hold non-zero "
                         f"weights and {extra:,} kept entries are zero, of {total:,} (first in layer {first}); "
                         "training would change the sparsity from the weights' to the masks'. Use the masks of the "
                         "prune that wrote these weights, --mask-from-zeros to keep the weights' own zeros, or "
                         "--allow-mask-mismatch to apply these masks anyway")


def nonzero(cfg: ModelConfig, params: dict) -> dict:
    """{"<block>.<layer>": bool [out, in]}: where the prunable weights are not exactly 0."""
    return {k: np.asarray(w) != 0 for k, w in prunable_weights(cfg, params["blocks"]).items()}


def zeros_summary(cfg: ModelConfig, params: dict) -> dict:
    """The sparsity summary (pruning.sparsity_summary) of the prunable weights' exact zeros."""
    from ..pruning import sparsity_summary
    return sparsity_summary(cfg, nonzero(cfg, params))


def peak_memory() -> dict:
    """The process's peak host memory (RSS) and, on an accelerator, the device's peak bytes in use."""
    import resource

    import jax
    out = {"host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
    return out


def perplexities(cfg, params, test_sets: dict, batch_size: int, progress: bool, when: str) -> dict:
    from ..evaluation.perplexity import perplexity
    return {spec: perplexity(cfg, params, w, batch_size=batch_size, progress=progress, desc=f"perplexity {spec} "
                                                                                            f"({when})")
            for spec, w in test_sets.items()}


# ---------------------------------------------------------------- the call

def finetune(model, *, data: str = DataSettings.calib, seqlen: int | None = DataSettings.seqlen,
             eval=EvalSettings.eval, eval_nsamples: int | None = EvalSettings.eval_nsamples,
             out: str | os.PathLike | None = OutputSettings.out, force: bool = OutputSettings.force,
             save_format: str = OutputSettings.save_format, dtype: str = "float32", mask_from_zeros: bool = False,
             allow_mask_mismatch: bool = False, resume: bool = False, progress: bool = True,
             **settings) -> FinetuneResult:
    """Train `model` on windows of `data` with its masks held fixed; the pruned entries stay exactly 0.

    model: a neuroal-jax prune output folder (masks from its masks/, which must agree with the weights' zeros
        unless allow_mask_mismatch), or with mask_from_zeros any model spec with zeros in its prunable weights
        (built-in name, .gguf, HF folder, Hub id), a LoadedModel or a (ModelConfig, params) pair.
    data: training text, the same specs as prune's calib (c4, wikitext2, ptb, pydoc, text:PATH, tokens:PATH.npy):
        steps × accumulate × batch_size windows of `seqlen` tokens (default: min(2048, the model's context)),
        sampled with `seed`.
    eval: perplexity test sets, measured before and after training, on at most `eval_nsamples` windows.
    settings: the options of `FinetuneSettings` (mode, train, steps, batch_size, accumulate, lr, warmup,
        min_lr_ratio, weight_decay, clip, lora_rank, lora_alpha, save_every, seed).
    dtype: the model's weights and activations; trained weights keep a float32 copy and float32 optimizer state.
    save_format: "dense" or "compressed" (compressed-tensors' sparse-bitmask, converters.compressed).
    out, force: as in `prune`. resume: continue the interrupted run of `out` (same settings and inputs).
    """
    req = check_request(model, data=data, seqlen=seqlen, eval=eval, eval_nsamples=eval_nsamples, dtype=dtype,
                        mask_from_zeros=mask_from_zeros, allow_mask_mismatch=allow_mask_mismatch,
                        save_format=save_format, out=out, force=force, resume=resume, progress=progress,
                        settings=settings)
    with contextlib.ExitStack() as stack:
        if req.out is not None:
            stack.enter_context(output_lock(req.out))
            stale = interrupted_run(req.out, req.resume, req.output.force, "--resume")  # again: we hold the lock
            if stale is not None:
                remove_ours(stale)
        try:
            return _run(model, req)
        except TrainingDiverged:  # its checkpoints would only diverge again: nothing is kept to resume
            if req.out is not None and sibling(req.out, "partial").exists():
                remove_ours(sibling(req.out, "partial"))
            raise


def _run(model, req: FinetuneRequest) -> FinetuneResult:
    import jax

    from ..evaluation.data import calibration_windows, eval_windows
    from ..outputs.report import versions
    from ..streaming import open_run
    from .loop import train
    from .train import block_masks, init_trainable, merged

    timer, s = Timer(), req.settings
    with timer("load"):
        name, cfg, params, tokenizer, source = resolve_model(model, req.dtype)
        masks, dist = model_masks(cfg, params, model, req)
    check_lora_rank(s, {k: tuple(np.shape(m)) for k, m in masks.items()})
    seqlen = req.windows.for_model(cfg).seqlen
    with timer("data"):
        windows = calibration_windows(req.data, tokenizer, s.windows, seqlen, s.seed, cfg.vocab_size, "training",
                                      "steps × accumulate × batch_size (--steps × --accumulate × --batch-size)")
        test_sets = {x: eval_windows(x, tokenizer, seqlen, req.evaluation.eval_nsamples, cfg.vocab_size)
                     for x in req.evaluation.eval}
    record = {"model": name, "model_source": source, "family": cfg.family, **req.record(), "seqlen": seqlen}
    part = sibling(req.out, "partial") if req.out is not None else None
    if part is not None:
        open_run(part, {"settings": record, "inputs": input_digests(source, params, masks, windows, test_sets)},
                 req.resume)
    before = zeros_summary(cfg, params)
    with timer("eval_before"):
        ppl_before = perplexities(cfg, params, test_sets, s.batch_size, req.progress, "before")
    device_masks = block_masks(cfg, masks)
    with timer("train"):
        trainable, progress = train(cfg, s, params, init_trainable(cfg, params, s), device_masks, windows,
                                    part / CHECKPOINTS if part is not None else None, req.progress)
        trained = jax.device_get(merged(params, trainable, device_masks, s))  # NumPy, for the writers
    after = zeros_summary(cfg, trained)
    with timer("eval_after"):
        ppl_after = perplexities(cfg, trained, test_sets, s.batch_size, req.progress, "after")
    tokens = s.windows * seqlen
    report = {
        **record, "perplexity_before": ppl_before, "perplexity_after": ppl_after,
        "sparsity_before": before["sparsity"], "sparsity_after": after["sparsity"],
        "layer_sparsity_before": before["layer_sparsity"], "layer_sparsity_after": after["layer_sparsity"],
        "loss_curve": progress.losses, "tokens": tokens, "train_seconds": round(progress.seconds, 3),
        "first_step_seconds": progress.first_step_seconds,
        "tokens_per_second": tokens / progress.seconds if progress.seconds else None,
        "trainable_parameters": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(trainable))),
        "prunable_layers": len(masks), "memory": peak_memory(),
        "save_format": req.output.save_format, "timings": timer.rounded(), "versions": versions(),
    }
    if req.out is not None:
        report = write_outputs(req, part, cfg, trained, tokenizer, masks, dist, report)
    return FinetuneResult(cfg, trained, masks, report, req.out)


def input_digests(source, params, masks: dict, windows, test_sets: dict) -> dict:
    """Digests of what the run reads (a resumed run must see the same): model, masks, training and test windows."""
    from ..streaming import array_digest, files_digest, params_digest
    return {"model": files_digest(source) if source else params_digest(params),
            "masks": params_digest(masks), "training windows": array_digest(windows),
            **{f"evaluation windows of {x}": array_digest(w) for x, w in test_sets.items()}}


def write_outputs(req: FinetuneRequest, part: Path, cfg, params, tokenizer, masks, dist, report: dict) -> dict:
    """The output folder, built in a temporary sibling and renamed into place; then the run's partial folder goes."""
    import shutil

    from converters.hf import write_hf

    from ..outputs.checkpoint import MASKS_DIR, save_masks
    from ..outputs.files import publish, remove_ours, temp_sibling
    from ..outputs.report import write_report
    tmp = temp_sibling(req.out, "finetune")
    try:
        t0 = time.perf_counter()
        write_hf(tmp, cfg, params, tokenizer, req.output.save_format)
        save_masks(tmp / MASKS_DIR, masks, dist)
        report["timings"]["export"] = round(time.perf_counter() - t0, 3)
        report = write_report(tmp, report, ["loss"])
        publish(tmp, req.out, "finetune")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    remove_ours(part)
    return report
