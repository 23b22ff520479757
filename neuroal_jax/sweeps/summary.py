"""How good each metric's pick is: the summary per metric, the sensitivity over settings, the text table and
the CSV rows. Pure functions of the JSON records in sweep.json.

Per metric and evaluation set:
    pick      the candidate with the lowest summed alignment (the first on ties), as the search chooses
    oracle    the candidate with the lowest held-out perplexity (the first on ties)
    regret    ppl(pick) / ppl(oracle) − 1                (0 = the metric picked the oracle)
    spearman  Spearman's ρ between the metric's alignment and perplexity over the candidates (ties get
              average ranks; None when either is constant)
    margin    (runner-up − pick) / |pick| of the metric's values, and the runner-up's λs
    within_noise  with several seeds: the candidates whose gap to the pick is within its spread over the seeds
    near_tie  a candidate within noise (several seeds), else a margin below picks.NEAR_TIE
"""
from __future__ import annotations

import math

import numpy as np

from ..evaluation.data import short_name
from ..topups.neuroal.picks import margin, near_tie, pick, runner_up, within_noise


def _lambdas(c: dict) -> dict:
    """A candidate's λs (and its block profile, in a pool of several profiles' candidates)."""
    profile = {"block_profile": c["block_profile"]} if "block_profile" in c else {}
    return {**profile, "lambda_block": c["lambda_block"], "lambda_row": c["lambda_row"]}


def spearman(x, y) -> float | None:
    from scipy.stats import spearmanr
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def oracle(candidates: list, spec: str) -> dict | None:
    """The candidate with the lowest perplexity on `spec`, or None when some candidate was not evaluated."""
    ppl = [c["perplexity"] and c["perplexity"][spec] for c in candidates]
    if any(v is None for v in ppl):
        return None
    i = int(np.argmin(ppl))
    return {**_lambdas(candidates[i]), "perplexity": ppl[i]}


def metric_summary(candidates: list, metrics, specs) -> dict:
    """{metric: {"pick": {λs}, "alignment", "perplexity": {spec}, "regret": {spec}, "spearman": {spec}}}."""
    best = {s: oracle(candidates, s) for s in specs}
    out = {}
    for m in metrics:
        align = [c["alignment"][m] for c in candidates]
        i, j, gap = pick(align), runner_up(align), margin(align)
        chosen = candidates[i]["perplexity"] or {}
        entry = {"pick": _lambdas(candidates[i]), "alignment": align[i], "margin": gap,
                 "runner_up": None if j is None else _lambdas(candidates[j]), "near_tie": near_tie(gap),
                 "perplexity": {s: chosen.get(s) for s in specs}, "regret": {}, "spearman": {}}
        for s in specs:
            known = best[s] is not None
            entry["regret"][s] = chosen[s] / best[s]["perplexity"] - 1 if known else None
            entry["spearman"][s] = spearman(align, [c["perplexity"][s] for c in candidates]) if known else None
        out[m] = entry
    return {"metrics": out, "oracle": best}


def mark_noise(runs: list, metrics) -> None:
    """Set each run's "within_noise" (λs) and "near_tie" per metric from the runs that differ only in the seed
    (same calibration, profile, |Cλ| and candidates); runs without such partners are left as they are."""
    groups: dict = {}
    for r in runs:
        lams = tuple((c["lambda_block"], c["lambda_row"]) for c in r["candidates"])
        groups.setdefault((r["calib"], r["block_profile"], r["search_samples"], lams), []).append(r)
    for group in groups.values():
        if len(group) < 2:
            continue
        for m in metrics:
            close = within_noise([[c["alignment"][m] for c in r["candidates"]] for r in group])
            for r, ks in zip(group, close):
                entry = r["summary"]["metrics"][m]
                entry["within_noise"] = [_lambdas(r["candidates"][k]) for k in ks]
                entry["near_tie"] = near_tie(entry["margin"], ks)


def pooled_profiles(runs: list, metrics, specs) -> list:
    """With several block profiles: per (calibration, seed, |Cλ|), every profile's candidates in one pool and its
    summary, so each metric's pick, the oracle and the regret are over profiles and λs together."""
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["calib"], r["seed"], r["search_samples"]), []).append(r)
    out = []
    for (calib, seed, n), group in groups.items():
        if len(group) > 1:
            pool = [{**c, "block_profile": r["block_profile"]} for i, r in enumerate(group) for c in r["candidates"]
                    if i == 0 or c["lambda_block"] != 0]  # λ 0 is the uniform distribution in every profile
            out.append({"calib": calib, "seed": seed, "search_samples": n,
                        "block_profiles": [r["block_profile"] for r in group],
                        "summary": metric_summary(pool, metrics, specs)})
    return out


