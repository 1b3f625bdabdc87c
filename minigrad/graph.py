"""The tape: recording each op as it runs, and the reverse sweep that walks it back.

Every operation on Tensors goes through `apply(op, *args)`. It runs the op's NumPy forward and,
when an input requires grad (and this thread records), the output Tensor also remembers how it
was made: the op, its input Tensors, the input values the forward used, its output and its
parameters. That record is the tape: a Tensor made by an op is its own node, so recording costs
one object. `backward()` walks the tape from the output to the leaves in one pass, calling each
op's VJP from the table in `rules.py`. No Jacobian is ever built.

What the tape saves can never change under it (see `readonly.py`): outputs are read-only from
birth, and an input value that someone could still write is locked or copied when the op is
recorded.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from heapq import heappop, heappush
from itertools import count
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from minigrad.modes import THREAD, check_finite, shapes_of, user_site
from minigrad.readonly import COUNTS_REFS, Lease, freeze, guard, release

if TYPE_CHECKING:
    from minigrad.rules import Primitive
    from minigrad.tensor import Tensor

ArrayLike = Union["TensorBase", np.ndarray, float, int, bool, np.generic, Sequence[Any]]
Pairs = list[tuple["TensorBase", Any]]  # (input, its gradient) from one node's VJPs
_SCALARS = (float, int, bool, complex, np.generic)
_PLAIN = (float, int)  # operands used as they are, without a look at what they hold
REFUSED_KINDS = "OSUVMm"  # objects, strings, raw bytes, dates: not numbers


class ShapeMismatchError(ValueError, RuntimeError):
    """A shape mismatch in backward misuse: a ValueError (shapes) and a RuntimeError (backward)."""


class TensorBase:
    """An ndarray value, a gradient slot and, when a recorded op made it, its tape record:
    what the tape needs. `tensor.Tensor` adds construction, the operators and the methods."""

    # A leaf has _op None. An op output also holds its record: _inputs (input Tensors, None
    # where no gradient flows), _values (the input values the forward used; None once backward()
    # freed the record), _ans (its output), _params, _seq (recording number), _lease (what it
    # locked, see readonly.py), _retains (retain_grad) and under anomaly mode _site.
    __slots__ = ("_data", "grad", "_requires_grad", "_op", "_inputs", "_values", "_ans",
                 "_params", "_seq", "_lease", "_retains", "_site", "__weakref__")
    _data: np.ndarray
    grad: np.ndarray | None
    _requires_grad: bool
    _op: Primitive | None
    _inputs: Any  # list[TensorBase | None], None once freed
    _values: Any  # list of the input values, None once freed
    _ans: Any
    _params: Any
    _seq: int
    _lease: Lease | None
    _retains: bool
    _site: str
    __hash__ = object.__hash__  # == is elementwise, so identity keeps Tensors usable as keys

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._data.dtype

    def backward(self, gradient: ArrayLike | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) · gradient into every leaf's `.grad` that requires grad.

        `gradient` is the upstream of self's shape; it may be left out for one-element outputs.
        The tape is freed afterwards unless `retain_graph=True`.
        """
        if THREAD.modes.trace is not None:
            THREAD.modes.trace.refuse("backward()")
        if not self._requires_grad:
            raise RuntimeError("backward: this Tensor does not require grad and was not made by "
                               "a recorded op; set requires_grad=True on the leaves first "
                               "(and compute outside mg.no_grad())")
        run_backward(self, _upstream(self, gradient), retain_graph)


