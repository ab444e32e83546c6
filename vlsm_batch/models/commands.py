"""``vlsm-batch describe MODEL STRATEGY [--set key=value ...]``: trainable parameters per module and where the
prompts enter, without training or downloading (the architecture is built with random weights: the counts are
those of the pretrained model). Light at import: torch is loaded only when the command runs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import VlsmBatchError


def parse_value(text: str) -> Any:
    """YAML-like scalars: true/false, null, integers, floats, else the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_settings(strategy: str, pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs checked against the strategy's declared parameters (kind, range, choices)."""
    from ..spec.paramcheck import value_problem
    from ..strategies import get_strategy

    info = get_strategy(strategy)
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise VlsmBatchError(f"--set takes key=value, got {pair!r}")
        spec = info.param(key)
        if spec is None:
            takes = ", ".join(info.param_names) or "no parameters"
            raise VlsmBatchError(f"{strategy} does not take {key!r} (it takes: {takes})")
        value = parse_value(raw)
        if spec.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if spec.kind == "str" and value is not None:
            value = raw
        problem = value_problem(key, value, spec)
        if problem:
            raise VlsmBatchError(problem)
        params[key] = value
    return params


def describe(model_name: str, strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """Build the model (random weights) and summarise what trains and where prompts enter."""
    from ..models import get_model_info
    from ..strategies import get_strategy, incompatibility
    from ..strategies.impl import resolve_params
    from .factory import create_model

    info, sinfo = get_model_info(model_name), get_strategy(strategy)
    reason = incompatibility(sinfo, info.prompt_towers, model_name, info.family)
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


def cmd_describe(args: argparse.Namespace) -> int:
    params = parse_settings(args.strategy, args.set or [])
    description = describe(args.model, args.strategy, params)
    if args.json:
        print(json.dumps(description, indent=2, default=str))
    else:
        print(format_description(description))
    return 0


def add_commands(sub: Any) -> None:
    s = sub.add_parser(
        "describe",
        help="trainable parameters per module and where prompts enter, for one model and strategy",
        description="Build MODEL with STRATEGY (random weights, no download, no training) and print its trainable "
        "parameters per module and in total, and where the prompts enter. Strategy parameters not given take "
        "their defaults (`vlsm-batch list strategies`).",
    )
    s.add_argument("model", help="a model of the catalog, e.g. clipseg")
    s.add_argument("strategy", help="a strategy or baseline, e.g. maple")
    s.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a strategy parameter, e.g. prompt_depth=10 (repeat)"
    )
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=cmd_describe)
