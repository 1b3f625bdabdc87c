"""Tracing for `mg.compile`: one eager run of a step, written down as straight-line NumPy.

While a trace is this thread's `MODES.trace`, `graph.apply` hands every primitive to
`Trace.record`, which runs it as usual and writes one line, `v7 = np.maximum(v6, 0)`. Every value
the lines speak of is an ndarray known by identity: an argument, a Tensor read from outside (a
module's parameter: an input read afresh at every call), an op's output, or a constant (an array
made inside the step). The reverse sweep is traced the same way: run with `create_graph`, every
VJP is made of primitives, so it is recorded too. Nothing is ever guessed: Python that reads a
traced value, an argument computed on with NumPy, a random draw or a buffer write raise
`CompileError` at the user's line instead of being frozen into the program.
"""

from __future__ import annotations

import inspect
import keyword
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from minigrad import graph
from minigrad.graph import TensorBase, apply, leaf, run_backward
from minigrad.modes import MODES, user_site
from minigrad.rules import Primitive


class CompileError(RuntimeError):
    """A step cannot be traced faithfully: its Python depends on a traced value, or it has an
    effect a replay would lose. The message names the user's line."""


_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))


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
    """A float argument while tracing: an input of the program, so Python arithmetic on it
    (which would freeze its value) raises; as an operand of Tensor ops it is recorded."""

    def _refuse(self, *other: Any) -> Any:
        if other and isinstance(other[0], TensorBase):
            return NotImplemented
        raise CompileError(f"compile: Python arithmetic or a comparison on a float argument "
                           f"would freeze its value into the program, at {user_site()}; compute "
                           f"with it as a Tensor operand, or pass the result as the argument")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __pow__ = __rpow__ = __floordiv__ = __mod__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = __neg__ = __abs__ = __float__ = __int__ = _refuse
    __bool__ = __round__ = _refuse
    __hash__ = float.__hash__


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


def _refuse_numpy(what: str) -> None:
    if _caller_is_user(3):
        raise CompileError(f"compile: {what} on an array argument would freeze the result into "
                           f"the program, at {user_site()}; use minigrad ops on it (mg.tensor(a) "
                           f"makes it a Tensor), or compute it outside and pass it in")


