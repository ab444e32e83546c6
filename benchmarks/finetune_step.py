"""The two fine-tuning baselines' training steps on full-size CLIPSeg (random weights, 352 px, fp32), with FLOPs.

(a) ``finetune`` (every weight) with the AdamW the trials use (``training.optim.make_adamw``: the fused kernel,
    on CPU too since torch 2.4), with foreach AdamW, and with torch's per-tensor AdamW
    (``torch.optim.AdamW(groups, lr=.., weight_decay=..)``, what a CPU trial ran before), on the same model;
(b) ``decoder_finetune`` against a like-for-like re-creation of the original's CLIPSeg E2E step: transformers'
    ``CLIPSegForImageSegmentation(input_ids=, pixel_values=, attention_mask=).logits`` with every parameter set
    trainable (its forward runs both CLIP encoders under no_grad, so only decoder weights get gradients), MONAI's
    DiceCE(lambda_dice 1, lambda_ce 0.2) as ``training.loss.dice_ce_loss`` reproduces it, and AdamW over all
    parameters in the original's two groups (lr 2e-4, weight decay 1e-3, torch's default implementation).

The steps of each group are timed interleaved (a, b, a, b, ...) after warm-up, so all see the same machine load;
the median is reported, with the optimizer step timed on its own. FLOPs are counted once per step with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention, forward + backward; attention
through the math kernel, which the counter sees; AdamW's elementwise work is not counted).

    .venv/bin/python benchmarks/finetune_step.py [--batches 4,1] [--repeats 5] [--warmup 1] [--json out.json]

About 3 minutes on an idle 2-core machine (results in benchmarks/README.md). When other jobs share the cores the
wall times spread; the CPU s column (all threads) and the interleaved ratios stay comparable.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vlsm_batch.models.clipseg import build_clipseg, wrap_clipseg
from vlsm_batch.training.loss import dice_ce_loss
from vlsm_batch.training.optim import make_adamw

PROMPT = "a small benign tumour in the left breast"
LR, WD = 2e-4, 1e-3  # the original's E2E settings (docs/science.md §4.4), also both baselines' defaults
_DECAY = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)

Step = Callable[[], tuple[float, float, float]]  # (forward + backward s, optimizer s, process CPU s), wall clock


def original_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The original's AdamW groups over *all* parameters (docs/science.md §5): decay on Linear/Conv weights and
    ``*proj_weight``, none on biases, norms, embeddings and free parameters."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            is_weight = (isinstance(module, _DECAY) and name == "weight") or name.endswith("proj_weight")
            (decay if is_weight else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_step(forward: Callable[[], torch.Tensor], target: torch.Tensor, optimizer: torch.optim.Optimizer) -> Step:
    def step() -> tuple[float, float, float]:
        cpu, start = time.process_time(), time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        dice_ce_loss(forward(), target).backward()
        mid = time.perf_counter()
        optimizer.step()
        return mid - start, time.perf_counter() - mid, time.process_time() - cpu

    return step


def flops(step: Step) -> int:
    """Matmul/conv/attention FLOPs of one step (forward + backward), attention through the counted math kernel."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def timed_interleaved(steps: list[Step], repeats: int, warmup: int) -> list[dict[str, float]]:
    """Median total, forward+backward and optimizer wall seconds and total CPU seconds of each step, the steps
    called in turn. CPU seconds (all threads) stay meaningful when other jobs share the cores."""
    for _ in range(warmup):
        for step in steps:
            step()
    runs: list[list[tuple[float, float, float]]] = [[] for _ in steps]
    for _ in range(repeats):
        for step, run in zip(steps, runs, strict=True):
            run.append(step())
    return [
        {
            "step_s": statistics.median(f + o for f, o, _ in r),
            "fwd_bwd_s": statistics.median(f for f, _, _ in r),
            "optimizer_s": statistics.median(o for _, o, _ in r),
            "cpu_s": statistics.median(c for _, _, c in r),
        }
        for r in runs
    ]


def with_grads(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.grad is not None)


