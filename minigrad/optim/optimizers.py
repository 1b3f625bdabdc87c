"""Optimizers: `SGD`, `Adam`, `AdamW` and `RMSprop`, each step exactly PyTorch's update rule.

After `loss.backward()`, `opt.step()` changes each parameter's `.data` in place from its `.grad`,
and `opt.zero_grad()` resets the grads to None. A parameter is skipped while its grad is None or
it is frozen (`requires_grad=False`), so an optimizer may be given frozen parameters and trains
them once they are unfrozen. State is per parameter and follows `torch.optim`'s names and
layout:

    {"state": {0: {"step": 3, "exp_avg": ndarray, "exp_avg_sq": ndarray}, ...},
     "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), ..., "params": [0, 1, ...]}]}

which `mg.save`/`mg.load` round-trip, so a run can be checkpointed and resumed exactly. The
constructors check every hyperparameter, and `load_state_dict` checks everything it is given
before changing anything, so a bad value fails where it enters, naming its key, never at a later
step.

A step costs a few whole-buffer NumPy calls per group, however many parameters it has, and two
per parameter, to gather its gradient and to change its array (PyTorch's `foreach` idea): the
parameters of a group that share a dtype (and a step count) keep each kind of state in one flat
buffer, of which each parameter's state entry is a view; their gradients are gathered into one
flat array, the update is computed there, and each parameter's own array is changed in place by
its slice of it. The arithmetic is `_update`'s: each operation rounds as its counterpart there
(the hyperparameters are rounded to the buffers' dtype as NumPy rounds a Python float operand),
so both give the same bits. The buffers are
remade (the entries becoming new views, with the same values) when the set of parameters being
stepped, their arrays' shapes or dtypes, or the state entries themselves were changed between
steps. What the flat update would not round exactly as `_update` does (gradients that are not
plain arrays of their parameter's shape and dtype, arrays sharing memory, NumPy scalars as
hyperparameters) is stepped parameter by parameter, as is everything in plain mode
(`MINIGRAD_KERNELS=plain`). A training loop's step, one group with nothing changed since the
step before, checks all of that and gathers the gradients in one pass (`_Plan.ready`).
"""

from __future__ import annotations

import itertools
import math
import operator
import reprlib
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from minigrad import kernels
from minigrad.modes import THREAD, enable_grad
from minigrad.readonly import locked_by_a_graph
from minigrad.tensor import Tensor

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop"]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]

# What a learning-rate scheduler records in a group (its starting lr); a saved group may carry it
# into an optimizer that no scheduler has touched yet.
_SCHEDULE_KEYS = ("initial_lr",)


