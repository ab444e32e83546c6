"""``vlsm-batch describe MODEL STRATEGY [--set key=value ...]``: trainable parameters per module and where the
prompts enter, without training or downloading. Light at import: torch is loaded only when the command runs."""

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


def cmd_describe(args: argparse.Namespace) -> int:
    params = parse_settings(args.strategy, args.set or [])
    from ..extras import require_extra

    require_extra("train", "describe (it builds the model to count its parameters)")
    from ..models.describe import describe, format_description

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
