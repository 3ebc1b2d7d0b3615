"""Optimizers against hand-computed updates and against torch.optim; schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpcnn
from xpcnn import backend
from xpcnn.optim import SGD, Adam, AdamW, Cosine, MultiStep, Schedule, StepDecay, schedule_from_config


def one_param_model(target, value=1.0, grad=0.5):
    """A Dense(1, 1) whose weight is `value` and gradient `grad` (bias the same)."""
    net = xpcnn.Sequential([xpcnn.Dense(1, 1)]).to(*target, "float64")
    layer = net[0]
    layer.params = {k: backend.to_backend(np.full(p.shape, value), *target, "float64") for k, p in layer.params.items()}
    layer.grads = {k: backend.to_backend(np.full(p.shape, grad), *target, "float64") for k, p in layer.params.items()}
    return net


def weight(net) -> float:
    return float(backend.to_numpy(net.params["0.weight"]).ravel()[0])


def test_sgd_plain_momentum_nesterov_and_decay_by_hand(target):
    net = one_param_model(target)
    SGD(net, lr=0.1).step()
    assert weight(net) == pytest.approx(1 - 0.1 * 0.5)
    net = one_param_model(target)
    opt = SGD(net, lr=0.1, momentum=0.9, weight_decay=0.2)
    opt.step()  # g = 0.5 + 0.2*1 = 0.7; v = 0.7; w = 1 - 0.07 = 0.93
    assert weight(net) == pytest.approx(0.93)
    opt.step()  # g = 0.5 + 0.2*0.93 = 0.686; v = 0.9*0.7 + 0.686 = 1.316; w = 0.93 - 0.1316
    assert weight(net) == pytest.approx(0.93 - 0.1316)
    net = one_param_model(target)
    opt = SGD(net, lr=0.1, momentum=0.5, nesterov=True)
    opt.step()  # v = 0.5; step = g + 0.5 v = 0.75
    opt.step()  # v = 0.25 + 0.5 = 0.75; step = 0.5 + 0.375 = 0.875
    assert weight(net) == pytest.approx(1 - 0.075 - 0.0875)


def test_adam_and_adamw_first_step_by_hand(target):
    net = one_param_model(target)
    Adam(net, lr=0.01).step()  # bias-corrected m / sqrt(v) = sign(g) on step 1
    assert weight(net) == pytest.approx(1 - 0.01, abs=1e-9)
    net = one_param_model(target)
    AdamW(net, lr=0.01, weight_decay=0.1).step()
    assert weight(net) == pytest.approx(1 * (1 - 0.001) - 0.01, abs=1e-9)
    net = one_param_model(target)
    Adam(net, lr=0.01, weight_decay=0.1).step()  # L2 changes g, not the first step's size
    assert weight(net) == pytest.approx(1 - 0.01, abs=1e-9)


def test_state_lives_on_the_model_backend(target):
    net = one_param_model(target)
    opt = Adam(net, lr=0.01)
    opt.step()
    for value in opt.state_arrays().values():
        assert backend.backend_of(value) == target[0]
        assert backend.dtype_name(value.dtype) == "float64"


def test_state_missing_after_a_step_is_refused():
    """A step makes all the state its settings use: a resumed optimizer lacking some would
    restart those from zero, silently."""
    net = xpcnn.Sequential([xpcnn.Dense(2, 2, rng=0)])
    saved = {f"exp_avg/{name}": np.zeros_like(param) for name, param in net.params.items()}
    Adam(net, 0.1).load_state_arrays(saved, 0)  # before the first step: none made yet
    with pytest.raises(ValueError, match=r"Adam: 3 steps taken, but no state exp_avg_sq/0.weight \(nor 1 more\)"):
        Adam(net, 0.1).load_state_arrays(saved, 3)
    SGD(net, 0.1).load_state_arrays({}, 3)  # without momentum, SGD keeps none
    with pytest.raises(ValueError, match=r"SGD: 3 steps taken, but no state momentum/0.bias; every step keeps it"):
        SGD(net, 0.1, momentum=0.9).load_state_arrays({"momentum/0.weight": np.zeros((2, 2), np.float32)}, 3)


def test_step_without_gradients_is_an_error():
    net = xpcnn.Sequential([xpcnn.Dense(2, 2)])
    with pytest.raises(RuntimeError, match="no gradient for 0.weight"):
        SGD(net, 0.1).step()
    SGD(net, 0.1).zero_grad()
    assert float(np.sum(net.grads["0.weight"])) == 0.0


@pytest.mark.parametrize("kind", ["sgd", "nesterov", "adam", "adamw"])
def test_against_torch_optim(target, kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    net = xpcnn.Sequential([xpcnn.Dense(4, 3, rng=rng)]).to(*target, "float64")
    t_params = [torch.tensor(backend.to_numpy(p), requires_grad=True) for p in net.params.values()]
    if kind == "sgd":
        ours = SGD(net, 0.1, momentum=0.9, weight_decay=0.01)
        theirs = torch.optim.SGD(t_params, 0.1, momentum=0.9, weight_decay=0.01)
    elif kind == "nesterov":
        ours = SGD(net, 0.1, momentum=0.8, nesterov=True)
        theirs = torch.optim.SGD(t_params, 0.1, momentum=0.8, nesterov=True)
    elif kind == "adam":
        ours, theirs = Adam(net, 0.01, weight_decay=0.01), torch.optim.Adam(t_params, 0.01, weight_decay=0.01)
    else:
        ours, theirs = AdamW(net, 0.01, weight_decay=0.05), torch.optim.AdamW(t_params, 0.01, weight_decay=0.05)
    for _ in range(5):
        grads = [rng.standard_normal(p.shape) for p in t_params]
        for layer in net:
            layer.grads = {k: backend.to_backend(g, *target, "float64") for k, g in zip(layer.params, grads)}
        for p, g in zip(t_params, grads):
            p.grad = torch.tensor(g)
        ours.step()
        theirs.step()
        for mine, reference in zip(net.params.values(), t_params):
            np.testing.assert_allclose(backend.to_numpy(mine), reference.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_schedules():
    assert Schedule()(100) == 1.0
    step = StepDecay(10, 0.5)
    assert [step(s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cosine = Cosine(total=110, warmup=10, floor=0.0)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(10) == pytest.approx(1.0) and cosine(60) == pytest.approx(0.5) and cosine(110) == pytest.approx(0.0)
    assert all(cosine(s) >= cosine(s + 1) for s in range(10, 110))
    assert schedule_from_config(cosine.config())(60) == cosine(60)
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule_from_config({"type": "exotic"})
    with pytest.raises(ValueError):
        Cosine(total=10, warmup=10)


def test_optimizer_uses_the_schedule():
    net = xpcnn.Sequential([xpcnn.Dense(1, 1)])
    opt = SGD(net, 1.0, schedule=StepDecay(1, 0.5))
    lrs = []
    for _ in range(3):
        lrs.append(opt.current_lr)
        net[0].grads = {k: np.zeros_like(p) for k, p in net[0].params.items()}
        opt.step()
    assert lrs == [1.0, 0.5, 0.25] and math.isclose(opt.current_lr, 0.125)


@pytest.mark.parametrize("name, expected", [("sgd", SGD), ("adam", Adam), ("adamw", AdamW)])
def test_build_by_name_and_rebuild_from_config(name, expected):
    from xpcnn.optim import Optimizer, build

    net = one_param_model(("numpy", None))
    momentum = 0.5 if name == "sgd" else 0.0
    opt = build(name, net, 0.1, momentum=momentum, weight_decay=0.01, schedule=Cosine(100, 5))
    assert type(opt) is expected and opt.lr == 0.1 and opt.weight_decay == 0.01
    rebuilt = Optimizer.from_config(net, opt.config())
    assert type(rebuilt) is expected and rebuilt.config() == opt.config() and rebuilt.steps == 0


def test_build_refuses_unknown_names_and_momentum_outside_sgd():
    from xpcnn.optim import Optimizer, build

    net = one_param_model(("numpy", None))
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        build("rmsprop", net, 0.1)
    with pytest.raises(ValueError, match="momentum applies to sgd only"):
        build("adam", net, 0.1, momentum=0.9)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        Optimizer.from_config(net, {"type": "LBFGS", "lr": 0.1})


def test_plan_schedule_by_name():
    from xpcnn.optim import plan_schedule

    cosine = plan_schedule("cosine", 90, 9)
    assert isinstance(cosine, Cosine) and (cosine.total, cosine.warmup) == (90, 9)
    step = plan_schedule("step", 90)
    assert isinstance(step, StepDecay) and step.every == 30
    assert plan_schedule("constant", 90)(50) == 1.0
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        plan_schedule("linear", 90)


def test_one_cycle_follows_torch_step_by_step():
    torch = pytest.importorskip("torch")
    from xpcnn.optim import OneCycle

    for total, pct_start, div, final in ((100, 0.3, 25.0, 1e4), (235, 0.25, 10.0, 100.0), (7, 0.5, 25.0, 1e4)):
        parameter = torch.nn.Parameter(torch.zeros(1))
        reference = torch.optim.SGD([parameter], lr=0.01)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.01, total_steps=total, pct_start=pct_start,
                                                        div_factor=div, final_div_factor=final, cycle_momentum=False)
        mine = OneCycle(total, pct_start, div, final)
        for step in range(total):
            assert 0.01 * mine(step) == pytest.approx(reference.param_groups[0]["lr"], rel=1e-12, abs=1e-18), step
            reference.step()
            scheduler.step()
    assert OneCycle(100).replanned(100, 300).config()["total"] == 300


def test_betas_reach_adam_and_not_sgd():
    from xpcnn.optim import Optimizer, build

    net = one_param_model(("numpy", None))
    assert build("adam", net, 0.1, betas=(0.7, 0.9)).betas == (0.7, 0.9)
    with pytest.raises(ValueError, match="betas apply to adam and adamw, not sgd"):
        build("sgd", net, 0.1, betas=(0.7, 0.9))
    assert build("adamw", net, 0.1, betas=[0.7, 0.9]).betas == (0.7, 0.9)
    assert Optimizer.from_config(net, {"type": "Adam", "lr": 0.1, "betas": [0.7, 0.9]}).betas == (0.7, 0.9)
    for made in (lambda: build("adam", net, 0.1, betas=0.9),
                 lambda: Optimizer.from_config(net, {"type": "Adam", "lr": 0.1, "betas": 0.9})):
        with pytest.raises(TypeError, match="Adam betas must be a pair of numbers, got 0.9"):  # one check, Adam's
            made()


def test_one_cycle_cycles_adams_beta1_as_torch_does():
    torch = pytest.importorskip("torch")
    from xpcnn.optim import OneCycle

    net = one_param_model(("numpy", None))
    mine = Adam(net, 0.01, betas=(0.7, 0.9), schedule=OneCycle(40))
    parameter = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    theirs = torch.optim.Adam([parameter], lr=0.01, betas=(0.7, 0.9))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(theirs, max_lr=0.01, total_steps=40)  # momentum cycles by default
    for step in range(40):
        net[0].grads = {key: np.full_like(value, 0.5 + 0.01 * step) for key, value in net[0].params.items()}
        mine.step()
        parameter.grad = torch.full_like(parameter, 0.5 + 0.01 * step)
        assert mine.betas[0] == pytest.approx(theirs.param_groups[0]["betas"][0], abs=1e-15), step
        theirs.step()
        scheduler.step()
        assert weight(net) == pytest.approx(float(parameter.detach()), rel=1e-12), step


def test_a_cycled_sgd_momentum_that_reaches_zero_follows_torch():
    """At the step where OneCycle brings the momentum to 0, PyTorch leaves the velocity
    alone and steps along the gradient."""
    torch = pytest.importorskip("torch")
    from xpcnn.optim import OneCycle

    for nesterov in (False, True):
        net = one_param_model(("numpy", None))
        mine = SGD(net, 0.01, momentum=0.9, nesterov=nesterov, schedule=OneCycle(10, cycle_momentum=(0.0, 0.9)))
        parameter = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
        theirs = torch.optim.SGD([parameter], lr=0.01, momentum=0.9, nesterov=nesterov)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(theirs, max_lr=0.01, total_steps=10, base_momentum=0.0,
                                                        max_momentum=0.9)
        for step in range(10):
            net[0].grads = {key: np.full_like(value, 0.5 - 0.1 * step) for key, value in net[0].params.items()}
            mine.step()
            parameter.grad = torch.full_like(parameter, 0.5 - 0.1 * step)
            theirs.step()
            scheduler.step()
            assert weight(net) == pytest.approx(float(parameter.detach()), rel=1e-12, abs=1e-15), (nesterov, step)


def test_multistep_follows_torch_and_stretches_with_the_run():
    torch = pytest.importorskip("torch")
    schedule = xpcnn.optim.plan_schedule("multistep", 100)
    assert isinstance(schedule, MultiStep) and schedule.milestones == [50, 75]
    param = torch.nn.Parameter(torch.zeros(1))
    theirs = torch.optim.SGD([param], lr=1.0)
    stepper = torch.optim.lr_scheduler.MultiStepLR(theirs, [50, 75], 0.1)
    for step in range(100):
        assert schedule(step) == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12), step
        theirs.step()
        stepper.step()
    assert schedule_from_config(schedule.config()).milestones == [50, 75]
    assert schedule.replanned(100, 200).milestones == [100, 150]
    with pytest.raises(ValueError, match="MultiStep milestones must increase"):
        MultiStep([10, 5])
    with pytest.raises(TypeError, match="MultiStep milestones must be a list of steps"):
        MultiStep(10)


def test_an_optimizer_of_ones_own_is_named_as_none_a_checkpoint_rebuilds():
    class Clipped(xpcnn.optim.SGD):
        pass

    net = xpcnn.Sequential([xpcnn.Flatten(), xpcnn.Dense(4, 2, rng=0)])
    with pytest.raises(ValueError, match="the optimizer Clipped is none a checkpoint can rebuild"):
        Clipped(net, 0.1).check_rebuildable()
    xpcnn.optim.Adam(net, 0.1, schedule=xpcnn.optim.Cosine(10)).check_rebuildable()
