"""What a model + strategy pair trains and where its prompts enter, without training or downloading: the
architecture is built with random weights, so the counts are those of the pretrained model. Light at import:
torch is loaded only when :func:`describe` runs."""

from __future__ import annotations

from typing import Any

from ..errors import VlsmBatchError


def describe(model_name: str, strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """Build the model (random weights) and summarise what trains and where prompts enter."""
    from ..strategies import get_strategy, refusal
    from ..strategies.impl import resolve_params
    from . import get_model_info
    from .factory import create_model

    info, sinfo = get_model_info(model_name), get_strategy(strategy)
    reason = refusal(sinfo, info)
    if reason:  # the same reason validate and plan give when they skip the pair
        raise VlsmBatchError(reason)
    if info.family not in sinfo.implemented_for:
        raise VlsmBatchError(f"strategy {strategy} is not implemented for {info.family} in this build")
    model = create_model(model_name, strategy, params, random_init=True)
    modules: dict[str, int] = {}
    frozen: dict[str, int] = {}
    for name, param in model.named_parameters():
        key = ".".join(name.split(".")[:2])
        into = modules if param.requires_grad else frozen
        into[key] = into.get(key, 0) + param.numel()
    return {
        "model": model_name,
        "strategy": strategy,
        "label": sinfo.display,
        "params": resolve_params(strategy, params),
        "trainable_by_module": modules,
        "frozen_by_module": frozen,
        "trainable": model.trainable_parameter_count(),
        "total": model.total_parameter_count(),
        "prompts": model.describe_prompts(),
    }


def format_description(d: dict[str, Any]) -> str:
    label = d.get("label")
    lines = [f"{d['model']} + {d['strategy']}" + (f" ({label})" if label and label != d["strategy"] else "")]
    if d["params"]:
        lines.append("  parameters: " + ", ".join(f"{k}={v!r}" for k, v in d["params"].items()))
    lines.append("trainable parameters:")
    frozen = d.get("frozen_by_module", {})
    width = max([len(k) for k in (*d["trainable_by_module"], *frozen)] + [6])
    for key, count in d["trainable_by_module"].items():
        lines.append(f"  {key:<{width}}  {count:>13,}")
    lines.append(f"  {'total':<{width}}  {d['trainable']:>13,}   of {d['total']:,} ({d['trainable'] / d['total']:.4%})")
    if frozen:
        lines.append("frozen parameters:")
        lines += [f"  {key:<{width}}  {count:>13,}" for key, count in frozen.items()]
    lines.append("where prompts enter:")
    lines += [f"  {line}" for line in d["prompts"]]
    return "\n".join(lines)
