"""What `xpcnn explain` runs: image files explained by a saved model, as pictures in a
folder (needs matplotlib)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.images import ImageError, read_for_model
from ..datasets.sources import escaped
from ..evaluation import Classified, NotFiniteOutputs, opened_for_files
from ..extras import install_hint
from ..hooks import Position
from ..io.atomic import why_not_made
from ..io.figures import available
from ..model import Sequential
from ..presets import SettingsError
from . import drawing
from .maps import feature_maps, first_filters, mapped_positions, occlusion

FILTERS_NAME = "filters.png"  # unless an image explained has this name in the folder


@dataclass
class Explained(Classified):
    """One image file explained: its classes (Classified's), the class followed by the
    occlusion map (`target`), and the picture drawn (`picture`); or why it could not be."""

    target: str | None = None
    picture: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Classified's, with "target" and "picture" for an image explained."""
        if self.error is not None:
            return super().to_dict()
        return {**super().to_dict(), "target": self.target, "picture": str(self.picture)}

    def to_line(self) -> str:
        """"IMAGE: class (p %), ... -> PICTURE", or the error."""
        if self.error is not None:
            return super().to_line()
        return f"{super().to_line()} -> {escaped(str(self.picture))}"


@dataclass
class Explanations:
    """What explain_files wrote: the first convolution's filters (None for a network
    without one, or where images were given and none could be read: then nothing is
    written; given no image, the filters alone), and each image's explanation, in the
    order given."""

    filters: Path | None
    images: list[Explained]


def explain_files(path: str | Path, images: Sequence[str | Path], out: str | Path = "explained", *,
                  target: str | None = None, at: Position | Sequence[Position] | None = None, top: int = 3,
                  invert: bool | None = None, backend_name: str = "numpy", device: Any = None) -> Explanations:
    """Each image file read as classify_files reads it, explained by the saved model in a
    picture `out`/NAME.png (xpcnn.explain.drawing.explanation): its `top` classes, the
    occlusion map of class `target` (a class name; default: the most likely) and the
    feature maps at `at` (default: xpcnn.explain.maps.stages); and the network's first
    filters in `out`/filters.png. A file that cannot be read gets its error."""
    if not available():
        raise ImportError(f"explaining draws pictures with matplotlib: {install_hint('plot')}")
    images, invert, top, checkpoint, data = opened_for_files(path, images, invert, top, backend_name, device,
                                                             "explain_files")
    model = checkpoint.model
    at = _checked_choices(model, data, target, at)
    results = [Explained(Path(image)) for image in images]
    read = [_read(result, data, invert) for result in results]  # all of them before anything is written
    if results and all(pixels is None for pixels in read):  # nothing to explain: no folder, no filters
        return Explanations(None, results)
    folder = _folder(out)
    inputs = _identities(images)  # no picture is written over an image given, --out being its folder
    taken: set[str] = set()
    filters = _draw_filters(model, folder, taken, inputs)
    for result, pixels in zip(results, read):
        if pixels is not None:
            result.picture = folder / _unique(result.image.stem, taken, folder, inputs)
            _explain(result, pixels, model, data, target, at, top)
    return Explanations(filters, results)


def _checked_choices(model: Sequential, data: dict[str, Any], target: Any,
                     at: Position | Sequence[Position] | None) -> list[str] | None:
    """The positions `at` names (None for the default), after checking that `target` and
    `at` fit the model and its `data` (TypeError, or SettingsError naming the one that does
    not)."""
    if target is not None and not isinstance(target, str):
        raise TypeError(f"explain_files target must be a class name (a str), got {target!r}")
    if target is not None and target not in data["classes"]:
        shown = ", ".join(data["classes"][:12]) + ("..." if len(data["classes"]) > 12 else "")
        raise SettingsError("class", f"{target!r} is not one of the model's classes ({shown})")
    try:
        return None if at is None else mapped_positions(model, at, data["input_shape"])
    except ValueError as exc:
        raise SettingsError("at", str(exc)) from None


def _read(result: Explained, data: dict[str, Any], invert: bool | None) -> np.ndarray | None:
    """The image of `result` as the model takes it; None, and `result.error` said, where it cannot be read."""
    try:
        return read_for_model(result.image, tuple(data["input_shape"]), data["pictures"], invert)
    except ImageError as exc:
        result.error = str(exc)
        return None


def _explain(result: Explained, pixels: np.ndarray, model: Sequential, data: dict[str, Any], target: str | None,
             at: Position | Sequence[Position] | None, top: int) -> None:
    """Draw `result.picture` for the image `pixels` (uint8 (C, H, W)), and fill in `result`."""
    classes, statistics = data["classes"], {"mean": data["mean"], "std": data["std"]}
    try:
        occluded = occlusion(model, pixels, None if target is None else classes.index(target), **statistics)
    except NotFiniteOutputs:
        raise NotFiniteOutputs(f"for {escaped(str(result.image))}") from None
    maps = feature_maps(model, pixels, at, **statistics)
    layers = {str(position): type(layer).__name__ for position, layer, _ in model.shaped_layers((1, *pixels.shape))}
    result.classes = [(classes[k], float(occluded.probabilities[k])) for k in
                      occluded.probabilities.argsort()[::-1][:top]]
    result.target = classes[occluded.target]
    drawing.explanation(result.picture, pixels, classes, occluded, maps, layers, escaped(str(result.image)), top)


def _folder(out: str | Path) -> Path:
    """`out`, made if it does not exist; SettingsError ("out", a usage error for `xpcnn
    explain`) where it is something else than a folder, or no file can be written into it."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise SettingsError("out", f"{folder}: the pictures go into a folder, and this is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SettingsError("out", f"cannot write pictures into {folder}: {why_not_made(folder, exc)}") from None
    return folder


def _draw_filters(model: Sequential, folder: Path, taken: set[str], inputs: set[tuple[int, int]]) -> Path | None:
    """The first convolution's filters drawn in `folder` as filters.png (or another name:
    _unique); None, and no name taken, without one."""
    try:
        position, weights = first_filters(model)
    except ValueError:
        return None
    path = folder / _unique(Path(FILTERS_NAME).stem, taken, folder, inputs)
    drawing.filters(weights, path, f"layer {position} (Conv2D)")
    return path


def _unique(stem: str, taken: set[str], folder: Path, inputs: set[tuple[int, int]]) -> str:
    """STEM.png, or STEM-2.png and so on where an earlier picture took the name (an image
    of the same name in another folder), or where in `folder` it is one of the images
    explained (`inputs`, by _identities) or no file (a folder, a FIFO); `taken` gains the name."""
    name, count = f"{stem}.png", 1
    while name in taken or _identity(folder / name) in inputs or _held(folder / name):
        count += 1
        name = f"{stem}-{count}.png"
    taken.add(name)
    return name


def _held(path: Path) -> bool:
    """Whether something that is no regular file is at `path`, which a picture cannot replace."""
    return os.path.lexists(path) and not path.is_file()


def _identities(images: Sequence[str | Path]) -> set[tuple[int, int]]:
    """The files `images` name, as (device, inode): the same file under another name (a
    link, another case on a case-insensitive disk) is found too."""
    return {found for found in map(_identity, images) if found is not None}


def _identity(path: str | Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except (OSError, ValueError):  # missing; a name with a NUL
        return None
    return status.st_dev, status.st_ino
