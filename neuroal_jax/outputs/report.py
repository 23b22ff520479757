"""The prune report: a JSON-safe dict written atomically as `report.json`, and its text summary."""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from ..models.moe import dense_layers
from .files import json_safe, write_json


def write_report(folder: Path, report: dict, plots: list[str] | None = None) -> dict:
    """report.json and plots/*.png (every applicable plot, or only `plots`) into `folder`."""
    from .plots import save_plots
    save_plots(report, folder / "plots", plots)
    write_json(folder / "report.json", report)
    return report


def versions() -> dict:
    """Versions of the packages that decide the numbers."""
    import jax

    from .. import __version__
    out = {"neuroal_jax": __version__, "jax": jax.__version__, "jaxlib": _version("jaxlib"),
           "numpy": np.__version__, "python": platform.python_version(), "backend": jax.default_backend()}
    return out


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(package)
    except Exception:
        return None


def distribution_summary(dist: dict) -> dict:
    """Target sparsity per layer: a float, or the spread of a per-row vector (after NeuroAL's row step; with
    the row structure every row gets exactly its target): {"mean", "min", "q1", "median", "q3", "max"}."""
    out = {}
    for k, v in dist.items():
        if np.ndim(v) == 0:
            out[k] = float(v)
        else:
            a = np.asarray(v, np.float64)
            q1, med, q3 = np.percentile(a, [25, 50, 75])
            out[k] = {"mean": float(a.mean()), "min": float(a.min()), "q1": float(q1), "median": float(med),
                      "q3": float(q3), "max": float(a.max())}
    return out


def moe_info(cfg, routing: dict) -> dict:
    """report.json's mixture-of-experts entries from the pruning pass's `routing` record ({block: {expert layer:
    (tokens routed to it, tokens its statistics are over)}}, `pruning.sequential_prune(..., routing=)`):
    moe_statistics, moe_tokens {block: {expert: calibration tokens routed to it}} (they sum to tokens × top-k) and
    moe_fallback, the experts ("<block>.<expert>") no calibration token reached, whose statistics fell back to all
    tokens, and moe_dense, the linear modules of every block that stay dense (routers). {} for a dense model."""
    if not routing:
        return {}
    tokens, fallback = {}, []
    for b, layers in sorted(routing.items()):
        for layer, (routed, covered) in layers.items():
            expert = layer.rsplit(".", 1)[0]  # "mlp.experts.5.gate_proj" -> "mlp.experts.5"
            tokens.setdefault(str(b), {})[expert] = int(routed)
            if routed == 0 and cfg.moe_statistics == "routed" and f"{b}.{expert}" not in fallback:
                fallback.append(f"{b}.{expert}")
    return {"moe_statistics": cfg.moe_statistics, "moe_tokens": tokens, "moe_fallback": fallback,
            "moe_dense": list(dense_layers(cfg))}


#: Report keys that the allocation's `info` may not overwrite (besides the settings).
CORE_KEYS = ("model", "method", "top_up", "target_sparsity", "sparsity", "layer_sparsity", "block_sparsity",
             "timings", "perplexity", "versions", "distribution", "warnings")


def build_report(*, model: str, method: str, top_up: str, target_sparsity: float, summary: dict,
                 timings: dict, perplexity: dict, settings: dict, dist: dict, info: dict,
                 notes: list[str] = ()) -> dict:
    """The report dict: core results, the settings (structure, calib, nsamples, ...) at the top level, the
    run's warnings (`notes`), and the allocation's `info` merged in (an info key that clashes with a core or
    settings key is kept as "info.<key>")."""
    report = {
        "model": model, "method": method, "top_up": top_up, "target_sparsity": float(target_sparsity),
        "sparsity": summary["sparsity"], "perplexity": perplexity, "timings": timings, **settings,
        "versions": versions(), "block_sparsity": summary["block_sparsity"],
        "layer_sparsity": summary["layer_sparsity"], "distribution": distribution_summary(dist),
        "warnings": list(notes),
    }
    taken = set(CORE_KEYS) | set(settings)
    for k, v in (info or {}).items():
        report[f"info.{k}" if k in taken else k] = v
    return json_safe(report)


def _search_pick(report: dict, step: str) -> str:
    """"block λ 0.1 (margin 0.07 % to λ 0.15, a near-tie)": one step of NeuroAL's search as its report holds it."""
    text = f"{step} λ {report[f'lambda_{step}']:g}"
    if report.get(f"margin_{step}") is None:
        return text
    tie = ", a near-tie" if report[f"near_tie_{step}"] else ""
    return text + f" (margin {report[f'margin_{step}']:.2%} to λ {report[f'runner_up_{step}']:g}{tie})"


def format_summary(report: dict) -> str:
    """A short human-readable summary: what was done, achieved sparsity, timings, perplexities."""
    lines = [f"model {report['model']}  method {report['method']}  top-up {report['top_up']}  "
             f"structure {report.get('structure', 'row')}",
             f"sparsity: target {report['target_sparsity']:.4f}  achieved {report['sparsity']:.4f} "
             f"(over prunable layers; blocks {min(report['block_sparsity'].values()):.3f}"
             f"–{max(report['block_sparsity'].values()):.3f})"]
    picks = [_search_pick(report, step) for step in ("block", "row") if report.get(f"lambda_{step}") is not None]
    if picks:
        lines.append(f"NeuroAL ({report.get('alignment_metric')}): " + "; ".join(picks))
    t = report.get("timings", {})
    lines.append("timings: " + "  ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    ppl = report.get("perplexity") or {}
    if ppl:
        width = max(len("dataset"), *(len(k) for k in ppl))
        lines += ["", f"{'dataset':<{width}}  perplexity", f"{'-' * width}  ----------"]
        lines += [f"{k:<{width}}  {v:10.4f}" if v is not None else f"{k:<{width}}  {'nan':>10}"
                  for k, v in ppl.items()]
    return "\n".join(lines)
