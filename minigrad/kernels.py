"""Named kernels: code that exists only for speed, each equal to a plain rule of rules.py.

The engine reads the rules; a row may name a kernel here that computes the same values faster
(differing at most in the last bits, where a sum is taken in another order). Each kernel's
docstring names the plain expression it equals, and tests/test_kernels.py checks it against that
expression on edge values. `MINIGRAD_KERNELS=plain` in the environment (read at import) turns
every kernel off: the engine then runs the rules alone.

This module depends on NumPy, and on scatter.py's `add_at` for what a kernel leaves to its rule.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from minigrad.scatter import add_at

ENABLED = os.environ.get("MINIGRAD_KERNELS", "").strip().lower() != "plain"

# ndarray.dot skips matmul's gufunc set-up, which dominates a policy's tiny products; but it
# zeroes its output before BLAS writes it, a pass that shows on activation-sized results:
# products up to this many elements only.
_SMALL_RESULT = 4096


def linear_vjp_x(g: Any, y: Any, x: Any, w: Any, b: Any = None) -> Any:
    """= rules.linear's x̄ = ḡ W: a small product of ndarrays through ndarray.dot."""
    if g.ndim == 2 and len(g) * w.shape[1] <= _SMALL_RESULT and type(g) is type(w) is np.ndarray:
        return g.dot(w)
    return g @ w


def linear_vjp_w(g: Any, y: Any, x: Any, w: Any, b: Any = None) -> Any:
    """= rules.linear's W̄ = ḡᵀ x over all rows: for 2-D ndarrays and a small W, ndarray.dot."""
    if g.ndim == 2 and w.size <= _SMALL_RESULT and type(g) is type(x) is np.ndarray:
        return g.T.dot(x)
    rows = math.prod(g.shape[:-1])
    return g.reshape((rows, g.shape[-1])).mT @ x.reshape((rows, x.shape[-1]))


def getitem_vjp_into(buf: np.ndarray, g: Any, index: Any, basic: bool) -> None:
    """= rules.getitem's vjp_into, add_at(buf, index, ḡ): for one integer array (or int) per
    axis of a C-ordered float64 buf, picking single elements (logp[rows, actions]), np.add.at
    at their flat positions (the same sums, each pick added in turn). Not for float32, where
    add_at sums repeated picks in float64 and np.add.at would round at every one."""
    parts = index if type(index) is tuple else (index,)
    if not basic and len(parts) == buf.ndim >= 2 and buf.dtype == np.float64 \
            and buf.flags.c_contiguous and all(
            type(p) is int or type(p) is np.ndarray and p.dtype.kind in "iu" for p in parts):
        flat = np.ravel_multi_index(parts, buf.shape, mode="wrap")  # in range: x[index] ran
        np.add.at(buf.reshape(-1), flat, g)
    else:
        add_at(buf, index, g, basic)


def relu_vjp_owned(g: np.ndarray, y: np.ndarray, x: Any) -> tuple[np.ndarray]:
    """= rules.relu's (x̄,) = (ḡ·[y > 0],), written into ḡ's memory: the sweep passes only a ḡ
    that nobody else holds, of y's shape and dtype (graph.py: _owned)."""
    return (np.multiply(g, y > 0, out=g),)


def log_softmax_vjp_owned(g: np.ndarray, y: np.ndarray, x: Any,
                          axis: tuple[int, ...]) -> tuple[np.ndarray]:
    """= rules.log_softmax's (x̄,) = (ḡ − eʸ·Σ_axis ḡ,), written into ḡ's memory (as
    relu_vjp_owned); the sum of a short last axis taken column by column (_reduce_last)."""
    e = np.exp(y)
    e *= _reduce_last(np.add, g, axis)
    return (np.subtract(g, e, out=g),)


