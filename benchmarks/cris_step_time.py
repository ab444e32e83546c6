"""Training-step time of full-size CRIS (random weights, 416 px) per strategy, against its frozen forward pass.

One random-init CRIS is built once; every strategy wraps the same frozen weights. For each precision the table
shows the best-of-N time of the frozen model's forward (zero-shot wrapper, no grad: the floor for prompt tuning)
and, per strategy, of one training step (forward + backward + AdamW step), measured interleaved after warm-up
(see ``strategy_step_time.py`` for why best-of-N and interleaving). ``finetune`` (every weight, decoder dropout
0.2) is left out unless listed.

    .venv/bin/python benchmarks/cris_step_time.py [--depth 1] [--batch 1] [--repeats 3] [--device cpu|cuda]
        [--strategies coop,cocoop] [--upsampler] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from strategy_step_time import autocast, inputs, print_progress, report, row, step_fn, timed_pair

from vlsm_batch.models.cris import build_net, wrap_cris
from vlsm_batch.models.tokenizer import offline_clip_tokenizer

PARAMS: dict[str, dict[str, Any]] = {"cocoop": {"intermediate_dim": 64}}  # reference default h = 64


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=1, help="prompt_depth of every strategy")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (fastest reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--strategies", default="coop,cocoop", help="comma-separated: coop, cocoop, finetune")
    parser.add_argument("--upsampler", action="store_true", help="add the learnable upsampler head")
    parser.add_argument("--json", dest="json_path", help="also write the rows to this file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    precisions = args.precisions.split(",")
    strategies = args.strategies.split(",")
    net = build_net("full", 0.0).to(device)
    tokenizer = offline_clip_tokenizer()
    base = wrap_cris(net, tokenizer, "cris", "zero_shot", {}).to(device).eval()
    x = inputs(base, args.batch, device)  # type: ignore[arg-type]
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} cris 416 px random init, "
        f"batch {args.batch}, prompt_depth {args.depth}, upsampler {args.upsampler}"
    )
    rows: list[dict[str, Any]] = []
    for strategy in strategies:
        params = {"prompt_depth": args.depth, "learnable_upsampler": args.upsampler, **PARAMS.get(strategy, {})}
        model = wrap_cris(net, tokenizer, "cris", strategy, params).to(device).train()
        for precision in precisions:

            def forward(p: str = precision) -> None:
                with torch.no_grad(), autocast(device, p):
                    base(**x)

            fwd, step = timed_pair(forward, step_fn(model, x, precision), device, args.repeats, args.warmup)  # type: ignore[arg-type]
            rows.append(row(strategy, precision, step, fwd, model.trainable_parameter_count()))
        print_progress(strategy, rows[-len(precisions) :])
        del model
    rows = report(rows, strategies, precisions)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump({"device": str(device), "depth": args.depth, "batch": args.batch, "rows": rows}, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
