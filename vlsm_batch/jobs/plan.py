"""``plan``: what a spec expands to, against what the study folder already holds, how the trials still to run
group into packs (array tasks), and an estimate of their peak memory and device-hours. Writes nothing."""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..layout import StudyLayout
from ..spec.types import StudySpec
from ..textable import render
from ..trials import Expansion, Trial
from ..trials.expand import Cell, dataset_info, trial_prompt_key
from . import estimate
from .estimate import Device, GiB, SplitSizes
from .groups import override_lines
from .packing import AUTO_MAX, SOLO_STRATEGIES, group_packs, pack_limit
from .store import DONE, FAILED, NEW, read
from .submit import launchable


@dataclass
class PlanRow:
    model: str
    dataset: str
    strategy: str
    trials: int
    new: int
    done: int
    failed: int
    other: int
    note: str = ""


@dataclass
class PackRow:
    """One cell of the pack table: its trials still to run, their packs, and the estimate for them."""

    model: str
    dataset: str
    strategy: str
    to_run: int
    packs: int  # array tasks
    per_pack: int  # most members a pack trains at once (pack: auto: N for the stated device memory)
    peak_gib: float | None  # predicted peak memory of its largest pack (None: no estimate for the model)
    hours_packed: float | None  # None: the dataset's size is unknown
    hours_unpacked: float | None
    auto_n: int | None = None  # pack: auto only
    shared_gib: float = 0.0  # a pack's shared memory (weights, frozen image forward, data cache, runtime)
    member_gib: float = 0.0  # each member's own (largest trial of the cell)
    note: str = ""


@dataclass
class PackPlan:
    pack: int | str
    device: Device
    precision: str
    batch_size: int
    rows: list[PackRow] = field(default_factory=list)
    unknown_sizes: list[str] = field(default_factory=list)
    gpus_per_task: int = 1

    @property
    def array_size(self) -> int:
        return sum(r.packs for r in self.rows)

    def totals(self) -> dict[str, Any]:
        known = [r for r in self.rows if r.hours_packed is not None]
        return {
            "to_run": sum(r.to_run for r in self.rows),
            "array_size": self.array_size,
            "device_hours_packed": round(sum(r.hours_packed or 0.0 for r in known), 3),
            "device_hours_unpacked": round(sum(r.hours_unpacked or 0.0 for r in known), 3),
            "cells_of_unknown_size": len(self.rows) - len(known),
            "peak_gib": max((r.peak_gib or 0.0 for r in self.rows), default=0.0),
        }

    def assumptions(self) -> dict[str, Any]:
        d = self.device
        return {
            "device_tflops": d.tflops,
            "utilization": d.utilization,
            "startup_s": d.startup_s,
            "device_memory_gib": round(d.memory_bytes / GiB, 2),
            "auto_margin": estimate.AUTO_MARGIN,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "text_tokens": estimate.TEXT_TOKENS,
            "runtime_gib": estimate.RUNTIME_BYTES / GiB,
            "epochs": "max_epochs (upper bound: early stopping and pruning end trials sooner)",
            "text": assumptions_line(self),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "cells": [r.__dict__ for r in self.rows],
            "totals": self.totals(),
            "unknown_sizes": self.unknown_sizes,
            "assumptions": self.assumptions(),
        }


