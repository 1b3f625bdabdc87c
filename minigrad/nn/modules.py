"""Modules: objects that hold parameters and compute a forward pass with the engine's ops.

A `Module` finds its state by looking at its own attributes, in the order they were set:

- a leaf `Tensor` that requires grad is a *parameter* (other Tensors, such as activations
  kept for later, are not state);
- a `Module` is a child, walked recursively;
- a list, tuple or dict is walked too, its items named by index or key (like PyTorch's
  `ModuleList`/`ModuleDict`);
- `register_buffer(name, value)` adds a *buffer*: saved in `state_dict()`, never optimized.

Names are PyTorch's: a module's parameters, then its buffers, then its children's, joined
with dots, so `Sequential(Linear(4, 16), ReLU(), Linear(16, 2))` has `0.weight, 0.bias, 2.weight,
2.bias`, and `state_dict()` loads into the same `torch.nn.Sequential` unchanged.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

import minigrad as mg
from minigrad import Tensor
from minigrad.functions import linear as _linear
from minigrad.functions import linear_relu as _linear_relu
from minigrad.tensor import STATE as _STATE

__all__ = [
    "IncompatibleKeys", "Identity", "Linear", "LogSoftmax", "Module", "ReLU", "Sequential",
    "Sigmoid", "Softmax", "Tanh",
]


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(sd, strict=False)` skipped."""

    missing_keys: list[str]
    unexpected_keys: list[str]


_ATOMS = frozenset({bool, int, float, str, type(None)})

# zero_grad runs every training step, and on a small policy walking the module tree costs more
# than the rest of the step's bookkeeping. So each root remembers the Tensors its walk found:
# id(root) -> (weak reference to root, Tensors). Setting or deleting any Module's attribute
# forgets every plan (and the references they hold). A tree that can change without that (a
# list or dict among its attributes, a module with its own __setattr__, __delattr__ or member
# walk) gets no plan and is walked every time.
# A plan also keeps each module's attribute count, so an attribute added or removed behind
# __setattr__'s back (functools.cached_property, object.__setattr__) is seen as well; only
# replacing an existing attribute through __dict__ goes unnoticed.
_ZERO_GRAD_PLANS: dict[int, tuple[weakref.ref[Module], list[Tensor], list[Module], list[int]]] = {}


