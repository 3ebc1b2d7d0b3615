"""Layers run together as one step: the blocks a network's forward may fuse.

Sequential asks `block_at` at each position whether one of `FUSIONS` starts there and
fits the input, and runs it in place of its layers, unless hooks are attached (they see
every layer) or the model's `fuse` is off. A block runs through standard functions that
are its layers' own steps in order, with the same results as the layers run alone, so
that a fast path (xpcnn.kernels) can do at once what they do one after another. Each
layer keeps its parameters, gradients and running statistics as if it had run itself.

NormPoolReLU, the block lenet repeats: BatchNorm2D -> MaxPool2D -> ReLU whose windows
tile the feature map. On numba the normalised values are pooled as they are made and
never stored, and the gradient goes from each window straight to batch norm's input:
about a third of the passes over memory.

NormReLU, the start of every residual block: BatchNorm2D -> ReLU. On numba ReLU cuts the
normalised values as they are made, and its gradient is applied as batch norm's gradient
reads dy: two passes over the feature map fewer each way.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from .. import backend
from .activation import ReLU, relu
from .base import Layer, Shape
from .norm import BatchNorm2D, normalise, normalise_gradient
from .pool import MaxPool2D, max_pool, max_pool_gradient, windows_tile
from .windows import Pair, batch_innermost, channel_rows, from_channel_rows, output_size, to_nchw


class FusedBlock:
    """Layers of the types in `pattern`, in that order, run as one step. Subclasses say
    where they apply (`fits`) and implement forward and backward. A hook attached around
    a backward only (its forward ran fused) sees the block as one layer."""

    pattern: tuple[type[Layer], ...] = ()
    skips_input_grad = False

    def __init__(self, *layers: Layer) -> None:
        self.layers = layers
        self._saved: Any = None

    @property
    def params(self) -> dict[str, Any]:
        """The first layer's (batch norm's, in every block so far): the others have none."""
        return self.layers[0].params

    @property
    def grads(self) -> dict[str, Any]:
        return self.layers[0].grads

    @classmethod
    def starts(cls, layers: list[Layer], index: int) -> bool:
        """Whether `layers[index:]` begin with the pattern's types exactly (subclasses of
        them never fuse: they may compute something else)."""
        return tuple(type(layer) for layer in layers[index:index + len(cls.pattern)]) == cls.pattern

    @classmethod
    def fits(cls, layers: list[Layer], index: int, shape: Shape) -> bool:
        """Whether the block can run `layers[index:]` on an input of `shape`."""
        return cls.starts(layers, index)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.layers))})"

    def _saved_for_backward(self, dy: Any) -> Any:
        """What forward saved (after it, the output's shape), after checking that dy has
        that shape; released, as a layer's is."""
        if self._saved is None:
            raise RuntimeError(f"{self.layers[0]!r}: backward() needs a preceding forward(x, training=True)")
        (*saved, out_shape), self._saved = self._saved, None
        if tuple(dy.shape) != out_shape:
            raise ValueError(f"{self.layers[-1]!r}: backward expected dy of shape {out_shape}, got {tuple(dy.shape)}")
        return saved

    def _set_norm_grads(self, grad_weight: Any, grad_bias: Any) -> None:
        """Batch norm's (the first layer's) gradients, from (C, 1) columns."""
        xp = array_namespace(grad_weight)
        self.layers[0].grads = {"weight": xp.reshape(grad_weight, (-1,)), "bias": xp.reshape(grad_bias, (-1,))}


class NormPoolReLU(FusedBlock):
    """A BatchNorm2D, MaxPool2D and ReLU run as one step, where the pooling windows tile
    the feature map. It has batch norm's parameters and gradients."""

    pattern = (BatchNorm2D, MaxPool2D, ReLU)

    def __init__(self, norm: BatchNorm2D, pool: MaxPool2D, activation: ReLU) -> None:
        super().__init__(norm, pool, activation)
        self.norm, self.pool, self.activation = norm, pool, activation

    @classmethod
    def fits(cls, layers: list[Layer], index: int, shape: Shape) -> bool:
        """The pattern on an NCHW input whose pooling windows tile it: each value of the
        feature map in exactly one window."""
        if not cls.starts(layers, index) or len(shape) != 4:
            return False
        pool = layers[index + 1]
        return all(size >= k and windows_tile(k, s, output_size(size, k, s), size)
                   for k, s, size in zip(pool.kernel_size, pool.stride, shape[2:]))

    def forward(self, x: Any, training: bool = True) -> Any:
        norm, pool = self.norm, self.pool
        xp = norm._namespace(x)
        shape = norm.output_shape(x.shape)
        out_hw = pool.output_shape(shape)[2:]
        if not training:  # the running statistics: nothing to save, and nothing kept for backward
            self._saved = None
            scale, shift = norm.running_affine()
            infer = backend.fast_path(scale_pool_relu, x)
            return to_nchw(infer(batch_innermost(x), scale, shift, pool.kernel_size, pool.stride, out_hw))
        count = norm.batch_count(shape)
        gamma, beta = (xp.reshape(norm.params[name], (-1, 1)) for name in ("weight", "bias"))
        # Resolved together, so that the gradient reads what this forward saved.
        forward, gradient = (backend.fast_path(f, x) for f in (normalise_pool_relu, normalise_pool_relu_gradient))
        y4, mean, var, saved = forward(batch_innermost(x), gamma, beta, count, norm.eps, pool.kernel_size,
                                       pool.stride, out_hw)
        norm.update_running(mean, var, count)
        y = to_nchw(y4)
        self._saved = (gradient, saved, count, tuple(y.shape))
        return y

    def backward(self, dy: Any) -> Any:
        gradient, saved, count = self._saved_for_backward(dy)
        xp, norm, pool = array_namespace(dy), self.norm, self.pool
        gamma = xp.reshape(norm.params["weight"], (-1, 1))
        dx4, grad_weight, grad_bias = gradient(batch_innermost(dy), saved, gamma, count, pool.kernel_size, pool.stride)
        self._set_norm_grads(grad_weight, grad_bias)
        return to_nchw(dx4)


class NormReLU(FusedBlock):
    """A BatchNorm2D and a ReLU run as one step, on any NCHW input. It has batch norm's
    parameters and gradients."""

    pattern = (BatchNorm2D, ReLU)

    def __init__(self, norm: BatchNorm2D, activation: ReLU) -> None:
        super().__init__(norm, activation)
        self.norm, self.activation = norm, activation

    @classmethod
    def fits(cls, layers: list[Layer], index: int, shape: Shape) -> bool:
        return cls.starts(layers, index) and len(shape) == 4

    def forward(self, x: Any, training: bool = True) -> Any:
        norm = self.norm
        xp = norm._namespace(x)
        shape = norm.output_shape(x.shape)
        rows = channel_rows(x)  # (C, N*H*W)
        if not training:
            self._saved = None  # a backward after it is refused
            scale, shift = norm.running_affine()
            return from_channel_rows(backend.fast_path(scale_relu, x)(rows, scale, shift), shape)
        count = norm.batch_count(shape)
        gamma, beta = (xp.reshape(norm.params[name], (-1, 1)) for name in ("weight", "bias"))
        # Resolved together, so that the gradient reads what this forward saved.
        forward, gradient = (backend.fast_path(f, x) for f in (normalise_relu, normalise_relu_gradient))
        y, mean, var, saved = forward(rows, gamma, beta, count, norm.eps)
        norm.update_running(mean, var, count)
        self._saved = (gradient, saved, count, shape)
        return from_channel_rows(y, shape)

    def backward(self, dy: Any) -> Any:
        gradient, saved, count = self._saved_for_backward(dy)
        gamma = array_namespace(dy).reshape(self.norm.params["weight"], (-1, 1))
        dx, grad_weight, grad_bias = gradient(channel_rows(dy), saved, gamma, count)
        self._set_norm_grads(grad_weight, grad_bias)
        return from_channel_rows(dx, tuple(dy.shape))


FUSIONS: tuple[type[FusedBlock], ...] = (NormPoolReLU, NormReLU)


def block_at(layers: list[Layer], index: int, shape: Shape) -> FusedBlock | None:
    """The first of FUSIONS that runs `layers[index:]` on an input of `shape`, or None."""
    for kind in FUSIONS:
        if kind.fits(layers, index, shape):
            return kind(*layers[index:index + len(kind.pattern)])
    return None


def scale_pool_relu(x4: Any, scale: Any, shift: Any, kernel: Pair, stride: Pair, out_hw: Pair) -> Any:
    """relu(max_pool(x4 * scale + shift)) of x4 (C, H, W, N), scale and shift (C, 1): the
    three layers in inference, as they compute it."""
    xp = array_namespace(x4)
    y = xp.reshape(x4, (x4.shape[0], -1)) * scale + shift
    pooled, _ = backend.fast_path(max_pool, x4)(xp.reshape(y, x4.shape), kernel, stride, out_hw, False)
    return relu(pooled, False)[0]


def normalise_pool_relu(x4: Any, gamma: Any, beta: Any, count: int, eps: float, kernel: Pair, stride: Pair,
                        out_hw: Pair) -> tuple[Any, Any, Any, Any]:
    """relu(max_pool(batch norm(x4))) of x4 (C, H, W, N), as the three layers compute it:
    y4 (C, Ho, Wo, N), the batch's mean and biased variance (C, 1), and what
    normalise_pool_relu_gradient reads."""
    xp = array_namespace(x4)
    to_norm, from_norm = (backend.fast_path(f, x4) for f in (normalise, normalise_gradient))
    to_pool, from_pool = (backend.fast_path(f, x4) for f in (max_pool, max_pool_gradient))
    y, mean, var, norm_saved = to_norm(xp.reshape(x4, (x4.shape[0], -1)), gamma, beta, count, eps)
    pooled, pool_saved = to_pool(xp.reshape(y, x4.shape), kernel, stride, out_hw, True)
    y4, mask = relu(pooled, True)
    return y4, mean, var, ((from_norm, norm_saved), (from_pool, pool_saved), mask)


def normalise_pool_relu_gradient(dy4: Any, saved: Any, gamma: Any, count: int, kernel: Pair,
                                 stride: Pair) -> tuple[Any, Any, Any]:
    """dx4 (C, H, W, N) from dy4 (C, Ho, Wo, N), and this process's share of the
    gradients of batch norm's gamma and beta (C, 1), as the three layers compute them."""
    xp = array_namespace(dy4)
    (from_norm, norm_saved), (from_pool, pool_saved), mask = saved
    dy_norm4 = from_pool(dy4 * mask, pool_saved, kernel, stride)
    dx, grad_weight, grad_bias = from_norm(xp.reshape(dy_norm4, (dy_norm4.shape[0], -1)), norm_saved, gamma, count)
    return xp.reshape(dx, dy_norm4.shape), grad_weight, grad_bias


def scale_relu(rows: Any, scale: Any, shift: Any) -> Any:
    """relu(rows * scale + shift) of channel rows (C, M), scale and shift (C, 1): batch norm
    and ReLU in inference, as they compute it."""
    return relu(rows * scale + shift, False)[0]


def normalise_relu(rows: Any, gamma: Any, beta: Any, count: int, eps: float) -> tuple[Any, Any, Any, Any]:
    """relu(batch norm(rows)) of channel rows (C, M), as the two layers compute it: y (C, M),
    the batch's mean and biased variance (C, 1), and what normalise_relu_gradient reads."""
    to_norm, from_norm = (backend.fast_path(f, rows) for f in (normalise, normalise_gradient))
    y, mean, var, norm_saved = to_norm(rows, gamma, beta, count, eps)
    y, mask = relu(y, True)
    return y, mean, var, ((from_norm, norm_saved), mask)


def normalise_relu_gradient(dy_rows: Any, saved: Any, gamma: Any, count: int) -> tuple[Any, Any, Any]:
    """dx (C, M) from dy (C, M), and this process's share of the gradients of batch norm's
    gamma and beta (C, 1), as the two layers compute them."""
    (from_norm, norm_saved), mask = saved
    return from_norm(dy_rows * mask, norm_saved, gamma, count)
