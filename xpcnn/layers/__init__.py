"""Layers: forward and backward of each, written once against the Array API standard."""

from .activation import GELU, ReLU, Sigmoid, Tanh
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .norm import BatchNorm2D
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .reshape import Flatten

LAYER_TYPES: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, Dense, ReLU, GELU, Tanh, Sigmoid, Dropout,
                BatchNorm2D)
}

__all__ = [
    "Layer", "Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Flatten", "Dense", "ReLU", "GELU", "Tanh",
    "Sigmoid", "Dropout", "BatchNorm2D", "LAYER_TYPES",
]
