"""Moved to :mod:`vlsm_batch.spec.site_profiles` (the spec stage reads profiles; jobs imports it from there)."""

from __future__ import annotations

from ..spec.site_profiles import (
    LIMIT_KEYS,
    PACKAGE_PROFILES,
    SlurmOptions,
    available_profiles,
    find_profile,
    load_profile,
    not_found_message,
    profile_dirs,
    profile_limits,
    resolve_options,
)

__all__ = [
    "LIMIT_KEYS",
    "PACKAGE_PROFILES",
    "SlurmOptions",
    "available_profiles",
    "find_profile",
    "load_profile",
    "not_found_message",
    "profile_dirs",
    "profile_limits",
    "resolve_options",
]
