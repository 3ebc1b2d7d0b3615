"""Optimizers and learning-rate schedules.

Updates follow PyTorch's definitions (torch.optim.SGD, Adam, AdamW) and are applied in
place to the model's arrays; optimizer state (momenta) is created with `zeros_like` of
each parameter, so it lives on the model's backend, device and dtype.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace, device

from . import backend, capture
from .checks import flag, integer, number
from .distributed import Part, part_of
from .model import Sequential


class Schedule:
    """A learning-rate multiplier as a function of the optimizer step (0-based)."""

    def __call__(self, step: int) -> float:
        return 1.0

    def config(self) -> dict[str, Any]:
        """The schedule as JSON-ready data: `schedule_from_config(config())` rebuilds it."""
        return {"type": "constant"}

    def momentum(self, step: int) -> float | None:
        """SGD's momentum (Adam's beta1) for `step`, for schedules that cycle it; else None."""
        return None

    def replanned(self, old_total: int, new_total: int) -> Schedule:
        """This schedule stretched from a run of `old_total` steps to one of `new_total`."""
        return self


class StepDecay(Schedule):
    """Multiply by `gamma` every `every` steps."""

    def __init__(self, every: int, gamma: float = 0.1) -> None:
        self.every = integer(every, "StepDecay every", 1)
        self.gamma = number(gamma, "StepDecay gamma", 0.0, math.inf, low_included=False)

    def __call__(self, step: int) -> float:
        return self.gamma ** (step // self.every)

    def config(self) -> dict[str, Any]:
        return {"type": "step", "every": self.every, "gamma": self.gamma}

    def replanned(self, old_total: int, new_total: int) -> Schedule:
        return StepDecay(max(1, self.every * new_total // max(old_total, 1)), self.gamma)


class MultiStep(Schedule):
    """Multiply by `gamma` at each of the `milestones` (steps, increasing), as PyTorch's
    MultiStepLR; He et al.'s CIFAR ResNets divide by 10 at half and three quarters of the run."""

    def __init__(self, milestones: list[int] | tuple[int, ...], gamma: float = 0.1) -> None:
        if not isinstance(milestones, (list, tuple)) or not milestones:
            raise TypeError(f"MultiStep milestones must be a list of steps, got {milestones!r}")
        self.milestones = [integer(m, "MultiStep milestone", 1) for m in milestones]
        if self.milestones != sorted(set(self.milestones)):
            raise ValueError(f"MultiStep milestones must increase, got {self.milestones}")
        self.gamma = number(gamma, "MultiStep gamma", 1e-300, math.inf)

    def __call__(self, step: int) -> float:
        return self.gamma ** sum(step >= milestone for milestone in self.milestones)

    def config(self) -> dict[str, Any]:
        return {"type": "multistep", "milestones": list(self.milestones), "gamma": self.gamma}

    def replanned(self, old_total: int, new_total: int) -> Schedule:
        moved = sorted({max(1, m * new_total // max(old_total, 1)) for m in self.milestones})
        return MultiStep(moved, self.gamma)


class Cosine(Schedule):
    """Linear warm-up over `warmup` steps, then cosine decay to `floor` at `total` steps."""

    def __init__(self, total: int, warmup: int = 0, floor: float = 0.0) -> None:
        total, warmup = integer(total, "Cosine total", 1), integer(warmup, "Cosine warmup", 0)
        if warmup >= total:
            raise ValueError(f"Cosine warmup must be fewer steps than its total {total}, got {warmup}")
        self.total, self.warmup, self.floor = total, warmup, number(floor, "Cosine floor", 0.0, 1.0)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def config(self) -> dict[str, Any]:
        return {"type": "cosine", "total": self.total, "warmup": self.warmup, "floor": self.floor}

    def replanned(self, old_total: int, new_total: int) -> Schedule:
        return Cosine(new_total, min(self.warmup, new_total - 1), self.floor)


class OneCycle(Schedule):
    """PyTorch's OneCycleLR (two phases, cosine annealing) as a multiplier of the peak
    learning rate: up from 1/div_factor to 1 over the first `pct_start` of `total` steps,
    then down to 1/(div_factor * final_div_factor). With `cycle_momentum` (base, max),
    SGD's momentum (Adam's beta1) moves the other way, from max down to base and back, as
    in PyTorch's default."""

    def __init__(self, total: int, pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 cycle_momentum: tuple[float, float] | list[float] | None = (0.85, 0.95)) -> None:
        self.total, self.pct_start = integer(total, "OneCycle total", 2), number(pct_start, "OneCycle pct_start", 0, 1)
        if self.pct_start in (0.0, 1.0):
            raise ValueError(f"OneCycle pct_start must be strictly between 0 and 1, got {pct_start}")
        self.div_factor = number(div_factor, "OneCycle div_factor", 1e-300, math.inf)
        self.final_div_factor = number(final_div_factor, "OneCycle final_div_factor", 1e-300, math.inf)
        if cycle_momentum is not None:
            if not isinstance(cycle_momentum, (tuple, list)) or len(cycle_momentum) != 2:
                raise TypeError(f"OneCycle cycle_momentum must be (base, max) or None, got {cycle_momentum!r}")
            base, top = (number(m, "OneCycle cycle_momentum", 0.0, 1.0, high_included=False) for m in cycle_momentum)
            if base > top:
                raise ValueError(f"OneCycle cycle_momentum must be (base, max) with base <= max, got {cycle_momentum}")
            cycle_momentum = (base, top)
        self.cycle_momentum = cycle_momentum

    def _phase(self, step: int) -> tuple[bool, float]:
        """(still rising, progress in [0, 1] through the phase), as PyTorch counts steps."""
        peak_step = self.pct_start * self.total - 1
        if step <= peak_step:
            return True, step / peak_step if peak_step > 0 else 1.0
        return False, min(1.0, (step - peak_step) / (self.total - 1 - peak_step))

    def __call__(self, step: int) -> float:
        rising, progress = self._phase(step)
        initial = 1.0 / self.div_factor
        start, end = (initial, 1.0) if rising else (1.0, initial / self.final_div_factor)
        return _cosine(start, end, progress)

    def momentum(self, step: int) -> float | None:
        if self.cycle_momentum is None:
            return None
        base, top = self.cycle_momentum
        rising, progress = self._phase(step)
        return _cosine(top, base, progress) if rising else _cosine(base, top, progress)

    def config(self) -> dict[str, Any]:
        return {"type": "onecycle", "total": self.total, "pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor, "cycle_momentum": self.cycle_momentum}

    def replanned(self, old_total: int, new_total: int) -> Schedule:
        return OneCycle(new_total, self.pct_start, self.div_factor, self.final_div_factor, self.cycle_momentum)


def _cosine(start: float, end: float, progress: float) -> float:
    """From `start` at progress 0 to `end` at 1, along half a cosine."""
    return end + (start - end) / 2 * (math.cos(math.pi * progress) + 1)


SCHEDULES = {"constant": Schedule, "step": StepDecay, "multistep": MultiStep, "cosine": Cosine, "onecycle": OneCycle}


def plan_schedule(name: str, total_steps: int, warmup: int = 0) -> Schedule:
    """Schedule `name` planned over a run of `total_steps` optimizer steps: "cosine"
    (with `warmup` linear warm-up steps), "onecycle" (PyTorch's OneCycleLR), "step" (x0.1
    after each third), "multistep" (x0.1 at a half and at three quarters) or "constant"."""
    _known(SCHEDULES, name, "schedule")
    if name == "cosine":
        return Cosine(total_steps, warmup)
    if name == "step":
        return StepDecay(max(1, total_steps // 3), 0.1)
    if name == "onecycle":
        return OneCycle(total_steps)
    if name == "multistep":
        return MultiStep(sorted({max(1, total_steps // 2), max(1, 3 * total_steps // 4)}))
    return Schedule()


def schedule_from_config(config: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from its `config()`."""
    kind = _known(SCHEDULES, config.get("type"), "schedule")
    return kind(**{k: v for k, v in config.items() if k != "type"})


def _known(table: dict[str, Any], name: Any, what: str) -> Any:
    """table[name]; ValueError naming the unknown `what` and the names there are."""
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of {', '.join(table)}")
    return table[name]


class Optimizer:
    """Base: `step()` applies one update from the model's grads; `zero_grad()` clears them."""

    slots: tuple[str, ...] = ()  # names of the per-parameter state arrays

    def __init__(
        self, model: Sequential, lr: float, weight_decay: float = 0.0, schedule: Schedule | None = None
    ) -> None:
        name = type(self).__name__
        if not isinstance(model, Sequential):
            raise TypeError(f"{name} model must be a Sequential, got {type(model).__name__}")
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"{name} schedule must be a Schedule (optim.Cosine, OneCycle...), got {schedule!r}")
        lr = number(lr, f"{name} lr", 0.0, math.inf, low_included=False)
        weight_decay = number(weight_decay, f"{name} weight_decay", 0.0, math.inf)
        self.model, self.lr, self.weight_decay = model, lr, weight_decay
        self.schedule = schedule or Schedule()
        self.steps = 0
        self.state: dict[str, dict[str, Any]] = {slot: {} for slot in self.slots}

    @property
    def current_lr(self) -> float:
        """The learning rate the next step will use."""
        return self.lr * self.schedule(self.steps)

    def step(self, part: Part | None = None) -> None:
        """Update the parameters from the model's gradients; with `part`, only its rows,
        from its gradients, with the state made ready before (`make_state`)."""
        if part is None:
            self.make_state()
        params = self.model.params
        grads = self.model.grads if part is None else part.grads
        for name in params if part is None else part.spans:
            if name not in grads:
                raise RuntimeError(f"{type(self).__name__}: no gradient for {name}; run backward() before step()")
            if part is None and tuple(grads[name].shape) != tuple(params[name].shape):  # else a kernel reads past it
                raise ValueError(f"{type(self).__name__}: the gradient of {name} has shape {tuple(grads[name].shape)}, "
                                 f"its parameter {tuple(params[name].shape)}")
        if not params:
            self._next_coefficients()
            return
        # This step's numbers (learning rate, bias corrections...), computed on the host
        # for every step, also when the step is a recorded CUDA graph (xpcnn.capture).
        first = next(iter(params.values()))
        with backend.on_device(first):
            values = capture.from_host(self._next_coefficients, first)
            coefficients = [values[i] for i in range(values.shape[0])]
            for name, param in params.items():
                if part is None:
                    state = {slot: store[name] for slot, store in self.state.items() if name in store}
                    self._update(param, grads[name], state, coefficients)
                elif name in part.spans:
                    span = part.spans[name]
                    state = {slot: part_of(store[name], span) for slot, store in self.state.items() if name in store}
                    self._update(part_of(param, span), grads[name], state, coefficients)

    def _next_coefficients(self) -> list[float]:
        """The coefficients of this step's update (see `_coefficients`); counts the step."""
        cycled = self.schedule.momentum(self.steps)
        if cycled is not None:
            self._set_momentum(cycled)
        values = self._coefficients(self.current_lr)
        self.steps += 1
        return values

    def _coefficients(self, lr: float) -> list[float]:
        """The numbers `_update` uses in this step, in its order."""
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zeros (backward overwrites them: only a step
        taken without a backward needs it)."""
        for _, layer in self.model.named_layers():
            layer.grads = {k: array_namespace(p).zeros_like(p) for k, p in layer.params.items()}

    def _set_momentum(self, value: float) -> None:
        """Take the momentum (Adam: beta1) a cycling schedule gives for this step."""
        raise ValueError(f"{type(self).__name__} has no momentum for the schedule to cycle")

    def _follow_model(self) -> None:
        """Move state arrays to where their parameters are now: after `model.to(...)`
        (another backend, device or dtype) the momenta follow instead of mixing."""
        params = self.model.params
        for store in self.state.values():
            for name, value in store.items():
                param = params[name]
                if type(value) is not type(param) or value.dtype != param.dtype or device(value) != device(param):
                    store[name] = backend.to_backend(value, backend.backend_of(param), device(param),
                                                     backend.dtype_name(param.dtype))

    def _slots_used(self) -> tuple[str, ...]:
        """The state this optimizer keeps with its settings (all of `slots` by default)."""
        return self.slots

    def make_state(self) -> None:
        """Make the state ready for the next step, which does it otherwise: moved to where
        the parameters are (after `model.to(...)`), zeros for each parameter that has
        none yet. Optimizers that share their state (worker threads, see
        distributed.Threads) need it done before they start: none of them then changes
        which arrays the state holds while another reads it."""
        self._follow_model()
        params = self.model.params
        for slot in self._slots_used():
            store = self.state[slot]
            for name, param in params.items():
                if name not in store:
                    store[name] = array_namespace(param).zeros_like(param)

    def _update(self, param: Any, grad: Any, state: dict[str, Any], coefficients: list[Any]) -> None:
        """Update `param` and its `state` (slot -> array) in place; `coefficients` are
        `_coefficients(lr)`, placed like the parameters (0-d arrays; NumPy scalars on NumPy)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The settings, JSON-ready: `Optimizer.from_config(model, config())` rebuilds it."""
        return {
            "type": type(self).__name__,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule.config(),
        }

    def check_rebuildable(self) -> None:
        """ValueError where `from_config(model, config())` would not give this optimizer and
        its schedule back, as a checkpoint of a resumed run rebuilds them: a class of one's
        own is saved as the built-in it derives from, and would be resumed as that."""
        if OPTIMIZERS.get(type(self).__name__.lower()) is not type(self):
            raise ValueError(f"the optimizer {type(self).__name__} is none a checkpoint can rebuild "
                             f"({', '.join(cls.__name__ for cls in OPTIMIZERS.values())}): no checkpoint of it could "
                             "be loaded; use one of those, or save none (a Trainer without run_dir)")
        kind = self.schedule.config().get("type")
        if SCHEDULES.get(kind) is not type(self.schedule):
            raise ValueError(f"the learning-rate schedule {type(self.schedule).__name__} would be saved as {kind!r} "
                             f"({', '.join(cls.__name__ for cls in SCHEDULES.values())} can be saved): a resumed run "
                             "would follow another; use one of those, or save no checkpoint (a Trainer without "
                             "run_dir)")

    @classmethod
    def from_config(cls, model: Sequential, config: dict[str, Any]) -> Optimizer:
        """A fresh optimizer (no state, step 0) for `model` from `config()` output."""
        settings = dict(config)
        kind = _known(OPTIMIZERS, str(settings.pop("type", "")).lower(), "optimizer")
        schedule = schedule_from_config(settings.pop("schedule", {"type": "constant"}))
        return kind(model, schedule=schedule, **settings)

    def state_arrays(self) -> dict[str, Any]:
        """Per-parameter state as "slot/param" -> array (for checkpoints), placed like the
        parameters."""
        self._follow_model()
        return {f"{slot}/{name}": value for slot, store in self.state.items() for name, value in store.items()}

    def load_state_arrays(self, arrays: dict[str, Any], steps: int) -> None:
        """Restore `state_arrays()` output (already on the model's backend) and the step count;
        ValueError for an array it does not keep, or after a step, one missing."""
        params = self.model.params
        state: dict[str, dict[str, Any]] = {slot: {} for slot in self.slots}
        for key, value in arrays.items():
            slot, _, name = key.partition("/")
            if slot not in state or name not in params:
                raise ValueError(f"{type(self).__name__}: unexpected state {key!r}")
            if tuple(value.shape) != tuple(params[name].shape) or value.dtype != params[name].dtype:
                raise ValueError(
                    f"{type(self).__name__}: state {key!r} is {tuple(value.shape)} {value.dtype}, "
                    f"parameter is {tuple(params[name].shape)} {params[name].dtype}"
                )
            state[slot][name] = value
        missing = [f"{slot}/{name}" for slot in self._slots_used() for name in params if name not in state[slot]]
        if steps and missing:  # a step makes every state array its settings use (make_state)
            raise ValueError(f"{type(self).__name__}: {steps} steps taken, but no state {missing[0]}"
                             + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else "")
                             + "; every step keeps it for every parameter")
        self.state, self.steps = state, steps


class SGD(Optimizer):
    """p -= lr * (g + wd p), with optional (Nesterov) momentum as in torch.optim.SGD."""

    slots = ("momentum",)

    def __init__(self, model: Sequential, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, schedule: Schedule | None = None) -> None:
        super().__init__(model, lr, weight_decay, schedule)
        momentum = number(momentum, "SGD momentum", 0.0, 1.0, high_included=False)
        nesterov = flag(nesterov, "SGD nesterov")
        if nesterov and momentum == 0.0:
            raise ValueError("SGD with nesterov needs momentum > 0, got 0")
        self.momentum, self.nesterov = momentum, nesterov

    def _set_momentum(self, value: float) -> None:
        self.momentum = value

    def _coefficients(self, lr: float) -> list[float]:
        on = 1.0 if self.momentum else 0.0
        return [lr, self.weight_decay, self.momentum or 1.0, on]

    def _slots_used(self) -> tuple[str, ...]:
        return self.slots if self.momentum or self.schedule.momentum(0) is not None else ()

    def _update(self, param: Any, grad: Any, state: dict[str, Any], coefficients: list[Any]) -> None:
        lr, weight_decay, momentum, on = coefficients
        if self.weight_decay:
            grad = grad + weight_decay * param
        if self.schedule.momentum(0) is not None:
            # A cycled momentum may reach 0 at a step, where PyTorch leaves the velocity
            # alone and steps along the gradient: gated by `on` (then momentum is 1), so
            # that a recorded step (xpcnn.capture) does the same with the same kernels.
            velocity = state["momentum"]
            velocity *= momentum
            velocity += on * grad
            direction = grad + momentum * velocity if self.nesterov else velocity
            grad = on * direction + (1 - on) * grad
        elif self.momentum:
            velocity = state["momentum"]
            velocity *= momentum
            velocity += grad
            grad = grad + momentum * velocity if self.nesterov else velocity
        param -= lr * grad

    def config(self) -> dict[str, Any]:
        return {**super().config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (torch.optim.Adam): weight decay is added to the gradient (L2)."""

    slots = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, model: Sequential, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, schedule: Schedule | None = None) -> None:
        super().__init__(model, lr, weight_decay, schedule)
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{name} betas must be a pair of numbers, got {betas!r}")
        betas = tuple(number(b, f"{name} betas", 0.0, 1.0, high_included=False) for b in betas)
        self.betas, self.eps = betas, number(eps, f"{name} eps", 0.0, math.inf, low_included=False)

    def _set_momentum(self, value: float) -> None:
        self.betas = (value, self.betas[1])

    def _coefficients(self, lr: float) -> list[float]:
        (beta1, beta2), t = self.betas, self.steps + 1
        return [beta1, 1 - beta1, beta2, 1 - beta2, math.sqrt(1 - beta2**t), lr / (1 - beta1**t), self.eps,
                self.weight_decay, 1 - lr * self.weight_decay]

    def _update(self, param: Any, grad: Any, state: dict[str, Any], coefficients: list[Any]) -> None:
        decay = ("decoupled" if self.decoupled else "l2") if self.weight_decay else None
        update = backend.fast_path(adam_update, param)
        update(param, grad, state["exp_avg"], state["exp_avg_sq"], coefficients, decay)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "betas": list(self.betas), "eps": self.eps}


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): weight decay shrinks the weights directly (decoupled)."""

    decoupled = True

    def __init__(self, model: Sequential, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, schedule: Schedule | None = None) -> None:
        super().__init__(model, lr, betas, eps, weight_decay, schedule)


def adam_update(param: Any, grad: Any, m: Any, v: Any, coefficients: list[Any], decay: str | None) -> None:
    """One Adam step of `param` and its moments m, v, in place; `coefficients` are
    Adam._coefficients(lr). decay: "l2" adds weight_decay * param to the gradient (Adam),
    "decoupled" shrinks param by 1 - lr * weight_decay first (AdamW), None neither."""
    xp = array_namespace(param)
    beta1, rest1, beta2, rest2, correction2, step_size, eps, rate, shrink = coefficients
    if decay == "decoupled":
        param *= shrink
    elif decay == "l2":
        grad = grad + rate * param
    m *= beta1
    m += rest1 * grad
    v *= beta2
    v += rest2 * (grad * grad)
    denominator = xp.sqrt(v)  # / correction2 + eps, in place: fewer temporary arrays
    denominator /= correction2
    denominator += eps
    update = m / denominator
    update *= step_size
    param -= update


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def build(name: str, model: Sequential, lr: float, *, momentum: float = 0.0, weight_decay: float = 0.0,
          schedule: Schedule | None = None, betas: tuple[float, float] | None = None,
          nesterov: bool = False) -> Optimizer:
    """Optimizer `name` ("sgd", "adam", "adamw") for `model`; `momentum` and `nesterov`
    are SGD's only, `betas` Adam's and AdamW's."""
    _known(OPTIMIZERS, name, "optimizer")
    if name == "sgd":
        if betas is not None:
            raise ValueError("betas apply to adam and adamw, not sgd")
        return SGD(model, lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, schedule=schedule)
    if momentum or nesterov:
        raise ValueError(f"{'momentum' if momentum else 'nesterov'} applies to sgd only, not {name}")
    extra = {} if betas is None else {"betas": betas}
    return OPTIMIZERS[name](model, lr, weight_decay=weight_decay, schedule=schedule, **extra)
