"""Max and average pooling over k*k windows, no padding, floor semantics; global average
pooling over each whole channel."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, device

from .. import backend
from .base import Layer, Shape, pair
from .windows import Pair, batch_innermost, output_size, tap, tap_index, tap_slice, to_nchw, zeros_nchw


class _Pool2D(Layer):
    def __init__(
        self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, f"{name} kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, f"{name} stride")
        for what, value, given in (("kernel_size", self.kernel_size, kernel_size), ("stride", self.stride, stride)):
            if min(value) < 1:
                raise ValueError(f"{name} {what} must be >= 1, got {given!r}")

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
        """The positions (i, j) of a window, row-major."""
        kh, kw = self.kernel_size
        return [(i, j) for i in range(kh) for j in range(kw)]


class MaxPool2D(_Pool2D):
    """y = max over each window, taken in two 1-D sweeps: the max over each window's
    columns, row by row, then the max of those over its rows. Backward sends a window's
    gradient to its first maximum (row-major), as PyTorch does, so ties never split or
    duplicate a gradient: to the first row that holds the maximum, then in that row to
    the first column that does. A NaN is the maximum of its window (y is NaN) and gets
    the gradient; of two NaNs in one window the first does (PyTorch: the last)."""

    def forward(self, x: Any, training: bool = True) -> Any:
        self._namespace(x)
        out_hw = self.output_shape(x.shape)[2:]
        # Resolved together, so that the gradient reads what this forward saved.
        forward, gradient = (backend.fast_path(f, x) for f in (max_pool, max_pool_gradient))
        y4, saved = forward(batch_innermost(x), self.kernel_size, self.stride, out_hw, training)
        return self._save_for_backward(training, (gradient, saved), to_nchw(y4))

    def backward(self, dy: Any) -> Any:
        gradient, saved = self._saved_for_backward(dy)
        return to_nchw(gradient(batch_innermost(dy), saved, self.kernel_size, self.stride))


def max_pool(x4: Any, kernel: Pair, stride: Pair, out_hw: Pair, training: bool) -> tuple[Any, Any]:
    """y4 (C, Ho, Wo, N), the max over each window of x4 (C, H, W, N), and what
    max_pool_gradient reads (None unless training)."""
    xp = array_namespace(x4)
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    columns = _max_along(x4, 2, kw, sw, wo)  # (C, H, Wo, N): the max over each window's columns
    y4 = _max_along(columns, 1, kh, sh, ho)  # (C, Ho, Wo, N)
    if kh == kw == 1:  # both sweeps were views of x
        y4 = xp.asarray(y4, copy=True)
    if not training:
        return y4, None
    # Where the maxima are, found now, while x and the sweeps are fresh in the cache:
    # backward reads these masks instead of x, the column maxima and y again.
    return y4, backend.fast_path(sweep_masks, x4)(x4, columns, y4, kernel, stride)


def max_pool_gradient(dy4: Any, saved: Any, kernel: Pair, stride: Pair) -> Any:
    """dx4 (C, H, W, N) from dy4 (C, Ho, Wo, N): each window's gradient to its first maximum."""
    (x4_shape, in_columns), (columns_shape, in_rows) = saved
    (kh, kw), (sh, sw) = kernel, stride
    route = backend.fast_path(route_to_first_maxima, dy4)
    dcolumns = route(dy4, in_rows, columns_shape, 1, kh, sh)
    return route(dcolumns, in_columns, x4_shape, 2, kw, sw)


def taps_along(axis: int, k: int, stride: int, out: int) -> list[tuple[slice, ...]]:
    """The index of each of a window's k taps along `axis` of a 4-d array, in order."""
    everything = [slice(None)] * 4
    return [tuple(everything[:axis] + [tap_slice(i, out, stride)] + everything[axis + 1:]) for i in range(k)]


def windows_tile(k: int, stride: int, out: int, size: int) -> bool:
    """Whether `out` windows of k with this stride cover an axis of `size` exactly, each
    element in one window: the gradient is then assigned, not added, tap by tap."""
    return stride == k and out * k == size


