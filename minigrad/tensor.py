"""`Tensor`: the tape's value (graph.TensorBase) with NumPy's operators and method names.

Every method is a one-liner into the table (`rules.py`) or its argument handling
(`functions.py`); nothing here computes or records anything itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from minigrad import functions as F  # noqa: N812
from minigrad import graph, rules
from minigrad.graph import REFUSED_KINDS, ArrayLike, TensorBase, apply, leaf
from minigrad.modes import THREAD

Axis = int | Sequence[int] | None


def as_array(data: Any, dtype: Any = None, copy: bool = False) -> np.ndarray:
    """data as a numeric ndarray; a read-only Tensor value is copied, so the result is
    writeable whenever data was not an ndarray that was read-only already."""
    if isinstance(data, TensorBase):
        copy = copy or not data._data.flags.writeable
        data = data._data
    arr = np.array(data, dtype=dtype, copy=True) if copy else np.asarray(data, dtype=dtype)
    if THREAD.modes.trace is not None and arr is not data:  # mg.compile: a copy of a traced value
        THREAD.modes.trace.alias(arr, data)
    if arr.dtype.kind in REFUSED_KINDS:
        raise TypeError(f"Tensor: cannot hold data of dtype {arr.dtype} "
                        f"(from {type(data).__name__}); give numbers or numeric arrays")
    return arr


def _differentiable(arr: np.ndarray, dtype: Any, what: str) -> np.ndarray:
    """arr as a value that may require grad: floating (integers become float64), never complex."""
    if arr.dtype.kind == "c":
        raise TypeError(f"{what}: complex Tensors cannot require grad (their VJPs would need "
                        f"conjugation, which minigrad does not define); split real and "
                        f"imaginary parts into two real Tensors")
    if arr.dtype.kind != "f":
        if dtype is not None:
            raise TypeError(f"{what}: only floating dtypes can require grad, got {arr.dtype}")
        arr = arr.astype(np.float64)
    return arr


class Tensor(TensorBase):
    """An ndarray value plus, when a recorded op made it, how: the tape's node.

    `Tensor(data)` may share an ndarray's memory when no cast is needed; `mg.tensor` copies.
    """

    __slots__ = ()

    def __init__(self, data: ArrayLike, requires_grad: bool = False, dtype: Any = None,
                 *, _copy: bool = False) -> None:
        arr = as_array(data, dtype, _copy)
        if requires_grad:
            arr = _differentiable(arr, dtype, "Tensor")
        self._data = arr
        self.grad = None
        self._requires_grad = bool(requires_grad)
        self._op = None
        self._retains = False
        if THREAD.modes.trace is not None:
            THREAD.modes.trace.made_tensor(self)

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and self._data.dtype.kind != "f":
            _differentiable(self._data, self._data.dtype, "requires_grad")
        self._requires_grad = bool(value)

    @property
    def data(self) -> np.ndarray:
        if THREAD.modes.trace is not None:
            THREAD.modes.trace.read_value(self, ".data")
        return self._data

    @data.setter
    def data(self, value: ArrayLike) -> None:
        # Rebinding is safe: the tape keeps the arrays the forward used.
        arr = as_array(value)
        if self._requires_grad:
            arr = _differentiable(arr, arr.dtype, "data")
        self._data = arr

    @property
    def is_leaf(self) -> bool:
        return self._op is None

    def retain_grad(self) -> None:
        """Keep this intermediate's gradient in `.grad` after backward() (leaves always do)."""
        if not self._requires_grad:
            raise RuntimeError("retain_grad: this Tensor does not require grad, so backward() "
                               "never reaches it")
        if self._op is not None:
            self._retains = True

    def detach(self) -> Tensor:
        """The same memory, off the tape."""
        return leaf(self._data)

    # -- value -------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return self._data.size

    def numpy(self) -> np.ndarray:
        """The value as an ndarray, the same memory (read-only if a recorded op made it)."""
        if THREAD.modes.trace is not None:
            THREAD.modes.trace.read_value(self, "numpy()")
        return self._data

    def item(self) -> float:
        if THREAD.modes.trace is not None:
            THREAD.modes.trace.read_value(self, "item()")
        if self._data.size != 1:
            raise ValueError(f"item: only a one-element Tensor converts to a Python scalar, "
                             f"this one has shape {self.shape}")
        return self._data.item()  # type: ignore[no-any-return]

    def tolist(self) -> Any:
        if THREAD.modes.trace is not None:
            THREAD.modes.trace.read_value(self, "tolist()")
        return self._data.tolist()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        # np.asarray(t) leaves the tape explicitly and gives the value.
        if THREAD.modes.trace is not None:
            THREAD.modes.trace.read_value(self, "np.asarray()")
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
        if THREAD.modes.trace is not None:
            THREAD.modes.trace.read_value(self, "bool()")
        return bool(self._data)

    def __float__(self) -> float:
        if THREAD.modes.trace is not None:
            THREAD.modes.trace.read_value(self, "float()")
        return float(self.item())

    def __int__(self) -> int:
        if THREAD.modes.trace is not None:
            THREAD.modes.trace.read_value(self, "int()")
        return int(self.item())

    def __copy__(self) -> Tensor:
        """copy.copy: a Tensor on the same memory; an op output's copy is recorded as a
        reshape of it, so the two never share one tape record."""
        if self._op is not None:
            return rules.reshape(self, shape=self.shape)
        new = Tensor(self._data, requires_grad=self._requires_grad)
        new.grad = self.grad
        return new

    def __repr__(self) -> str:
        body = np.array2string(self._data, separator=", ", prefix="tensor(")
        extra = f", dtype={self.dtype}" if self.dtype != np.float64 else ""
        if self._op is not None:
            extra += f", op={self._op.name}"
        elif self._requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # -- operators ---------------------------------------------------------------------------
    def __add__(self, other: ArrayLike) -> Tensor:
        return apply(rules.add, self, other)

    def __radd__(self, other: ArrayLike) -> Tensor:
        return apply(rules.add, other, self)

    def __sub__(self, other: ArrayLike) -> Tensor:
        return apply(rules.subtract, self, other)

    def __rsub__(self, other: ArrayLike) -> Tensor:
        return apply(rules.subtract, other, self)

    def __mul__(self, other: ArrayLike) -> Tensor:
        return apply(rules.multiply, self, other)

    def __rmul__(self, other: ArrayLike) -> Tensor:
        return apply(rules.multiply, other, self)

    def __truediv__(self, other: ArrayLike) -> Tensor:
        return apply(rules.divide, self, other)

    def __rtruediv__(self, other: ArrayLike) -> Tensor:
        return apply(rules.divide, other, self)

    def __pow__(self, other: ArrayLike) -> Tensor:
        return apply(rules.power, self, other)

    def __rpow__(self, other: ArrayLike) -> Tensor:
        return apply(rules.power, other, self)

    def __matmul__(self, other: ArrayLike) -> Tensor:
        return F.matmul(self, other)

    def __rmatmul__(self, other: ArrayLike) -> Tensor:
        return F.matmul(other, self)

    def __neg__(self) -> Tensor:
        return apply(rules.negative, self)

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
        return F.equal(self, other)

    def __ne__(self, other: object) -> Tensor:  # type: ignore[override]
        return F.not_equal(self, other)

    def __and__(self, other: ArrayLike) -> Tensor:
        return F.logical_and(self, other)

    def __rand__(self, other: ArrayLike) -> Tensor:
        return F.logical_and(other, self)

    def __or__(self, other: ArrayLike) -> Tensor:
        return F.logical_or(self, other)

    def __ror__(self, other: ArrayLike) -> Tensor:
        return F.logical_or(other, self)

    def __invert__(self) -> Tensor:
        return F.logical_not(self)

    def __getitem__(self, index: Any) -> Tensor:
        return F.getitem(self, index)

    __hash__ = TensorBase.__hash__

    # -- elementwise methods -------------------------------------------------------------------
    def exp(self) -> Tensor:
        return apply(rules.exp, self)

    def expm1(self) -> Tensor:
        return apply(rules.expm1, self)

    def log(self) -> Tensor:
        return apply(rules.log, self)

    def log1p(self) -> Tensor:
        return apply(rules.log1p, self)

    def sqrt(self) -> Tensor:
        return apply(rules.sqrt, self)

    def square(self) -> Tensor:
        return apply(rules.square, self)

    def sin(self) -> Tensor:
        return apply(rules.sin, self)

    def cos(self) -> Tensor:
        return apply(rules.cos, self)

    def tanh(self) -> Tensor:
        return apply(rules.tanh, self)

    def sigmoid(self) -> Tensor:
        return apply(rules.sigmoid, self)

    def relu(self) -> Tensor:
        return apply(rules.relu, self)

    def abs(self) -> Tensor:
        return apply(rules.absolute, self)

    def clip(self, lo: Any = None, hi: Any = None) -> Tensor:
        return F.clip(self, lo, hi)

    def astype(self, dtype: Any) -> Tensor:
        return F.astype(self, dtype)

    # -- reductions ----------------------------------------------------------------------------
    def sum(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        return F.sum(self, axis, keepdims)

    def mean(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        return F.mean(self, axis, keepdims)

    def var(self, axis: Axis = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
        return F.var(self, axis, keepdims, ddof)

    def std(self, axis: Axis = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
        return F.std(self, axis, keepdims, ddof)

    def max(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        return F.max(self, axis, keepdims)

    def min(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        return F.min(self, axis, keepdims)

    def argmax(self, axis: int | None = None) -> Tensor:
        return F.argmax(self, axis)

    def argmin(self, axis: int | None = None) -> Tensor:
        return F.argmin(self, axis)

    def softmax(self, axis: Axis = -1) -> Tensor:
        return F.softmax(self, axis)

    def log_softmax(self, axis: Axis = -1) -> Tensor:
        return F.log_softmax(self, axis)

    def logsumexp(self, axis: Axis = -1, keepdims: bool = False) -> Tensor:
        return F.logsumexp(self, axis, keepdims)

    # -- shape ---------------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        return F.reshape(self, shape[0] if len(shape) == 1 else shape)

    def flatten(self) -> Tensor:
        return F.flatten(self)

    def squeeze(self, axis: int | Sequence[int] | None = None) -> Tensor:
        return F.squeeze(self, axis)

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            return F.transpose(self, axes[0])
        return F.transpose(self, axes or None)

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        return F.swapaxes(self, axis1, axis2)

    @property
    def T(self) -> Tensor:  # noqa: N802  (NumPy's name)
        return F.transpose(self, None)

    @property
    def mT(self) -> Tensor:  # noqa: N802
        return F.swapaxes(self, -1, -2)

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


graph.use_tensor_type(Tensor)


# --- construction ---------------------------------------------------------------------------
def tensor(data: ArrayLike, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """A new leaf Tensor holding a copy of data (like torch.tensor)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, _copy=True)


def zeros(shape: int | Sequence[int], requires_grad: bool = False, dtype: Any = None) -> Tensor:
    return Tensor(np.zeros(shape, dtype=dtype or np.float64), requires_grad=requires_grad)


def ones(shape: int | Sequence[int], requires_grad: bool = False, dtype: Any = None) -> Tensor:
    return Tensor(np.ones(shape, dtype=dtype or np.float64), requires_grad=requires_grad)
