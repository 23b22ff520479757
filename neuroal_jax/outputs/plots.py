"""PNG plots of a prune report (matplotlib, Agg, no pyplot global state).

Plots form a registry: a plot is a function `report -> matplotlib Figure | None` (None = nothing to
show for this report, e.g. no OWL ratios), registered under its file stem:

    @register_plot("my_metric")
    def my_metric(report):
        if "my_metric" not in report:
            return None
        fig, ax = new_figure()
        ax.bar(*per_block(report["my_metric"]))
        block_axis(ax)
        return fig

`save_plots(report, folder)` writes every applicable plot as `<name>.png` and returns the paths.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..models.registry import split_key
from ..registry import Registry

PLOTS: Registry[Callable] = Registry("plot")
register_plot = PLOTS.register


def new_figure(width: float = 7.0, height: float = 3.5):
    """(Figure, Axes) on the Agg canvas, independent of pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def per_block(values) -> tuple[np.ndarray, np.ndarray]:
    """(block indices, values) from {"<b>": v}, {"<b>.<module>": v} (averaged per block) or a list."""
    if isinstance(values, (list, tuple)):
        return np.arange(len(values)), np.asarray(values, np.float64)
    groups: dict[int, list[float]] = {}
    for k, v in values.items():
        if v is None:
            continue
        groups.setdefault(split_key(k)[0], []).append(float(v))
    blocks = sorted(groups)
    return np.asarray(blocks), np.asarray([np.mean(groups[b]) for b in blocks])


