"""Sliding windows (xpcnn/layers/windows.py): col2im is the adjoint of im2col."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn import backend
from xpcnn.layers.windows import col2im, im2col, output_size

ADJOINT_CASES = [
    # (kernel, stride, padding (top, bottom, left, right), input H, W)
    ((3, 3), (1, 1), (0, 0, 0, 0), 7, 6),
    ((3, 3), (2, 2), (1, 1, 1, 1), 7, 6),
    ((2, 4), (1, 3), (0, 1, 2, 0), 7, 9),
    ((5, 2), (3, 2), (2, 2, 1, 1), 8, 5),
    ((4, 3), (2, 1), (1, 2, 0, 3), 9, 7),
    ((1, 1), (2, 2), (0, 0, 0, 0), 5, 6),
    ((5, 5), (1, 1), (3, 3, 3, 3), 1, 2),  # some taps read nothing but padding
    ((1, 3), (3, 1), (1, 0, 0, 2), 4, 4),  # stride skips input rows
]


@pytest.mark.parametrize("kernel, stride, padding, h, w", ADJOINT_CASES, ids=str)
def test_col2im_is_the_adjoint_of_im2col(target, to_target, kernel, stride, padding, h, w):
    """<im2col(x), cols> == <x, col2im(cols)> for random x and cols, in float64."""
    n, c = 2, 3
    (kh, kw), (sh, sw), (top, bottom, left, right) = kernel, stride, padding
    out_hw = (output_size(h, kh, sh, top + bottom), output_size(w, kw, sw, left + right))
    assert min(out_hw) >= 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w))
    cols = rng.standard_normal((c * kh * kw, n * out_hw[0] * out_hw[1]))
    buffer = to_target(np.full((c, kh, kw, *out_hw, n), np.nan), "float64")  # im2col writes every value
    unfolded = backend.to_numpy(im2col(to_target(x, "float64"), kernel, stride, padding, out_hw, buffer))
    folded = backend.to_numpy(col2im(to_target(cols, "float64"), (n, c, h, w), kernel, stride, padding, out_hw))
    assert unfolded.shape == (c, kh, kw, *out_hw, n) and folded.shape == x.shape
    unfolded = unfolded.reshape(cols.shape)
    lhs, rhs = float(np.sum(unfolded * cols)), float(np.sum(x * folded))
    # Relative to the Cauchy-Schwarz bound of either side, so a sum near zero cannot
    # make the check vacuous or flaky.
    scale = np.linalg.norm(unfolded) * np.linalg.norm(cols)
    assert scale > 0
    assert abs(lhs - rhs) <= 1e-12 * scale, f"<im2col(x), cols> = {lhs!r}, <x, col2im(cols)> = {rhs!r}"


def test_layers_hand_on_batch_innermost_memory():
    """Speed, not correctness, rests on it: conv, batch norm, pooling and ReLU outputs are
    (C, H, W, N) memory, so the next layer reads them without a copy; the flattened map
    and a dense layer's output keep the batch innermost too."""
    from xpcnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
    from xpcnn.layers.windows import batch_innermost

    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    for layer in (Conv2D(3, 5, 3, padding=1), BatchNorm2D(5), MaxPool2D(2), ReLU()):
        x = layer.forward(x)
        assert np.transpose(x, (1, 2, 3, 0)).flags.c_contiguous, layer
        assert np.shares_memory(batch_innermost(x), x), layer
    flat = Flatten().forward(x)
    assert flat.T.flags.c_contiguous and np.shares_memory(flat, x)
    assert Dense(80, 7).forward(flat).T.flags.c_contiguous
