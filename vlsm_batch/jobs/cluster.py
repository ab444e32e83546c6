"""What the Slurm cluster says: config limits, partitions, and job states from ``squeue`` and ``sacct``.

Every query is one subprocess with a timeout (a client blocks about 10 s when the controller is down) and returns
None when Slurm does not answer, so callers can fall back instead of crashing. No submitit, no torch.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default; MaxArraySize caps the index (0..N-1), not only the count
# Slurm states after which a job (or array task) will not run again by itself
TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "REVOKED",
    "SPECIAL_EXIT",
}
ACTIVE_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING", "SUSPENDED"}


def slurm_cmd(args: list[str], timeout_s: float = 20.0) -> str | None:
    """stdout of a Slurm client command, or None when it is missing, fails or hangs."""
    if not shutil.which(args[0]):
        return None
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _key_values(text: str) -> dict[str, str]:
    """``Key=Value Key2=Value 2`` (scontrol -o) into a dict; values may contain spaces only at the end."""
    out: dict[str, str] = {}
    for m in re.finditer(r"(\w[\w:/.]*)=(\S*)", text):
        out.setdefault(m.group(1), m.group(2))
    return out


def cluster_config() -> dict[str, str] | None:
    """``scontrol show config`` as a dict (keys as Slurm prints them), None without a controller."""
    text = slurm_cmd(["scontrol", "show", "config"])
    if text is None:
        return None
    conf = {}
    for line in text.splitlines():
        if " = " in line:
            key, _, value = line.partition(" = ")
            conf[key.strip()] = value.strip()
    return conf


def max_array_size(conf: dict[str, str] | None) -> int:
    try:
        return int((conf or {}).get("MaxArraySize", DEFAULT_MAX_ARRAY_SIZE))
    except ValueError:
        return DEFAULT_MAX_ARRAY_SIZE


def parse_minutes(value: str | None) -> int | None:
    """Slurm time (``UNLIMITED``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in minutes; None: no limit."""
    if not value or value.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    days = 0
    if "-" in value:
        d, _, value = value.partition("-")
        days = int(d)
    parts = [int(p) for p in value.split(":")]
    if days:  # D-HH[:MM[:SS]]
        h, m, s = [*parts, 0, 0][:3]
    elif len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts[:3]
    return days * 1440 + h * 60 + m + (1 if s else 0)


@dataclass(frozen=True)
class Partition:
    name: str
    state: str
    max_time_min: int | None  # None: unlimited
    default: bool


def partitions() -> dict[str, Partition] | None:
    text = slurm_cmd(["scontrol", "show", "partition", "-o"])
    if text is None:
        return None
    out = {}
    for line in text.splitlines():
        kv = _key_values(line)
        if "PartitionName" in kv:
            out[kv["PartitionName"]] = Partition(
                kv["PartitionName"], kv.get("State", "UP"), parse_minutes(kv.get("MaxTime")), kv.get("Default") == "YES"
            )
    return out


def max_submit_jobs(user: str) -> int | None:
    """The association's MaxSubmitJobs for ``user`` (array tasks count one each), None when unset or unknown."""
    text = slurm_cmd(["sacctmgr", "-n", "-P", "list", "assoc", f"user={user}", "format=maxsubmitjobs"], 10)
    limits = [int(v) for v in (text or "").split() if v.strip().isdigit()]
    return min(limits) if limits else None


@dataclass(frozen=True)
class NodeResources:
    name: str
    cpus: int
    memory_mb: int
    gpus: int


def node_resources() -> list[NodeResources] | None:
    """CPUs, RealMemory and GPUs (from Gres) of every node, from ``scontrol show node -o``."""
    text = slurm_cmd(["scontrol", "show", "node", "-o"])
    if text is None:
        return None
    out = []
    for line in text.splitlines():
        kv = _key_values(line)
        if "NodeName" not in kv:
            continue
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,()]+)?:(\d+)", kv.get("Gres", "")))
        try:
            out.append(NodeResources(kv["NodeName"], int(kv.get("CPUTot", 0)), int(kv.get("RealMemory", 0)), gpus))
        except ValueError:
            continue
    return out


def node_hosts() -> list[str] | None:
    text = slurm_cmd(["sinfo", "-h", "-N", "-o", "%N"])
    return None if text is None else sorted(set(text.split()))


# --- job states -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmState:
    """One array task (or job) as Slurm reports it. ``state`` is the first word (``CANCELLED by 0`` -> CANCELLED)."""

    job_id: str
    state: str
    detail: str  # the full state text, reason or exit code: what a person needs to see
    source: str  # squeue | sacct


_RANGE = re.compile(r"^(\d+)_\[(.+)\]$")


def expand_ids(job_id: str) -> list[str]:
    """``123_[0-3,7%2]`` -> 123_0 .. 123_3, 123_7; anything else unchanged."""
    m = _RANGE.match(job_id)
    if not m:
        return [job_id]
    base, body = m.group(1), m.group(2).split("%")[0]
    out: list[str] = []
    for part in body.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(f"{base}_{i}" for i in range(int(lo), int(hi) + 1))
        elif part:
            out.append(f"{base}_{part}")
    return out


def _bases(job_ids: list[str]) -> list[str]:
    return sorted({j.split("_")[0] for j in job_ids if j and j.split("_")[0].isdigit()})


def sacct_enabled() -> bool:
    return os.environ.get("VLSM_NO_SACCT", "") not in ("1", "true", "yes")


def squeue_states(job_ids: list[str]) -> dict[str, SlurmState] | None:
    """Tasks the controller still knows (queued, running, and finished within MinJobAge), one line per task."""
    bases = _bases(job_ids)
    if not bases:
        return {}
    rows = _query_rows(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r", "-j"], bases)
    if rows is None:
        return None
    out: dict[str, SlurmState] = {}
    for parts in rows:
        jid, state, reason = parts[0], parts[1], parts[2]
        for j in expand_ids(jid):
            detail = state if reason in ("None", "") else f"{state} ({reason})"
            out[j] = SlurmState(j, state.split()[0], detail, "squeue")
    return out


def _query_rows(command: list[str], bases: list[str]) -> list[list[str]] | None:
    """``command`` run over the job ids 500 at a time (command lines stay short); the ``|``-separated fields of
    every output line with at least three. None when a call fails (Slurm unreachable: the caller cannot tell)."""
    rows = []
    for i in range(0, len(bases), 500):
        text = slurm_cmd([*command, ",".join(bases[i : i + 500])])
        if text is None:
            return None
        rows += [parts for line in text.splitlines() if len(parts := line.strip().split("|")) >= 3]
    return rows


def sacct_states(job_ids: list[str]) -> dict[str, SlurmState] | None:
    """Accounting records (also of long-finished tasks); None when accounting is disabled or turned off."""
    if not sacct_enabled():
        return None
    bases = _bases(job_ids)
    if not bases:
        return {}
    rows = _query_rows(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j"], bases)
    if rows is None:
        return None
    out: dict[str, SlurmState] = {}
    for parts in rows:
        jid, state, code = parts
        detail = state if code in ("0:0", "") else f"{state}, exit code {code}"
        for j in expand_ids(jid):
            out[j] = SlurmState(j, state.split()[0].rstrip("+"), detail, "sacct")
    return out