class Module:
    """Base class of every layer and network: subclass it and write `forward`.

    ```python
    class Policy(mg.nn.Module):
        def __init__(self):
            self.body = mg.nn.Linear(4, 32, rng=0)
            self.head = mg.nn.Linear(32, 2, rng=1)

        def forward(self, x):
            return self.head(self.body(x).tanh())
    ```
    Calling `super().__init__()` is allowed but not required.
    """

    training: bool = True

    def __init__(self) -> None:
        self.training = True

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __setattr__(self, name: str, value: Any) -> None:
        if _ZERO_GRAD_PLANS:
            _ZERO_GRAD_PLANS.clear()
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if _ZERO_GRAD_PLANS:
            _ZERO_GRAD_PLANS.clear()
        object.__delattr__(self, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- the walk ------------------------------------------------------------------------------
    def _members(self) -> Iterator[tuple[str, Any]]:
        """(name, value) of what this module holds directly; Sequential overrides it."""
        return iter(vars(self).items())

    def _member_values(self) -> list[Any]:
        """What _members() gives, without the names (zero_grad's walk, which runs every step)."""
        if type(self)._members is Module._members:
            return list(self.__dict__.values())
        return [value for _, value in self._members()]

    def _split(self) -> tuple[list[tuple[str, Tensor]], list[tuple[str, Tensor]],
                              list[tuple[str, Module]]]:
        """This module's own parameters, its buffers and its direct children, in attribute
        order, with lists, tuples and dicts opened up (their items named by index or key)."""
        params: list[tuple[str, Tensor]] = []
        children: list[tuple[str, Module]] = []
        buffer_names: set[str] = self.__dict__.get("_buffer_names", set())
        buffers = [(name, t) for name, t in self.__dict__.items()
                   if name in buffer_names and isinstance(t, Tensor)]

        def collect(name: str, value: Any) -> None:
            if isinstance(value, Tensor):
                if value.requires_grad and value.is_leaf:
                    params.append((name, value))
            elif isinstance(value, Module):
                children.append((name, value))
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    collect(f"{name}.{i}", item)
            elif isinstance(value, dict):
                for key, item in value.items():
                    collect(f"{name}.{key}", item)

        for name, value in self._members():
            if name not in buffer_names:
                collect(name, value)
        return params, buffers, children

    def _walk(self, name: str = "", path: tuple[int, ...] = ()
              ) -> Iterator[tuple[str, Tensor | Module, str]]:
        """(dotted name, Module or Tensor, "module"|"param"|"buffer") over the tree in PyTorch's
        order: a module, its parameters, its buffers, then each child's subtree. `path` (the
        ids of the ancestors) stops cycles."""
        yield name, self, "module"
        params, buffers, children = self._split()
        dot = name + "." if name else ""
        for key, t in params:
            yield dot + key, t, "param"
        for key, t in buffers:
            yield dot + key, t, "buffer"
        inner = path + (id(self),)
        for key, child in children:
            if id(child) not in inner:
                yield from child._walk(dot + key, inner)

    def register_buffer(self, name: str, value: Any) -> None:
        """Keep `value` (a Tensor or array-like, stored as a Tensor without grad) as
        `self.<name>`: saved in `state_dict()` but never a parameter, like running statistics.
        Assigning a new Tensor to the attribute later keeps it a buffer."""
        if not isinstance(value, Tensor):
            value = Tensor(np.array(value, copy=True))
        self.__dict__.setdefault("_buffer_names", set()).add(name)
        setattr(self, name, value)

    def named_modules(self) -> Iterator[tuple[str, Module]]:
        """(name, module) for this module (named "") and every submodule, each once."""
        seen: set[int] = set()
        for name, m, _ in self._walk():
            if isinstance(m, Module) and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def children(self) -> Iterator[Module]:
        """The direct submodules."""
        for _, m in self._split()[2]:
            yield m

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """(dotted name, parameter) for every Tensor that requires grad, each Tensor once."""
        seen: set[int] = set()
        dot = prefix + "." if prefix else ""
        for name, t, kind in self._walk():
            if kind == "param" and isinstance(t, Tensor) and id(t) not in seen:
                seen.add(id(t))
                yield dot + name, t

    def parameters(self) -> Iterator[Tensor]:
        """Every parameter (a leaf Tensor that requires grad), each once."""
        for _, p in self.named_parameters():
            yield p

    def _state_tensors(self) -> Iterator[tuple[str, Tensor]]:
        # Like PyTorch, a tensor shared by two submodules appears under both names.
        for name, t, _ in self._walk():
            if isinstance(t, Tensor):
                yield name, t

    # -- training helpers ----------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Reset every parameter's gradient to None (the next backward assigns a fresh one).

        The Tensors found are remembered until a Module attribute is next set, added or
        deleted (see _ZERO_GRAD_PLANS); replacing an existing attribute by writing into a
        module's `__dict__` directly goes unnoticed."""
        plan = _ZERO_GRAD_PLANS.get(id(self))
        if plan is not None and plan[0]() is self \
                and list(map(len, map(vars, plan[2]))) == plan[3]:  # nothing added or removed
            for t in plan[1]:
                t.grad = None
            return
        # The same tree as parameters(), walked without names.
        tensors: list[Tensor] = []
        plannable = _plannable(type(self))
        todo: list[Module] = [self]
        modules: list[Module] = [self]
        seen = {id(self)}
        while todo:
            module = todo.pop()
            stack = type(module)._member_values(module)  # a method an attribute cannot shadow
            while stack:
                value = stack.pop()
                if type(value) in _ATOMS:  # most attributes: sizes, flags, names
                    continue
                if isinstance(value, Tensor):
                    value.grad = None  # only leaves that require grad ever hold one
                    tensors.append(value)
                elif isinstance(value, Module):
                    if id(value) not in seen:
                        seen.add(id(value))
                        todo.append(value)
                        modules.append(value)
                        plannable = plannable and _plannable(type(value))
                elif isinstance(value, (list, tuple)):
                    plannable = plannable and type(value) is tuple
                    stack.extend(value)
                elif isinstance(value, dict):
                    plannable = False
                    stack.extend(value.values())
        if plannable:
            key = id(self)
            _ZERO_GRAD_PLANS[key] = (weakref.ref(self, lambda ref: _forget_plan(key, ref)),
                                     tensors, modules, list(map(len, map(vars, modules))))

    def train(self, mode: bool = True) -> Module:
        """Set the `training` flag of this module and every submodule; returns self."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        """`train(False)`."""
        return self.train(False)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """{dotted name: a copy of the array}, PyTorch's keys and layouts, parameters and
        buffers alike."""
        return {name: t.data.copy() for name, t in self._state_tensors()}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True
                        ) -> IncompatibleKeys:
        """Copy `state_dict`'s arrays into this module's tensors (cast to their dtype), in
        place; an array a live graph still holds read-only is replaced instead.

        Nothing changes unless everything fits: a shape mismatch, and with `strict` a missing or
        unexpected key, raises RuntimeError listing every problem at once. Values may be
        ndarrays, Tensors or anything `np.asarray` takes (a CPU `torch.Tensor`).
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"load_state_dict: expected a dict of arrays, got "
                            f"{type(state_dict).__name__}")
        own = dict(self._state_tensors())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched: list[str] = []
        new: dict[str, np.ndarray] = {}
        for name, t in own.items():
            if name not in state_dict:
                continue
            try:
                value = np.asarray(state_dict[name])
            except Exception as e:  # reported below, with the key
                mismatched.append(f"{name}: cannot convert {type(state_dict[name]).__name__} "
                                  f"to an array ({e})")
                continue
            if value.shape != t.shape:
                mismatched.append(f"{name}: checkpoint shape {value.shape}, "
                                  f"module shape {t.shape}")
            elif value.dtype.kind not in "biuf":
                mismatched.append(f"{name}: checkpoint dtype {value.dtype} is not numeric")
            else:
                new[name] = value
        if mismatched or (strict and (missing or unexpected)):
            lines = [f"load_state_dict: the state dict does not fit {type(self).__name__}:"]
            if strict and missing:
                lines.append("  missing keys: " + ", ".join(missing))
            if strict and unexpected:
                lines.append("  unexpected keys: " + ", ".join(map(str, unexpected)))
            if mismatched:
                lines.append("  shape mismatches: " + "; ".join(mismatched))
            raise RuntimeError("\n".join(lines))
        for name, value in new.items():
            t = own[name]
            if t.data.flags.writeable:  # in place, as PyTorch: references to .data stay valid
                np.copyto(t.data, value, casting="unsafe")
            else:  # a live graph holds the old array read-only: keep it for that graph
                t.data = np.array(value, dtype=t.dtype, copy=True)
        return IncompatibleKeys(missing, unexpected)

    # -- printing ------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = self._split()[2]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        body = "".join(f"\n  ({name}): " + repr(m).replace("\n", "\n  ")
                       for name, m in children)
        return f"{type(self).__name__}({body}\n)"


