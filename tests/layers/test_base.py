"""The Layer protocol (xpcnn/layers/base.py) that every layer shares: input dtype and
backend checks, backward after forward, grads keyed like params, skipping the input
gradient."""

from __future__ import annotations

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, presets

from ..helpers import seed_net


def test_dtype_mismatch_and_integer_input(target, to_target):
    layer = xpcnn.Dense(3, 2).to(*target)  # float32 parameters
    with pytest.raises(TypeError, match="does not match parameter dtype"):
        layer.forward(to_target(np.zeros((1, 3)), "float64"))
    with pytest.raises(TypeError, match="floating-point input"):
        xpcnn.ReLU().forward(to_target(np.zeros((1, 3), np.int64)))


def test_float16_input_is_named(target, to_target):
    if target[0] == "array_api_strict":
        pytest.skip("array_api_strict has no float16")
    model = presets.build("tutorial").to(*target)
    with pytest.raises(TypeError, match=r"Conv2D.*input dtype .*float16 does not match parameter dtype .*float32"):
        model.forward(to_target(np.zeros((1, 1, 28, 28), np.float16)))


def test_mixing_backends_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"input is a torch.Tensor but the parameters live on \['numpy'\]; move the "
                                        r"model with .to\(...\)$"):  # not array_api_compat's page of module paths
        xpcnn.Dense(3, 2).forward(torch.zeros((1, 3)))


def test_a_layer_moved_alone_is_checked_as_a_network_is():
    # torch's own "PyTorch is not linked with support for cuda devices" came out of a layer
    # with arrays, a layer without took any device and dtype, and "meta" held no data
    torch = pytest.importorskip("torch")
    for layer in (xpcnn.Dense(3, 2), xpcnn.ReLU()):
        with pytest.raises(backend.BackendUnavailable, match=r"^backend torch on device meta: device 'meta' not"):
            layer.to("torch", "meta")
        with pytest.raises(backend.BackendUnavailable, match=r"^backend numpy on device gpu: "):
            layer.to("numpy", "gpu")
        with pytest.raises(ValueError, match=r"^unsupported dtype 'float16'"):
            layer.to("numpy", dtype="float16")
    if not torch.cuda.is_available():
        with pytest.raises(backend.BackendUnavailable, match=r"^backend torch on device cuda: .*no CUDA device"):
            xpcnn.Dense(3, 2).to("torch", "cuda")
    dense = xpcnn.Dense(3, 2).to("torch", dtype="float64")
    assert dense.params["weight"].dtype == torch.float64
    # the keyword is Sequential.to's: a layer's was device_spec, "unexpected keyword argument 'device'"
    for moved in (xpcnn.Dense(3, 2), xpcnn.Residual([xpcnn.ReLU()]), xpcnn.Sequential([xpcnn.ReLU()])):
        moved.to("torch", device="cpu", dtype="float64")


def test_backward_needs_forward_and_matching_dy(to_target):
    layer = xpcnn.Tanh()
    with pytest.raises(RuntimeError, match="preceding forward"):
        layer.backward(to_target(np.zeros((2, 2)), "float32"))
    layer.forward(to_target(np.zeros((2, 2)), "float32"), training=False)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(to_target(np.zeros((2, 2)), "float32"))
    layer.forward(to_target(np.zeros((2, 2)), "float32"))
    with pytest.raises(ValueError, match=r"dy of shape \(2, 2\), got \(1, 2\)"):
        layer.backward(to_target(np.zeros((1, 2)), "float32"))


@pytest.mark.parametrize("make", [
    lambda: xpcnn.Conv2D(2, 3, 3, padding=1), lambda: xpcnn.BatchNorm2D(2), lambda: xpcnn.Dropout(0.5, seed=1),
    xpcnn.ReLU, xpcnn.GELU, xpcnn.Sigmoid, lambda: xpcnn.MaxPool2D(2), lambda: xpcnn.AvgPool2D(2),
    xpcnn.GlobalAvgPool2D, xpcnn.Flatten, lambda: xpcnn.Residual(xpcnn.Sequential([xpcnn.Conv2D(2, 2, 3, padding=1)])),
    lambda: xpcnn.Sequential([xpcnn.BatchNorm2D(2), xpcnn.ReLU(), xpcnn.MaxPool2D(2)]),  # a fused block
    lambda: xpcnn.Sequential([xpcnn.BatchNorm2D(2), xpcnn.ReLU()]),  # another
])
def test_a_backward_after_an_inference_forward_is_refused(make):
    """Not answered with the gradient of the training batch before it."""
    layer, x = make(), np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    layer.forward(x, training=True)
    y = layer.forward(x + 1, training=False)
    with pytest.raises(RuntimeError, match="needs a preceding forward"):
        layer.backward(np.ones(tuple(y.shape), np.float32))


def test_layer_grads_follow_param_keys(target, to_target):
    for layer in (xpcnn.Conv2D(2, 3, 2), xpcnn.Dense(4, 2), xpcnn.BatchNorm2D(2)):
        layer.to(*target, dtype="float64")
        shape = (3, 4) if isinstance(layer, xpcnn.Dense) else (3, 2, 4, 4)
        y = layer.forward(to_target(np.random.default_rng(0).standard_normal(shape), "float64"))
        layer.backward(to_target(np.ones(tuple(y.shape)), "float64"))
        assert set(layer.grads) == set(layer.params)
        for key in layer.params:
            assert layer.grads[key].shape == layer.params[key].shape


