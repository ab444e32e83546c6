"""Local checkpoint files: read without running code, unwrap, strip wrapper prefixes, and load strictly with a
readable key diff.

Nothing here unpickles arbitrary objects: ``.pt``/``.pth``/``.ckpt`` files are read with
``torch.load(weights_only=True)`` (tensors, containers and plain values only) and ``.safetensors`` files with
safetensors. A file that needs more (a pickled ``nn.Module``, a custom class) or that is a TorchScript archive is
refused with a message saying how to convert it once, in an environment where the file is trusted.

TorchScript archives (OpenAI's ``RN50.pt``) are refused, not read with ``torch.jit.load``: its own documentation
warns that malicious pickle data can execute arbitrary code during ``torch.jit.load`` (the archive's
``data.pkl``/``constants.pkl`` and ``__setstate__`` methods run at load), and PyTorch refuses TorchScript under
``weights_only=True`` for the same reason.
"""

from __future__ import annotations

import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .prompted import ModelLoadError

PREFIXES = ("module.", "model.", "net.", "_orig_mod.")  # DataParallel, Lightning/TuneVLSeg wrappers, torch.compile
_CONTAINERS = ("state_dict", "model", "model_state_dict", "net")
# what torch's weights-only unpickler says when a file needs objects beyond tensors and plain containers
# (pickle protocol 4+ framing is an "Unsupported operand": a raw pickle.dump, not a torch.save file)
_NEEDS_UNPICKLING = ("GLOBAL", "Can only build", "Can only create new object", "Unsupported operand")


class CheckpointMismatchError(ModelLoadError):
    """A checkpoint's keys or shapes do not match the model: the message lists the difference."""


class UnsafeCheckpointError(ModelLoadError):
    """A checkpoint that could only be read by running code from it (pickled objects, TorchScript): refused.

    ``reason`` is the short cause ("it is a TorchScript archive"), for callers that word their own message."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def needs_unpickling(exc: BaseException) -> bool:
    """Whether a ``torch.load(weights_only=True)`` failure means "this file holds arbitrary Python objects"
    (refuse it) rather than "this file is damaged" (truncated, not a checkpoint)."""
    return isinstance(exc, pickle.UnpicklingError) and any(m in str(exc) for m in _NEEDS_UNPICKLING)


def is_torchscript(path: Path) -> bool:
    """A zip archive laid out as ``torch.jit.save`` writes it (``<name>/constants.pkl`` or ``<name>/code/``)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def is_safetensors(path: Path) -> bool:
    """``.safetensors`` by name, or by content: an 8-byte little-endian header length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = path.stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] <= size - 8


def unsafe_checkpoint_message(path: Path, reason: str, torchscript: bool = False, target: Path | None = None) -> str:
    """One paragraph: why the file is refused and the one-off conversion to run where the file is trusted
    (to ``target``, by default the same name with ``.safetensors``)."""
    src = str(path)
    dst = str(target or path.with_suffix(".safetensors"))
    if torchscript:
        load = f"torch.jit.load({src!r}, map_location='cpu').state_dict()"
    else:
        load = f"torch.load({src!r}, map_location='cpu', weights_only=False); sd = sd.get('state_dict', sd)"
    snippet = (
        f'python -c "import torch; from safetensors.torch import save_file; sd = {load}; '
        f'save_file({{k: v.contiguous().clone() for k, v in sd.items() if isinstance(v, torch.Tensor)}}, {dst!r})"'
    )
    return (
        f"checkpoint {src!r} is refused: {reason}, and loading it could run code stored in the file. If the file "
        f"comes from a source you trust, convert it once to a plain tensor file in an environment where running "
        f"it is acceptable, then use the converted file in its place (in `weights:`, or as the CLIP RN50 file): "
        f"{snippet} (or torch.save the dict of tensors instead of save_file)"
    )


def unpickling_reason(exc: BaseException) -> str:
    """The short cause from torch's error: ``it holds pickled Python objects (Unsupported global: ...)``."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+\w)", text)
    detail = f"needs {found.group(1)}" if found else first_sentence(text.split("Unpickler error:")[-1])
    return f"it holds pickled Python objects ({detail})"