class Optimizer:
    """Base class: parameter groups, per-parameter state, zero_grad and state_dict.

    `params` is an iterable of Tensors, or of dicts `{"params": [...], "lr": ..., ...}` (parameter
    groups with their own hyperparameters, as in PyTorch); `defaults` fills in the rest.
    Subclasses implement `_update(p, grad, state, group)` and may declare `_state_spec`, the
    state they keep per parameter: {name: "count" (a whole number >= 0), "array" (an array of
    the parameter's shape) or "array or None"}; `load_state_dict` holds entries to it, and to
    `_state_keys(group)`, the entries a state must have under the group's hyperparameters.

    A subclass that also implements `_flat_update` (the same update on a `_Bucket`'s flat
    buffers) and `_flat_kinds` is stepped through them; one that overrides `_update` alone is
    stepped parameter by parameter.
    """

    _state_spec: ClassVar[dict[str, str] | None] = None
    # The flat update: does each state carry a step count (a bucket's parameters share one),
    # and is a missing state array made from the first gradient (SGD's momentum) rather than
    # zeros?
    _counts_steps: ClassVar[bool] = False
    _copies_first: ClassVar[bool] = False

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        self._plans: dict[int, _Plan] = {}  # id(group) -> how it is stepped flat
        cls = type(self)
        self._flat = _owner(cls, "_update") is _owner(cls, "_flat_update")
        items: list[Any] = list(params) if not isinstance(params, Tensor) else [params]
        if not items:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = items if isinstance(items[0], dict) else [{"params": items}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group of parameters (a dict with "params") with its own hyperparameters.
        Parameters must be leaf Tensors; frozen ones are accepted (skipped while frozen)."""
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: a parameter group is a dict with a 'params' entry, got "
                            f"{type(group).__name__}")
        ps = group["params"]
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(ps):
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: parameter {i} is a {type(p).__name__}, not a Tensor")
            if not p.is_leaf:
                raise ValueError(f"{name}: parameter {i} (shape {p.shape}) is not a leaf "
                                 f"Tensor; optimize the leaves it was computed from")
            if id(p) in seen:
                raise ValueError(f"{name}: parameter {i} (shape {p.shape}) appears twice; "
                                 f"each parameter may be in one group once")
            seen.add(id(p))
        try:
            full = {k: _hyperparameter(k, v)
                    for k, v in {**self.defaults, **group}.items() if k != "params"}
            self._check_group(full)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{name}: {e}") from None
        self.param_groups.append({**full, "params": ps})

    def _check_group(self, group: dict[str, Any]) -> None:
        """Rules that tie a group's hyperparameters together (ValueError); none here."""

    def _state_keys(self, group: dict[str, Any]) -> set[str]:
        """The entries a parameter's (non-empty) state must have under `group`: all of them."""
        return set(self._state_spec or ())

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
        """Update, in place, every parameter that requires grad and has a grad. With `closure`
        (a function that recomputes and backpropagates the loss) the closure runs first and its
        loss is returned."""
        if THREAD.modes.trace is not None:
            THREAD.modes.trace.refuse("opt.step()")
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        groups = self.param_groups
        flat = self._flat and kernels.ENABLED
        if flat and self._step_as_before(groups):
            return loss
        work = [self._stepped(group) for group in groups]  # all checked before any change
        for group, (ps, datas) in zip(groups, work):
            if ps and not (flat and self._step_flat(group, ps, datas)):
                self._step_each(group, ps)
        return loss

    def _step_as_before(self, groups: list[dict[str, Any]]) -> bool:
        """The step of a loop with one group that steps the same parameters, arrays and state
        as the step before: its plan checks and gathers in one pass (`_Plan.ready`), then
        updates; False, with nothing changed, otherwise (the caller then takes the full path,
        which finds out what changed). Several groups take the full path: there a group's
        gradients are gathered after the groups before it changed, which matters when one is
        memory of an earlier group's parameter."""
        if len(groups) != 1:
            return False
        group = groups[0]
        plan = self._plans.get(id(group))
        datas = None if plan is None else plan.ready(group, self.state, self._flat_kinds(group))
        if plan is None or datas is None:
            return False
        self._run(plan, group, datas)
        return True

    def _stepped(self, group: dict[str, Any]) -> tuple[list[Tensor], list[np.ndarray]]:
        """The group's parameters that require grad and have one, and their arrays (read from
        the slots: step() is never traced); RuntimeError if one of those is read-only."""
        ps = [p for p in group["params"] if p.grad is not None and p._requires_grad]
        datas = [p._data for p in ps]
        for i, w in enumerate(datas):
            if not w.flags.writeable:
                self._refuse(ps[i])
        return ps, datas

    def _refuse(self, p: Tensor) -> None:
        why = ("a graph that is still alive saved it: run backward() first (it frees the "
               "graph) or drop the graph" if locked_by_a_graph(p.data) else
               "give the parameter a writeable copy (p.data = np.array(p.data))")
        raise RuntimeError(
            f"{type(self).__name__}.step: the array of a parameter of shape {p.shape} is "
            f"read-only, so it cannot be updated in place; {why}. Nothing was changed.")

    def _step_each(self, group: dict[str, Any], ps: list[Tensor]) -> None:
        """The update parameter by parameter, each on its own arrays."""
        for p in ps:
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {}
            self._update(p.data, p.grad, state, group)  # type: ignore[arg-type]

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- the flat step -------------------------------------------------------------------------
    def _step_flat(self, group: dict[str, Any], ps: list[Tensor], datas: list[np.ndarray]
                   ) -> bool:
        """Step ps (the group's parameters that have grads; datas their arrays) through flat
        buffers; False, with nothing changed, when the state is of a kind only `_update`
        makes (the caller then steps them one by one)."""
        kinds = self._flat_kinds(group)
        plan = self._plans.get(id(group))
        if plan is None or not plan.holds(group, ps, datas, kinds, self.state):
            plan = self._new_plan(group, ps, datas, kinds)
            if plan is None:
                self._plans.pop(id(group), None)
                return False
            self._plans[id(group)] = plan
        if not plan.take(ps, datas, group):
            self._step_each(group, ps)
            plan.stepped_each()
            return True
        self._run(plan, group, datas)
        return True

    def _run(self, plan: _Plan, group: dict[str, Any], datas: list[np.ndarray]) -> None:
        """The flat update of each bucket, on the gradients the plan gathered."""
        for b in plan.buckets:
            b.advance()
            self._flat_update(b, b.g, datas if b.index is None else
                              [datas[i] for i in b.index], group)
        plan.stepped()

    def _new_plan(self, group: dict[str, Any], ps: list[Tensor], datas: list[np.ndarray],
                  kinds: tuple[str, ...]) -> _Plan | None:
        """Buckets for ps, their state copied in (and made, where a first step makes it), or
        None when some state is not of the kinds, shapes and dtypes the flat update keeps."""
        if not isinstance(self.state, dict):
            return None
        states = []
        for p, w in zip(ps, datas):
            s = self.state.get(p)
            if s is None:
                s = self.state[p] = {}
            if not self._fits(s, w, kinds):
                return None
            states.append(s)
        keys: dict[tuple[Any, ...], list[int]] = {}
        for i, (w, s) in enumerate(zip(datas, states)):
            if self._counts_steps and not s:
                s["step"] = 0
            fresh = self._copies_first and bool(kinds) and s.get(kinds[0]) is None
            keys.setdefault((w.dtype, s.get("step"), fresh), []).append(i)
        buckets = [_Bucket(None if len(index) == len(ps) else index, [ps[i] for i in index],
                           [states[i] for i in index], [datas[i].shape for i in index],
                           dtype, kinds, step, fresh)
                   for (dtype, step, fresh), index in keys.items()]
        return _Plan(group, ps, datas, kinds, self.state, buckets, tuple(self.defaults))

    def _fits(self, s: dict[str, Any], w: np.ndarray, kinds: tuple[str, ...]) -> bool:
        """Is s a dict, empty (a first step) or holding each kind as an array of w's shape and
        dtype (SGD's momentum may still be missing) and a whole step count where one is kept?"""
        if type(s) is not dict:
            return False
        if not s:
            return True
        if self._counts_steps and type(s.get("step")) is not int:
            return False
        for k in kinds:
            v = s.get(k)
            if v is None and self._copies_first:
                continue
            if type(v) is not np.ndarray or v.shape != w.shape or v.dtype != w.dtype:
                return False
        return True

    def _flat_kinds(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state arrays the flat update keeps under the group's hyperparameters, in the
        order `_update` makes them."""
        return ()

    def _flat_update(self, b: _Bucket, g: np.ndarray, ws: list[np.ndarray],
                     group: dict[str, Any]) -> None:
        """`_update` for the bucket's parameters at once: g their gathered gradients (free to
        overwrite), ws their arrays; the step count is already advanced."""
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        # A copy's state arrays are copies, no longer views of the buffers: it makes its own.
        return {**self.__dict__, "_plans": {}}

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

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore hyperparameters and per-parameter state from `state_dict()`'s output (also
        after `mg.save`/`mg.load`, and with the state's indices as strings).

        Everything is checked first: the number of groups and of parameters in each, every
        hyperparameter (as the constructor checks it), and every state entry (its keys, whole
        numbers, arrays of the parameter's shape). Any problem raises ValueError naming each
        one by its key, and the optimizer is left unchanged."""
        where = f"{type(self).__name__}.load_state_dict"
        groups, saved_state = _parts(state_dict, where)
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{where}: the state dict has {len(groups)} parameter group(s), "
                             f"this optimizer {len(self.param_groups)}")
        problems: list[str] = []
        index = self._numbering(groups, problems)
        sound = not problems
        values = [self._loaded_group(gi, saved, problems) for gi, saved in enumerate(groups)]
        # The state is matched to parameters through the numbering, so only a sound one is used;
        # which entries it must have follows the hyperparameters being loaded with it.
        state = self._loaded_state(saved_state, index, values, problems) if sound else {}
        if problems:
            raise ValueError(f"{where}: the state dict does not fit:\n  "
                             + "\n  ".join(problems))
        for group, new in zip(self.param_groups, values):
            group.update(new)
        self.state = state
        self._plans.clear()

    def _numbering(self, groups: list[Mapping[str, Any]], problems: list[str]
                   ) -> dict[int, Tensor]:
        """{saved index: this optimizer's parameter}, group by group."""
        index: dict[int, Tensor] = {}
        for gi, (saved, group) in enumerate(zip(groups, self.param_groups)):
            ids = saved.get("params")
            if not isinstance(ids, (list, tuple)):
                problems.append(f"param_groups[{gi}]['params'] must be a list of parameter "
                                f"indices, got {_show(ids)}")
            elif len(ids) != len(group["params"]):
                problems.append(f"param_groups[{gi}] lists {len(ids)} parameters, this "
                                f"optimizer's group {gi} has {len(group['params'])}")
            else:
                for i, p in zip(ids, group["params"]):
                    k = _index(i)
                    if k is None or k in index:
                        problems.append(f"param_groups[{gi}]['params']: {i!r} is not an "
                                        f"integer index used once")
                    else:
                        index[k] = p
        return index

    def _loaded_group(self, gi: int, saved: Mapping[str, Any], problems: list[str]
                      ) -> dict[str, Any]:
        """Group gi's saved hyperparameters, checked."""
        group = self.param_groups[gi]
        new: dict[str, Any] = {}
        for key, value in saved.items():
            if key == "params":
                continue
            if key not in group and key not in _SCHEDULE_KEYS:
                problems.append(f"param_groups[{gi}][{key!r}]: not a hyperparameter of "
                                f"{type(self).__name__}")
                continue
            try:
                new[key] = _hyperparameter(key, value)
            except (TypeError, ValueError) as e:
                problems.append(f"param_groups[{gi}]: {e}")
        try:
            self._check_group({**group, **new})
        except ValueError as e:
            problems.append(f"param_groups[{gi}]: {e}")
        return new

    def _loaded_state(self, saved_state: Mapping[Any, Any], index: dict[int, Tensor],
                      values: list[dict[str, Any]], problems: list[str]
                      ) -> dict[Tensor, dict[str, Any]]:
        """{parameter: its state}, each entry checked against the group it will step with."""
        group_of = {p: {**group, **new} for group, new in zip(self.param_groups, values)
                    for p in group["params"]}
        new: dict[Tensor, dict[str, Any]] = {}
        for key, entry in saved_state.items():
            k = _index(key)
            p = index.get(k) if k is not None else None
            if p is None:
                problems.append(f"state[{key!r}]: no parameter group lists a parameter {key!r}")
            elif p in new:
                problems.append(f"state[{key!r}]: parameter {k} has state twice")
            elif not isinstance(entry, Mapping):
                problems.append(f"state[{key!r}] must be a dict, got {_show(entry)}")
            else:
                new[p] = self._loaded_entry(f"state[{key!r}]", entry, p, group_of[p], problems)
        return new

    def _loaded_entry(self, where: str, entry: Mapping[Any, Any], p: Tensor,
                      group: dict[str, Any], problems: list[str]) -> dict[str, Any]:
        spec = self._state_spec
        if spec is not None and entry:
            required = self._state_keys(group)
            if not required <= set(entry) <= set(spec):
                optional = sorted(set(spec) - required)
                problems.append(f"{where} has the keys {sorted(map(str, entry))}; "
                                f"{type(self).__name__} keeps {sorted(required)}"
                                + (f" (and may keep {optional})" if optional else ""))
                return {}
        new: dict[str, Any] = {}
        for k, v in entry.items():
            try:
                new[k] = _state_value(spec[k] if spec is not None else None, v, p)
            except (TypeError, ValueError) as e:
                problems.append(f"{where}[{k!r}]: {e}")
        return new

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            hp = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} params, {hp}")
        return "\n".join(lines) + "\n)"


