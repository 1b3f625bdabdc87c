"""Modules: objects that hold parameters and compute a forward pass with the engine's ops.

A `Module` registers its state when an attribute is set (`Module.__setattr__`), as PyTorch does:

- a leaf `Tensor` that requires grad becomes a *parameter*. The name stays a parameter when the
  Tensor is frozen later (`requires_grad = False`) or replaced by another leaf Tensor or None;
  other Tensors (activations kept for later, constants) are plain attributes;
- a `Module` becomes a child;
- a list, tuple or dict becomes a child container, opened at every walk (so items added later
  count): its Modules and parameters (leaf Tensors that require grad when walked) are named by
  index or key, like PyTorch's ModuleList, ModuleDict and ParameterList;
- `register_buffer(name, value)` makes a *buffer*: saved in `state_dict()`, never optimized.

The values stay plain attributes in the instance's `__dict__` (reading `self.weight` costs
nothing extra); the module keeps only their names, by kind, in registration order.

Names are PyTorch's: a module's parameters, then its buffers, then each child's, joined with
dots, so `Sequential(Linear(4, 16), ReLU(), Linear(16, 2))` has `0.weight, 0.bias, 2.weight,
2.bias`, and `state_dict()` loads into the same `torch.nn.Sequential` unchanged.

The walks are generators and plain loops that hold no reference to themselves: asking a module
for its parameters, state or printout leaves no reference cycle behind, so `del model` frees its
arrays at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, NamedTuple, Self

import numpy as np

from minigrad.functions import check_linear, log_softmax, softmax
from minigrad.functions import linear as _linear
from minigrad.modes import THREAD
from minigrad.nn import primitives
from minigrad.rules import relu, sigmoid, tanh
from minigrad.tensor import Tensor

__all__ = [
    "IncompatibleKeys", "Identity", "Linear", "LinearReLU", "LogSoftmax", "Module", "ReLU",
    "Sequential", "Sigmoid", "Softmax", "Tanh", "linear_relu",
]

Kind = Literal["param", "buffer", "module"]


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(sd, strict=False)` skipped."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class _Registry:
    """The names under which a module holds state, by kind, each in registration order, with
    the values last assigned to them (the module's attributes of those names)."""

    __slots__ = ("buffers", "children", "params")

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.children: dict[str, Any] = {}


_EMPTY = _Registry()  # read by modules that never had an attribute set; never written to


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
    Calling `super().__init__()` is allowed but not required: the first attribute set makes
    the registry.
    """

    training: bool = True

    def __init__(self) -> None:
        self.training = True

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if THREAD.modes.trace is not None:  # mg.compile: the training flag is part of the signature
            THREAD.modes.trace.reached(self)
        return self.forward(*args, **kwargs)

    # -- registration --------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        registry = _writable_registry(self)
        kind = _kind_of(registry, name, value, type(self).__name__)
        object.__setattr__(self, name, value)
        for k, names in (("param", registry.params), ("buffer", registry.buffers),
                         ("module", registry.children)):
            if k == kind:
                names[name] = value  # a name already of this kind keeps its place
            else:
                names.pop(name, None)

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        registry = _registry(self)
        for names in (registry.params, registry.buffers, registry.children):
            names.pop(name, None)

    def register_buffer(self, name: str, value: Any) -> None:
        """Keep `value` (a Tensor, or anything array-like, stored as a Tensor without grad) as
        `self.<name>`: saved in `state_dict()` but never a parameter, like running statistics.
        None registers the name with nothing to save yet (PyTorch's way of declaring a buffer a
        layer may not have). The name stays a buffer: later assignments take a Tensor or None."""
        if value is not None and not isinstance(value, Tensor):
            value = Tensor(np.array(value, copy=True))
        registry = _writable_registry(self)
        registry.params.pop(name, None)
        registry.children.pop(name, None)
        registry.buffers[name] = None
        setattr(self, name, value)

    # -- the tree, walked by the module-level functions below (no attribute can shadow them) --
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """(dotted name, parameter) for every parameter, frozen ones included, each once."""
        return _named(self, "param", prefix)

    def parameters(self) -> Iterator[Tensor]:
        """Every parameter, frozen ones (requires_grad=False) included, each once."""
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """(dotted name, buffer) for every buffer, each once."""
        return _named(self, "buffer", prefix)

    def buffers(self) -> Iterator[Tensor]:
        for _, b in self.named_buffers():
            yield b

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(name, module) for this module (named `prefix`) and every submodule, each once."""
        return _named(self, "module", prefix)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, module) of the direct submodules, each once; a container's are named by
        index or key ("heads.0")."""
        seen: set[int] = set()
        for name, value, _ in _own(self):
            if isinstance(value, Module) and id(value) not in seen:
                seen.add(id(value))
                yield name, value

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    # -- training helpers ----------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Reset every parameter's gradient to None (the next backward assigns a fresh one).

        It runs every training step, so it reads the registries in a plain loop instead of the
        named walk."""
        todo, seen = [self], {id(self)}
        while todo:
            registry = todo.pop().__dict__.get("_state_names", _EMPTY)
            for p in registry.params.values():
                if p is not None:
                    p.grad = None
            for name, child in registry.children.items():
                if isinstance(child, Module):  # the common case, without _opened's generator
                    if id(child) not in seen:
                        seen.add(id(child))
                        todo.append(child)
                    continue
                for _, value, _ in _opened(name, child):
                    if isinstance(value, Tensor):
                        value.grad = None
                    elif id(value) not in seen:
                        seen.add(id(value))
                        todo.append(value)

    def requires_grad_(self, requires_grad: bool = True) -> Self:
        """Set `requires_grad` on every parameter; returns self. Frozen parameters stay
        parameters: saved, loaded, and trained by an optimizer again once unfrozen."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def apply(self, fn: Callable[[Module], Any]) -> Self:
        """Call `fn` on every submodule, then on this module (PyTorch's order: children before
        their parent), each module once; returns self."""
        for m in list(_post_order(self, set())):
            fn(m)
        return self

    def train(self, mode: bool = True) -> Self:
        """Set the `training` flag of this module and every submodule; returns self."""
        for m in list(self.modules()):
            m.training = bool(mode)
        return self

    def eval(self) -> Self:
        """`train(False)`."""
        return self.train(False)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """{dotted name: a copy of the array}, PyTorch's keys and layouts, parameters (frozen
        ones too) and buffers alike."""
        return {name: t.data.copy() for name, t in _state_tensors(self)}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True
                        ) -> IncompatibleKeys:
        """Copy `state_dict`'s arrays into this module's parameters and buffers (cast to their
        dtype), in place, so references to their arrays stay valid; a read-only array is
        replaced instead.

        Nothing changes unless everything fits: a value that is not an array of real numbers,
        a shape mismatch, and with `strict` a missing or unexpected key, raise RuntimeError
        listing every problem at once. Values may be ndarrays, Tensors or anything
        `np.asarray` takes (a CPU `torch.Tensor`).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict: expected a dict of arrays, got "
                            f"{type(state_dict).__name__}")
        own = dict(_state_tensors(self))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        new, problems = _arrays_to_load(own, state_dict)
        if problems or (strict and (missing or unexpected)):
            lines = [f"load_state_dict: the state dict does not fit {type(self).__name__}:"]
            if strict:
                lines += [f"  {heading}: " + ", ".join(map(str, keys)) for heading, keys in
                          (("missing keys", missing), ("unexpected keys", unexpected)) if keys]
            lines += [f"  {heading}: " + "; ".join(items) for heading, items in problems.items()]
            raise RuntimeError("\n".join(lines))
        for name, value in new.items():
            t = own[name]
            if t.data.flags.writeable:
                np.copyto(t.data, value, casting="unsafe")
            else:
                t.data = np.array(value, dtype=t.dtype, copy=True)
        return IncompatibleKeys(missing, unexpected)

    # -- printing ------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [(name, m) for name, m, _ in _own(self) if isinstance(m, Module)]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        body = "".join(f"\n  ({name}): " + repr(m).replace("\n", "\n  ")
                       for name, m in children)
        return f"{type(self).__name__}({body}\n)"