def _plannable(cls: type[Module]) -> bool:
    """Can every change to this module's members be seen by Module.__setattr__/__delattr__?"""
    return (cls.__setattr__ is Module.__setattr__ and cls.__delattr__ is Module.__delattr__
            and ((cls._member_values is Sequential._member_values
                  and cls._members is Sequential._members)
                 or (cls._member_values is Module._member_values
                     and cls._members is Module._members)))


def _forget_plan(key: int, ref: weakref.ref[Module]) -> None:
    plan = _ZERO_GRAD_PLANS.get(key)
    if plan is not None and plan[0] is ref:
        del _ZERO_GRAD_PLANS[key]


def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    if rng is None or isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be an np.random.Generator, an int seed or None, "
                    f"got {type(rng).__name__}")


class Linear(Module):
    """y = x Wᵀ + b, with W of shape (out_features, in_features) as in PyTorch.

    Initialised as PyTorch does (kaiming_uniform with a = √5): W and b ~ U(−k, k), k = 1/√in.
    `rng` is an np.random.Generator or an int seed (None: fresh OS entropy).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rng: np.random.Generator | int | None = None,
                 dtype: Any = np.float64) -> None:
        if in_features < 0 or out_features < 0:
            raise ValueError(f"Linear: sizes must be non-negative, got ({in_features}, "
                             f"{out_features})")
        dt = np.dtype(dtype)
        if dt.kind != "f":
            raise TypeError(f"Linear: dtype must be floating, got {dt}")
        gen = _generator(rng)
        self.training = True
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        # astype makes a fresh array: parameters own their memory.
        self.weight = Tensor(gen.uniform(-bound, bound, (out_features, in_features)).astype(dt),
                             requires_grad=True)
        self.bias: Tensor | None = (
            Tensor(gen.uniform(-bound, bound, (out_features,)).astype(dt), requires_grad=True)
            if bias else None)

    def forward(self, x: Any) -> Tensor:
        try:
            return _linear(x, self.weight, self.bias)  # checks the shapes
        except ValueError:
            self._restate(x)
            raise

    def _forward_relu(self, x: Any) -> Tensor:
        """relu(self(x)) as one recorded op (Sequential's Linear → ReLU)."""
        try:
            return _linear_relu(x, self.weight, self.bias)
        except ValueError:
            self._restate(x)
            raise

    def _restate(self, x: Any) -> None:
        """A shape error said in this module's terms, when the input is what does not fit."""
        shape = x._data.shape if isinstance(x, Tensor) else np.shape(x)
        if shape[-1:] != (self.in_features,):
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): input of "
                             f"shape {shape} must end in in_features={self.in_features}"
                             ) from None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Sequential(Module):
    """Modules applied in order; the i-th is named "i" (its parameters "i.weight", …)."""

    def __init__(self, *modules: Module) -> None:
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a "
                                f"Module (wrap functions in a Module)")
        self.training = True
        self.layers: tuple[Module, ...] = tuple(modules)

    def _members(self) -> Iterator[tuple[str, Any]]:
        return ((str(i), m) for i, m in enumerate(self.layers))

    def _member_values(self) -> list[Any]:
        if type(self)._members is not Sequential._members:  # a subclass adds members
            return [value for _, value in self._members()]
        return [self.layers]  # the container itself, so zero_grad sees when it is a list

    def forward(self, x: Any) -> Any:
        layers = self.layers
        if (type(layers) is not tuple and type(layers) is not list) or not _fusable():
            for m in layers:
                x = m(x)
            return x
        i, n = 0, len(layers)
        while i < n:
            m = layers[i]
            # A Linear then a ReLU, both as the library defines them, run as one recorded op:
            # the pre-activation never leaves this loop, so it needs no array of its own.
            if type(m) is Linear and i + 1 < n and type(layers[i + 1]) is ReLU \
                    and "forward" not in m.__dict__ and "forward" not in layers[i + 1].__dict__:
                x = m._forward_relu(x)
                i += 2
            else:
                x = m(x)
                i += 1
        return x

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return Sequential(*self.layers[i])
        return self.layers[i]


