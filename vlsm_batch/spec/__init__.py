"""Study specs: ``load_spec(path)`` reads a YAML study file into a validated, typed ``StudySpec``."""

from __future__ import annotations

from .load import load_spec
from .types import Distribution, ResourcesSpec, SearchSpec, SlurmSpec, StudySpec, TrainSpec

__all__ = ["Distribution", "ResourcesSpec", "SearchSpec", "SlurmSpec", "StudySpec", "TrainSpec", "load_spec"]
