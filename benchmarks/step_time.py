"""Cost of CoOp training relative to a frozen forward, for clipseg-tiny and full-size CLIPSeg (random weights).

For each model / batch / precision: the median time of a frozen forward (stock transformers model, no grad: what a
zero-shot evaluation costs) and of one CoOp training step (forward + backward + AdamW step), after warm-up.

    .venv/bin/python benchmarks/step_time.py [--repeats 5] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from strategy_step_time import autocast, timed

from vlsm_batch.models.clipseg import CLIPSegPromptedSegmenter
from vlsm_batch.models.factory import create_model

PROMPT = "a small benign tumour in the left breast"


def measure(
    model: CLIPSegPromptedSegmenter, batch_size: int, precision: str, device: torch.device, repeats: int, warmup: int
) -> dict[str, Any]:
    size = model.image_size
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch_size, 3, size, size, generator=gen).to(device)
    target = (torch.rand(batch_size, 1, size, size, generator=gen) > 0.5).float().to(device)
    tokens = {k: v.to(device) for k, v in model.tokenize([PROMPT] * batch_size).items()}
    optimizer = torch.optim.AdamW(model.param_groups(1e-3), lr=1e-3)

    def frozen_forward() -> None:
        with torch.no_grad(), autocast(device, precision):
            model.clipseg(pixel_values=pixels, **tokens)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            logits = model(pixels, **tokens)
        F.binary_cross_entropy_with_logits(logits.float(), target).backward()
        optimizer.step()

    model.train()
    forward_s = timed(frozen_forward, device, repeats, warmup, pick=statistics.median)
    step_s = timed(train_step, device, repeats, warmup, pick=statistics.median)
    return {
        "model": model.name,
        "image_size": size,
        "batch": batch_size,
        "precision": precision,
        "forward_ms": forward_s * 1e3,
        "step_ms": step_s * 1e3,
        "step_over_forward": step_s / forward_s,
        "trainable_params": model.trainable_parameter_count(),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--depth", type=int, default=1, help="CoOp prompt_depth")
    parser.add_argument("--upsampler", action="store_true", help="add the learnable upsampler head")
    parser.add_argument("--full-batches", default="1", help="comma-separated batch sizes for full-size CLIPSeg")
    parser.add_argument("--skip-full", action="store_true", help="only clipseg-tiny")
    parser.add_argument("--json", dest="json_path", help="also write the rows to this file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    params = {"prompt_depth": args.depth, "learnable_upsampler": args.upsampler}
    runs = [("clipseg-tiny", [8, 1])]
    if not args.skip_full:
        runs.append(("clipseg", [int(b) for b in args.full_batches.split(",")]))
    rows = []
    header = (
        f"{'model':<13}{'px':>5}{'batch':>6}  {'prec':<5}{'frozen fwd ms':>14}{'CoOp step ms':>14}"
        f"{'step/fwd':>9}{'trainable':>11}"
    )
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} depth={args.depth}")
    print(header)
    print("-" * len(header))
    for name, batches in runs:
        model = create_model(name, "coop", params, random_init=True).to(device)
        for batch_size in batches:
            for precision in ("fp32", "bf16"):
                row = measure(model, batch_size, precision, device, args.repeats, args.warmup)
                rows.append(row)
                print(
                    f"{row['model']:<13}{row['image_size']:>5}{row['batch']:>6}  {precision:<5}"
                    f"{row['forward_ms']:>14.1f}{row['step_ms']:>14.1f}{row['step_over_forward']:>9.2f}"
                    f"{row['trainable_params']:>11,}",
                    flush=True,
                )
        del model
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump({"device": str(device), "depth": args.depth, "rows": rows}, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
