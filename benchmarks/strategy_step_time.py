"""Per-strategy training-step time of full-size CLIPSeg (random weights, 352 px), against the frozen forward.

One random-init CLIPSeg is built once; every strategy wraps the same frozen weights. For each precision the table
shows the best-of-N time of the frozen model's plain forward (stock transformers model, no grad: the floor for
prompt tuning) and, per strategy, of one training step (forward + backward + AdamW step), after warm-up. The two
are measured interleaved (forward, step, forward, step, ...) so that each ratio compares calls made under the same
load, and best of N rather than the median: on a shared machine the minimum is the least disturbed measurement.

    .venv/bin/python benchmarks/strategy_step_time.py [--depth 1] [--batch 1] [--repeats 3] [--device cpu|cuda]
        [--strategies coop,vpt,...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch.nn import functional as F

from vlsm_batch.models.clipseg import CLIPSegPromptedSegmenter, build_clipseg, wrap_clipseg

PROMPT = "a small benign tumour in the left breast"
STRATEGIES = ("coop", "cocoop", "vpt", "maple", "shared_separate", "shared_attn", "finetune")
PARAMS: dict[str, dict[str, Any]] = {  # reference defaults (docs/science.md §3.1): h = 64, s = 64, F = 1536, 16 heads
    "cocoop": {"intermediate_dim": 64},
    "maple": {"intermediate_dim": 64},
    "shared_separate": {"shared_dim": 64},
    "shared_attn": {"ffn_dim": 1536, "num_heads": 16, "dropout": 0.25},
}


def timed(
    fn: Callable[[], Any],
    device: torch.device,
    repeats: int,
    warmup: int,
    pick: Callable[[list[float]], float] = min,
) -> float:
    """``pick`` (default: the fastest) of ``repeats`` timed calls of ``fn``, in seconds (the device is synchronised
    around every call)."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return pick(times)


