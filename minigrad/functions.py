"""The public functions that need more than their row: argument checks and normalisation
(axes, shapes, indices), then one row of the table in `rules.py`, or a few.

Also the maps that route NumPy functions on Tensors (`np.exp(t)`, `np.where(c, t, 0)`) to the
table, so they are recorded; anything not listed raises TypeError instead of dropping the
gradient. A row that is its own public function (`rules.exp`) is routed by its `numpy` entry.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad import rules
from minigrad.graph import ArrayLike, TensorBase, apply, leaf, operand
from minigrad.modes import THREAD

if TYPE_CHECKING:
    from minigrad.tensor import Tensor

Axis = int | Sequence[int] | None


def _shape(x: Any, name: str) -> tuple[int, ...]:
    if isinstance(x, TensorBase):
        return x._data.shape  # type: ignore[no-any-return]
    return np.shape(operand(x, name))  # TypeError for anything that is not an operand


def _int(value: Any, what: str, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: {what} must be an integer, got {value!r} "
                        f"({type(value).__name__})")
    return int(value)


def _axes(axis: Axis, ndim: int, name: str) -> tuple[int, ...]:
    """An axis argument as a sorted tuple of distinct non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:  # the common axis=-1
        return (axis % ndim,)
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for ax in items:
        ax = _int(ax, "axis", name)
        if not -builtins.max(ndim, 1) <= ax < builtins.max(ndim, 1):  # 0-d: NumPy takes 0, -1
            raise ValueError(f"{name}: axis {ax} is out of bounds for an array of {ndim} dims")
        out.append(ax % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: repeated axis in {axis}")
    return tuple(sorted(out)) if ndim else ()


def _one_axis(axis: Any, ndim: int, name: str) -> int:
    axis = _int(axis, "axis", name)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} is out of bounds for an array of {ndim} dims")
    return axis % ndim


def _constant_array(value: Any) -> Any:
    """An array argument (a bound, a condition) as the tape's own read-only copy, so a later
    write to the caller's array cannot move the gradient; scalars as they are."""
    if not isinstance(value, np.ndarray):
        return value
    arr = np.array(value)
    arr.flags.writeable = False
    if THREAD.modes.trace is not None:
        THREAD.modes.trace.alias(arr, value)
    return arr


def _floating(x: ArrayLike) -> Any:
    """Softmax-family inputs are computed in floating point (integers become float64)."""
    dtype = x.dtype if isinstance(x, TensorBase) else np.result_type(operand(x, "softmax"))
    return x if dtype.kind == "f" else apply(rules.astype, x, dtype=np.dtype(np.float64))


# --- elementwise ----------------------------------------------------------------------------
def where(cond: ArrayLike, a: ArrayLike, b: ArrayLike) -> Tensor:
    """`a` where cond else `b`; cond is a bool ndarray or Tensor and is not differentiated."""
    c = _constant_array(np.asarray(cond._data if isinstance(cond, TensorBase) else cond))
    if c.dtype != np.bool_:
        raise TypeError(f"where: cond must be boolean, got dtype {c.dtype} (shape {c.shape})")
    return apply(rules.where, a, b, cond=c)


def clip(x: ArrayLike, lo: Any = None, hi: Any = None) -> Tensor:
    """Clamp to [lo, hi]; the gradient passes where lo ≤ x ≤ hi. Bounds are not differentiated."""
    if lo is None and hi is None:
        raise ValueError("clip: give lo, hi or both")
    bounds = []
    for name, bound in (("lo", lo), ("hi", hi)):
        if isinstance(bound, TensorBase) and bound._requires_grad:  # it would get no gradient
            raise TypeError(f"clip: the bound {name} is a Tensor that requires grad, but clip's "
                            f"bounds are constants; use mg.maximum(x, lo) / mg.minimum(x, hi) "
                            f"to differentiate with respect to a bound, or pass {name}.detach()")
        value = bound._data if isinstance(bound, TensorBase) else bound
        bounds.append(None if value is None else _constant_array(operand(value, "clip")))
    return apply(rules.clip, x, lo=bounds[0], hi=bounds[1])


def astype(x: ArrayLike, dtype: Any) -> Tensor:
    """A differentiable cast; the gradient is cast back to x's dtype."""
    dt = np.dtype(dtype)
    if isinstance(x, TensorBase) and x._requires_grad and dt.kind != "f":
        raise TypeError(f"astype: a Tensor that requires grad can only be cast to a floating "
                        f"dtype, not {dt}; use .detach().astype(...)")
    return apply(rules.astype, x, dtype=dt)