# --- pytrees (the transforms' rules: dicts, lists, tuples; a list of numbers is one leaf) ----
def _is_node(a: Any) -> bool:
    if isinstance(a, dict):
        return True
    return isinstance(a, (list, tuple)) and any(
        v is None or isinstance(v, (TensorBase, np.ndarray, dict, list, tuple)) for v in a)


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
    __slots__ = ("target", "expr", "uses", "comment", "phase")

    def __init__(self, target: str, expr: str, uses: list[str], comment: str, phase: int):
        self.target, self.expr, self.uses = target, expr, uses
        self.comment, self.phase = comment, phase


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
        self.counter = 0
        self.dynamic: set[str] = {"g"}  # variables whose value changes between calls

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
        return name

    def _new_var(self, arr: Any) -> str:
        self.counter += 1
        return self._bind(arr, self._fresh(f"v{self.counter}"))

    def constant(self, value: Any, hint: str = "c") -> str:
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
            n = len(flatten(a)[0]) if i not in self.static_argnums else 0
            out += [base] if n == 1 else [f"{base}_{j}" for j in range(n)]
        return out

    # -- the hooks (called through MODES.trace) ------------------------------------------------
    def record(self, op: Primitive, args: tuple[Any, ...], params: dict[str, Any]) -> Any:
        """graph.apply under tracing: run the op as usual and write its line."""
        _refuse_custom(op, params)
        refs = [self.ref(a) for a in args]
        prefs = {k: self.param_ref(v) for k, v in params.items()}
        MODES.trace = None  # the op's own work is not the step's code
        try:
            t = apply(op, *args, **params)
        finally:
            MODES.trace = self
        uses = refs + list(prefs.values())
        if not any(u in self.dynamic for u in uses):  # folded: its value is the same every call
            self._bind(t._data, self.constant(t._data, "c"))
            return t
        target = self._new_var(t._data)
        self.dynamic.add(target)
        if getattr(t, "_values", None) is not None:  # what the guard copied is the same value
            for v, r in zip(t._values, refs):
                if isinstance(v, np.ndarray) and id(v) not in self.vars and r in self.names:
                    self._bind(v, r)
            self._bind(t._ans, target)
        self._emit(target, _expression(self, op, refs, prefs), uses)
        return t

    def constant_op(self, fn: Callable[..., Any], args: tuple[Any, ...], name: str) -> Any:
        """functions.constant (comparisons, argmax) under tracing."""
        refs = [self.ref(a) for a in args]
        MODES.trace = None
        try:
            t = leaf(np.asarray(fn(*[a._data if isinstance(a, TensorBase) else a for a in args])))
        finally:
            MODES.trace = self
        if not any(r in self.dynamic for r in refs):
            self._bind(t._data, self.constant(t._data, "c"))
            return t
        fname = self.constant(fn, getattr(fn, "__name__", name))
        target = self._new_var(t._data)
        self.dynamic.add(target)
        self._emit(target, f"{fname}({', '.join(refs)})", refs)
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
                           f"{user_site()}; the program would freeze it. Keep the computation "
                           f"in Tensor ops (mg.where instead of if, for example), or run this "
                           f"part outside the compiled step")

    def refuse(self, what: str) -> None:
        raise CompileError(f"compile: {what} inside a compiled step, at {user_site()}: a replay "
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
                                       f"is read as one array, at {user_site()}; use mg.stack")
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
                                   f"{xname!r} reached an op, at {user_site()}; it would be "
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
        for n, cell in zip(code.co_freevars if code else (), self.fn.__closure__ or ()):
            scopes[n] = cell.cell_contents
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
        comment = self._vjp_site() or user_site().split(": ", 1)[-1]
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
    def run(self, args: tuple[Any, ...], leaves: list[Any], treedef: Any) -> tuple[Any, Any]:
        from minigrad.program import build_program
        names = self._leaf_names(args)
        traced = [self._traced_leaf(a, n) for a, n in zip(leaves, names)]
        call_args = list(unflatten(treedef, traced))
        for i in range(len(args)):
            if i in self.static_argnums or i - len(args) in self.static_argnums:
                call_args[i] = args[i]
        prev, MODES.trace = MODES.trace, self
        try:
            result = self.fn(*call_args)
            out_leaves, out_def = flatten(result)
            outs = [self._output(o) for o in out_leaves]
            grads = self._trace_backward(out_leaves, leaves)
        finally:
            MODES.trace = prev
        program = build_program(self, leaves, outs, out_def, grads)
        if not any(g is not None for g in grads):
            out_leaves = [leaf(o._data) if isinstance(o, TensorBase) else o
                          for o in out_leaves]
        return unflatten(out_def, out_leaves), program

    def _output(self, o: Any) -> str:
        if not isinstance(o, TensorBase):
            raise CompileError(f"compile: the step returned a {type(o).__name__}; return "
                               f"Tensors (in tuples, lists or dicts)")
        return self.ref(o)

    def _trace_backward(self, outs: list[Any], leaves: list[Any]) -> list[Any]:
        """Per output that needs one: the VJPs of its inputs, traced with create_graph."""
        inputs = [a for a in leaves if isinstance(a, TensorBase)] + self.externals
        wanted = [x for x in inputs if x._requires_grad]
        grads: list[Any] = []
        for k, o in enumerate(outs):
            if not (wanted and MODES.grad_enabled and o._requires_grad and o._op is not None):
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
    from minigrad.function import FunctionCtx
    if any(isinstance(v, FunctionCtx) for v in params.values()) or op.name == "first_order_only":
        raise CompileError(f"compile: the custom mg.Function {op.name} keeps state between its "
                           f"forward and backward in Python, which a generated program cannot "
                           f"replay; call it outside the compiled step (at {user_site()})")


def _expression(trace: Trace, op: Primitive, refs: list[str], prefs: dict[str, str]) -> str:
    run = op.run
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