class _Bucket:
    """Parameters of one group with one dtype and one step count, updated as one. Each kind of
    state is a flat buffer whose slices, shaped as the parameters, are their state entries
    (the buffers are the rows of `stack`, in the order of the kinds); `g` gathers the
    gradients (into its slices `gs`) and `out` holds the update, whose slices `outs` are
    subtracted from the parameters' own arrays (`out` and `g` are the rows of `pair`)."""

    __slots__ = ("index", "params", "states", "step", "fresh", "flats", "stack", "entries",
                 "expected", "pair", "g", "gs", "out", "outs", "derived")

    def __init__(self, index: list[int] | None, params: list[Tensor],
                 states: list[dict[str, Any]], shapes: list[tuple[int, ...]], dtype: Any,
                 kinds: tuple[str, ...], step: int | None, fresh: bool) -> None:
        bounds = list(itertools.accumulate((math.prod(shape) for shape in shapes), initial=0))
        self.index = index  # positions among the group's stepped parameters; None: all
        self.params, self.states, self.step = params, states, step
        self.fresh = fresh  # made from the first gradient, bound to the states after it
        self.flats: dict[str, np.ndarray] = {}
        self.stack = np.zeros(len(kinds) * bounds[-1], dtype).reshape(len(kinds), bounds[-1])
        views: list[np.ndarray] = []
        for kind, flat in zip(kinds, self.stack):
            self.flats[kind] = flat
            views += _views(flat, shapes, bounds)
        # every (state, kind, view), as three lists
        self.entries = ([s for _ in kinds for s in states],
                        [kind for kind in kinds for _ in states], views)
        for s, kind, view in zip(*self.entries):
            old = s.get(kind)
            if old is not None:
                view[...] = old
        self.expected: list[np.ndarray | None] = [None] * len(views)  # what the entries hold
        if not fresh:
            self.bind()
        self.pair = np.empty((2, bounds[-1]), dtype)
        self.out, self.g = self.pair
        self.gs = _views(self.g, shapes, bounds)
        self.outs = _views(self.out, shapes, bounds)
        # (key, value): what an update derives from a hyperparameter, kept while the
        # hyperparameter is the same object
        self.derived: tuple[Any, Any] = (None, None)

    def bind(self) -> None:
        """Make the views the parameters' state entries."""
        for s, kind, view in zip(*self.entries):
            s[kind] = view
        self.expected = list(self.entries[2])
        self.fresh = False

    def holds(self, state: dict[Tensor, dict[str, Any]]) -> bool:
        """Are the parameters' states still the buffers' views, with one step count?"""
        dicts, kinds, _ = self.entries
        return (_all_is(map(state.get, self.params), self.states)
                and _all_is(map(dict.get, dicts, kinds), self.expected)
                and (self.step is None
                     or [s.get("step") for s in self.states] == [self.step] * len(self.states)))

    def advance(self) -> None:
        """One more step: the count, in every state too."""
        if self.step is not None:
            t = self.step = self.step + 1
            for s in self.states:
                s["step"] = t

    def subtract(self, ws: list[np.ndarray]) -> None:
        """w ← w − out, each parameter's array in place."""
        for w, d in zip(ws, self.outs):
            w -= d