def block_axis(ax) -> None:
    """Integer block ticks on the x axis."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("block")


def _title(report: dict, what: str) -> str:
    return f"{what} — {report.get('model', '')}, {report.get('method', '')} + {report.get('top_up', '')}"


# ---------------------------------------------------------------- core plots

@register_plot("block_sparsity")
def block_sparsity(report: dict):
    """Achieved sparsity per block (bars) and the target (dashed)."""
    blocks, vals = per_block(report["block_sparsity"])
    fig, ax = new_figure()
    ax.bar(blocks, vals, color="tab:blue")
    ax.axhline(report["target_sparsity"], color="k", ls="--", lw=1, label=f"target {report['target_sparsity']:.2f}")
    ax.set(ylabel="sparsity", title=_title(report, "sparsity per block"))
    block_axis(ax)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    return fig


@register_plot("layer_sparsity")
def layer_sparsity(report: dict):
    """Achieved sparsity per layer: heatmap, modules × blocks."""
    layers = report["layer_sparsity"]
    modules = list(dict.fromkeys(split_key(k)[1] for k in layers))
    blocks = sorted({split_key(k)[0] for k in layers})
    grid = np.full((len(modules), len(blocks)), np.nan)
    for k, v in layers.items():
        b, m = split_key(k)
        grid[modules.index(m), blocks.index(b)] = v
    fig, ax = new_figure(max(6.0, 0.25 * len(blocks) + 3), 0.35 * len(modules) + 1.8)
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=np.nanmin(grid), vmax=np.nanmax(grid) + 1e-9,
                   interpolation="nearest")
    ax.set_yticks(range(len(modules)), modules)
    step = max(1, len(blocks) // 16)
    ax.set_xticks(range(0, len(blocks), step), [str(b) for b in blocks[::step]])
    ax.set(xlabel="block", title=_title(report, "sparsity per layer"))
    fig.colorbar(im, ax=ax, label="sparsity")
    return fig


@register_plot("loss")
def loss(report: dict):
    """A recovery run's training loss per optimizer step (neuroal-jax finetune)."""
    if not report.get("loss_curve"):
        return None
    losses = np.asarray(report["loss_curve"], np.float64)
    fig, ax = new_figure()
    ax.plot(np.arange(1, len(losses) + 1), losses, color="tab:blue", lw=1, alpha=0.4, label="per step")
    window = max(1, len(losses) // 20)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window, len(losses) + 1), smooth, color="tab:blue", lw=2, label=f"mean of {window}")
    ax.set(xlabel="optimizer step", ylabel="training loss (mean NLL)",
           title=f"recovery training ({report.get('mode', '')}) — {report.get('model', '')}")
    ax.legend(loc="upper right")
    return fig


# ---------------------------------------------------------------- top-up specific (from the allocation's info)

@register_plot("owl_outlier_ratios")
def owl_outlier_ratios(report: dict):
    """OWL: outlier ratio (% of Wanda scores > M × mean) per block."""
    if not report.get("owl_outlier_ratios"):
        return None
    blocks, vals = per_block(report["owl_outlier_ratios"])
    fig, ax = new_figure()
    ax.bar(blocks, vals, color="tab:orange")
    ax.set(ylabel="outlier ratio (%)", title=_title(report, f"OWL outlier ratio (M={report.get('owl_m', '?')})"))
    block_axis(ax)
    return fig


@register_plot("alpha")
def alpha(report: dict):
    """AlphaPruning: heavy-tail exponent α per block (layer values averaged per block)."""
    if not report.get("alpha"):
        return None
    values = report["alpha"]
    if not isinstance(values, (dict, list, tuple)):
        return None
    blocks, vals = per_block(values)
    fig, ax = new_figure()
    ax.bar(blocks, vals, color="tab:green")
    ax.set(ylabel="α (ESD power-law exponent)", title=_title(report, "AlphaPruning α"))
    block_axis(ax)
    return fig


@register_plot("neuroal_alignment")
def neuroal_alignment(report: dict):
    """NeuroAL: alignment (lower = better) vs λ for the block and row steps, chosen λ marked."""
    curves = [(step, report.get(f"alignment_{step}"), report.get(f"lambda_{step}")) for step in ("block", "row")]
    curves = [c for c in curves if isinstance(c[1], list) and c[1]]
    if not curves:
        return None
    fig, ax = new_figure()
    for step, curve, chosen in curves:
        lams = np.asarray([r["lambda"] for r in curve], np.float64)
        vals = np.asarray([np.nan if r["alignment"] is None else r["alignment"] for r in curve], np.float64)
        line, = ax.plot(lams, vals, marker="o", ms=3, label=f"{step} step")
        if chosen is not None:
            i = int(np.argmin(np.abs(lams - float(chosen))))
            ax.plot([lams[i]], [vals[i]], marker="*", ms=12, color=line.get_color(), ls="none",
                    label=f"chosen λ={float(chosen):.2f}")
    ax.set(xlabel="λ", ylabel=f"alignment ({report.get('alignment_metric', 'neuron')})",
           title=_title(report, "NeuroAL alignment vs λ"))
    ax.legend()
    return fig


@register_plot("row_sparsity")
def row_sparsity(report: dict):
    """Per-row targets (NeuroAL's row step): per layer, the min, quartiles and max of its rows' sparsities."""
    spread = {k: v for k, v in (report.get("distribution") or {}).items() if isinstance(v, dict)}
    return row_spread_figure(spread, _title(report, "row sparsity per layer")) if spread else None


def row_spread_figure(spread: dict, title: str):
    """Box per layer from {key: {"min", "q1", "median", "q3", "max"}}: whiskers min–max, box the quartiles."""
    keys = list(spread)
    stats = [{"med": v["median"], "q1": v["q1"], "q3": v["q3"], "whislo": v["min"], "whishi": v["max"],
              "fliers": []} for v in spread.values()]
    fig, ax = new_figure(min(18.0, max(7.0, 0.07 * len(keys) + 3)), 3.8)
    ax.bxp(stats, positions=np.arange(len(keys)), widths=0.7, showfliers=False, manage_ticks=False,
           boxprops={"linewidth": 0.6}, whiskerprops={"linewidth": 0.6}, medianprops={"color": "tab:orange"})
    blocks = [split_key(k)[0] for k in keys]
    firsts = [i for i, b in enumerate(blocks) if i == 0 or b != blocks[i - 1]]
    step = max(1, len(firsts) // 16)
    ax.set_xticks(firsts[::step], [str(blocks[i]) for i in firsts[::step]])
    ax.set(xlabel="block (its layers left to right)", ylabel="row sparsity", title=title)
    return fig


# ---------------------------------------------------------------- writing

def save_plots(report: dict, folder: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    """Write every applicable registered plot (or only `names`) as folder/<name>.png."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or list(PLOTS):
        fig = PLOTS[name](report)
        if fig is None:
            continue
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written
