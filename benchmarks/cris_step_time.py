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

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from strategy_step_time import inputs, measure_strategies, parser

from vlsm_batch.models.cris import build_net, wrap_cris
from vlsm_batch.models.tokenizer import offline_clip_tokenizer

PARAMS: dict[str, dict[str, Any]] = {"cocoop": {"intermediate_dim": 64}}  # reference default h = 64


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parser(__doc__, "coop,cocoop", "comma-separated: coop, cocoop, finetune").parse_args(argv)
    device = torch.device(args.device)
    net = build_net("full", 0.0).to(device)
    tokenizer = offline_clip_tokenizer()
    base = wrap_cris(net, tokenizer, "cris", "zero_shot", {}).to(device).eval()
    x = inputs(base, args.batch, device)  # type: ignore[arg-type]
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} cris 416 px random init, "
        f"batch {args.batch}, prompt_depth {args.depth}, upsampler {args.upsampler}"
    )
    return measure_strategies(
        args,
        args.strategies.split(","),
        lambda strategy, params: wrap_cris(net, tokenizer, "cris", strategy, params),
        lambda: base(**x),
        x,
        PARAMS,
    )


if __name__ == "__main__":
    main()