class _Plan:
    """How a group is stepped flat while the same parameters are: its buckets, and what they
    were made for (the parameters, their arrays, the kinds of state, the optimizer's state).

    It never holds a parameter's array: the tape locks an array in place of copying it only
    while nothing but its Tensor holds it. It knows them by id, kept true by weak references
    that mark the plan `moved` when one of those arrays is gone (its id may then be reused)."""

    __slots__ = ("group", "params", "kinds", "state", "buckets", "flats", "ids", "watch",
                 "moved", "shapes", "dtypes", "owners", "apart", "into", "lookups", "expected",
                 "counts", "unbound", "pick", "numbers", "__weakref__")

    def __init__(self, group: dict[str, Any], params: list[Tensor], datas: list[np.ndarray],
                 kinds: tuple[str, ...], state: dict[Tensor, dict[str, Any]],
                 buckets: list[_Bucket], keys: tuple[str, ...]) -> None:
        self.group, self.params, self.kinds, self.state = group, params, kinds, state
        self.buckets = buckets
        self.flats = [f for b in buckets for f in b.flats.values()]
        # where each parameter's gradient is gathered: its slice of its bucket's `g`
        self.into: list[np.ndarray] = [np.empty(0)] * len(params)
        for b in buckets:
            for i, view in zip(range(len(params)) if b.index is None else b.index, b.gs):
                self.into[i] = view
        # the group's hyperparameters (`keys`), and their values last found to be Python numbers
        self.pick = _picker(keys)
        self.numbers: tuple[Any, ...] | None = None
        self._note(datas)

    def _note(self, datas: list[np.ndarray]) -> None:
        """Take on the parameters' arrays (of the shapes and dtypes the buckets have)."""
        self.ids = list(map(id, datas))
        me = weakref.ref(self)

        def gone(_: Any) -> None:
            plan = me()
            if plan is not None:
                plan.moved = True

        self.watch = [weakref.ref(w, gone) for w in datas]
        self.moved = False
        self.shapes = [w.shape for w in datas]
        self.dtypes = [w.dtype for w in datas]
        owners = [_memory_owner(a) for a in itertools.chain(datas, self.flats)]
        self.owners = None if any(o is None for o in owners) else set(map(id, owners))
        # Gathering all gradients (and, for weight decay, all weights) before any parameter
        # changes reads what one update after another would read only if nothing overlaps.
        self.apart = _apart(datas + self.flats)
        self.remember()

    def remember(self) -> None:
        """Note what holds() finds when nothing has changed: each parameter's state dict, its
        state entries and step count (what `dicts[i].get(keys[i])` gives)."""
        bs = self.buckets
        counted = [b for b in bs if b.step is not None]
        dicts: list[Any] = [self.state] * len(self.params)
        self.lookups = (dicts + [d for b in bs for d in b.entries[0]]
                        + [s for b in counted for s in b.states],
                        [p for b in bs for p in b.params] + [k for b in bs for k in b.entries[1]]
                        + ["step" for b in counted for _ in b.states])
        self.expected: list[Any] = [*(s for b in bs for s in b.states),
                                    *(v for b in bs for v in b.expected)]
        self.counts = []  # (bucket, where its states' step counts sit in expected)
        for b in counted:
            self.counts.append((b, len(self.expected), len(self.expected) + len(b.states)))
            self.expected += [b.step] * len(b.states)
        self.unbound = any(b.fresh for b in bs)

    def holds(self, group: dict[str, Any], ps: list[Tensor], datas: list[np.ndarray],
              kinds: tuple[str, ...], state: dict[Tensor, dict[str, Any]]) -> bool:
        """Are these still the parameters, arrays and state the buckets were made for? A
        parameter's array replaced by one of the same shape and dtype is taken on."""
        if (group is not self.group or state is not self.state or kinds != self.kinds
                or len(ps) != len(self.params) or not _all_is(ps, self.params)):
            return False
        same_arrays = not self.moved and list(map(id, datas)) == self.ids
        if same_arrays and _all_is(map(dict.get, *self.lookups), self.expected):
            return True
        # Something differs, maybe harmlessly: look closer.
        if not all(b.holds(state) for b in self.buckets):
            return False
        if same_arrays:
            self.remember()
        elif self.shapes == [w.shape for w in datas] and self.dtypes == [w.dtype for w in datas]:
            self._note(datas)
        else:
            return False
        return True

    def ready(self, group: dict[str, Any], state: dict[Tensor, dict[str, Any]],
              kinds: tuple[str, ...]) -> list[np.ndarray] | None:
        """holds() and take() in one pass for a step like the one before: the group's parameters
        are the plan's, each requiring grad, with the same writeable array and a gradient of its
        shape and dtype in memory of its own (gathered), and the state entries, step counts and
        hyperparameters are as the plan left them. The parameters' arrays, or None (then
        whatever was gathered is unused)."""
        params = group["params"]
        if (self.moved or group is not self.group or state is not self.state
                or kinds != self.kinds or not self.apart or self.owners is None
                or len(params) != len(self.params) or not _all_is(params, self.params)):
            return None
        owners, datas = self.owners, []
        for p, known, shape, dtype, into in zip(params, self.ids, self.shapes, self.dtypes,
                                                self.into):
            g, w = p.grad, p._data
            if (type(g) is not np.ndarray or id(w) != known or not p._requires_grad
                    or g.shape != shape or g.dtype != dtype or not w.flags.writeable):
                return None
            base = g.base  # its memory's owner (_memory_owner, inlined): none of the plan's
            owner = (g if base is None else
                     base if type(base) is np.ndarray and base.base is None else None)
            if owner is None or id(owner) in owners:
                return None
            into[...] = g
            datas.append(w)
        if not (_all_is(map(dict.get, *self.lookups), self.expected) and self._numbers(group)):
            return None
        return datas

    def take(self, ps: list[Tensor], datas: list[np.ndarray], group: dict[str, Any]) -> bool:
        """Gather the parameters' gradients into the buckets' `g`, if the flat update reads and
        rounds them as `_update` would: no two of the parameters' arrays (datas) and state
        buffers overlap, the group's hyperparameters are Python numbers, and each gradient is
        an array of its parameter's shape and dtype (nothing is cast) sharing memory with none
        of those arrays. False otherwise (whatever was gathered is then unused)."""
        if not (self.apart and self._numbers(group)):
            return False
        owners = self.owners
        for p, shape, dtype, into in zip(ps, self.shapes, self.dtypes, self.into):
            g = p.grad
            if type(g) is not np.ndarray or g.shape != shape or g.dtype != dtype:
                return False
            # _memory_owner(g), inlined in this loop over every gradient of every step
            base = g.base
            owner = (g if base is None else
                     base if type(base) is np.ndarray and base.base is None else None)
            if owners is None or owner is None:
                if any(np.may_share_memory(g, a) for a in itertools.chain(datas, self.flats)):
                    return False
            elif id(owner) in owners:
                return False
            into[...] = g
        return True

    def _numbers(self, group: dict[str, Any]) -> bool:
        """Are the group's hyperparameters Python numbers? NumPy takes those at the arrays'
        precision; a NumPy float64 scalar would make `_update` compute a float32 parameter's
        step in float64 and round once, where the flat buffers round twice. (Remembered while
        they are the same objects.)"""
        values = self.pick(group)
        if self.numbers is None or not _all_is(values, self.numbers):
            for v in values:
                if not all(type(x) in _PYTHON_NUMBERS
                           for x in (v if type(v) is tuple else [v])):
                    return False
            self.numbers = values
        return True

    def stepped(self) -> None:
        """The buckets ran: note the new step counts (and entries bound by a first step)."""
        if self.unbound:
            self.remember()
        for b, lo, hi in self.counts:
            self.expected[lo:hi] = [b.step] * (hi - lo)

    def stepped_each(self) -> None:
        """The parameters were updated one by one instead: each step count advanced by one."""
        for b in self.buckets:
            if b.step is not None:
                b.step += 1