class ReLU(Module):
    """y = max(x, 0)."""

    def forward(self, x: Any) -> Tensor:
        return mg.relu(x)


class Tanh(Module):
    """y = tanh x."""

    def forward(self, x: Any) -> Tensor:
        return mg.tanh(x)


class Sigmoid(Module):
    """y = 1 / (1 + e⁻ˣ)."""

    def forward(self, x: Any) -> Tensor:
        return mg.sigmoid(x)


class Identity(Module):
    """y = x."""

    def forward(self, x: Any) -> Any:
        return x


class Softmax(Module):
    """y = eˣ / Σ eˣ along `axis` (PyTorch's `dim`)."""

    def __init__(self, axis: int = -1) -> None:
        self.training = True
        self.axis = axis

    def forward(self, x: Any) -> Tensor:
        return mg.softmax(x, self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class LogSoftmax(Softmax):
    """y = x − log Σ eˣ along `axis`."""

    def forward(self, x: Any) -> Tensor:
        return mg.log_softmax(x, self.axis)


_CALL, _LINEAR_FORWARD, _RELU_FORWARD = Module.__call__, Linear.forward, ReLU.forward
_RELU = mg.relu


def _fusable() -> bool:
    """Linear → ReLU may run as linear_relu: the library's own calls are in place (nothing
    patched or spied on at class level), and detect_anomaly is off (it checks each op's output,
    and the relu would hide a pre-activation's −inf)."""
    return (Linear.__call__ is _CALL and ReLU.__call__ is _CALL and mg.relu is _RELU
            and Linear.forward is _LINEAR_FORWARD and ReLU.forward is _RELU_FORWARD
            and not _STATE.anomaly)
