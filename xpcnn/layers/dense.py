"""Fully connected layer."""

from __future__ import annotations

from typing import Any

from .. import backend, init
from ..checks import integer
from .base import Layer, Shape
from .product import matmul


class Dense(Layer):
    """y = x @ weight.T + bias; weight (out_features, in_features), bias (out_features,)."""

    def __init__(self, in_features: int, out_features: int, *, rng: Any = None) -> None:
        super().__init__()
        self.in_features = integer(in_features, "Dense in_features", 1)
        self.out_features = integer(out_features, "Dense out_features", 1)
        shapes = self.array_shapes(self.config())
        self.params = {
            "weight": init.kaiming_normal(shapes["weight"], in_features, init.host_rng(rng, "Dense rng")),
            "bias": init.zeros(shapes["bias"]),
        }

    @classmethod
    def array_shapes(cls, arguments: dict[str, Any]) -> dict[str, Shape]:
        # Checked as the constructor checks them: a checkpoint's config is planned before it is built.
        n_in = integer(arguments["in_features"], "Dense in_features", 1)
        n_out = integer(arguments["out_features"], "Dense out_features", 1)
        return {"weight": (n_out, n_in), "bias": (n_out,)}

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features}

    def output_shape(self, input_shape: Shape) -> Shape:
        self._expect_ndim(input_shape, "NF")
        if input_shape[1] != self.in_features:
            raise ValueError(
                f"{self!r}: expected input (N, {self.in_features}), got shape {tuple(input_shape)}"
            )
        return (input_shape[0], self.out_features)

    def forward(self, x: Any, training: bool = True) -> Any:
        xp = self._namespace(x)
        self.output_shape(x.shape)
        # Computed transposed, weight (out, in) @ x.T (in, N) -> (out, N): the output's
        # memory is batch-innermost like the feature maps' (see windows.py), and so is the
        # input gradient backward hands a Flatten below, which the layers under it read
        # fastest.
        y_t = backend.fast_path(matmul, x)(self.params["weight"], x.T)
        y_t += xp.reshape(self.params["bias"], (self.out_features, 1))
        return self._save_for_backward(training, x, y_t.T)

    skips_input_grad = True

    def backward(self, dy: Any, input_grad: bool = True) -> Any:
        x = self._saved_for_backward(dy)
        xp = self._namespace(dy)
        product = backend.fast_path(matmul, dy)
        self.grads = {"weight": product(dy.T, x), "bias": xp.sum(dy, axis=0)}
        return product(self.params["weight"].T, dy.T).T if input_grad else None  # (N, in), batch-innermost
