"""Batch normalisation over the channels of NCHW inputs."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from .. import backend, capture, distributed, init
from ..checks import integer, number
from .base import Layer, Shape
from .windows import channel_rows, from_channel_rows


class BatchNorm2D(Layer):
    """y = weight * (x - mean) / sqrt(var + eps) + bias, per channel.

    Training uses the batch's mean and (biased) variance and updates the running
    statistics as PyTorch does: running = (1 - momentum) * running + momentum * batch,
    with the unbiased variance. Evaluation uses the running statistics.
    """

    buffer_names = ("running_mean", "running_var")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = integer(num_features, "BatchNorm2D num_features", 1)
        self.eps = number(eps, "BatchNorm2D eps", 1e-300, 1.0)
        self.momentum = number(momentum, "BatchNorm2D momentum", 0.0, 1.0)
        shapes = self.array_shapes(self.config())
        self.params = {"weight": init.ones(shapes["weight"]), "bias": init.zeros(shapes["bias"])}
        self.buffers = {
            "running_mean": init.zeros(shapes["running_mean"]),
            "running_var": init.ones(shapes["running_var"]),
        }
        self.batches_tracked = 0  # training forwards so far (PyTorch's num_batches_tracked)

    @classmethod
    def array_shapes(cls, arguments: dict[str, Any]) -> dict[str, Shape]:
        # Checked as the constructor checks it: a checkpoint's config is planned before it is built.
        c = integer(arguments["num_features"], "BatchNorm2D num_features", 1)
        return {"weight": (c,), "bias": (c,), "running_mean": (c,), "running_var": (c,)}

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def extra_state(self) -> dict[str, int]:
        return {"num_batches_tracked": self.batches_tracked}

    def load_extra_state(self, state: dict[str, int]) -> None:
        count = state.get("num_batches_tracked", 0)  # none: a block's layer that has not counted yet
        if set(state) - {"num_batches_tracked"} or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{self!r}: expected extra state {{'num_batches_tracked': int >= 0}}, got {state!r}")
        self.batches_tracked = count

    def output_shape(self, input_shape: Shape) -> Shape:
        self._expect_ndim(input_shape, "NCHW")
        if input_shape[1] != self.num_features:
            raise ValueError(
                f"{self!r}: expected input (N, {self.num_features}, H, W), got shape {tuple(input_shape)}"
            )
        return tuple(input_shape)

    def forward(self, x: Any, training: bool = True) -> Any:
        xp = self._namespace(x)
        shape = self.output_shape(x.shape)
        c = shape[1]
        rows = channel_rows(x)  # (C, M), M = N*H*W: statistics are row reductions
        if not training:
            scale, shift = self.running_affine()
            return self._save_for_backward(training, None, from_channel_rows(rows * scale + shift, shape))
        gamma = xp.reshape(self.params["weight"], (c, 1))
        beta = xp.reshape(self.params["bias"], (c, 1))
        count = self.batch_count(shape)
        # Resolved together, so that the gradient reads what this forward saved.
        forward, gradient = (backend.fast_path(f, x) for f in (normalise, normalise_gradient))
        y, mean, var, saved = forward(rows, gamma, beta, count, self.eps)
        self.update_running(mean, var, count)
        return self._save_for_backward(training, (gradient, saved, count), from_channel_rows(y, shape))

    def running_affine(self) -> tuple[Any, Any]:
        """(scale, shift), each (C, 1): inference's y = x * scale + shift, with the running
        statistics."""
        xp, c = array_namespace(self.params["weight"]), self.num_features
        scale = xp.reshape(self.params["weight"], (c, 1)) / xp.sqrt(
            xp.reshape(self.buffers["running_var"], (c, 1)) + self.eps)
        return scale, xp.reshape(self.params["bias"], (c, 1)) - xp.reshape(self.buffers["running_mean"], (c, 1)) * scale

    def batch_count(self, shape: Shape) -> int:
        """Values per channel in the batch of an input of `shape`, over every worker and
        process that holds part of it (xpcnn.distributed): what the statistics divide by."""
        count = distributed.batch_rows(shape[0])[1] * shape[2] * shape[3]
        if count < 2:
            raise ValueError(f"{self!r}: training needs more than one value per channel, got shape {tuple(shape)}")
        return count

    def update_running(self, mean: Any, var: Any, count: int) -> None:
        """running = (1 - momentum) * running + momentum * batch (unbiased variance), in
        place: a step recorded as a CUDA graph updates the arrays it was recorded with."""
        update = backend.fast_path(update_running, mean)
        update(self.buffers["running_mean"], self.buffers["running_var"], mean, var, self.momentum, count)
        capture.each_step(self._count_batch)

    def _count_batch(self) -> None:
        self.batches_tracked += 1

    def backward(self, dy: Any) -> Any:
        gradient, saved, count = self._saved_for_backward(dy)
        xp, c = self._namespace(dy), self.num_features
        gamma = xp.reshape(self.params["weight"], (c, 1))
        dx, grad_weight, grad_bias = gradient(channel_rows(dy), saved, gamma, count)
        self.grads = {"weight": xp.reshape(grad_weight, (c,)), "bias": xp.reshape(grad_bias, (c,))}
        return from_channel_rows(dx, tuple(dy.shape))


def update_running(running_mean: Any, running_var: Any, mean: Any, var: Any, momentum: float, count: int) -> None:
    """running = (1 - momentum) * running + momentum * batch for the running mean and
    variance (C,), in place, from the batch's mean and biased variance (C, 1) of `count`
    values per channel (the variance made unbiased)."""
    xp, m, c = array_namespace(mean), momentum, running_mean.shape[0]
    running_mean *= 1 - m
    running_mean += m * xp.reshape(mean, (c,))
    running_var *= 1 - m
    running_var += m * xp.reshape(var, (c,)) * (count / (count - 1))


def normalise(rows: Any, gamma: Any, beta: Any, count: int, eps: float) -> tuple[Any, Any, Any, Any]:
    """Batch norm of channel rows (C, M) with the statistics of the whole batch (`count`
    values per channel, summed over the processes that hold its other rows: see
    xpcnn.distributed): y (C, M), the batch's mean and biased variance (C, 1), and what
    normalise_gradient reads."""
    xp = array_namespace(rows)
    (total,) = distributed.batch_sum(xp.sum(rows, axis=1, keepdims=True))
    mean = total / count
    centred = rows - mean
    # Two passes (mean, then squares of the centred values) stay accurate in float32
    # when |mean| >> std. `sum` rather than `vecdot`: NumPy sums pairwise, while its
    # float32 vecdot accumulates sequentially, 1e-5 off over 200,000 values.
    (squares,) = distributed.batch_sum(xp.sum(centred * centred, axis=1, keepdims=True))
    var = squares / count
    inv_std = 1 / xp.sqrt(var + eps)
    y = centred * (gamma * inv_std)  # = x_hat * gamma, without storing x_hat
    y += beta
    return y, mean, var, (centred, inv_std)


def normalise_gradient(dy_rows: Any, saved: Any, gamma: Any, count: int) -> tuple[Any, Any, Any]:
    """dx (C, M) from dy (C, M) and what `normalise` saved, and this process's share of
    the gradients of gamma and beta (C, 1): the trainer sums the shares of all."""
    centred, inv_std = saved
    xp = array_namespace(dy_rows)
    grad_bias = xp.sum(dy_rows, axis=1, keepdims=True)
    grad_weight = xp.sum(dy_rows * centred, axis=1, keepdims=True) * inv_std  # sum(dy * x_hat)
    # dx needs the gradients over the whole batch: the statistics came from all of it.
    total_bias, total_weight = distributed.batch_sum(grad_bias, grad_weight)
    # d/dx of the normalisation: remove the gradient's mean and its component along
    # x_hat, then scale: dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat)),
    # computed per channel as (dy - mean(dy)) * a + centred * b.
    a = gamma * inv_std
    b = -a * inv_std * total_weight / count
    dx = dy_rows - total_bias / count
    dx *= a
    dx += centred * b
    return dx, grad_weight, grad_bias