def first_sentence(text: str, limit: int = 160) -> str:
    """The first line up to its first full stop: torch's errors run on for a paragraph."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line.split(". ")[0][:limit]


def load_tensors_file(path: str | Path, *, mmap: bool = False) -> Any:
    """The object stored in a ``torch.save`` or safetensors file, read without executing anything from it.

    Raises ``UnsafeCheckpointError`` for a file that needs arbitrary unpickling or is TorchScript; any other read
    failure (truncated, not a checkpoint) propagates as the loader raised it, for the caller to classify.
    """
    path = Path(path)
    if is_safetensors(path):
        from safetensors.torch import load_file  # comes with transformers

        return load_file(str(path), device="cpu")
    if is_torchscript(path):
        reason = "it is a TorchScript archive"
        raise UnsafeCheckpointError(unsafe_checkpoint_message(path, reason, torchscript=True), reason)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        if needs_unpickling(exc):
            reason = unpickling_reason(exc)
            raise UnsafeCheckpointError(unsafe_checkpoint_message(path, reason), reason) from exc
        raise


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: a plain state dict (``torch.save`` or safetensors) or one nested under
    ``state_dict``/``model``. Pickled objects and TorchScript are refused (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj: Any = load_tensors_file(path)
    except ModelLoadError:
        raise
    except Exception as exc:  # a damaged file: EOFError, RuntimeError, OSError, SafetensorError...
        raise ModelLoadError(
            f"could not read checkpoint {str(path)!r} ({type(exc).__name__}: {str(exc).strip()[:300]}): the file "
            "is damaged or not a PyTorch/safetensors checkpoint; copy it again or name another file in `weights:`"
        ) from exc
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


def key_listing(keys: list[str], limit: int = 12) -> str:
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
            lines.append(f"  missing keys ({len(missing)}): {key_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {key_listing(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {key_listing(shapes)}")
        raise CheckpointMismatchError("\n".join(lines))
    module.load_state_dict(dict(state), strict=True)


def load_pretrained(
    cls: Any,
    source: str,
    *,
    label: str,
    attention: str,
    unreachable: str,
    full: str,
    missing_note: Callable[[list[str]], str] = lambda missing: "",
) -> Any:
    """``cls.from_pretrained(source)`` (a transformers model: hub id or ``save_pretrained`` folder), refused unless
    every weight came from the files: transformers fills missing ones with random values and only logs it.
    ``weights_only`` keeps ``.bin`` files from unpickling code; one that needs it is refused with the conversion.

    ``label`` names the model in messages, ``unreachable`` says what to do when nothing loads, ``full`` which
    checkpoint to name instead of an incomplete one; ``missing_note`` may explain the missing keys."""
    try:
        model, info = cls.from_pretrained(
            source, attn_implementation=attention, output_loading_info=True, weights_only=True
        )
    except pickle.UnpicklingError as exc:  # a pytorch_model.bin that holds more than tensors
        if not needs_unpickling(exc):
            raise ModelLoadError(
                f"could not read the {label} weights {source!r} ({exc}): the files are damaged; copy them again"
            ) from exc
        binary = Path(source).expanduser() / "pytorch_model.bin"
        reason = unpickling_reason(exc)
        message = unsafe_checkpoint_message(binary, reason, target=binary.with_name("model.safetensors"))
        raise UnsafeCheckpointError(message, reason) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"could not load {label} weights from {source!r} ({exc}). {unreachable}") from exc
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith("position_ids"))
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ()))
    if missing or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing weight(s){missing_note(missing)}: {key_listing(missing)}")
        if mismatched:
            problems.append(f"{len(mismatched)} weight(s) of another shape: {key_listing(mismatched)}")
        raise ModelLoadError(
            f"{label} weights {source!r} are incomplete, {'; '.join(problems)}. They would start from random "
            f"values; {full}"
        )
    return model