# ndarray.dot stands in for matmul on two 2-D ndarrays of one of these dtypes whose shapes fit
# (else matmul's own error), for a result of at most _SMALL_RESULT elements. Both call BLAS,
# except on a strided view that matmul multiplies in its own loop and dot copies first: there
# the last bit may differ. (The checks are written out in both kernels: a shared helper's call
# would cost much of what dot saves on a policy's tiny products.)
_BLAS_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


def _times_wt(x: Any, w: Any) -> Any:
    """= x @ Wᵀ; a small product through ndarray.dot (see _BLAS_FLOATS)."""
    if type(x) is type(w) is np.ndarray and x.ndim == 2 and w.ndim == 2 \
            and x.dtype in _BLAS_FLOATS and w.dtype is x.dtype and x.shape[1] == w.shape[1] \
            and len(x) * len(w) <= _SMALL_RESULT:
        return x.dot(w.T)
    return x @ w.mT


def matmul(a: Any, b: Any) -> Any:
    """= rules.matmul's a @ b; a small product through ndarray.dot (see _BLAS_FLOATS), which
    skips matmul's per-call set-up."""
    if type(a) is type(b) is np.ndarray and a.ndim == 2 and b.ndim == 2 \
            and a.dtype in _BLAS_FLOATS and b.dtype is a.dtype and a.shape[1] == len(b) \
            and len(a) * b.shape[1] <= _SMALL_RESULT:
        return a.dot(b)
    return np.matmul(a, b)


def linear(x: Any, w: Any, b: Any = None, /) -> Any:
    """= rules.linear's x Wᵀ + b: a small product through ndarray.dot (_times_wt)."""
    y = _times_wt(x, w)
    return y if b is None else y + b


def linear_relu(x: Any, w: Any, b: Any = None, /) -> Any:
    """= nn.primitives.linear_relu's max(x Wᵀ + b, 0): the product through _times_wt, the ReLU
    in the product's (or the biased product's) own fresh array, and on an activation-sized
    product the bias added there too (where it neither casts nor broadcasts it): one array of
    the output's size made instead of three."""
    y = _times_wt(x, w)
    if b is not None:
        if type(y) is np.ndarray and y.size > _SMALL_RESULT and type(b) is np.ndarray \
                and b.dtype == y.dtype and b.shape in ((), y.shape[-1:]):
            y += b
        else:
            y = y + b  # a new array, also where b casts or broadcasts y
    if type(y) is np.ndarray and y.dtype.kind == "f":
        return np.maximum(y, 0, out=y)  # y is the product's or the sum's own array
    return np.maximum(y, 0)


def _reduce_last(ufunc: Any, x: np.ndarray, axis: tuple[int, ...], initial: Any = None) -> Any:
    """= ufunc.reduce(x, axis, keepdims=True, initial=initial). Along a short last axis of many
    rows (a batch of a policy's few logits) one elementwise call per column instead: NumPy's
    reduction pays per row there. None where that does not apply."""
    k = x.shape[-1] if x.ndim else 0
    if not (1 < k <= 4 and x.size >= 64 and axis == (x.ndim - 1,)):
        return ufunc.reduce(x, axis=axis, keepdims=True, initial=initial) \
            if initial is not None else ufunc.reduce(x, axis=axis, keepdims=True)
    r = ufunc(x[..., :1], x[..., 1:2])
    for j in range(2, k):
        ufunc(r, x[..., j:j + 1], out=r)
    return r