def measure(
    batch: int, finetune: Any, decoder: Any, original: nn.Module, repeats: int, warmup: int
) -> list[dict[str, Any]]:
    """The five steps at one batch size: FLOPs once per distinct forward, then times in two interleaved groups."""
    gen = torch.Generator().manual_seed(batch)
    pixels = torch.randn(batch, 3, 352, 352, generator=gen)
    target = (torch.rand(batch, 1, 352, 352, generator=gen) > 0.5).float()
    tokens = finetune.tokenize([PROMPT] * batch)

    def ours(model: Any = finetune) -> torch.Tensor:
        return model(pixels, tokens["input_ids"], tokens["attention_mask"])

    def stock() -> torch.Tensor:  # the original wrapper: transformers' forward; logits (B, H, W) -> (B, 1, H, W)
        out = original(input_ids=tokens["input_ids"], pixel_values=pixels, attention_mask=tokens["attention_mask"])
        return out.logits.unsqueeze(1)

    def adamw(model: Any, **kw: Any) -> torch.optim.AdamW:
        return torch.optim.AdamW(model.param_groups(WD), lr=LR, weight_decay=WD, **kw)

    made = make_adamw(finetune.param_groups(WD), LR, WD, "cpu")
    kind = "fused" if made.param_groups[0]["fused"] else "foreach"
    steps = {
        f"finetune, make_adamw ({kind})": (make_step(ours, target, made), finetune),
        "finetune, foreach AdamW": (make_step(ours, target, adamw(finetune, foreach=True)), finetune),
        "finetune, per-tensor AdamW": (make_step(ours, target, adamw(finetune)), finetune),
        "decoder_finetune": (
            make_step(lambda: ours(decoder), target, make_adamw(decoder.param_groups(WD), LR, WD, "cpu")),
            decoder,
        ),
        "original E2E (transformers forward)": (
            make_step(stock, target, torch.optim.AdamW(original_groups(original, WD), lr=LR, weight_decay=WD)),
            original,
        ),
    }
    names = list(steps)
    counted: dict[str, tuple[int, int]] = {}
    for name in (names[0], names[3], names[4]):  # the finetune variants share one forward and backward
        counted[name] = (flops(steps[name][0]), with_grads(steps[name][1]))
    counted[names[1]] = counted[names[2]] = counted[names[0]]
    times = timed_interleaved([steps[n][0] for n in names[:3]], repeats, warmup)
    times += timed_interleaved([steps[n][0] for n in names[3:]], repeats, warmup)
    rows = []
    for name, t in zip(names, times, strict=True):
        model = steps[name][1]
        gflop = counted[name][0] / 1e9
        rows.append(
            {
                "batch": batch,
                "step": name,
                "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "with_grad": counted[name][1],
                "gflop": gflop,
                **t,
                "gflop_per_s": gflop / t["step_s"],
            }
        )
        print(f"batch {batch}: {name}: {t['step_s']:.2f} s, {gflop:.0f} GFLOP", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="4,1", help="comma-separated batch sizes")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per side (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side first (AdamW allocates its state)")
    p.add_argument("--json", dest="json_path", help="also write the rows to this file")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")

    torch.manual_seed(0)
    base = build_clipseg("zero_shot", {}, random_init=True)
    tok = base.tokenizer
    decoder = wrap_clipseg(copy.deepcopy(base.clipseg), tok, "clipseg", "decoder_finetune", {}).train()
    finetune = wrap_clipseg(base.clipseg, tok, "clipseg", "finetune", {}).train()
    original = base.clipseg  # the same module as finetune's: every parameter trainable, train mode, as in E2E
    print(
        f"cpu threads={torch.get_num_threads()} torch={torch.__version__} full CLIPSeg (rd64 architecture, random "
        f"init) 352 px fp32; lr {LR}, weight decay {WD}; median of {args.repeats} interleaved steps after "
        f"{args.warmup} warm-up",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for batch in (int(b) for b in args.batches.split(",")):
        rows += measure(batch, finetune, decoder, original, args.repeats, args.warmup)
    report(rows)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2))
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'batch':>5}  {'step':<37}{'set trainable':>14}{'get grads':>12}{'GFLOP':>7}{'step s':>8}{'fwd+bwd s':>10}"
        f"{'AdamW s':>9}{'CPU s':>7}{'GFLOP/s':>8}"
    )
    print(f"\n{head}\n{'-' * len(head)}")
    for r in rows:
        print(
            f"{r['batch']:>5}  {r['step']:<37}{r['trainable']:>14,}{r['with_grad']:>12,}{r['gflop']:>7.0f}"
            f"{r['step_s']:>8.2f}{r['fwd_bwd_s']:>10.2f}{r['optimizer_s']:>9.3f}{r['cpu_s']:>7.2f}"
            f"{r['gflop_per_s']:>8.1f}"
        )
    print()
    for batch in sorted({r["batch"] for r in rows}, reverse=True):
        by = {r["step"]: r for r in rows if r["batch"] == batch}
        made = next(r for r in by.values() if r["step"].startswith("finetune, make_adamw"))
        fe, pt = by["finetune, foreach AdamW"], by["finetune, per-tensor AdamW"]
        dec, orig = by["decoder_finetune"], by["original E2E (transformers forward)"]
        share = ", ".join(f"{r['optimizer_s'] / r['step_s']:.0%}" for r in (pt, fe, made))
        print(
            f"batch {batch}: finetune per-tensor / make_adamw: step {pt['step_s'] / made['step_s']:.2f}x "
            f"(CPU s {pt['cpu_s'] / made['cpu_s']:.2f}x), AdamW alone {pt['optimizer_s'] / made['optimizer_s']:.1f}x; "
            f"per-tensor / foreach: step {pt['step_s'] / fe['step_s']:.2f}x, AdamW alone "
            f"{pt['optimizer_s'] / fe['optimizer_s']:.1f}x; AdamW's share of the step (per-tensor, foreach, "
            f"make_adamw): {share}\n"
            f"batch {batch}: original E2E / decoder_finetune: step {orig['step_s'] / dec['step_s']:.2f}x (CPU s "
            f"{orig['cpu_s'] / dec['cpu_s']:.2f}x; target >= 1.0x), FLOPs {orig['gflop'] / dec['gflop']:.2f}x; "
            f"finetune (make_adamw) / original E2E: step {made['step_s'] / orig['step_s']:.2f}x, FLOPs "
            f"{made['gflop'] / orig['gflop']:.2f}x"
        )


if __name__ == "__main__":
    main()