def _memory_owner(a: np.ndarray) -> np.ndarray | None:
    """The ndarray owning a's memory, or None when that memory is not an ndarray's own (a
    buffer object's, or an ndarray subclass's). NumPy points a view's base straight at the
    array owning the memory (a view of a view too), so two arrays with owners share memory
    only if the owner is the same."""
    base = a.base
    return a if base is None else base if type(base) is np.ndarray and base.base is None else None


def _picker(keys: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A function giving a group's values of keys, as a tuple (whatever their number)."""
    if len(keys) >= 2:
        return operator.itemgetter(*keys)
    return lambda group: tuple(group[k] for k in keys)


def _all_is(xs: Iterable[Any], ys: Iterable[Any]) -> bool:
    """xs[i] is ys[i] for every i (the two of one length: map stops at the shorter)."""
    return all(map(operator.is_, xs, ys))


def _owner(cls: type, name: str) -> type:
    """The class in cls's MRO that defines `name`."""
    return next(c for c in cls.__mro__ if name in vars(c))


def _views(flat: np.ndarray, shapes: list[tuple[int, ...]], bounds: list[int]
           ) -> list[np.ndarray]:
    return [flat[a:b].reshape(shape) for a, b, shape in zip(bounds, bounds[1:], shapes)]


def _apart(arrays: list[np.ndarray]) -> bool:
    """Do no two of the arrays share memory? (Arrays owning their memory overlap only by being
    the same array.)"""
    if all(a.base is None for a in arrays):
        return len(set(map(id, arrays))) == len(arrays)
    return not any(np.may_share_memory(a, b) for a, b in itertools.combinations(arrays, 2))


_PYTHON_NUMBERS = (float, int, bool)


def _show(value: Any) -> str:
    return f"{type(value).__name__} {reprlib.repr(value)}"


def _real(value: Any) -> float | None:
    """value as a float when it is one real number (a bool is not), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iuf":
        return float(value)
    return None


def _nonnegative(key: str, value: Any) -> float:
    """One finite number >= 0, kept as a Python float: NumPy scalars are "strong" types and would
    promote float32 parameters' arithmetic to float64."""
    x = _real(value)
    if x is None:
        raise TypeError(f"{key} must be a real number, got {_show(value)}")
    if not 0.0 <= x < math.inf:
        raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
    return x


def _fraction(key: str, value: Any) -> float:
    """A decay rate: a number in [0, 1), as a Python float."""
    x = _real(value)
    if x is None:
        raise TypeError(f"{key} must be a real number, got {_show(value)}")
    if not 0.0 <= x < 1.0:
        raise ValueError(f"{key} must lie in [0, 1), got {value!r}")
    return x


def _betas(key: str, value: Any) -> tuple[float, float]:
    seq = isinstance(value, (list, tuple)) or isinstance(value, np.ndarray) and value.ndim == 1
    pair = [_real(b) for b in value] if seq and len(value) == 2 else [None]
    if any(b is None for b in pair):
        raise TypeError(f"{key} must be a pair of real numbers, got {_show(value)}")
    if not all(0.0 <= b < 1.0 for b in pair):  # type: ignore[operator]
        raise ValueError(f"{key} must lie in [0, 1), got {tuple(value)}")
    return pair[0], pair[1]  # type: ignore[return-value]


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{key} must be a bool, got {_show(value)}")
    return bool(value)


_RULES: dict[str, Callable[[str, Any], Any]] = {
    **dict.fromkeys(("lr", "momentum", "dampening", "weight_decay", "eps", *_SCHEDULE_KEYS),
                    _nonnegative),
    "alpha": _fraction, "betas": _betas, "nesterov": _flag, "centered": _flag,
}


def _hyperparameter(key: str, value: Any) -> Any:
    """`value` checked for `key` and normalised, or TypeError/ValueError naming the key. Keys
    without a rule (a subclass's own) pass unchanged."""
    rule = _RULES.get(key)
    return value if rule is None else rule(key, value)


def _index(key: Any) -> int | None:
    """A parameter's index: an int, or its decimal string (what a JSON-like tool makes of it)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return int(key)
    if isinstance(key, str) and key.isdecimal():
        return int(key)
    return None


def _parts(state_dict: Any, where: str) -> tuple[list[Mapping[str, Any]], Mapping[Any, Any]]:
    """The param_groups and state of an optimizer's state dict, or ValueError."""
    groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
    state = state_dict.get("state") if isinstance(state_dict, Mapping) else None
    if (not isinstance(groups, (list, tuple)) or not isinstance(state, Mapping)
            or not all(isinstance(g, Mapping) for g in groups)):
        raise ValueError(f"{where}: expected a dict with 'state' (a dict of per-parameter "
                         f"dicts) and 'param_groups' (a list of dicts), as made by state_dict()")
    return list(groups), state


def _state_value(kind: str | None, value: Any, p: Tensor) -> Any:
    """A state value checked against its kind: a whole number >= 0 ("count"), or an array of
    p's shape, copied and cast to p's dtype ("array"; "array or None" also takes None).
    Without a kind, array-likes are checked as arrays and anything else passes."""
    if kind is None:
        kind = "array" if isinstance(value, (np.ndarray, Tensor, list, tuple)) else "any"
    if kind == "any" or (kind == "array or None" and value is None):
        return value
    if kind == "count":
        x = _real(value)
        if x is None or not (0.0 <= x < math.inf and x == int(x)):
            raise ValueError(f"must be a whole number >= 0, got {_show(value)}")
        return int(x)
    try:
        arr = np.asarray(value)
    except Exception as e:  # whatever the conversion raises is reported with the key
        raise ValueError(f"cannot convert {type(value).__name__} to an array ({e})") from None
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"must be an array of real numbers, got {_show(value)} of dtype "
                         f"{arr.dtype}")
    if arr.shape != p.shape:
        raise ValueError(f"must be an array of the parameter's shape {p.shape}, got shape "
                         f"{arr.shape}")
    return np.array(arr, dtype=p.dtype, copy=True)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, PyTorch's update:

    g ← ∇ + λ·w;   b ← g (first step), then b ← μ·b + (1 − τ)·g;   g ← b (or g + μ·b with
    nesterov);   w ← w − lr·g.      (λ weight_decay, μ momentum, τ dampening)
    """

    _state_spec: ClassVar[dict[str, str] | None] = {"momentum_buffer": "array or None"}
    _copies_first: ClassVar[bool] = True

    def __init__(self, params: ParamsT, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, *, dampening: float = 0.0,
                 nesterov: bool = False) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov})

    def _check_group(self, group: dict[str, Any]) -> None:
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")

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

    def _flat_kinds(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] else ()

    def _flat_update(self, b: _Bucket, g: np.ndarray, ws: list[np.ndarray],
                     group: dict[str, Any]) -> None:
        wd, mu, out = group["weight_decay"], group["momentum"], b.out
        if wd:
            _add_scaled_weights(b, g, ws, wd)
        if mu:
            buf = b.flats["momentum_buffer"]
            if b.fresh:
                np.copyto(buf, g)
                b.bind()
            else:
                buf *= mu
                np.multiply(g, 1 - group["dampening"], out=out)
                buf += out
            if group["nesterov"]:
                np.multiply(buf, mu, out=out)
                g += out
            else:
                g = buf
        np.multiply(g, group["lr"], out=out)
        b.subtract(ws)


class Adam(Optimizer):
    """Adam (Kingma & Ba), bias-corrected, exactly `torch.optim.Adam`'s update:

    g ← ∇ + λ·w;  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  t ← t + 1;
    w ← w − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε).      (λ weight_decay, L2 added to the grad)
    """

    _state_spec: ClassVar[dict[str, str] | None] = {
        "step": "count", "exp_avg": "array", "exp_avg_sq": "array"}
    _counts_steps: ClassVar[bool] = True

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        wd = group["weight_decay"]
        if wd:
            g = g + wd * w
        _adam_moments_step(w, g, state, group)

    def _flat_kinds(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _flat_update(self, b: _Bucket, g: np.ndarray, ws: list[np.ndarray],
                     group: dict[str, Any]) -> None:
        wd = group["weight_decay"]
        if wd:
            _add_scaled_weights(b, g, ws, wd)
        _adam_flat_step(b, group)
        b.subtract(ws)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), exactly `torch.optim.AdamW`'s
    update: the decay shrinks w directly and never enters m or v.

    w ← w·(1 − lr·λ);  then Adam's step without L2:  m ← β₁m + (1−β₁)∇;  v ← β₂v + (1−β₂)∇²;
    t ← t + 1;  w ← w − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε).      (λ weight_decay)
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        wd = group["weight_decay"]
        if wd:
            w *= 1 - group["lr"] * wd
        _adam_moments_step(w, g, state, group)

    def _flat_update(self, b: _Bucket, g: np.ndarray, ws: list[np.ndarray],
                     group: dict[str, Any]) -> None:
        _adam_flat_step(b, group)  # the moments never read w: decaying it after is the same
        wd = group["weight_decay"]
        if wd:
            keep = 1 - group["lr"] * wd
            for w in ws:
                w *= keep
        b.subtract(ws)


def _adam_moments_step(w: np.ndarray, g: np.ndarray, state: dict[str, Any],
                       group: dict[str, Any]) -> None:
    """Adam's step from the gradient g (weight decay already applied), in place on w and the
    state, which it creates on the parameter's first step."""
    b1, b2 = group["betas"]
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


