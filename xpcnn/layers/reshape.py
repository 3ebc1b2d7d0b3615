"""Shape changes between the convolutional and the dense part of a network."""

from __future__ import annotations

import math
from typing import Any

from .base import Layer, Shape


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...); backward restores the input shape."""

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 2:
            raise ValueError(
                f"{self!r}: expected an input with a batch axis and at least one more, got shape {tuple(input_shape)}"
            )
        return (input_shape[0], math.prod(input_shape[1:]))

    def forward(self, x: Any, training: bool = True) -> Any:
        xp = self._namespace(x)
        return self._save_for_backward(training, tuple(x.shape), xp.reshape(x, self.output_shape(x.shape)))

    def backward(self, dy: Any) -> Any:
        x_shape = self._saved_for_backward(dy)
        return self._namespace(dy).reshape(dy, x_shape)
