"""The tape: `Tensor`, the operation each op output records, and the reverse sweep.

Every operation on Tensors goes through `apply(op, *args)`: it runs the op's NumPy forward and,
when an input requires grad, returns a Tensor that also records how it was made: the op, its
input Tensors, the input values the forward used, its output and parameters. That record is the
tape (a Tensor made by an op is its own node, so recording costs one object). `backward()`
walks it from the output to the leaves in one pass, calling each op's VJP from the table in
`ops.py`. No Jacobian is ever built.

Nothing the tape saved can be changed in place. A recorded op's output is read-only from birth
and stays so (as in JAX: copy it, `np.array(t)`, to get an array you may write). Other arrays a
VJP reads (leaves' values such as parameters and inputs, or an array parameter such as an index)
are made read-only while the tape holds them and writeable again when `backward()` frees the tape
or the graph is dropped. Locking covers the whole memory: the array, the array owning its memory,
and any leaf Tensor's view of that memory.
"""

from __future__ import annotations

import linecache
import math
import os
import sys
import weakref
from collections.abc import Callable, Iterator, Sequence
from heapq import heappop, heappush
from itertools import count
from typing import Any, Union

import numpy as np

# Who else holds an array: CPython's reference count, where a local variable passed to
# getrefcount counts 2 when nothing else holds the object. CPython 3.14 may borrow such
# references (then 2 can mean one other holder), and other interpreters count differently:
# there, assume somebody else always holds it.
_refcount = (sys.getrefcount if sys.implementation.name == "cpython" and sys.version_info < (3, 14)
             else (lambda a: 99))

ArrayLike = Union["Tensor", np.ndarray, float, int, bool, np.generic, Sequence[Any]]


class _State:
    """Global switches. One flag read per op is all the cost they have when off."""

    grad_enabled: bool = True
    anomaly: bool = False
    transform_depth: int = 0  # > 0 while a functional transform traces a function
    vjp_of: str | None = None  # under anomaly with create_graph: the op whose VJP is recording


STATE = _State()


class ShapeMismatchError(ValueError, RuntimeError):
    """A shape mismatch in backward misuse: a ValueError (shapes) and a RuntimeError (backward)."""


# ---------------------------------------------------------------------------------------------
# Read-only locks on saved arrays
# ---------------------------------------------------------------------------------------------
# (setflags is called with its flag positional: write= makes the call three times slower.)
# id(array) -> [array, count]: how many live nodes read this array in their VJP. Only arrays
# that were writeable when first locked are listed, so we never unlock what we did not lock.
_locks: dict[int, list[Any]] = {}
# A view can be made writeable only while the array owning its memory is. Views released while
# another graph still locks their owner wait here (owner id -> views) and follow the owner.
_waiting: dict[int, list[np.ndarray]] = {}
# Writeable views of another array's memory held by leaf Tensors that require grad (parameters
# sliced from one flat buffer): owner id -> weak references. Locking an array on that memory
# locks the ones overlapping it too, since a write through them would change what the tape
# saved. (Only parameters are listed, so a dataset split into thousands of row Tensors costs
# nothing here.)
_leaf_views: dict[int, list[weakref.ref[np.ndarray]]] = {}


def _lock(arrays: Sequence[Any]) -> _Lease | None:
    """Make each array, the leaf-held views overlapping it and its memory owner read-only;
    return what was locked (owners last), or None. A read-only array we did not lock (a
    recorded op's output, born read-only, or the user's own) needs nothing."""
    locked = None
    for a in arrays:
        if type(a) is not np.ndarray and not isinstance(a, np.ndarray):
            continue
        base = a.base
        if base is None and not _leaf_views:  # the common case: an array owning its memory
            group: Sequence[np.ndarray] = (a,)
        else:
            owner = base if isinstance(base, np.ndarray) else a
            group = [] if a is owner else [a]
            siblings = _leaf_views.get(id(owner))
            if siblings:
                group += [v for r in siblings if (v := r()) is not None and v is not a
                          and np.may_share_memory(v, a)]
            group.append(owner)
        for arr in group:  # counted: an array several live nodes read unlocks with the last
            entry = _locks.get(id(arr))
            if entry is not None:
                entry[1] += 1
            elif arr.flags.writeable:
                arr.setflags(False)  # type: ignore[call-arg]
                _locks[id(arr)] = [arr, 1]
            else:
                continue
            if locked is None:
                locked = _Lease()
            locked.append(arr)
    return locked


def _unlock(locked: Sequence[np.ndarray]) -> None:
    # Owners were locked after their views: release them first, since a view can only be made
    # writeable while its owner is.
    for arr in reversed(locked):
        entry = _locks.get(id(arr))
        if entry is None:
            continue
        if entry[1] > 1:
            entry[1] -= 1
            continue
        del _locks[id(arr)]
        if arr.base is None and not _waiting:
            arr.setflags(True)  # owns its memory, nobody waits on it: the common case
        else:
            _make_writeable(arr)


