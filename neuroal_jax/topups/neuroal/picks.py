"""How a metric chooses among λ candidates, and how decisive that choice is (docs/selection.md, *Margins*).

    pick          the candidate with the lowest summed alignment (the first on ties)
    margin        (runner-up − pick) / |pick|: how far the pick is from a tie (the absolute gap when the pick's
                  value is 0)
    within_noise  with the same candidates scored on several window sets (sweep --seeds): the candidates whose
                  gap to the pick is at most the spread of that gap over the window sets
    near-tie      another candidate within noise, or, with one window set, a margin below NEAR_TIE
"""
from __future__ import annotations

import numpy as np

# A pick closer than this to its runner-up (relative) is reported as a near-tie when no noise was measured. Over
# 3 calibration seeds (docs/selection.md, Margins), a candidate's gap to the pick varies by a median 0.5 % of the
# pick's value for the steadiest metric (rel_l2; neuron 1.0 %, output_kl 1.9 %): a smaller margin is within it.
NEAR_TIE = 0.005


def pick(totals) -> int:
    """The candidate a metric chooses: the lowest summed alignment, the first on ties."""
    return int(np.argmin(totals))


def runner_up(totals) -> int | None:
    """The candidate with the lowest value after the pick (None with one candidate)."""
    v = np.asarray(totals, np.float64)
    if len(v) < 2:
        return None
    order = np.argsort(v, kind="stable")  # ties keep their order, as pick's
    return int(order[1])


def margin(totals) -> float | None:
    """(runner-up − pick) / |pick| (None with one candidate)."""
    second = runner_up(totals)
    if second is None:
        return None
    v = np.asarray(totals, np.float64)
    best = v[pick(v)]
    return float((v[second] - best) / (abs(best) or 1.0))


def within_noise(values) -> list[list[int]]:
    """values [S, K]: the same K candidates' values on S window sets. For each set, the candidates other than its
    pick whose gap to the pick is at most that gap's sample standard deviation over the S sets."""
    v = np.asarray(values, np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ValueError(f"within_noise needs [S >= 2, K] values, got shape {v.shape}")
    out = []
    for row in v:
        p = pick(row)
        gaps = v - v[:, [p]]  # [S, K] each candidate's gap to this set's pick, on every set
        noise = gaps.std(axis=0, ddof=1)  # [K]
        out.append([k for k in range(v.shape[1]) if k != p and row[k] - row[p] <= noise[k]])
    return out


def near_tie(margin_value: float | None, close: list | None = None) -> bool:
    """A near-tie: some candidate within noise (when noise was measured), else a margin below NEAR_TIE."""
    if close is not None:
        return bool(close)
    return margin_value is not None and margin_value < NEAR_TIE
