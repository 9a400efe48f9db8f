"""Stripe's form encoding (``metadata[k]=v``, ``line_items[0][quantity]=1``) to nested data."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["decode_form", "decode_pairs"]

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
# Stripe's parameters nest a few levels (line_items[0][price_data][product_data][name]);
# a bound keeps a hostile name from recursing the decoder to death.
MAX_DEPTH = 10


def _tokens(key: str) -> list[str]:
    match = _KEY.match(key)
    if not match:
        raise ValueError(f"malformed parameter name {key!r}")
    rest = match.group(2)
    tokens = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", rest)] if rest else [match.group(1)]
    if len(tokens) > MAX_DEPTH:
        raise ValueError(f"parameter names nest at most {MAX_DEPTH} levels")
    return tokens


def _listify(node: Any) -> Any:
    """Dicts keyed 0..n-1 (how Stripe's SDKs encode arrays) become lists."""
    if not isinstance(node, dict):
        return node
    node = {k: _listify(v) for k, v in node.items()}
    if node and all(k.isdigit() for k in node):
        indexes = sorted(int(k) for k in node)
        if indexes == list(range(len(indexes))):
            return [node[str(i)] for i in indexes]
    return node


def decode_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Nest ``[(name, value)]``; ``a[]=x`` appends. Raises ValueError on clashing names."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        tokens = _tokens(key)
        node = root
        for i, token in enumerate(tokens):
            last = i == len(tokens) - 1
            if token == "":  # a[] = append: number it after what is there
                token = str(len(node))
            if last:
                if isinstance(node.get(token), dict):
                    raise ValueError(f"parameter {key!r} is both a value and an object")
                node[token] = value
            else:
                child = node.setdefault(token, {})
                if not isinstance(child, dict):
                    raise ValueError(f"parameter {key!r} is both a value and an object")
                node = child
    result: dict[str, Any] = _listify(root)
    return result


def decode_form(body: bytes) -> dict[str, Any]:
    return decode_pairs(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
