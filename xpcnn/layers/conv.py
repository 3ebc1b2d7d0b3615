"""2-D convolution (cross-correlation, as in PyTorch) by im2col and one matrix product."""

from __future__ import annotations

from typing import Any

from .. import backend
from .base import Layer, Shape, pair
from .windows import Padding, col2im, im2col, output_size


def _padding(padding: Any, kernel: tuple[int, int], stride: tuple[int, int]) -> Padding:
    """(top, bottom, left, right) from an int, a pair, a 4-tuple, "valid" or "same"."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"padding='same' needs stride 1, got stride {stride}")
        # Like PyTorch: an even kernel puts the extra row/column at the bottom/right.
        (kh, kw) = kernel
        return ((kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2)
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        if all(isinstance(p, int) and p >= 0 for p in padding):
            return tuple(padding)  # type: ignore[return-value]
        raise ValueError(f"padding values must be ints >= 0, got {padding!r}")
    ph, pw = pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return (ph, ph, pw, pw)


class Conv2D(Layer):
    """y[n, o] = sum_c x[n, c] (*) weight[o, c] + bias[o]; weight (O, C, kh, kw), bias (O,)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, ...] | str = 0,
        *,
        rng: Any = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"Conv2D channels must be >= 1, got {in_channels}, {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size}, {stride}")
        self.padding = _padding(padding, self.kernel_size, self.stride)
        kh, kw = self.kernel_size
        fan_in = in_channels * kh * kw
        host = backend.host_rng(rng)
        self.params = {
            "weight": backend.kaiming_normal((out_channels, in_channels, kh, kw), fan_in, host),
            "bias": backend.zeros((out_channels,)),
        }

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }

    def output_shape(self, input_shape: Shape) -> Shape:
        self._expect_ndim(input_shape, "NCHW")
        n, c, h, w = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom, left, right = self.padding
        if c != self.in_channels or h + top + bottom < kh or w + left + right < kw:
            raise ValueError(
                f"{self!r}: expected input (N, {self.in_channels}, H, W) with padded H >= {kh} "
                f"and W >= {kw}, got shape {tuple(input_shape)}"
            )
        return (n, self.out_channels, output_size(h, kh, sh, top + bottom),
                output_size(w, kw, sw, left + right))

    def forward(self, x: Any, training: bool = True) -> Any:
        xp = self._namespace(x)
        n, o, ho, wo = self.output_shape(x.shape)
        weight, bias = self.params["weight"], self.params["bias"]
        # x: (N, C, H, W) -> cols: (C*kh*kw, N*Ho*Wo)
        cols = im2col(x, self.kernel_size, self.stride, self.padding, (ho, wo))
        w2 = xp.reshape(weight, (o, -1))  # (O, C*kh*kw)
        y = w2 @ cols + xp.reshape(bias, (o, 1))  # (O, N*Ho*Wo)
        y = xp.permute_dims(xp.reshape(y, (o, n, ho, wo)), (1, 0, 2, 3))
        return self._keep(training, (tuple(x.shape), cols), y)

    def backward(self, dy: Any) -> Any:
        x_shape, cols = self._take_cache(dy)
        xp = self._namespace(dy)
        n, o, ho, wo = dy.shape
        weight = self.params["weight"]
        # dy: (N, O, Ho, Wo) -> (O, N*Ho*Wo), the layout of the forward product
        dy2 = xp.reshape(xp.permute_dims(dy, (1, 0, 2, 3)), (o, n * ho * wo))
        self.grads = {
            "weight": xp.reshape(dy2 @ cols.T, weight.shape),
            "bias": xp.sum(dy2, axis=1),
        }
        dcols = xp.reshape(weight, (o, -1)).T @ dy2  # (C*kh*kw, N*Ho*Wo)
        return col2im(dcols, x_shape, self.kernel_size, self.stride, self.padding, (ho, wo))
