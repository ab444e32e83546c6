"""Command line: ``vlsm-batch validate|plan|submit|status|analyze|list``.

Each subcommand is a few lines around one pipeline function. Heavy modules (torch, polars, matplotlib) are
imported inside the subcommand that needs them, so ``--help`` and the light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import SpecError, VlsmBatchError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Each module exposes add_commands(subparsers); one line per pipeline stage that brings its own commands.
COMMAND_MODULES: tuple[str, ...] = (
    "vlsm_batch.analysis.commands",
    "vlsm_batch.analysis.export",
    "vlsm_batch.datasets.commands",
    "vlsm_batch.jobs.commands",
    "vlsm_batch.models.commands",
)


def _out(text: str = "") -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _submitted_at(root: Path) -> float:
    from .layout import StudyLayout

    sub = StudyLayout(root).submissions
    return sub.stat().st_mtime if sub.exists() else 0.0


def study_dir(arg: str | None) -> Path:
    from .errors import StudyNotFoundError
    from .layout import StudyLayout, find_latest_study

    if arg:
        root = Path(arg)
        if not StudyLayout(root).exists():
            raise StudyNotFoundError(
                f"{root} is not a study folder (no trials.jsonl); pass the output_dir of a submitted spec."
            )
        return root
    import os

    bases = [Path.cwd()] + ([Path(os.environ["VLSM_RUNS"])] if os.environ.get("VLSM_RUNS") else [])
    found = [f for f in (find_latest_study(b) for b in bases) if f is not None]
    if not found:
        raise StudyNotFoundError(
            "no study found under the current folder or $VLSM_RUNS (looked for */trials.jsonl two levels "
            "deep); run `vlsm-batch submit SPEC` first or pass --study DIR."
        )
    return max(found, key=_submitted_at)


def cmd_validate(args: argparse.Namespace) -> int:
    from .spec import load_spec
    from .trials import expand

    bad = 0
    for path in args.spec:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            bad += 1
            _err("\n".join(exc.errors))
            _err(f"{path}: {len(exc.errors)} error(s)")
            continue
        n = len(expand(spec).trials)
        _out(f"{path}: ok ({spec.study}: {n:,} trials)")
        for note in spec.notes:
            _out(f"  note: {note}")
    return EXIT_FAILED if bad else EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .jobs.estimate import default_device
    from .jobs.plan import format_plan, make_plan
    from .spec import load_spec
    from .trials import expand

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
        from .jobs.slurm import sbatch_plan_text

        _out(sbatch_plan_text(spec, plan.array_size, args.max_array_size))  # one array task per pack
        return EXIT_OK
    _out(json.dumps(plan.as_dict(), indent=2) if args.json else format_plan(spec, plan, expansion))
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
    from .jobs.submit import submit
    from .spec import load_spec
    from .trials import expand

    spec = load_spec(args.spec)
    expansion = expand(spec)
    _err(f"validated {args.spec}: {len(expansion.trials):,} trials")

    def show_change(change: Any) -> None:
        if change.summary():
            _err(change.summary())

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
        _out(f"nothing to launch{skip_text}; study: {result.layout.root}")
        return EXIT_OK
    if result.executor == "slurm":
        arrays = list(dict.fromkeys(j.split("_")[0] for j in result.job_ids))
        tasks = f" in {len(result.packs)} array task(s)" if len(result.packs) != len(result.launched) else ""
        _out(
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
    _out(f"{', '.join(parts)}{skip_text}; study: {result.layout.root}")
    for problem in local.problems[:5]:
        _err(f"error: {problem}")
    if local.interrupted:
        _err("interrupted: the running trials were recorded cancelled with their checkpoints; run the same submit "
             "command again to resume.")  # fmt: skip
        return EXIT_INTERRUPTED
    if local.problems:
        return EXIT_FAILED
    if local.failed:
        _err("some trials failed: `vlsm-batch status` shows why.")
        return EXIT_FAILED
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from .jobs.status import format_status, load_status
    from .layout import StudyLayout

    layout = StudyLayout(study_dir(args.study))
    if args.watch is not None:
        if not args.watch > 0:
            raise VlsmBatchError(f"--watch {args.watch:g}: the refresh interval must be a positive number of seconds")
        return watch_status(layout, args.watch, args.json)
    st = load_status(layout)
    _out(json.dumps(st.as_dict(), indent=2, default=str) if args.json else format_status(st))
    return EXIT_OK


def watch_status(layout: Any, interval: float, as_json: bool = False, max_rounds: int | None = None) -> int:
    """Redraw ``status`` in place every ``interval`` seconds until nothing is left to run, or Ctrl-C.

    Plain ANSI (home, clear to end of screen) on a terminal, so no extra dependency; into a pipe or file each
    refresh is appended after a separator line instead. ``max_rounds`` bounds the loop (tests).
    """
    import time

    from .jobs.status import format_status, load_status

    tty = sys.stdout.isatty() and not as_json
    rounds = 0
    try:
        while True:
            st = load_status(layout)
            text = json.dumps(st.as_dict(), default=str) if as_json else format_status(st)
            stamp = time.strftime("%H:%M:%S")
            done = st.finished()
            foot = "study finished." if done else f"refreshing every {interval:g} s; Ctrl-C to stop watching"
            if tty:
                sys.stdout.write("\x1b[H\x1b[J" + text + f"\n\n[{stamp}] {foot}\n")
                sys.stdout.flush()
            else:
                _out(text if as_json else f"--- {stamp}\n{text}\n{foot}")
            rounds += 1
            if done or (max_rounds is not None and rounds >= max_rounds):
                return EXIT_OK
            time.sleep(interval)
    except KeyboardInterrupt:
        _out()
        return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from .datasets import DATASETS
    from .models import MODELS
    from .strategies import STRATEGIES
    from .textable import render

    if args.what in ("models", "all"):
        rows = [
            [m.name, m.image_size, m.max_prompt_depth, "yes" if m.implemented else "not yet", m.description]
            for m in (MODELS.get(n) for n in MODELS)
        ]
        _out(render(["model", "px", "max depth", "trainable", "description"], rows))
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
        _out(render(["strategy", "prompts", "trainable on", "parameters"], rows))
    if args.what in ("datasets", "all"):
        rows = [
            [d.name, d.domain, d.modality, d.layout, "yes" if d.implemented else "not yet"]
            for d in (DATASETS.get(n) for n in DATASETS)
        ]
        _out(render(["dataset", "domain", "modality", "layout", "loader"], rows))
    return EXIT_OK


def cmd_run_trial(args: argparse.Namespace) -> int:
    from .jobs import store
    from .jobs.task import run_trial_task
    from .layout import TrialPaths

    paths = TrialPaths(Path(args.trial_dir))
    if not paths.config.is_file():
        raise VlsmBatchError(f"{paths.root} is not a trial folder (no config.json): pass runs/<study>/trials/<id>")
    try:  # queue it for this process (a failed or cancelled trial is retried; done and running are refused)
        store.submit(paths, "inline", store.read(paths).spec_version, retry_failed=True)
    except store.IllegalTransition as exc:
        raise VlsmBatchError(f"{exc}; nothing was run") from None
    result = run_trial_task(args.trial_dir, executor="inline")
    if "skipped" in result:
        _err(result["skipped"])
        return EXIT_FAILED
    return EXIT_INTERRUPTED if "cancelled" in result else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vlsm-batch",
        description="Declarative prompt-tuning studies for vision-language segmentation models.",
        epilog="Typical use: vlsm-batch submit specs/quickstart.yaml; vlsm-batch status; "
        "vlsm-batch analyze --by prompt_depth",
    )
    p.add_argument("--version", action="version", version=f"vlsm-batch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("validate", help="check study files against the schema and the registries")
    s.add_argument("spec", nargs="+", help="study YAML file(s)")
    s.set_defaults(func=cmd_validate)

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

    s = sub.add_parser("submit", help="validate, write the study folder and launch what is not done yet")
    s.add_argument("spec", help="study YAML file")
    s.add_argument("--retry-failed", action="store_true", help="also relaunch failed trials")
    s.add_argument(
        "--executor", choices=["auto", "slurm", "local"], default=None, help="override resources.executor of the spec"
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar (local runs)")
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser("status", help="state of every trial, best objective, failures with log tails")
    s.add_argument("--study", help="study folder (default: the most recent one under the current folder)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=10.0,
        default=None,
        metavar="SECONDS",
        help="refresh in place every SECONDS (default 10) until the study finishes or Ctrl-C",
    )
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("list", help="registered models, strategies and datasets")
    s.add_argument("what", nargs="?", default="all", choices=["all", "models", "strategies", "datasets"])
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("run-trial", help="train one trial folder in this process (debugging)")
    s.add_argument("trial_dir", help="runs/<study>/trials/<id>")
    s.set_defaults(func=cmd_run_trial)
    for module in COMMAND_MODULES:  # light modules (no torch at import) that add their own subcommands
        importlib.import_module(module).add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SpecError as exc:
        _err("\n".join(exc.errors))
        _err(f"{len(exc.errors)} error(s); nothing was done.")
        return EXIT_FAILED
    except VlsmBatchError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted.")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `vlsm-batch plan SPEC | head`
        sys.stderr.close()
        return EXIT_OK