# --- reductions -----------------------------------------------------------------------------
def sum(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over axis (all axes by default)."""
    axes = _axes(axis, len(_shape(x, "sum")), "sum")
    return apply(rules.sum, x, axis=axes, keepdims=bool(keepdims))


def mean(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Mean over axis (all axes by default)."""
    shape = _shape(x, "mean")
    axes = _axes(axis, len(shape), "mean")
    return apply(rules.mean, x, axis=axes, keepdims=bool(keepdims),
                 count=math.prod(shape[a] for a in axes))


def var(x: ArrayLike, axis: Axis = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance over axis, NumPy's `ddof`: Σ(x − mean)² / (n − ddof)."""
    shape = _shape(x, "var")
    axes = _axes(axis, len(shape), "var")
    n = math.prod(shape[a] for a in axes) - _int(ddof, "ddof", "var")
    d = apply(rules.subtract, x, mean(x, axes, keepdims=True))
    return apply(rules.divide, sum(apply(rules.square, d), axes, keepdims), n)


def std(x: ArrayLike, axis: Axis = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Standard deviation over axis: √var (its gradient is infinite where var is 0)."""
    return apply(rules.sqrt, var(x, axis, keepdims, ddof))


def max(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over axis, values only; tied maxima share the gradient evenly."""
    axes = _axes(axis, len(_shape(x, "max")), "max")
    return apply(rules.amax, x, axis=axes, keepdims=bool(keepdims))


def min(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Minimum over axis, values only; tied minima share the gradient evenly."""
    axes = _axes(axis, len(_shape(x, "min")), "min")
    return apply(rules.amin, x, axis=axes, keepdims=bool(keepdims))


def softmax(x: ArrayLike, axis: Axis = -1) -> Tensor:
    """Softmax along axis, stable at any logit size."""
    axes = _axes(axis, len(_shape(x, "softmax")), "softmax")
    return apply(rules.softmax, _floating(x), axis=axes)


def log_softmax(x: ArrayLike, axis: Axis = -1) -> Tensor:
    """log(softmax(x)) along axis, computed without forming softmax (finite at ±1e4)."""
    axes = _axes(axis, len(_shape(x, "log_softmax")), "log_softmax")
    return apply(rules.log_softmax, _floating(x), axis=axes)


def logsumexp(x: ArrayLike, axis: Axis = -1, keepdims: bool = False) -> Tensor:
    """log Σ exp(x) over axis, stable at any logit size."""
    axes = _axes(axis, len(_shape(x, "logsumexp")), "logsumexp")
    return apply(rules.logsumexp, _floating(x), axis=axes, keepdims=bool(keepdims))


# --- linear algebra -------------------------------------------------------------------------
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
    return apply(rules.matmul, a, b)


def linear(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None) -> Tensor:
    """x @ weightᵀ + bias in one recorded op (weight is (out, in), PyTorch's layout)."""
    check_linear(x, weight, bias, "linear")
    if bias is None:
        return apply(rules.linear, x, weight)
    return apply(rules.linear, x, weight, bias)


def check_linear(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None, op: str) -> None:
    """x @ weightᵀ + bias's shapes, or ValueError: weight (out, in), x ending in in, bias
    (out,) or a scalar (also for nn's fused linear_relu)."""
    sx, sw = _shape(x, op), _shape(weight, op)
    if len(sw) != 2 or len(sx) == 0 or sx[-1] != sw[1]:
        raise ValueError(f"{op}: input of shape {sx} and weight of shape {sw} do not fit: the "
                         f"weight must be (out_features, in_features) and the input end in "
                         f"in_features")
    if bias is not None and _shape(bias, op) not in ((sw[0],), ()):
        raise ValueError(f"{op}: bias of shape {_shape(bias, op)} does not fit weight of shape "
                         f"{sw}; it must be ({sw[0]},)")


# --- shape ------------------------------------------------------------------------------------
def _shape_arg(shape: Any, name: str) -> tuple[int, ...]:
    items = shape if isinstance(shape, (tuple, list)) else (shape,)
    return tuple(_int(s, "shape", name) for s in items)


def reshape(x: ArrayLike, shape: int | Sequence[int]) -> Tensor:
    """Reshape (one dimension may be -1)."""
    return apply(rules.reshape, x, shape=_shape_arg(shape, "reshape"))


def flatten(x: ArrayLike) -> Tensor:
    """The elements as one axis (a reshape)."""
    return apply(rules.reshape, x, shape=(-1,))


def transpose(x: ArrayLike, axes: Sequence[int] | None = None) -> Tensor:
    """Permute axes (reverse them by default), as np.transpose."""
    shape = _shape(x, "transpose")
    perm = tuple(range(len(shape)))[::-1] if axes is None else tuple(
        _one_axis(a, len(shape), "transpose") for a in axes)
    if sorted(perm) != list(range(len(shape))):
        raise ValueError(f"transpose: axes {axes} are not a permutation of the {len(shape)} axes "
                         f"of shape {shape}")
    return apply(rules.transpose, x, axes=perm)


def swapaxes(x: ArrayLike, axis1: int, axis2: int) -> Tensor:
    """Exchange two axes."""
    nd = len(_shape(x, "swapaxes"))
    perm = list(range(nd))
    i, j = _one_axis(axis1, nd, "swapaxes"), _one_axis(axis2, nd, "swapaxes")
    perm[i], perm[j] = perm[j], perm[i]
    return apply(rules.transpose, x, axes=tuple(perm))


def broadcast_to(x: ArrayLike, shape: int | Sequence[int]) -> Tensor:
    """Broadcast to shape (a read-only view); the gradient is summed back."""
    return apply(rules.broadcast_to, x, shape=_shape_arg(shape, "broadcast_to"))


def expand_dims(x: ArrayLike, axis: int | Sequence[int]) -> Tensor:
    """Insert size-1 axes (a reshape)."""
    shape = np.expand_dims(np.empty(_shape(x, "expand_dims"), dtype=bool), axis).shape
    return apply(rules.reshape, x, shape=shape)


def squeeze(x: ArrayLike, axis: int | Sequence[int] | None = None) -> Tensor:
    """Remove size-1 axes (a reshape)."""
    shape = np.squeeze(np.empty(_shape(x, "squeeze"), dtype=bool), axis).shape
    return apply(rules.reshape, x, shape=shape)


def pad(x: ArrayLike, pad_width: Any, mode: str = "constant", constant_values: float = 0
        ) -> Tensor:
    """np.pad in constant mode; the gradient is the upstream without the borders."""
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is differentiable here, got {mode!r}")
    shape = _shape(x, "pad")
    if not shape:  # a 0-d array has no borders: np.pad returns it as it is
        return apply(rules.reshape, x, shape=())
    widths = np.broadcast_to(np.asarray(pad_width), (len(shape), 2))
    if widths.dtype.kind not in "iu" or (widths < 0).any():
        raise ValueError(f"pad: pad_width {pad_width!r} must be non-negative integers, one "
                         f"(before, after) pair per axis of shape {shape} (or one for all)")
    pairs = tuple((int(lo), int(hi)) for lo, hi in widths)
    return apply(rules.pad, x, pad_width=pairs, constant_values=constant_values)


# --- indexing and joining -----------------------------------------------------------------------
def getitem(x: ArrayLike, index: Any) -> Tensor:
    """x[index]: basic slicing, integer-array and boolean indexing, as NumPy."""
    idx = _own_index(index)
    basic = True  # ints, slices, None and Ellipsis only: no element picked twice
    for p in idx if isinstance(idx, tuple) else (idx,):
        if not (p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice))):
            basic = False
    try:
        return apply(rules.getitem, x, index=idx, basic=basic)
    except IndexError as e:
        raise IndexError(f"getitem: {e} (indexing a Tensor of shape "
                         f"{_shape(x, 'getitem')})") from None


def _own_index(index: Any) -> Any:
    """The index with every array in it copied and frozen: the tape keeps its own, so the
    caller may reuse theirs at once and a later write to it cannot move the gradient."""
    if isinstance(index, tuple):
        return tuple([i if type(i) is int or type(i) is slice else _own_index(i) for i in index])
    if isinstance(index, TensorBase):
        if index.dtype.kind not in "biu":
            raise IndexError(f"getitem: index Tensors must be integer or bool, got {index.dtype}")
        index = index._data
    if isinstance(index, (np.ndarray, list, range)):
        arr = np.asarray(index)
        return _constant_array(arr.astype(np.intp) if arr.size == 0 else arr)  # []: nothing
    return index


def concatenate(seq: Sequence[ArrayLike], axis: int = 0) -> Tensor:
    """Join along an existing axis."""
    seq = list(seq)
    if not seq:
        raise ValueError("concatenate: need at least one array")
    nd = len(_shape(seq[0], "concatenate"))
    return apply(rules.concatenate, *seq, axis=_one_axis(axis, nd, "concatenate"))


def stack(seq: Sequence[ArrayLike], axis: int = 0) -> Tensor:
    """Join along a new axis."""
    seq = list(seq)
    if not seq:
        raise ValueError("stack: need at least one array")
    return apply(rules.stack, *seq, axis=_one_axis(axis, len(_shape(seq[0], "stack")) + 1, "stack"))


def split(x: ArrayLike, indices_or_sections: int | Sequence[int], axis: int = 0
          ) -> list[Tensor]:
    """np.split's meaning: equal sections (a count that must divide the axis) or cut points."""
    shape = _shape(x, "split")
    ax = _one_axis(axis, len(shape), "split")
    n = shape[ax]
    if not isinstance(indices_or_sections, (int, np.integer, list, tuple, np.ndarray)):
        raise TypeError(f"split: indices_or_sections must be a number of equal sections or a "
                        f"sequence of cut points, got {indices_or_sections!r}")
    if isinstance(indices_or_sections, (int, np.integer)):
        k = _int(indices_or_sections, "sections", "split")
        if k <= 0 or n % k:
            raise ValueError(f"split: {k} sections do not divide axis {ax} of length {n} "
                             f"equally; give a divisor of {n} or a list of cut points")
        cuts = [n // k * i for i in range(1, k)]
    else:
        cuts = [_int(c, "cut point", "split") for c in indices_or_sections]
    lead = (slice(None),) * ax
    bounds = [0, *cuts, n]
    return [getitem(x, lead + (slice(lo, hi),)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def unbind(x: ArrayLike, axis: int = 0) -> tuple[Tensor, ...]:
    """The slices along axis, that axis removed (PyTorch's unbind)."""
    shape = _shape(x, "unbind")
    ax = _one_axis(axis, len(shape), "unbind")
    return tuple(getitem(x, (slice(None),) * ax + (i,)) for i in range(shape[ax]))


# --- not differentiable: comparisons, logic, argmax ---------------------------------------------
def constant(fn: Any, *args: Any, name: str = "op") -> Tensor:
    """Apply a function that is not differentiable (comparisons, argmax): never requires grad."""
    if THREAD.modes.trace is not None:
        return THREAD.modes.trace.constant_op(fn, args, name)  # type: ignore[no-any-return]
    return leaf(np.asarray(fn(*[a._data if isinstance(a, TensorBase) else operand(a, name)
                                for a in args])))


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
NUMPY_UFUNCS: dict[Any, Callable[..., Any]] = {
    **{row.numpy: row for row in rules.TABLE if isinstance(row.numpy, np.ufunc)},
    np.positive: lambda x: x, np.less: less, np.less_equal: less_equal, np.greater: greater,
    np.greater_equal: greater_equal, np.equal: equal, np.not_equal: not_equal,
    np.logical_and: logical_and, np.logical_or: logical_or, np.logical_not: logical_not,
    np.bitwise_and: logical_and, np.bitwise_or: logical_or, np.invert: logical_not,
    np.sign: sign, np.isfinite: isfinite, np.isnan: isnan, np.matmul: matmul,
}
NUMPY_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    np.sum: sum, np.mean: mean, np.var: var, np.std: std, np.max: max, np.amax: max,
    np.min: min, np.amin: min, np.reshape: reshape, np.transpose: transpose,
    np.swapaxes: swapaxes, np.matrix_transpose: lambda x: swapaxes(x, -1, -2), np.where: where,
    np.broadcast_to: broadcast_to, np.concatenate: concatenate, np.stack: stack, np.clip: clip,
    np.argmax: argmax, np.argmin: argmin, np.expand_dims: expand_dims, np.squeeze: squeeze,
    np.split: split, np.pad: pad, np.shape: lambda x: x.shape, np.ndim: lambda x: x.ndim,
    np.size: lambda x: x.size, np.matmul: matmul,
}
# The rows whose public function is above: which NumPy function reaches each (for the test
# that every row can be reached from NumPy).
WRAPPED_ROWS = {
    "sum": np.sum, "mean": np.mean, "amax": np.max, "amin": np.min, "where": np.where,
    "clip": np.clip, "reshape": np.reshape, "transpose": np.transpose,
    "broadcast_to": np.broadcast_to, "concatenate": np.concatenate, "stack": np.stack,
    "pad": np.pad, "matmul": np.matmul,
}
