"""Max and average pooling over k*k windows, no padding, floor semantics."""

from __future__ import annotations

from typing import Any

from array_api_compat import device

from .base import Layer, Shape, pair
from .windows import output_size, swap_batch_and_channels, tap, tap_index, zeros_nchw


class _Pool2D(Layer):
    def __init__(
        self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, f"{name} kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, f"{name} stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size}, {stride}")

    def config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride)}

    def output_shape(self, input_shape: Shape) -> Shape:
        self._expect_ndim(input_shape, "NCHW")
        n, c, h, w = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if h < kh or w < kw:
            raise ValueError(
                f"{self!r}: expected input (N, C, H, W) with H >= {kh} and W >= {kw}, "
                f"got shape {tuple(input_shape)}"
            )
        return (n, c, output_size(h, kh, sh), output_size(w, kw, sw))

    def _taps(self) -> list[tuple[int, int]]:
        """Window positions in row-major order: the order that defines 'first maximum'."""
        kh, kw = self.kernel_size
        return [(i, j) for i in range(kh) for j in range(kw)]


class MaxPool2D(_Pool2D):
    """y = max over each window. Backward sends a window's gradient to its first maximum
    (row-major), as PyTorch does, so ties never split or duplicate a gradient."""

    def forward(self, x: Any, training: bool = True) -> Any:
        xp = self._namespace(x)
        n, c, ho, wo = self.output_shape(x.shape)
        taps = self._taps()
        # Each tap copied once into a contiguous stack: the max and backward's comparisons
        # then read contiguous memory instead of k*k strided views each.
        stack = self._scratch((len(taps), c, n, ho, wo), x)
        x_cn = swap_batch_and_channels(x)
        for number, (i, j) in enumerate(taps):
            stack[number, ...] = tap(x_cn, i, j, (ho, wo), self.stride)
        y_cn = xp.max(stack, axis=0)  # (C, N, Ho, Wo)
        if training:
            self._scratch_array = stack
        return self._save_for_backward(training, (tuple(x.shape), stack, y_cn), swap_batch_and_channels(y_cn))

    def backward(self, dy: Any) -> Any:
        x_shape, stack, y_cn = self._saved_for_backward(dy)
        xp = self._namespace(dy)
        n, c, h, w = x_shape
        out_hw = tuple(dy.shape[2:])
        dy_cn = swap_batch_and_channels(dy)
        taps = self._taps()
        overlapping = any(s < k for s, k in zip(self.stride, self.kernel_size))
        tiled = self.stride == self.kernel_size and (h, w) == tuple(o * k for o, k in zip(out_hw, self.kernel_size))
        dx_cn = (xp.empty if tiled else xp.zeros)((c, n, h, w), dtype=dy.dtype, device=device(dy))
        claimed = None  # windows whose maximum an earlier tap already took
        for number, (i, j) in enumerate(taps):
            if number == len(taps) - 1 and claimed is not None:
                first = ~claimed  # the maximum is somewhere: if no earlier tap, then this one
            else:
                is_max = stack[number, ...] == y_cn
                first = is_max if claimed is None else is_max & ~claimed
                claimed = is_max if claimed is None else claimed | is_max
            routed = dy_cn * xp.astype(first, dy.dtype)  # NumPy: several times faster than where
            index = tap_index(i, j, out_hw, self.stride)
            if overlapping:
                dx_cn[index] += routed
            else:  # each input position lies in one window at most: plain assignment
                dx_cn[index] = routed
        return swap_batch_and_channels(dx_cn)


class AvgPool2D(_Pool2D):
    """y = mean over each window; backward spreads dy / (kh*kw) over the window."""

    def forward(self, x: Any, training: bool = True) -> Any:
        self._namespace(x)
        out_hw = self.output_shape(x.shape)[2:]
        taps = self._taps()
        total = tap(x, *taps[0], out_hw, self.stride)
        for i, j in taps[1:]:
            total = total + tap(x, i, j, out_hw, self.stride)
        return self._save_for_backward(training, tuple(x.shape), total / len(taps))

    def backward(self, dy: Any) -> Any:
        x_shape = self._saved_for_backward(dy)
        self._namespace(dy)
        out_hw = tuple(dy.shape[2:])
        share = dy / len(self._taps())
        dx = zeros_nchw(dy, x_shape)
        for i, j in self._taps():
            dx[tap_index(i, j, out_hw, self.stride)] += share
        return dx
