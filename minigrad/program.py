"""A traced step as a program: the lines a trace wrote, pruned to what the outputs need, turned
into Python functions (`forward`, one `backward_k` per output that needs one), and the checks
that tell whether a later call may replay it."""

from __future__ import annotations

import functools
import linecache
from collections.abc import Callable
from itertools import count
from typing import Any

import numpy as np

from minigrad.graph import TensorBase
from minigrad.trace import Line, Trace, unflatten

_serial = count(1).__next__  # each program's source gets a file name of its own (tracebacks)


def _needed(lines: list[Line], roots: set[str]) -> tuple[list[Line], set[str]]:
    """The lines the roots depend on, in order, and every name they read."""
    need = set(roots)
    keep = []
    for line in reversed(lines):
        if line.target in need:
            keep.append(line)
            need.update(line.uses)
    return keep[::-1], need


def _tuple(names: list[str]) -> str:
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


def _function(name: str, params: list[str], lines: list[Line], returns: str) -> str:
    body = [f"def {name}({', '.join(params)}):"]
    body += [f"    {ln.target} = {ln.expr}  # {ln.comment}" for ln in lines]
    body.append(f"    return {returns}")
    return "\n".join(body)


class Program:
    """The generated functions of one trace and what its inputs and outputs are."""

    def __init__(self) -> None:
        self.source = ""
        self.forward: Callable[..., Any] = lambda *values: ((), ())
        self.backwards: list[Callable[..., Any] | None] = []
        self.input_index: list[int] = []  # the argument leaves that are inputs
        self.externals: list[TensorBase] = []
        self.expected: list[tuple[TensorBase, tuple[int, ...], Any, bool]] = []
        self.same: list[tuple[Callable[[], Any], Any]] = []  # (read again, what it was)
        self.n_outputs = 0
        self.first_recorded = 0
        self.recorded = False  # some output is recorded on the tape (an input requires grad)
        self.out_def: Any = None

    def still_valid(self) -> bool:
        """Do the Tensors read from outside and the modules reached still match the trace?"""
        for t, shape, dtype, rg in self.expected:
            d = t._data
            if d.shape != shape or d.dtype != dtype or t._requires_grad != rg:
                return False
        return all(read() is was for read, was in self.same)

    def input_values(self, leaves: list[Any]) -> list[Any]:
        vals = [leaves[i] for i in self.input_index]
        return [v._data if isinstance(v, TensorBase) else v for v in vals] + \
            [t._data for t in self.externals]

    def input_tensors(self, leaves: list[Any], values: list[Any]) -> list[Any]:
        """The inputs as the compiled node's operands: Tensors as themselves, arrays and floats
        as values (the tape guards what the generated backward will read)."""
        return [leaves[i] for i in self.input_index] + self.externals

    def outputs(self, outs: tuple[Any, ...]) -> Any:
        return unflatten(self.out_def, list(outs))

    def forward_saving(self, *values: Any) -> tuple[Any, Any]:
        return self.forward(*values)  # type: ignore[no-any-return]


def build_program(trace: Trace, leaves: list[Any], outs: list[str], out_def: Any,
                  grads: list[Any]) -> Program:
    """Prune, write and compile the trace's lines (see the module's docstring)."""
    prog = Program()
    prog.input_index = [i for i, a in enumerate(leaves)
                        if isinstance(a, (TensorBase, np.ndarray, np.generic)) or type(a) is float]
    prog.externals = list(trace.externals)
    prog.n_outputs, prog.out_def = len(outs), out_def
    inputs = trace.inputs + trace.external_names
    is_tensor = [isinstance(leaves[i], TensorBase) for i in prog.input_index] + \
        [True] * len(trace.externals)
    forward_lines = [ln for ln in trace.lines if ln.phase == 0]
    defined = {ln.target for ln in forward_lines}
    backward_parts: list[tuple[list[Line], list[str]] | None] = []
    saved: list[str] = []
    for k, gk in enumerate(grads):
        if gk is None:
            backward_parts.append(None)
            continue
        it = iter(gk)
        returns = [next(it) or "None" if tensor else "None" for tensor in is_tensor]
        lines, need = _needed([ln for ln in trace.lines if ln.phase == k + 1], set(returns))
        saved += [n for n in sorted(need & defined) if n not in saved]
        backward_parts.append((lines, returns))
    fwd, _ = _needed(forward_lines, set(outs) | set(saved))
    src = [_function("forward", inputs, fwd, f"{_tuple(outs)}, {_tuple(saved)}")]
    for k, part in enumerate(backward_parts):
        if part is not None:
            src.append(_function(f"backward_{k}", ["g", *inputs, *saved], part[0],
                                 _tuple(part[1])))
    prog.source = "\n\n\n".join(src) + "\n"
    namespace = _compile_source(prog.source, trace.globals)
    prog.forward = namespace["forward"]
    prog.backwards = [namespace[f"backward_{k}"] if p is not None else None
                      for k, p in enumerate(backward_parts)]
    prog.recorded = any(b is not None for b in prog.backwards)
    prog.first_recorded = next((k for k, p in enumerate(prog.backwards) if p is not None), 0)
    _guards(prog, trace)
    return prog


def _compile_source(source: str, globals_: dict[str, Any]) -> dict[str, Any]:
    filename = f"<minigrad.compile #{_serial()}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = dict(globals_)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102  (our own generated code)
    return namespace


def _guards(prog: Program, trace: Trace) -> None:
    """What a later call checks before replaying: the outside Tensors' shapes, dtypes and
    requires_grad, that each module attribute, closure cell and global that held one (or a
    module) still does, and every reached module's training flag."""
    prog.expected = [(t, t._data.shape, t._data.dtype, t._requires_grad)
                     for t in trace.externals]
    watched = {id(t) for t in trace.externals} | {id(m) for m in trace.modules}
    for m in trace.modules:
        prog.same.append((functools.partial(getattr, m, "training"), m.training))
        for name, v in vars(m).items():
            if id(v) in watched:
                prog.same.append((functools.partial(getattr, m, name, None), v))
    fn = trace.fn
    code = getattr(fn, "__code__", None)
    for cell in getattr(fn, "__closure__", None) or ():
        if id(cell.cell_contents) in watched:
            prog.same.append((functools.partial(getattr, cell, "cell_contents"),
                              cell.cell_contents))
    scope = getattr(fn, "__globals__", {})
    for name in code.co_names if code else ():
        if name in scope and id(scope[name]) in watched:
            prog.same.append((functools.partial(scope.get, name), scope[name]))
