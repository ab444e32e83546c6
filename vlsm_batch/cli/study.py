"""``validate``, ``plan``, ``submit`` and ``list``: from a study file to launched trials, and the catalogs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import SpecError
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, err, out


def cmd_validate(args: argparse.Namespace) -> int:
    from ..spec import load_spec
    from ..trials import expand

    bad = 0
    for path in args.spec:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            bad += 1
            err("\n".join(exc.errors))
            err(f"{path}: {len(exc.errors)} error(s)")
            continue
        n = len(expand(spec).trials)
        out(f"{path}: ok ({spec.study}: {n:,} trials)")
        for note in spec.notes:
            out(f"  note: {note}")
    return EXIT_FAILED if bad else EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..jobs.estimate import default_device
    from ..jobs.plan import format_plan, make_plan
    from ..spec import load_spec
    from ..trials import expand

    spec = load_spec(args.spec)
    expansion = expand(spec)
    device = default_device(spec.train.precision, args.device_memory_gb, args.device_tflops)
    device = replace(
        device,
        utilization=device.utilization if args.utilization is None else args.utilization,
        startup_s=device.startup_s if args.startup_s is None else args.startup_s,
    )
    plan = make_plan(spec, expansion, device)
    if args.sbatch:
        from ..jobs.groups import plan_tasks_by_strategy
        from ..jobs.slurm import sbatch_plan_text

        by_strategy = plan_tasks_by_strategy(plan)  # per_strategy resources: one set of arrays per resource group
        out(sbatch_plan_text(spec, plan.array_size, args.max_array_size, tasks_by_strategy=by_strategy))
        return EXIT_OK
    out(json.dumps(plan.as_dict(), indent=2) if args.json else format_plan(spec, plan, expansion))
    return EXIT_OK


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text!r}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], not {text!r}")
    return value


def cmd_submit(args: argparse.Namespace) -> int:
    from ..jobs.submit import submit
    from ..spec import load_spec
    from ..trials import expand

    spec = load_spec(args.spec)
    expansion = expand(spec)
    err(f"validated {args.spec}: {len(expansion.trials):,} trials")

    def show_change(change: Any) -> None:
        if change.summary():
            err(change.summary())

    result = submit(
        spec,
        expansion,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
        executor=args.executor,
        on_change=show_change,
    )
    skipped = []
    if result.skipped_done:
        skipped.append(f"{result.skipped_done} already done")
    if result.skipped_active:
        skipped.append(f"{result.skipped_active} queued or running")
    if result.skipped_failed:
        skipped.append(f"{result.skipped_failed} failed (add --retry-failed to relaunch)")
    skip_text = f" ({'; '.join(skipped)})" if skipped else ""
    if not result.launched:
        out(f"nothing to launch{skip_text}; study: {result.layout.root}")
        return EXIT_OK
    if result.executor == "slurm":
        arrays = list(dict.fromkeys(j.split("_")[0] for j in result.job_ids))
        tasks = f" in {len(result.packs)} array task(s)" if len(result.packs) != len(result.launched) else ""
        out(
            f"submitted {len(result.launched)} trials{tasks} to Slurm as {len(arrays)} job array(s) "
            f"{', '.join(arrays[:8])}{' ...' if len(arrays) > 8 else ''}{skip_text}; study: {result.layout.root}"
        )
        return EXIT_OK
    local = result.local
    assert local is not None
    parts = [f"{len(local.done)} done", f"{len(local.failed)} failed", f"{len(local.cancelled)} cancelled"]
    if local.pruned:
        parts.append(f"{len(local.pruned)} pruned")
    if local.not_started:
        parts.append(f"{len(local.not_started)} not started")
    if local.skipped:
        parts.append(f"{len(local.skipped)} trained by another process")
    out(f"{', '.join(parts)}{skip_text}; study: {result.layout.root}")
    for problem in local.problems[:5]:
        err(f"error: {problem}")
    if local.interrupted:
        err("interrupted: the running trials were recorded cancelled with their checkpoints; run the same submit "
             "command again to resume.")  # fmt: skip
        return EXIT_INTERRUPTED
    if local.problems:
        return EXIT_FAILED
    if local.failed:
        err("some trials failed: `vlsm-batch status` shows why.")
        return EXIT_FAILED
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from ..datasets import DATASETS
    from ..models import MODELS
    from ..strategies import STRATEGIES
    from ..textable import render

    if args.what in ("models", "all"):
        rows = [
            [m.name, m.image_size, m.max_prompt_depth, "yes" if m.implemented else "not yet", m.description]
            for m in (MODELS.get(n) for n in MODELS)
        ]
        out(render(["model", "px", "max depth", "trainable", "description"], rows))
    if args.what in ("strategies", "all"):
        rows = [
            [
                s.name,
                ",".join(sorted(s.towers)) or "-",
                ",".join(sorted(s.implemented_for)) or "not yet",
                ", ".join(s.param_names) or "-",
            ]
            for s in (STRATEGIES.get(n) for n in STRATEGIES)
        ]
        out(render(["strategy", "prompts", "trainable on", "parameters"], rows))
    if args.what in ("datasets", "all"):
        rows = [
            [d.name, d.domain, d.modality, d.layout, "yes" if d.implemented else "not yet"]
            for d in (DATASETS.get(n) for n in DATASETS)
        ]
        out(render(["dataset", "domain", "modality", "layout", "loader"], rows))
    return EXIT_OK


def add_validate(sub: Any) -> None:
    s = sub.add_parser("validate", help="check study files against the schema and the registries")
    s.add_argument("spec", nargs="+", help="study YAML file(s)")
    s.set_defaults(func=cmd_validate)


def add_plan(sub: Any) -> None:
    s = sub.add_parser("plan", help="show what a study expands to and what is already done (writes nothing)")
    s.add_argument("spec", help="study YAML file")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument(
        "--sbatch", action="store_true", help="print the exact sbatch script(s) submit would write for Slurm"
    )
    s.add_argument(
        "--max-array-size",
        type=int,
        default=None,
        help="with --sbatch: chunk under this MaxArraySize (default: the cluster's, or Slurm's default 1001)",
    )
    est = s.add_argument_group("estimate", "the device that the memory and device-hours estimate assumes")
    est.add_argument(
        "--device-memory-gb",
        metavar="GB",
        type=_positive_float,
        default=80.0,
        help="free device memory in GiB that `pack: auto` fills and packs are checked against (default 80)",
    )
    est.add_argument(
        "--device-tflops",
        metavar="TFLOPS",
        type=_positive_float,
        default=None,
        help="dense peak TFLOP/s for the study's precision (default: an A100, 312 bf16/fp16, 19.5 fp32)",
    )
    est.add_argument(
        "--utilization",
        metavar="FRACTION",
        type=_fraction,
        default=None,
        help="fraction of the peak a training step reaches (default 0.35)",
    )
    est.add_argument(
        "--startup-s",
        metavar="SECONDS",
        type=_non_negative_float,
        default=None,
        help="seconds of start-up per process: imports, model and data load (default 30)",
    )
    s.set_defaults(func=cmd_plan)


def add_submit(sub: Any) -> None:
    s = sub.add_parser("submit", help="validate, write the study folder and launch what is not done yet")
    s.add_argument("spec", help="study YAML file")
    s.add_argument("--retry-failed", action="store_true", help="also relaunch failed trials")
    s.add_argument(
        "--executor", choices=["auto", "slurm", "local"], default=None, help="override resources.executor of the spec"
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar (local runs)")
    s.set_defaults(func=cmd_submit)


def add_list(sub: Any) -> None:
    s = sub.add_parser("list", help="registered models, strategies and datasets")
    s.add_argument("what", nargs="?", default="all", choices=["all", "models", "strategies", "datasets"])
    s.set_defaults(func=cmd_list)
