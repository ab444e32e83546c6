"""Small statistics (numpy, scipy): Student-t intervals over seeds, paired comparisons, within-group slopes, and ω²
hyperparameter importance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def t975(df: int) -> float:
    """Two-sided 95 % Student-t quantile t(0.975, df) (scipy; nan below one degree of freedom)."""
    return _t975(int(df))


@lru_cache(maxsize=1024)
def _t975(df: int) -> float:
    if df < 1:
        return math.nan
    from scipy.special import stdtrit  # the t quantile itself; far lighter to import than scipy.stats

    return float(stdtrit(df, 0.975))


def ci95_halfwidth(std: float | None, n: int) -> float | None:
    """Half-width of the 95 % t-interval of a mean of ``n`` replicates (None for one replicate)."""
    if std is None or n < 2 or (isinstance(std, float) and math.isnan(std)):
        return None
    return t975(n - 1) * std / math.sqrt(n)


@dataclass
class Paired:
    """A paired comparison a - b over matched units (cells x seeds): what a takeaway may claim from it."""

    effect: float  # mean of the signed differences a - b
    lo: float | None  # 95 % t-interval of that mean (None with fewer than two pairs)
    hi: float | None
    n: int  # pairs
    p: float | None  # two-sided p of the stated test
    test: str  # "paired t" or "Wilcoxon signed-rank"

    @property
    def clear(self) -> bool:
        """A difference is claimed only when its interval excludes 0."""
        return self.lo is not None and self.hi is not None and (self.lo > 0 or self.hi < 0)

    def text(self, unit: str = "") -> str:
        ci = "no interval (one pair)" if self.lo is None else f"95 % CI [{self.lo:+.3f}, {self.hi:+.3f}]"
        p = "" if self.p is None else f", {self.test} p={self.p:.2g}"
        return f"{self.effect:+.3f}{unit} ({ci}, n={self.n}{p})"


def paired(a: Sequence[float], b: Sequence[float]) -> Paired | None:
    """Signed mean difference a - b with its t-interval; the p-value from a paired t-test below 6 pairs and the
    Wilcoxon signed-rank test from 6 (its smallest exact p is 0.03 there), both from scipy."""
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return None
    mean = float(d.mean())
    if n < 2:
        return Paired(mean, None, None, n, None, "none")
    half = ci95_halfwidth(float(d.std(ddof=1)), n) or 0.0
    from scipy import stats as st

    if np.allclose(d, d[0]):
        p = 1.0 if d[0] == 0 else 0.0
        test = "paired t"
    elif n >= 6:
        p, test = float(st.wilcoxon(d).pvalue), "Wilcoxon signed-rank"
    else:
        p, test = float(st.ttest_1samp(d, 0.0).pvalue), "paired t"
    return Paired(mean, mean - half, mean + half, n, p, test)


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
