"""``vlsm-batch data prepare|verify``: PIL/numpy only, no torch."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def default_data_root() -> Path:
    return Path(os.environ.get("VLSM_DATA") or "data")


def _targets(args: argparse.Namespace) -> tuple[Path, list[tuple[str, Any, str | None]]]:
    """(data root, [(name, DatasetInfo, prompt key)]) from the registry, or from a spec with ``--spec``."""
    from ..datasets import DATASETS, get_dataset
    from ..errors import VlsmBatchError

    if args.spec:
        from ..spec import load_spec
        from ..trials.expand import dataset_info, trial_prompt_key

        spec = load_spec(args.spec)
        unknown = [n for n in args.names if n not in spec.datasets]
        if unknown:
            raise VlsmBatchError(
                f"{', '.join(unknown)} not among the datasets of {args.spec} ({', '.join(spec.datasets)}); "
                "name datasets of the spec, or none to check them all"
            )
        data_root = Path(args.data_root) if args.data_root else spec.data_root
        names = args.names or list(spec.datasets)
        return data_root, [(n, dataset_info(spec, n), args.prompt_key or trial_prompt_key(spec, n)) for n in names]
    data_root = Path(args.data_root) if args.data_root else default_data_root()
    names = args.names or [n for n in DATASETS if (data_root / get_dataset(n).folder).is_dir()]
    return data_root, [(n, get_dataset(n), args.prompt_key) for n in names]


def cmd_verify(args: argparse.Namespace) -> int:
    from ..datasets.synthetic import ensure_synthetic
    from ..datasets.verify import format_reports, verify_dataset

    data_root, targets = _targets(args)
    if not targets:
        print(f"no registered dataset found under {data_root}; name one to see what is missing", file=sys.stderr)
        return 1
    reports = []
    for _name, info, prompt_key in targets:
        # a dataset declared in a spec carries its own (absolute) path as its folder
        root = ensure_synthetic(data_root) if info.generated else data_root / info.folder
        reports.append(verify_dataset(info, root, quick=args.quick, prompt_key=prompt_key))
    print(f"data root: {data_root.absolute()}", flush=True)
    print(format_reports(reports), flush=True)
    bad = [r.name for r in reports if not r.ok]
    if bad:
        print(f"problems in {len(bad)} dataset(s): {', '.join(bad)}", file=sys.stderr, flush=True)
        return 1
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..datasets.prepare import prepare_dataset

    done = prepare_dataset(args.name, Path(args.source), Path(args.dest), args.val_fraction, progress=True)
    counts: Any = done.manifest["counts"]
    for split, c in counts.items():
        print(f"{split}: {c['images']} images, {c['samples']} (image, class) samples", flush=True)
    if done.unchanged and not done.written:
        print(f"nothing changed: {done.out} already holds this preparation ({done.unchanged} files)", flush=True)
    elif done.unchanged:
        print(f"added {done.written} missing file(s) to {done.out} ({done.unchanged} already there)", flush=True)
    else:
        print(f"wrote {done.out}", flush=True)
    if done.foreign:
        shown = ", ".join(done.foreign[:3]) + (", ..." if len(done.foreign) > 3 else "")
        print(
            f"note: {len(done.foreign)} file(s) in {done.out} are not part of this preparation and were left as "
            f"they are ({shown}); `vlsm-batch data verify` tells whether they get in the way",
            flush=True,
        )
    return 0


PREPARE_RECIPES = ("cityscapes", "voc2012")  # = prepare.RECIPES (not imported here: the parser stays light)


def add_commands(sub: Any) -> None:
    data = sub.add_parser("data", help="prepare and verify datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    s = dsub.add_parser(
        "prepare",
        help="official VOC 2012 / Cityscapes downloads -> one binary mask per (image, class)",
        description="Writes images/<split>/ and annotations/<split>/<class>/ (training, validation, test: test is "
        "the official val split, validation a deterministic part of the official train split) and prepared.json.",
    )
    s.add_argument("name", choices=PREPARE_RECIPES, help="dataset to prepare")
    s.add_argument("--from", dest="source", required=True, help="the official download (VOCdevkit/ or its VOC2012/; "
                   "the Cityscapes folder holding leftImg8bit/ and gtFine/)")  # fmt: skip
    s.add_argument("--to", dest="dest", required=True, help="output folder, e.g. $VLSM_DATA/voc2012 (absent, empty, "
                   "or holding this same preparation: no file is ever overwritten)")  # fmt: skip
    s.add_argument("--val-fraction", type=float, default=0.1, help="share of official train held out (default 0.1)")
    s.set_defaults(func=cmd_prepare)

    s = dsub.add_parser(
        "verify",
        help="check datasets: presence, counts, files, sizes, binary masks, prompts",
        description="Prints a table and every problem; exits 1 when any dataset has an error.",
    )
    s.add_argument("names", nargs="*", metavar="NAME", help="datasets to check (default: every one found)")
    s.add_argument(
        "--spec",
        help="check the datasets of this study spec as its trials will read them: its data_root, its "
        "custom_datasets, its prompt_key (default: registered datasets under --data-root)",
    )
    s.add_argument("--data-root", help="folder holding the datasets (default: the spec's data_root, else $VLSM_DATA, "
                   "else ./data)")  # fmt: skip
    s.add_argument("--quick", action="store_true", help="names, counts and presence only (no decoding)")
    s.add_argument("--prompt-key", help="prompt key to check (default: the dataset's, usually p1)")
    s.set_defaults(func=cmd_verify)
