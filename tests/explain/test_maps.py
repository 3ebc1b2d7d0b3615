"""What a network makes of one image (xpcnn/explain/maps.py): first filters, feature maps,
occlusion."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import presets
from xpcnn.explain import feature_maps, first_filters, occlusion, stages
from xpcnn.explain.maps import _starts, mapped_positions
from xpcnn.model import Sequential

from ..helpers import seed_net, small_net

GREY = {"mean": 0.5, "std": 0.25}


def digit(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


def test_the_first_filters_are_the_first_convolutions_own_weights_copied():
    net = xpcnn.Sequential([xpcnn.Residual([xpcnn.Conv2D(1, 4, 3, padding=1, rng=1)]), xpcnn.Conv2D(1, 2, 3, rng=2)])
    position, weights = first_filters(net)
    assert position == "0.body.0" and weights.shape == (4, 1, 3, 3)
    np.testing.assert_array_equal(weights, net[0].body[0].params["weight"])
    weights[...] = 0  # the network's weights are not the picture's
    assert np.any(net[0].body[0].params["weight"] != 0)
    with pytest.raises(ValueError, match="no Conv2D layer"):
        first_filters(xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(4, 2)]))


def test_the_first_filters_of_a_checkpoint_by_its_path_as_occlusion_takes_it(tmp_path):
    net = seed_net()
    xpcnn.save_checkpoint(tmp_path / "net.npz", net, xpcnn.optim.SGD(net, 0.01))
    for path in (tmp_path / "net.npz", str(tmp_path / "net.npz")):
        position, weights = first_filters(path)
        assert position == 0
        np.testing.assert_array_equal(weights, net[0].params["weight"])
    with pytest.raises(TypeError, match="first_filters takes a Sequential or a checkpoint's path, got NoneType"):
        first_filters(None)


@pytest.mark.parametrize("name, shape, expected", [
    ("tutorial", (1, 28, 28), [2]),  # the one activation of feature maps
    ("lenet", (1, 28, 28), [3, 7]),  # 14x14, then 7x7
    ("resnet20", (3, 32, 32), [2, 8, 14, 20]),  # the stem's, then the last of each stage: 32x32, 16x16, 8x8
])
def test_the_stages_are_the_first_activation_and_the_last_at_each_size(name, shape, expected):
    assert stages(presets.build(name, input_shape=shape, classes=10), shape) == expected


def test_a_network_without_activations_shows_its_layers_of_feature_maps():
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 2, 3), xpcnn.MaxPool2D(2), xpcnn.Flatten(), xpcnn.Dense(2 * 13 * 13, 3)])
    assert stages(net, (1, 28, 28)) == [0, 1]
    dense = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(784, 3)])
    assert stages(dense, (1, 28, 28)) == [] and feature_maps(dense, digit(), **GREY) == {}


def test_feature_maps_are_what_the_layers_before_them_compute():
    net = small_net()
    net.data = None
    image = digit()
    maps = feature_maps(net, image, at=[3, 0], **GREY)
    assert list(maps) == ["0", "3"]  # in the network's order, whatever the order asked
    x = (image[None, None].astype(np.float32) / 255 - 0.5) / 0.25
    for k in range(4):
        x = net[k].forward(x, training=False)
        if k in (0, 3):
            np.testing.assert_allclose(maps[str(k)], x[0], rtol=1e-6, atol=1e-6)
    kept = maps["3"].copy()
    feature_maps(net, digit(1), at=3, **GREY)
    np.testing.assert_array_equal(maps["3"], kept)  # each call's maps are its own


def test_feature_maps_refuse_what_is_no_feature_map_or_no_layer_or_more_than_one_image():
    net = seed_net()
    with pytest.raises(ValueError, match=r"feature maps at 4: the layer's output is \(128,\) for an image"):
        feature_maps(net, digit(), at=4, **GREY)
    with pytest.raises(ValueError, match="feature maps at 9: the network has no layer there; its positions are 0, 1"):
        feature_maps(net, digit(), at=[1, 9], **GREY)
    with pytest.raises(ValueError, match=r"looks at one image \(C, H, W\), got 2 images"):
        feature_maps(net, np.stack([digit(), digit(1)]), **GREY)
    with pytest.raises(ValueError, match=r"occlusion looks at one image \(C, H, W\), got 3 images"):
        occlusion(net, np.zeros((3, 28, 28), np.uint8), **GREY)  # grey: three images, not three channels
    with pytest.raises(ValueError, match="needs the mean and std"):
        feature_maps(net, digit())
    with pytest.raises(ValueError, match=r"feature maps at names no position: leave it out for the default ones"):
        feature_maps(net, digit(), at=[], **GREY)
    assert mapped_positions(net, -5, (1, 28, 28)) == ["2"]  # -1 the last, as Sequential.hooked takes them


def region_net() -> Sequential:
    """Class 0's logit is 4 x the top-left 2x2 pixels (normalised); class 1's is 0."""
    dense = xpcnn.Dense(64, 2)
    weight = np.zeros((2, 64), np.float32)
    weight[0, [0, 1, 8, 9]] = 4.0
    dense.params["weight"], dense.params["bias"] = weight, np.zeros(2, np.float32)
    return xpcnn.Sequential([xpcnn.Flatten(), dense])


def test_occlusion_falls_only_where_the_answer_comes_from():
    image = np.full((8, 8), 255, np.uint8)  # normalised to 2: class 0 at logit 32, p = 1 - 1e-14
    found = occlusion(region_net(), image, patch=2, stride=2, **GREY)
    assert found.target == 0 and found.patch == 2 and found.stride == 2
    assert found.probabilities.shape == (2,) and found.probabilities[0] > 0.99
    assert found.drop[:2, :2].min() > 0  # hiding the top-left corner takes class 0's evidence away
    assert np.all(found.drop[2:, :] == 0) and np.all(found.drop[:, 2:] == 0)
    one = occlusion(region_net(), image, target=1, patch=2, stride=2, **GREY)
    assert one.drop[:2, :2].max() < 0  # and gives class 1 a chance: its probability rises


def test_occlusion_by_one_patch_is_the_probability_of_the_image_so_hidden():
    net = seed_net()
    image = digit()
    found = occlusion(net, image, patch=28, **GREY)  # one patch: the whole image, hidden by the mean
    hidden = xpcnn.predict(net, np.full((1, 28, 28), 128, np.uint8), **GREY)[0]  # 128/255 is about the mean 0.5
    whole = xpcnn.predict(net, image, **GREY)[0]
    np.testing.assert_allclose(found.probabilities, whole, rtol=1e-6)
    np.testing.assert_allclose(found.drop, whole[found.target] - hidden[found.target], atol=2e-3)


def test_occlusion_defaults_cover_every_pixel_within_a_bounded_number_of_forwards():
    assert _starts(28, 4, 2) == list(range(0, 25, 2))
    assert _starts(32, 5, 2) == [*range(0, 27, 2), 27]  # flush with the end: pixel 31 is hidden too
    net = xpcnn.Sequential([xpcnn.Conv2D(1, 1, 1, rng=0), xpcnn.GlobalAvgPool2D(), xpcnn.Dense(1, 2, rng=0)])
    found = occlusion(net, np.zeros((1, 300, 300), np.uint8), **GREY)
    assert found.patch == 43 and found.stride == 21  # a seventh of the side, moved by half of it
    small = occlusion(net, np.zeros((1, 300, 300), np.uint8), patch=20, **GREY)
    assert small.stride == 10 and len(_starts(300, 20, 10)) == 29
    smaller = occlusion(net, np.zeros((1, 300, 300), np.uint8), patch=6, **GREY)
    assert smaller.stride == 6  # 32 along a side would leave gaps: a patch's side at most
    assert np.all(np.isfinite(found.drop)) and np.all(np.isfinite(smaller.drop))


def test_occlusion_refuses_a_class_patch_or_stride_out_of_range():
    net = seed_net()
    with pytest.raises(ValueError, match="occlusion target must be at most 9"):
        occlusion(net, digit(), target=10, **GREY)
    with pytest.raises(ValueError, match="occlusion patch must be at most 28"):
        occlusion(net, digit(), patch=29, **GREY)
    with pytest.raises(ValueError, match="occlusion stride must be at most 4"):
        occlusion(net, digit(), patch=4, stride=5, **GREY)  # a gap would leave pixels never hidden
    with pytest.raises(TypeError, match="occlusion patch must be an integer"):
        occlusion(net, digit(), patch=2.5, **GREY)


def test_the_same_maps_on_every_backend(target):
    net = seed_net()
    moved = net.to(*target)
    found, there = occlusion(net, digit(), patch=7, **GREY), occlusion(moved, digit(), patch=7, **GREY)
    np.testing.assert_allclose(there.drop, found.drop, atol=1e-5)
    for name, value in feature_maps(moved, digit(), **GREY).items():
        np.testing.assert_allclose(value, feature_maps(net, digit(), **GREY)[name], rtol=1e-5, atol=1e-5)
