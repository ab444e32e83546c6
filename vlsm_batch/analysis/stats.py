"""Small statistics in numpy: Student-t intervals, within-group slopes, and ω² hyperparameter importance."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Two-sided 95 % Student-t quantiles t(0.975, df) for df = 1..30; 1.96 beyond.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df  # ≈ t within 0.002 for df > 30


def ci95_halfwidth(std: float | None, n: int) -> float | None:
    """Half-width of the 95 % t-interval of a mean of ``n`` replicates (None for one replicate)."""
    if std is None or n < 2 or (isinstance(std, float) and math.isnan(std)):
        return None
    return t975(n - 1) * std / math.sqrt(n)


def within_slope(x: Sequence[float], y: Sequence[float], groups: Sequence[object]) -> tuple[float, float, int]:
    """Least-squares slope of y on x with one intercept per group (fixed effects); (slope, 95 % half-width, n).

    Centring x and y inside each group removes level differences between datasets, so the slope pools how
    y changes with x *within* each dataset. The half-width is nan when there are too few points.
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    ga = np.asarray([str(g) for g in groups])
    xc, yc = np.empty_like(xa), np.empty_like(ya)
    levels = np.unique(ga)
    for g in levels:
        m = ga == g
        xc[m], yc[m] = xa[m] - xa[m].mean(), ya[m] - ya[m].mean()
    sxx = float((xc**2).sum())
    if sxx == 0:
        return math.nan, math.nan, len(xa)
    slope = float((xc * yc).sum() / sxx)
    dof = len(xa) - len(levels) - 1
    if dof < 1:
        return slope, math.nan, len(xa)
    resid = yc - slope * xc
    se = math.sqrt(float((resid**2).sum()) / dof / sxx)
    return slope, t975(dof) * se, len(xa)


def levels_of(values: Sequence[object], max_levels: int = 4) -> np.ndarray:
    """Group labels for an ANOVA: categories as they are; numbers with many values in quantile bins."""
    vals = list(values)
    distinct = set(vals)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
    if not numeric or len(distinct) <= max_levels:
        return np.asarray([str(v) for v in vals])
    a = np.asarray(vals, float)
    k = max(2, min(max_levels, len(a) // 3))
    edges = np.unique(np.quantile(a, np.linspace(0, 1, k + 1)[1:-1]))
    return np.searchsorted(edges, a, side="right").astype(str)


def omega_squared(labels: np.ndarray, y: np.ndarray, clip: bool = True) -> float | None:
    """ω² = (SS_between − (k−1)·MS_within) / (SS_total + MS_within), clipped at 0; None when undefined.

    Averages over cells should use ``clip=False`` and clip the mean: clipping each noisy estimate first would
    bias a parameter that does not matter upwards.

    The bias-corrected share of the variance of y explained by the labels: a parameter that does not matter
    scores about 0 whatever the number of levels, unlike the raw η².
    """
    n = len(y)
    cats = np.unique(labels)
    k = len(cats)
    if k < 2 or n <= k:
        return None
    mean = y.mean()
    sst = float(((y - mean) ** 2).sum())
    ssb = float(sum((labels == c).sum() * (y[labels == c].mean() - mean) ** 2 for c in cats))
    msw = (sst - ssb) / (n - k)
    denom = sst + msw
    if denom <= 0:
        return None
    w = (ssb - (k - 1) * msw) / denom
    return max(0.0, w) if clip else w
