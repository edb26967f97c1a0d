"""Checks shared by the config sections: types from the annotations, ranges, names (one-line errors naming the field)."""

from __future__ import annotations

import dataclasses
import math


def number_or_name(value, kind):
    """A string holding a number becomes that number (CLI and JSON give "0.7" or 0.7 alike)."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if kind is int:
            if not number.is_integer():
                return value  # reported by the caller as not an int
            return int(number)
        return number
    if isinstance(value, bool):
        return value
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
          "str | float": (str, int, float), "str | int": (str, int)}


def check_types(config) -> None:
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        kinds = _TYPES[field.type if isinstance(field.type, str) else type_name(field.type)]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise ValueError(f"{field.name}: got {value!r}, expected a value of type {type_name(field.type)}")


def type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def one_of(name, value, allowed, extra=""):
    if value not in allowed:
        raise ValueError(f"{name}: got {value!r}, expected one of {tuple(allowed)}{(' ' + extra) if extra else ''}")


def at_least(name, value, lo):
    if value < lo:
        raise ValueError(f"{name}: got {value!r}, expected an int >= {lo}")


def int_in_range(name, value, lo, hi):
    # No float conversion (unlike in_range): an int past 2**1024 would make math.isfinite overflow itself.
    if not lo <= value <= hi:
        raise ValueError(f"{name}: got {value!r}, expected an int in [{lo}, {hi}]")


def in_range(name, value, lo, hi, lo_open=False, hi_open=False):
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open or hi == math.inf else ']'}"
        raise ValueError(f"{name}: got {value!r}, expected a number in {interval}")
