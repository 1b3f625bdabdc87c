"""Tracing for `mg.compile`: one eager run of a step, written down as straight-line NumPy.

While a trace is this thread's `THREAD.modes.trace`, `graph.apply` hands every primitive to
`Trace.record`, which runs it as usual and writes one line, `v7 = np.maximum(v6, 0)`. Every value
the lines speak of is an ndarray known by identity: an argument, a Tensor read from outside (a
module's parameter: an input read afresh at every call), an op's output, or a constant (an array
made inside the step). The reverse sweep is traced the same way: run with `create_graph`, every
VJP is made of primitives, so it is recorded too. Nothing is ever guessed: Python that reads a
traced value, an argument computed on with NumPy, a random draw or a buffer write raise
`CompileError` at the user's line instead of being frozen into the program.

Arguments are stand-ins while tracing. A float is a `TracedFloat`: arithmetic on it is a line
(`f3 = lr * f2`), a comparison or conversion raises. An ndarray is a `TracedArray`: its views
and copies (`y.reshape(-1)`, `a[:, 1:]`) are lines, NumPy computing on it or a number read out
of it raises; a boolean mask that changes between calls, which would change the shapes after
it, is refused. What minigrad itself computes from an argument's values (a mask, the targets'
weights) goes through `functions.constant`, which is a line too.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import linecache
import os
import re
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from minigrad import graph, lowering
from minigrad.function import FunctionCtx
from minigrad.graph import TensorBase, apply, leaf, run_backward
from minigrad.modes import THREAD
from minigrad.rules import Primitive


class CompileError(RuntimeError):
    """A step cannot be traced faithfully: its Python depends on a traced value, or it has an
    effect a replay would lose. The message names the user's line."""


# With the separator: a user's folder named like the package (minigrad_examples/) is not it.
_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__)) + os.sep


def _site() -> str:
    """File:line and source of the innermost frame that is neither minigrad's nor NumPy's: the
    user's line (modes.user_site, which stops at NumPy's Python code, would name NumPy's)."""
    frame: Any = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            (_PKG_DIR, _NUMPY_DIR)):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    src = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{frame.f_code.co_filename}:{frame.f_lineno}: {src}"


def _caller_is_user(depth: int = 2) -> bool:
    """Is the first frame above `depth` that is not NumPy's own outside minigrad?"""
    frame: Any = sys._getframe(depth)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_NUMPY_DIR):
            return not path.startswith(_PKG_DIR)
        frame = frame.f_back
    return True


# --- traced arguments -------------------------------------------------------------------------
class TracedFloat(float):
    """A float argument while tracing: an input of the program. As an operand of Tensor ops it
    is recorded; arithmetic with other numbers (`lr * (1 - beta)`) is a line of the program
    whose result is again a TracedFloat; a comparison or a conversion (`if lr > 0`, `int(lr)`),
    which would freeze its value, raises. Inside an op (NumPy reading it as a number) it is the
    float it holds."""

    __hash__ = float.__hash__


_ARITHMETIC = {"__add__": "{0} + {1}", "__radd__": "{1} + {0}", "__sub__": "{0} - {1}",
               "__rsub__": "{1} - {0}", "__mul__": "{0} * {1}", "__rmul__": "{1} * {0}",
               "__truediv__": "{0} / {1}", "__rtruediv__": "{1} / {0}",
               "__pow__": "{0} ** {1}", "__rpow__": "{1} ** {0}", "__neg__": "-{0}",
               "__pos__": "+{0}", "__abs__": "abs({0})"}


def _guarded(name: str) -> Any:
    plain = getattr(float, name)
    template = _ARITHMETIC.get(name)

    def method(self: float, *other: Any) -> Any:
        if THREAD.modes.trace is None:  # a primitive is running: NumPy reads the number
            return plain(self, *other)
        if other and isinstance(other[0], TensorBase):
            return NotImplemented
        if template is not None and all(isinstance(o, (int, float, np.integer, np.floating))
                                        for o in other):
            value = plain(self, *other)
            if type(value) is float:
                return THREAD.modes.trace.scalar(value, template, (self, *other))
        raise CompileError(f"compile: a comparison or conversion of a float argument would "
                           f"freeze its value into the program, at {_site()}; compute with it "
                           f"as a Tensor operand (mg.where for a choice), or pass the result "
                           f"as the argument")
    return method


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
              "__rtruediv__", "__pow__", "__rpow__", "__floordiv__", "__mod__", "__lt__", "__le__",
              "__gt__", "__ge__", "__neg__", "__abs__", "__float__", "__int__", "__bool__",
              "__round__", "__eq__", "__ne__", "__pos__", "__rfloordiv__", "__rmod__",
              "__divmod__", "__rdivmod__", "__floor__", "__ceil__", "__trunc__"):
    setattr(TracedFloat, _name, _guarded(_name))


