"""The sweep's plots (PNG, Agg): what every λ would have produced and which λ each metric picks.

    perplexity.png       perplexity vs λ per evaluation set, each metric's pick and the oracle marked
                         (the paper's Fig. 3); grid: a heat map over (block λ, row λ)
    metrics.png          every metric's alignment vs λ, min–max normalised, on one axis, with perplexity
                         (with several runs, both per run: run-<i>/perplexity.png, run-<i>/metrics.png)
    search_samples.png   perplexity at each metric's pick vs |Cλ| (mean ± std over seeds), several |Cλ| only
    profiles.png         several block profiles: perplexity vs λ per profile on one axis (the first calibration,
                         seed and |Cλ|), each profile's pick under the first metric marked
    row_sparsity.png     row and grid steps: per layer, the spread of row sparsities at the first run's pick
                         under the first metric
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..outputs.plots import new_figure, row_spread_figure
from ..outputs.report import distribution_summary

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _x(run: dict) -> tuple[str, np.ndarray]:
    """The λ axis of a block or row run: its key ("lambda_block" or "lambda_row") and per-candidate values."""
    key = "lambda_row" if run["candidates"][0]["lambda_row"] is not None else "lambda_block"
    return key, np.asarray([c[key] for c in run["candidates"]], np.float64)


def _label(key: str) -> str:
    return key.replace("lambda_", "") + " λ"


def _title(result: dict, what: str) -> str:
    s = result["settings"]
    return f"{what}: {s['model']}, {s['method']} at {s['sparsity']:.0%}"


def perplexity_curves(result: dict, run: dict):
    specs = result["settings"]["eval"]
    if not all(c["perplexity"] for c in run["candidates"]):
        return None
    key, x = _x(run)
    fig, axes = new_figure(7.0, 3.2 * len(specs))
    axes.remove()
    for j, spec in enumerate(specs):
        ax = fig.add_subplot(len(specs), 1, j + 1)
        y = np.asarray([c["perplexity"][spec] for c in run["candidates"]])
        ax.plot(x, y, color="tab:blue", marker=".", label="final perplexity")
        o = run["summary"]["oracle"][spec]
        ax.plot([o[key]], [o["perplexity"]], "k*", ms=13, label="oracle")
        for i, (m, e) in enumerate(run["summary"]["metrics"].items()):
            ax.plot([e["pick"][key]], [e["perplexity"][spec]], ls="none",
                    marker=MARKERS[i % len(MARKERS)], ms=9, mfc="none", mew=1.6, label=f"{m} pick")
        ax.set(xlabel=_label(key), ylabel=f"perplexity ({spec})", title=_title(result, "final perplexity vs λ"))
        ax.legend(fontsize=8)
    return fig


def perplexity_grid(result: dict, run: dict):
    specs = result["settings"]["eval"]
    cands = run["candidates"]
    if not all(c["perplexity"] for c in cands):
        return None
    blocks = sorted({c["lambda_block"] for c in cands})
    rows = sorted({c["lambda_row"] for c in cands})
    fig, axes = new_figure(7.5, 4.0 * len(specs))
    axes.remove()
    for j, spec in enumerate(specs):
        ax = fig.add_subplot(len(specs), 1, j + 1)
        grid = np.full((len(blocks), len(rows)), np.nan)
        for c in cands:
            grid[blocks.index(c["lambda_block"]), rows.index(c["lambda_row"])] = c["perplexity"][spec]
        im = ax.imshow(np.log(grid), origin="lower", aspect="auto", cmap="viridis_r")
        for i, (m, e) in enumerate(run["summary"]["metrics"].items()):
            ax.plot(rows.index(e["pick"]["lambda_row"]), blocks.index(e["pick"]["lambda_block"]), ls="none",
                    marker=MARKERS[i % len(MARKERS)], ms=10, mfc="none", mec="w", mew=1.6, label=f"{m} pick")
        o = run["summary"]["oracle"][spec]
        ax.plot(rows.index(o["lambda_row"]), blocks.index(o["lambda_block"]), "r*", ms=12, label="oracle")
        ax.set_xticks(range(len(rows)), [f"{v:g}" for v in rows], fontsize=7)
        ax.set_yticks(range(len(blocks)), [f"{v:g}" for v in blocks], fontsize=7)
        ax.set(xlabel="row λ", ylabel="block λ", title=_title(result, f"log perplexity ({spec})"))
        fig.colorbar(im, ax=ax, label="log perplexity")
        ax.legend(fontsize=7, loc="upper right")
    return fig


def metric_curves(result: dict, run: dict):
    """Every metric vs λ, min–max normalised (and perplexity, dashed): where their minima sit."""
    key, x = _x(run)
    order = np.argsort(x, kind="stable")

    def norm(v):
        v = np.asarray(v, np.float64)
        span = np.ptp(v)
        return (v - v.min()) / span if span > 0 else np.zeros_like(v)

    fig, ax = new_figure()
    for i, m in enumerate(run["summary"]["metrics"]):
        ax.plot(x[order], norm([c["alignment"][m] for c in run["candidates"]])[order],
                marker=MARKERS[i % len(MARKERS)], ms=4, label=m)
    if all(c["perplexity"] for c in run["candidates"]):
        for spec in result["settings"]["eval"]:
            ppl = np.log([c["perplexity"][spec] for c in run["candidates"]])
            ax.plot(x[order], norm(ppl)[order], "k--", lw=1, label=f"log perplexity ({spec})")
    ax.set(xlabel=_label(key), ylabel="min–max normalised", title=_title(result, "alignment metrics vs λ"))
    ax.legend(fontsize=8)
    return fig


def search_samples_curve(result: dict):
    rows = result.get("sensitivity") or []
    sizes = sorted({r["search_samples"] for r in rows})
    if len(sizes) < 2:
        return None
    specs, calibs = result["settings"]["eval"], result["settings"]["calib"]
    fig, ax = new_figure()
    profiles = result["settings"]["block_profile"]
    for spec in specs:
        for calib in calibs:
            tag = "" if len(specs) == len(calibs) == 1 else f" ({spec}, calibration {calib})"
            for i, (metric, profile) in enumerate((m, p) for m in dict.fromkeys(r["metric"] for r in rows)
                                                  for p in profiles):
                pts = sorted((r for r in rows if r["metric"] == metric and r["calib"] == calib
                              and r["block_profile"] == profile), key=lambda r: r["search_samples"])
                name = metric if len(profiles) == 1 else f"{metric}, {profile} profile"
                ax.errorbar([r["search_samples"] for r in pts], [r["perplexity"][spec]["mean"] for r in pts],
                            yerr=[r["perplexity"][spec]["std"] or 0.0 for r in pts], marker=MARKERS[i % len(MARKERS)],
                            capsize=3, alpha=0.8, label=name + tag)
            oracle = [r["summary"]["oracle"][spec] for r in result["runs"] if r["calib"] == calib]
            if all(oracle):
                ax.axhline(np.mean([o["perplexity"] for o in oracle]), color="k", ls="--", lw=1,
                           label="oracle" + tag + (" (mean over seeds)" if len(oracle) > len(sizes) else ""))
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(v) for v in sizes])
    ax.set(xlabel="|Cλ| (search windows)", ylabel="perplexity at the pick",
           title=_title(result, "sensitivity to |Cλ|"))
    ax.legend(fontsize=8)
    return fig


def row_spread(result: dict, run: dict, dist: dict | None):
    if dist is None:
        return None
    spread = {k: v for k, v in distribution_summary(dist).items() if isinstance(v, dict)}
    metric = next(iter(run["summary"]["metrics"]))
    return row_spread_figure(spread, _title(result, f"row sparsity per layer at the {metric} pick")) if spread else None


def profile_curves(result: dict):
    """Perplexity vs λ of every block profile, from the runs of the first calibration, seed and |Cλ|."""
    s, runs = result["settings"], result["runs"]
    if len(s["block_profile"]) < 2:
        return None
    first = runs[0]
    same = [r for r in runs if (r["calib"], r["seed"], r["search_samples"]) ==
            (first["calib"], first["seed"], first["search_samples"])]
    fig, axes = new_figure(7.0, 3.2 * len(s["eval"]))
    axes.remove()
    for j, spec in enumerate(s["eval"]):
        ax = fig.add_subplot(len(s["eval"]), 1, j + 1)
        for i, run in enumerate(same):
            key, x = _x(run)
            done = [k for k, c in enumerate(run["candidates"]) if c["perplexity"]]
            y = [run["candidates"][k]["perplexity"][spec] for k in done]
            line, = ax.plot(x[done], y, marker=MARKERS[i % len(MARKERS)], ms=4, label=run["block_profile"])
            metric, e = next(iter(run["summary"]["metrics"].items()))
            ax.plot([e["pick"][key]], [e["perplexity"][spec]], ls="none", marker="o", ms=11, mfc="none", mew=1.8,
                    color=line.get_color())
        ax.set_yscale("log")
        ax.set(xlabel=_label(key), ylabel=f"perplexity ({spec}, log scale)",
               title=_title(result, f"block profiles (circled: the {metric} pick)"))
        ax.legend(fontsize=8, title="block profile")
    return fig


def save_sweep_plots(result: dict, folder: Path, pick_dist: dict | None = None) -> list[Path]:
    """Every plot as folder/<name>.png: one run's plots at the top; with several runs (settings), each run's in
    folder/run-<i>/ (i = its index in result["runs"]) and the |Cλ| plot at the top. `pick_dist`: the first run's
    distribution at the first metric's pick (row and grid steps), for the row-spread plot."""
    grid = result["settings"]["step"] == "grid"
    runs = result["runs"]
    figures = {}
    for i, run in enumerate(runs):
        where = "" if len(runs) == 1 else f"run-{i:02d}/"
        titled = result if len(runs) == 1 else {**result, "settings": {**result["settings"], "model": (
            f"{result['settings']['model']} ({run['calib']}, seed {run['seed']}, |Cλ| {run['search_samples']}, "
            f"{run['block_profile']} profile)")}}
        figures[where + "perplexity"] = (perplexity_grid if grid else perplexity_curves)(titled, run)
        figures[where + "metrics"] = None if grid else metric_curves(titled, run)
    figures["search_samples"] = search_samples_curve(result)
    figures["profiles"] = profile_curves(result)
    figures["row_sparsity"] = row_spread(result, runs[0], pick_dist)
    written = []
    for name, fig in figures.items():
        if fig is not None:
            path = folder / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=110)
            written.append(path)
    return written
