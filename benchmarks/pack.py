"""Packed trials against solo trials: trial-steps per second, and the wall time of a whole study.

Part 1, per strategy (CoOp, CoCoOp, VPT, Shared-Attention) and pack size K: full-size CLIPSeg (random weights,
352 px), one batch of B images. *Solo*: the K trials step one after another, each with its own full forward,
backward and AdamW step (what K trial processes compute). *Pack*: ``training.pack.Pack.train_step``, the code a
packed study runs (one shared image forward for CoOp/CoCoOp, one fused forward for VPT/Shared-Attention). Both
are timed in the same process on the same batch, interleaved (solo, pack, solo, pack, ...), best of N: the ratio
compares calls made under the same load. K = 16 is skipped where the probe says the fused step would not fit in
the free memory.

Visual strategies step member by member on a CPU (``training.pack.fuse_visual``); there the fused step is timed
as well and printed as "fused instead".

Part 2: the 16-trial CoOp study of the quickstart's shape (tiny CLIPSeg, generated data) through the real
``vlsm-batch submit`` (local executor), ``pack: 8`` against ``pack: 1``, run one after the other in fresh folders.

    .venv/bin/python benchmarks/pack.py [--strategies coop,cocoop,vpt,shared_attn] [--ks 1,4,8,16] [--batch 4]
        [--repeats 2] [--device cpu|cuda] [--precision 32|bf16-mixed] [--no-study] [--json out.json]

On a GPU it also prints trial-images/s and the model FLOP utilisation against the device's dense bf16 peak
(read from nvidia-smi: H100/H200 SXM 989 TFLOP/s, NVL 835, A100 312).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from vlsm_batch.models import packed
from vlsm_batch.models.clipseg import build_clipseg
from vlsm_batch.training.loss import dice_ce_loss
from vlsm_batch.training.optim import make_adamw
from vlsm_batch.training.pack import FUSE_ENV, MEMORY_MARGIN, Pack, free_memory_bytes, fuse_visual

PROMPT = "a small benign tumour in the left breast"
PARAMS: dict[str, dict[str, Any]] = {
    "coop": {"prompt_depth": 3, "num_context": 4},
    "cocoop": {"prompt_depth": 1, "num_context": 4, "intermediate_dim": 64},
    "vpt": {"prompt_depth": 3, "num_context": 4},
    "shared_attn": {"prompt_depth": 3, "num_context": 4, "ffn_dim": 1536, "num_heads": 16, "dropout": 0.25},
}
PEAK_BF16 = {"H200": 989e12, "H100 NVL": 835e12, "H100": 989e12, "A100": 312e12}


def members(strategy: str, k: int, base: Any) -> list[Any]:
    """K members on the same frozen CLIPSeg, depths 1..3 in turn (packs mix depths)."""
    out = []
    for i in range(k):
        params = {**PARAMS[strategy], "prompt_depth": 1 + i % 3}
        model = packed.member_model(base, strategy, params)
        out.append(model.to(base.clipseg.device).train())
    return out


def solo_step(models: list[Any], optimizers: list[Any], batch: dict[str, torch.Tensor], autocast: Any) -> None:
    for model, opt in zip(models, optimizers, strict=True):
        with autocast():
            loss = dice_ce_loss(
                model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]), batch["mask"]
            )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(fn: Any, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def step_flops(model: Any, batch: dict[str, torch.Tensor]) -> float:
    """Model FLOPs of one solo training step (forward + backward), counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss = dice_ce_loss(model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]), batch["mask"])
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def device_peak() -> tuple[str, float | None]:
    try:
        name = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "cpu", None
    for key, peak in PEAK_BF16.items():
        if key in name:
            return name, peak
    return name or "cpu", None