def _adam_flat_step(b: _Bucket, group: dict[str, Any]) -> None:
    """_adam_moments_step's operations on a bucket's flat buffers, each rounding as its
    counterpart there; the step to subtract from the weights is left in b.out (b.g, the
    gathered gradients, is overwritten). The two moments' updates are independent, so one
    call adds both: b.pair's rows, (1 − β₁)(g − m) and (1 − β₂)g², to b.stack's, m and v."""
    b1, b2 = group["betas"]
    m, v, g, out, t = b.flats["exp_avg"], b.flats["exp_avg_sq"], b.g, b.out, b.step
    assert t is not None
    rate1, rate2, beta2, eps = _adam_constants(b, group)
    np.subtract(g, m, out=out)
    out *= rate1  # (1 − β₁)(g − m)
    g *= g
    g *= rate2  # (1 − β₂)g²
    v *= beta2
    b.stack += b.pair  # (rows in _flat_kinds' order) m + (1 − β₁)(g − m), β₂v + (1 − β₂)g²
    np.sqrt(v, out=out)
    out /= math.sqrt(1 - b2 ** t)
    out += eps
    np.divide(m, out, out=out)
    out *= group["lr"] / (1 - b1 ** t)


def _adam_constants(b: _Bucket, group: dict[str, Any]) -> list[np.ndarray]:
    """1 − β₁, 1 − β₂, β₂ and ε as 0-d arrays of the bucket's dtype, kept while the group's
    betas and eps are the same objects. NumPy rounds a Python float operand to the array's
    dtype just as these were rounded, but converts it at every call."""
    betas, eps = group["betas"], group["eps"]
    key, constants = b.derived
    if key is None or key[0] is not betas or key[1] is not eps:
        b1, b2 = betas
        constants = [np.array(x, b.g.dtype) for x in (1 - b1, 1 - b2, b2, eps)]
        b.derived = ((betas, eps), constants)
    return constants  # type: ignore[no-any-return]


