"""The ``predict`` subcommand (registered by ``cli.COMMAND_MODULES``): a trial's predicted masks as PNGs.

Light at import; torch and the model are loaded inside the command only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import VlsmBatchError


def _trial_dirs(args: argparse.Namespace) -> list[Path]:
    """The trial folders named (paths, or ids of the study) or, with ``--best``, the best trial of every cell."""
    from ..cli import study_dir
    from ..layout import StudyLayout

    out = []
    layout = None
    for name in args.trials or []:
        p = Path(name)
        if (p / "config.json").is_file():
            out.append(p)
            continue
        layout = layout or StudyLayout(study_dir(args.study))
        d = layout.trial(name).root
        if not (d / "config.json").is_file():
            raise VlsmBatchError(f"{name}: neither a trials/<id> folder nor a trial id of {layout.root}")
        out.append(d)
    if args.best:
        from .collect import collect
        from .curves import best_trials
        from .run import REPORTED, objective_of
        from .tables import best, configs

        layout = layout or StudyLayout(study_dir(args.study))
        objective, mode = objective_of(layout)
        df = collect(layout)
        chosen = best_trials(best(configs(df, objective, list(REPORTED)), mode), df, objective, mode)
        out += [layout.trial(tid).root for _, tid in chosen]
    if not out:
        raise VlsmBatchError("predict: name trial folders or ids, or pass --best for the best trial of every cell")
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    from ..training.predict import predict_trial

    if args.limit is not None and args.limit < 1:
        raise VlsmBatchError(f"--limit {args.limit}: must be at least 1")
    dirs = _trial_dirs(args)
    if args.out and len(dirs) > 1:
        raise VlsmBatchError("--out takes one trial; without it each trial's masks go to trials/<id>/predictions/")
    for i, d in enumerate(dirs, 1):
        print(f"[{i}/{len(dirs)}] predicting {d.name} ({args.split}) ...", file=sys.stderr, flush=True)
        folder = predict_trial(d, split=args.split, limit=args.limit, out_dir=Path(args.out) if args.out else None)
        print(folder, flush=True)
    return 0


def add_commands(sub: Any) -> None:
    s = sub.add_parser(
        "predict",
        help="write a trial's predicted masks as PNGs (best checkpoint, original resolution)",
        description="Run a finished trial's best checkpoint on a split and write one 0/255 PNG mask per image at "
        "its original resolution, plus index.json (image, ground truth, prediction, Dice). `analyze` then shows "
        "an overlay grid of the best trial of each cell.",
    )
    s.add_argument("trials", nargs="*", help="trials/<id> folders or trial ids of --study")
    s.add_argument("--study", help="study folder (default: the most recent one under the current folder)")
    s.add_argument("--best", action="store_true", help="also the best trial (on validation) of every cell")
    s.add_argument("--split", choices=["test", "val", "train"], default="test", help="which split (default test)")
    s.add_argument("--limit", type=int, default=None, help="at most N images per trial")
    s.add_argument("--out", help="folder for the PNGs (one trial only; default trials/<id>/predictions/<split>/)")
    s.set_defaults(func=cmd_predict)
