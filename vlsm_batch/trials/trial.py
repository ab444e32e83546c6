"""A trial: one (model, dataset, strategy, seed, resolved parameters) to train, and its content-hash id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

ID_LENGTH = 12  # hex chars: 48 bits, collision-free in practice for studies of 1e5 trials


def canonical_json(data: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal configs give equal strings on every machine."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def round_value(value: Any) -> Any:
    """Floats to 6 significant digits so ids and tables stay readable; other values unchanged."""
    if isinstance(value, float) and not isinstance(value, bool):
        return float(f"{value:.6g}")
    return value


@dataclass(frozen=True)
class Trial:
    """Everything that decides a trial's result; ``trial_id`` hashes exactly :meth:`identity`."""

    model: str
    dataset: str
    strategy: str
    seed: int
    params: dict[str, Any]
    train: dict[str, Any]
    objective: dict[str, str]
    sample_index: int = 0  # position in its cell's sample stream (not part of the identity)
    # What about the data is not implied by the dataset name: a non-default prompt key, or the definition of a
    # dataset declared in the spec (never its path). Part of the identity only when non-empty, so the ids of
    # plain studies do not depend on it.
    data: dict[str, Any] = field(default_factory=dict)
    # Adaptive (tpe) trials only: {method, sequence, settings}: the trial is the cell's sequence-th ask, its
    # values are chosen when the task starts (``params`` then holds only the fixed ones). Part of the identity
    # when non-empty, so the id is stable before the values are known.
    search: dict[str, Any] = field(default_factory=dict)
    # Where the trial's Optuna trial lives and how it is sampled and pruned ({study, journal, direction, space,
    # sampler, pruner}); empty when neither tpe nor a pruner is used. Not part of the identity.
    optuna: dict[str, Any] = field(default_factory=dict, compare=False)
    trial_id: str = field(default="", compare=False)

    def identity(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "strategy": self.strategy,
            "seed": self.seed,
            "params": self.params,
            "train": self.train,
            "objective": self.objective,
            **({"data": self.data} if self.data else {}),
            **({"search": self.search} if self.search else {}),
        }

    def with_id(self) -> Trial:
        digest = hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()[:ID_LENGTH]
        return Trial(**{**self.__dict__, "trial_id": digest})

    @property
    def cell(self) -> tuple[str, str, str]:
        return (self.model, self.dataset, self.strategy)

    @property
    def adaptive(self) -> bool:
        """Its values are asked from the cell's Optuna study when the task starts."""
        return bool(self.search)

    def manifest_record(self) -> dict[str, Any]:
        """One line of trials.jsonl."""
        record = {"trial_id": self.trial_id, "sample_index": self.sample_index, **self.identity()}
        return {**record, "optuna": self.optuna} if self.optuna else record

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Trial:
        return cls(
            model=rec["model"],
            dataset=rec["dataset"],
            strategy=rec["strategy"],
            seed=rec["seed"],
            params=rec["params"],
            train=rec["train"],
            objective=rec["objective"],
            sample_index=rec.get("sample_index", 0),
            data=rec.get("data", {}),
            search=rec.get("search", {}),
            optuna=rec.get("optuna", {}),
            trial_id=rec["trial_id"],
        )
