"""`mg.compile`: run a step once on the tape while recording every primitive, write the forward
and the reverse sweep out as straight-line NumPy Python, and replay that on later calls.

Tracing (`trace.py`) turns one eager run into a list of lines, `v7 = np.maximum(v6, 0)`. This
module keeps those programs: one per signature (what decides the lines: shapes, dtypes, which
inputs require grad, grad mode, Python ints and bools, static arguments, the `training` flags of
the modules reached and the Tensors read from outside), and runs them. When an input requires
grad, each output is recorded on the eager tape as one node whose VJP is the generated backward,
so `backward()`, optimizers and the transforms see a compiled step as one more primitive.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from minigrad.graph import TensorBase, apply, leaf
from minigrad.modes import MODES
from minigrad.program import Program
from minigrad.rules import Primitive
from minigrad.trace import CompileError, Trace, flatten

__all__ = ["CompileError", "compile"]

MAX_TRACES = 8  # as torch.compile's cache: beyond it, retracing is likely a bug in the caller


class Compiled:
    """A compiled step: call it as the function it wraps."""

    def __init__(self, fn: Callable[..., Any], static_argnums: tuple[int, ...]) -> None:
        self.fn = fn
        self.static_argnums = static_argnums
        self._programs: OrderedDict[Any, Program] = OrderedDict()
        self._lock = threading.Lock()  # the cache is shared by the threads that call the step
        self._traces = 0
        self._latest: Program | None = None
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @property
    def traces(self) -> int:
        """How many traces were made so far (each a run of fn on the tape)."""
        return self._traces

    @property
    def source(self) -> str:
        """The generated Python of the latest trace."""
        if self._latest is None:
            raise RuntimeError("compile: nothing traced yet; call the compiled step once first")
        return self._latest.source

    def clear(self) -> None:
        """Drop every trace: the next call traces again."""
        with self._lock:
            self._programs.clear()
            self._latest = None

    def __call__(self, *args: Any) -> Any:
        if MODES.trace is not None or MODES.anomaly or MODES.transform_depth > 0:
            # Inside another trace, under detect_anomaly or inside a transform (which may ask
            # for higher order): run eagerly; same values, same errors.
            return self.fn(*args)
        key, leaves, treedef = self._signature(args)
        with self._lock:
            program = self._programs.get(key)
            if program is not None and not program.still_valid():
                del self._programs[key]
                program = None
            if program is None:
                return self._trace(key, args, leaves, treedef)
            self._programs.move_to_end(key)
            self._latest = program
        return run(program, leaves)

    def _signature(self, args: tuple[Any, ...]) -> tuple[Any, list[Any], Any]:
        statics = []
        dynamic: list[Any] = []
        for i, a in enumerate(args):
            if i in self.static_argnums or i - len(args) in self.static_argnums:
                statics.append((i, _hashable(a, i)))
                dynamic.append(None)
            else:
                dynamic.append(a)
        leaves, treedef = flatten(dynamic)
        key = (treedef, tuple(_leaf_key(a) for a in leaves), tuple(statics),
               MODES.grad_enabled)
        return key, leaves, treedef

    def _trace(self, key: Any, args: tuple[Any, ...], leaves: list[Any], treedef: Any) -> Any:
        trace = Trace(self.fn, self.static_argnums)
        out, program = trace.run(args, leaves, treedef)
        self._traces += 1
        self._programs[key] = program
        self._latest = program
        if len(self._programs) > MAX_TRACES:
            old_key, _ = self._programs.popitem(last=False)
            warnings.warn(f"compile({getattr(self.fn, '__name__', 'fn')}): more than "
                          f"{MAX_TRACES} signatures; dropped the least recently used. "
                          f"{_what_changed(old_key, key)}", RuntimeWarning, stacklevel=3)
        return out


def compile(fn: Callable[..., Any], static_argnums: int | tuple[int, ...] = ()) -> Compiled:  # noqa: A001
    """Trace `fn` once per signature and replay generated NumPy; see the module's docstring."""
    nums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    return Compiled(fn, nums)


def _hashable(a: Any, i: int) -> Any:
    try:
        hash(a)
    except TypeError:
        raise TypeError(f"compile: static argument {i} must be hashable (it is part of the "
                        f"signature), got a {type(a).__name__}") from None
    return (type(a), a)


def _leaf_key(a: Any) -> Any:
    """What of one argument leaf decides the program: see the module's docstring."""
    if isinstance(a, TensorBase):
        return ("Tensor", a._data.shape, a._data.dtype.str, a._requires_grad)
    if isinstance(a, np.ndarray):
        return ("array", a.shape, a.dtype.str)
    if type(a) is float:
        return ("float",)
    if isinstance(a, (bool, int, type(None), str)):
        return (type(a), a)
    if isinstance(a, np.generic):
        return ("array", (), a.dtype.str)
    raise TypeError(f"compile: an argument holds a {type(a).__name__}; give Tensors, arrays, "
                    f"numbers (or dicts, lists and tuples of them), or list its position in "
                    f"static_argnums")


def _what_changed(old: Any, new: Any) -> str:
    if old[3] != new[3]:
        return "Grad mode changed."
    if old[0] != new[0] or len(old[1]) != len(new[1]):
        return "The arguments' structure changed."
    for i, (a, b) in enumerate(zip(old[1], new[1])):
        if a != b:
            return f"Argument leaf {i} changed from {a} to {b}."
    return "Static arguments changed."


# ---------------------------------------------------------------------------------------------
# Running a program
# ---------------------------------------------------------------------------------------------
def run(program: Program, leaves: list[Any]) -> Any:
    """The outputs of one call, as fresh Tensors; recorded when an input requires grad."""
    values = program.input_values(leaves)
    if not program.recorded or not MODES.grad_enabled:
        outs, _ = program.forward(*values)
        return program.outputs(tuple(leaf(np.asarray(o)) for o in outs))
    tensors = program.input_tensors(leaves, values)
    holder: dict[str, Any] = {}
    outs = tuple(apply(_compiled, *tensors, program=program, k=k, holder=holder)
                 if program.backwards[k] is not None else None
                 for k in range(program.n_outputs))
    made = holder["outs"]
    return program.outputs(tuple(o if o is not None else leaf(np.asarray(made[k]))
                                 for k, o in enumerate(outs)))


def _run_forward(*values: Any, program: Program, k: int, holder: dict[str, Any]) -> Any:
    # The first output's node runs the whole forward on the values the tape keeps (read-only or
    # copied by the guard); the others take their output from it.
    if k == program.first_recorded:
        outs, saved = program.forward_saving(*values)
        holder["outs"], holder["saved"] = outs, saved
    return np.array(holder["outs"][k]) if k != program.first_recorded else \
        np.asarray(holder["outs"][k])


def _vjp(g: Any, y: Any, *xs: Any, program: Program, k: int, holder: dict[str, Any]) -> Any:
    if isinstance(g, TensorBase):
        raise CompileError("compile: a compiled step's backward is first-order only; call the "
                           "function itself (not compiled) under mg.grad(mg.grad(...))")
    backward: Any = program.backwards[k]
    return backward(g, *xs, *holder["saved"])


_compiled = Primitive("compiled", _run_forward, vjp_all=_vjp, reads="x",
                      math="y = the traced step;  x̄ = its generated backward")
