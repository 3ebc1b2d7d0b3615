"""Preset networks, each with the recipe it is trained with by default. tutorial, lenet
and fast were made for 28x28 grey digits (MNIST, Fashion-MNIST), their default, and take
other image shapes and class counts where their layers can; compact, resnet20 and cifar,
with global average pooling, take any image of 4x4 pixels or more (8x8 for cifar), grey
or colour; resnet20 and cifar were made for CIFAR-10 and scale in width.

    net = presets.build("lenet", seed=0)
    net = presets.build("compact", input_shape=(3, 32, 32), classes=10)
    net = presets.build("cifar", input_shape=(3, 32, 32), width=0.5)
    recipe = presets.recipe("lenet")            # what `xpcnn train --model lenet` uses
    optimizer = recipe.build_optimizer(net, steps_per_epoch)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import init, optim
from .checks import integer, number
from .layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, Layer, MaxPool2D, ReLU
from .layers.activation import GELU
from .model import Residual, Sequential

Shape = tuple[int, int, int]  # (C, H, W) of one input image
DIGITS: Shape = (1, 28, 28)


def tutorial(seed: int = 0, input_shape: Shape = DIGITS, classes: int = 10) -> Sequential:
    """The tutorial's network, made to learn: Conv2D 8x3x3 -> ReLU -> MaxPool2D 2 ->
    Flatten -> Dense 128 -> ReLU -> Dense 10, with ReLU moved after the pooling: the two
    commute exactly (max and ReLU are both monotone, and ties route to zero gradients
    either way), and ReLU then touches a quarter of the values."""
    host, (c, h, w) = init.host_rng(seed), input_shape
    return Sequential([
        Conv2D(c, 8, 3, rng=host), MaxPool2D(2), ReLU(), Flatten(),
        Dense(8 * ((h - 2) // 2) * ((w - 2) // 2), 128, rng=host), ReLU(), Dense(128, classes, rng=host),
    ])


def lenet(seed: int = 0, input_shape: Shape = DIGITS, classes: int = 10) -> Sequential:
    """A small modern LeNet: two 3x3 convolution blocks with batch norm, then a dropout
    head. The convolutions have no bias (batch norm cancels
    it exactly), and max pooling comes before ReLU: the two commute exactly, and ReLU then
    touches a quarter of the values."""
    host, (c, h, w) = init.host_rng(seed), input_shape
    return Sequential([
        Conv2D(c, 32, 3, padding=1, bias=False, rng=host), BatchNorm2D(32), MaxPool2D(2), ReLU(),  # 32x14x14
        Conv2D(32, 64, 3, padding=1, bias=False, rng=host), BatchNorm2D(64), MaxPool2D(2), ReLU(),  # 64x7x7
        Flatten(), Dense(64 * (h // 4) * (w // 4), 128, rng=host), ReLU(),
        Dropout(0.3, seed=int(host.integers(2**31))), Dense(128, classes, rng=host),
    ])


def compact(seed: int = 0, input_shape: Shape = (3, 32, 32), classes: int = 10) -> Sequential:
    """For pictures of any size and any number of classes: three 3x3 convolution blocks
    with batch norm (32, 64, 128 channels; max pooling after the first two), then global
    average pooling (one value per channel, whatever the image size) and a dense layer.
    Biasless convolutions and pooling before ReLU, as in lenet."""
    host, c = init.host_rng(seed), input_shape[0]
    return Sequential([
        Conv2D(c, 32, 3, padding=1, bias=False, rng=host), BatchNorm2D(32), MaxPool2D(2), ReLU(),
        Conv2D(32, 64, 3, padding=1, bias=False, rng=host), BatchNorm2D(64), MaxPool2D(2), ReLU(),
        Conv2D(64, 128, 3, padding=1, bias=False, rng=host), BatchNorm2D(128), ReLU(),
        GlobalAvgPool2D(), Dense(128, classes, rng=host),
    ])


def resnet20(seed: int = 0, input_shape: Shape = (3, 32, 32), classes: int = 10, width: float = 1.0) -> Sequential:
    """He et al.'s ResNet-20 for CIFAR-10 (2016, section 4.2): a 3x3 convolution of 16
    channels, then three stages of three basic blocks (16, 32, 64 channels; the first
    block of the second and third halves the image), global average pooling and a dense
    layer: 0.27 M parameters at width 1. A basic block is conv 3x3 -> batch norm -> ReLU ->
    conv 3x3 -> batch norm, plus its input, then ReLU. Where a block changes shape its
    shortcut is a 1x1 convolution with stride 2 and batch norm (the paper's option B;
    its CIFAR nets used option A, zero-padded identity, which has no weights: B adds 2,752
    parameters, 1 %, and exports as plain ONNX). `width` scales every channel count."""
    host, c = init.host_rng(seed), input_shape[0]
    widths = [_scaled(16, width), _scaled(32, width), _scaled(64, width)]
    layers: list[Layer] = [Conv2D(c, widths[0], 3, padding=1, bias=False, rng=host), BatchNorm2D(widths[0]), ReLU()]
    previous = widths[0]
    for stage, channels in enumerate(widths):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            layers += [_basic_block(previous, channels, stride, host), ReLU()]
            previous = channels
    return Sequential([*layers, GlobalAvgPool2D(), Dense(previous, classes, rng=host)])


def _basic_block(inputs: int, channels: int, stride: int, host: Any) -> Residual:
    body = [Conv2D(inputs, channels, 3, stride, padding=1, bias=False, rng=host), BatchNorm2D(channels), ReLU(),
            Conv2D(channels, channels, 3, padding=1, bias=False, rng=host), BatchNorm2D(channels)]
    if stride == 1 and inputs == channels:
        return Residual(body)
    return Residual(body, [Conv2D(inputs, channels, 1, stride, bias=False, rng=host), BatchNorm2D(channels)])


def cifar(seed: int = 0, input_shape: Shape = (3, 32, 32), classes: int = 10, width: float = 1.0) -> Sequential:
    """The fastest way to 94 % on CIFAR-10 we know of, after airbench94 (Jordan 2024): a
    3x3 convolution of 32 channels with batch norm and GELU, then three groups of 64, 256
    and 256 channels, each conv 3x3 -> max pool 2 -> batch norm -> GELU -> conv 3x3 ->
    batch norm -> GELU, then global average pooling and a dense layer. Its design, not its
    tricks (a whitening first layer, lookahead, test-time flips): accuracy on CIFAR-10 is
    not measured here. `width` scales every channel count: 0.25 trains on a laptop."""
    host, c = init.host_rng(seed), input_shape[0]
    stem = _scaled(32, width)
    layers: list[Layer] = [Conv2D(c, stem, 3, padding=1, bias=False, rng=host), BatchNorm2D(stem), GELU()]
    previous = stem
    for channels in (_scaled(64, width), _scaled(256, width), _scaled(256, width)):
        layers += [Conv2D(previous, channels, 3, padding=1, bias=False, rng=host), MaxPool2D(2),
                   BatchNorm2D(channels), GELU(),
                   Conv2D(channels, channels, 3, padding=1, bias=False, rng=host), BatchNorm2D(channels), GELU()]
        previous = channels
    return Sequential([*layers, GlobalAvgPool2D(), Dense(previous, classes, rng=host)])


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class SettingsError(ValueError):
    """A training setting that does not fit the others or the run (a momentum for Adam, a
    warm-up longer than the run, a resumed run asked to change); `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def fast(seed: int = 0, input_shape: Shape = DIGITS, classes: int = 10) -> Sequential:
    """The fastest way this library knows to 99 % on MNIST (after a public one-epoch
    recipe): Conv2D 24x5x5 -> MaxPool2D 2 -> ReLU -> Conv2D 32x3x3 -> MaxPool2D 2 -> ReLU ->
    Dense 800 -> 256 -> ReLU -> Dense 10, ReLU after pooling as in the other presets.
    Initialised as PyTorch initialises these layers (init.fan_in_uniform, biases too):
    the recipe was tuned with it, and with the He init of the other presets its one epoch
    ends lower."""
    host, (c, h, w) = init.host_rng(seed), input_shape
    with init.using(init.host_rng(0)):  # He values, replaced below: the library's generator stays as it was
        net = Sequential([
            Conv2D(c, 24, 5), MaxPool2D(2), ReLU(),  # 24x12x12
            Conv2D(24, 32, 3), MaxPool2D(2), ReLU(),  # 32x5x5
            Flatten(), Dense(32 * (((h - 4) // 2 - 2) // 2) * (((w - 4) // 2 - 2) // 2), 256), ReLU(),
            Dense(256, classes),
        ])
    for layer in net:
        if layer.params:
            fan_in = math.prod(layer.params["weight"].shape[1:])
            layer.params = {key: init.fan_in_uniform(p.shape, fan_in, host) for key, p in layer.params.items()}
    return net


@dataclass(frozen=True)
class Recipe:
    """How a preset is trained by default; `xpcnn train` flags override single fields."""

    epochs: int
    batch_size: int
    optimizer: str  # a name of optim.OPTIMIZERS
    lr: float  # peak learning rate
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    schedule: str = "cosine"  # a name of optim.SCHEDULES
    warmup: int = 0  # linear warm-up steps of the cosine schedule
    warmup_fits: bool = False  # the recipe's own warm-up: at most a tenth of a run's steps (a given one is exact)
    augment: int = 0  # random shifts (crops of the padded image) of up to this many pixels
    pad: str = "zero"  # what the shifts bring in: zeros, or the image reflected at its edges
    flip: bool = False  # mirror half the images left to right
    betas: tuple[float, float] | None = None  # Adam's, when not its defaults
    nesterov: bool = False  # SGD only
    label_smoothing: float = 0.0  # of the loss's targets (SoftmaxCrossEntropy)

    def __post_init__(self) -> None:
        # NumPy's numbers as Python's: a run's record (JSON) keeps the recipe's fields
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.generic):
                object.__setattr__(self, field.name, value.item())

    def replace(self, **changes: Any) -> Recipe:
        """A copy with the given fields changed; None leaves a field as it is. Switching to
        an optimizer other than SGD drops the momentum, which only SGD has; a pad needs shifts
        (augment) to bring it in."""
        changes = {key: value for key, value in changes.items() if value is not None}
        optimizer, schedule = changes.get("optimizer", self.optimizer), changes.get("schedule", self.schedule)
        if optimizer == "sgd":
            changes["betas"] = None  # Adam's, gone with it
        else:
            for field in ("momentum", "nesterov"):
                if changes.get(field):
                    raise SettingsError(field, f"applies to the sgd optimizer only, not {optimizer}")
            changes["momentum"], changes["nesterov"] = 0.0, False
        if changes.get("warmup") and schedule != "cosine":
            raise SettingsError("warmup", f"applies to the cosine schedule only, not {schedule}")
        if "warmup" in changes:
            changes["warmup_fits"] = False  # the number given, as it is
        elif schedule != "cosine":
            changes["warmup"], changes["warmup_fits"] = 0, False  # the recipe's warm-up, gone with its schedule
        if "momentum" in changes and optimizer == "sgd" and schedule == "onecycle":
            raise SettingsError("momentum", "the onecycle schedule cycles SGD's momentum between 0.95 and 0.85, "
                                "as PyTorch's OneCycleLR; choose another --schedule to set it")
        recipe = dataclasses.replace(self, **changes)
        if "pad" in changes and not recipe.augment:
            raise SettingsError("pad", "says what --augment's shifts bring in at the edges: give --augment N too")
        if recipe.nesterov and recipe.momentum == 0:
            raise SettingsError("nesterov", "needs a momentum above 0 (--momentum), or turn it off (--no-nesterov)")
        return recipe

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.epochs * steps_per_epoch

    def build_optimizer(self, model: Sequential, steps_per_epoch: int) -> optim.Optimizer:
        """The recipe's optimizer for `model`, its schedule planned over the whole run (the
        recipe's own warm-up shortened to a tenth of a short run: see warmup_fits)."""
        total = self.total_steps(steps_per_epoch)
        warmup = min(self.warmup, total // 10) if self.warmup_fits else self.warmup
        if self.schedule == "cosine" and not 0 <= warmup < total:
            raise SettingsError("warmup", f"{warmup} steps must be fewer than the run's {total} steps")
        if self.schedule == "onecycle" and total < 2:
            raise SettingsError("epochs", f"the onecycle schedule needs 2 optimizer steps or more; {self.epochs} "
                                f"epoch(s) of {steps_per_epoch} batch(es) of {self.batch_size} make {total}: more "
                                "epochs, or a smaller batch size")
        schedule = optim.plan_schedule(self.schedule, total, warmup)
        return optim.build(self.optimizer, model, self.lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, schedule=schedule, betas=self.betas,
                           nesterov=self.nesterov)


PRESETS: dict[str, Callable[..., Sequential]] = {"tutorial": tutorial, "lenet": lenet, "fast": fast,
                                                 "compact": compact, "resnet20": resnet20, "cifar": cifar}
DEFAULT_SHAPES: dict[str, Shape] = {"tutorial": DIGITS, "lenet": DIGITS, "fast": DIGITS, "compact": (3, 32, 32),
                                    "resnet20": (3, 32, 32), "cifar": (3, 32, 32)}
SCALABLE = ("resnet20", "cifar")  # the presets that take a width
WIDTHS = (1 / 64, 16.0)  # the widths they take: from a 64th of their channels to 16 times as many
SMALLEST_SIDES = {"tutorial": 4, "lenet": 4, "fast": 12, "compact": 4, "resnet20": 4, "cifar": 8}  # in pixels
ALIASES = {"seed": "tutorial"}  # the tutorial preset's first name, kept working
RECIPES: dict[str, Recipe] = {
    "tutorial": Recipe(epochs=3, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9),
    # Adam at its full rate from the first step kills most of the dense layer's ReLU units:
    # a warm-up keeps about twice as many (benchmarks/results/lenet-warmup-20261208.md).
    "lenet": Recipe(epochs=5, batch_size=64, optimizer="adam", lr=1e-2, warmup=100, warmup_fits=True, augment=1),
    "fast": Recipe(epochs=1, batch_size=256, optimizer="adam", lr=1e-2, schedule="onecycle", betas=(0.7, 0.9)),
    "compact": Recipe(epochs=10, batch_size=64, optimizer="adam", lr=2e-3),
    # He et al.: SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128, x0.1 at 32k and 48k of
    # 64k iterations (half and three quarters of 164 epochs), 4-pixel crops (zeros) and flips.
    "resnet20": Recipe(epochs=164, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                       schedule="multistep", augment=4, flip=True),
    # After airbench94: Nesterov SGD, label smoothing 0.2, 2-pixel translations (reflected)
    # and flips, about ten epochs; a one-cycle schedule in place of its triangular one (it
    # sets the momentum, between 0.95 and 0.85: the 0.9 here only says SGD has one).
    "cifar": Recipe(epochs=10, batch_size=512, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
                    weight_decay=5e-4, schedule="onecycle", augment=2, pad="reflect", flip=True,
                    label_smoothing=0.2),
}


def canonical(name: str) -> str:
    """The preset's name, aliases resolved; ValueError for an unknown one."""
    name = ALIASES.get(name, name) if isinstance(name, str) else name
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(PRESETS)}")
    return name


def build(name: str, seed: int = 0, input_shape: Shape | None = None, classes: int = 10,
          width: float = 1.0) -> Sequential:
    """A preset network by name for images of `input_shape` (C, H, W; default the
    preset's own) and `classes` classes, initialised from `seed` (NumPy backend,
    float32); `width` scales the channels of resnet20 and cifar. ValueError, in one line,
    for a shape the preset's layers cannot take."""
    name, seed = canonical(name), integer(seed, "seed", 0)
    classes = integer(classes, "classes", 2, 100_000)
    width = check_width(name, width)
    shape = DEFAULT_SHAPES[name] if input_shape is None else _shape(input_shape)
    smallest = SMALLEST_SIDES[name]
    if min(shape[1:]) < smallest:
        raise ValueError(f"preset {name} takes images of at least {smallest}x{smallest} pixels, got "
                         f"{shape[1]}x{shape[2]}")
    if name in SCALABLE:
        return PRESETS[name](seed, shape, classes, width)
    return PRESETS[name](seed, shape, classes)


def check_width(name: str, width: Any) -> float:
    """`width` as a float in WIDTHS for preset `name` (its canonical name); SettingsError
    for a width other than 1 where the preset does not scale (see SCALABLE)."""
    width = number(width, "width", *WIDTHS)
    if width != 1.0 and name not in SCALABLE:
        raise SettingsError("width", f"applies to {' and '.join(SCALABLE)}, not {name}")
    return width


def built_with_width(model: Sequential, name: str, width: float) -> bool:
    """Whether `model` is preset `name` at `width` for the data it knows (model.data)."""
    data = model.data or {}
    try:
        made = build(name, input_shape=tuple(data["input_shape"]), classes=len(data["classes"]), width=width)
    except (KeyError, TypeError, ValueError):
        return False
    return made.config() == model.config()


def _shape(value: Any) -> Shape:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise TypeError(f"input_shape must be (channels, height, width), got {value!r}")
    channels, height, width = (integer(size, "input_shape", 1, 1 << 16) for size in value)
    return channels, height, width


def recipe(name: str) -> Recipe:
    """The default training recipe of preset `name`."""
    return RECIPES[canonical(name)]