def _upstream(out: TensorBase, gradient: ArrayLike | None) -> np.ndarray:
    """The upstream gradient of backward(), checked: out's shape, a real number type."""
    if gradient is None:
        if out._data.size != 1:
            raise RuntimeError(f"backward: a gradient can be left out only for a one-element "
                               f"output; this one has shape {out.shape}: pass "
                               f"y.backward(upstream) with an upstream of that shape")
        return np.array(1, out._data.dtype).reshape(out._data.shape)
    g = np.asarray(gradient._data if isinstance(gradient, TensorBase) else gradient)
    if g.dtype.kind not in "biuf":
        raise TypeError(f"backward: the gradient must hold real numbers of the output's shape "
                        f"{out.shape}, got dtype {g.dtype} (from {type(gradient).__name__})")
    if g.shape != out.shape:
        raise ShapeMismatchError(f"backward: gradient has shape {g.shape} but the output has "
                                 f"shape {out.shape}; they must be equal")
    return g.astype(out.dtype, copy=False)  # the caller's array: never handed to a .grad


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------
_tensor_type: type[TensorBase] = TensorBase  # what ops return: tensor.Tensor, set at its import
_new = object.__new__
_next_seq = count().__next__  # recording numbers: consumers are numbered after producers


def use_tensor_type(cls: type[TensorBase]) -> None:
    """Make op outputs instances of cls (`tensor.Tensor`, the class with the methods)."""
    global _tensor_type
    _tensor_type = cls


def leaf(data: np.ndarray) -> Tensor:
    """A Tensor off the tape around data as it is: no checks, no conversion, no copy."""
    t = _new(_tensor_type)
    t._data, t.grad, t._requires_grad, t._op, t._retains = data, None, False, None, False
    return t  # type: ignore[return-value]


def operand(a: Any, op_name: str) -> Any:
    """A non-Tensor operand's NumPy value: an ndarray or a scalar as it is, a list as an array."""
    if isinstance(a, np.ndarray):
        if a.dtype.kind in REFUSED_KINDS:
            raise TypeError(f"{op_name}: operand of dtype {a.dtype} is not numeric (shape "
                            f"{a.shape}); give numbers")
        return a
    if isinstance(a, _SCALARS):
        return a
    if isinstance(a, (list, tuple)):
        return operand(np.asarray(a), op_name)
    raise TypeError(f"{op_name}: unsupported operand type {type(a).__name__}; "
                    f"use a Tensor, an ndarray or a Python number")


def apply(op: Primitive, *args: Any, **params: Any) -> Tensor:
    """Run op's forward on the inputs' values; when an input requires grad and this thread
    records, the output also records the op: it becomes a node of the tape."""
    modes = THREAD.modes  # this thread's switches
    if modes.trace is not None:  # mg.compile is tracing: it runs the op and writes it down
        return modes.trace.record(op, args, params)  # type: ignore[no-any-return]
    values: list[Any] = []
    inputs: list[TensorBase | None] = []  # the inputs a gradient flows to, None elsewhere
    record = False
    for a in args:
        if isinstance(a, TensorBase):
            values.append(a._data)
            if a._requires_grad:
                inputs.append(a)
                record = True
            else:
                inputs.append(None)
        else:
            values.append(a if type(a) in _PLAIN else operand(a, op.name))
            inputs.append(None)
    record = record and modes.grad_enabled
    locked: list[np.ndarray] = []
    if record and op.reads_any:  # what the VJP reads must stay as it is
        for i in range(len(values)) if op.reads_all else op.reads_inputs:
            values[i] = guard(values[i], locked)
    try:
        ans = op.run(*values, **params)
    except (ValueError, TypeError) as e:
        kind = ValueError if isinstance(e, ValueError) else TypeError
        raise kind(f"{op.name}: {e} (input shapes {shapes_of(values)})") from None
    ans = np.asarray(ans)  # a NumPy scalar (a full reduction's result) becomes a 0-d array
    anomaly = modes.anomaly
    if anomaly:
        _check_forward(op, ans, values)
    if not record:
        return leaf(ans)
    if ans.dtype.kind != "f":
        _refuse_output(op, ans, values)
    t = _new(_tensor_type)
    t._data = freeze(ans, values)
    t._ans = t._data.view() if op.reads_output else t._data  # not reshaped by `.data.shape = …`
    t.grad, t._requires_grad, t._op, t._retains = None, True, op, False
    t._inputs, t._values, t._params = inputs, values, params
    t._lease = Lease(locked) if locked else None
    t._seq = _next_seq()
    if anomaly:
        t._site = user_site()
    return t  # type: ignore[return-value]