def _registry(module: Module) -> _Registry:
    return module.__dict__.get("_state_names", _EMPTY)


def _writable_registry(module: Module) -> _Registry:
    """The module's registry, made on first use: subclasses need not call super().__init__()."""
    registry = module.__dict__.get("_state_names")
    if registry is None:
        registry = module.__dict__["_state_names"] = _Registry()
    return registry


def _own(module: Module) -> Iterator[tuple[str, Module | Tensor, Kind]]:
    """(name, value, kind) of what a module holds directly, in PyTorch's order: its
    parameters, its buffers, then its children, containers opened. The names are copied first,
    so a caller may change the module while it walks."""
    d, registry = module.__dict__, _registry(module)
    for name in tuple(registry.params):
        if isinstance(value := d.get(name), Tensor):
            yield name, value, "param"
    for name in tuple(registry.buffers):
        if isinstance(value := d.get(name), Tensor):
            yield name, value, "buffer"
    for name in tuple(registry.children):
        yield from _opened(name, d.get(name))


def _walk(module: Module, prefix: str = "", path: tuple[int, ...] = ()
          ) -> Iterator[tuple[str, Module | Tensor, Kind]]:
    """(dotted name, value, kind) over the tree in PyTorch's order: the module, its parameters
    and buffers, then each child's subtree. A module shared by two parents is walked under both
    names; one already on the path from the root (a cycle) is not entered again."""
    yield prefix, module, "module"
    dot = prefix + "." if prefix else ""
    path = path + (id(module),)
    for name, value, kind in _own(module):
        if not isinstance(value, Module):
            yield dot + name, value, kind
        elif id(value) not in path:
            yield from _walk(value, dot + name, path)


