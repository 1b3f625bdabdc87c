"""Learning-rate schedules: `LambdaLR`, `StepLR`, `ExponentialLR`, `CosineAnnealingLR` and
`LinearLR`, each giving exactly `torch.optim.lr_scheduler`'s sequence of learning rates.

A scheduler sets each parameter group's "lr". Making one is epoch 0: it records each group's
starting lr as the group's "initial_lr" (kept when already there, so several schedulers share it)
and sets the epoch-0 lr. Each `sched.step()`, called after `opt.step()`, advances one epoch;
`sched.get_last_lr()` lists the lr it set for each group. As in PyTorch, every schedule but
LambdaLR computes the next lr from the group's current one, so two schedulers stepping one
optimizer multiply their effects, and a change made to `group["lr"]` carries on.

Resuming: `last_epoch=k` needs "initial_lr" in every group (load the optimizer's state dict
first) and, as in PyTorch, the constructor still takes its step, to epoch k + 1; or make the
scheduler as usual and `load_state_dict` what `state_dict()` gave. The state dict holds PyTorch's
keys: "last_epoch", "base_lrs", "_last_lr" and the schedule's arguments (LambdaLR's functions
are code, not state: only a callable object's attributes are saved, as PyTorch does).
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from minigrad.optim.optimizers import Optimizer, _nonnegative, _real, _show

__all__ = ["CosineAnnealingLR", "ExponentialLR", "LRScheduler", "LambdaLR", "LinearLR",
           "StepLR"]

Rule = Callable[[str, Any], Any]


def _whole(minimum: int) -> Rule:
    """A rule for a whole number >= minimum, kept as an int (bools are not numbers here)."""
    def check(key: str, value: Any) -> int:
        x = _real(value)
        if x is None:
            raise TypeError(f"{key} must be a whole number, got {_show(value)}")
        if not (math.isfinite(x) and x == int(x)):
            raise ValueError(f"{key} must be a whole number, got {value!r}")
        if x < minimum:
            raise ValueError(f"{key} must be >= {minimum}, got {value!r}")
        return int(x)
    return check


def _factor(low_open: bool) -> Rule:
    """A rule for a number in (0, 1] (low_open) or [0, 1], kept as a float."""
    def check(key: str, value: Any) -> float:
        x = _real(value)
        if x is None:
            raise TypeError(f"{key} must be a real number, got {_show(value)}")
        if not (0.0 < x <= 1.0 if low_open else 0.0 <= x <= 1.0):
            raise ValueError(f"{key} must lie in {'(' if low_open else '['}0, 1], got {value!r}")
        return x
    return check


def _learning_rates(key: str, value: Any, count: int) -> list[float]:
    """One learning rate (a finite number >= 0) per parameter group, as a list of floats."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != count:
        raise ValueError(f"{key} must be a list of {count} learning rate(s), one per parameter "
                         f"group, got {_show(value)}")
    return [_nonnegative(f"{key}[{i}]", v) for i, v in enumerate(value)]


