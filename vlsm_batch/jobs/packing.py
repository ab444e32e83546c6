"""Which trials train together: ``resources.pack`` groups the trials of one cell into packs (one process each).

A pack shares one model build, one data load and, for the text-side strategies, one frozen image forward per batch
(``training.pack``), so its members must see exactly the same batches: same model, dataset, strategy, seed, data
definition and train settings. Only the strategy parameters (lr, depth, ...) may differ. ``finetune`` and
``decoder_finetune`` train weights of the model every member would share (all of them, or the decoder), so they
always train alone.

Light on purpose (no torch): ``plan`` and ``submit`` call it on the login node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..trials import Trial
from ..trials.trial import canonical_json

AUTO_MAX = 16  # ``pack: auto`` puts up to this many trials in one array task; the run splits further by memory
SOLO_STRATEGIES = frozenset({"finetune", "decoder_finetune"})  # they train weights the members would share


def pack_key(trial: Trial) -> str:
    """Trials with equal keys may share a pack: everything that decides the batch stream and the frozen model."""
    return canonical_json(
        {
            "model": trial.model,
            "dataset": trial.dataset,
            "strategy": trial.strategy,
            "seed": trial.seed,
            "train": trial.train,
            "objective": trial.objective,
            "data": trial.data,
        }
    )


def pack_limit(pack: int | str, strategy: str) -> int:
    """Most members per pack for ``resources.pack`` (``auto``: :data:`AUTO_MAX`, split later by memory)."""
    if strategy in SOLO_STRATEGIES:
        return 1
    if pack == "auto":
        return AUTO_MAX
    return max(1, int(pack))


def group_packs(trials: Sequence[Trial], pack: int | str) -> list[list[Trial]]:
    """Packs of at most ``pack`` trials with equal :func:`pack_key`, in the order the trials come.

    Deterministic: the same trials give the same packs, so a resubmission launches the same groups. Each key's
    trials are cut into consecutive chunks of the limit (the last one may be smaller).
    """
    by_key: dict[str, list[Trial]] = {}
    for t in trials:
        by_key.setdefault(pack_key(t), []).append(t)
    packs: list[list[Trial]] = []
    for members in by_key.values():
        limit = pack_limit(pack, members[0].strategy)
        packs += [members[i : i + limit] for i in range(0, len(members), limit)]
    return packs


def describe_pack(pack: Sequence[Trial]) -> dict[str, Any]:
    """One row of ``plan``'s pack table (counts only; memory and time come from ``jobs.estimate``)."""
    first = pack[0]
    return {
        "model": first.model,
        "dataset": first.dataset,
        "strategy": first.strategy,
        "seed": first.seed,
        "members": len(pack),
        "trial_ids": [t.trial_id for t in pack],
    }
