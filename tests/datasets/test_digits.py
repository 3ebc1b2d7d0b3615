"""Bringing pictures of digits into MNIST's form (xpcnn/datasets/digits.py)."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn.datasets import digits, load_bundled

pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def mnist_digits():
    return load_bundled().test.images[:100, 0]


def test_an_mnist_digit_comes_back_as_itself(mnist_digits):
    """MNIST was made this way: its own digits pass through almost unchanged."""
    again = np.stack([digits.mnist_form(image / 255.0) for image in mnist_digits])
    assert np.abs(again.astype(float) - mnist_digits).mean() < 0.5  # of 255 grey levels


def test_centre_of_mass_lands_at_the_centre(mnist_digits):
    rows, cols = np.indices((28, 28))
    for image in mnist_digits[:20]:
        out = digits.mnist_form(np.roll(image, (5, -6), axis=(0, 1)) / 255.0).astype(float)
        centre = ((rows * out).sum() / out.sum(), (cols * out).sum() / out.sum())
        assert abs(centre[0] - 14) <= 0.6 and abs(centre[1] - 14) <= 0.6


def test_polarity_is_read_from_the_border(mnist_digits):
    paper = 1.0 - mnist_digits[0] / 255.0
    assert digits.light_background(paper) and not digits.light_background(mnist_digits[0] / 255.0)
    np.testing.assert_array_equal(digits.mnist_form(paper), digits.mnist_form(mnist_digits[0] / 255.0))
    with pytest.raises(digits.BlankImage):  # the override wins: white paper taken as the background of ink
        digits.mnist_form(paper, invert=False)


def test_a_wide_picture_is_fitted_not_stretched():
    bar = np.zeros((100, 300))
    bar[45:55, 20:280] = 1.0  # a long horizontal stroke
    out = digits.mnist_form(bar) > 64
    rows, cols = np.nonzero(out)
    assert cols.max() - cols.min() + 1 >= 19 and rows.max() - rows.min() + 1 <= 3  # still long and thin


def test_a_blank_picture_is_refused():
    with pytest.raises(digits.BlankImage, match="blank"):
        digits.mnist_form(np.full((40, 40), 0.8))


def test_uneven_light_and_grain_do_not_move_the_digit(mnist_digits):
    """A photo: paper lit from one side (+-40 grey levels across it), grain (sd 8), the
    digit off centre. The digit that comes out is the one a flat clean scan gives."""
    from PIL import Image

    rng = np.random.default_rng(0)
    differences = []
    for image in mnist_digits[:30]:
        big = np.asarray(Image.fromarray(image).resize((112, 112), Image.Resampling.BICUBIC)).astype(float)
        paper = np.full((120, 250), 210.0)
        paper[4:116, 20:132] -= big * 190 / 255
        photo = paper + np.linspace(-40, 40, 250)[None, :] + rng.normal(0, 8, paper.shape)
        clean, noisy = digits.mnist_form(paper / 255), digits.mnist_form(np.clip(photo, 0, 255) / 255)
        differences.append(np.abs(clean.astype(float) - noisy).mean())
    assert np.mean(differences) < 12 and max(differences) < 30  # of 255 grey levels