def _check_forward(op: Primitive, ans: np.ndarray, values: list[Any]) -> None:
    inside = f" inside the VJP of {THREAD.modes.vjp_of}" if THREAD.modes.vjp_of else ""
    check_finite(ans, f"the forward of {op.name}{inside}", user_site, values)


def _refuse_output(op: Primitive, ans: np.ndarray, values: Sequence[Any]) -> None:
    raise TypeError(f"{op.name}: a recorded op must give floating values, got {ans.dtype} from "
                    f"input dtypes {', '.join(str(np.result_type(v)) for v in values)}"
                    + ("; complex numbers are not differentiable here (their VJPs would need "
                       "conjugation)" if ans.dtype.kind == "c" else ""))


# ---------------------------------------------------------------------------------------------
# The reverse sweep
# ---------------------------------------------------------------------------------------------
# Every op output gets the next number when it is recorded, so a Tensor's consumers always carry
# larger numbers than the Tensor itself. Running the pending nodes largest number first (a heap)
# is therefore a topological order: when a node runs, every consumer of its output has already
# added its gradient contribution. One pass, each node visited once, no recursion.


def freed_error(t: TensorBase) -> RuntimeError:
    name = t._op.name if t._op is not None else "op"
    return RuntimeError(f"backward: the tape behind this {name} was already freed by an earlier "
                        f"backward(); pass retain_graph=True to the first backward() to go "
                        f"through the graph a second time")


def sum_to(g: Any, shape: tuple[int, ...]) -> Any:
    """Un-broadcast: sum g over the axes that NumPy broadcasting added or stretched (an axis of
    g's length 1 sums to itself, so only longer ones are reduced)."""
    lead = g.ndim - len(shape)
    axes: tuple[int, ...] = ()
    for i, n in enumerate(g.shape):
        if n != 1 and (i < lead or shape[i - lead] == 1):
            axes += (i,)
    if axes:
        g = g.sum(axis=axes, keepdims=True)  # a method: g is a Tensor under higher order
    return g.reshape(shape) if g.shape != shape else g


def fit(g: Any, value: Any, op: Primitive, i: int) -> Any:
    """Bring input i's gradient to that input's shape and dtype: the one place for both."""
    if g.shape != value.shape:
        got = g.shape
        try:
            g = sum_to(g, value.shape)
        except ValueError:
            g = None
        if g is None or g.shape != value.shape:
            raise RuntimeError(f"{op.name}: the VJP for input {i} has shape {got} that does not "
                               f"reduce to the input's shape {value.shape} (a bug in the rule)")
    if g.dtype != value.dtype:
        g = g.astype(value.dtype)
    return g


def _input_grads(t: TensorBase, g: Any, create_graph: bool, owned: bool) -> Pairs:
    """The VJPs of the op that made t, at upstream g: (input, its gradient) for each input a
    gradient flows to, the gradient fitted to that input's shape and dtype. `owned`: the sweep
    owns g (_owned), so the op's vjp_owned runs and may write into it."""
    op: Any = t._op
    values = xs = t._values
    params, y = t._params, t._ans
    if create_graph:
        xs, y = _recorded_operands(t)
    every = op.vjp_owned(g, y, *xs, **params) if owned else \
        op.vjp_all and op.vjp_all(g, y, *xs, **params)
    pairs = []
    for i, p in enumerate(t._inputs):
        if p is None:
            continue
        pg = every[i] if every else op.vjps[i](g, y, *xs, **params)
        if pg is None:
            continue
        v = values[i]
        if pg.shape != v.shape or (pg.dtype is not v.dtype and pg.dtype != v.dtype):
            pg = fit(pg, v, op, i)
        pairs.append((p, pg))
    return pairs


