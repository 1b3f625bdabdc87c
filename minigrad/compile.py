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
from minigrad.modes import THREAD
from minigrad.program import MISS, Program, build_program, quick_entry
from minigrad.rules import Primitive
from minigrad.trace import CompileError, Trace, flatten, unflatten

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
        # The quick entries (program.quick_entry) of the programs that have one, most recently
        # used first, with their keys: a call tries them before building its key. A tuple,
        # replaced whole, so a thread reading it never sees it half changed.
        self._quick: tuple[tuple[Any, Any, Program], ...] = ()
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
            self._quick = ()

    def __call__(self, *args: Any) -> Any:
        modes = THREAD.modes
        if modes.trace is not None or modes.anomaly or modes.transform_depth > 0:
            # Inside another trace, under detect_anomaly or inside a transform (which may ask
            # for higher order): run eagerly; same values, same errors.
            return self.fn(*args)
        grad = modes.grad_enabled
        for quick, known_key, known in self._quick:
            out = quick(args, grad)
            if out is not MISS:
                if known is not self._latest:
                    self._used(known_key, known)
                return out
        if not self.static_argnums and _CONTAINERS.isdisjoint(map(type, args)):
            leaves: Any = args  # the common case, flat arguments: no walk, no structure
            key = (len(args), tuple(map(_leaf_key, args)), (), grad)
            treedef = ("list", (None,) * len(args))
        else:
            leaves, treedef, statics = self._split(args)
            key = (treedef, tuple(map(_leaf_key, leaves)), statics, grad)
        program = self._programs.get(key)  # a dict read needs no lock under the GIL
        if program is None or (program.guarded and not program.valid()):
            with self._lock:  # one trace at a time; another thread's may have made this one
                program = self._programs.get(key)
                if program is None or (program.guarded and not program.valid()):
                    return self._trace(key, args, list(leaves), treedef)
        if program is not self._latest:  # the LRU order changes only when the program does
            self._used(key, program)
        if program.recorded and grad:
            return record(program, leaves)
        outs, _ = program.forward(*program.read_inputs(leaves, program.externals))
        return program.pack(_passed(program, outs, leaves) if program.passthrough else outs)

    def _used(self, key: Any, program: Program) -> None:
        """Make program the most recently used (first among the quick entries too). Under the
        lock: a clear() or an eviction between reading the entries and writing them back
        would otherwise be undone."""
        with self._lock:
            if self._programs.get(key) is not program:  # dropped meanwhile: it runs all the same
                return
            self._programs.move_to_end(key)
            self._latest = program
            self._quick = tuple(sorted(self._quick, key=lambda e: e[2] is not program))

    def _split(self, args: tuple[Any, ...]) -> tuple[list[Any], Any, tuple[Any, ...]]:
        """The leaves of the dynamic arguments, their structure, and the static arguments."""
        statics = []
        dynamic: list[Any] = []
        for i, a in enumerate(args):
            if i in self.static_argnums or i - len(args) in self.static_argnums:
                statics.append((i, _hashable(a, i)))
                dynamic.append(None)
            else:
                dynamic.append(a)
        leaves, treedef = flatten(dynamic)
        return leaves, treedef, tuple(statics)

    def _trace(self, key: Any, args: tuple[Any, ...], leaves: list[Any], treedef: Any) -> Any:
        trace = Trace(self.fn, self.static_argnums)
        out_leaves, out_def, outs, grads = trace.run(args, leaves, treedef)
        program = build_program(trace, leaves, outs, out_def, grads)
        program.passthrough = trace.passthrough
        if not program.recorded:  # off the tape, as later calls' outputs
            kept = {k for k, _, _ in trace.passthrough}
            out_leaves = [leaf(o._data) if isinstance(o, TensorBase) and k not in kept else o
                          for k, o in enumerate(out_leaves)]
        out = unflatten(out_def, out_leaves)
        self._traces += 1
        recent = next(reversed(self._programs), None)  # the signature of the calls before
        self._programs.pop(key, None)  # traced again (its checks failed): now the most recent
        self._programs[key] = program
        self._latest = program
        quick = quick_entry(program, leaves, key[3]) if type(key[0]) is int else None
        others = [e for e in self._quick if e[1] != key]  # a program traced again replaces its own
        if len(self._programs) > MAX_TRACES:
            dropped, _ = self._programs.popitem(last=False)
            others = [e for e in others if e[1] != dropped]
            warnings.warn(f"compile({getattr(self.fn, '__name__', 'fn')}): more than "
                          f"{MAX_TRACES} signatures; dropped the least recently used. "
                          f"{_what_changed(recent, key)}", RuntimeWarning, stacklevel=3)
        self._quick = ((quick, key, program), *others) if quick is not None else tuple(others)
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


_CONTAINERS = frozenset((list, tuple, dict))