class TracedArray(np.ndarray):
    """An ndarray argument while tracing: minigrad's ops read it (it is an input of the
    program); NumPy called on it from the step's own code raises, since the result would be
    frozen into the program."""

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if any(isinstance(x, TensorBase) for x in inputs):
            return NotImplemented  # the Tensor's own protocol records it
        _refuse_numpy(f"np.{ufunc.__name__}")
        inputs = tuple(x.view(np.ndarray) if isinstance(x, TracedArray) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        if any(issubclass(t, TensorBase) for t in types):
            return NotImplemented
        _refuse_numpy(f"np.{func.__name__}")
        return super().__array_function__(func, types, args, kwargs)

    # Python numbers read out of an argument by the step's code would be frozen the same way;
    # views and copies of it are written into the program as lines (`y.reshape(-1)`).
    def __getitem__(self, index: Any) -> Any:
        out = super().__getitem__(index)
        if not isinstance(out, np.ndarray):
            _refuse_numpy("a number read out (a[i])")
            return out
        return _derive(self, out, "[]", (index,))

    def reshape(self, *args: Any, **kwargs: Any) -> Any:
        return _derive(self, super().reshape(*args, **kwargs), "reshape", args, kwargs)

    def transpose(self, *args: Any) -> Any:
        return _derive(self, super().transpose(*args), "transpose", args)

    @property
    def T(self) -> Any:  # noqa: N802  (NumPy's name)
        return _derive(self, super().T, "T", ())

    def ravel(self, *args: Any) -> Any:
        return _derive(self, super().ravel(*args), "ravel", args)

    def flatten(self, *args: Any) -> Any:
        return _derive(self, super().flatten(*args), "flatten", args)

    def squeeze(self, *args: Any, **kwargs: Any) -> Any:
        return _derive(self, super().squeeze(*args, **kwargs), "squeeze", args, kwargs)

    def astype(self, *args: Any, **kwargs: Any) -> Any:
        return _derive(self, super().astype(*args, **kwargs), "astype", args, kwargs)

    def copy(self, *args: Any) -> Any:
        return _derive(self, super().copy(*args), "copy", args)

    def __iter__(self) -> Any:
        _refuse_numpy("iteration")
        return super().__iter__()

    def item(self, *args: Any) -> Any:
        _refuse_numpy("item()")
        return super().item(*args)

    def tolist(self) -> Any:
        _refuse_numpy("tolist()")
        return super().tolist()

    def __int__(self) -> int:
        _refuse_numpy("int()")
        return int(self.view(np.ndarray))

    def __float__(self) -> float:
        _refuse_numpy("float()")
        return float(self.view(np.ndarray))

    def __index__(self) -> int:
        _refuse_numpy("index()")
        return self.view(np.ndarray).__index__()  # type: ignore[no-any-return]

    def __bool__(self) -> bool:
        _refuse_numpy("bool()")
        return bool(self.view(np.ndarray))


def _derive(source: TracedArray, out: Any, method: str, args: tuple[Any, ...],
            kwargs: dict[str, Any] | None = None) -> Any:
    """out = source.method(*args): a new variable of the program, made by that line."""
    trace = THREAD.modes.trace
    if trace is None or not isinstance(out, np.ndarray):
        return out
    return trace.derive(source, out, method, args, kwargs or {})


_FLOAT_AS_ARRAY = {"power"}  # rows whose VJP calls NumPy functions on a scalar operand


def _has_float(v: Any) -> bool:
    return type(v) is TracedFloat or isinstance(v, (tuple, list)) and any(map(_has_float, v))


def _plain(v: Any) -> Any:
    """v with each float argument as the plain float it holds (NumPy takes a float subclass
    for a float64 array, a Python float as a scalar that keeps float32 float32)."""
    if type(v) is TracedFloat:
        return float.__float__(v)
    if isinstance(v, (tuple, list)) and any(map(_has_float, v)):
        return type(v)(map(_plain, v))
    return v


def _keep_traced_floats(t: TensorBase, args: tuple[Any, ...], params: dict[str, Any]) -> None:
    """The record of an op run on plain floats (`_plain`) holds the float arguments again, so
    a VJP traced from it computes with them, not with the numbers they held at the trace."""
    if any(map(_has_float, args)):
        t._values = [a if _has_float(a) else v for a, v in zip(args, t._values)]
    if any(map(_has_float, params.values())):
        t._params = {k: params[k] if _has_float(params[k]) else v for k, v in t._params.items()}


def _contents(cell: Any) -> Any:
    """A closure cell's value (None while the variable is unassigned)."""
    try:
        return cell.cell_contents
    except ValueError:
        return None


_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")
_NAME = re.compile(r"[A-Za-z_]\w*")


def _names_in(sources: Any) -> list[str]:
    """The variables a parameter's source text reads (an index tuple `(c_2, actions)` reads
    actions): the line uses them, and needs them defined before it."""
    return [n for src in sources for n in _NAME.findall(_STRING.sub("", src))]


def _refuse_numpy(what: str) -> None:
    if _caller_is_user(3):
        raise CompileError(f"compile: {what} of an array argument would freeze the result into "
                           f"the program, at {_site()}; use minigrad ops on it (mg.tensor(a) "
                           f"makes it a Tensor), or compute it outside and pass it in")


# --- pytrees (the transforms' rules: dicts, lists, tuples; a list of numbers is one leaf) ----
def _is_node(a: Any) -> bool:
    """Every dict, list and tuple is opened: a number in one is a leaf of its own (a float an
    input, an int part of the signature), where the transforms read a list of numbers as one
    array."""
    return isinstance(a, (dict, list, tuple))


def flatten(tree: Any) -> tuple[list[Any], Any]:
    """The leaves of tree in order, and its structure (hashable)."""
    leaves: list[Any] = []

    def walk(t: Any) -> Any:
        if isinstance(t, dict):
            return ("dict", tuple(t), tuple(walk(v) for v in t.values()))
        if _is_node(t):
            kind = type(t) if hasattr(t, "_fields") else type(t).__name__
            return (kind, tuple(walk(v) for v in t))
        leaves.append(t)
        return None
    return leaves, walk(tree)


def unflatten(treedef: Any, leaves: list[Any]) -> Any:
    it = iter(leaves)

    def build(d: Any) -> Any:
        if d is None:
            return next(it)
        if d[0] == "dict":
            return {k: build(v) for k, v in zip(d[1], d[2])}
        items = [build(v) for v in d[1]]
        if d[0] == "tuple":
            return tuple(items)
        if d[0] == "list":
            return items
        return d[0](*items)
    return build(treedef)


# --- values as source text ----------------------------------------------------------------------
def _literal(v: Any) -> str | None:
    """v as Python source, if it has an exact short form."""
    if v is None or v is Ellipsis or isinstance(v, (bool, int, str)):
        return "..." if v is Ellipsis else repr(v)
    if type(v) is float:
        return repr(v) if np.isfinite(v) else None
    if isinstance(v, slice):
        parts = [_literal(p) for p in (v.start, v.stop, v.step)]
        return None if None in parts else f"slice({', '.join(parts)})"  # type: ignore[arg-type]
    if isinstance(v, np.dtype):
        return f"np.dtype({v.str!r})" if v.names is None else None
    name = getattr(v, "__name__", "")
    if isinstance(v, type) and getattr(np, name, None) is v:  # a scalar type
        return f"np.{name}"
    return None


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.shape == b.shape and a.dtype == b.dtype and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


class Line:
    """`target = expr  # comment`, and what the memory plan (plan.py) needs to know of it: the
    op, the value it had while tracing, and when it is one ufunc of its operands, that ufunc
    (so it can be given `out=`), its operands and its parameters."""

    __slots__ = ("target", "expr", "uses", "comment", "phase", "op", "value", "ufunc",
                 "operands", "params", "ndims")

    def __init__(self, target: str, expr: str, uses: list[str], comment: str, phase: int):
        self.target, self.expr, self.uses = target, expr, uses
        self.comment, self.phase = comment, phase
        self.op = ""
        self.value: Any = None
        self.ufunc: np.ufunc | None = None
        self.operands: list[str] = []  # the op's operands as source (not its parameters)
        self.params: dict[str, Any] = {}  # its parameters' values while tracing
        self.ndims: tuple[int, ...] = ()  # its operands' numbers of axes while tracing


def _as_rule(op: Primitive) -> bool:
    """Is op written as its rule? Where it runs its rule, and where generated code has its own
    form of op's eager kernel (lowering.OWN_FORMS: a small product written `a.dot(b)`)."""
    return op.run is op.forward or op.name in lowering.OWN_FORMS


def _describe(line: Line, op: Primitive, refs: list[str], params: dict[str, Any],
              value: Any, args: tuple[Any, ...]) -> None:
    line.op, line.value, line.operands, line.params = op.name, value, refs, params
    line.ndims = tuple(np.ndim(_plain(a)) for a in args)
    if _as_rule(op) and isinstance(op.forward, np.ufunc) and not params:
        line.ufunc = op.forward
    elif op.name == "relu" and op.run is op.forward:
        line.ufunc, line.operands = np.maximum, [refs[0], "0"]


def _identity(op: Primitive, args: tuple[Any, ...], refs: list[str], ans: Any,
              dynamic: set[str]) -> str | None:
    """The operand an op returns unchanged: x + 0, 0 + x, x − 0, x·1, 1·x, x / 1 with a constant
    0 or 1 (of any shape that broadcasts to x's), when x has the result's shape and dtype."""
    unit = {"add": 0, "subtract": 0, "multiply": 1, "divide": 1}.get(op.name)
    if unit is None or len(args) != 2:
        return None
    sides = ((0, 1), (1, 0)) if op.name in ("add", "multiply") else ((0, 1),)
    for keep, drop in sides:
        x = args[keep]._data if isinstance(args[keep], TensorBase) else args[keep]
        c = args[drop]._data if isinstance(args[drop], TensorBase) else args[drop]
        if (refs[drop] not in dynamic and refs[keep] in dynamic and isinstance(x, np.ndarray)
                and x.shape == np.shape(ans) and x.dtype == ans.dtype
                and type(c) is not TracedFloat and np.all(np.asarray(c) == unit)):
            return refs[keep]
    return None


_COMPARISONS: dict[Any, str] = {np.greater: ">", np.less: "<", np.greater_equal: ">=",
                                np.less_equal: "<=", np.equal: "==", np.not_equal: "!="}


# ---------------------------------------------------------------------------------------------
# The trace
# ---------------------------------------------------------------------------------------------
class Trace:
    """One run of fn on the tape, written down as lines (see the module's docstring)."""

    def __init__(self, fn: Callable[..., Any], static_argnums: tuple[int, ...]) -> None:
        self.fn, self.static_argnums = fn, static_argnums
        self.vars: dict[int, str] = {}  # id(ndarray) -> the variable holding it
        self.pinned: list[Any] = []  # everything whose id is in vars stays alive while tracing
        self.floats: dict[int, str] = {}
        self.lines: list[Line] = []
        self.phase = 0
        self.names: set[str] = {"np", "g"}
        self.globals: dict[str, Any] = {"np": np}
        self.site_of: dict[str, str] = {}
        self.inputs: list[str] = []  # variable names of the program's inputs, in order
        self.input_arrays: list[np.ndarray] = []  # inputs that are arrays, named in array_names
        self.array_names: list[str] = []
        self.externals: list[TensorBase] = []  # Tensors read from outside, by object
        self.external_names: list[str] = []
        self.created: set[int] = set()  # Tensors made inside the step from constants
        self.modules: list[Any] = []  # modules reached, outermost first
        self.value_of: dict[str, Any] = {}  # a variable's value at the trace
        # outputs that are an argument's Tensor or an outside one: handed back as that object
        self.passthrough: list[tuple[int, str, int]] = []  # (output, "leaf"/"external", index)
        self.counter = 0
        self.dynamic: set[str] = {"g"}  # variables whose value changes between calls
        self.transposed: dict[str, tuple[str, Any]] = {}  # a transpose's result -> its operand

    # -- names -------------------------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in base) or "v"
        if base[0].isdigit() or keyword.iskeyword(base):
            base = "_" + base
        name, n = base, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def _input(self, arr: Any, name: str) -> str:
        self.dynamic.add(name)
        return self._bind(arr, name)

    def _bind(self, arr: Any, name: str) -> str:
        self.vars[id(arr)] = name
        self.pinned.append(arr)
        self.value_of.setdefault(name, arr)
        return name

    def _new_var(self, arr: Any) -> str:
        self.counter += 1
        return self._bind(arr, self._fresh(f"v{self.counter}"))

    def constant(self, value: Any, hint: str = "c") -> str:
        if hint == "c" and isinstance(value, np.ndarray) and value.size > 1:
            hint = "zeros" if not value.any() else "ones" if (value == 1).all() else hint
        if isinstance(value, np.ndarray):  # the program's own, unchangeable: no caller holds it
            value = np.array(value)
            value.flags.writeable = False
        name = self._fresh(hint)
        self.globals[name] = value
        return name

    # -- arguments -----------------------------------------------------------------------------
    def _traced_leaf(self, a: Any, name: str) -> Any:
        if isinstance(a, TensorBase):
            self.inputs.append(self._input(a._data, self._fresh(name)))
            self.input_arrays.append(a._data)
            self.array_names.append(self.inputs[-1])
            return a
        if isinstance(a, np.ndarray) or isinstance(a, np.generic):
            view = np.asarray(a).view(TracedArray)
            self.inputs.append(self._input(view, self._fresh(name)))
            self.input_arrays.append(view)
            self.array_names.append(self.inputs[-1])
            return view
        if type(a) is float:
            tf = TracedFloat(a)
            self.pinned.append(tf)
            self.floats[id(tf)] = self._fresh(name)
            self.dynamic.add(self.floats[id(tf)])
            self.inputs.append(self.floats[id(tf)])
            return tf
        return a

    def _leaf_names(self, args: tuple[Any, ...]) -> list[str]:
        try:
            params = list(inspect.signature(self.fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        out = []
        for i, a in enumerate(args):
            base = names[i] if i < len(names) else f"arg{i}"
            static = i in self.static_argnums or i - len(args) in self.static_argnums
            n = 1 if static else len(flatten(a)[0])  # a static argument: one leaf, None
            out += [base] if n == 1 else [f"{base}_{j}" for j in range(n)]
        return out

    # -- the hooks (called through THREAD.modes.trace) --------------------------------------
    def record(self, op: Primitive, args: tuple[Any, ...], params: dict[str, Any]) -> Any:
        """graph.apply under tracing: run the op as usual and write its line."""
        _refuse_custom(op, params)
        refs = [self.ref(a) for a in args]
        prefs = {k: self.param_ref(v) for k, v in params.items()}
        if op.name == "getitem":
            self._refuse_dynamic_mask(params["index"])
        THREAD.modes.trace = None  # the op's own work is not the step's code
        try:  # on the floats themselves: NumPy's rules for Python scalars, as eager
            t = apply(op, *map(_plain, args), **{k: _plain(v) for k, v in params.items()})
        finally:
            THREAD.modes.trace = self
        if t._op is not None:
            _keep_traced_floats(t, args, params)
            for v, r in zip(t._values, refs):  # what the guard copied is the same value
                if isinstance(v, np.ndarray) and id(v) not in self.vars and r in self.names:
                    self._bind(v, r)
        uses = refs + _names_in(prefs.values())
        if not any(u in self.dynamic for u in uses):  # folded: its value is the same every call
            self._bind(t._data, self.constant(t._data, "c"))
            return t
        same = _identity(op, args, refs, t._data, self.dynamic) or self._untransposed(op, refs,
                                                                                      params)
        if same is not None:  # x + 0, x · 1 (a sum's spread upstream): x itself
            self._bind(t._data, same)
            return t
        target = self._new_var(t._data)
        self.dynamic.add(target)
        if t._op is not None:
            self._bind(t._ans, target)
        self._emit(target, _expression(self, op, refs, prefs, params), uses)
        _describe(self.lines[-1], op, refs, params, t._data, args)
        if op.name == "transpose":
            self.transposed[target] = (refs[0], params["axes"])
        return t

    def _untransposed(self, op: Primitive, refs: list[str], params: dict[str, Any]) -> str | None:
        """The variable a reshape to its own shape, or a transpose of a transpose (the second
        undoing the first, as the reverse sweep's transpose of `W.T` does), gives back."""
        shape = np.shape(self.value_of[refs[0]]) if refs[0] in self.value_of else None
        if op.name == "reshape" and refs[0] in self.dynamic and params.get("shape") == shape:
            return refs[0]  # a reshape to the shape it has (the sweep's rows of a 2-D product)
        if op.name != "transpose" or refs[0] not in self.transposed:
            return None
        source, first = self.transposed[refs[0]]
        second = params["axes"]
        if first is None or second is None:
            return source if first is None and second is None else None
        return source if tuple(first[i] for i in second) == tuple(range(len(first))) else None

    def constant_op(self, fn: Callable[..., Any], args: tuple[Any, ...], name: str) -> Any:
        """functions.constant (comparisons, argmax) under tracing."""
        refs = [self.ref(a) for a in args]
        THREAD.modes.trace = None
        try:
            t = leaf(np.asarray(fn(*[a._data if isinstance(a, TensorBase) else _plain(a)
                                     for a in args])))
        finally:
            THREAD.modes.trace = self
        if not any(r in self.dynamic for r in refs):
            self._bind(t._data, self.constant(t._data, "c"))
            return t
        target = self._new_var(t._data)
        self.dynamic.add(target)
        infix = _COMPARISONS.get(fn) if len(refs) == 2 else None
        if infix is not None:
            self._emit(target, f"{refs[0]} {infix} {refs[1]}", refs)
        else:
            self._emit(target, f"{self.constant(fn, getattr(fn, '__name__', name))}"
                               f"({', '.join(refs)})", refs)
        line = self.lines[-1]
        line.op, line.value = name, t._data
        line.ufunc, line.operands = (fn, refs) if isinstance(fn, np.ufunc) else (None, [])
        return t

    def alias(self, copy: Any, source: Any) -> None:
        """copy is a private copy (or cast) of source, made by minigrad: the same variable."""
        if isinstance(source, TensorBase):
            source = source._data
        if isinstance(copy, np.ndarray) and isinstance(source, np.ndarray):
            name = self._known(source)
            if name is not None:
                if copy.dtype == source.dtype:
                    self._bind(copy, name)
                else:
                    target = self._new_var(copy)
                    self.dynamic.add(target)
                    self._emit(target, f"{name}.astype({_literal(copy.dtype)})", [name])

    def made_tensor(self, t: TensorBase) -> None:
        """Tensor.__init__ under tracing: a Tensor on a traced value is that value; any other
        Tensor made inside the step holds a constant."""
        if self._known(t._data) is None:
            self.alias(t._data, getattr(t._data, "base", None))
        if self._known(t._data) is None:
            self.created.add(id(t))
            self.pinned.append(t)

    def reached(self, module: Any) -> None:
        if all(m is not module for m in self.modules):
            self.modules.append(module)

    def read_value(self, t: TensorBase, what: str) -> None:
        if id(t) in self.created:
            return
        if what == ".data" and not _caller_is_user(3):
            return
        raise CompileError(f"compile: {what} reads a traced Tensor's value in Python, at "
                           f"{_site()}; the program would freeze it. Keep the computation "
                           f"in Tensor ops (mg.where instead of if, for example), or run this "
                           f"part outside the compiled step")

    def scalar(self, value: float, template: str, operands: tuple[Any, ...]) -> TracedFloat:
        """Python arithmetic on float arguments: a line, and its result a TracedFloat."""
        refs = [self.floats[id(v)] if type(v) is TracedFloat else self.ref(v) for v in operands]
        out = TracedFloat(value)
        self.pinned.append(out)
        self.counter += 1
        target = self.floats[id(out)] = self._fresh(f"f{self.counter}")
        self.dynamic.add(target)
        self._emit(target, template.format(*refs), [r for r in refs if r in self.dynamic])
        self.lines[-1].value = value
        return out

    def derive(self, source: Any, out: np.ndarray, method: str, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        """An array argument's view or copy (`TracedArray.reshape` and the like): a line."""
        name = self._known(source)
        if name is None:
            return out
        parts = [self.param_ref(a) for a in args] + \
            [f"{k}={self.param_ref(v)}" for k, v in kwargs.items()]
        if method == "[]":
            expr = f"{name}[{parts[0]}]"
        elif method == "T":
            expr = f"{name}.T"
        else:
            expr = f"{name}.{method}({', '.join(parts)})"
        out = out if isinstance(out, TracedArray) else out.view(TracedArray)
        target = self._new_var(out)
        self.dynamic.add(target)
        self.input_arrays.append(out)
        self.array_names.append(target)
        self._emit(target, expr, [name, *_names_in(parts)])
        return out

    def vjp_operands(self, t: TensorBase) -> tuple[Any, ...]:
        """The operands a VJP traced with create_graph computes with (graph._recorded_operands):
        the input Tensors; an array as a Tensor on it (so its variable is read); a float
        argument as itself, a scalar of the call, or for the rows whose rule takes NumPy's
        functions of it (power's where and log), as a 0-d float64 Tensor holding it."""
        out: list[Any] = []
        op: Any = t._op
        for p, v in zip(t._inputs, t._values):
            if p is not None:
                out.append(p)
            elif isinstance(v, np.ndarray):
                out.append(leaf(v))
            elif type(v) is TracedFloat and op.name in _FLOAT_AS_ARRAY:
                a = leaf(np.asarray(float.__float__(v)))
                target = self._new_var(a._data)
                self.dynamic.add(target)
                self._emit(target, f"np.asarray({self.floats[id(v)]})", [self.floats[id(v)]])
                out.append(a)
            else:
                out.append(v)
        return tuple(out)

    def _refuse_dynamic_mask(self, index: Any) -> None:
        """A boolean mask that changes between calls picks as many elements as it holds True:
        the shapes after it, which the program has written down, would be the trace's."""
        for part in index if isinstance(index, tuple) else (index,):
            if isinstance(part, np.ndarray) and part.dtype == np.bool_ and \
                    self._known(part) in self.dynamic:
                raise CompileError(
                    f"compile: indexing with a boolean mask that changes between calls, at "
                    f"{_site()}: the result's shape depends on how many elements it holds "
                    f"True, and a compiled step has one shape per trace. Use mg.where(mask, x, 0) "
                    f"(same shape), or index with np.flatnonzero(mask) computed outside the step "
                    f"(an index array: its length is part of the signature)")

    def refuse(self, what: str) -> None:
        raise CompileError(f"compile: {what} inside a compiled step, at {_site()}: a replay "
                           f"would lose it. {_ADVICE.get(what, '')}")

    # -- values as variables -------------------------------------------------------------------
    def _known(self, a: Any) -> str | None:
        """The variable holding a: a itself, or an array a is the same view of (np.asarray of a
        traced argument, a Tensor on it)."""
        if not isinstance(a, np.ndarray):
            return None
        name = self.vars.get(id(a))
        if name is not None:
            return name
        for x, xname in zip(self.input_arrays, self.array_names):
            if _same_view(a, x):
                return xname
        b = a.base
        return self._known(b) if isinstance(b, np.ndarray) and _same_view(a, b) else None

    def ref(self, a: Any) -> str:
        """The source text for an operand."""
        if isinstance(a, TensorBase):
            name = self._known(a._data)
            if name is not None:
                return name
            if id(a) in self.created:
                return self.constant(np.array(a._data), "c")
            return self._external(a)
        if isinstance(a, TracedFloat):
            return self.floats[id(a)]
        if isinstance(a, np.ndarray):
            return self.array_ref(a)
        if isinstance(a, (list, tuple)):
            for v in a:
                if isinstance(v, (TracedFloat, TensorBase)):
                    raise CompileError(f"compile: a list holding a float argument or a Tensor "
                                       f"is read as one array, at {_site()}; use mg.stack")
        lit = _literal(a)
        return lit if lit is not None else self.constant(np.array(a) if isinstance(
            a, (list, tuple)) else a, "c")

    def array_ref(self, a: np.ndarray) -> str:
        name = self._known(a)
        if name is not None:
            return name
        for x, xname in zip(self.input_arrays, self.array_names):
            if np.may_share_memory(a, x):
                raise CompileError(f"compile: an array computed with NumPy from the argument "
                                   f"{xname!r} reached an op, at {_site()}; it would be "
                                   f"frozen into the program. Compute it with minigrad ops "
                                   f"(mg.tensor({xname}) gives a Tensor) or pass it in")
        return self.constant(np.array(a), "c")

    def param_ref(self, v: Any) -> str:
        if isinstance(v, TracedFloat):
            return self.floats[id(v)]
        if isinstance(v, np.ndarray):
            return self.array_ref(v)
        if isinstance(v, TensorBase):
            return self.ref(v)
        if isinstance(v, (tuple, list)):
            parts = [self.param_ref(x) for x in v]
            body = ", ".join(parts) + ("," if len(parts) == 1 and isinstance(v, tuple) else "")
            return f"({body})" if isinstance(v, tuple) else f"[{body}]"
        lit = _literal(v)
        return lit if lit is not None else self.constant(v, "c")

    def _external(self, t: TensorBase) -> str:
        """A Tensor the step read from outside: an input, read from the object at every call."""
        name = self._input(t._data, self._fresh(self._external_name(t)))
        self.externals.append(t)
        self.external_names.append(name)
        self.input_arrays.append(t._data)
        self.array_names.append(name)
        return name

    def _external_name(self, t: TensorBase) -> str:
        scopes = dict(getattr(self.fn, "__globals__", {}))
        code = getattr(self.fn, "__code__", None)
        for n, cell in zip(code.co_freevars if code else (),
                           getattr(self.fn, "__closure__", None) or ()):
            scopes[n] = _contents(cell)
        for n, v in scopes.items():
            if v is t:
                return n
        for m in self.modules:
            for pn, p in m.named_parameters():
                if p is t:
                    owner = next((n for n, v in scopes.items() if v is m), "")
                    return f"{owner}_{pn}" if owner else pn
        return "ext"

    def _emit(self, target: str, expr: str, uses: list[str]) -> None:
        comment = self._vjp_site() or _site().split(": ", 1)[-1]
        self.lines.append(Line(target, expr, uses, comment, self.phase))
        self.site_of[target] = comment

    def _vjp_site(self) -> str | None:
        """In the reverse sweep: which forward op's VJP is running."""
        frame: Any = sys._getframe(2)
        code = graph._input_grads.__code__
        while frame is not None:
            if frame.f_code is code:
                t = frame.f_locals.get("t")
                name = self.vars.get(id(t._data)) if t is not None else None
                op = t._op.name if t is not None and t._op is not None else "op"
                return f"VJP of {op} ({name})" if name else f"VJP of {op}"
            if frame.f_code is run_backward.__code__:
                return "the sweep sums gradients"
            frame = frame.f_back
        return None

    # -- the run -------------------------------------------------------------------------------
    def run(self, args: tuple[Any, ...], leaves: list[Any], treedef: Any
            ) -> tuple[list[Any], Any, list[str], list[Any]]:
        """Run fn once on the tape, writing it down. Its output leaves and their structure, the
        variable of each, and per output the variables of its inputs' gradients (None for an
        output that needs no backward)."""
        names = self._leaf_names(args)
        traced = [self._traced_leaf(a, n) for a, n in zip(leaves, names)]
        call_args = list(unflatten(treedef, traced))
        for i in range(len(args)):
            if i in self.static_argnums or i - len(args) in self.static_argnums:
                call_args[i] = args[i]
        prev, THREAD.modes.trace = THREAD.modes.trace, self
        try:
            result = self.fn(*call_args)
            out_leaves, out_def = flatten(result)
            outs = [self._output(o, k, leaves) for k, o in enumerate(out_leaves)]
            grads = self._trace_backward(out_leaves, leaves)
        finally:
            THREAD.modes.trace = prev
        return out_leaves, out_def, outs, grads

    def _output(self, o: Any, k: int, leaves: list[Any]) -> str:
        """The variable output k is. As eager, an argument or outside Tensor returned comes
        back as itself, and any other output holds memory of its own wherever eager's did: a
        constant, or a value eager copied (`mg.tensor(x)`, x · 1), is copied at every call."""
        if not isinstance(o, TensorBase):
            raise CompileError(f"compile: the step returned a {type(o).__name__}; return "
                               f"Tensors (in tuples, lists or dicts)")
        name = self.ref(o)
        for kind, pool in (("leaf", leaves), ("external", self.externals)):
            i = next((i for i, a in enumerate(pool) if a is o), None)
            if i is not None:
                self.passthrough.append((k, kind, i))
                return name
        was = self.value_of.get(name)
        if name in self.dynamic and (was is None or np.may_share_memory(o._data, was)):
            return name
        target = self._fresh(f"out{k}")
        self.dynamic.add(target)
        self._emit(target, f"np.array({name})", [name])
        return target

    def _trace_backward(self, outs: list[Any], leaves: list[Any]) -> list[Any]:
        """Per output that needs one: the VJPs of its inputs, traced with create_graph."""
        inputs = [a for a in leaves if isinstance(a, TensorBase)] + self.externals
        wanted = [x for x in inputs if x._requires_grad]
        grads: list[Any] = []
        recording = THREAD.modes.grad_enabled
        for k, o in enumerate(outs):
            if not (wanted and recording and o._requires_grad and o._op is not None):
                grads.append(None)
                continue
            self.phase = k + 1
            g = leaf(np.ones_like(o._data))
            self._bind(g._data, "g")
            gs = run_backward(o, g, retain_graph=True, inputs=wanted, create_graph=True)
            by_id = {id(x): gx for x, gx in zip(wanted, gs or [])}
            grads.append([None if by_id.get(id(x)) is None else self.ref(by_id[id(x)])
                          for x in inputs])
        self.phase = 0
        return grads


# ---------------------------------------------------------------------------------------------
# What a later call must find where the trace found it
# ---------------------------------------------------------------------------------------------
Watch = tuple[Callable[[], Any], Any]  # (read the place again, what it held at the trace)
_ATOMS = (TensorBase, np.ndarray, np.generic, type, types.ModuleType, str, bytes, int, float,
          complex, type(None), types.BuiltinFunctionType)
_WIDEST = 256  # a container this long is data, not where a model keeps its parts
_DEEPEST = 8


def watches(fn: Any, targets: set[int]) -> list[Watch]:
    """Every rebindable place (a closure cell, a global fn reads, an attribute, a list item or
    dict entry) on a path from fn to one of `targets` (the ids of the Tensors read from outside
    and the modules reached), with what it holds now: a parameter swapped anywhere along the
    way (`model.head.weight = …`, `layers[0] = …`, a new model in a global) shows at the next
    call as one of these reading differently."""
    found: list[Watch] = []
    leads: dict[int, bool] = {}  # object id -> reaches a target (False while being walked)

    def walk(obj: Any, depth: int) -> bool:
        k = id(obj)
        if k in leads:
            return leads[k]
        leads[k] = k in targets
        if isinstance(obj, _ATOMS) or depth >= _DEEPEST:
            return leads[k]
        for read, value, rebindable in _references(obj):
            if walk(value, depth + 1):
                leads[k] = True
                if rebindable:
                    found.append((read, value))
        return leads[k]

    walk(fn, 0)
    return found


def own_attribute(obj: Any, name: str) -> Any:
    return vars(obj).get(name)  # the instance's own, as the trace found it (no descriptors)


def _item(container: Any, key: Any) -> Any:
    try:
        return container[key]
    except (IndexError, KeyError):
        return None


def _references(obj: Any) -> Iterator[tuple[Callable[[], Any], Any, bool]]:
    """(read again, value, whether the place can be rebound) for each reference obj holds."""
    if isinstance(obj, types.FunctionType):
        yield from _function_references(obj)
    elif isinstance(obj, types.MethodType):
        yield functools.partial(getattr, obj, "__self__"), obj.__self__, False
        yield functools.partial(getattr, obj, "__func__"), obj.__func__, False
    elif isinstance(obj, functools.partial):
        yield functools.partial(getattr, obj, "func"), obj.func, False
        for i, v in enumerate((*obj.args, *obj.keywords.values())):
            yield functools.partial(_item, obj.args, i), v, False
    elif isinstance(obj, (list, tuple)) and len(obj) <= _WIDEST:
        for i, v in enumerate(obj):
            yield functools.partial(_item, obj, i), v, isinstance(obj, list)
    elif isinstance(obj, dict) and len(obj) <= _WIDEST:
        for key, v in list(obj.items()):
            yield functools.partial(_item, obj, key), v, True
    elif isinstance(getattr(obj, "__dict__", None), dict):
        for name, v in list(vars(obj).items()):
            yield functools.partial(own_attribute, obj, name), v, True


def _function_references(fn: types.FunctionType
                         ) -> Iterator[tuple[Callable[[], Any], Any, bool]]:
    """A function's closure cells, the globals its code names, its attributes (__wrapped__)."""
    for cell in fn.__closure__ or ():
        yield functools.partial(_contents, cell), _contents(cell), True
    scope = fn.__globals__
    for name in fn.__code__.co_names:
        if name in scope:
            yield functools.partial(scope.get, name), scope[name], True
    for name, v in list(vars(fn).items()):
        yield functools.partial(own_attribute, fn, name), v, True


_ADVICE = {
    "backward()": "Compile the loss and call backward() on the compiled step's output, or "
                  "compile mg.value_and_grad(loss_fn).",
    "opt.step()": "Call the optimizer after the compiled step returns.",
    "a random draw (dropout in training mode)":
        "Pass the random mask in as an argument, or call model.eval().",
    "a buffer write (BatchNorm's running statistics)":
        "Call model.eval() for the compiled step, or update the statistics outside it.",
}


def _refuse_custom(op: Primitive, params: dict[str, Any]) -> None:
    if any(isinstance(v, FunctionCtx) for v in params.values()) or op.name == "first_order_only":
        raise CompileError(f"compile: the custom mg.Function {op.name} keeps state between its "
                           f"forward and backward in Python, which a generated program cannot "
                           f"replay; call it outside the compiled step (at {_site()})")


def _expression(trace: Trace, op: Primitive, refs: list[str], prefs: dict[str, str],
                params: dict[str, Any]) -> str:
    run = op.forward if _as_rule(op) else op.run
    if run is op.forward or op.name == "scatter_add":
        written = lowering.write(op.name, refs, prefs, params, trace.dynamic)
        if written is not None:
            if "scatter_unique" in written:
                trace.globals["scatter_unique"] = lowering.scatter_unique
            return written
    infix = _INFIX.get(op.name)
    if infix and run is op.forward and not prefs and len(refs) == 2:
        return f"{refs[0]} {infix} {refs[1]}"
    if op.name == "negative" and not prefs:
        return f"-{refs[0]}"
    if isinstance(run, np.ufunc):
        fname = f"np.{run.__name__}"
    elif isinstance(getattr(run, "__self__", None), np.ufunc):
        fname = f"np.{run.__self__.__name__}.{run.__name__}"  # type: ignore[attr-defined]
    elif getattr(np, getattr(run, "__name__", ""), None) is run:
        fname = f"np.{run.__name__}"
    else:
        fname = next((n for n, v in trace.globals.items() if v is run), None) or \
            trace.constant(run, op.name)
    return f"{fname}({', '.join(refs + [f'{k}={v}' for k, v in prefs.items()])})"


_INFIX = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/", "matmul": "@",
          "power": "**"}