def _checked_input_grads(t: TensorBase, g: Any, create_graph: bool, owned: bool) -> Pairs:
    """`_input_grads` under anomaly mode: ops a higher-order VJP records name the VJP, and a
    gradient holding NaN or Inf raises."""
    name = t._op.name if t._op is not None else "op"
    prev, THREAD.modes.vjp_of = THREAD.modes.vjp_of, name
    try:
        pairs = _input_grads(t, g, create_graph, owned)
    finally:
        THREAD.modes.vjp_of = prev
    index = {id(p): i for i, p in enumerate(t._inputs)}
    for p, pg in pairs:
        check_finite(pg, f"the VJP of {name} (input {index[id(p)]})", getattr(t, "_site", None),
                     t._values)
    return pairs


def run_backward(root: TensorBase, upstream: Any, retain_graph: bool = False,
                 inputs: Sequence[TensorBase] | None = None,
                 create_graph: bool = False) -> list[Any] | None:
    """Propagate `upstream` from root to the leaves.

    With `inputs=None`, gradients accumulate into the `.grad` of leaves that require grad.
    Otherwise they are returned, one per input (None where unreachable), and `.grad` is untouched.
    With `create_graph`, VJPs run on Tensors, so the gradients are themselves on the tape.
    """
    stop = {id(t) for t in inputs} if inputs is not None else set()
    found: dict[int, Any] = {}  # requested inputs' gradients; with inputs=None, leaves' .grad
    handed = {id(upstream)}  # arrays given to a leaf already: a second holder gets a copy
    pending: dict[int, Any] = {id(root): upstream}  # op outputs' gradients awaiting their turn
    sliced: dict[int, tuple[TensorBase, np.ndarray]] = {}  # buffers that slices add to: _add_slice
    heap: list[tuple[int, TensorBase]] = [(0, root)]
    if root._op is None or id(root) in stop:
        _deliver(root, pending.pop(id(root)), inputs is None, found, handed)
        heap.clear()
    modes = THREAD.modes
    grads_of = _checked_input_grads if modes.anomaly else _input_grads
    prev_mode, modes.grad_enabled = modes.grad_enabled, create_graph
    try:
        while heap:
            t = heappop(heap)[1]
            g = pending.pop(id(t))
            if sliced:
                sliced.pop(id(t), None)  # its buffer is g now: no slice of t comes after
            if t._values is None:
                raise freed_error(t)
            if t._retains:
                _retain(t, g, handed)
            op: Any = t._op
            if op.vjp_into is not None and not create_graph:
                _add_slice(t, g, pending, sliced, stop, heap)
            else:
                owned = op.vjp_owned is not None and not create_graph and _owned(g, t, handed)
                for p, pg in grads_of(t, g, create_graph, owned):
                    k = id(p)
                    if p._op is None or k in stop:
                        _deliver(p, pg, inputs is None, found, handed)
                    elif k in pending:
                        pending[k] = pending[k] + pg
                    else:
                        pending[k] = pg
                        heappush(heap, (-p._seq, p))
                pg = None  # a hold of its own: the next node's g would not look owned (_owned)
            if not retain_graph:
                if t._lease:
                    release(t._lease)
                t._inputs = t._values = None  # what holds memory; _values None: freed
        _deliver_slices(sliced, inputs is None, found, handed)
    finally:
        modes.grad_enabled = prev_mode
    return None if inputs is None else [found.get(id(t)) for t in inputs]


def _owned(g: Any, t: TensorBase, handed: set[int]) -> bool:
    """May t's VJP write into its upstream g? Only into a larger ndarray of t's output's shape and
    dtype that owns its memory (a view would hold a reference), was never handed out (the
    caller's upstream, a .grad, a result), and that only run_backward's variable holds."""
    return (COUNTS_REFS and type(g) is np.ndarray and g.nbytes > 4096 and g.flags.owndata
            and g.flags.writeable and id(g) not in handed and g.shape == t._ans.shape
            and g.dtype == t._ans.dtype and sys.getrefcount(g) == 3)  # the variable, g, the call