def sensitivity(runs: list, metrics, specs) -> list:
    """Per (calibration, block profile, |Cλ|) and metric: the picks and their perplexities per seed, mean ± std over
    the seeds (sample std, ddof = 1; None for one seed)."""
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["calib"], r["block_profile"], r["search_samples"]), []).append(r)
    rows = []
    for (calib, profile, n), group in groups.items():
        for m in metrics:
            picks = [g["summary"]["metrics"][m] for g in group]
            row = {"calib": calib, "block_profile": profile, "search_samples": n, "metric": m,
                   "seeds": [g["seed"] for g in group],
                   "picks": [p["pick"] for p in picks], "perplexity": {}}
            for s in specs:
                vals = np.asarray([p["perplexity"][s] for p in picks], np.float64)
                row["perplexity"][s] = {"values": vals.tolist(), "mean": float(vals.mean()),
                                        "std": float(vals.std(ddof=1)) if len(vals) > 1 else None}
            rows.append(row)
    return rows


# ---------------------------------------------------------------- text and CSV

def _lam(v) -> str:
    return "-" if v is None else f"{v:g}"


def _pair(lams: dict) -> str:
    lb, lr = lams["lambda_block"], lams["lambda_row"]
    profile = f"{lams['block_profile']} " if "block_profile" in lams else ""
    return profile + (_lam(lb) if lr is None else f"{_lam(lb)}, {_lam(lr)}")


def _num(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _width(names, header: str) -> int:
    """A left-aligned column wide enough for every name and the header, with two spaces after it."""
    return max(len(header), *map(len, names)) + 2


def format_summary(run: dict, specs) -> str:
    """The per-metric table of one run (one setting)."""
    names = {s: short_name(s) for s in specs}
    summary = run["summary"]
    w, wm = _width(names.values(), "eval"), _width(summary["metrics"], "metric")
    wl = max(12, 2 + max(len(_pair(x)) for x in [*(e["pick"] for e in summary["metrics"].values()),
                                                  *filter(None, summary["oracle"].values())]))
    head = (f"{'metric':<{wm}}{'eval':<{w}}{'pick λ':>{wl}}{'ppl at pick':>13}{'oracle λ':>{wl}}{'oracle ppl':>12}"
            f"{'regret':>9}{'ρ':>8}{'margin':>9}")
    lines = [head, "-" * len(head)]
    for m, e in summary["metrics"].items():
        for s in specs:
            o = summary["oracle"][s]
            lines.append(f"{m:<{wm}}{names[s]:<{w}}{_pair(e['pick']):>{wl}}{_num(e['perplexity'][s], '.3f'):>13}"
                         f"{'-' if o is None else _pair(o):>{wl}}{_num(o and o['perplexity'], '.3f'):>12}"
                         f"{_num(e['regret'][s], '.2%'):>9}{_num(e['spearman'][s], '.3f'):>8}"
                         f"{_num(e['margin'], '.2%'):>9}{' *' if e['near_tie'] else ''}")
    ties = [near_tie_line(m, e) for m, e in summary["metrics"].items() if e["near_tie"]]
    return "\n".join(lines + (["* near-tie, the pick may move with the CPU's rounding or the windows:", *ties]
                                if ties else []))


def near_tie_line(metric: str, e: dict) -> str:
    if "within_noise" in e:
        return (f"  {metric}: λ {_pair(e['pick'])}; within the spread over seeds: "
                + ", ".join(_pair(p) for p in e["within_noise"]))
    return f"  {metric}: λ {_pair(e['pick'])}; runner-up λ {_pair(e['runner_up'])} at {e['margin']:.2%}"


def format_sensitivity(rows: list, specs) -> str:
    names = {s: short_name(s) for s in [*specs, *(r["calib"] for r in rows)]}
    wc, we = _width([names[r["calib"]] for r in rows], "calib"), _width([names[s] for s in specs], "eval")
    wp = _width(["; ".join(_pair(p) for p in r["picks"]) for r in rows], "picks (per seed)")
    wm = _width([r["metric"] for r in rows], "metric")
    head = (f"{'calib':<{wc}}{'profile':<13}{'|Cλ|':>5}  {'metric':<{wm}}{'eval':<{we}}{'picks (per seed)':<{wp}}"
            f"{'ppl mean ± std':>20}")
    lines = [head, "-" * len(head)]
    for r in rows:
        picks = "; ".join(_pair(p) for p in r["picks"])
        for s in specs:
            p = r["perplexity"][s]
            spread = f"{p['mean']:.3f}" + ("" if p["std"] is None else f" ± {p['std']:.3f}")
            lines.append(f"{names[r['calib']]:<{wc}}{r['block_profile']:<13}{r['search_samples']:>5}  "
                         f"{r['metric']:<{wm}}{names[s]:<{we}}{picks:<{wp}}{spread:>20}")
    return "\n".join(lines)


def csv_rows(runs: list, metrics, specs) -> tuple[list, list]:
    """(header, rows): one row per setting and candidate."""
    header = (["calib", "seed", "block_profile", "search_samples", "lambda_block", "lambda_row", "sparsity"]
              + [f"alignment_{m}" for m in metrics] + [f"ppl_{s}" for s in specs])
    rows = []
    for r in runs:
        for c in r["candidates"]:
            ppl = c["perplexity"] or {}
            rows.append([r["calib"], r["seed"], r["block_profile"], r["search_samples"], c["lambda_block"],
                         c["lambda_row"], c["sparsity"]]
                        + [c["alignment"][m] for m in metrics] + [ppl.get(s) for s in specs])
    return header, rows