def _make_writeable(arr: np.ndarray) -> None:
    try:
        arr.setflags(True)  # type: ignore[call-arg]
    except ValueError:  # its owner is still locked by another graph: wait for the owner
        owner = arr.base
        if isinstance(owner, np.ndarray) and id(owner) in _locks:
            _waiting.setdefault(id(owner), []).append(arr)
        _waiting.pop(id(arr), None)
        return
    if _waiting:
        for view in _waiting.pop(id(arr), ()):
            if id(view) not in _locks:
                _make_writeable(view)


def locked_by_a_graph(arr: np.ndarray) -> bool:
    """Is arr read-only because a live graph saved it (rather than being an op's output, which
    stays read-only, or an array that was read-only to begin with)?"""
    owner = arr.base if isinstance(arr.base, np.ndarray) else None
    return id(arr) in _locks or (owner is not None and id(owner) in _locks)


def _note_leaf_view(arr: np.ndarray) -> None:
    """Remember a leaf's view of another array's memory, so locks on that memory cover it."""
    owner = arr.base
    if not isinstance(owner, np.ndarray):
        return
    key = id(owner)
    if not arr.flags.writeable:
        return
    refs = _leaf_views.setdefault(key, [])
    if any(r() is arr for r in refs):
        return

    def forget(ref: weakref.ref[np.ndarray]) -> None:
        live = _leaf_views.get(key)
        if live is not None and ref in live:
            live.remove(ref)
            if not live:
                del _leaf_views[key]

    refs.append(weakref.ref(arr, forget))


class _Lease(list):  # type: ignore[type-arg]
    """The arrays one recorded op locked (owners last): unlocked (and the list emptied) by
    `backward()` or, when the graph is dropped without one, when the op's output is collected."""

    __slots__ = ()

    def __del__(self) -> None:
        if self:
            _unlock(self)


def _saved(reads: str, values: tuple[Any, ...], ans: np.ndarray,
           params: dict[str, Any]) -> tuple[Any, ...]:
    """What an op's VJP reads: "x" its inputs ("01": only inputs 0 and 1), "y" its output,
    "p" its array parameters."""
    saved: tuple[Any, ...] = ()
    if "x" in reads:
        saved = values
    elif reads[0].isdigit():  # only some inputs
        for v in values:
            if type(v) is np.ndarray and v.base is not None:
                saved = values  # an unread input may view memory a read one uses: lock them all
                break
        else:
            saved = values[:2] if reads == "01" else tuple(
                [v for i, v in enumerate(values) if str(i) in reads])
    if "y" in reads:
        saved += (ans,)
    if "p" in reads:  # array parameters: where's cond, clip's bounds
        for v in params.values():
            saved += v if isinstance(v, tuple) else (v,)
    return saved


# ---------------------------------------------------------------------------------------------
# Tensor
# ---------------------------------------------------------------------------------------------
def _as_array(data: Any, dtype: Any, copy: bool) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data._data
        # A read-only value (an op's output, frozen for good, or one a live graph locks) is
        # copied: a Tensor made from it, or a parameter rebound to it, must stay writeable.
        copy = copy or not data.flags.writeable
    arr = np.array(data, dtype=dtype, copy=True) if copy else np.asarray(data, dtype=dtype)
    if arr.dtype.kind in "OSUVMm":
        raise TypeError(f"Tensor: cannot hold data of dtype {arr.dtype} "
                        f"(from {type(data).__name__}); give numbers or numeric arrays")
    return arr