def _add_slice(t: TensorBase, g: Any, pending: dict[int, Any],
               sliced: dict[int, tuple[TensorBase, np.ndarray]], stop: set[int],
               heap: list[tuple[int, TensorBase]]) -> None:
    """t = x[index]: its gradient g is added in place into x's pending gradient (the op's
    vjp_into), so x̄ = zeros with ḡ at index is never built whole and many slices of one Tensor
    cost their own sizes, not x's size each. x's pending gradient is a buffer of this sweep's own
    (in `sliced`) from x's first slice on, and again after a whole gradient replaced it; a
    leaf's or a requested input's buffer is delivered when the sweep ends."""
    x, v, k = t._inputs[0], t._values[0], id(t._inputs[0])
    had = pending.get(k)
    buf = sliced[k][1] if k in sliced else None
    if buf is None or buf is not had:
        buf = np.zeros(v.shape, v.dtype) if had is None else np.array(had, v.dtype, order="C")
        pending[k], sliced[k] = buf, (x, buf)
        if had is None and x._op is not None and k not in stop:
            heappush(heap, (-x._seq, x))
    t._op.vjp_into(buf, g, **t._params)  # type: ignore[union-attr, misc]


def _deliver_slices(sliced: dict[int, tuple[TensorBase, np.ndarray]], to_leaves: bool,
                    found: dict[int, Any], handed: set[int]) -> None:
    """At the sweep's end, the buffers left in `sliced` (those of leaves and requested inputs,
    whose turn never comes) reach them as any gradient does."""
    for x, buf in sliced.values():
        _deliver(x, buf, to_leaves, found, handed)


def _deliver(t: TensorBase, g: Any, to_leaves: bool, found: dict[int, Any],
             handed: set[int]) -> None:
    """A gradient reaching a leaf: summed into its .grad, or into its result when inputs were
    requested."""
    if not to_leaves:
        prev = found.get(id(t))
        found[id(t)] = g if prev is None else prev + g
    elif g.shape != t._data.shape:
        raise RuntimeError(f"backward: a leaf's .data was rebound from shape {g.shape} to "
                           f"{t._data.shape} after the forward pass used it; its gradient has "
                           f"the shape the forward saw. Rebind .data after backward()")
    else:
        with _accumulating:  # another thread's backward may be adding to the same leaf
            if t.grad is None:
                t.grad = _own(g, t._data.dtype, handed)
            else:
                t.grad = np.add(t.grad, g, out=np.empty_like(t._data))


_accumulating = threading.Lock()  # .grad += g is a read and a write: one thread at a time


def _retain(t: TensorBase, g: Any, handed: set[int]) -> None:
    """retain_grad(): an intermediate's gradient kept in its .grad."""
    g = g._data if isinstance(g, TensorBase) else g
    with _accumulating:
        t.grad = _own(g, t._data.dtype, handed) if t.grad is None else t.grad + g


def _own(g: Any, dtype: Any, handed: set[int]) -> np.ndarray:
    """g as an array nobody else holds (optimizers scale .grad in place): a copy unless it owns
    its memory, is writeable, of the leaf's dtype and not handed out already."""
    if (type(g) is not np.ndarray or g.base is not None or id(g) in handed
            or not g.flags.writeable or g.dtype != dtype):
        g = np.array(g, dtype=dtype)
    handed.add(id(g))
    return g


def _recorded_operands(t: TensorBase) -> tuple[tuple[Any, ...], TensorBase]:
    """For higher order a VJP runs on the Tensors themselves, so what it computes is recorded;
    they must still hold the values the forward used."""
    name = t._op.name if t._op is not None else "op"
    for p, v in zip(t._inputs, t._values):
        if p is not None and p._data is not v and not (
                p._data.shape == np.shape(v) and np.array_equal(p._data, v, equal_nan=True)):
            raise RuntimeError(f"{name}: an input's value was changed after the op was recorded; "
                               f"higher-order derivatives need the values the forward used")
    y = t._ans
    if t._data is not y and not (t._data.shape == y.shape and np.shares_memory(t._data, y)):
        raise RuntimeError(f"{name}: its output's .data was replaced after the op was recorded; "
                           f"higher-order derivatives need the original")
    trace = THREAD.modes.trace
    if trace is not None:  # mg.compile: values read by the VJP are recorded operands too
        return trace.vjp_operands(t), t
    return tuple(v if p is None else p for p, v in zip(t._inputs, t._values)), t