@dataclass
class Plan:
    rows: list[PlanRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unsupported: int = 0
    packs: PackPlan | None = None

    @property
    def totals(self) -> dict[str, int]:
        keys = ("trials", "new", "done", "failed", "other")
        return {k: sum(getattr(r, k) for r in self.rows) for k in keys}

    @property
    def array_size(self) -> int:
        """Array tasks a submission of every trial still to run launches (one per pack)."""
        return self.packs.array_size if self.packs else 0

    def as_dict(self) -> dict[str, Any]:
        out = {"cells": [r.__dict__ for r in self.rows], "totals": self.totals, "skipped": self.skipped}
        if self.packs is not None:
            out["packs"] = self.packs.as_dict()
        return out


def make_plan(spec: StudySpec, expansion: Expansion, device: Device | None = None) -> Plan:
    """Counts per cell from the trial store, and the pack table of the trials still to run on ``device``
    (default: :func:`estimate.default_device` for the spec's precision)."""
    layout = StudyLayout(spec.output_dir)
    plan = Plan()
    device = device or estimate.default_device(spec.train.precision)
    packs = PackPlan(
        spec.resources.pack,
        device,
        spec.train.precision,
        spec.train.batch_size,
        gpus_per_task=spec.resources.gpus_per_task,
    )
    sizes: dict[str, SplitSizes | None] = {}
    for cell in expansion.cells:
        if cell.skipped:
            plan.skipped.append(f"{cell.strategy} on {cell.model} / {cell.dataset}: {cell.skipped}")
            plan.rows.append(PlanRow(cell.model, cell.dataset, cell.strategy, 0, 0, 0, 0, 0, "skipped"))
            continue
        counts: Counter[str] = Counter()
        to_run: list[Trial] = []
        if layout.exists():
            for t in cell.trials:
                record = read(layout.trial(t.trial_id))
                counts[str(record.state)] += 1
                if launchable(record, retry_failed=True):
                    to_run.append(t)
        else:
            counts[NEW] = len(cell.trials)
            to_run = list(cell.trials)
        other = len(cell.trials) - counts[NEW] - counts[DONE] - counts[FAILED]
        note = "not trainable in this build" if cell.unsupported else ""
        plan.unsupported += len(cell.trials) if cell.unsupported else 0
        plan.rows.append(
            PlanRow(
                cell.model,
                cell.dataset,
                cell.strategy,
                len(cell.trials),
                counts[NEW],
                counts[DONE],
                counts[FAILED],
                other,
                note,
            )
        )
        if not cell.unsupported and to_run:
            if cell.dataset not in sizes:
                sizes[cell.dataset] = split_sizes(spec, cell.dataset)
            packs.rows.append(pack_row(cell, to_run, spec.resources.pack, sizes[cell.dataset], device))
    packs.unknown_sizes = sorted(name for name, size in sizes.items() if size is None)
    plan.packs = packs
    return plan


def split_sizes(spec: StudySpec, name: str) -> SplitSizes | None:
    """Samples per split: the catalog's counts, a prepared dataset's ``prepared.json``, or the annotation files
    (read, not the images); None when the dataset is not on disk yet or cannot be read."""
    from ..datasets.readers import SPLITS, read_samples
    from ..datasets.verify import expected_counts
    from ..errors import VlsmBatchError

    info = dataset_info(spec, name)
    if info.split_counts is not None:
        return SplitSizes(*info.split_counts)
    root = spec.data_root / info.folder
    try:
        counts = expected_counts(info, root)
        if counts is None:
            key = trial_prompt_key(spec, name)
            counts = {split: len(read_samples(info, root, split, key, check_files=False)) for split in SPLITS}
        return SplitSizes(counts["train"], counts["val"], counts["test"])
    except (OSError, ValueError, KeyError, VlsmBatchError):
        return None


def pack_row(cell: Cell, trials: list[Trial], pack: int | str, sizes: SplitSizes | None, device: Device) -> PackRow:
    """The packs of one cell's trials still to run, with their peak memory and device-hours.

    With ``pack: auto`` an array task holds up to :data:`AUTO_MAX` trials and trains them N at a time, N from
    :func:`estimate.auto_pack_size` for the device's memory (the run picks N again from the real free memory).
    """
    if not estimate.known(cell.model):
        groups = group_packs(trials, pack)
        per_pack = max(len(g) for g in groups)
        note = f"no architecture numbers for {cell.model}: no estimate"
        row = PackRow(cell.model, cell.dataset, cell.strategy, len(trials), len(groups), per_pack, None, None, None)
        row.note = note
        return row
    samples = sizes.total if sizes else 0
    memory = {t.trial_id: estimate.trial_memory(t.model, t.strategy, t.params, t.train, samples) for t in trials}
    flops = {
        t.trial_id: estimate.trial_flops(t.model, t.strategy, t.params, int(t.train.get("batch_size", 1)))
        for t in trials
    }
    groups = group_packs(trials, pack)
    auto_n = None
    largest = max(memory.values(), key=lambda m: m.per_member)
    if pack == "auto":
        auto_n = estimate.auto_pack_size(largest.per_member, largest.shared, device.memory_bytes)
        auto_n = min(auto_n, pack_limit(pack, cell.strategy))
    largest_group = max(len(g) for g in groups)
    at_once = min(auto_n, largest_group) if auto_n else largest_group
    peak = 0
    packed_s = unpacked_s = 0.0
    for group in groups:
        chunks = [group[i : i + at_once] for i in range(0, len(group), at_once)]
        for chunk in chunks:
            peak = max(peak, estimate.pack_memory([memory[t.trial_id] for t in chunk]))
        if sizes is not None:
            epochs = int(group[0].train.get("max_epochs", 0))
            work = sum(estimate.run_flops([flops[t.trial_id] for t in chunk], sizes, epochs) for chunk in chunks)
            packed_s += device.seconds(work, processes=1)
            alone = sum(estimate.run_flops([flops[t.trial_id]], sizes, epochs) for t in group)
            unpacked_s += device.seconds(alone, processes=len(group))
    note = ""
    if peak > device.memory_bytes:
        note = f"a pack needs more than the {device.memory_bytes / GiB:g} GiB device: the run splits it on OOM"
    if sizes is None:
        note = (note + "; " if note else "") + "dataset size unknown"
    return PackRow(
        cell.model,
        cell.dataset,
        cell.strategy,
        len(trials),
        len(groups),
        at_once,
        round(peak / GiB, 2),
        round(packed_s / 3600, 3) if sizes is not None else None,
        round(unpacked_s / 3600, 3) if sizes is not None else None,
        auto_n,
        round(largest.shared / GiB, 3),
        round(largest.per_member / GiB, 3),
        note,
    )


def assumptions_line(packs: PackPlan) -> str:
    """What the estimate assumes, in one paragraph (plan prints it under the pack table)."""
    d = packs.device
    weight_b, act_b = estimate.PRECISION_BYTES.get(packs.precision, (4, 4))
    return (
        f"estimate: assumes {d.tflops:g} TFLOP/s dense peak for precision {packs.precision} (default: an A100) x "
        f"{d.utilization:.0%} utilisation, {d.startup_s:g} s start-up per process and max_epochs for every trial "
        "(an upper bound: early stopping and pruning end trials sooner). Device-hours = FLOPs per image from the "
        "architectures (backward 1x forward through frozen weights, 2x where weights train; the frozen image "
        "forward of coop, cocoop, decoder_finetune, zero_shot and SAM 3's detr_vpt once per pack) x (train x "
        "max_epochs + val x "
        f"max_epochs + val + test once). Peak memory: {weight_b}-byte weights, {act_b:g}-byte activations at batch "
        f"{packs.batch_size}, {estimate.TEXT_TOKENS}-token prompts, AdamW state, the dataset cache and "
        f"{estimate.RUNTIME_BYTES / GiB:g} GiB runtime per process; device memory {d.memory_bytes / GiB:g} GiB. "
        "Change with --device-tflops, --utilization, --startup-s, --device-memory-gb."
    )


PACK_HEADERS = ["model", "dataset", "strategy", "to run", "packs", "per pack", "peak GiB"]
PACK_HEADERS += ["device-h packed", "device-h unpacked"]


def format_packs(packs: PackPlan) -> str:
    """The pack table of the trials still to run, its totals, and what the estimate assumes."""
    t = packs.totals()
    auto = packs.pack == "auto"
    tasks = "array task" if t["array_size"] == 1 else "array tasks"
    head = f"packs (resources.pack: {packs.pack}): {t['to_run']:,} trials to run in {t['array_size']:,} {tasks}"
    head += f" of up to {AUTO_MAX} trials" if auto else ""
    if not packs.rows:
        return head
    noted = any(r.note for r in packs.rows)
    rows: list[list[Any]] = [
        [r.model, r.dataset, r.strategy, r.to_run, r.packs, r.per_pack, r.peak_gib, r.hours_packed, r.hours_unpacked]
        + ([r.note] if noted else [])
        for r in packs.rows
    ]
    hours = [t["device_hours_packed"], t["device_hours_unpacked"]]
    rows.append(["total", "", "", t["to_run"], t["array_size"], None, t["peak_gib"], *hours] + ([""] if noted else []))
    lines = [head, render(PACK_HEADERS + (["note"] if noted else []), rows)]
    gpus = f" (x {packs.gpus_per_task} GPUs allocated per task)" if packs.gpus_per_task > 1 else ""
    lines.append(
        f"array size {t['array_size']:,} (one task per pack); device-hours {hours[0]:,} packed, "
        f"{hours[1]:,} unpacked{gpus}"
    )
    if auto:
        ns = sorted({r.auto_n for r in packs.rows if r.auto_n and r.strategy not in SOLO_STRATEGIES})
        chosen = "-" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]} (by cell)"
        lines.append(
            f"pack: auto trains N trials at once per task, N = {chosen} for {packs.device.memory_bytes / GiB:g} GiB "
            f'of free device memory ({estimate.AUTO_MARGIN:.0%} left unused; "per pack" is the smaller of N and '
            "the task's trials); the run picks N again from the free memory of its own device"
        )
    if packs.unknown_sizes:
        lines.append(
            f"dataset size unknown for {', '.join(packs.unknown_sizes)} (not on disk): their cells have no "
            "device-hours and are not in the totals"
        )
    lines.append(assumptions_line(packs))
    return "\n".join(
        textwrap.fill(line, width=118, subsequent_indent="  ") if "\n" not in line else line for line in lines
    )


