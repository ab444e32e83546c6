"""Launch trials on Slurm as submitit job arrays, chunked under the cluster's ``MaxArraySize``.

* One array per resource group (``groups``: the study's resources, and one group per distinct
  ``per_strategy.<name>.resources``), one array task per launch unit: a trial, or a pack of trials
  (``resources.pack``) that share one process; every member's record names the task (``<array>_<index>``) and the
  pack.
* A group larger than ``MaxArraySize`` becomes several arrays, each indexed from 0 (Slurm caps the index, not
  only the count), with the trial order kept in ``submissions.jsonl`` and in each trial's ``job_id``.
* One throttle (``resources.slurm.array_throttle``) is split across a group's arrays: chunks run in at most
  ``throttle`` lanes, each lane's chunks one after the other (``--dependency=afterany``), the lanes' ``%N`` summing
  to the throttle. Each resource group has the whole throttle.
* ``--time`` is always set, job name ``vlsm-<study>``, ``--comment`` carries the study and chunk, ``--requeue``.
* Logs: ``<study>/submitit/<array>_<index>/<array>_<index>_0_log.{out,err}`` (requeued attempts append).

The sbatch text ``plan --sbatch`` prints is made by the same function submit uses (submitit's own template).
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SubmissionError
from ..layout import StudyLayout
from ..spec.site_profiles import SlurmOptions, resolve_options
from ..spec.types import ResourcesSpec, StudySpec
from . import cluster, store
from .groups import group_by_resources, unit_strategy

DEFAULT_MAX_ATTEMPTS = 5  # starts of one trial per submission (first run + requeues)
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run")


@dataclass(frozen=True)
class Chunk:
    index: int  # 0-based chunk number
    offset: int  # position of its first trial in the group
    size: int
    throttle: int  # %N of this array
    after: int | None  # chunk whose array must end first (same lane), None: starts at once


def plan_chunks(n: int, max_array_size: int, throttle: int) -> list[Chunk]:
    """Split ``n`` tasks into arrays of at most ``max_array_size`` and the throttle across them."""
    if n <= 0:
        return []
    cap = max(1, max_array_size)
    k = -(-n // cap)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]  # as even as possible, all <= cap
    throttle = max(1, throttle)
    lanes = min(k, throttle)
    lane_share = [throttle // lanes + (1 if i < throttle % lanes else 0) for i in range(lanes)]
    chunks, offset = [], 0
    for i, size in enumerate(sizes):
        lane = i % lanes
        chunks.append(Chunk(i, offset, size, min(lane_share[lane], size), i - lanes if i >= lanes else None))
        offset += size
    return chunks


def signal_delay_s(timeout_min: int) -> int:
    """Lead time of submitit's USR2 before the limit: 90 s, less for short limits (Slurm may signal 30 s early)."""
    return int(min(90, max(10, timeout_min * 60 // 4)))


def max_attempts() -> int:
    return int(os.environ.get("VLSM_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))


def sbatch_parameters(
    spec: StudySpec, options: SlurmOptions, chunk: Chunk, n_chunks: int, resources: ResourcesSpec | None = None
) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters of one chunk (sbatch option names with ``_``); ``resources``: the
    group's (default the study's)."""
    res = resources or spec.resources
    params: dict[str, Any] = {
        "job_name": f"vlsm-{spec.study}",
        "time": res.timeout_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": res.cpus_per_task,
        "mem": f"{res.mem_gb}GB",
        "comment": f"vlsm-batch:{spec.study}:chunk{chunk.index + 1}/{n_chunks}:offset{chunk.offset}",
        "signal_delay_s": signal_delay_s(res.timeout_min),
        "array_parallelism": chunk.throttle,
    }
    if res.gpus_per_task:
        params["gpus_per_node"] = res.gpus_per_task
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(options, key)
        if value:
            params[key] = value
    if options.setup:
        params["setup"] = list(options.setup)
    params["additional_parameters"] = {**options.extra, "requeue": True}
    return params


def _with_dependency(params: dict[str, Any], job_id: str | None) -> dict[str, Any]:
    if job_id is None:
        return params
    return {**params, "additional_parameters": {**params["additional_parameters"], "dependency": f"afterany:{job_id}"}}


def sbatch_texts(
    spec: StudySpec,
    n_tasks: int,
    max_array_size: int,
    python: str | None = None,
    resources: ResourcesSpec | None = None,
) -> list[str]:
    """The exact sbatch scripts ``submit`` would write for ``n_tasks`` array tasks (one per trial, or per pack;
    array ids of earlier chunks as <chunkN>) of one resource group (default the study's resources)."""
    from submitit.slurm.slurm import _make_sbatch_string

    options = resolve_options(spec.resources.slurm)
    layout = StudyLayout(spec.output_dir)
    folder = layout.submitit / "%j"
    command = " ".join([python or shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    chunks = plan_chunks(n_tasks, max_array_size, (resources or spec.resources).array_parallelism)
    texts = []
    for c in chunks:
        params = _with_dependency(
            sbatch_parameters(spec, options, c, len(chunks), resources),
            None if c.after is None else f"<chunk{c.after + 1}>",
        )
        texts.append(_make_sbatch_string(command=command, folder=folder, map_count=c.size, **params))
    return texts


def sbatch_plan_text(
    spec: StudySpec,
    n_tasks: int,
    max_array_size: int | None = None,
    n_trials: int | None = None,
    tasks_by_strategy: dict[str, int] | None = None,
) -> str:
    """``plan --sbatch``: every chunk's script, each under a ``# ===`` header line.

    ``n_tasks`` is the number of array tasks (packs; equal to the trials with ``pack: 1``); ``n_trials``, when it
    differs, is named in the header too. ``tasks_by_strategy`` (array tasks per strategy, summing to ``n_tasks``)
    splits them into resource groups, one set of arrays each (``per_strategy.<name>.resources``).
    """
    if max_array_size is None:
        max_array_size = cluster.max_array_size(cluster.cluster_config())
    if n_tasks == 0:
        return "# nothing to submit: every trial is done, queued or running"
    by_strategy = tasks_by_strategy or {"": n_tasks}
    strategies = [s for s, n in by_strategy.items() for _ in range(n)]
    groups = group_by_resources(spec, strategies) if tasks_by_strategy else [(spec.resources, list(range(n_tasks)))]
    what = f"{n_tasks} trials" if n_trials in (None, n_tasks) else f"{n_tasks} array tasks: {n_trials} trials in packs"
    out = []
    for g, (res, members) in enumerate(groups):
        texts = sbatch_texts(spec, len(members), max_array_size, resources=res)
        names = sorted({strategies[i] for i in members})
        group = f", group {g + 1}/{len(groups)}: {', '.join(names)}, {len(members)} tasks" if len(groups) > 1 else ""
        for i, text in enumerate(texts):
            out.append(f"# === array {i + 1}/{len(texts)} (MaxArraySize {max_array_size}, {what}{group}) ===")
            out.append(text)
    return "\n".join(out).rstrip("\n")


# --- preflight ---------------------------------------------------------------------------------------------------


def preflight_slurm(spec: StudySpec, n_trials: int | None = None, n_tasks: int | None = None) -> dict[str, Any]:
    """Refuse, before anything is written or submitted, what Slurm would reject or what could never work.

    Checks: a controller answers; the partition exists and is up; ``timeout_min`` fits its MaxTime; the study
    folder is writable and not node-local on a multi-node cluster; the array-task count (``n_tasks``, packs;
    default ``n_trials``) fits MaxSubmitJobs/MaxJobCount. Returns the cluster facts submit uses
    (``max_array_size``).
    """
    conf = cluster.cluster_config()
    if conf is None:
        raise SubmissionError(
            "no Slurm controller answers (`scontrol show config` failed); check SLURM_CONF or run with --executor local"
        )
    options = resolve_options(spec.resources.slurm)
    problems = []
    parts = cluster.partitions() or {}
    name = options.partition or next((p.name for p in parts.values() if p.default), None)
    part = parts.get(name or "")
    if part is None:
        problems.append(
            f"partition {name!r} does not exist on this cluster (partitions: {', '.join(sorted(parts)) or 'none'})"
            if name
            else "no partition given and the cluster has no default partition"
        )
    else:
        if part.state != "UP":
            problems.append(f"partition {part.name} is {part.state}, not UP")
        for where, res in _resource_sets(spec):
            if part.max_time_min is not None and res.timeout_min > part.max_time_min:
                problems.append(
                    f"{where}timeout_min {res.timeout_min} exceeds partition {part.name}'s MaxTime of "
                    f"{part.max_time_min} min"
                )
    problems += _folder_problems(spec.output_dir)
    problems += _node_problems(spec)
    if n_tasks is None:
        n_tasks = n_trials
    if n_tasks is not None:
        what = "trials" if n_trials in (None, n_tasks) else f"array tasks ({n_trials} trials in packs)"
        limits = []
        user_limit = cluster.max_submit_jobs(getpass.getuser())
        if user_limit is not None:
            limits.append((user_limit, "MaxSubmitJobs of your association"))
        if conf.get("MaxJobCount", "").isdigit():
            limits.append((int(conf["MaxJobCount"]), "the cluster's MaxJobCount"))
        for limit, where in limits:
            if limit and n_tasks > limit:
                problems.append(
                    f"{n_tasks} {what} exceed {where} ({limit}); submit part of the study (fewer trials)"
                    + ("" if what == "trials" else " or raise resources.pack")
                )
    if problems:
        raise SubmissionError(
            "Slurm preflight failed, nothing was submitted:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return {"max_array_size": cluster.max_array_size(conf), "partition": part.name if part else None}


def _resource_sets(spec: StudySpec) -> list[tuple[str, ResourcesSpec]]:
    """The study's resources and each ``per_strategy`` override's, with the prefix that names them."""
    out = [("", spec.resources)]
    out += [(f"per_strategy.{n}: ", o.resources) for n, o in spec.per_strategy.items() if o.resource_keys]
    return out


def _node_problems(spec: StudySpec) -> list[str]:
    """What no node of the cluster can give one task (memory, CPUs, GPUs): sbatch would refuse or queue forever."""
    nodes = cluster.node_resources()
    if not nodes:
        return []
    problems = []
    for where, res in _resource_sets(spec):
        problems += [f"{where}{p}" for p in _node_problems_of(res, nodes)]
    return problems


def _node_problems_of(res: ResourcesSpec, nodes: Sequence[Any]) -> list[str]:
    problems: list[str] = []
    mem_mb = max(n.memory_mb for n in nodes)
    if res.mem_gb * 1024 > mem_mb:
        problems.append(
            f"resources.mem_gb {res.mem_gb} exceeds the largest node's memory ({mem_mb / 1024:.1f} GB); lower it"
        )
    cpus = max(n.cpus for n in nodes)
    if res.cpus_per_task > cpus:
        problems.append(f"resources.cpus_per_task {res.cpus_per_task} exceeds the largest node's {cpus} CPUs")
    gpus = max(n.gpus for n in nodes)
    if res.gpus_per_task and res.gpus_per_task > gpus:
        problems.append(f"resources.gpus_per_task {res.gpus_per_task} exceeds the largest node's {gpus} GPUs")
    return problems


def _folder_problems(folder: Path) -> list[str]:
    folder = Path(folder).resolve()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".vlsm-write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return [f"study folder {folder} is not writable here ({exc.strerror})"]
    if any(str(folder) == p or str(folder).startswith(p + "/") for p in NODE_LOCAL):
        hosts = cluster.node_hosts() or []
        me = socket.gethostname().split(".")[0]
        if any(h.split(".")[0] != me for h in hosts):
            return [
                f"study folder {folder} is on a node-local path ({', '.join(NODE_LOCAL)}): compute nodes "
                f"{', '.join(hosts[:3])} cannot write it; use a shared filesystem (output_dir)"
            ]
    return []


# --- submit ------------------------------------------------------------------------------------------------------


def submit_slurm(
    spec: StudySpec,
    layout: StudyLayout,
    trial_dirs: Sequence[Path | Sequence[Path]],
    task: Any = None,
    max_array_size: int | None = None,
    hold: bool | None = None,
) -> list[str]:
    """Submit every launch unit, chunked, one set of arrays per resource group: one array task per item of
    ``trial_dirs``, a trial folder or a pack (a list of folders). Returns the task id (``<array>_<index>``) of every
    trial, in order.

    ``task`` replaces the callable: a :class:`.task.PackTask` runs every unit (a trial as a pack of one); any
    other (a :class:`.task.TrialTask`) only single trials. Default: TrialTask for a trial, PackTask for a pack.
    """
    from .task import PackTask, TrialTask

    units = [[Path(d)] if isinstance(d, (str, Path)) else [Path(x) for x in d] for d in trial_dirs]
    packs_of = isinstance(task, PackTask)
    if task is not None and not packs_of and any(len(u) > 1 for u in units):
        raise ValueError("task= runs one trial per array task; packs need a PackTask")
    if max_array_size is None:
        max_array_size = cluster.max_array_size(cluster.cluster_config())
    options = resolve_options(spec.resources.slurm)
    solo_fn = task if task is not None else TrialTask()
    pack_fn = task if packs_of else PackTask()
    if hold is None:  # held arrays never start (benchmarks/submit_scale.py): release with `scontrol release`
        hold = os.environ.get("VLSM_SLURM_HOLD") == "1"
    if any(o.resource_keys for o in spec.per_strategy.values()):
        groups = group_by_resources(spec, [unit_strategy(u) for u in units])
    else:
        groups = [(spec.resources, list(range(len(units))))]
    by_unit: dict[int, str] = {}
    submitted = 0
    for res, members in groups:
        group = [units[i] for i in members]
        try:
            ids = _submit_group(spec, layout, group, res, options, solo_fn, pack_fn, packs_of, max_array_size, hold)
        except SubmissionError as exc:
            if submitted:
                raise SubmissionError(f"{exc} (earlier resource groups: {submitted} trials were submitted)") from exc
            raise
        by_unit.update(zip(members, ids))
        submitted += sum(len(u) for u in group)
    return [by_unit[i] for i, unit in enumerate(units) for _ in unit]


def _submit_group(
    spec: StudySpec,
    layout: StudyLayout,
    units: list[list[Path]],
    res: ResourcesSpec,
    options: SlurmOptions,
    solo_fn: Any,
    pack_fn: Any,
    packs_of: bool,
    max_array_size: int,
    hold: bool,
) -> list[str]:
    """Submit one resource group's units as chunked arrays; the array task id of every unit, in order."""
    import submitit

    chunks = plan_chunks(len(units), max_array_size, res.array_parallelism)
    cap = max_attempts()
    array_ids: list[str] = []
    job_ids: list[str] = []
    for c in chunks:
        params = sbatch_parameters(spec, options, c, len(chunks), res)
        params = _with_dependency(params, None if c.after is None else array_ids[c.after])
        if hold:
            params["additional_parameters"]["hold"] = True
        executor = submitit.SlurmExecutor(folder=layout.submitit / "%j", max_num_timeout=cap)
        executor.update_parameters(**params)
        chunk = units[c.offset : c.offset + c.size]
        try:
            with executor.batch():
                jobs = [
                    executor.submit(pack_fn, [str(d) for d in unit], "slurm")
                    if packs_of or len(unit) > 1
                    else executor.submit(solo_fn, str(unit[0]), "slurm")
                    for unit in chunk
                ]
        except Exception as exc:  # sbatch refused: earlier chunks stay submitted, the rest stays pending
            raise SubmissionError(
                f"sbatch refused chunk {c.index + 1}/{len(chunks)} ({exc}); {sum(map(len, units[: c.offset]))} "
                "trials were submitted, the others stay pending: fix the cause and run the same submit again"
            ) from exc
        array_ids.append(jobs[0].job_id.split("_")[0])
        for unit, job in zip(chunk, jobs):
            _assign_unit(layout, unit, job.job_id)
            job_ids.append(job.job_id)
    return job_ids


def _assign_unit(layout: StudyLayout, unit: list[Path], job_id: str) -> None:
    """Name the array task (and the pack) in every member's record; a task none of them still waits for (all
    cancelled meanwhile) is scancelled, so that queue entry never runs."""
    folder = layout.submitit / job_id
    packed: dict[str, Any] = {"pack": [d.name for d in unit]} if len(unit) > 1 else {}
    wanted = False
    for d in unit:
        paths = layout.trial(d.name)
        try:
            store.assign(
                paths,
                job_id,
                executor="slurm",
                log_out=layout.relative(folder / f"{job_id}_0_log.out"),
                log_err=layout.relative(folder / f"{job_id}_0_log.err"),
                **packed,
            )
            wanted = True
        except store.IllegalTransition:  # the task started before its job id was written: it recorded it
            wanted = wanted or store.read(paths).job_id == job_id  # else cancelled meanwhile
    if not wanted:
        cluster.slurm_cmd(["scancel", job_id], timeout_s=30)
