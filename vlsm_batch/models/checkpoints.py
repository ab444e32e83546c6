"""Local checkpoint files: unwrap, strip wrapper prefixes, and load strictly with a readable key diff."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .prompted import ModelLoadError

PREFIXES = ("module.", "model.", "net.", "_orig_mod.")  # DataParallel, Lightning/TuneVLSeg wrappers, torch.compile
_CONTAINERS = ("state_dict", "model", "model_state_dict", "net")


class CheckpointMismatchError(ModelLoadError):
    """A checkpoint's keys or shapes do not match the model: the message lists the difference."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: a plain state dict, one nested under ``state_dict``/``model``, or a
    TorchScript archive (OpenAI's CLIP files)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:
            obj = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:
                raise ModelLoadError(f"could not read checkpoint {str(path)!r}: {exc}") from exc
    for _ in range(3):  # unwrap {"state_dict": {...}} and similar containers
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _CONTAINERS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise ModelLoadError(f"checkpoint {str(path)!r} holds no state dict")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: Iterable[str] = PREFIXES) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes shared by every key (repeatedly: ``module.model.x`` -> ``x``)."""
    out = dict(state)
    prefixes = tuple(prefixes)
    changed = True
    while changed and out:
        changed = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix) :]: v for k, v in out.items()}
                changed = True
    return out


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)``, but a mismatch raises ``CheckpointMismatchError`` listing the missing,
    unexpected and wrongly shaped keys."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        lines = [f"checkpoint {source!r} does not match {type(module).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {_listing(shapes)}")
        raise CheckpointMismatchError("\n".join(lines))
    module.load_state_dict(dict(state), strict=True)
