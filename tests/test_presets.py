"""Presets and their recipes: what `xpcnn train --model NAME` builds and trains with."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

import xpcnn
from xpcnn import backend, optim, presets


def test_seed_is_the_old_name_of_the_tutorial_preset():
    old, new = presets.build("seed", 3), presets.build("tutorial", 3)
    assert old.config() == new.config()
    for name, value in new.params.items():
        np.testing.assert_array_equal(backend.to_numpy(old.params[name]), backend.to_numpy(value))
    assert presets.recipe("seed") == presets.recipe("tutorial")
    assert presets.canonical("seed") == "tutorial"


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'nosuch'; expected one of tutorial, lenet"):
        presets.build("nosuch")


def test_recipes_are_the_documented_defaults():
    tutorial, lenet = presets.recipe("tutorial"), presets.recipe("lenet")
    assert (tutorial.epochs, tutorial.batch_size, tutorial.optimizer, tutorial.lr, tutorial.momentum) == (
        3, 64, "sgd", 0.01, 0.9)
    assert (lenet.epochs, lenet.batch_size, lenet.optimizer, lenet.lr, lenet.augment) == (5, 64, "adam", 1e-2, 1)
    assert tutorial.schedule == lenet.schedule == "cosine"


def test_a_recipe_keeps_numpy_numbers_as_python_numbers_a_record_takes():
    recipe = presets.recipe("lenet").replace(epochs=np.int64(2), augment=np.int32(3), lr=np.float32(0.5),
                                             flip=np.True_)
    assert json.loads(json.dumps(dataclasses.asdict(recipe))) == dataclasses.asdict(recipe)
    assert (recipe.epochs, recipe.augment, recipe.lr, recipe.flip) == (2, 3, 0.5, True)


def test_recipe_builds_its_optimizer_with_the_schedule_over_the_whole_run():
    model = presets.build("tutorial")
    opt = presets.recipe("tutorial").build_optimizer(model, steps_per_epoch=10)
    assert isinstance(opt, optim.SGD) and opt.momentum == 0.9 and opt.lr == 0.01
    assert isinstance(opt.schedule, optim.Cosine) and opt.schedule.total == 30


def test_a_pad_without_shifts_is_refused_as_the_command_refused_it():
    """Only xpcnn train refused --pad without --augment; a Python recipe dropped it silently."""
    with pytest.raises(presets.SettingsError, match=r"^pad: says what --augment's shifts bring in at the edges"):
        presets.recipe("tutorial").replace(pad="reflect")
    with pytest.raises(presets.SettingsError, match=r"^pad: "):
        presets.recipe("lenet").replace(augment=0, pad="zero")
    assert presets.recipe("lenet").replace(pad="reflect").pad == "reflect"  # lenet's recipe shifts by 1 pixel
    assert presets.recipe("tutorial").replace(augment=2, pad="reflect").pad == "reflect"


def test_replace_keeps_unset_fields_and_drops_momentum_for_other_optimizers():
    recipe = presets.recipe("tutorial")
    assert recipe.replace(epochs=None, lr=0.1) == recipe.replace(lr=0.1)
    assert recipe.replace(lr=0.1).momentum == 0.9
    adam = recipe.replace(optimizer="adam")
    assert adam.optimizer == "adam" and adam.momentum == 0.0
    assert isinstance(adam.build_optimizer(presets.build("tutorial"), 5), optim.Adam)
    with pytest.raises(ValueError, match="momentum: applies to the sgd optimizer only, not adam"):
        recipe.replace(optimizer="adam", momentum=0.5)


def test_a_warm_up_longer_than_the_run_is_refused():
    recipe = presets.recipe("tutorial").replace(epochs=1, warmup=10)
    with pytest.raises(ValueError, match=r"warmup: 10 steps must be fewer than the run's 10 steps"):
        recipe.build_optimizer(presets.build("tutorial"), steps_per_epoch=10)
    assert recipe.build_optimizer(presets.build("tutorial"), steps_per_epoch=11).schedule.warmup == 10


def test_the_fast_preset_and_its_one_epoch_recipe():
    net = presets.build("fast")
    assert net.output_shapes((2, 1, 28, 28))[-1] == (2, 10) and net.num_params() == 215_194
    recipe = presets.recipe("fast")
    assert (recipe.epochs, recipe.batch_size, recipe.optimizer, recipe.lr, recipe.schedule, recipe.betas) == (
        1, 256, "adam", 1e-2, "onecycle", (0.7, 0.9))
    optimizer = recipe.build_optimizer(net, steps_per_epoch=235)
    assert isinstance(optimizer.schedule, optim.OneCycle) and optimizer.betas == (0.7, 0.9)
    assert recipe.replace(optimizer="sgd").betas is None  # Adam's betas go with Adam


# sha256 of each preset's state_dict (names sorted, then bytes) at seed 0: its weights are
# the same bit for bit from release to release, whatever else builds layers in the script.
PRESET_WEIGHTS = {
    "tutorial": "d886a2b9d777546574f5c38c1dd25478ecd03be29c8864e68bef0641edb72044",
    "lenet": "12fa4aaf289a714cb65d5c092fe3d0d257fab9e6d83da53064f41f30f05df189",
    "fast": "6e542855559aabf4d1cab4a4629dd4cdaaa32f6490c97c600b6c16483e2e2b80",
}


@pytest.mark.parametrize("name", sorted(PRESET_WEIGHTS))
def test_the_presets_weights_do_not_change(name):
    xpcnn.Dense(4, 4)  # a layer the script built before: it must not move the preset
    state = presets.build(name, 0).state_dict()
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].tobytes())
    assert digest.hexdigest() == PRESET_WEIGHTS[name]


@pytest.mark.parametrize("name", ["tutorial", "lenet", "fast", "compact", "resnet20", "cifar"])
def test_presets_take_the_shape_and_classes_of_the_data(name):
    for shape in ((3, 32, 32), (1, 20, 24)):
        net = presets.build(name, 0, input_shape=shape, classes=7)
        assert net.output_shapes((2, *shape))[-1] == (2, 7)
    with pytest.raises(ValueError, match=f"preset {name} takes images of at least"):
        presets.build(name, input_shape=(3, 3, 3))


@pytest.mark.parametrize("name", ["tutorial", "lenet", "fast", "compact", "cifar"])
def test_the_smallest_side_of_a_preset_is_the_smallest_its_layers_take(name):
    """fast takes 12x12 (5x5 convolution, pooling, 3x3 convolution, pooling: 8, 4, 2, 1)
    but was said to need 14x14. (resnet20's 4x4 is a floor of its own: its layers take 1x1.)"""
    side = presets.SMALLEST_SIDES[name]
    net = presets.build(name, 0, input_shape=(1, side, side))
    assert net.output_shapes((2, 1, side, side))[-1] == (2, 10)
    with pytest.raises(ValueError):  # the layers themselves: at the dense layer's size or in a pooling
        presets.PRESETS[name](0, (1, side - 1, side - 1), 10).output_shapes((2, 1, side - 1, side - 1))


def test_compact_takes_any_image_size_with_the_same_weights():
    small, large = presets.build("compact", 0, (3, 8, 8), 5), presets.build("compact", 0, (3, 64, 48), 5)
    for name, value in small.params.items():
        np.testing.assert_array_equal(value, large.params[name])  # global pooling: no size in any weight
    assert any(type(layer).__name__ == "GlobalAvgPool2D" for layer in small)


@pytest.mark.parametrize("shape, classes, kind, message", [
    ((3, 32), 10, TypeError, "input_shape must be \\(channels, height, width\\)"),
    ((3, 32, "32"), 10, TypeError, "input_shape must be an integer"),
    ((0, 32, 32), 10, ValueError, "input_shape must be >= 1"),
    ((3, 32, 32), 1, ValueError, "classes must be >= 2"),
])
def test_preset_shapes_and_classes_are_checked(shape, classes, kind, message):
    with pytest.raises(kind, match=message):
        presets.build("compact", input_shape=shape, classes=classes)


def test_resnet20_is_he_et_al_s_cifar_network():
    net = presets.build("resnet20")
    assert net.num_params() == 272_474  # 0.27 M, with two projection shortcuts (option B)
    blocks = [layer for layer in net if isinstance(layer, xpcnn.Residual)]
    assert len(blocks) == 9 and sum(block.shortcut is not None for block in blocks) == 2
    assert sum(p.size for name, p in net.params.items() if ".shortcut." in name) == 2_752  # what option B adds
    assert net.output_shapes((2, 3, 32, 32))[-1] == (2, 10)
    shaped = net.shaped_layers((1, 3, 32, 32))
    assert [shape[1:] for _, layer, shape in shaped if isinstance(layer, xpcnn.Residual)] == [
        (16, 32, 32)] * 3 + [(32, 16, 16)] * 3 + [(64, 8, 8)] * 3
    assert round(net.training_flops((3, 32, 32)) / 6 / 1e6) == 41  # multiply-adds of one forward, as the paper
    recipe = presets.recipe("resnet20")
    assert (recipe.epochs, recipe.batch_size, recipe.optimizer, recipe.lr, recipe.momentum, recipe.weight_decay,
            recipe.schedule, recipe.augment, recipe.pad, recipe.flip) == (
        164, 128, "sgd", 0.1, 0.9, 1e-4, "multistep", 4, "zero", True)
    schedule = recipe.build_optimizer(net, steps_per_epoch=391).schedule
    assert isinstance(schedule, optim.MultiStep) and schedule.milestones == [32_062, 48_093]


def test_the_cifar_preset_scales_in_width_and_keeps_its_recipe():
    full, quarter = presets.build("cifar"), presets.build("cifar", width=0.25)
    assert full.num_params() == 1_978_026 and quarter.num_params() < full.num_params() / 10
    assert quarter[0].out_channels == 8 and quarter.output_shapes((2, 3, 32, 32))[-1] == (2, 10)
    recipe = presets.recipe("cifar")
    assert (recipe.optimizer, recipe.nesterov, recipe.label_smoothing, recipe.augment, recipe.pad, recipe.flip) == (
        "sgd", True, 0.2, 2, "reflect", True)
    optimizer = recipe.build_optimizer(quarter, steps_per_epoch=98)
    assert isinstance(optimizer, optim.SGD) and optimizer.nesterov
    assert recipe.replace(optimizer="adam").nesterov is False
    with pytest.raises(ValueError, match="nesterov: applies to the sgd optimizer only, not adam"):
        recipe.replace(optimizer="adam", nesterov=True)
    with pytest.raises(ValueError, match="width: applies to resnet20 and cifar, not lenet"):
        presets.build("lenet", width=0.5)
    with pytest.raises(ValueError, match="width must be in"):
        presets.build("cifar", width=0)


def test_recipe_settings_that_would_be_dropped_silently_are_refused():
    cifar = presets.recipe("cifar")
    with pytest.raises(ValueError, match="momentum: the onecycle schedule cycles SGD's momentum"):
        cifar.replace(momentum=0.5)
    assert cifar.replace(schedule="cosine", momentum=0.5).momentum == 0.5
    with pytest.raises(ValueError, match=r"nesterov: needs a momentum above 0 .*--no-nesterov"):
        cifar.replace(schedule="cosine", momentum=0.0)
    assert cifar.replace(schedule="cosine", momentum=0.0, nesterov=False).nesterov is False
    with pytest.raises(ValueError, match=r"epochs: the onecycle schedule needs 2 optimizer steps or more; 1 epoch"):
        cifar.replace(epochs=1).build_optimizer(presets.build("cifar", width=0.125), steps_per_epoch=1)


def test_lenet_warms_up_over_100_steps_or_a_tenth_of_a_shorter_run():
    recipe, net = presets.recipe("lenet"), presets.build("lenet")
    assert recipe.build_optimizer(net, steps_per_epoch=938).schedule.warmup == 100  # full MNIST: 4,690 steps
    assert recipe.build_optimizer(net, steps_per_epoch=40).schedule.warmup == 20  # 200 steps
    assert recipe.replace(epochs=1).build_optimizer(net, steps_per_epoch=8).schedule.warmup == 0  # 8 steps: none


def test_a_warmup_given_is_taken_as_it_is_and_another_schedule_drops_the_recipe_s():
    recipe, net = presets.recipe("lenet"), presets.build("lenet")
    assert recipe.replace(warmup=0).build_optimizer(net, steps_per_epoch=938).schedule.warmup == 0
    assert recipe.replace(warmup=300).build_optimizer(net, steps_per_epoch=100).schedule.warmup == 300  # not 50
    with pytest.raises(ValueError, match=r"warmup: 100 steps must be fewer than the run's 50 steps"):
        recipe.replace(warmup=100, epochs=1).build_optimizer(net, steps_per_epoch=50)
    assert recipe.replace(schedule="onecycle").warmup == 0
    assert recipe.replace(schedule="step").build_optimizer(net, steps_per_epoch=10).schedule.config()["type"] == "step"
