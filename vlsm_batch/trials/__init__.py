"""Trials: the deterministic expansion of a study spec into content-addressed training runs."""

from .expand import Cell, Expansion, expand
from .trial import Trial

__all__ = ["Cell", "Expansion", "Trial", "expand"]