class LRScheduler:
    """Base class: the epoch count, the groups' starting lrs, step(), get_last_lr() and the
    state dict. Subclasses set their arguments with `_set_arguments` (checked by the rules in
    `_arguments`) and implement `_lrs(epoch, initial)`: each group's lr at `epoch`, given the
    groups' current lrs; `initial` is the constructor's own step."""

    _arguments: ClassVar[dict[str, Rule]] = {}

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: expected a minigrad optimizer, got {_show(optimizer)}")
        last_epoch = self._checked("last_epoch", last_epoch, _whole(-1))
        groups = optimizer.param_groups
        missing = [i for i, group in enumerate(groups) if "initial_lr" not in group]
        if last_epoch != -1 and missing:
            raise ValueError(
                f"{name}: last_epoch={last_epoch} resumes a schedule, but param_groups "
                f"{missing} have no 'initial_lr'; load the optimizer's state dict saved with "
                f"the schedule first, or start the schedule with last_epoch=-1")
        self.optimizer = optimizer
        self.base_lrs = [self._checked(f"param_groups[{i}]['initial_lr']",
                                       group.get("initial_lr", group["lr"]), _nonnegative)
                         for i, group in enumerate(groups)]
        self.last_epoch = last_epoch
        self._last_lr: list[float] = []
        self._advance(initial=True)  # checks the first lrs before the groups change
        for group, base in zip(groups, self.base_lrs):
            group.setdefault("initial_lr", base)

    def _checked(self, key: str, value: Any, rule: Rule) -> Any:
        try:
            return rule(key, value)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{type(self).__name__}: {e}") from None

    def _set_arguments(self, **arguments: Any) -> None:
        for key, value in arguments.items():
            setattr(self, key, self._checked(key, value, self._arguments[key]))

    def _lrs(self, epoch: int, initial: bool) -> list[float]:
        raise NotImplementedError

    def _current(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self) -> None:
        """Advance one epoch and set each group's lr (call it after `opt.step()`)."""
        self._advance(initial=False)

    def _advance(self, initial: bool) -> None:
        name = type(self).__name__
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_lrs):
            raise ValueError(f"{name}: the optimizer has {len(groups)} parameter group(s), this "
                             f"scheduler was made for {len(self.base_lrs)}; make a new "
                             f"scheduler after add_param_group")
        epoch = self.last_epoch + 1
        lrs = [self._checked(f"the learning rate of param_groups[{i}] at epoch {epoch}", lr,
                             _nonnegative) for i, lr in enumerate(self._lrs(epoch, initial))]
        for group, lr in zip(groups, lrs):
            group["lr"] = lr
        self.last_epoch = epoch
        self._last_lr = lrs

    def get_last_lr(self) -> list[float]:
        """The lr this scheduler last set, one per parameter group."""
        return list(self._last_lr)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{"last_epoch", "base_lrs", "_last_lr", and the schedule's arguments}: PyTorch's keys
        (without the optimizer, whose state dict is saved on its own)."""
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs),
                "_last_lr": list(self._last_lr),
                **{key: getattr(self, key) for key in self._arguments}}

    def _state_rules(self) -> dict[str, Rule]:
        count = len(self.base_lrs)
        lrs: Rule = lambda key, value: _learning_rates(key, value, count)
        return {"last_epoch": _whole(-1), "base_lrs": lrs, "_last_lr": lrs, **self._arguments}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the schedule from `state_dict()`'s output (also after `mg.save`/`mg.load`).
        Every key and value is checked first (the arguments as the constructor checks them);
        any problem raises ValueError naming each key, and the scheduler is left unchanged."""
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"{where}: expected a dict as made by state_dict(), got "
                             f"{_show(state_dict)}")
        rules = self._state_rules()
        problems = [f"{key!r} is missing" for key in rules if key not in state_dict]
        problems += [f"{key!r}: not part of a {type(self).__name__}'s state"
                     for key in state_dict if key not in rules]
        new = {}
        for key, rule in rules.items():
            if key in state_dict:
                try:
                    new[key] = rule(key, state_dict[key])
                except (TypeError, ValueError) as e:
                    problems.append(str(e))
        if problems:
            raise ValueError(f"{where}: the state dict does not fit:\n  " + "\n  ".join(problems))
        self._restore(new)

    def _restore(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            setattr(self, key, value)


class LambdaLR(LRScheduler):
    """lr = initial_lr · lr_lambda(epoch): one function of the epoch for every group, or a list
    of them, one per group."""

    def __init__(self, optimizer: Optimizer,
                 lr_lambda: Callable[[int], float] | list[Callable[[int], float]]
                 | tuple[Callable[[int], float], ...],
                 last_epoch: int = -1) -> None:
        count = len(getattr(optimizer, "param_groups", ()))
        if isinstance(lr_lambda, (list, tuple)):
            fns = list(lr_lambda)
        else:
            fns = [lr_lambda] * count
        if len(fns) != count:
            raise ValueError(f"LambdaLR: got {len(fns)} lr_lambda functions for {count} "
                             f"parameter group(s); give one, or one per group")
        for i, fn in enumerate(fns):
            if not callable(fn):
                raise TypeError(f"LambdaLR: lr_lambda[{i}] must be a function of the epoch, got "
                                f"{_show(fn)}")
        self.lr_lambdas = fns
        super().__init__(optimizer, last_epoch)

    def _lrs(self, epoch: int, initial: bool) -> list[float]:
        out = []
        for i, (fn, base) in enumerate(zip(self.lr_lambdas, self.base_lrs)):
            factor = fn(epoch)
            x = _real(factor)
            if x is None:
                raise TypeError(f"LambdaLR: lr_lambda[{i}]({epoch}) returned {_show(factor)}; it "
                                f"must return a real number, the factor on the initial lr")
            out.append(base * x)
        return out

    def state_dict(self) -> dict[str, Any]:
        """As the base class's, plus "lr_lambdas": None for a function, a copy of the attributes
        of a callable object (PyTorch's layout)."""
        return {**super().state_dict(),
                "lr_lambdas": [None if _is_function(fn) else dict(vars(fn))
                               for fn in self.lr_lambdas]}

    def _state_rules(self) -> dict[str, Rule]:
        fns = self.lr_lambdas

        def lambdas(key: str, value: Any) -> list[Any]:
            if (not isinstance(value, Sequence) or isinstance(value, str)
                    or len(value) != len(fns)
                    or not all(v is None or isinstance(v, Mapping) for v in value)):
                raise ValueError(f"{key} must be a list of {len(fns)} entries, each None or a "
                                 f"dict of a callable object's attributes, got {_show(value)}")
            for i, (fn, v) in enumerate(zip(fns, value)):
                if v is not None and _is_function(fn):
                    raise ValueError(f"{key}[{i}] holds a callable object's attributes, but "
                                     f"lr_lambda[{i}] is {_show(fn)}, which keeps none")
            return list(value)

        return {**super()._state_rules(), "lr_lambdas": lambdas}

    def _restore(self, values: dict[str, Any]) -> None:
        saved = values.pop("lr_lambdas")
        super()._restore(values)
        for fn, attributes in zip(self.lr_lambdas, saved):
            if attributes is not None:
                vars(fn).update(attributes)


def _is_function(fn: Any) -> bool:
    """A function or method (code, not state), or a callable without attributes of its own."""
    return isinstance(fn, (types.FunctionType, types.MethodType)) or not hasattr(fn, "__dict__")


class StepLR(LRScheduler):
    """lr ← lr·γ every `step_size` epochs: initial_lr · γ^⌊epoch / step_size⌋."""

    _arguments: ClassVar[dict[str, Rule]] = {"step_size": _whole(1), "gamma": _nonnegative}
    step_size: int
    gamma: float

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self._set_arguments(step_size=step_size, gamma=gamma)
        super().__init__(optimizer, last_epoch)

    def _lrs(self, epoch: int, initial: bool) -> list[float]:
        if epoch == 0 or epoch % self.step_size:
            return self._current()
        return [lr * self.gamma for lr in self._current()]


class ExponentialLR(LRScheduler):
    """lr ← lr·γ every epoch: initial_lr · γ^epoch."""

    _arguments: ClassVar[dict[str, Rule]] = {"gamma": _nonnegative}
    gamma: float

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self._set_arguments(gamma=gamma)
        super().__init__(optimizer, last_epoch)

    def _lrs(self, epoch: int, initial: bool) -> list[float]:
        if initial:
            return self._current()
        return [lr * self.gamma for lr in self._current()]


class CosineAnnealingLR(LRScheduler):
    """lr = η_min + (initial_lr − η_min)·(1 + cos(π·epoch / T_max)) / 2, computed as PyTorch
    does, from the previous epoch's lr; past T_max it rises again (a period of 2·T_max)."""

    _arguments: ClassVar[dict[str, Rule]] = {"T_max": _whole(1), "eta_min": _nonnegative}
    T_max: int
    eta_min: float

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,  # noqa: N803
                 last_epoch: int = -1) -> None:
        self._set_arguments(T_max=T_max, eta_min=eta_min)
        super().__init__(optimizer, last_epoch)

    def _lrs(self, epoch: int, initial: bool) -> list[float]:
        current = self._current()
        if initial:
            return current
        t, low = self.T_max, self.eta_min
        if (epoch - 1 - t) % (2 * t) == 0:
            # the trough, where the ratio below would divide by 1 + cos(π) = 0
            return [lr + (base - low) * (1 - math.cos(math.pi / t)) / 2
                    for lr, base in zip(current, self.base_lrs)]
        ratio = (1 + math.cos(math.pi * epoch / t)) / (1 + math.cos(math.pi * (epoch - 1) / t))
        return [ratio * (lr - low) + low for lr in current]


class LinearLR(LRScheduler):
    """lr = initial_lr · (s + (e − s)·min(epoch, total_iters) / total_iters): from
    start_factor s to end_factor e over total_iters epochs, computed as PyTorch does, from the
    previous epoch's lr."""

    _arguments: ClassVar[dict[str, Rule]] = {
        "start_factor": _factor(low_open=True), "end_factor": _factor(low_open=False),
        "total_iters": _whole(1)}
    start_factor: float
    end_factor: float
    total_iters: int

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1) -> None:
        self._set_arguments(start_factor=start_factor, end_factor=end_factor,
                            total_iters=total_iters)
        super().__init__(optimizer, last_epoch)

    def _lrs(self, epoch: int, initial: bool) -> list[float]:
        current = self._current()
        s, e, n = self.start_factor, self.end_factor, self.total_iters
        if epoch == 0:
            return [lr * s for lr in current]
        if initial or epoch > n:
            return current
        # factor(epoch) / factor(epoch − 1), with factor(k) = s + (e − s)·k / n
        return [lr * (1.0 + (e - s) / (n * s + (epoch - 1) * (e - s))) for lr in current]