def _max_along(a: Any, axis: int, k: int, stride: int, out: int) -> Any:
    """The max over windows of k along `axis` (a view of `a` when k is 1)."""
    xp = array_namespace(a)
    taps = taps_along(axis, k, stride, out)
    m = a[taps[0]]
    for index in taps[1:]:
        m = xp.maximum(m, a[index])
    return m


def sweep_masks(x4: Any, columns: Any, y4: Any, kernel: tuple[int, int], stride: tuple[int, int],
                nan_free: bool = False) -> tuple[tuple[Shape, list[Any]], ...]:
    """What backward routes by: for each sweep, columns then rows, the shape it swept and
    where its first maxima are (_first_maxima). `nan_free`: the caller knows the windows
    of x4 hold no NaN, which spares the test for one."""
    (kh, kw), (sh, sw) = kernel, stride
    return ((tuple(x4.shape), _first_maxima(x4, columns, 2, kw, sw, nan_free)),
            (tuple(columns.shape), _first_maxima(columns, y4, 1, kh, sh, nan_free)))


def _first_maxima(a: Any, m: Any, axis: int, k: int, stride: int, nan_free: bool) -> list[Any]:
    """For each of the first k - 1 taps along `axis`, where it is the first to equal the
    window's maximum m = _max_along(a, ...), a NaN counting as the maximum (m is NaN
    there); the last tap takes what none of them do."""
    xp = array_namespace(a)
    firsts, claimed = [], None  # claimed: windows an earlier tap took
    for index in taps_along(axis, k, stride, m.shape[axis])[:-1]:
        tap = a[index]
        is_max = tap == m if nan_free else (tap == m) | xp.isnan(tap)
        firsts.append(is_max if claimed is None else is_max & ~claimed)
        claimed = is_max if claimed is None else claimed | is_max
    return firsts


def route_to_first_maxima(dm: Any, firsts: list[Any], shape: Shape, axis: int, k: int, stride: int) -> Any:
    """The gradient of the array of `shape` that the max along `axis` took, from dm, the
    gradient of the max: each window's to the tap `firsts` marks, else to the last tap."""
    xp = array_namespace(dm)
    out = dm.shape[axis]
    make = xp.empty if windows_tile(k, stride, out, shape[axis]) else xp.zeros
    da = make(shape, dtype=dm.dtype, device=device(dm))
    taken = None  # the gradient the earlier taps took
    for index, first in zip(taps_along(axis, k, stride, out), [*firsts, None]):
        if first is None:  # the last tap: what no earlier one took, exactly (taken is 0 or dm)
            routed = dm if taken is None else dm - taken
        else:
            routed = dm * xp.astype(first, dm.dtype)  # NumPy: several times faster than where
            taken = routed if taken is None else taken + routed
        if stride < k:  # overlapping windows share elements
            da[index] += routed
        else:
            da[index] = routed
    return da


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


class GlobalAvgPool2D(Layer):
    """(N, C, H, W) -> (N, C): y = the mean of each channel over all its positions;
    backward spreads dy / (H*W) over them. What lets a network take images of any size:
    its dense head sees one value per channel, whatever H and W are."""

    def output_shape(self, input_shape: Shape) -> Shape:
        self._expect_ndim(input_shape, "NCHW")
        return tuple(input_shape[:2])

    def forward(self, x: Any, training: bool = True) -> Any:
        xp = self._namespace(x)
        self.output_shape(x.shape)
        return self._save_for_backward(training, tuple(x.shape), xp.mean(x, axis=(2, 3)))

    def backward(self, dy: Any) -> Any:
        n, c, h, w = self._saved_for_backward(dy)
        xp = self._namespace(dy)
        dx = zeros_nchw(dy, (n, c, h, w))  # in the layout the layers before read fastest
        dx += xp.reshape(dy / (h * w), (n, c, 1, 1))
        return dx
