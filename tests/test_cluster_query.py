"""squeue and sacct share one chunked query: ids go 500 per call, short lines are skipped, a failed call is None."""

from __future__ import annotations

import pytest

from vlsm_batch.jobs import cluster


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []

    def fake(args: list[str], timeout_s: float = 20.0) -> str | None:
        seen.append(args)
        ids = args[-1].split(",")
        if "9999" in ids:
            return None
        if args[0] == "squeue":
            return "\n".join([f"{ids[0]}_[0-1]|PENDING|Priority", f"{ids[-1]}_0|RUNNING|None", "garbage"])
        return f"{ids[0]}_0|CANCELLED by 0|0:0\n{ids[-1]}_1|FAILED|1:0\nshort|line"

    monkeypatch.setattr(cluster, "slurm_cmd", fake)
    monkeypatch.delenv("VLSM_NO_SACCT", raising=False)
    return seen


def test_squeue_chunks_and_parses(calls: list[list[str]]) -> None:
    ids = [f"{1000 + i}_0" for i in range(600)]
    states = cluster.squeue_states(ids)
    assert states is not None and len(calls) == 2 and len(calls[0][-1].split(",")) == 500
    assert states["1000_0"].detail == "PENDING (Priority)" and states["1000_1"].state == "PENDING"
    assert states["1499_0"] == cluster.SlurmState("1499_0", "RUNNING", "RUNNING", "squeue")
    assert states["1500_0"].source == "squeue" and "1599_0" in states


def test_sacct_parses_and_a_failed_chunk_is_none(calls: list[list[str]]) -> None:
    states = cluster.sacct_states(["1_0", "2_1"])
    assert states == {
        "1_0": cluster.SlurmState("1_0", "CANCELLED", "CANCELLED by 0", "sacct"),
        "2_1": cluster.SlurmState("2_1", "FAILED", "FAILED, exit code 1:0", "sacct"),
    }
    assert cluster.squeue_states([f"{i}_0" for i in range(1, 501)] + ["9999_0"]) is None