def _named(module: Module, kind: Kind, prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted name, value) of each value of this kind in the tree, each object once."""
    seen: set[int] = set()
    for name, value, k in _walk(module, prefix):
        if k == kind and id(value) not in seen:
            seen.add(id(value))
            yield name, value


def _state_tensors(module: Module) -> Iterator[tuple[str, Tensor]]:
    # Like PyTorch, a Tensor shared by two submodules appears under both names.
    for name, value, kind in _walk(module):
        if kind != "module" and isinstance(value, Tensor):
            yield name, value


def _kind_of(registry: _Registry, name: str, value: Any, owner: str) -> Kind | None:
    """What `owner.name = value` registers. A parameter's name keeps taking a leaf Tensor or
    None and a buffer's a Tensor or None (anything else is refused, as PyTorch does, rather
    than silently dropped from the state); for any other name the value decides."""
    if name in registry.buffers:
        if value is None or isinstance(value, Tensor):
            return "buffer"
        raise TypeError(f"{owner}.{name} is a buffer: assign a Tensor or None, got "
                        f"{type(value).__name__}")
    if name in registry.params:
        if value is None or isinstance(value, Tensor) and value.is_leaf:
            return "param"
        what = ("a Tensor computed by ops (not a leaf)" if isinstance(value, Tensor)
                else type(value).__name__)
        raise TypeError(f"{owner}.{name} is a parameter: assign a leaf Tensor or None, got "
                        f"{what}; delete the attribute first to use the name otherwise")
    if isinstance(value, Tensor) and value.is_leaf and value.requires_grad:
        return "param"
    if isinstance(value, (Module, list, tuple, dict)):
        return "module"
    return None


def _opened(name: str, value: Any) -> Iterator[tuple[str, Module | Tensor, Kind]]:
    """What a child holds: the Module itself, or a container's Modules and parameters (leaf
    Tensors that require grad), named by index or key, opened recursively."""
    if isinstance(value, Module):
        yield name, value, "module"
    elif isinstance(value, Tensor):
        if value.is_leaf and value.requires_grad:
            yield name, value, "param"
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _opened(f"{name}.{i}", item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _opened(f"{name}.{key}", item)


def _post_order(module: Module, seen: set[int]) -> Iterator[Module]:
    seen.add(id(module))
    for child in module.children():
        if id(child) not in seen:
            yield from _post_order(child, seen)
    yield module


def _arrays_to_load(own: dict[str, Tensor], state_dict: Mapping[str, Any]
                    ) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The arrays to copy into `own`'s Tensors, and the problems found under their headings
    (only headings with problems)."""
    new: dict[str, np.ndarray] = {}
    not_arrays: list[str] = []
    shapes: list[str] = []
    for name, t in own.items():
        if name not in state_dict:
            continue
        raw = state_dict[name]
        try:
            value = np.asarray(raw)
        except Exception as e:  # whatever the conversion raises is reported with the key
            not_arrays.append(f"{name}: cannot convert {type(raw).__name__} to an array ({e})")
            continue
        if value.dtype.kind not in "biuf":
            not_arrays.append(f"{name}: {type(raw).__name__} of dtype {value.dtype} does not "
                              f"hold real numbers")
        elif value.shape != t.shape:
            shapes.append(f"{name}: checkpoint shape {value.shape}, module shape {t.shape}")
        else:
            new[name] = value
    headed = {"values that are not arrays of real numbers": not_arrays,
              "shape mismatches": shapes}
    return new, {heading: items for heading, items in headed.items() if items}


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

    def _restate(self, x: Any) -> None:
        """A shape error said in this module's terms, when the input is what does not fit."""
        shape = x.shape if isinstance(x, Tensor) else np.shape(x)
        if shape[-1:] != (self.in_features,):
            raise ValueError(f"{type(self).__name__}({self.in_features}, {self.out_features}): "
                             f"input of shape {shape} must end in "
                             f"in_features={self.in_features}") from None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class LinearReLU(Linear):
    """y = max(x Wᵀ + b, 0): a Linear and a ReLU as one recorded op, the fusion made explicit.

    `Sequential(Linear(a, b), ReLU(), ...)` records two ops and keeps the pre-activation alive
    until backward; `Sequential(LinearReLU(a, b), ...)` records one and keeps only the output
    (whose sign is the ReLU's derivative): one activation-sized array fewer, one op fewer.
    Arguments, initialisation, parameters and checkpoint layout are Linear's.
    """

    def forward(self, x: Any) -> Tensor:
        try:
            return linear_relu(x, self.weight, self.bias)
        except ValueError:
            self._restate(x)
            raise


