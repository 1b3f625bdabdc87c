"""The public functions (`mg.exp`, `mg.sum`, …) and Tensor methods call: argument checks and
normalisation (axes, shapes, indices), then one primitive of the table in `ops.py`.

Also the maps that route NumPy functions on Tensors (`np.exp(t)`, `np.where(c, t, 0)`) here,
so they are recorded; anything not listed raises TypeError instead of dropping the gradient.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minigrad import ops
from minigrad.tensor import ArrayLike, Tensor, apply, constant, value_of

Axis = int | Sequence[int] | None


def _value(x: Any) -> Any:
    return x._data if isinstance(x, Tensor) else x


def _shape(x: Any, name: str) -> tuple[int, ...]:
    if type(x) is Tensor:
        return x._data.shape  # type: ignore[no-any-return]
    return np.shape(value_of(x, name))  # TypeError for anything that is not an operand


_ALL_AXES = [tuple(range(n)) for n in range(8)]


def _axes(axis: Axis, ndim: int, name: str) -> tuple[int, ...]:
    """Normalise an axis argument to a sorted tuple of non-negative axes."""
    if axis is None:
        return _ALL_AXES[ndim] if ndim < 8 else tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:  # the common axis=-1
        return (axis % ndim,)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < ndim and not (ndim == 0 and ax in (0, -1)):
            raise ValueError(f"{name}: axis {ax} is out of bounds for an array of {ndim} dims")
        out.append(int(ax) % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: repeated axis in {axis}")
    return tuple(sorted(out)) if ndim else ()


def _one_axis(axis: int, ndim: int, name: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} is out of bounds for an array of {ndim} dims")
    return int(axis) % ndim


def _floating(x: ArrayLike) -> Any:
    """Softmax-family inputs are computed in floating point (ints become float64)."""
    if isinstance(x, Tensor):
        return x if x.dtype.kind in "fc" else apply(ops.astype, x, dtype=np.dtype(np.float64))
    arr = np.asarray(x)
    return arr if arr.dtype.kind in "fc" else arr.astype(np.float64)


# --- arithmetic -------------------------------------------------------------------------------
def add(a: ArrayLike, b: ArrayLike) -> Tensor:
    """a + b, broadcast."""
    return apply(ops.add, a, b)


def subtract(a: ArrayLike, b: ArrayLike) -> Tensor:
    """a − b, broadcast."""
    return apply(ops.subtract, a, b)


def multiply(a: ArrayLike, b: ArrayLike) -> Tensor:
    """a · b, broadcast."""
    return apply(ops.multiply, a, b)


def divide(a: ArrayLike, b: ArrayLike) -> Tensor:
    """a / b, broadcast (true division)."""
    return apply(ops.divide, a, b)


def power(a: ArrayLike, b: ArrayLike) -> Tensor:
    """a ** b, broadcast."""
    return apply(ops.power, a, b)


def negative(x: ArrayLike) -> Tensor:
    """−x."""
    return apply(ops.negative, x)


# --- elementwise functions ----------------------------------------------------------------------
def exp(x: ArrayLike) -> Tensor:
    """Elementwise eˣ."""
    return apply(ops.exp, x)


def log(x: ArrayLike) -> Tensor:
    """Elementwise natural log (NaN for negatives and −inf at 0, as NumPy)."""
    return apply(ops.log, x)


def sqrt(x: ArrayLike) -> Tensor:
    """Elementwise square root."""
    return apply(ops.sqrt, x)


def tanh(x: ArrayLike) -> Tensor:
    """Elementwise tanh."""
    return apply(ops.tanh, x)


def sigmoid(x: ArrayLike) -> Tensor:
    """Elementwise logistic sigmoid, stable for large |x|."""
    return apply(ops.sigmoid, x)


def relu(x: ArrayLike) -> Tensor:
    """Elementwise max(x, 0); the gradient at 0 is 0."""
    return apply(ops.relu, x)


def abs(x: ArrayLike) -> Tensor:  # noqa: A001
    """Elementwise |x|; the gradient at 0 is 0."""
    return apply(ops.absolute, x)


def maximum(a: ArrayLike, b: ArrayLike) -> Tensor:
    """Elementwise maximum; at ties each side gets half the gradient."""
    return apply(ops.maximum, a, b)


def minimum(a: ArrayLike, b: ArrayLike) -> Tensor:
    """Elementwise minimum; at ties each side gets half the gradient."""
    return apply(ops.minimum, a, b)


def where(cond: ArrayLike, a: ArrayLike, b: ArrayLike) -> Tensor:
    """`a` where cond else `b`; cond is a bool ndarray or Tensor and is not differentiated."""
    c = np.asarray(_value(cond))
    if c.dtype != np.bool_:
        raise TypeError(f"where: cond must be boolean, got dtype {c.dtype} (shape {c.shape})")
    return apply(ops.where, a, b, cond=c)


def clip(x: ArrayLike, lo: Any = None, hi: Any = None) -> Tensor:
    """Clamp to [lo, hi]; the gradient passes where lo ≤ x ≤ hi. Bounds are not differentiated."""
    if lo is None and hi is None:
        raise ValueError("clip: give lo, hi or both")
    for name, bound in (("lo", lo), ("hi", hi)):
        if isinstance(bound, Tensor) and bound.requires_grad:  # it would get no gradient
            raise TypeError(f"clip: the bound {name} is a Tensor that requires grad, but clip's "
                            f"bounds are constants; use mg.maximum(x, lo) / mg.minimum(x, hi) "
                            f"to differentiate with respect to a bound, or pass {name}.detach()")
    return apply(ops.clip, x, lo=_value(lo), hi=_value(hi))


def astype(x: ArrayLike, dtype: Any) -> Tensor:
    """A differentiable cast; the gradient is cast back to x's dtype."""
    dt = np.dtype(dtype)
    if isinstance(x, Tensor) and x.requires_grad and dt.kind not in "fc":
        raise TypeError(f"astype: a Tensor that requires grad can only be cast to a floating "
                        f"dtype, not {dt}; use .detach().astype(...)")
    return apply(ops.astype, x, dtype=dt)


