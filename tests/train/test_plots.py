"""PNG plots of a run (xpcnn/train/plots.py): a confusion matrix stays readable from 2 to
100 classes; how each layer learned is drawn from the rows that have it."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from xpcnn.io.figures import shortened
from xpcnn.metrics import confusion_matrix
from xpcnn.train import plots


@pytest.mark.parametrize("classes", [2, 10, 100])
def test_the_confusion_matrix_grows_with_its_classes_and_names_at_most_thirty(tmp_path, classes, monkeypatch):
    pytest.importorskip("matplotlib")
    named = []
    original = plots.new_figure

    def watched(width, height):
        figure = original(width, height)
        named.append(figure)
        return figure

    monkeypatch.setattr(plots, "new_figure", watched)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, 3000)
    counts = confusion_matrix(labels, np.where(rng.random(3000) < 0.8, labels, rng.integers(0, classes, 3000)), classes)
    plots.confusion(counts, [f"a rather long name {k}" for k in range(classes)], tmp_path / "confusion.png")
    axes = named[0].axes[0]
    written = [text for text in axes.texts]
    assert (tmp_path / "confusion.png").stat().st_size > 0
    assert len(axes.get_xticks()) <= plots.MAX_LABELS and len(axes.get_yticklabels()) <= plots.MAX_LABELS
    assert bool(written) == (classes <= plots.MAX_WRITTEN)  # counts in the cells only where they fit
    assert named[0].get_size_inches()[1] == pytest.approx(min(5.5 + 0.12 * max(0, classes - 10), 16.0))
    assert all(len(label.get_text()) <= 14 for label in axes.get_xticklabels())


def test_a_class_name_in_a_script_the_font_lacks_warns_nothing(tmp_path):
    pytest.importorskip("matplotlib")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.confusion(np.eye(2, dtype=np.int64), ["猫", "犬"], tmp_path / "confusion.png")
    assert (tmp_path / "confusion.png").stat().st_size > 0


def test_drawing_leaves_the_scripts_matplotlib_backend_as_it_was(tmp_path):
    """A run folder's plots in a notebook or script that plots too: its backend was switched to Agg."""
    pytest.importorskip("matplotlib")
    code = ("import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot; import numpy as np; "
            "from xpcnn.train import plots; "
            f"plots.confusion(np.eye(2, dtype=int), ['a', 'b'], {str(tmp_path / 'c.png')!r}); "
            f"plots.learning_curves([{{'epoch': 1, 'train_loss': 0.5, 'train_accuracy': 0.9}}], "
            f"{str(tmp_path / 'l.png')!r}); print(matplotlib.get_backend())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "svg"
    assert (tmp_path / "c.png").read_bytes()[:4] == (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"


def test_the_mistakes_shown_are_the_most_confident_wrong_ones_24_at_most(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    drawn = []
    original = plots.new_figure
    monkeypatch.setattr(plots, "new_figure", lambda width, height: drawn.append(original(width, height)) or drawn[-1])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 100)
    predicted = np.where(np.arange(100) % 3 == 0, (labels + 1) % 3, labels)  # 34 wrong
    confidences = rng.random(100)
    images = rng.integers(0, 256, (100, 3, 8, 8), dtype=np.uint8)
    classes = ["cat", "dog", "a class with a rather long name"]
    assert plots.mistakes(images, labels, predicted, confidences, classes, tmp_path / "m.png") == plots.MAX_MISTAKES
    wrong = np.flatnonzero(predicted != labels)
    expected = wrong[np.argsort(-confidences[wrong])][:plots.MAX_MISTAKES]
    titles = [ax.get_title() for ax in drawn[0].axes if ax.images]
    assert titles == [f"{shortened(classes[labels[k]], 12)} → {shortened(classes[predicted[k]], 12)}\n"
                      f"{confidences[k]:.1%}" for k in expected]
    assert "the 24 most confident of 34 mistakes" in drawn[0]._suptitle.get_text()
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert plots.mistakes(images, labels, labels, confidences, classes, tmp_path / "none.png") == 0
    assert not (tmp_path / "none.png").exists()


def test_how_each_layer_learned_is_drawn_from_the_rows_that_have_it(tmp_path):
    rows = [{"epoch": 1, "layers": {"change": {"0": None, "4": 0.2}, "dead": {"2": 0.0}}},  # None: a resumed epoch
            {"epoch": 2, "layers": {"change": {"0": 0.1, "4": 0.05}, "dead": {"2": 0.25}}}]
    assert plots.layer_learning(rows, tmp_path / "layers.png", "a title", {"0": "Conv2D", "4": "Dense"})
    assert (tmp_path / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    many = [{"epoch": 1, "layers": {"change": {str(k): 0.1 for k in range(30)}, "dead": {}}}]  # no ReLU at all
    assert plots.layer_learning(many, tmp_path / "many.png")
    assert not plots.layer_learning([{"epoch": 1}], tmp_path / "old.png")  # a run recorded before the measures
    assert not (tmp_path / "old.png").exists()


def test_a_deep_network_is_drawn_as_heat_maps_a_named_row_a_layer_from_the_input(tmp_path, monkeypatch):
    """resnet20 has 22 Conv2D and Dense layers: 22 lines, coloured alike, could not be told
    apart, so past MAX_LINES each layer is a row named by position and type."""
    pytest.importorskip("matplotlib")
    drawn = []
    original = plots.new_figure
    monkeypatch.setattr(plots, "new_figure", lambda width, height: drawn.append(original(width, height)) or drawn[-1])
    count = plots.MAX_LINES + 1
    changes = [{str(k): 0.1 / epoch for k in range(count)} for epoch in (1, 2, 3)]
    changes[0]["3"], changes[1]["5"] = None, 0.0  # not measured (a resumed epoch), did not move
    rows = [{"epoch": epoch, "layers": {"change": change, "dead": {"1": 0.5}}}
            for epoch, change in zip((1, 2, 3), changes)]
    kinds = {str(k): "Conv2D" for k in range(count)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plots.layer_learning(rows, tmp_path / "deep.png", "", kinds)
    change_axes, dead_axes = drawn[0].axes[:2]
    assert [label.get_text() for label in change_axes.get_yticklabels()] == [f"{k} Conv2D" for k in range(count)]
    assert change_axes.get_ylim() == (count - 0.5, -0.5)  # the first layer at the top
    grid = change_axes.collections[0].get_array()  # (layers, epochs), masked where not measured
    assert grid.shape == (count, 3) and grid.mask[3, 0] and not grid.mask.sum() - 1
    assert 0 < grid[5, 1] < change_axes.collections[0].norm.vmin  # drawn in the colour under the scale
    assert dead_axes.collections[0].get_array()[0, 0] == 50
    assert plots.layer_learning(rows[:1], tmp_path / "one.png")  # one epoch: one column
    assert drawn[-1].axes[0].get_legend() is None


def test_a_layer_whose_weights_did_not_move_is_drawn_at_zero_not_left_out(tmp_path):
    """A Dense layer fed by ReLUs that are all dead gets no gradient: its change is 0, which
    a log scale leaves out (with a warning where every change is 0)."""
    pytest.importorskip("matplotlib")
    assert plots.change_scale([0.1, 0.02]) == {"value": "log"}
    assert plots.change_scale([0.0, 0.1, 0.02, None]) == {"value": "symlog", "linthresh": 0.02}
    assert plots.change_scale([0.0, None]) == {"value": "symlog", "linthresh": 1e-3}
    rows = [{"epoch": 1, "layers": {"change": {"0": 0.0}, "dead": {"1": 1.0}}}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plots.layer_learning(rows, tmp_path / "stopped.png")


def test_the_range_test_is_drawn_against_a_log_rate_with_its_suggestion_marked(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from xpcnn.train.lr_range import LRRange

    drawn = []
    original = plots.new_figure
    monkeypatch.setattr(plots, "new_figure", lambda width, height: drawn.append(original(width, height)) or drawn[-1])
    lrs = list(np.geomspace(1e-5, 1.0, 6))
    found = LRRange(lrs, [2.3, 2.2, 1.0, 0.5, 3.0, np.inf], [2.25, 1.8, 1.2, 1.5, 1.75, np.nan], suggested=lrs[2],
                    diverged=True)
    plots.lr_range(found, tmp_path / "lr.png", "a title")
    axes = drawn[0].axes[0]
    assert axes.get_xscale() == "log" and axes.get_title() == "a title"
    assert [line.get_label() for line in axes.lines] == ["batch loss", "smoothed", f"suggested: {lrs[2]:.2g}"]
    assert axes.get_ylim()[1] == pytest.approx(2 * 2.25)  # the diverged tail is cut off, not squashing the curve
    plots.lr_range(LRRange(lrs[:2], [2.3, 2.4], [2.3, 2.35], suggested=None, diverged=False), tmp_path / "none.png")
    assert len(drawn[1].axes[0].lines) == 2 and (tmp_path / "none.png").read_bytes()[:4] == b"\x89PNG"
