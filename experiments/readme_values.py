"""The README generator's values: result files, a small expression language over them, and number formats.

`experiments.readme` reads inline values ``<!-- v: EXPR:FMT -->`` with
`inline_value`; EXPR is parsed with `ast` (never `eval`) and evaluated by
`evaluate` against a JSON result file (`Results`). The language and its helpers
are described in `experiments.readme`'s docstring.
"""

from __future__ import annotations

import ast
import json as _json
import math
import os
import re
from typing import Callable

import numpy as np

from . import stats

# A trailing ":FMT" is a format spec only if it looks like one (so "x[1:2]" keeps its colon).
_FMT = re.compile(r"^(?P<expr>.*?)(?::(?P<fmt>[-+ #0-9,._a-zA-Z%<>=^]*))?$", re.S)


class Results:
    """The JSON result files, read once each, by path relative to the README's folder."""

    def __init__(self, root: str):
        self.root = root
        self._cache: dict[str, object] = {}

    def load(self, path: str):
        if path not in self._cache:
            full = os.path.join(self.root, path)
            if not os.path.isfile(full):
                raise ValueError(f"result file {path!r} not found (under {os.path.abspath(self.root)})")
            with open(full) as fh:
                self._cache[path] = _json.load(fh)
        return self._cache[path]


# =========================================================================== the expression language

def _numeric(x):
    """A number or list of numbers as float / float array (None, "nan" → NaN); anything else as it is."""
    if isinstance(x, bool):
        return x
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return float(x)
    if isinstance(x, list) and all(v is None or isinstance(v, (int, float, str)) and not isinstance(v, bool)
                                   and (not isinstance(v, str) or v in ("nan", "inf", "-inf")) for v in x):
        return np.array([np.nan if v is None else float(v) for v in x], dtype=float)
    if isinstance(x, np.ndarray):
        return x
    return x


def _finite(x) -> np.ndarray:
    a = np.atleast_1d(np.asarray(_numeric(x), dtype=float))
    return a[np.isfinite(a)]


class MeanStd(tuple):
    """``ms(...)``: written as "m ± s" with the marker's format spec applied to both."""


def _mean(x):
    return stats.mean_std(list(_finite(x)))[0]


def _std(x):
    return stats.mean_std(list(_finite(x)))[1]


def _matches(row, conditions: dict) -> bool:
    for key, want in conditions.items():
        have = row.get(key) if isinstance(row, dict) else None
        if isinstance(want, list):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


def _where(rows, **conditions):
    if not isinstance(rows, list):
        raise ValueError(f"where(): got {type(rows).__name__}, expected a list of rows")
    return [r for r in rows if _matches(r, conditions)]


def _one(rows, **conditions):
    found = _where(rows, **conditions)
    if len(found) != 1:
        raise ValueError(f"one({', '.join(f'{k}={v!r}' for k, v in conditions.items())}): "
                         f"got {len(found)} matching rows, expected exactly 1")
    return found[0]


def _flat(x):
    out = []
    for v in x:
        out.extend(_flat(v) if isinstance(v, (list, np.ndarray)) else [v])
    return out


def _at(values, keys, key):
    """The element of ``values`` at the position where ``keys`` equals ``key`` (a curve at a given step)."""
    hits = [i for i, k in enumerate(keys) if k == key]
    if not hits:
        raise ValueError(f"at(): {key!r} is not among the keys ({keys[0]!r} … {keys[-1]!r})")
    return values[hits[0]]


def _claim(ok) -> str:
    """A claim's verdict word from its ``agrees`` field: True, False or None only (a NaN or a list is an error)."""
    if ok is None or isinstance(ok, (bool, np.bool_)):
        return {True: "agrees", False: "disagrees", None: "not resolved"}[None if ok is None else bool(ok)]
    raise ValueError(f"claim(): got {ok!r}, expected true, false or null (a claim's 'agrees' field)")