def timed_pair(
    first: Callable[[], Any], second: Callable[[], Any], device: torch.device, repeats: int, warmup: int
) -> tuple[float, float]:
    """Fastest of ``repeats`` interleaved calls of ``first`` and ``second``, in seconds (after warm-up)."""
    for _ in range(warmup):
        first()
        second()
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(first, device, 1, 0))
        b.append(timed(second, device, 1, 0))
    return min(a), min(b)


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def inputs(model: CLIPSegPromptedSegmenter, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    size = model.image_size
    pixels = torch.randn(batch, 3, size, size, generator=gen).to(device)
    return {"pixel_values": pixels, **{k: v.to(device) for k, v in model.tokenize([PROMPT] * batch).items()}}


def step_fn(model: CLIPSegPromptedSegmenter, x: dict[str, torch.Tensor], precision: str) -> Callable[[], None]:
    device = x["pixel_values"].device
    target = (torch.rand(x["pixel_values"].shape[0], 1, *x["pixel_values"].shape[-2:]) > 0.5).float().to(device)
    optimizer = torch.optim.AdamW(model.param_groups(1e-3), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            logits = model(**x)
        F.binary_cross_entropy_with_logits(logits.float(), target).backward()
        optimizer.step()

    return step


def row(strategy: str, precision: str, step_s: float, forward_s: float, trainable: int) -> dict[str, Any]:
    """One measurement: a training step against the frozen forward timed alongside it."""
    return {
        "strategy": strategy,
        "precision": precision,
        "ms": step_s * 1e3,
        "forward_ms": forward_s * 1e3,
        "over_forward": step_s / forward_s,
        "trainable_params": trainable,
    }


def print_progress(strategy: str, rows: list[dict[str, Any]]) -> None:
    cells = ", ".join(f"{r['precision']} {r['ms']:.0f} ms (fwd {r['forward_ms']:.0f})" for r in rows)
    print(f"{strategy}: {cells}", flush=True)


def report(rows: list[dict[str, Any]], strategies: list[str], precisions: list[str]) -> list[dict[str, Any]]:
    """Print the table (the floor row = fastest frozen forward per precision); return rows plus the floor."""
    floor = {p: min(r["forward_ms"] for r in rows if r["precision"] == p) / 1e3 for p in precisions}
    header = f"{'strategy':<16}{'trainable':>13}" + "".join(f"{p + ' ms':>11}{'x fwd':>7}" for p in precisions)
    print(f"\n{header}\n{'-' * len(header)}")
    print(f"{'frozen forward':<16}{0:>13,}" + "".join(f"{floor[p] * 1e3:>11.0f}{1:>7.2f}" for p in precisions))
    for strategy in strategies:
        mine = {r["precision"]: r for r in rows if r["strategy"] == strategy}
        cells = "".join(f"{mine[p]['ms']:>11.0f}{mine[p]['over_forward']:>7.2f}" for p in precisions)
        print(f"{strategy:<16}{mine[precisions[0]]['trainable_params']:>13,}{cells}")
    return rows + [{"strategy": "frozen forward", "precision": p, "ms": floor[p] * 1e3} for p in precisions]


def parser(description: str | None, strategies: str, strategies_help: str) -> argparse.ArgumentParser:
    """The options every per-strategy step-time benchmark takes (CLIPSeg here, CRIS in cris_step_time.py)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=1, help="prompt_depth of every strategy")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (fastest reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--strategies", default=strategies, help=strategies_help)
    p.add_argument("--upsampler", action="store_true", help="add the learnable upsampler head")
    p.add_argument("--json", dest="json_path", help="also write the rows to this file")
    return p


def measure_strategies(
    args: argparse.Namespace,
    strategies: list[str],
    wrap: Callable[[str, dict[str, Any]], Any],
    frozen_forward: Callable[[], Any],
    x: dict[str, torch.Tensor],
    params: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """One training step per strategy and precision against the frozen forward, timed interleaved; prints the
    table and writes ``--json``. ``wrap(strategy, params)`` builds the prompted model around the shared weights."""
    device, precisions = torch.device(args.device), args.precisions.split(",")
    rows: list[dict[str, Any]] = []
    for strategy in strategies:
        p = {"prompt_depth": args.depth, "learnable_upsampler": args.upsampler, **params.get(strategy, {})}
        model = wrap(strategy, p).to(device).train()
        for precision in precisions:

            def forward(prec: str = precision) -> None:
                with torch.no_grad(), autocast(device, prec):
                    frozen_forward()

            fwd, step = timed_pair(forward, step_fn(model, x, precision), device, args.repeats, args.warmup)
            rows.append(row(strategy, precision, step, fwd, model.trainable_parameter_count()))
        print_progress(strategy, rows[-len(precisions) :])
        del model
    rows = report(rows, strategies, precisions)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump({"device": str(device), "depth": args.depth, "batch": args.batch, "rows": rows}, fh, indent=2)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parser(__doc__, ",".join(STRATEGIES), "comma-separated; finetune runs last").parse_args(argv)
    device = torch.device(args.device)
    strategies = [s for s in args.strategies.split(",") if s != "finetune"]
    strategies += ["finetune"] if "finetune" in args.strategies.split(",") else []  # unfreezes the shared base
    base = build_clipseg("zero_shot", {}, random_init=True).to(device).eval()
    x = inputs(base, args.batch, device)
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} clipseg 352 px random init, "
        f"batch {args.batch}, prompt_depth {args.depth}, upsampler {args.upsampler}"
    )
    base.clipseg.eval()
    return measure_strategies(
        args,
        strategies,
        lambda strategy, params: wrap_clipseg(base.clipseg, base.tokenizer, "clipseg", strategy, params),
        lambda: base.clipseg(**x),  # the same weights, stock transformers forward
        x,
        PARAMS,
    )


if __name__ == "__main__":
    main()