def format_plan(spec: StudySpec, plan: Plan, expansion: Expansion) -> str:
    t = plan.totals
    s = spec.search
    head = (
        f"study {spec.study} -> {spec.output_dir}\n"
        f"  {len(spec.models)} models x {len(spec.datasets)} datasets x "
        f"{len(spec.strategies) + len(spec.baselines)} strategies, {s.method}"
        + (f" {s.trials} per cell" if s.trials else "")
        + f", seeds {list(spec.seeds)}; objective {s.objective_metric} ({s.objective_mode})\n"
    )
    rows = [
        [r.model, r.dataset, r.strategy, r.trials, r.new, r.done, r.failed, r.other, r.note]
        for r in plan.rows
        if r.note != "skipped"
    ]
    rows.append(["total", "", "", t["trials"], t["new"], t["done"], t["failed"], t["other"], ""])
    body = render(["model", "dataset", "strategy", "trials", "new", "done", "failed", "other", "note"], rows)
    if plan.packs is not None:
        body += "\n" + format_packs(plan.packs)
    notes = []
    skipped = [c for c in expansion.cells if c.skipped]
    if skipped:
        notes.append(f"{len(skipped)} cells skipped (the model cannot run the strategy; nothing runs for them):")
        by_pair: dict[tuple[str, str, str], int] = {}
        for c in skipped:
            key = (c.model, c.strategy, c.skipped or "")
            by_pair[key] = by_pair.get(key, 0) + 1
        notes.extend(f"  {s} on {m} ({n} datasets): {why}" for (m, s, why), n in by_pair.items())
    if plan.unsupported:
        reasons = sorted({c.unsupported for c in expansion.cells if c.unsupported and not c.skipped})
        notes.append(f"{plan.unsupported} trials are not trainable in this build; submit will refuse them:")
        notes.extend(f"  {r}" for r in reasons)
    notes.extend(search_notes(spec, expansion))
    notes.extend(override_lines(spec))  # per_strategy train / resources
    skip_notes = {f"{c.strategy} skipped for {c.model}: {c.skipped}" for c in skipped}
    notes.extend(f"note: {n}" for n in spec.notes if n not in skip_notes)
    return head + body + ("\n" + "\n".join(notes) if notes else "")


def search_notes(spec: StudySpec, expansion: Expansion) -> list[str]:
    """What plan says about adaptive search and pruning (nothing here imports Optuna)."""
    s, notes = spec.search, []
    adaptive = [t for t in expansion.runnable if t.adaptive]
    if adaptive:
        studies = len({t.optuna.get("study") for t in adaptive})
        notes.append(
            f"{len(adaptive)} trials will be asked from {studies} Optuna TPE studies (one per cell and seed, "
            f"{s.trials} asks each; the first {s.n_startup_trials} at random): their values are chosen adaptively "
            "when each task starts, from the results so far, so plan cannot list them; `status` and `analyze` show "
            "them once asked. With array parallelism P the first P asks see no result: keep n_startup_trials >= P"
        )
    if s.pruner.active:
        p = s.pruner
        how = (
            f"asha (min_resource {p.min_resource}, reduction_factor {p.reduction_factor})"
            if p.kind == "asha"
            else f"median (warmup {p.warmup}, n_startup_trials {p.n_startup_trials})"
        )
        notes.append(
            f"pruner {how}{f', grace {p.grace} epochs' if p.grace else ''}: unpromising trials stop early and end "
            "as pruned (finished, not failed, never retried)"
        )
    return notes