def linear_relu(x: Any, weight: Any, bias: Any = None) -> Tensor:
    """max(x weightᵀ + bias, 0) as one recorded op (the row `nn.primitives.linear_relu`): the tape
    keeps the output, not the pre-activation as well. Under `detect_anomaly` it records linear
    and relu apart, so that the pre-activation's NaN/Inf check runs (the fused op never sees it).
    """
    check_linear(x, weight, bias, "linear_relu")
    if THREAD.modes.anomaly:
        return relu(_linear(x, weight, bias))
    if bias is None:
        return primitives.linear_relu(x, weight)
    return primitives.linear_relu(x, weight, bias)


class Sequential(Module):
    """Modules applied in order. The i-th is the child "i" (its parameters "i.weight", …);
    as in PyTorch, `forward` calls every child Module in the order they were set."""

    def __init__(self, *modules: Module) -> None:
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a "
                                f"Module (wrap functions in a Module)")
        self.training = True
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    @property
    def layers(self) -> tuple[Module, ...]:
        """The child Modules, in order."""
        d = self.__dict__
        return tuple(m for m in map(d.get, _registry(self).children) if isinstance(m, Module))

    def forward(self, x: Any) -> Any:
        for m in self.layers:
            x = m(x)
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
        return relu(x)


class Tanh(Module):
    """y = tanh x."""

    def forward(self, x: Any) -> Tensor:
        return tanh(x)


class Sigmoid(Module):
    """y = 1 / (1 + e⁻ˣ)."""

    def forward(self, x: Any) -> Tensor:
        return sigmoid(x)


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
        return softmax(x, self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class LogSoftmax(Softmax):
    """y = x − log Σ eˣ along `axis`."""

    def forward(self, x: Any) -> Tensor:
        return log_softmax(x, self.axis)
