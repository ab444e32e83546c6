"""SAM 3 training-step time per strategy, solo and packed (random weights, the full facebook/sam3 architecture).

SAM 3's frozen image pass (32-layer PE ViT + FPN neck) dominates a prompt-tuning step, so a pack of K trials
computes it once per batch for all K (``Sam3PromptedSegmenter.shared_image``) where K solo trials compute it K times.
For each strategy and K: *solo* steps the K trials one after another (each its own forward, backward and AdamW
step: what K trial processes compute); *pack* is ``training.pack.Pack.train_step``, the code a packed study runs.
Both are timed in the same process on the same batch, interleaved, best of N, so the ratio compares calls made
under the same load. ``finetune`` trains weights of the model and always runs alone (its solo time only).

On a CPU the ViT runs at a reduced input size that fits (``--size``, default 168 px = 12 x 12 patches, one
window); on a GPU at SAM 3's 1008 px in bf16 (``--precision bf16-mixed``), with trial-images/s.

    .venv/bin/python benchmarks/sam3_step_time.py [--size 168] [--batch 2] [--ks 1,4] [--repeats 2]
        [--strategies coop,cocoop,detr_vpt,finetune] [--device cpu|cuda] [--precision 32|bf16-mixed] [--json F]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack import best_of, device_peak, solo_step, step_flops  # the packed-CLIPSeg benchmark's helpers

from vlsm_batch.models import packed
from vlsm_batch.models.configs import SAM3
from vlsm_batch.models.sam3 import _random_model, wrap_sam3
from vlsm_batch.models.tokenizer import offline_clip_tokenizer
from vlsm_batch.training.optim import make_adamw
from vlsm_batch.training.pack import Pack

PROMPT = "benign tumour"
PARAMS: dict[str, dict[str, Any]] = {
    "coop": {"prompt_depth": 3, "num_context": 4, "context_init": None},
    "cocoop": {"prompt_depth": 1, "num_context": 4, "intermediate_dim": 64, "context_init": None},
    "detr_vpt": {"prompt_depth": 3, "num_context": 8},
    "finetune": {},
}
MEAN = STD = (0.5, 0.5, 0.5)  # Sam3ImageProcessor's defaults


def build(size: int, device: torch.device) -> Any:
    """Seeded random SAM 3 (``configs.SAM3``) with its ViT built for ``size`` px (its global-attention positions
    are fixed at build time); the zero-shot wrapper whose frozen model every member shares."""
    arch = dataclasses.replace(SAM3, image_size=size)
    base = wrap_sam3(_random_model(arch), offline_clip_tokenizer(), "sam3", "zero_shot", {}, MEAN, STD)
    base.image_size = size
    return base.to(device)


def members(base: Any, strategy: str, k: int, device: torch.device) -> list[Any]:
    out = []
    for i in range(k):
        params = {**PARAMS[strategy]}
        if "prompt_depth" in params:
            params["prompt_depth"] = 1 + i % max(1, params["prompt_depth"])  # packs mix depths
        model = packed.member_model(base, strategy, params)
        model.image_size = base.image_size
        out.append(model.to(device).train())
    return out


def measure(base: Any, strategy: str, k: int, batch: dict[str, torch.Tensor], args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    models = members(base, strategy, k, device)
    optimizers = [make_adamw(m.param_groups(0.0), 1e-3, 0.0, device.type) for m in models]
    pack = None if strategy == "finetune" else Pack.in_memory(models, [1e-3] * k, precision=args.precision)
    bf16 = args.precision == "bf16-mixed"

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    for _ in range(args.warmup):
        solo_step(models, optimizers, batch, autocast)
        if pack is not None:
            pack.train_step(batch)
    solo_t, pack_t = [], []
    for _ in range(args.repeats):
        solo_t.append(best_of(lambda: solo_step(models, optimizers, batch, autocast), device))
        if pack is not None:
            pack_t.append(best_of(lambda: pack.train_step(batch), device))
    solo_s = min(solo_t)
    row: dict[str, Any] = {
        "strategy": strategy, "K": k, "batch": args.batch, "size": base.image_size, "solo_s": solo_s,
        "solo_trial_images_per_s": k * args.batch / solo_s,
    }  # fmt: skip
    if pack_t:
        pack_s = min(pack_t)
        row |= {"pack_s": pack_s, "pack_trial_images_per_s": k * args.batch / pack_s, "speedup": solo_s / pack_s}
    if device.type == "cuda":
        row["step_tflop"] = step_flops(models[0], batch) / 1e12
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=None, help="input px (default: 168 on CPU, 1008 on CUDA)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--ks", default="1,4")
    parser.add_argument("--strategies", default="coop,cocoop,detr_vpt,finetune")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default=None, help="32 | bf16-mixed (default: bf16-mixed on CUDA)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    args.size = args.size or (SAM3.image_size if device.type == "cuda" else 168)
    args.precision = args.precision or ("bf16-mixed" if device.type == "cuda" else "32")
    if args.size % SAM3.patch_size:
        parser.error(f"--size must be a multiple of SAM 3's patch size {SAM3.patch_size}")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    base = build(args.size, device)
    name, _ = device_peak()
    print(f"SAM 3 ({base.total_parameter_count() / 1e6:.0f} M params) built in {time.perf_counter() - t0:.0f} s; "
          f"{args.size} px, batch {args.batch}, {args.precision}, {name}", flush=True)  # fmt: skip
    tokens = base.tokenize([PROMPT] * args.batch)
    batch = {
        "pixel_values": torch.randn(args.batch, 3, args.size, args.size, device=device),
        "mask": (torch.rand(args.batch, 1, args.size, args.size, device=device) > 0.5).float(),
        "input_ids": tokens["input_ids"].to(device),
        "attention_mask": tokens["attention_mask"].to(device),
        "index": torch.arange(args.batch),
    }
    rows = []
    ks = [int(k) for k in args.ks.split(",")]
    print(f"{'strategy':10s} {'K':>3s} {'solo s/step':>12s} {'pack s/step':>12s} {'trial-img/s solo':>17s} "
          f"{'pack':>8s} {'speed-up':>9s}", flush=True)  # fmt: skip
    for strategy in args.strategies.split(","):
        for k in [1] if strategy == "finetune" else ks:
            row = measure(base, strategy, k, batch, args)
            rows.append(row)
            pack_s = f"{row['pack_s']:12.3f}" if "pack_s" in row else f"{'alone':>12s}"
            pack_r = f"{row['pack_trial_images_per_s']:8.2f}" if "pack_s" in row else f"{'-':>8s}"
            speed = f"{row['speedup']:8.2f}x" if "speedup" in row else f"{'-':>9s}"
            print(f"{strategy:10s} {k:3d} {row['solo_s']:12.3f} {pack_s} {row['solo_trial_images_per_s']:17.2f} "
                  f"{pack_r} {speed}", flush=True)  # fmt: skip
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps({"device": name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
