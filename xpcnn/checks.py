"""Checks of arguments, shared by every module: each gives the value as Python's type, or
one line naming what was expected (`what` names the argument, e.g. "Conv2D in_channels")."""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import numpy as np


def integer(value: Any, what: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as a Python int: any integer type (NumPy's too), never a bool or a float;
    `what` names it in errors, e.g. "Conv2D in_channels"."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{what} must be at most {maximum}, got {value}")
    return value


def flag(value: Any, what: str) -> bool:
    """`value` as a Python bool: True or False, NumPy's too (a truthy "no" or 1 would
    switch a thing on); `what` names it in errors."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return bool(value)  # NumPy's is no JSON, and a checkpoint records some of these (SGD nesterov, Conv2D bias)


def optional_flag(value: Any, what: str) -> bool | None:
    """`value` as a Python bool or None: True, False (NumPy's too) or None, for "decide for
    me"; `what` names it in errors."""
    if value is not None and not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be True, False or None, got {value!r}")
    return None if value is None else bool(value)


def number(value: Any, what: str, low: float, high: float, high_included: bool = True,
           low_included: bool = True) -> float:
    """`value` as a float in [low, high] (an end left out where `*_included` is False);
    `what` names it in errors."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a finite real number, got {value!r}")
    above = low <= value if low_included else low < value
    below = value <= high if high_included else value < high
    if not math.isfinite(value) or not (above and below):
        if math.isfinite(high):
            bounds = f"in {'[' if low_included else '('}{low}, {high}{']' if high_included else ')'}"
        else:
            bounds = f"{'>=' if low_included else '>'} {low} and finite"
        raise ValueError(f"{what} must be {bounds}, got {value}")
    return float(value)