def test_skipping_the_input_gradient_keeps_parameter_gradients(target, to_target):
    x = to_target(np.random.default_rng(0).standard_normal((4, 1, 28, 28)), "float64")
    full, skipped = seed_net(1).to(*target, "float64"), seed_net(1).to(*target, "float64")
    for net, input_grad in ((full, True), (skipped, False)):
        y = net.forward(x)
        result = net.backward(to_target(np.ones(tuple(y.shape)), "float64"), input_grad=input_grad)
        assert (result is None) == (not input_grad)
    for name in full.grads:
        np.testing.assert_array_equal(backend.to_numpy(skipped.grads[name]), backend.to_numpy(full.grads[name]))


@pytest.mark.parametrize("layer", [
    xpcnn.Conv2D(3, 5, (2, 4)), xpcnn.Conv2D(3, 5, 3, bias=False), xpcnn.Dense(7, 2), xpcnn.BatchNorm2D(6),
    xpcnn.MaxPool2D(2), xpcnn.AvgPool2D(3, 1), xpcnn.ReLU(), xpcnn.Dropout(0.2), xpcnn.Flatten(),
], ids=repr)
def test_one_declaration_gives_the_arrays_and_their_planned_shapes(layer):
    arrays = {**layer.params, **layer.buffers}
    declared = type(layer).array_shapes(layer.config())
    assert declared == {name: tuple(value.shape) for name, value in arrays.items()}
    assert type(layer).planned_shapes(layer.config()) == declared


def test_planned_shapes_refuse_what_the_constructor_would():
    with pytest.raises(TypeError):
        xpcnn.Dense.planned_shapes({"in_features": 3, "out_features": 2, "color": "red"})
    with pytest.raises(TypeError):
        xpcnn.Dense.planned_shapes({"in_features": 3})
    with pytest.raises(ValueError, match=r"^Dense in_features must be >= 1, got -3$"):
        xpcnn.Dense.planned_shapes({"in_features": -3, "out_features": 2})


@pytest.mark.parametrize("layer, config, kind, message", [
    # int() took a string of digits and a float, and said "invalid literal for int()" of other strings
    (xpcnn.Dense, {"in_features": "a", "out_features": 2}, TypeError,
     r"^Dense in_features must be an integer, got 'a'$"),
    (xpcnn.Dense, {"in_features": 3.5, "out_features": 2}, TypeError, r"^Dense in_features must be an integer"),
    (xpcnn.Conv2D, {"in_channels": "3", "out_channels": 2, "kernel_size": 3}, TypeError,
     r"^Conv2D in_channels must be an integer, got '3'$"),
    (xpcnn.Conv2D, {"in_channels": 3, "out_channels": 2, "kernel_size": "x"}, TypeError,
     r"^Conv2D kernel_size must be an integer, got 'x'$"),  # was "kernel_size ...", no layer named
    (xpcnn.BatchNorm2D, {"num_features": 0}, ValueError, r"^BatchNorm2D num_features must be >= 1, got 0$"),
])
def test_planned_shapes_check_the_arguments_as_the_constructor_words_it(layer, config, kind, message):
    with pytest.raises(kind, match=message):
        layer.planned_shapes(config)
    with pytest.raises(kind, match=message):
        layer(**config)


@pytest.mark.parametrize("build, message", [
    (lambda: xpcnn.Conv2D(2.0, 4, 3), r"Conv2D in_channels must be an integer, got 2.0"),
    (lambda: xpcnn.Conv2D(1, 0, 3), r"Conv2D out_channels must be >= 1, got 0"),
    (lambda: xpcnn.Conv2D(1, 4, 3, padding=-1), r"Conv2D padding must be >= 0"),
    (lambda: xpcnn.Conv2D(1, 4, 3, bias="yes"), r"Conv2D bias must be True or False"),
    (lambda: xpcnn.Dense(3, True), r"Dense out_features must be an integer, got True"),
    (lambda: xpcnn.MaxPool2D((2, 2, 2)), r"MaxPool2D kernel_size must be an integer or a pair of integers"),
    (lambda: xpcnn.AvgPool2D(2, stride="1"), r"AvgPool2D stride must be an integer, got '1'"),
    (lambda: xpcnn.BatchNorm2D(3, momentum=2), r"BatchNorm2D momentum must be in \[0.0, 1.0\], got 2"),
    (lambda: xpcnn.Dropout(1.0), r"Dropout p must be in \[0.0, 1.0\), got 1.0"),
])
def test_constructor_arguments_are_named_when_refused(build, message):
    with pytest.raises((TypeError, ValueError), match=message):
        build()


def test_integers_of_any_integer_type_are_accepted():
    conv = xpcnn.Conv2D(np.int64(1), np.int32(4), np.uint8(3), stride=(np.int16(1), 1))
    assert conv.config()["kernel_size"] == [3, 3] and type(conv.in_channels) is int
    assert xpcnn.Dense(np.int64(3), 2).in_features == 3 and xpcnn.MaxPool2D(np.int64(2)).kernel_size == (2, 2)
