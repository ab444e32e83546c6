"""vlsm-batch: declarative prompt-tuning studies for vision-language segmentation models."""

from __future__ import annotations

__version__ = "0.1.0"
