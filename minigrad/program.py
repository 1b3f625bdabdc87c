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

from minigrad.graph import TensorBase, leaf
from minigrad.lowering import small_products
from minigrad.peephole import simplify
from minigrad.plan import Planner
from minigrad.trace import Line, Trace, own_attribute, watches

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


def _function(name: str, params: list[str], lines: list[Line], returned: list[str],
              returns: str) -> tuple[str, list[tuple[Any, Any]]]:
    """One generated function's source, its large intermediates placed by the memory plan
    (which adds a `bufs` parameter when it uses buffers), and the buffers' shapes and dtypes."""
    lines = simplify(lines, set(returned))
    exprs, specs = Planner(lines, set(returned)).run()
    exprs = small_products([ln.op for ln in lines], [ln.value for ln in lines], exprs)
    head = ", ".join(params + (["bufs"] if specs else []))
    body = [f"def {name}({head}):"]
    body += [f"    {ln.target} = {e}  # {ln.comment}" for ln, e in zip(lines, exprs)]
    body.append(f"    return {returns}")
    return "\n".join(body), specs


def with_buffers(fn: Callable[..., Any], specs: list[tuple[Any, Any]]) -> Callable[..., Any]:
    """fn called with a set of buffers of its own: taken from the spare sets, or made, and put
    back when fn returns. A set is never used by two calls at once (threads, or a forward whose
    backward is still to come)."""
    if not specs:
        return fn
    spare: list[list[np.ndarray]] = []

    def call(*args: Any) -> Any:
        try:
            bufs = spare.pop()
        except IndexError:
            bufs = [np.empty(shape, dtype) for shape, dtype in specs]
        try:
            return fn(*args, bufs)
        finally:
            spare.append(bufs)
    call.__wrapped__ = fn  # type: ignore[attr-defined]  # the generated function itself
    return call


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
        self.valid: Callable[[], bool] = lambda: True
        self.n_outputs = 0
        self.first_recorded = 0
        self.recorded = False  # some output is recorded on the tape (an input requires grad)
        self.guarded = False  # there are outside Tensors or modules to check before a replay
        self.out_def: Any = None
        self.passthrough: list[tuple[int, str, int]] = []  # see trace.Trace._output
        # Written for each program (see _plumbing): leaves -> input values; outputs -> fn's
        # structure of Tensors.
        self.read_inputs: Callable[..., Any] = lambda leaves, externals: []
        self.pack: Callable[..., Any] = lambda outs: outs

    def input_tensors(self, leaves: Any) -> list[Any]:
        """The inputs as the compiled node's operands: Tensors as themselves, arrays and floats
        as values (the tape guards what the generated backward will read)."""
        return [leaves[i] for i in self.input_index] + self.externals


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
    functions = {"forward": _function("forward", inputs, fwd, outs + saved,
                                      f"{_tuple(outs)}, {_tuple(saved)}")}
    for k, part in enumerate(backward_parts):
        if part is not None:
            functions[f"backward_{k}"] = _function(f"backward_{k}", ["g", *inputs, *saved],
                                                   part[0], part[1], _tuple(part[1]))
    prog.source = "\n\n\n".join(text for text, _ in functions.values()) + "\n"
    namespace = _compile_source(prog.source, trace.globals)
    made = {name: with_buffers(namespace[name], specs)
            for name, (_, specs) in functions.items()}
    prog.forward = made["forward"]
    prog.backwards = [made.get(f"backward_{k}") for k in range(len(backward_parts))]
    prog.recorded = any(b is not None for b in prog.backwards)
    prog.first_recorded = next((k for k, p in enumerate(prog.backwards) if p is not None), 0)
    _guards(prog, trace)
    prog.guarded = bool(prog.expected or prog.same)
    _plumbing(prog, leaves)
    return prog


