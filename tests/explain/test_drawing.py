"""Pictures of what a network sees (xpcnn/explain/drawing.py)."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn.explain import Occlusion, drawing

pytest.importorskip("matplotlib")


@pytest.fixture
def figures(monkeypatch):
    """The figures drawn, kept to look into."""
    drawn = []
    original = drawing.new_figure

    def kept(width, height):
        drawn.append(original(width, height))
        return drawn[-1]

    monkeypatch.setattr(drawing, "new_figure", kept)
    return drawn


@pytest.mark.parametrize("channels, count", [(1, 8), (3, 16), (5, 100)])
def test_filters_are_drawn_one_a_cell_the_first_64_at_most(tmp_path, figures, channels, count):
    weights = np.random.default_rng(0).normal(size=(count, channels, 5, 5)).astype(np.float32)
    drawing.filters(weights, tmp_path / "filters.png", "layer 0 (Conv2D)")
    assert (tmp_path / "filters.png").read_bytes()[:4] == b"\x89PNG"
    shown = [ax for ax in figures[0].axes if ax.images]
    assert len(shown) == min(count, drawing.MAX_FILTERS)
    title = figures[0]._suptitle.get_text()
    assert f"{count} filters 5x5" in title
    assert ("the first 64 of 100" in title) == (count > 64)
    assert ("mean over 5 input channels" in title) == (channels == 5)
    assert shown[0].images[0].get_array().ndim == (3 if channels == 3 else 2)  # colour filters in colour


def test_an_explanation_shows_the_image_the_occlusion_the_classes_and_a_row_of_maps_a_layer(tmp_path, figures):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    occluded = Occlusion(2, np.array([0.1, 0.2, 0.7]), rng.normal(size=(16, 16)), 3, 1)
    maps = {"2": rng.random((4, 16, 16)), "5.body.2": rng.random((12, 8, 8))}
    drawing.explanation(tmp_path / "one.png", pixels, ["cat", "dog", "a very long class name"], occluded, maps,
                        {"2": "ReLU", "5.body.2": "ReLU"}, "one.png")
    assert (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"
    axes = figures[0].axes
    drawn = [ax for ax in axes if ax.images]
    assert len(drawn) == 2 + 4 + drawing.MAPS_A_ROW  # the image, the occlusion, 4 maps, then 8 of 12
    assert any("fall of p(a very long class name) from 70.0%" in ax.get_title() for ax in axes)
    labels = [ax.get_ylabel() for ax in axes if ax.get_ylabel().startswith(("2 ", "5.body.2 "))]
    assert labels == ["2 ReLU\n4x16x16", "5.body.2 ReLU\n12x8x8"]
    active = np.argsort(maps["5.body.2"].mean(axis=(1, 2)))[::-1][:drawing.MAPS_A_ROW]
    assert [ax.get_title() for ax in drawn[-drawing.MAPS_A_ROW:]] == [f"channel {k}" for k in active]


def test_a_class_followed_outside_the_top_ones_has_its_probability_in_the_title(tmp_path, figures):
    occluded = Occlusion(0, np.array([0.02, 0.5, 0.48]), np.zeros((8, 8)), 2, 1)
    drawing.explanation(tmp_path / "one.png", np.zeros((1, 8, 8), np.uint8), ["a", "b", "c"], occluded, {}, {}, top=2)
    assert any(ax.get_title().endswith("fall of p(a) from 2.0%") for ax in figures[0].axes)


def test_an_explanation_without_feature_maps_is_drawn_too(tmp_path, figures):
    occluded = Occlusion(0, np.array([1.0, 0.0]), np.zeros((8, 8)), 2, 1)  # nothing falls: no division by zero
    drawing.explanation(tmp_path / "flat.png", np.zeros((1, 8, 8), np.uint8), ["a", "b"], occluded, {}, {})
    assert (tmp_path / "flat.png").stat().st_size > 0
    image = next(ax for ax in figures[0].axes if ax.images)  # no empty row of maps below: 39 % of the height
    assert image.get_window_extent().height > 0.6 * figures[0].bbox.height


def test_a_long_class_name_is_cut_in_the_occlusion_title_as_in_the_bars(tmp_path, figures):
    """A class folder's name may have 255 characters: the title over the map would run
    into the image's title beside it."""
    name = "big round circle with a very long class name indeed"
    occluded = Occlusion(1, np.array([0.3, 0.7]), np.zeros((8, 8)), 2, 1)
    drawing.explanation(tmp_path / "long.png", np.zeros((3, 8, 8), np.uint8), ["a", name], occluded, {}, {})
    titles = [ax.get_title() for ax in figures[0].axes if "fall of p(" in ax.get_title()]
    assert titles == ["hiding a 2x2 patch:\nfall of p(big round cir…ss name indeed) from 70.0%"]
    bars = [label.get_text() for ax in figures[0].axes if ax.get_title() == "most likely classes"
            for label in ax.get_yticklabels()]
    assert bars == ["big ro… indeed", "a"]


def test_at_most_ten_classes_are_drawn_as_bars_whatever_top_asks(tmp_path, figures):
    """100 bars in a row of three pictures could not be read (xpcnn explain --top 100)."""
    probabilities = np.arange(1, 101) / np.arange(1, 101).sum()
    occluded = Occlusion(99, probabilities, np.zeros((8, 8)), 2, 1)
    classes = [f"class {k}" for k in range(100)]
    drawing.explanation(tmp_path / "many.png", np.zeros((3, 8, 8), np.uint8), classes, occluded, {}, {}, top=100)
    bars = [label.get_text() for ax in figures[0].axes if ax.get_title() == "most likely classes"
            for label in ax.get_yticklabels()]
    assert bars == [f"class {k}" for k in range(99, 89, -1)]
