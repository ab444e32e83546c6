"""Predicted masks of a finished trial as PNGs (``vlsm-batch predict``): the best checkpoint (the one its metrics
came from) on a split, each mask at its image's original resolution, 0/255, named after the image.

Writes ``trials/<id>/predictions/<split>/<image stem>.png`` and ``index.json`` (image, ground truth, prediction and
per-image Dice for each), which ``analyze`` turns into the overlay grid of the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..layout import TrialPaths, atomic_write_text


def predict_trial(
    trial_dir: Path,
    split: str = "test",
    limit: int | None = None,
    out_dir: Path | None = None,
    model_factory: Any = None,
    threshold: float = 0.5,
) -> Path:
    """Write the masks and return the folder; raises ``VlsmBatchError`` for a trial that cannot be predicted."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from ..errors import VlsmBatchError
    from ..strategies import get_strategy
    from .data import SegmentationData
    from .entry import _default_factory, dataset_root, trial_dataset
    from .module import SegmentationModule

    paths = TrialPaths(Path(trial_dir).absolute())
    if not paths.config.is_file():
        raise VlsmBatchError(f"{paths.root}: no config.json; name a trials/<id> folder of a study")
    config = json.loads(paths.config.read_text(encoding="utf-8"))
    trains = get_strategy(config["strategy"]).trains
    best = paths.checkpoints / "best.ckpt"
    if trains and not best.is_file():
        raise VlsmBatchError(f"{paths.root}: no checkpoints/best.ckpt yet; predict a finished trial (status: done)")
    import pytorch_lightning as pl

    # the same seed before the same calls as train_trial: weights a checkpoint does not hold (frozen, randomly
    # initialised in tiny test models) come out identical
    pl.seed_everything(int(config["seed"]), workers=True, verbose=False)
    root, prompt_key = dataset_root(config)
    model = (model_factory or _default_factory())(config["model"], config["strategy"], config["params"],
                                                  config.get("weights"))  # fmt: skip
    data = SegmentationData(
        root, model.tokenize, model.image_size, model.image_mean, model.image_std,
        batch_size=int(config["train"].get("batch_size", 8)), prompt_key=prompt_key, dataset=trial_dataset(config),
    )  # fmt: skip
    module = SegmentationModule(model, data.transform, 0.0, 0.0, seed=int(config["seed"]))
    if trains:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        missing = [k for k in state if k not in module.state_dict()]
        if missing:
            raise VlsmBatchError(f"{best}: holds weights this model does not have ({missing[:3]}); retrain the trial")
        module.load_state_dict(state, strict=False)  # frozen weights are not in the checkpoint, by design
    module.eval()
    samples = data.samples[split]
    out = Path(out_dir) if out_dir else paths.root / "predictions" / split
    out.mkdir(parents=True, exist_ok=True)
    index, used, k = [], set(), 0
    with torch.no_grad():
        for batch in data.eval_loader(split, with_original=True):
            logits = module(data.transform(batch, training=False, generator=None))  # normalised as in evaluation
            for logit, mask in zip(logits, batch["original_masks"], strict=True):
                if limit is not None and k >= limit:
                    break
                size = tuple(mask.shape[-2:])
                up = F.interpolate(logit[None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
                pred = (torch.sigmoid(up) > threshold).cpu().numpy()
                gt = mask.reshape(size).cpu().numpy() > 0.5
                inter, total = float((pred & gt).sum()), float(pred.sum() + gt.sum())
                sample = samples[k]
                name = sample.image.stem if sample.image.stem not in used else f"{sample.image.stem}_{k}"
                used.add(name)
                Image.fromarray((pred * 255).astype(np.uint8), mode="L").save(out / f"{name}.png")
                index.append(
                    {
                        "image": str(sample.image),
                        "mask": str(sample.mask),
                        "prediction": f"{name}.png",
                        "dice": 1.0 if total == 0 else 2 * inter / total,
                    }
                )
                k += 1
            if limit is not None and k >= limit:
                break
    atomic_write_text(out / "index.json", json.dumps({"trial_id": config.get("trial_id"), "split": split,
                                                     "images": index}, indent=1) + "\n")  # fmt: skip
    return out