def _leaf_key(a: Any) -> Any:
    """What of one argument leaf decides the program: see the module's docstring."""
    if isinstance(a, TensorBase):
        d = a._data
        return (d.shape, d.dtype, a._requires_grad)  # a Tensor's key has three entries
    kind = type(a)
    if kind is np.ndarray:
        return (a.shape, a.dtype)  # an array's two
    if kind is float:
        return float
    if kind in (bool, int, type(None), str):
        return (kind, a)
    if isinstance(a, np.generic):
        return ((), a.dtype)
    raise TypeError(f"compile: an argument holds a {type(a).__name__}; give Tensors, arrays, "
                    f"numbers (or dicts, lists and tuples of them), or list its position in "
                    f"static_argnums")


def _what_changed(old: Any, new: Any) -> str:
    """What differs between the signature used last and the new one, in words."""
    if old is None:
        return ""
    if old[3] != new[3]:
        return f"Grad mode changed (now {'enabled' if new[3] else 'disabled: no_grad'})."
    if old[0] != new[0] or len(old[1]) != len(new[1]):
        return "The arguments' structure changed."
    for i, (a, b) in enumerate(zip(old[1], new[1])):
        if a != b:
            return f"Argument leaf {i} changed from {_in_words(a)} to {_in_words(b)}."
    return f"Static arguments changed from {old[2]} to {new[2]}."


def _in_words(k: Any) -> str:
    """A leaf's part of the signature (see _leaf_key) as a reader would say it."""
    if k is float:
        return "a float"
    if len(k) == 3:
        return f"a Tensor {k[0]} {k[1]}" + (" requiring grad" if k[2] else "")
    if isinstance(k[0], tuple):
        return f"an array {k[0]} {k[1]}"
    return f"{k[0].__name__} {k[1]!r}"


# ---------------------------------------------------------------------------------------------
# Running a program
# ---------------------------------------------------------------------------------------------
def record(program: Program, leaves: Any) -> Any:
    """The outputs of one call, each that needs one recorded as a node of the tape."""
    tensors = program.input_tensors(leaves)
    holder: dict[str, Any] = {}
    outs = tuple(apply(_compiled, *tensors, program=program, k=k, holder=holder)
                 if program.backwards[k] is not None else None
                 for k in range(program.n_outputs))
    made, saved = holder["outs"], holder["saved"]
    outs = tuple(o if o is not None else _handed(made[k], saved) for k, o in enumerate(outs))
    return program.pack(_passed(program, outs, leaves) if program.passthrough else outs)


def _handed(out: Any, saved: tuple[Any, ...]) -> Any:
    """An output no gradient flows from, read-only where it is memory the backward reads (as
    eager's `h.detach()` of a recorded h is): a write to it must not move a gradient."""
    if isinstance(out, np.ndarray) and any(np.may_share_memory(out, s) for s in saved):
        out = out.view()
        out.flags.writeable = False
    return out


def _passed(program: Program, outs: Any, leaves: Any) -> tuple[Any, ...]:
    """The outputs with each argument or outside Tensor fn returned as that Tensor itself."""
    outs = list(outs)
    for k, kind, i in program.passthrough:
        outs[k] = leaves[i] if kind == "leaf" else program.externals[i]
    return tuple(outs)


def _run_forward(*values: Any, program: Program, k: int, holder: dict[str, Any]) -> Any:
    # The first output's node runs the whole forward on the values the tape keeps (read-only or
    # copied by the guard); the others take their output from it.
    if k == program.first_recorded:
        outs, saved = program.forward(*values)
        holder["outs"], holder["saved"] = outs, saved
    return np.array(holder["outs"][k]) if k != program.first_recorded else \
        np.asarray(holder["outs"][k])


def _vjp(g: Any, y: Any, *xs: Any, program: Program, k: int, holder: dict[str, Any]) -> Any:
    backward: Any = program.backwards[k]
    if not isinstance(g, TensorBase):
        return backward(g, *xs, *holder["saved"])
    # A transform's sweep records (create_graph) through a step compiled outside it: the
    # values, each a node whose own derivative raises, so a first-order result is right and a
    # second order is refused, never a silent 0.
    grads = backward(g._data, *[x._data if isinstance(x, TensorBase) else x for x in xs],
                     *holder["saved"])
    operands = [g, *(x for x in xs if isinstance(x, TensorBase))]
    return tuple(None if r is None else apply(_first_order, *operands, value=np.asarray(r))
                 for r in grads)


def _refuse_second_order(g: Any, y: Any, *args: Any, value: Any) -> Any:
    raise CompileError("compile: a compiled step's backward is first-order only; call the "
                       "function itself (not compiled) under mg.grad(mg.grad(...))")


_first_order = Primitive("compiled_vjp", lambda *args, value: value,
                         vjp_all=_refuse_second_order,
                         math="y = a compiled step's VJP;  x̄ = refused (first order only)")


_compiled = Primitive("compiled", _run_forward, vjp_all=_vjp, reads="x",
                      math="y = the traced step;  x̄ = its generated backward")