class Tensor:
    """An ndarray value plus, when a recorded op made it, how: the tape's node.

    `Tensor(data)` may share an ndarray's memory when no cast is needed; `mg.tensor` copies.
    """

    # _op is None for a leaf. An op output also holds what its VJP needs: _inputs (the input
    # Tensors, None where no gradient flows), _values (the input values the forward used), _ans
    # (the output it produced), _params, _lease (arrays it locked), _seq (recording number) and,
    # under detect_anomaly, _site. Leaves leave those unset. _values is None once backward()
    # freed the node.
    __slots__ = ("_data", "grad", "_requires_grad", "_op", "_inputs", "_values", "_ans",
                 "_params", "_lease", "_seq", "_site", "__weakref__")
    _data: np.ndarray
    grad: np.ndarray | None
    _requires_grad: bool
    _op: Any  # ops.Primitive | None
    _inputs: Any  # tuple[Tensor | None, ...], None once freed
    _values: Any  # tuple of the input values, None once freed
    _ans: Any
    _params: Any
    _lease: _Lease | None
    _seq: int
    _site: str
    __hash__ = object.__hash__  # == is elementwise, so identity keeps Tensors usable as keys

    def __init__(self, data: ArrayLike, requires_grad: bool = False, dtype: Any = None,
                 *, _copy: bool = False) -> None:
        arr = _as_array(data, dtype, _copy)
        if requires_grad and arr.dtype.kind not in "fc":
            if dtype is not None:
                raise TypeError(f"Tensor: only floating dtypes can require grad, got {arr.dtype}")
            arr = arr.astype(np.float64)
        if requires_grad and arr.base is not None:
            _note_leaf_view(arr)
        self._data = arr
        self.grad: np.ndarray | None = None
        self._requires_grad = bool(requires_grad)
        self._op: Any = None

    @staticmethod
    def _make(data: np.ndarray) -> Tensor:
        """The internal constructor for values off the tape: no checks, no conversions."""
        t = _new(Tensor)
        t._data = data
        t.grad = None
        t._requires_grad = False
        t._op = None
        return t

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and self._data.dtype.kind not in "fc":
            raise TypeError(f"requires_grad: only floating Tensors can require grad, this one is "
                            f"{self._data.dtype}; use mg.tensor(data, requires_grad=True) (which "
                            f"makes it float64) or .astype(np.float64)")
        if value and not self._requires_grad and self._data.base is not None:
            _note_leaf_view(self._data)
        self._requires_grad = bool(value)

    # -- value ----------------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value: ArrayLike) -> None:
        # Rebinding is safe: the tape keeps the arrays the forward pass used.
        arr = _as_array(value, None, False)
        if self._requires_grad and arr.base is not None:
            _note_leaf_view(arr)
        self._data = arr

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._data.dtype

    @property
    def size(self) -> int:
        return self._data.size

    @property
    def is_leaf(self) -> bool:
        return self._op is None

    def numpy(self) -> np.ndarray:
        """The value as an ndarray, the same memory: read-only for good if a recorded op made
        this Tensor, read-only while a graph needs it for a leaf."""
        return self._data

    def item(self) -> float:
        if self._data.size != 1:
            raise ValueError(f"item: only a one-element Tensor converts to a Python scalar, "
                             f"this one has shape {self.shape}")
        return self._data.item()  # type: ignore[no-any-return]

    def tolist(self) -> Any:
        return self._data.tolist()

    def __copy__(self) -> Tensor:
        """copy.copy: a Tensor on the same memory. An op output's copy is recorded as a view of
        it, so the two never share one tape record (backward through one would free both)."""
        if self._op is not None:
            return apply(ops.reshape, self, shape=self._data.shape)
        new = _new(type(self))
        for cls in type(self).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if name != "__weakref__" and hasattr(self, name):
                    setattr(new, name, getattr(self, name))
        return new

    def detach(self) -> Tensor:
        """The same memory, off the tape."""
        return Tensor._make(self._data)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        # np.asarray(t) leaves the tape explicitly and gives the value.
        if copy:
            return np.array(self._data, dtype=dtype, copy=True)
        return self._data if dtype is None else self._data.astype(dtype, copy=False)

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d Tensor")
        return len(self._data)

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self[i]

    def __bool__(self) -> bool:
        return bool(self._data)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __repr__(self) -> str:
        body = np.array2string(self._data, separator=", ", prefix="tensor(")
        extra = ""
        if self._data.dtype != np.float64 and self._data.dtype.kind == "f":
            extra += f", dtype={self._data.dtype}"
        if self._op is not None:
            extra += f", op={self._op.name}"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # -- reverse mode ----------------------------------------------------------------------
    def backward(self, gradient: ArrayLike | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) · gradient into every leaf's `.grad` that requires grad.

        `gradient` is the upstream of self's shape; it may be left out for one-element outputs.
        The tape is freed afterwards unless `retain_graph=True`.
        """
        if not self._requires_grad:
            raise RuntimeError("backward: this Tensor does not require grad and was not made by "
                               "a recorded op; set requires_grad=True on the leaves first "
                               "(and compute outside mg.no_grad())")
        if gradient is None:
            if self._data.size != 1:
                raise RuntimeError(f"backward: a gradient can be left out only for a one-element "
                                   f"output; this one has shape {self.shape}: pass "
                                   f"y.backward(upstream) with an upstream of that shape")
            upstream = np.array(1, self._data.dtype).reshape(self._data.shape)  # np.ones: 6× slower
        else:
            upstream = np.asarray(gradient._data if isinstance(gradient, Tensor) else gradient)
            if upstream.shape != self.shape:
                raise ShapeMismatchError(f"backward: gradient has shape {upstream.shape} but the "
                                         f"output has shape {self.shape}; they must be equal")
            if upstream.dtype != self.dtype:
                upstream = upstream.astype(self.dtype)
        run_backward(self, upstream, retain_graph)

    # -- operators: one primitive each, straight to the table in ops.py ------------------
    def __add__(self, other: ArrayLike) -> Tensor:
        return apply(ops.add, self, other)

    def __radd__(self, other: ArrayLike) -> Tensor:
        return apply(ops.add, other, self)

    def __sub__(self, other: ArrayLike) -> Tensor:
        return apply(ops.subtract, self, other)

    def __rsub__(self, other: ArrayLike) -> Tensor:
        return apply(ops.subtract, other, self)

    def __mul__(self, other: ArrayLike) -> Tensor:
        return apply(ops.multiply, self, other)

    def __rmul__(self, other: ArrayLike) -> Tensor:
        return apply(ops.multiply, other, self)

    def __truediv__(self, other: ArrayLike) -> Tensor:
        return apply(ops.divide, self, other)

    def __rtruediv__(self, other: ArrayLike) -> Tensor:
        return apply(ops.divide, other, self)

    def __pow__(self, other: ArrayLike) -> Tensor:
        return apply(ops.power, self, other)

    def __rpow__(self, other: ArrayLike) -> Tensor:
        return apply(ops.power, other, self)

    def __matmul__(self, other: ArrayLike) -> Tensor:
        return F.matmul(self, other)

    def __rmatmul__(self, other: ArrayLike) -> Tensor:
        return F.matmul(other, self)

    def __neg__(self) -> Tensor:
        return apply(ops.negative, self)

    def __pos__(self) -> Tensor:
        return self

    def __lt__(self, other: ArrayLike) -> Tensor:
        return F.less(self, other)

    def __le__(self, other: ArrayLike) -> Tensor:
        return F.less_equal(self, other)

    def __gt__(self, other: ArrayLike) -> Tensor:
        return F.greater(self, other)

    def __ge__(self, other: ArrayLike) -> Tensor:
        return F.greater_equal(self, other)

    def __eq__(self, other: object) -> Tensor:  # type: ignore[override]
        return F.equal(self, other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> Tensor:  # type: ignore[override]
        return F.not_equal(self, other)  # type: ignore[arg-type]

    def __and__(self, other: ArrayLike) -> Tensor:
        return F.logical_and(self, other)

    __rand__ = __and__

    def __or__(self, other: ArrayLike) -> Tensor:
        return F.logical_or(self, other)

    __ror__ = __or__

    def __invert__(self) -> Tensor:
        return F.logical_not(self)

    def __getitem__(self, index: Any) -> Tensor:
        return F.getitem(self, index)

    # -- methods, NumPy's names and arguments -----------------------------------------------
    def exp(self) -> Tensor:
        return apply(ops.exp, self)

    def log(self) -> Tensor:
        return apply(ops.log, self)

    def tanh(self) -> Tensor:
        return apply(ops.tanh, self)

    def sigmoid(self) -> Tensor:
        return apply(ops.sigmoid, self)

    def relu(self) -> Tensor:
        return apply(ops.relu, self)

    def sqrt(self) -> Tensor:
        return apply(ops.sqrt, self)

    def abs(self) -> Tensor:
        return apply(ops.absolute, self)

    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return F.sum(self, axis, keepdims)

    def mean(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return F.mean(self, axis, keepdims)

    def max(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return F.max(self, axis, keepdims)

    def min(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return F.min(self, axis, keepdims)

    def argmax(self, axis: int | None = None) -> Tensor:
        return F.argmax(self, axis)

    def argmin(self, axis: int | None = None) -> Tensor:
        return F.argmin(self, axis)

    def reshape(self, *shape: Any) -> Tensor:
        return F.reshape(self, shape[0] if len(shape) == 1 else shape)

    def flatten(self) -> Tensor:
        return F.reshape(self, (-1,))

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            return F.transpose(self, axes[0])
        return F.transpose(self, axes or None)

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        return F.swapaxes(self, axis1, axis2)

    @property
    def T(self) -> Tensor:
        return F.transpose(self, None)

    @property
    def mT(self) -> Tensor:
        return F.swapaxes(self, -1, -2)

    def clip(self, lo: Any = None, hi: Any = None) -> Tensor:
        return F.clip(self, lo, hi)

    def softmax(self, axis: int = -1) -> Tensor:
        return F.softmax(self, axis)

    def log_softmax(self, axis: int = -1) -> Tensor:
        return F.log_softmax(self, axis)

    def logsumexp(self, axis: int | Sequence[int] | None = -1, keepdims: bool = False) -> Tensor:
        return F.logsumexp(self, axis, keepdims)

    def astype(self, dtype: Any) -> Tensor:
        return F.astype(self, dtype)

    # -- NumPy's protocols: a NumPy function on a Tensor records or raises, never detaches ---
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        fn = F.NUMPY_UFUNCS.get(ufunc)
        if fn is None or method != "__call__" or kwargs:
            raise TypeError(f"np.{ufunc.__name__}{'' if method == '__call__' else '.' + method}"
                            f" on a minigrad Tensor is not a recorded primitive (it would drop "
                            f"the gradient); use minigrad's own ops, or np.asarray(t) to leave "
                            f"the tape on purpose")
        return fn(*inputs)

    def __array_function__(self, func: Callable[..., Any], types: Any, args: Any,
                           kwargs: Any) -> Any:
        fn = F.NUMPY_FUNCTIONS.get(func)
        if fn is None:
            raise TypeError(f"np.{func.__name__} on a minigrad Tensor is not a recorded primitive "
                            f"(it would drop the gradient); use minigrad's own ops, or "
                            f"np.asarray(t) to leave the tape on purpose")
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------
_SCALARS = (float, int, bool, np.generic)
_OPERANDS = (np.ndarray, *_SCALARS)


def value_of(a: Any, op_name: str) -> Any:
    """An operand's NumPy value: a Tensor's array; an ndarray or a scalar as is."""
    if isinstance(a, Tensor):
        return a._data
    if isinstance(a, _OPERANDS):
        return a
    if isinstance(a, (list, tuple)):
        arr = np.asarray(a)
        if arr.dtype.kind not in "biufc":
            raise TypeError(f"{op_name}: operand {a!r:.60} is not numeric")
        return arr
    raise TypeError(f"{op_name}: unsupported operand type {type(a).__name__}; "
                    f"use a Tensor, an ndarray or a Python number")


_new = object.__new__
_next_seq = count().__next__  # recording numbers: consumers are numbered after producers


_PLAIN = frozenset({np.ndarray, float, int, np.float64, np.float32})  # operands taken as they are


def apply(op: Any, *args: Any, **params: Any) -> Tensor:
    """Run `op`'s forward on the inputs' values; when an input requires grad, the output
    records the op (it becomes a node of the tape).

    This runs for every op, so it is written out flat: on this path each Python call costs as
    much as a small NumPy operation."""
    if len(args) == 2:
        a, b = args
        values: tuple[Any, ...] = (
            a._data if type(a) is Tensor else a if type(a) in _PLAIN else value_of(a, op.name),
            b._data if type(b) is Tensor else b if type(b) in _PLAIN else value_of(b, op.name))
    elif len(args) == 1:
        a = args[0]
        values = (a._data if type(a) is Tensor else value_of(a, op.name),)
    elif len(args) == 3 and type(args[0]) is type(args[1]) is type(args[2]) is Tensor:
        values = (args[0]._data, args[1]._data, args[2]._data)  # nn.Linear's (x, W, b)
    else:
        values = tuple([a._data if type(a) is Tensor else value_of(a, op.name) for a in args])
    try:
        ans = op.forward(*values, **params)
    except ValueError as e:
        shapes = ", ".join(str(np.shape(v)) for v in values)
        raise ValueError(f"{op.name}: {e} (input shapes {shapes})") from None
    if type(ans) is not np.ndarray:
        ans = np.asarray(ans)
    if STATE.grad_enabled:
        for a in args:
            if isinstance(a, Tensor) and a._requires_grad:
                break
        else:
            a = None
        if a is not None:  # record: t becomes a node of the tape
            reads = op.reads
            if _refcount(ans) == 2:  # a new array nobody else holds (not an input returned as
                # is, not a buffer the forward keeps): born read-only, nothing to lock, ever
                ans.setflags(False)
                if ans.base is None and reads[-1:] == "y":  # the output itself can't change
                    reads = reads[:-1]
            elif ans.base is not None and _views_an_input(ans, values):
                ans.setflags(False)
            t = _new(Tensor)
            t._data = ans
            t.grad = None
            t._requires_grad = True
            t._op = op
            t._ans = ans
            if len(args) == 2:
                a, b = args
                t._inputs = (a if isinstance(a, Tensor) and a._requires_grad else None,
                             b if isinstance(b, Tensor) and b._requires_grad else None)
            elif len(args) == 1:
                t._inputs = args  # its one input is the one found requiring grad above
            elif len(args) == 3:  # linear's (x, W, b)
                a, b, c = args
                t._inputs = (a if isinstance(a, Tensor) and a._requires_grad else None,
                             b if isinstance(b, Tensor) and b._requires_grad else None,
                             c if isinstance(c, Tensor) and c._requires_grad else None)
            else:
                t._inputs = tuple([a if isinstance(a, Tensor) and a._requires_grad else None
                                   for a in args])
            t._values = values
            t._params = params
            t._seq = _next_seq()
            if reads:
                t._lease = _lock(values if reads == "x" else _saved(reads, values, ans, params))
            else:
                t._lease = None
            if STATE.anomaly:
                t._site = _user_site()
                _check_finite(ans, _forward_what(op), t, values)
            return t
    if ans.base is not None and _views_an_input(ans, values):
        ans.setflags(False)
    if STATE.anomaly:
        _check_finite(ans, _forward_what(op), None, values)
    t = _new(Tensor)  # Tensor._make, written out: this is the path of every op under no_grad
    t._data = ans
    t.grad = None
    t._requires_grad = False
    t._op = None
    return t


def _views_an_input(ans: np.ndarray, values: tuple[Any, ...]) -> bool:
    """A writeable view (ans.base is set: the callers test that first) of an input's memory:
    writing it would change that input."""
    return ans.flags.writeable and any(
        type(v) is np.ndarray and np.may_share_memory(ans, v) for v in values)


def _forward_what(op: Any) -> str:
    inside = STATE.vjp_of
    return f"the forward of {op.name}" + (f" inside the VJP of {inside}" if inside else "")


def constant(fn: Callable[..., Any], *args: Any, name: str = "op") -> Tensor:
    """Apply a non-differentiable function (comparisons, argmax): never requires grad."""
    return Tensor._make(np.asarray(fn(*(value_of(a, name) for a in args))))


# ---------------------------------------------------------------------------------------------
# The reverse sweep
# ---------------------------------------------------------------------------------------------
# Every op output gets the next number when it is recorded, so a Tensor's consumers always carry
# larger numbers than the Tensor itself. Running the pending nodes largest number first (a heap)
# is therefore a topological order: when a node runs, every consumer of its output has already
# added its gradient contribution. One pass, each node visited once, no recursion.


def _freed_error(t: Tensor) -> RuntimeError:
    return RuntimeError(f"backward: the tape behind this {t._op.name} was already freed by an "
                        f"earlier backward(); pass retain_graph=True to the first backward() to "
                        f"go through the graph a second time")


def _toposort(root: Tensor, stop: set[int]) -> list[Tensor]:
    """Tensors on root's tape that require grad, inputs before outputs: the op outputs in the
    order of their recording numbers (`run_backward` visits them in reverse), each leaf (or `stop`
    Tensor) just before its first consumer."""
    made: list[Tensor] = []
    seen = {id(root)}
    todo = [root]
    while todo:
        t = todo.pop()
        if t._op is None or id(t) in stop:
            continue
        if t._values is None:
            raise _freed_error(t)
        made.append(t)
        for p in t._inputs:
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                todo.append(p)
    if not made:
        return [root]
    made.sort(key=lambda t: t._seq)
    order: list[Tensor] = []
    placed: set[int] = set()
    for t in made:
        for p in t._inputs:
            if p is not None and (p._op is None or id(p) in stop) and id(p) not in placed:
                placed.add(id(p))
                order.append(p)
        order.append(t)
    return order


def sum_to(g: Any, shape: tuple[int, ...]) -> Any:
    """Un-broadcast: sum g over the axes NumPy broadcasting added or stretched to reach g.shape."""
    lead = g.ndim - len(shape)
    if 0 < lead and g.shape[lead:] == shape:  # only leading axes added (a bias): sum them away
        if lead == 1 and g.shape[0] == 1:  # a batch of one row: that row is the sum
            return g.reshape(shape)
        if type(g) is np.ndarray and len(shape) == 1 and g.dtype.char in "fd" \
                and g.flags.c_contiguous:
            return _column_sums(g)
        axes = tuple(range(lead))
        return np.add.reduce(g, axis=axes) if type(g) is np.ndarray else g.sum(axis=axes)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape)
                                      if n == 1 and g.shape[i + lead] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape) if g.shape != shape else g


_ONES: dict[tuple[int, Any], np.ndarray] = {}  # read-only vectors of ones, by (length, dtype)


def _column_sums(g: np.ndarray) -> np.ndarray:
    """Σ over every row of a C-ordered g (float32/64, the rows its leading axes): the product
    1ᵀg, which BLAS runs 2–10× faster than NumPy's reduction over a leading axis. On a C-ordered
    g that reduction adds row after row, paying per row when rows are short (a (500, 2) bias
    gradient: 13 µs against 1.4), and is no more accurate. (On a Fortran-ordered g NumPy sums
    pairwise, which is more accurate, so sum_to leaves those to NumPy.)"""
    if g.ndim == 2:
        n = len(g)
    else:
        n = math.prod(g.shape[:-1])
        g = g.reshape((n, g.shape[-1]))
    key = (n, g.dtype)
    ones = _ONES.get(key)
    if ones is None:
        ones = np.ones(n, dtype=g.dtype)
        if n <= 65536:  # a few small vectors kept; a big one costs little next to its sum
            if len(_ONES) >= 8:
                _ONES.clear()
            ones.setflags(False)  # type: ignore[call-arg]
            _ONES[key] = ones
    return ones.dot(g)


def _fit(g: Any, value: np.ndarray, op: Any, i: int) -> Any:
    """Bring an input's gradient to that input's shape and dtype: the one place for both."""
    shape = value.shape
    if g.shape != shape:
        got = g.shape
        try:
            g = sum_to(g, shape)
        except ValueError:
            g = None
        if g is None or g.shape != shape:
            raise RuntimeError(f"{op.name}: the VJP for input {i} has shape {got} that "
                               f"does not reduce to the input's shape {shape} (a bug in the op)")
    if g.dtype != value.dtype:
        g = g.astype(value.dtype)
    return g


def run_backward(root: Tensor, upstream: Any, retain_graph: bool = False,
                 inputs: Sequence[Tensor] | None = None,
                 create_graph: bool = False) -> list[Any] | None:
    """Propagate `upstream` from root to the leaves.

    With `inputs=None`, gradients accumulate into the `.grad` of leaves that require grad.
    Otherwise they are returned, one per input (None where unreachable), and `.grad` is untouched.
    With `create_graph`, VJPs run on Tensors, so the gradients are themselves on the tape.
    """
    stop = {id(t) for t in inputs} if inputs is not None else None
    if root._op is not None and root._values is None:
        raise _freed_error(root)
    # Leaves (and requested inputs) may receive several contributions: they are summed into
    # .grad (or into results) as they arrive; an op output's gradients wait in `grads` for its
    # turn (this sweep's own dict, so a backward() run inside a VJP cannot mix with this one).
    results: dict[int, Any] = {}
    handed = {id(upstream)}  # arrays given to a leaf or by the caller: never aliased by a .grad
    grads: dict[int, Any] = {}
    heap: list[tuple[int, Tensor]] = []
    if root._op is None or (stop is not None and id(root) in stop):
        _deliver(root, upstream, stop, results, handed)
    else:
        grads[id(root)] = upstream
        heap.append((-root._seq, root))
    anomaly = STATE.anomaly
    saved_mode, saved_vjp_of = STATE.grad_enabled, STATE.vjp_of
    STATE.grad_enabled = create_graph
    try:
        while heap:
            t = heappop(heap)[1]
            g = grads.pop(id(t))
            op, values, params = t._op, t._values, t._params
            if values is None:
                raise _freed_error(t)
            xs, y = _recorded_operands(t) if create_graph else (values, t._ans)
            if anomaly and create_graph:
                STATE.vjp_of = op.name
            if op.vjp_in_place is not None and type(g) is np.ndarray and g.base is None \
                    and _refcount(g) == 2 and g.flags.writeable and g.shape == y.shape \
                    and (g.dtype is y.dtype or g.dtype == y.dtype):
                # Only this frame holds g (not the caller, not a leaf's .grad, not a sibling's
                # pending gradient): the VJP may write its result into g's memory. (g has
                # the output's shape and dtype unless the output's .data was rebound to
                # another array: then the rule must promote and broadcast, not round into g.)
                all_grads = op.vjp_in_place(g, y, *xs, **params)
            elif op.vjp_all is not None:
                all_grads = op.vjp_all(g, y, *xs, **params)
            else:
                all_grads = None
            for i, p in enumerate(t._inputs):
                if p is None:
                    continue
                pg = all_grads[i] if all_grads is not None else op.vjps[i](g, y, *xs, **params)
                if pg is None:
                    continue
                v = values[i]
                if pg.shape != v.shape or (pg.dtype is not v.dtype and pg.dtype != v.dtype):
                    pg = _fit(pg, v, op, i)
                if anomaly:
                    _check_finite(pg._data if create_graph else pg,
                                  f"the VJP of {op.name} (input {i})", t, values)
                if p._op is None or (stop is not None and id(p) in stop):
                    if stop is None:
                        _accumulate(p, pg, handed)
                    else:
                        _deliver(p, pg, stop, results, handed)
                    continue
                k = id(p)
                prev = grads.get(k)
                if prev is None:
                    grads[k] = pg
                    heappush(heap, (-p._seq, p))
                else:
                    grads[k] = prev + pg
            # Drop this frame's hold on the gradients handed on, so that one held by `grads`
            # alone is found unshared (refcount) when its turn comes, and reused in place.
            pg = all_grads = None
            if not retain_graph:
                lease = t._lease
                if lease is not None:
                    _unlock(lease)
                    lease.clear()
                t._inputs = t._values = t._ans = t._params = t._lease = None
    finally:
        STATE.grad_enabled, STATE.vjp_of = saved_mode, saved_vjp_of
    if inputs is None:
        return None
    return [results.get(id(t)) for t in inputs]


def _deliver(t: Tensor, g: Any, stop: set[int] | None, results: dict[int, Any],
             handed: set[int]) -> None:
    if stop is None:
        _accumulate(t, g, handed)
    elif id(t) in stop:
        prev = results.get(id(t))
        results[id(t)] = g if prev is None else prev + g


def _recorded_operands(t: Tensor) -> tuple[tuple[Any, ...], Tensor]:
    """For higher order, a VJP runs on the Tensors themselves, so what it computes is recorded."""
    op = t._op
    for p, v in zip(t._inputs, t._values):
        if p is not None and p._data is not v:
            raise RuntimeError(f"{op.name}: an input's .data was replaced after the op was "
                               f"recorded; higher-order derivatives need the original")
    if "y" in op.reads and t._data is not t._ans:
        raise RuntimeError(f"{op.name}: its output's .data was replaced after the op was "
                           f"recorded; higher-order derivatives need the original")
    return tuple(v if p is None else p for p, v in zip(t._inputs, t._values)), t


def owned(g: Any, handed: set[int], dtype: Any = None) -> np.ndarray:
    """g as an ndarray the caller may change in place: a copy unless g is a writeable array
    that owns its memory and was not handed out already (gradients given to users: optimizers
    and clip_grad_norm_ scale them in place). Records what it hands out in `handed`."""
    if (type(g) is not np.ndarray or g.base is not None or id(g) in handed
            or not g.flags.writeable
            or (dtype is not None and g.dtype is not dtype and g.dtype != dtype)):
        g = np.array(g, dtype=dtype)
    handed.add(id(g))
    return g


def _accumulate(leaf: Tensor, g: Any, handed: set[int]) -> None:
    if leaf.grad is None:
        leaf.grad = owned(g, handed, leaf._data.dtype)
    else:
        leaf.grad = np.add(leaf.grad, g, out=np.empty_like(leaf._data))  # ndarray even when 0-d


# ---------------------------------------------------------------------------------------------
# Grad mode and anomaly mode
# ---------------------------------------------------------------------------------------------
class no_grad:  # noqa: N801  (PyTorch's name)
    """Context manager (or decorator): nothing inside is recorded."""

    def __enter__(self) -> None:
        self._prev = STATE.grad_enabled
        STATE.grad_enabled = False

    def __exit__(self, *exc: object) -> None:
        STATE.grad_enabled = self._prev

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return fn(*args, **kwargs)
        wrapped.__name__ = getattr(fn, "__name__", "wrapped")
        wrapped.__doc__ = fn.__doc__
        return wrapped


class enable_grad(no_grad):  # noqa: N801
    """Context manager: record even inside `no_grad`."""

    def __enter__(self) -> None:
        self._prev = STATE.grad_enabled
        STATE.grad_enabled = True


def is_grad_enabled() -> bool:
    return STATE.grad_enabled


class detect_anomaly:  # noqa: N801  (PyTorch's name)
    """Inside: each node remembers the user-code line that made it, and the first op whose
    forward output or VJP result holds NaN or Inf raises RuntimeError naming the op, the shapes
    and that line. Outside it costs one flag read per op."""

    def __enter__(self) -> detect_anomaly:
        self._prev = STATE.anomaly
        STATE.anomaly = True
        return self

    def __exit__(self, *exc: object) -> None:
        STATE.anomaly = self._prev


_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_site() -> str:
    """File:line of the innermost frame outside minigrad itself."""
    frame = sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) \
            .startswith(_PKG_DIR):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "<unknown>"
    src = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{frame.f_code.co_filename}:{frame.f_lineno}: {src}"


def _check_finite(arr: Any, what: str, node: Tensor | None, values: tuple[Any, ...]) -> None:
    arr = np.asarray(arr)
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "Inf"
        shapes = ", ".join(str(np.shape(v)) for v in values)
        if node is None:  # a forward: the op is being created right now
            site = _user_site()
        else:  # a VJP: the forward may have run outside the block, where no line was kept
            site = getattr(node, "_site", None) or (
                "a line not recorded (the forward pass ran outside detect_anomaly(); run it "
                "inside the block to see where)")
        raise RuntimeError(f"detect_anomaly: {what} produced {bad} (input shapes {shapes}, "
                           f"output shape {arr.shape}); the op was created at {site}")


# ---------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------
def tensor(data: ArrayLike, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """A new leaf Tensor holding a copy of data (like torch.tensor)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, _copy=True)


def zeros(shape: int | Sequence[int], requires_grad: bool = False, dtype: Any = None) -> Tensor:
    return Tensor(np.zeros(shape, dtype=dtype or np.float64), requires_grad=requires_grad)


def ones(shape: int | Sequence[int], requires_grad: bool = False, dtype: Any = None) -> Tensor:
    return Tensor(np.ones(shape, dtype=dtype or np.float64), requires_grad=requires_grad)


from minigrad import functions as F  # noqa: E402, N812  (both build on this module)
from minigrad import ops  # noqa: E402
