"""The types argparse converts the `xpcnn` command's flag values with: each refuses a
value out of its range with "must be ..., got ...", which argparse shows as a usage error."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import presets
from ..io.schema import MAX_SEED, MAX_SIZE


def checked(convert: Callable[[str], Any], accept: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: `convert`, then refuse values that `accept` rejects."""
    def parse(text: str) -> Any:
        value = convert(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
        return value

    parse.__name__ = convert.__name__  # argparse says "invalid float value: 'abc'"
    return parse


positive_int = checked(int, lambda value: 1 <= value <= MAX_SIZE, f"in [1, {MAX_SIZE:,}]")
positive_float = checked(float, lambda value: 0 < value < math.inf, "> 0 and finite")
count = checked(int, lambda value: 0 <= value <= MAX_SIZE, f"in [0, {MAX_SIZE:,}]")
seed = checked(int, lambda value: 0 <= value <= MAX_SEED, f"in [0, {MAX_SEED}]")
fraction = checked(float, lambda value: 0.0 <= value < 1.0, "in [0, 1)")
width = checked(float, lambda value: presets.WIDTHS[0] <= value <= presets.WIDTHS[1],
                  f"in [1/{round(1 / presets.WIDTHS[0])}, {presets.WIDTHS[1]:g}]")


def a_path(text: str) -> Path:
    """An argparse type: a path, never the empty string (which would mean the current
    folder without saying so)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def written_path(text: str) -> Path:
    """An argparse type: a path to write, never "-", which would make a file or folder of
    that name where standard output was meant."""
    if text == "-":
        raise argparse.ArgumentTypeError("expected a path to write; '-' (standard output) is not one")
    return a_path(text)


def folder_name(text: str) -> str:
    """An argparse type: a folder's name as given, never the empty string."""
    return str(a_path(text))


def positions(text: str) -> list[int | str]:
    """Layer positions, comma-separated: "3,7" or "3.body.2" (Sequential.positions checks that
    the network has them)."""
    named = [part.strip() for part in text.split(",")]
    if not all(named):
        raise argparse.ArgumentTypeError(f"expected layer positions such as 3,7 or 3.body.2, got {text!r}")
    return [int(part) if part.lstrip("-").isascii() and part.lstrip("-").isdigit() else part for part in named]
