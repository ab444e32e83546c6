"""Deterministic, prefix-stable samplers: sample i of a stream never depends on how many samples are drawn.

- random: each (study seed, sample index, parameter name) hashes to its own uniform number. Every cell of a
  study therefore sees the same values for the parameters it shares with other cells (a paired design: the
  difference between two strategies on a dataset is not sampling noise), and adding a parameter to the space
  leaves the values of the others unchanged.
- sobol: a scrambled Sobol sequence (scipy.stats.qmc) over the cell's sorted parameter names, seeded by the
  study seed; point i is the same whether 20 or 40 points are drawn.
- grid: the cartesian product of every dimension's values, in sorted-name order.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import warnings
from collections.abc import Iterator
from typing import Any

from ..spec.types import Distribution
from .trial import round_value


def hashed_uniform(seed: int, index: int, name: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, index, name)."""
    digest = hashlib.sha256(f"vlsm-batch|{seed}|{index}|{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def from_unit(dist: Distribution, u: float) -> Any:
    """Map u in [0, 1) onto the distribution (inverse CDF)."""
    u = min(max(u, 0.0), math.nextafter(1.0, 0.0))
    if dist.kind == "choice":
        return dist.choices[int(u * len(dist.choices))]
    assert dist.low is not None and dist.high is not None
    if dist.kind == "int":
        lo, hi = int(dist.low), int(dist.high)
        return lo + int(u * (hi - lo + 1))
    if dist.kind == "uniform":
        return round_value(dist.low + u * (dist.high - dist.low))
    if dist.kind == "log_uniform":
        log_lo, log_hi = math.log(dist.low), math.log(dist.high)
        return round_value(math.exp(log_lo + u * (log_hi - log_lo)))
    raise ValueError(f"unknown distribution kind {dist.kind!r}")


def grid_values(dist: Distribution) -> list[Any]:
    if dist.kind == "choice":
        return list(dist.choices)
    if dist.kind == "int":
        assert dist.low is not None and dist.high is not None
        return list(range(int(dist.low), int(dist.high) + 1))
    raise ValueError(f"a grid needs discrete dimensions (choice or int), not {dist.kind}")


def sample(method: str, space: dict[str, Distribution], n: int | None, seed: int) -> Iterator[dict[str, Any]]:
    """Yield parameter dicts for one cell; with an empty space, exactly one empty dict."""
    names = sorted(space)
    if not names:
        yield {}
        return
    if method == "grid":
        for combo in itertools.product(*(grid_values(space[k]) for k in names)):
            yield dict(zip(names, combo))
        return
    assert n is not None, "random and sobol need a trial count"
    if method == "random":
        for i in range(n):
            yield {k: from_unit(space[k], hashed_uniform(seed, i, k)) for k in names}
        return
    if method == "sobol":
        from scipy.stats import qmc  # only this method pays for scipy's import

        engine = qmc.Sobol(d=len(names), scramble=True, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "balance properties" warning for n not a power of two
            points = engine.random(n)
        for row in points:
            yield {k: from_unit(space[k], float(u)) for k, u in zip(names, row)}
        return
    raise ValueError(f"unknown search method {method!r}")