# --- reductions ---------------------------------------------------------------------------------
def sum(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over axis (all axes by default)."""
    if axis is None and type(x) is Tensor and x._data.ndim < 8:  # the common case, short
        return apply(ops.sum, x, axis=_ALL_AXES[x._data.ndim], keepdims=bool(keepdims))
    axes = _axes(axis, len(_shape(x, "sum")), "sum")
    return apply(ops.sum, x, axis=axes, keepdims=bool(keepdims))


def mean(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Mean over axis (all axes by default)."""
    shape = _shape(x, "mean")
    axes = _axes(axis, len(shape), "mean")
    return apply(ops.mean, x, axis=axes, keepdims=bool(keepdims),
                 count=math.prod(shape[a] for a in axes))


def max(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over axis, values only; tied maxima share the gradient evenly."""
    axes = _axes(axis, len(_shape(x, "max")), "max")
    return apply(ops.amax, x, axis=axes, keepdims=bool(keepdims))


def min(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Minimum over axis, values only; tied minima share the gradient evenly."""
    axes = _axes(axis, len(_shape(x, "min")), "min")
    return apply(ops.amin, x, axis=axes, keepdims=bool(keepdims))


def softmax(x: ArrayLike, axis: int = -1) -> Tensor:
    """Softmax along axis, stable at any logit size."""
    return apply(ops.softmax, _floating(x), axis=_axes(axis, len(_shape(x, "softmax")), "softmax"))


def log_softmax(x: ArrayLike, axis: int = -1) -> Tensor:
    """log(softmax(x)) along axis, computed without forming softmax (finite at ±1e4)."""
    return apply(ops.log_softmax, _floating(x),
                 axis=_axes(axis, len(_shape(x, "log_softmax")), "log_softmax"))


def logsumexp(x: ArrayLike, axis: Axis = -1, keepdims: bool = False) -> Tensor:
    """log Σ exp(x) over axis, stable at any logit size."""
    axes = _axes(axis, len(_shape(x, "logsumexp")), "logsumexp")
    return apply(ops.logsumexp, _floating(x), axis=axes, keepdims=bool(keepdims))


# --- linear algebra -----------------------------------------------------------------------------
def matmul(a: ArrayLike, b: ArrayLike) -> Tensor:
    """Matrix product with NumPy's rules: 1-D, 2-D and batched (broadcast) operands."""
    sa, sb = _shape(a, "matmul"), _shape(b, "matmul")
    if len(sa) == 0 or len(sb) == 0:
        raise ValueError(f"matmul: operands must be at least 1-D, got shapes {sa} and {sb}; "
                         f"use * for scalars")
    k = sb[0] if len(sb) == 1 else sb[-2]
    if sa[-1] != k:
        raise ValueError(f"matmul: shapes {sa} and {sb} are not aligned: the last axis of the "
                         f"first ({sa[-1]}) must equal the "
                         f"{'only' if len(sb) == 1 else 'second-to-last'} axis of the second "
                         f"({k})")
    return apply(ops.matmul, a, b)


def linear(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None) -> Tensor:
    """x @ weightᵀ + bias in one recorded op (weight is (out, in), PyTorch's layout)."""
    if type(x) is Tensor and type(weight) is Tensor and type(bias) is Tensor:  # nn.Linear
        sx, sw, sb = x._data.shape, weight._data.shape, bias._data.shape
        if len(sw) == 2 and sx[-1:] == sw[1:] and sb == sw[:1]:
            return apply(ops.linear, x, weight, bias)
    return _checked_linear(ops.linear, x, weight, bias)


def linear_relu(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None) -> Tensor:
    """relu(linear(x, weight, bias)) as one recorded op: what nn.Sequential records for a Linear
    followed by a ReLU, whose pre-activation nobody sees and so needs no array of its own."""
    if type(x) is Tensor and type(weight) is Tensor and type(bias) is Tensor:
        sx, sw, sb = x._data.shape, weight._data.shape, bias._data.shape
        if len(sw) == 2 and sx[-1:] == sw[1:] and sb == sw[:1]:
            return apply(ops.linear_relu, x, weight, bias)
    return _checked_linear(ops.linear_relu, x, weight, bias)


def _checked_linear(op: Any, x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None) -> Tensor:
    sx, sw = _shape(x, "linear"), _shape(weight, "linear")
    if len(sw) != 2 or len(sx) == 0 or sx[-1] != sw[1]:
        raise ValueError(f"linear: input of shape {sx} and weight of shape {sw} do not fit: the "
                         f"weight must be (out_features, in_features) and the input end in "
                         f"in_features")
    if bias is not None and _shape(bias, "linear") not in ((sw[0],), ()):
        raise ValueError(f"linear: bias of shape {_shape(bias, 'linear')} does not fit weight "
                         f"of shape {sw}; it must be ({sw[0]},)")
    if bias is None:
        return apply(op, x, weight)
    return apply(op, x, weight, bias)


# --- shape and indexing -------------------------------------------------------------------------
def reshape(x: ArrayLike, shape: int | Sequence[int]) -> Tensor:
    """Reshape (one dimension may be -1)."""
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    return apply(ops.reshape, x, shape=shape)


def transpose(x: ArrayLike, axes: Sequence[int] | None = None) -> Tensor:
    """Permute axes (reverse them by default), as np.transpose."""
    nd = len(_shape(x, "transpose"))
    if axes is None:
        perm = tuple(range(nd))[::-1]
    else:
        perm = tuple(int(a) % nd if nd else int(a) for a in axes)
        if sorted(perm) != list(range(nd)):
            raise ValueError(f"transpose: axes {tuple(axes)} are not a permutation of the "
                             f"{nd} axes of shape {_shape(x, 'transpose')}")
    return apply(ops.transpose, x, axes=perm)


def swapaxes(x: ArrayLike, axis1: int, axis2: int) -> Tensor:
    """Exchange two axes."""
    nd = len(_shape(x, "swapaxes"))
    perm = list(range(nd))
    i, j = _one_axis(axis1, nd, "swapaxes"), _one_axis(axis2, nd, "swapaxes")
    perm[i], perm[j] = perm[j], perm[i]
    return apply(ops.transpose, x, axes=tuple(perm))


def broadcast_to(x: ArrayLike, shape: int | Sequence[int]) -> Tensor:
    """Broadcast to shape (a read-only view); the gradient is summed back."""
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
    return apply(ops.broadcast_to, x, shape=shape)


def expand_dims(x: ArrayLike, axis: int | Sequence[int]) -> Tensor:
    """Insert size-1 axes (a reshape)."""
    shape = np.expand_dims(np.empty(_shape(x, "expand_dims"), dtype=bool), axis).shape
    return apply(ops.reshape, x, shape=shape)


def squeeze(x: ArrayLike, axis: int | Sequence[int] | None = None) -> Tensor:
    """Remove size-1 axes (a reshape)."""
    shape = np.squeeze(np.empty(_shape(x, "squeeze"), dtype=bool), axis).shape
    return apply(ops.reshape, x, shape=shape)


def getitem(x: ArrayLike, index: Any) -> Tensor:
    """x[index]: basic slicing, integer-array and boolean indexing, as NumPy."""
    if type(index) is tuple and _ints_and_slices(index):
        idx, basic = index, True  # the common x[i, j] / x[:, 1:]: nothing to copy or check
    elif type(index) is tuple and _integer_arrays(index):
        idx, basic = tuple([p.copy() for p in index]), False  # logp[rows, actions], copied as below
    else:
        idx = _unwrap_index(index)
        parts = idx if isinstance(idx, tuple) else (idx,)
        basic = builtins.all(p is None or p is Ellipsis or isinstance(p, (int, np.integer,
                                                                           slice))
                             for p in parts)
    try:
        return apply(ops.getitem, x, index=idx, basic=basic)
    except IndexError as e:
        raise IndexError(f"getitem: {e} (indexing a Tensor of shape "
                         f"{_shape(x, 'getitem')})") from None


def _ints_and_slices(index: tuple[Any, ...]) -> bool:
    for p in index:  # a loop, not all(…): this runs for every indexing of a policy's output
        if type(p) is not int and type(p) is not slice:
            return False
    return True


def _integer_arrays(index: tuple[Any, ...]) -> bool:
    for p in index:
        if type(p) is not np.ndarray or p.dtype.kind not in "iu":
            return False
    return True


def _unwrap_index(index: Any) -> Any:
    if isinstance(index, tuple):
        return tuple(_unwrap_index(i) for i in index)
    # Index arrays are copied (they are small next to the data): the tape keeps its own, so the
    # caller may reuse theirs at once, and a later write to it cannot move the gradient.
    if isinstance(index, Tensor):
        if index.dtype.kind not in "biu":
            raise IndexError(f"getitem: index Tensors must be integer or bool, got {index.dtype}")
        return index._data.copy()
    if isinstance(index, np.ndarray):
        return index.copy()
    if isinstance(index, (list, range)):
        arr = np.asarray(index)
        return arr.astype(np.intp) if arr.size == 0 else arr  # [] indexes nothing, as NumPy
    return index


def concatenate(seq: Sequence[ArrayLike], axis: int = 0) -> Tensor:
    """Join along an existing axis."""
    seq = list(seq)
    if not seq:
        raise ValueError("concatenate: need at least one array")
    nd = len(_shape(seq[0], "concatenate"))
    return apply(ops.concatenate, *seq, axis=_one_axis(axis, nd, "concatenate"))


def stack(seq: Sequence[ArrayLike], axis: int = 0) -> Tensor:
    """Join along a new axis."""
    seq = list(seq)
    if not seq:
        raise ValueError("stack: need at least one array")
    return apply(ops.stack, *seq, axis=_one_axis(axis, len(_shape(seq[0], "stack")) + 1, "stack"))


# --- not differentiable: comparisons, logic, argmax ---------------------------------------------
def _elementwise_constant(fn: Callable[..., Any], name: str) -> Callable[..., Tensor]:
    def op(*args: ArrayLike) -> Tensor:
        return constant(fn, *args, name=name)
    op.__name__ = name
    op.__doc__ = f"Elementwise {name}: a Tensor that never requires grad."
    return op


less = _elementwise_constant(np.less, "less")
less_equal = _elementwise_constant(np.less_equal, "less_equal")
greater = _elementwise_constant(np.greater, "greater")
greater_equal = _elementwise_constant(np.greater_equal, "greater_equal")
equal = _elementwise_constant(np.equal, "equal")
not_equal = _elementwise_constant(np.not_equal, "not_equal")
logical_and = _elementwise_constant(np.logical_and, "logical_and")
logical_or = _elementwise_constant(np.logical_or, "logical_or")
logical_not = _elementwise_constant(np.logical_not, "logical_not")
sign = _elementwise_constant(np.sign, "sign")
isfinite = _elementwise_constant(np.isfinite, "isfinite")
isnan = _elementwise_constant(np.isnan, "isnan")


def argmax(x: ArrayLike, axis: int | None = None) -> Tensor:
    """Indices of the maxima: an integer Tensor that never requires grad."""
    return constant(lambda v: np.argmax(v, axis=axis), x, name="argmax")


def argmin(x: ArrayLike, axis: int | None = None) -> Tensor:
    """Indices of the minima: an integer Tensor that never requires grad."""
    return constant(lambda v: np.argmin(v, axis=axis), x, name="argmin")


# --- NumPy functions on Tensors (tensor.py's __array_ufunc__ / __array_function__) -------------
NUMPY_UFUNCS: dict[Any, Callable[..., Tensor]] = {
    np.add: add, np.subtract: subtract, np.multiply: multiply, np.divide: divide,
    np.power: power, np.negative: negative, np.positive: lambda x: x, np.exp: exp, np.log: log,
    np.sqrt: sqrt, np.tanh: tanh, np.absolute: abs, np.maximum: maximum, np.minimum: minimum,
    np.matmul: matmul, np.less: less, np.less_equal: less_equal, np.greater: greater,
    np.greater_equal: greater_equal, np.equal: equal, np.not_equal: not_equal,
    np.logical_and: logical_and, np.logical_or: logical_or, np.logical_not: logical_not,
    np.bitwise_and: logical_and, np.bitwise_or: logical_or, np.invert: logical_not,
    np.sign: sign, np.isfinite: isfinite, np.isnan: isnan,
}
NUMPY_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    np.sum: sum, np.mean: mean, np.max: max, np.amax: max, np.min: min, np.amin: min,
    np.reshape: reshape, np.transpose: transpose, np.swapaxes: swapaxes,
    np.matrix_transpose: lambda x: swapaxes(x, -1, -2), np.where: where,
    np.broadcast_to: broadcast_to, np.concatenate: concatenate, np.stack: stack,
    np.clip: clip, np.argmax: argmax, np.argmin: argmin, np.expand_dims: expand_dims,
    np.squeeze: squeeze, np.shape: lambda x: x.shape, np.ndim: lambda x: x.ndim,
    np.size: lambda x: x.size, np.matmul: matmul,
}