FUNCTIONS: dict[str, Callable] = {
    "mean": _mean, "std": _std, "ms": lambda x: MeanStd((_mean(x), _std(x))),
    "min": lambda x: float(np.min(_finite(x))), "max": lambda x: float(np.max(_finite(x))),
    "sum": lambda x: float(np.nansum(np.asarray(_numeric(x), dtype=float))),
    "count": lambda x: int(np.sum(np.asarray(x, dtype=bool))), "len": len,
    "abs": lambda x: np.abs(_numeric(x)), "where": _where, "one": _one, "at": _at,
    "flat": _flat, "column": lambda lists, i: [v[i] for v in lists], "verdict": lambda ok: stats.verdict(
        None if ok is None else bool(ok)),
    # A paper claim's measured verdict (True / False / None: not resolved within the script's margin).
    "claim": _claim,
    # Paired differences over seeds: [mean, lo, hi] of the 95% Student-t interval, and its verdict word.
    "paired": lambda d: list(stats.paired_interval(_numeric(d))),
    "direction": lambda d: stats.direction(*stats.paired_interval(_numeric(d))[1:]),
}
_BINOPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide, ast.Pow: np.power}
_CMPOPS = {ast.Gt: np.greater, ast.GtE: np.greater_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
           ast.Eq: np.equal, ast.NotEq: np.not_equal}


def _index(obj, key, node, where: str):
    """obj[key] for a dict or list; a list of dicts with a string key maps over its rows."""
    if isinstance(obj, dict):
        if key not in obj:
            raise ValueError(f"{where}: no key {ast.unparse(node)!r} (this level has: {', '.join(map(str, obj))})")
        return obj[key]
    if isinstance(obj, list) and isinstance(key, int):
        if not -len(obj) <= key < len(obj):
            raise ValueError(f"{where}: index {ast.unparse(node)!r} out of range (length {len(obj)})")
        return obj[key]
    if isinstance(obj, list) and isinstance(key, str) and obj and all(isinstance(r, dict) for r in obj):
        return [_index(r, key, node, where) for r in obj]
    raise ValueError(f"{where}: {ast.unparse(node)!r}: cannot index a {type(obj).__name__} with {key!r}")


def evaluate(expr: str, root, results: Results, where: str):
    """The value of ``expr`` on the JSON ``root`` (module docstring: the expression language)."""
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError as err:
        raise ValueError(f"{where}: expression {expr.strip()!r} does not parse ({err.msg})") from None

    def ev(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return _index(root, node.id, node, where)
        if isinstance(node, ast.Attribute):
            return _index(ev(node.value), node.attr, node, where)
        if isinstance(node, ast.Subscript):
            return _index(ev(node.value), ev(node.slice), node, where)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return np.negative(_numeric(ev(node.operand)))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](_numeric(ev(node.left)), _numeric(ev(node.right)))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMPOPS:
            return _CMPOPS[type(node.ops[0])](_numeric(ev(node.left)), _numeric(ev(node.comparators[0])))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            args = [ev(a) for a in node.args]
            kwargs = {k.arg: ev(k.value) for k in node.keywords}
            if name == "json":
                return results.load(*args)
            if name not in FUNCTIONS:
                raise ValueError(f"{where}: unknown function {name!r} (known: json, {', '.join(FUNCTIONS)})")
            return FUNCTIONS[name](*args, **kwargs)
        raise ValueError(f"{where}: {ast.unparse(node)!r} is not part of the expression language")

    return ev(tree)


def _minus(text: str) -> str:
    return "−" + text[1:] if text.startswith("-") else text


def format_value(value, fmt: str | None) -> str:
    """A value as the README writes it (module docstring)."""
    if isinstance(value, MeanStd):
        return f"{format_value(value[0], fmt)} ± {format_value(abs(value[1]), fmt)}"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, np.ndarray)) and np.ndim(value) > 0:
        return ", ".join(format_value(v, fmt) for v in list(value))
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if value is None or not math.isfinite(float(value)):
        return "—"  # a target never reached, a mean of nothing
    if isinstance(value, (int, np.integer)) or (fmt and fmt.endswith("d")):
        if not float(value).is_integer():
            raise ValueError(f"value {value!r} is not an integer, expected one for format {fmt!r}")
        return _minus(format(int(value), fmt or "d"))
    return _minus(format(float(value), fmt if fmt else ".3g"))


def inline_value(spec: str, source: str | None, results: Results, where: str) -> str:
    """The text of one ``<!-- v: SPEC -->`` marker."""
    m = _FMT.match(spec.strip())
    expr, fmt = m.group("expr"), m.group("fmt")
    path, sep, rest = expr.partition("#")
    if sep and not any(c in path for c in "()[] "):
        source, expr = path, rest
    if source is None:
        raise ValueError(f"{where}: no <!-- source: PATH --> before this value and no PATH# in it")
    return format_value(evaluate(expr, results.load(source), results, f"{where}: {source}"), fmt)
