"""2-D convolution (cross-correlation, as in PyTorch) by im2col and one matrix product."""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from .. import backend, init
from ..checks import flag, integer
from .base import Layer, Shape, pair
from .product import matmul
from .windows import Padding, channel_rows, col2im, from_channel_rows, im2col, output_size, to_nchw


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
    if isinstance(padding, str) or (isinstance(padding, (tuple, list)) and len(padding) not in (2, 4)):
        raise ValueError(f"Conv2D padding must be 'valid', 'same', an integer, a pair (h, w) or four "
                         f"(top, bottom, left, right), got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        top, bottom, left, right = (integer(p, "Conv2D padding", 0) for p in padding)
        return (top, bottom, left, right)
    ph, pw = pair(padding, "Conv2D padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"Conv2D padding must be >= 0, got {padding!r}")
    return (ph, ph, pw, pw)


class Conv2D(Layer):
    """y[n, o] = sum_c x[n, c] (*) weight[o, c] + bias[o]; weight (O, C, kh, kw), bias (O,).

    `kernel_size`, `stride`: an integer or a pair (h, w). `padding`: an integer, a pair
    (h, w), four (top, bottom, left, right; torch.nn.functional.pad takes left and right
    first), "valid" (none) or "same" (stride 1; an even kernel pads one more at the bottom
    and right, as PyTorch does).
    `bias=False` drops the bias: right before batch norm it is cancelled exactly anyway."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, ...] | str = 0,
        *,
        bias: bool = True,
        rng: Any = None,
    ) -> None:
        super().__init__()
        self.in_channels = integer(in_channels, "Conv2D in_channels", 1)
        self.out_channels = integer(out_channels, "Conv2D out_channels", 1)
        self.kernel_size = pair(kernel_size, "Conv2D kernel_size")
        self.stride = pair(stride, "Conv2D stride")
        for what, value, given in (("kernel_size", self.kernel_size, kernel_size), ("stride", self.stride, stride)):
            if min(value) < 1:
                raise ValueError(f"Conv2D {what} must be >= 1, got {given!r}")
        self.padding = _padding(padding, self.kernel_size, self.stride)
        self.bias = flag(bias, "Conv2D bias")
        shapes = self.array_shapes(self.config())
        fan_in = math.prod(shapes["weight"][1:])
        self.params = {"weight": init.kaiming_normal(shapes["weight"], fan_in, init.host_rng(rng, "Conv2D rng"))}
        if bias:
            self.params["bias"] = init.zeros(shapes["bias"])

    @classmethod
    def array_shapes(cls, arguments: dict[str, Any]) -> dict[str, Shape]:
        # Checked as the constructor checks them: a checkpoint's config is planned before it is built.
        o = integer(arguments["out_channels"], "Conv2D out_channels", 1)
        c = integer(arguments["in_channels"], "Conv2D in_channels", 1)
        kh, kw = pair(arguments["kernel_size"], "Conv2D kernel_size")
        shapes = {"weight": (o, c, kh, kw)}
        if arguments["bias"]:
            shapes["bias"] = (o,)
        return shapes

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "bias": self.bias,
        }

    def output_shape(self, input_shape: Shape) -> Shape:
        self._expect_ndim(input_shape, "NCHW")
        n, c, h, w = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom, left, right = self.padding
        if c != self.in_channels or h + top + bottom < kh or w + left + right < kw:
            last = c != self.in_channels and w == self.in_channels  # NHWC, as TensorFlow and pictures hold them
            raise ValueError(
                f"{self!r}: expected input (N, {self.in_channels}, H, W) with padded H >= {kh} "
                f"and W >= {kw}, got shape {tuple(input_shape)}"
                f"{'; channels last? pass x.transpose(0, 3, 1, 2)' if last else ''}"
            )
        return (n, self.out_channels, output_size(h, kh, sh, top + bottom),
                output_size(w, kw, sw, left + right))

    def forward(self, x: Any, training: bool = True) -> Any:
        xp = self._namespace(x)
        n, o, ho, wo = self.output_shape(x.shape)
        value_bytes = xp.finfo(x.dtype).bits // 8
        # Inference takes the batch in chunks whose columns fit in backend.scratch_bytes: on
        # a CPU, resnet20's first stage at batch 1000 would write and read 600 MB a layer.
        chunk = max(1, backend.scratch_bytes(x) // ((self._rows() + 1) * ho * wo * value_bytes))
        if not training and n > chunk:
            return self._save_for_backward(training, None, self._forward_in_chunks(x, chunk, xp))
        y, cols = self._product(x, xp)
        if training:
            self._scratch_array = cols
        return self._save_for_backward(training, (tuple(x.shape), cols), from_channel_rows(y, (n, o, ho, wo)))

    def _rows(self) -> int:
        """K = C*kh*kw: the rows of the columns, one per weight of an output channel."""
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def _product(self, x: Any, xp: Any) -> tuple[Any, Any]:
        """(y (O, Ho*Wo*N), the columns (K [+1], Ho*Wo*N)) for x."""
        n, o, ho, wo = self.output_shape(x.shape)
        c, (kh, kw), k = self.in_channels, self.kernel_size, self._rows()
        # cols: (K, M) = (C*kh*kw, Ho*Wo*N), filled as (C, kh, kw, Ho, Wo, N), then a row of
        # ones: the bias joins the weights as one more column, so the product adds it and,
        # in backward, sums its gradient, saving a pass over y and one over dy.
        cols = self._scratch((k + int(self.bias), ho * wo * n), x)
        windows = xp.reshape(cols[:k, :], (c, kh, kw, ho, wo, n), copy=False)  # im2col writes into cols
        backend.fast_path(im2col, x)(x, self.kernel_size, self.stride, self.padding, (ho, wo), windows)
        if self.bias:
            cols[k, :] = 1
        return backend.fast_path(matmul, x)(self._weight_matrix(xp), cols), cols

    def _forward_in_chunks(self, x: Any, chunk: int, xp: Any) -> Any:
        """Inference on `chunk` images at a time: the columns of a large batch (hundreds of
        MB) would go to memory and back, a chunk's stay in the cache."""
        n, o, ho, wo = self.output_shape(x.shape)
        y4 = xp.empty((o, ho, wo, n), dtype=x.dtype, device=device(x))  # the layout's (C, H, W, N)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)  # the standard leaves a slice past the end unspecified
            y4[..., start:stop] = xp.reshape(self._product(x[start:stop, ...], xp)[0], (o, ho, wo, stop - start))
        return to_nchw(y4)

    def _weight_matrix(self, xp: Any) -> Any:
        """(O, C*kh*kw), then the bias as one more column."""
        weight = xp.reshape(self.params["weight"], (self.out_channels, -1))
        if not self.bias:
            return weight
        return xp.concat([weight, xp.reshape(self.params["bias"], (-1, 1))], axis=1)

    skips_input_grad = True

    def backward(self, dy: Any, input_grad: bool = True) -> Any:
        x_shape, cols = self._saved_for_backward(dy)
        xp = self._namespace(dy)
        weight = self.params["weight"]
        o, k = weight.shape[0], cols.shape[0] - int(self.bias)
        dy2 = channel_rows(dy)  # (O, Ho*Wo*N), the layout of the forward product
        # (cols @ dy2.T).T rather than dy2 @ cols.T: the same sums, which OpenBLAS runs
        # faster with the long axis on the left.
        grads = backend.fast_path(matmul, dy)(cols, dy2.T).T  # (O, K), and the bias's (the row of ones) last
        self.grads = {"weight": xp.reshape(grads[:, :k], weight.shape)}
        if self.bias:
            self.grads["bias"] = grads[:, k]
        if not input_grad:
            return None
        dcols = backend.fast_path(input_columns, dy)(xp.reshape(weight, (o, -1)), dy2, cols)  # (C*kh*kw, Ho*Wo*N)
        return col2im(dcols, x_shape, self.kernel_size, self.stride, self.padding, tuple(dy.shape[2:]))


def input_columns(weight_rows: Any, dy2: Any, spent: Any) -> Any:
    """The gradient of the columns, weight_rows.T @ dy2: (C*kh*kw, Ho*Wo*N) from the
    weight (O, C*kh*kw) and dy2 (O, Ho*Wo*N). `spent` holds the forward's columns, of
    that shape or with one row more, which the caller is done with: a fast path may write
    the result into them (the standard has no `out=`)."""
    return backend.fast_path(matmul, dy2)(weight_rows.T, dy2)