def _add_scaled_weights(b: _Bucket, g: np.ndarray, ws: list[np.ndarray], wd: float) -> None:
    """g ← g + λ·w over the bucket (the weights gathered into b.out first)."""
    for into, w in zip(b.outs, ws):
        into[...] = w
    b.out *= wd
    g += b.out


class RMSprop(Optimizer):
    """RMSprop (Hinton), exactly `torch.optim.RMSprop`'s update:

    g ← ∇ + λ·w;  v ← αv + (1−α)g²;  a ← √v, or with centered: ḡ ← αḡ + (1−α)g, a ← √(v − ḡ²);
    a ← a + ε;  with momentum μ > 0: b ← μb + g/a, w ← w − lr·b;  else w ← w − lr·g/a.
    (λ weight_decay, L2 added to the grad; the state keeps "momentum_buffer" only with μ > 0
    and "grad_avg" only when centered, as PyTorch's does.)
    """

    _state_spec: ClassVar[dict[str, str] | None] = {
        "step": "count", "square_avg": "array", "momentum_buffer": "array",
        "grad_avg": "array"}
    _counts_steps: ClassVar[bool] = True

    def __init__(self, params: ParamsT, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps,
                                  "weight_decay": weight_decay, "momentum": momentum,
                                  "centered": centered})

    def _state_keys(self, group: dict[str, Any]) -> set[str]:
        return ({"step", "square_avg"} | ({"momentum_buffer"} if group["momentum"] else set())
                | ({"grad_avg"} if group["centered"] else set()))

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        alpha, wd, mu = group["alpha"], group["weight_decay"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = np.zeros_like(w)
        state["step"] += 1
        if wd:
            g = g + wd * w
        v = state["square_avg"]
        v *= alpha
        v += (1 - alpha) * (g * g)
        if group["centered"]:
            ga = _buffer(state, "grad_avg", w)
            ga += (1 - alpha) * (g - ga)  # torch's lerp: αḡ + (1 − α)g
            # v − ḡ² >= 0 (Cauchy–Schwarz: both weigh the same g's, with weights summing to at
            # most 1), but rounding can take it an ulp below 0, where √ would give NaN.
            a = np.sqrt(np.maximum(v - ga * ga, 0))
        else:
            a = np.sqrt(v)
        a += group["eps"]
        if mu:
            buf = _buffer(state, "momentum_buffer", w)
            buf *= mu
            buf += g / a
            w -= group["lr"] * buf
        else:
            w -= group["lr"] * (g / a)

    def _flat_kinds(self, group: dict[str, Any]) -> tuple[str, ...]:
        return (("square_avg",) + (("grad_avg",) if group["centered"] else ())
                + (("momentum_buffer",) if group["momentum"] else ()))

    def _flat_update(self, b: _Bucket, g: np.ndarray, ws: list[np.ndarray],
                     group: dict[str, Any]) -> None:
        alpha, wd, mu, out = group["alpha"], group["weight_decay"], group["momentum"], b.out
        if wd:
            _add_scaled_weights(b, g, ws, wd)
        v = b.flats["square_avg"]
        v *= alpha
        np.multiply(g, g, out=out)
        out *= 1 - alpha
        v += out  # αv + (1 − α)g²
        if group["centered"]:
            ga = b.flats["grad_avg"]
            np.subtract(g, ga, out=out)
            out *= 1 - alpha
            ga += out  # ḡ + (1 − α)(g − ḡ)
            np.multiply(ga, ga, out=out)
            np.subtract(v, out, out=out)
            np.maximum(out, 0, out=out)
            np.sqrt(out, out=out)  # √max(v − ḡ², 0)
        else:
            np.sqrt(v, out=out)
        out += group["eps"]
        np.divide(g, out, out=out)  # g / a
        if mu:
            buf = b.flats["momentum_buffer"]
            buf *= mu
            buf += out
            np.multiply(buf, group["lr"], out=out)
        else:
            out *= group["lr"]
        b.subtract(ws)


def _buffer(state: dict[str, Any], key: str, w: np.ndarray) -> np.ndarray:
    """state[key], created as zeros of w's shape the first time (also when a hyperparameter that
    needs it, such as momentum, is switched on between steps)."""
    buf = state.get(key)
    if buf is None:
        buf = state[key] = np.zeros_like(w)
    return buf
