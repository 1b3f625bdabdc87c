"""Optimizers: `SGD` and `Adam`, each step exactly PyTorch's update rule.

After `loss.backward()`, `opt.step()` changes every parameter's `.data` in place from its
`.grad` (parameters whose grad is None are skipped), and `opt.zero_grad()` resets the grads to
None. State is per parameter and follows `torch.optim`'s names and layout:

    {"state": {0: {"step": 3, "exp_avg": ndarray, "exp_avg_sq": ndarray}, ...},
     "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), ..., "params": [0, 1, ...]}]}

which `mg.save`/`mg.load` round-trip, so a run can be checkpointed and resumed exactly.

The step writes into the parameters' arrays, so it needs them writeable: the engine makes the
arrays a tape saved read-only until `backward()` frees that tape. A step while a graph still
holds a parameter (after `backward(retain_graph=True)`, after a forward pass that was never
backpropagated, or while a gradient from `mg.grad` at the parameter itself is alive, since such
a gradient is on the tape) raises RuntimeError before changing anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from minigrad import Tensor, enable_grad
from minigrad.tensor import locked_by_a_graph

__all__ = ["SGD", "Adam", "Optimizer"]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


class Optimizer:
    """Base class: parameter groups, per-parameter state, zero_grad and state_dict.

    `params` is an iterable of Tensors, or of dicts `{"params": [...], "lr": ..., ...}` (parameter
    groups with their own hyperparameters, as in PyTorch); `defaults` fills in the rest.
    Subclasses implement `_update(p, grad, state, group)`.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        items: list[Any] = list(params) if not isinstance(params, Tensor) else [params]
        if not items:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = items if isinstance(items[0], dict) else [{"params": items}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group of parameters (a dict with "params") with its own hyperparameters."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{type(self).__name__}: a parameter group is a dict with a "
                            f"'params' entry, got {type(group).__name__}")
        ps = group["params"]
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(ps):
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {i} is a "
                                f"{type(p).__name__}, not a Tensor")
            if not p.is_leaf:
                raise ValueError(f"{type(self).__name__}: parameter {i} (shape {p.shape}) is "
                                 f"not a leaf Tensor; optimize the leaves it was computed from")
            if not p.requires_grad:
                raise ValueError(f"{type(self).__name__}: parameter {i} (shape {p.shape}) "
                                 f"does not require grad")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: parameter {i} (shape {p.shape}) "
                                 f"appears twice; each parameter may be in one group once")
            seen.add(id(p))
        full = {**self.defaults, **group, "params": ps}
        self._check_hyperparameters(full)
        self.param_groups.append(full)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        # Python floats: NumPy scalars would be "strong" types and could promote float32 math.
        for key in ("lr", "weight_decay", "momentum", "eps", "dampening"):
            if key in group:
                value = float(group[key])
                if not value >= 0.0:
                    raise ValueError(f"{type(self).__name__}: {key} must be >= 0, "
                                     f"got {group[key]}")
                group[key] = value

    # -- the step ----------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient to None (or to zeros with `set_to_none=False`)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad = np.zeros_like(p.grad)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a grad, in place. With `closure` (a function that
        recomputes and backpropagates the loss) the closure runs first and its loss is returned.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        work = [(p, group) for group in self.param_groups for p in group["params"]
                if p.grad is not None]
        for p, _ in work:  # check them all before changing anything
            if not p.data.flags.writeable and not locked_by_a_graph(p.data):
                raise RuntimeError(
                    f"{type(self).__name__}.step: the array of a parameter of shape {p.shape} "
                    f"is read-only, so it cannot be updated in place, and no live graph holds "
                    f"it: it is an op's output (those stay read-only) or was read-only to begin "
                    f"with. Give the parameter its own copy, e.g. p.data = np.array(p.data). "
                    f"Nothing was changed.")
            if not p.data.flags.writeable:
                raise RuntimeError(
                    f"{type(self).__name__}.step: the array of a parameter of shape {p.shape} "
                    f"is read-only, so it cannot be updated in place. A live graph still uses "
                    f"it: a forward pass whose backward() was never run, "
                    f"backward(retain_graph=True), or a result of mg.grad/mg.vjp taken at a "
                    f"Tensor that requires grad (such results stay on the tape). Run backward() "
                    f"without retain_graph (or drop that graph, e.g. `del out`) before step(). "
                    f"Nothing was changed. "
                    f"(If the Tensor was made from a read-only array, give it a writeable "
                    f"copy.)")
        for p, group in work:
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {}
            self._update(p.data, p.grad, state, group)  # type: ignore[arg-type]
        return loss

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{"state": {index: {name: value}}, "param_groups": [{hyperparameters, "params":
        [indices]}]}: PyTorch's layout, parameters numbered across groups; arrays are copies."""
        index: dict[Tensor, int] = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index[p] = len(index)
                ids.append(index[p])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[p]: {k: v.copy() if isinstance(v, np.ndarray) else v
                            for k, v in s.items()}
                 for p, s in self.state.items() if p in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and per-parameter state from `state_dict()`'s output (also
        after `mg.save`/`mg.load`). Raises RuntimeError, before changing anything, when the
        groups, the parameter counts or the state's shapes do not fit this optimizer."""
        name = type(self).__name__
        try:
            groups = list(state_dict["param_groups"])
            saved_state = dict(state_dict["state"])
        except (KeyError, TypeError):
            raise RuntimeError(f"{name}.load_state_dict: expected a dict with 'state' and "
                               f"'param_groups', as made by state_dict()") from None
        if len(groups) != len(self.param_groups):
            raise RuntimeError(f"{name}.load_state_dict: the state dict has {len(groups)} "
                               f"parameter group(s), this optimizer {len(self.param_groups)}")
        problems = []
        params: dict[int, Tensor] = {}
        for gi, (saved, group) in enumerate(zip(groups, self.param_groups)):
            ids = list(saved.get("params", ()))
            if len(ids) != len(group["params"]):
                problems.append(f"group {gi} has {len(ids)} parameters in the state dict, "
                                f"{len(group['params'])} here")
                continue
            params.update({int(i): p for i, p in zip(ids, group["params"])})
        if problems:  # the numbering is meaningless then: stop before the state
            raise RuntimeError(f"{name}.load_state_dict: the state dict does not fit: "
                               + "; ".join(problems))
        new_state: dict[Tensor, dict[str, Any]] = {}
        for key, s in saved_state.items():
            p = params.get(int(key)) if str(key).lstrip("-").isdigit() else None
            if p is None:
                problems.append(f"state for parameter {key!r}, which no group lists")
                continue
            entry: dict[str, Any] = {}
            for k, v in s.items():
                if k == "step":  # an int here; PyTorch keeps a 0-d float tensor
                    entry[k] = int(np.asarray(v).item())
                elif isinstance(v, (np.ndarray, Tensor)) or np.ndim(v) > 0:
                    arr = np.asarray(v)
                    if arr.shape != p.shape:
                        problems.append(f"parameter {key}: {k} has shape {arr.shape}, the "
                                        f"parameter {p.shape}")
                        continue
                    entry[k] = np.array(arr, dtype=p.dtype, copy=True)
                else:
                    entry[k] = v
            new_state[p] = entry
        if problems:
            raise RuntimeError(f"{name}.load_state_dict: the state dict does not fit: "
                               + "; ".join(problems))
        for saved, group in zip(groups, self.param_groups):
            for k, v in saved.items():
                if k != "params":
                    group[k] = tuple(v) if isinstance(v, list) and k == "betas" else v
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            hp = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} params, {hp}")
        return "\n".join(lines) + "\n)"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, PyTorch's update:

    g ← ∇ + λ·w;   b ← g (first step), then b ← μ·b + (1 − τ)·g;   g ← b (or g + μ·b with
    nesterov);   w ← w − lr·g.      (λ weight_decay, μ momentum, τ dampening)
    """

    def __init__(self, params: ParamsT, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, *, dampening: float = 0.0,
                 nesterov: bool = False) -> None:
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0")
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov})

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        wd, mu = group["weight_decay"], group["momentum"]
        if wd:
            g = g + wd * w
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, copy=True)
            else:
                buf *= mu
                buf += (1 - group["dampening"]) * g
            g = g + mu * buf if group["nesterov"] else buf
        w -= group["lr"] * g


class Adam(Optimizer):
    """Adam (Kingma & Ba), bias-corrected, exactly `torch.optim.Adam`'s update:

    g ← ∇ + λ·w;  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  t ← t + 1;
    w ← w − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε).      (λ weight_decay, L2 added to the grad)
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"Adam: betas must lie in [0, 1), got {tuple(betas)}")
        super().__init__(params, {"lr": lr, "betas": (float(b1), float(b2)), "eps": eps,
                                  "weight_decay": weight_decay})

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        b1, b2 = group["betas"]
        wd = group["weight_decay"]
        if wd:
            g = g + wd * w
        m = state.get("exp_avg")
        if m is None:
            state["step"] = 0
            m = state["exp_avg"] = np.zeros_like(w)
            state["exp_avg_sq"] = np.zeros_like(w)
        v = state["exp_avg_sq"]
        t = state["step"] = state["step"] + 1
        m += (1 - b1) * (g - m)  # torch's lerp: m + (1 − β₁)(g − m) = β₁m + (1 − β₁)g
        v *= b2
        v += (1 - b2) * (g * g)
        denom = np.sqrt(v)
        denom /= math.sqrt(1 - b2 ** t)
        denom += group["eps"]
        w -= (group["lr"] / (1 - b1 ** t)) * (m / denom)
