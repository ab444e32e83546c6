"""``create_model``: the one entry point the training side uses; builders are imported only when called."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..strategies.impl import StrategyNotImplementedError, refuse_inapplicable
from ..weights import loader_source
from . import get_model_info

if TYPE_CHECKING:
    from .prompted import PromptedSegmenter


def create_model(
    model_name: str,
    strategy: str,
    params: Mapping[str, Any],
    weights: str | None = None,
    random_init: bool = False,
) -> PromptedSegmenter:
    """Build ``model_name`` with the prompts of ``strategy``.

    ``params`` are the trial's strategy parameters (missing ones take the catalog defaults; training-only keys such
    as ``lr`` are ignored). ``weights``: hub id or local folder (None: the catalog default). ``random_init``: the
    same architecture with seeded random weights and the offline tokenizer, no download.
    """
    info = get_model_info(model_name)
    if not info.implemented:
        raise StrategyNotImplementedError(f"model {model_name!r} is not implemented in this build")
    refuse_inapplicable(strategy, info)  # the catalog's reason (vpt, decoder_finetune on CRIS)
    module_name, func_name = info.builder.split(":")
    builder = getattr(importlib.import_module(module_name), func_name)
    return builder(strategy, dict(params), loader_source(weights), random_init=random_init)
