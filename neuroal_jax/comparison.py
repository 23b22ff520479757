"""Compare top-ups side by side: dense vs uniform / OWL / NeuroAL ... on one model, one table.

    neuroal-jax compare --model smollm2-135m --method wanda --sparsity 0.7 \
        --top-ups uniform,owl,neuroal --calib pydoc --eval pydoc --nsamples 32 --seqlen 256 --out runs/main

The model is loaded once; each top-up's pruned model, masks, report and plots go to OUT/<top-up>/,
the table (the result's `.report`) to OUT/summary.json and a combined block-sparsity plot to OUT/comparison.png.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from .api import check_request, check_topup, prune
from .errors import UsageError
from .evaluation.data import short_name
from .options import comma_list
from .outputs.files import output_folder, write_json
from .runs import DataSettings, EvalSettings, OutputSettings, check_dtype, check_output, resolve_model


def check_topups(top_ups) -> list[str]:
    names = comma_list(top_ups)
    if not names:
        raise UsageError(f"top_ups (--top-ups) must name at least one top-up, got {top_ups!r}")
    if len(set(names)) != len(names):
        raise UsageError(f"top_ups (--top-ups) repeats a name: {top_ups!r}")
    return names


@dataclass(frozen=True)
class CompareResult:
    report: dict  # what summary.json holds: {"settings": {...}, "rows": [{"top_up", "sparsity", "perplexity", ...}]}
    out: Path | None  # the output folder, if one was written


def compare(model, *, method: str = "wanda", sparsity: float = 0.5, top_ups=("uniform", "owl", "neuroal"),
            structure: str = "row", options: dict | None = None,
            calib: str = DataSettings.calib, nsamples: int = DataSettings.nsamples,
            seqlen: int | None = DataSettings.seqlen, seed: int = DataSettings.seed,
            batch_size: int = DataSettings.batch_size, moe_statistics: str = DataSettings.moe_statistics,
            eval=EvalSettings.eval,
            eval_nsamples: int | None = EvalSettings.eval_nsamples, out=OutputSettings.out,
            force: bool = OutputSettings.force, save_format: str = OutputSettings.save_format,
            dtype: str = "float32", progress: bool = True) -> CompareResult:
    """The dense model and each top-up's pruned model on the same test sets, one row each.

    The same keywords, with the same defaults, as `prune` (`eval` must name at least one test set);
    `options` go to the top-ups that take them (each top-up gets the keys its options dataclass has). `structure`
    as `prune` (N:M: the top-ups that allocate it, e.g. uniform, owl and neuroal with a mixed N:M).
    Everything is validated before the dense model is evaluated."""
    top_ups = check_topups(top_ups)
    common = dict(method=method, sparsity=sparsity, structure=structure, calib=calib, nsamples=nsamples,
                  seqlen=seqlen, seed=seed, batch_size=batch_size, moe_statistics=moe_statistics, eval=eval,
                  eval_nsamples=eval_nsamples,
                  save_format=save_format, progress=progress, dtype=dtype)
    per_topup, requests = {}, []
    for t in top_ups:
        fields = {f.name for f in check_topup(t).options.option_fields()}
        per_topup[t] = {k: v for k, v in (options or {}).items() if k in fields}
        requests.append(check_request(model, top_up=t, options=per_topup[t], stream=False, resume=False, **common))
    if not requests[0].evaluation.eval:
        raise UsageError("compare needs at least one evaluation set (eval, --eval)")
    unused = set(options or {}) - {k for o in per_topup.values() for k in o}
    if unused:
        raise UsageError(f"option(s) {', '.join(sorted(unused))} belong to none of the top-ups {', '.join(top_ups)}")
    req = requests[0]
    out = check_output(OutputSettings.from_dict({"out": out, "force": force}, "compare"), model,
                       req.data.calib_specs(), req.evaluation.specs()).out
    with contextlib.ExitStack() as stack:  # with out, its lock is held from the start
        tmp = None if out is None else stack.enter_context(output_folder(out, force=force, kind="compare"))
        summary, reports = _compare(model, top_ups, per_topup, common, req, tmp)
        if tmp is not None:
            write_json(tmp / "summary.json", summary)
            comparison_plot(reports, tmp / "comparison.png")
    return CompareResult(summary, out)


def _compare(model, top_ups, per_topup: dict, common: dict, req, folder: Path | None) -> tuple[dict, list]:
    """(the summary, the top-ups' reports): the dense model evaluated, then each top-up pruned into `folder`."""
    from converters import LoadedModel, load_model

    from .evaluation.data import calibration_windows, eval_windows
    from .evaluation.perplexity import perplexity

    loaded = model if isinstance(model, LoadedModel) else load_model(model, dtype=check_dtype(req.dtype))
    name, cfg, params, tokenizer, _ = resolve_model(loaded, req.dtype)
    d, e = req.data.for_model(cfg), req.evaluation
    common["seqlen"] = d.seqlen
    calibration_windows(req.calib, tokenizer, d.nsamples, d.seqlen, d.seed, cfg.vocab_size)  # checked before any work
    test_sets = {s: eval_windows(s, tokenizer, d.seqlen, e.eval_nsamples, cfg.vocab_size) for s in e.eval}
    dense = {s: perplexity(cfg, params, w, d.batch_size, progress=req.progress, desc=f"dense perplexity {s}")
             for s, w in test_sets.items()}
    rows = [{"top_up": "dense", "sparsity": 0.0, "perplexity": dense}]

    reports = []
    for top_up in top_ups:
        t0 = time.perf_counter()
        r = prune(loaded, top_up=top_up, options=per_topup[top_up],
                  out=None if folder is None else folder / top_up, **common)
        reports.append(r.report)
        rows.append({"top_up": top_up, "sparsity": r.report["sparsity"], "perplexity": r.report["perplexity"],
                     "lambda_block": r.report.get("lambda_block"), "lambda_row": r.report.get("lambda_row"),
                     "seconds": round(time.perf_counter() - t0, 1)})
    settings = {"model": name, "method": req.method, "target_sparsity": req.sparsity,
                "structure": str(req.structure), **d.to_dict(), "calib": str(req.calib),
                "eval_nsamples": e.eval_nsamples}
    return {"settings": settings, "rows": rows}, reports


def comparison_plot(reports: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    for r in reports:
        blocks = sorted(r["block_sparsity"], key=int)
        ax.plot([int(b) for b in blocks], [r["block_sparsity"][b] for b in blocks], marker=".", label=r["top_up"])
    ax.set_xlabel("block")
    ax.set_ylabel("achieved sparsity")
    ax.set_title(f"{reports[0]['model']}: {reports[0]['method']} at {reports[0]['target_sparsity']:.0%}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_table(summary: dict) -> str:
    specs = list(summary["rows"][0]["perplexity"])
    heads = {s: "ppl " + short_name(s) for s in specs}
    width = {s: max(14, len(h) + 2) for s, h in heads.items()}  # every column keeps two spaces before its value
    head = (f"{'top-up':<14}{'sparsity':>9}" + "".join(f"{h:>{width[s]}}" for s, h in heads.items())
            + f"{'λ block':>9}{'λ row':>7}{'s':>7}")
    lines = [head, "-" * len(head)]
    for r in summary["rows"]:
        lam = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
        lines.append(f"{r['top_up']:<14}{r['sparsity']:>9.4f}"
                     + "".join(f"{r['perplexity'][s]:>{width[s]}.3f}" for s in specs)
                     + f"{lam(r.get('lambda_block')):>9}{lam(r.get('lambda_row')):>7}{r.get('seconds', 0):>7.0f}")
    return "\n".join(lines)
