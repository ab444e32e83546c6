"""Small statistics (numpy, scipy.special): Student-t intervals over seeds, paired and Welch comparisons, per-unit
slopes, within-group slopes, and ω² hyperparameter importance. scipy.stats is not imported: its import alone took
longer than every takeaway of a 10,000-trial study together."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


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
    """A comparison a − b with its 95 % interval and n: what a takeaway may claim from it.

    Paired over matched units (cells × seeds) by default; ``groups`` holds (n_a, n_b) for an unpaired (Welch)
    comparison of two sets of units (e.g. medical vs natural datasets), whose ``n`` is then n_a + n_b.
    """

    effect: float  # mean of the signed differences a − b (unpaired: difference of the means)
    lo: float | None  # 95 % t-interval of that effect (None with too few units)
    hi: float | None
    n: int  # pairs (unpaired: units in all)
    p: float | None  # two-sided p of the stated test
    test: str  # "paired t", "Welch t", or what the caller states
    groups: tuple[int, int] | None = None

    @property
    def clear(self) -> bool:
        """A difference is claimed only when its interval excludes 0."""
        return self.lo is not None and self.hi is not None and (self.lo > 0 or self.hi < 0)

    def text(self, unit: str = "") -> str:
        n = f"n={self.groups[0]}+{self.groups[1]}" if self.groups else f"n={self.n}"
        if self.lo is None:
            ci = f"no interval ({'one unit on a side' if self.groups else 'one pair'})"
        else:
            ci = f"95 % CI [{self.lo:+.3f}, {self.hi:+.3f}]"
        p = "" if self.p is None else f", {self.test} p={self.p:.2g}"
        return f"{self.effect:+.3f}{unit} ({ci}, {n}{p})"


def t_pvalue(t: float, dof: float) -> float:
    """Two-sided p of a t statistic (scipy.special: the t distribution without importing scipy.stats)."""
    from scipy.special import stdtr

    return float(2 * stdtr(dof, -abs(t)))


def paired(a: Sequence[float], b: Sequence[float], test: str = "paired t") -> Paired | None:
    """Signed mean difference a − b over pairs, its 95 % t-interval and the paired t-test's two-sided p.

    The interval and the p-value come from the same t statistic, so "the interval excludes 0" and "p < 0.05" never
    disagree (a rank test's p beside a t-interval could). ``test`` names the units in the sentence.
    """
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return None
    mean = float(d.mean())
    if n < 2:
        return Paired(mean, None, None, n, None, test)
    sd = float(d.std(ddof=1))
    half = ci95_halfwidth(sd, n) or 0.0
    if sd == 0 or np.allclose(d, d[0]):
        p = 1.0 if mean == 0 else 0.0
    else:
        p = t_pvalue(mean / (sd / math.sqrt(n)), n - 1)
    return Paired(mean, mean - half, mean + half, n, p, test)


def welch(a: Sequence[float], b: Sequence[float], test: str = "Welch t") -> Paired | None:
    """Difference of means a − b of two independent sets of units, with the Welch 95 % interval and p.

    For units that cannot be paired (the medical and the natural datasets are different datasets); each side
    needs two units for an interval.
    """
    xa, xb = np.asarray(a, float), np.asarray(b, float)
    xa, xb = xa[np.isfinite(xa)], xb[np.isfinite(xb)]
    na, nb = len(xa), len(xb)
    if na == 0 or nb == 0:
        return None
    effect = float(xa.mean() - xb.mean())
    if na < 2 or nb < 2:
        return Paired(effect, None, None, na + nb, None, test, (na, nb))
    va, vb = float(xa.var(ddof=1)) / na, float(xb.var(ddof=1)) / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return Paired(effect, effect, effect, na + nb, 1.0 if effect == 0 else 0.0, test, (na, nb))
    dof = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    from scipy.special import stdtrit

    half = float(stdtrit(dof, 0.975)) * se
    return Paired(effect, effect - half, effect + half, na + nb, t_pvalue(effect / se, dof), test, (na, nb))


def unit_slopes(units: dict[K, list[tuple[float, float]]]) -> dict[K, float]:
    """Least-squares slope of y on x inside each unit (e.g. one dataset and seed) that has two or more x values."""
    out: dict[K, float] = {}
    for unit, points in units.items():
        x = np.asarray([p[0] for p in points], float)
        y = np.asarray([p[1] for p in points], float)
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        if len(np.unique(x)) < 2:
            continue
        xc = x - x.mean()
        out[unit] = float((xc * (y - y.mean())).sum() / (xc**2).sum())
    return out


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
