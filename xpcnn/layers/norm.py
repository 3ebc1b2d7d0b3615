"""Batch normalisation over the channels of NCHW inputs."""

from __future__ import annotations

from typing import Any

from .. import backend
from .base import Layer, Shape

_AXES = (0, 2, 3)  # statistics per channel: over batch and space


class BatchNorm2D(Layer):
    """y = weight * (x - mean) / sqrt(var + eps) + bias, per channel.

    Training uses the batch's mean and (biased) variance and updates the running
    statistics as PyTorch does: running = (1 - momentum) * running + momentum * batch,
    with the unbiased variance. Evaluation uses the running statistics.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"BatchNorm2D num_features must be >= 1, got {num_features}")
        if not 0.0 <= momentum <= 1.0 or eps <= 0.0:
            raise ValueError(f"BatchNorm2D needs 0 <= momentum <= 1 and eps > 0, got {momentum}, {eps}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.params = {"weight": backend.ones((num_features,)), "bias": backend.zeros((num_features,))}
        self.buffers = {
            "running_mean": backend.zeros((num_features,)),
            "running_var": backend.ones((num_features,)),
        }

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def output_shape(self, input_shape: Shape) -> Shape:
        self._expect_ndim(input_shape, "NCHW")
        if input_shape[1] != self.num_features:
            raise ValueError(
                f"{self!r}: expected input (N, {self.num_features}, H, W), got shape {tuple(input_shape)}"
            )
        return tuple(input_shape)

    def forward(self, x: Any, training: bool = True) -> Any:
        xp = self._namespace(x)
        n, c, h, w = self.output_shape(x.shape)
        per_channel = (1, c, 1, 1)
        gamma = xp.reshape(self.params["weight"], per_channel)
        beta = xp.reshape(self.params["bias"], per_channel)
        if not training:
            mean = xp.reshape(self.buffers["running_mean"], per_channel)
            var = xp.reshape(self.buffers["running_var"], per_channel)
            return (x - mean) / xp.sqrt(var + self.eps) * gamma + beta
        count = n * h * w
        if count < 2:
            raise ValueError(f"{self!r}: training needs more than one value per channel, got shape {tuple(x.shape)}")
        mean = xp.mean(x, axis=_AXES, keepdims=True)
        centred = x - mean
        var = xp.mean(centred * centred, axis=_AXES, keepdims=True)
        inv_std = 1 / xp.sqrt(var + self.eps)
        x_hat = centred * inv_std
        m = self.momentum
        self.buffers["running_mean"] = (1 - m) * self.buffers["running_mean"] + m * xp.reshape(mean, (c,))
        unbiased = xp.reshape(var, (c,)) * (count / (count - 1))
        self.buffers["running_var"] = (1 - m) * self.buffers["running_var"] + m * unbiased
        return self._keep(training, (x_hat, inv_std), x_hat * gamma + beta)

    def backward(self, dy: Any) -> Any:
        x_hat, inv_std = self._take_cache(dy)
        xp = self._namespace(dy)
        n, c, h, w = dy.shape
        count = n * h * w
        self.grads = {
            "weight": xp.sum(dy * x_hat, axis=_AXES),
            "bias": xp.sum(dy, axis=_AXES),
        }
        dx_hat = dy * xp.reshape(self.params["weight"], (1, c, 1, 1))
        sum_dx_hat = xp.sum(dx_hat, axis=_AXES, keepdims=True)
        sum_dx_hat_x_hat = xp.sum(dx_hat * x_hat, axis=_AXES, keepdims=True)
        # d/dx of the normalisation: remove the gradient's mean and its component along x_hat.
        return inv_std / count * (count * dx_hat - sum_dx_hat - x_hat * sum_dx_hat_x_hat)