def _plumbing(prog: Program, leaves: list[Any]) -> None:
    """Write read_inputs and pack as one expression each: a call then costs no walk over the
    arguments' and outputs' structure."""
    reads = [f"leaves[{i}]._data" if isinstance(leaves[i], TensorBase) else f"leaves[{i}]"
             for i in prog.input_index]
    reads += [f"externals[{j}]._data" for j in range(len(prog.externals))]
    prog.read_inputs = eval(f"lambda leaves, externals: [{', '.join(reads)}]")  # noqa: S307
    text, names = _packing(prog)
    prog.pack = eval(f"lambda outs: {text}", names)  # noqa: S307


def _packing(prog: Program) -> tuple[str, dict[str, Any]]:
    """An expression building fn's structure of outputs from the tuple `outs`, and its names."""
    counter = iter(range(prog.n_outputs))
    kinds: list[Any] = []

    def build(d: Any) -> str:
        if d is None:
            return f"tensor(outs[{next(counter)}])"
        if d[0] == "dict":
            return "{" + ", ".join(f"{k!r}: {build(v)}" for k, v in zip(d[1], d[2])) + "}"
        items = [build(v) for v in d[1]]
        if d[0] == "list":
            return "[" + ", ".join(items) + "]"
        body = "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if d[0] == "tuple":
            return body
        kinds.append(d[0])  # a namedtuple's class
        return f"kinds[{len(kinds) - 1}]{body}"
    return build(prog.out_def), {"tensor": _as_tensor, "kinds": kinds}


MISS = object()  # what a quick entry returns for a call that is not its program's


def quick_entry(prog: Program, leaves: list[Any], grad_enabled: bool
                ) -> Callable[[tuple[Any, ...], bool], Any] | None:
    """For a program traced from flat arguments whose outputs go on no tape: one generated
    function that checks a call against the program's whole signature and validity, runs the
    forward and packs the outputs, or returns MISS. It stands for the general path's key,
    lookup, validity check, reads and packing (mg.compile's per-call cost on small steps)."""
    if (prog.recorded and grad_enabled) or prog.passthrough:
        return None
    names: dict[str, Any] = {"MISS": MISS, "forward": prog.forward}
    tests, args = [], [f"a{i}" for i in range(len(leaves))]
    for i, a in sorted(enumerate(leaves), key=lambda ia: _test_order(ia[1])):
        names[f"k{i}"] = type(a)
        tests.append(_leaf_test(a, i, names))
    valid, more = _check_text(prog.expected, prog.same)
    names.update(more)
    reads = [f"d{i}" if isinstance(leaves[i], TensorBase) else f"a{i}" for i in prog.input_index]
    for j, t in enumerate(prog.externals):
        names[f"e{j}"] = t
        reads.append(f"e{j}._data")
    pack, more = _packing(prog)
    names.update(more)
    source = "\n".join([
        "def quick(args, grad):",
        f"    if grad is not {grad_enabled} or len(args) != {len(leaves)}:",
        "        return MISS",
        f"    {', '.join(args)}{',' if len(args) == 1 else ''} = args" if args else "    pass",
        f"    if not ({' and '.join(tests + [valid])}):",
        "        return MISS",
        f"    outs, _ = forward({', '.join(reads)})",
        f"    return {pack}"])
    exec(compile(source, "<minigrad.compile quick entry>", "exec"), names)  # noqa: S102
    return names["quick"]  # type: ignore[no-any-return]


def _test_order(a: Any) -> int:
    """Cheap and telling tests first: Python values, then floats, arrays and Tensors."""
    return 0 if type(a) in (bool, int, str, type(None)) else \
        1 if type(a) is float else 3 if isinstance(a, TensorBase) else 2


def _leaf_test(a: Any, i: int, names: dict[str, Any]) -> str:
    """Source testing argument leaf i against a's part of the signature (compile._leaf_key),
    the exact type included; a Tensor's array is left in d{i} for the reads."""
    if isinstance(a, TensorBase):
        names.update({f"s{i}": a._data.shape, f"t{i}": a._data.dtype,
                      f"r{i}": a._requires_grad})
        return (f"type(a{i}) is k{i} and a{i}._requires_grad is r{i} and "
                f"(d{i} := a{i}._data).shape == s{i} and d{i}.dtype == t{i}")
    if type(a) in (bool, int, str, type(None)):
        names[f"v{i}"] = a
        return f"type(a{i}) is k{i} and a{i} == v{i}"
    if type(a) is float:
        return f"type(a{i}) is k{i}"
    names.update({f"s{i}": np.shape(a), f"t{i}": a.dtype})
    return f"type(a{i}) is k{i} and a{i}.shape == s{i} and a{i}.dtype == t{i}"