def softmax(x: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    """= rules.softmax's forward, e / Σ e with e = exp(x − max x): one or two rows of at most 16
    logits in Python floats (_softmax_rows, a policy acting on one observation); else the
    reductions of a short last axis taken column by column (_reduce_last), the exponential and
    the division in place (one array of x's size made, not two)."""
    # Python floats only for a row or two (a policy acting on one observation): from a few
    # rows on, the Python loop costs more than NumPy's calls.
    if x.ndim and 0 < x.size <= 2 * x.shape[-1] <= 32 and axis == (x.ndim - 1,) \
            and x.dtype.char in "fd":
        y = _softmax_rows(x)
        if y is not None:
            return y
    if x.size < 64:  # too few elements for anything but the rule's own calls to pay
        e = np.exp(x - np.maximum.reduce(x, axis=axis, keepdims=True, initial=-np.inf))
        return e / np.add.reduce(e, axis=axis, keepdims=True)
    e = np.asarray(x - _reduce_last(np.maximum, x, axis, -np.inf))  # 0-d: a scalar, else new
    np.exp(e, out=e)
    e /= _reduce_last(np.add, e, axis)
    return e


def log_softmax(x: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    """= rules.log_softmax's forward, z − log1p((k − 1) + Σ_{z<0} e^z) with z = x − max x and
    k the count of maxima: a few logits in Python floats (_log_softmax_rows); rows of two,
    z − log1p(e^(z₀ + z₁)); the reductions of other short last axes taken column by column."""
    if 0 < x.size <= 16 and axis == (x.ndim - 1,) and x.dtype.char in "fd":
        y = _log_softmax_rows(x)
        if y is not None:
            return y
    if x.size == 0:
        return x.copy()
    if x.ndim and x.shape[-1] == 2 and axis == (x.ndim - 1,):  # one of z₀, z₁ is 0 (or NaN),
        z = x - np.maximum(x[..., :1], x[..., 1:])  # so (k − 1) + Σ_{z<0} eᶻ = e^(z₀ + z₁)
        z -= np.log1p(np.exp(z[..., :1] + z[..., 1:]))
        return z
    z = x - _reduce_last(np.maximum, x, axis)
    top = z == 0
    e = np.where(top, 0.0, np.exp(z))
    extra = _reduce_last(np.add, top.astype(z.dtype), axis)
    extra -= 1  # maxima beyond the first: exact small integers, added before the tiny rest
    z -= np.log1p(extra + _reduce_last(np.add, e, axis))
    return z


def _softmax_rows(x: np.ndarray) -> np.ndarray | None:
    """softmax over the last axis in Python floats, the rule's steps (e = exp(v − max), then
    e / Σ e summed left to right, as NumPy sums so few); None for a row holding inf or NaN,
    left to the NumPy path."""
    n = x.shape[-1]
    flat = x.ravel().tolist()
    rows = (flat,) if n == len(flat) else [flat[i:i + n] for i in range(0, len(flat), n)]
    out: list[float] = []
    exp = math.exp
    for row in rows:
        m = max(row)
        if not -math.inf < m < math.inf:
            return None
        e = [exp(v - m) for v in row]
        s = 0.0
        for v in e:
            s += v
        if not s < math.inf:  # a NaN below the maximum
            return None
        out += [v / s for v in e]
    y = np.array(out, dtype=x.dtype.char)
    return y if x.ndim == 1 else y.reshape(x.shape)


def _log_softmax_rows(x: np.ndarray) -> np.ndarray | None:
    """log_softmax over the last axis in Python floats, where each NumPy call on a few logits
    costs more than the arithmetic; the same steps as the rule, so the same digits. None for a
    row with inf or NaN, which the NumPy path handles (with its warnings and errstate)."""
    n = x.shape[-1]
    flat = x.ravel().tolist()  # row-major whatever the layout: each row's logits in turn
    out = []
    for i in range(0, len(flat), n):
        row = flat[i:i + n]
        m = max(row)
        if not -math.inf < m < math.inf:  # ±inf or NaN: left to the NumPy path
            return None
        rest, extra = 0.0, -1.0  # Σ e^(v−m) below the maximum; maxima beyond the first
        for v in row:
            if v == m:
                extra += 1.0
            else:
                rest += math.exp(v - m)
        if not 0.0 <= rest < math.inf:  # a NaN below the maximum
            return None
        log_s = math.log1p(extra + rest)
        out += [(v - m) - log_s for v in row]
    y = np.empty(x.shape, dtype=x.dtype.char)  # native byte order, as NumPy's results have
    y.ravel()[:] = out
    return y