def bench_steps(args: argparse.Namespace) -> list[dict[str, Any]]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    base = build_clipseg("coop", PARAMS["coop"], random_init=True).to(device)
    size = base.image_size
    tokens = base.tokenize([PROMPT] * args.batch)
    batch = {
        "pixel_values": torch.randn(args.batch, 3, size, size, device=device),
        "mask": (torch.rand(args.batch, 1, size, size, device=device) > 0.5).float(),
        "input_ids": tokens["input_ids"].to(device),
        "attention_mask": tokens["attention_mask"].to(device),
        "index": torch.arange(args.batch),
    }
    name, peak = device_peak()
    rows = []
    for strategy in args.strategies:
        for k in args.ks:
            row = measure(strategy, k, base, batch, args, device, peak)
            if row is None:
                continue
            rows.append(row)
            mfu = f"  MFU {row['mfu']:.0%}" if row.get("mfu") else ""
            fused = f"  (fused instead: x{row['fused_speedup']:.2f})" if "fused_speedup" in row else ""
            print(
                f"{strategy:12s} K={k:2d}  solo {row['solo_trial_steps_per_s']:7.3f}  pack "
                f"{row['pack_trial_steps_per_s']:7.3f} trial-steps/s  x{row['speedup']:.2f} {row['pack_mode']}"
                f"{mfu}{fused}  ({name})",
                flush=True,
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def measure(
    strategy: str,
    k: int,
    base: Any,
    batch: dict[str, torch.Tensor],
    args: argparse.Namespace,
    device: torch.device,
    peak: float | None,
) -> dict[str, Any] | None:
    """Solo and packed step of K members, interleaved, best of ``args.repeats``; None when K does not fit."""
    models = members(strategy, k, base)
    pack = Pack.in_memory(models, [1e-3] * k, precision=args.precision)
    if k > 1 and k == max(args.ks):
        from vlsm_batch.training.pack import probe_member_bytes

        need = probe_member_bytes(pack, pack.members[0], batch) * k
        free = free_memory_bytes(device) or 0
        if need > free * (1 - MEMORY_MARGIN):
            print(f"{strategy} K={k}: skipped, needs ~{need / 2**30:.1f} GiB of {free / 2**30:.1f} free", flush=True)
            return None
    optimizers = [make_adamw(m.param_groups(0.0), 1e-3, 0.0, device.type) for m in models]
    for _ in range(args.warmup):
        solo_step(models, optimizers, batch, pack._autocast)
        pack.train_step(batch)
    # Visual strategies: the pack's own choice (fused on a GPU, member by member on a CPU: pack.fuse_visual) and,
    # on a CPU, the fused step too, timed in the same rounds, so the ratio that made the choice is printed.
    visual = strategy not in ("coop", "cocoop")
    other = visual and device.type != "cuda"
    solo_t, pack_t, fused_t = [], [], []
    for _ in range(args.repeats):
        solo_t.append(best_of(lambda: solo_step(models, optimizers, batch, pack._autocast), device))
        pack_t.append(best_of(lambda: pack.train_step(batch), device))
        if other:
            os.environ[FUSE_ENV] = "1"
            try:
                fused_t.append(best_of(lambda: pack.train_step(batch), device))
            finally:
                os.environ.pop(FUSE_ENV)
    solo_s, pack_s = min(solo_t), min(pack_t)
    row: dict[str, Any] = {
        "strategy": strategy,
        "K": k,
        "batch": args.batch,
        "solo_trial_steps_per_s": k / solo_s,
        "pack_trial_steps_per_s": k / pack_s,
        "speedup": solo_s / pack_s,
        "solo_s": solo_s,
        "pack_s": pack_s,
        "pack_mode": "shared image" if not visual else ("fused" if fuse_visual(device) else "by member"),
    }
    if fused_t:
        row["fused_s"] = min(fused_t)
        row["fused_speedup"] = solo_s / min(fused_t)
    if device.type == "cuda":
        flops = step_flops(models[0], batch) * k
        row["pack_trial_images_per_s"] = k * args.batch / pack_s
        row["mfu"] = flops / pack_s / peak if peak else None
    return row


STUDY = """\
study: packbench
output_dir: {out}
data_root: {data}
seeds: [0]
models: [clipseg-tiny]
datasets: [synthetic]
strategies: [coop]
search:
  method: sobol
  trials: 16
  seed: 0
  objective: {{metric: val/dice, mode: max}}
  space:
    lr: {{log_uniform: [3.0e-3, 3.0e-2]}}
    prompt_depth: {{int: [1, 4]}}
train:
  max_epochs: 6
  min_epochs: 2
  batch_size: 8
  precision: "32"
  early_stopping: {{monitor: val/loss, patience: 4, min_delta: 1.0e-4}}
  num_context: 4
  context_init: "a photo of a"
  learnable_upsampler: true
resources:
  executor: local
  timeout_min: 30
  pack: {pack}
  local: {{max_parallel: 2}}
"""


def bench_study(root: Path) -> dict[str, float]:
    """Wall time of ``vlsm-batch submit`` for the 16-trial study with pack 1 and pack 8 (fresh folders)."""
    exe = Path(sys.executable).with_name("vlsm-batch")
    data = root / "data"
    out: dict[str, float] = {}
    from vlsm_batch.datasets.synthetic import ensure_synthetic

    ensure_synthetic(data)  # generated once, outside the timing
    for pack in (1, 8):
        spec = root / f"pack{pack}.yaml"
        spec.write_text(STUDY.format(out=root / f"runs{pack}", data=data, pack=pack))
        t0 = time.perf_counter()
        done = subprocess.run([str(exe), "submit", str(spec), "--no-progress"], capture_output=True, text=True)
        out[f"pack{pack}_s"] = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"submit with pack {pack} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        print(f"16-trial CoOp study, pack {pack}: {out[f'pack{pack}_s']:.1f} s", flush=True)
    out["speedup"] = out["pack1_s"] / out["pack8_s"]
    print(f"study wall time: pack 8 is x{out['speedup']:.2f} faster than pack 1", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default="coop,cocoop,vpt,shared_attn", type=lambda s: s.split(","))
    parser.add_argument("--ks", default="1,4,8,16", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--no-study", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}", flush=True)
    result: dict[str, Any] = {"steps": bench_steps(args)}
    if not args.no_study:
        root = Path(tempfile.mkdtemp(prefix="packbench-"))
        try:
            result["study"] = bench_study(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