def _as_tensor(o: Any) -> Any:
    """An output as a Tensor: a recorded node as it is, an array (or a NumPy scalar, which a
    0-d result can be) as a new leaf."""
    if type(o) is np.ndarray:  # the common case first: this runs for every output of a call
        return leaf(o)
    return o if isinstance(o, TensorBase) else leaf(np.asarray(o))


def _compile_source(source: str, globals_: dict[str, Any]) -> dict[str, Any]:
    filename = f"<minigrad.compile #{_serial()}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = dict(globals_)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102  (our own generated code)
    return namespace


def _guards(prog: Program, trace: Trace) -> None:
    """What a later call checks before replaying: the outside Tensors' shapes, dtypes and
    requires_grad, every reached module's training flag, and that each place on the way from
    fn to one of them (a closure cell, a global, an attribute, a list item) still holds what
    it held (`trace.watches`)."""
    prog.expected = [(t, t._data.shape, t._data.dtype, t._requires_grad)
                     for t in trace.externals]
    watched = {id(t) for t in trace.externals} | {id(m) for m in trace.modules}
    prog.same = [(functools.partial(getattr, m, "training"), m.training) for m in trace.modules]
    prog.same += watches(trace.fn, watched)
    prog.valid = _checks(prog.expected, prog.same)


def _checks(expected: list[tuple[TensorBase, tuple[int, ...], Any, bool]],
            same: list[tuple[Callable[[], Any], Any]]) -> Callable[[], bool]:
    """Every check a call makes before replaying (`Program.valid`), as one compiled
    expression: it runs at each call, where a read through a function call of its own would
    cost more than the read."""
    text, names = _check_text(expected, same)
    return eval(f"lambda: {text}", names)  # type: ignore[no-any-return]  # noqa: S307


def _check_text(expected: list[tuple[TensorBase, tuple[int, ...], Any, bool]],
                same: list[tuple[Callable[[], Any], Any]]) -> tuple[str, dict[str, Any]]:
    """The expression `_checks` compiles, and its names (each prefixed by an underscore)."""
    names: dict[str, Any] = {}
    parts = []
    for i, (t, shape, dtype, rg) in enumerate(expected):
        names.update({f"_t{i}": t, f"_s{i}": shape, f"_d{i}": dtype, f"_r{i}": rg})
        parts.append(f"_t{i}._data.shape == _s{i} and _t{i}._data.dtype == _d{i} and "
                     f"_t{i}._requires_grad is _r{i}")
    for i, (read, was) in enumerate(same):
        names[f"_w{i}"] = was
        parts.append(f"{_direct_read(read, i, names)} is _w{i}")
    return " and ".join(parts) or "True", names


def _direct_read(read: Callable[[], Any], i: int, names: dict[str, Any]) -> str:
    """Source that reads what `read()` reads: an attribute, an instance's own attribute, a
    global; any other read as the call it is."""
    if isinstance(read, functools.partial) and not read.keywords:
        func, args = read.func, read.args
        if func is getattr and len(args) == 2 and str(args[1]).isidentifier():
            names[f"_o{i}"] = args[0]
            return f"_o{i}.{args[1]}"
        if func is own_attribute and len(args) == 2:
            names[f"_o{i}"] = args[0]
            return f"_o{i}.__dict__.get({args[1]!r})"
        if getattr(func, "__name__", "") == "get" and isinstance(getattr(func, "__self__", None),
                                                                  dict) and len(args) == 1:
            names[f"_o{i}"] = func.__self__  # type: ignore[attr-defined]
            return f"_o{i}.get({args[0]!r})"
    names[f"_f{i}"] = read
    return f"_f{i}()"
