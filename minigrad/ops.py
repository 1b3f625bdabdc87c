"""Every primitive and its vector-Jacobian product, in one table.

Each entry is a NumPy forward with its VJPs beside it, one per input: given the upstream gradient
`g` (the output's shape), the output `y` and the inputs, return that input's gradient. The math
is the docstring's one line. The tape (tensor.py) sums gradients over broadcast axes and casts
them to the input's dtype, so the rules below never deal with either.

The rules are plain NumPy. During `backward()` they run on ndarrays: nothing is recorded, no
overhead. When a transform asks for higher order (`mg.grad(mg.grad(f))`, `mg.hessian`) the same
rules run on Tensors, and NumPy's dispatch protocols send `np.exp`, `np.where`, … back into this
table, so the VJP itself is recorded and can be differentiated again.

`reads` says what a VJP reads numerically ("x" inputs, or digits for only those inputs, "y"
output, "p" array parameters such as an index or a condition): those arrays are made read-only
while the tape holds them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from minigrad.tensor import Tensor, apply, sum_to


class Primitive:
    """One row of the table: name, forward, VJPs (one per input, or one for all), what it reads;
    for some ops also `vjp_in_place`, the same VJPs with g's own memory reused (they return one
    entry per input, as vjp_all does), which `backward()` uses when nobody else holds g (one big
    temporary less per activation)."""

    __slots__ = ("name", "forward", "vjps", "vjp_all", "reads", "math", "vjp_in_place")

    def __init__(self, name: str, forward: Callable[..., Any],
                 vjps: tuple[Callable[..., Any], ...] = (),
                 vjp_all: Callable[..., Any] | None = None, reads: str = "",
                 math: str = "", vjp_in_place: Callable[..., Any] | None = None) -> None:
        self.name, self.forward, self.vjps, self.vjp_all = name, forward, vjps, vjp_all
        self.reads, self.math, self.vjp_in_place = reads, math, vjp_in_place

    def __repr__(self) -> str:
        return f"<primitive {self.name}: {self.math}>"


def primitive(*vjps: Callable[..., Any], reads: str = "", vjp_all: Callable[..., Any] | None = None,
              direct: Callable[..., Any] | None = None, in_place: Callable[..., Any] | None = None
              ) -> Callable[[Callable[..., Any]], Primitive]:
    """Decorate a NumPy forward with its VJPs; its docstring is the math. `direct`: a NumPy
    callable that is exactly the forward, run in its place (a Python call less per op).
    `in_place`: the VJPs with g's memory reused, one entry per input (see Primitive)."""
    def make(forward: Callable[..., Any]) -> Primitive:
        return Primitive(forward.__name__, direct or forward, vjps, vjp_all, reads,
                         (forward.__doc__ or "").strip(), in_place)
    return make


def _keep(a: Any, axis: tuple[int, ...], keepdims: bool, ndim: int) -> Any:
    """Reinsert reduced axes as size 1, so a reduction's output broadcasts against its input."""
    if keepdims or a.ndim == 0:  # a 0-d value broadcasts against anything as it is
        return a
    shape = list(a.shape)
    for ax in sorted(axis):
        shape.insert(ax, 1)
    return a.reshape(tuple(shape)) if len(shape) == ndim else a.reshape(shape)


def _reduce_kept(ufunc: Any, x: np.ndarray, axis: tuple[int, ...], initial: Any = None) -> Any:
    """ufunc.reduce(x, axis, keepdims=True). Along a short last axis of many rows (a batch of
    CartPole's two logits) it takes one elementwise call per column instead: NumPy's reduction
    pays per row there, 3–6× slower. (Sums of 3 or 4 may then round differently in the last bit.)"""
    k = x.shape[-1] if x.ndim else 0
    if 1 < k <= 4 and x.size >= 64 and axis == (x.ndim - 1,):
        r = ufunc(x[..., :1], x[..., 1:2])
        for j in range(2, k):
            ufunc(r, x[..., j:j + 1], out=r)
        return r
    if initial is None:
        return ufunc.reduce(x, axis=axis, keepdims=True)
    return ufunc.reduce(x, axis=axis, keepdims=True, initial=initial)


def _expand(g: Any, shape: tuple[int, ...]) -> Any:
    """g broadcast to shape: recorded for a Tensor; for an ndarray a filled array, since
    np.broadcast_to costs microseconds of Python per call on the small arrays that dominate."""
    if isinstance(g, Tensor):
        return np.broadcast_to(g, shape)
    out = np.empty(shape, dtype=g.dtype)
    out[...] = g
    return out


def _scatter(g: Any, index: Any, shape: tuple[int, ...], basic: bool) -> Any:
    """zeros(shape) with g added at index, on ndarrays or (for higher order) on the tape."""
    if isinstance(g, Tensor):
        return apply(scatter_add, g, index=index, shape=shape, basic=basic)
    return scatter_add.forward(g, index=index, shape=shape, basic=basic)


# =============================================================================================
# The table
# =============================================================================================
# --- arithmetic (elementwise, NumPy broadcasting) -------------------------------------------
@primitive(lambda g, y, a, b: g,
           lambda g, y, a, b: g, direct=np.add)
def add(a, b):
    """y = a + b;  ā = ḡ,  b̄ = ḡ"""
    return np.add(a, b)


@primitive(lambda g, y, a, b: g,
           lambda g, y, a, b: -g, direct=np.subtract)
def subtract(a, b):
    """y = a − b;  ā = ḡ,  b̄ = −ḡ"""
    return np.subtract(a, b)


@primitive(lambda g, y, a, b: g * b,
           lambda g, y, a, b: g * a, reads="x", direct=np.multiply)
def multiply(a, b):
    """y = a·b;  ā = ḡ·b,  b̄ = ḡ·a"""
    return np.multiply(a, b)


@primitive(lambda g, y, a, b: g / b,
           lambda g, y, a, b: -g * y / b, reads="1y", direct=np.divide)
def divide(a, b):
    """y = a / b;  ā = ḡ / b,  b̄ = −ḡ·y / b"""
    return np.divide(a, b)


def _pow_base_vjp(g, y, a, b):
    # d/da a⁰ = 0, also at a = 0 where b·a^(b−1) would be 0·inf: a^(b−1) is taken as 1 there.
    if np.ndim(b) == 0 and not isinstance(b, Tensor):
        return g * 0 if b == 0 else g * b * a ** (b - 1)
    return g * b * a ** (np.where(b == 0, 1, b) - 1)


def _pow_exponent_vjp(g, y, a, b):
    # log a is taken as 0 where a = 0 (y is 0 or 1 there): PyTorch's convention, no 0·(−inf).
    return g * y * np.log(np.where(a == 0, 1, a))


@primitive(_pow_base_vjp, _pow_exponent_vjp, reads="xy")
def power(a, b):
    """y = a^b;  ā = ḡ·b·a^(b−1),  b̄ = ḡ·y·log a"""
    return a ** b


@primitive(lambda g, y, x: -g, direct=np.negative)
def negative(x):
    """y = −x;  x̄ = −ḡ"""
    return np.negative(x)


# --- elementwise functions (written with the output where that is cheaper) -----------------
@primitive(lambda g, y, x: g * y, reads="y", direct=np.exp,
           in_place=lambda g, y, x: (np.multiply(g, y, out=g),))
def exp(x):
    """y = eˣ;  x̄ = ḡ·y"""
    return np.exp(x)


@primitive(lambda g, y, x: g / x, reads="x", direct=np.log)
def log(x):
    """y = ln x;  x̄ = ḡ / x"""
    return np.log(x)


@primitive(lambda g, y, x: g / (2 * y), reads="y", direct=np.sqrt)
def sqrt(x):
    """y = √x;  x̄ = ḡ / (2y)"""
    return np.sqrt(x)


@primitive(lambda g, y, x: g * (1 - y * y), reads="y", direct=np.tanh,
           in_place=lambda g, y, x: (np.multiply(g, 1 - y * y, out=g),))
def tanh(x):
    """y = tanh x;  x̄ = ḡ·(1 − y²)"""
    return np.tanh(x)


@primitive(lambda g, y, x: g * y * (1 - y), reads="y",
           in_place=lambda g, y, x: (np.multiply(g, y * (1 - y), out=g),))
def sigmoid(x):
    """y = 1 / (1 + e⁻ˣ);  x̄ = ḡ·y·(1 − y)"""
    e = np.exp(-np.abs(x))  # never overflows; both branches are exact
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@primitive(lambda g, y, x: g * (y > 0), reads="y",
           in_place=lambda g, y, x: (np.multiply(g, y > 0, out=g),))
def relu(x):
    """y = max(x, 0);  x̄ = ḡ·[x > 0]   (relu'(0) = 0)"""
    return np.maximum(x, 0)


@primitive(lambda g, y, x: g * np.sign(x), reads="x", direct=np.absolute)
def absolute(x):
    """y = |x|;  x̄ = ḡ·sign x   (abs'(0) = 0)"""
    return np.absolute(x)


@primitive(lambda g, y, x, dtype: g.astype(x.dtype))
def astype(x, dtype):
    """y = x as dtype;  x̄ = ḡ as x's dtype"""
    return x.astype(dtype)


# --- two-input selections (ties split evenly, as PyTorch does) ------------------------------
@primitive(lambda g, y, a, b: np.where(a > b, g, np.where(a == b, g * 0.5, 0)),
           lambda g, y, a, b: np.where(b > a, g, np.where(a == b, g * 0.5, 0)), reads="x")
def maximum(a, b):
    """y = max(a, b);  ā = ḡ·([a > b] + ½[a = b]),  b̄ = ḡ·([b > a] + ½[a = b])"""
    return np.maximum(a, b)


@primitive(lambda g, y, a, b: np.where(a < b, g, np.where(a == b, g * 0.5, 0)),
           lambda g, y, a, b: np.where(b < a, g, np.where(a == b, g * 0.5, 0)), reads="x")
def minimum(a, b):
    """y = min(a, b);  ā = ḡ·([a < b] + ½[a = b]),  b̄ = ḡ·([b < a] + ½[a = b])"""
    return np.minimum(a, b)


@primitive(lambda g, y, a, b, cond: np.where(cond, g, 0),
           lambda g, y, a, b, cond: np.where(cond, 0, g), reads="p")
def where(a, b, cond):
    """y = cond ? a : b;  ā = cond ? ḡ : 0,  b̄ = cond ? 0 : ḡ"""
    return np.where(cond, a, b)


def _clip_vjp(g, y, x, lo, hi):
    if lo is not None:
        g = np.where(x < lo, 0, g)
    if hi is not None:
        g = np.where(x > hi, 0, g)
    return g


@primitive(_clip_vjp, reads="xp")
def clip(x, lo, hi):
    """y = min(max(x, lo), hi);  x̄ = ḡ·[lo ≤ x ≤ hi]"""
    return np.clip(x, lo, hi)


# --- reductions (axis is a tuple of non-negative axes, normalised by the wrappers below) ----
@primitive(lambda g, y, x, axis, keepdims:
           _expand(_keep(g, axis, keepdims, x.ndim), x.shape), direct=np.add.reduce)
def sum(x, axis, keepdims):
    """y = Σ_axis x;  x̄ = ḡ broadcast back over axis"""
    return np.add.reduce(x, axis=axis, keepdims=keepdims)  # ndarray.sum's Python hop skipped


@primitive(lambda g, y, x, axis, keepdims, count:
           _expand(_keep(g, axis, keepdims, x.ndim) / count, x.shape))
def mean(x, axis, keepdims, count):
    """y = Σ_axis x / n;  x̄ = ḡ / n broadcast back over axis"""
    return np.add.reduce(x, axis=axis, keepdims=keepdims) / count


def _extreme_vjp(g, y, x, axis, keepdims):
    hit = (x == _keep(y, axis, keepdims, x.ndim)).astype(g.dtype)
    return _keep(g, axis, keepdims, x.ndim) * hit / hit.sum(axis=axis, keepdims=True)


@primitive(_extreme_vjp, reads="xy")
def amax(x, axis, keepdims):
    """y = max_axis x;  x̄ = ḡ·[x = y] / #ties   (ties share evenly)"""
    return np.maximum.reduce(x, axis=axis, keepdims=keepdims)


@primitive(_extreme_vjp, reads="xy")
def amin(x, axis, keepdims):
    """y = min_axis x;  x̄ = ḡ·[x = y] / #ties   (ties share evenly)"""
    return np.minimum.reduce(x, axis=axis, keepdims=keepdims)


# --- fused, stable softmax family (max subtracted; VJPs from the output, O(N·K)) ------------
# axis is a tuple of axes here; `initial` lets an empty axis reduce as NumPy's sum does.
@primitive(lambda g, y, x, axis: y * (g - (g * y).sum(axis=axis, keepdims=True)), reads="y")
def softmax(x, axis):
    """y = eˣ / Σ eˣ;  x̄ = y·(ḡ − Σ_axis ḡ·y)   (never diag(y) − y yᵀ)"""
    e = np.exp(x - _reduce_kept(np.maximum, x, axis, -np.inf))
    e /= _reduce_kept(np.add, e, axis)
    return e


def _log_softmax_vjp(g, y, x, axis):
    if type(g) is np.ndarray:
        return g - np.exp(y) * _reduce_kept(np.add, g, axis)
    return g - np.exp(y) * g.sum(axis=axis, keepdims=True)


def _log_softmax_vjp_in_place(g, y, x, axis):
    e = np.exp(y)
    e *= _reduce_kept(np.add, g, axis)
    g -= e
    return (g,)


def _log_softmax_rows(x):
    """log_softmax over the last axis in Python floats, for a policy's few logits, where each
    NumPy call costs more than the arithmetic. logΣe^(v − m) is log1p of the terms besides the
    largest one's e⁰ = 1, so log-probabilities near 0 keep their digits. None for a row with
    inf or NaN, which NumPy's path handles (with its warnings and errstate)."""
    out = []
    n = x.shape[-1]
    flat = x.ravel().tolist()  # row-major whatever the layout: each row's logits in turn
    for i in range(0, len(flat), n):
        row = flat[i:i + n]
        m = max(row)
        rest = -1.0  # the largest logit's own term, e⁰, taken out exactly
        for v in row:
            rest += math.exp(v - m)
        if not 0.0 <= rest < math.inf:  # NaN, or m was ±inf
            return None
        log_s = math.log1p(rest)
        out += [(v - m) - log_s for v in row]
    y = np.empty(x.shape, dtype=x.dtype.char)  # native byte order, as NumPy's results have
    y.ravel()[:] = out  # (not y.shape = …, deprecated in NumPy 2.5; reshape would make a view)
    return y


@primitive(_log_softmax_vjp, reads="y", in_place=_log_softmax_vjp_in_place)
def log_softmax(x, axis):
    """y = x − logΣeˣ;  x̄ = ḡ − eʸ·Σ_axis ḡ"""
    if x.size <= 16 and x.size and axis == (x.ndim - 1,) and x.dtype.char in "df":
        y = _log_softmax_rows(x)
        if y is not None:
            return y
    z = x - _reduce_kept(np.maximum, x, axis, -np.inf)
    if z.size <= 64:  # few logits: logaddexp keeps log-probabilities near 0 exact
        z -= np.logaddexp.reduce(z, axis=axis, keepdims=True)
    else:
        z -= np.log(_reduce_kept(np.add, np.exp(z), axis))
    return z


def _logsumexp_vjp(g, y, x, axis, keepdims):
    # e^(x − y) is softmax(x) in exact arithmetic; renormalising it removes the rounding of y,
    # which at |x| ~ 1e4 in float32 is ~1e-3 (the error factor is the same across the axis).
    e = np.exp(x - _keep(y, axis, keepdims, x.ndim))
    return _keep(g, axis, keepdims, x.ndim) * (e / e.sum(axis=axis, keepdims=True))


@primitive(_logsumexp_vjp, reads="xy")
def logsumexp(x, axis, keepdims):
    """y = log Σ_axis eˣ;  x̄ = ḡ·e^(x − y)"""
    m = np.maximum.reduce(x, axis=axis, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):  # log 0 = −inf for an empty or all −inf axis
        out = np.log(np.add.reduce(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else out.squeeze(axis)


# --- linear algebra -------------------------------------------------------------------------
def _matmul_vjp_a(g, y, a, b):
    if b.ndim == 1:  # y[..., m] = a[..., m, k]·b[k]  →  ā = ḡ ⊗ b
        return g * b if a.ndim == 1 else g.reshape(g.shape + (1,)) * b
    if a.ndim == 1:  # y[..., n] = a[k]·b[..., k, n]  →  ā = b ḡ, summed over the batch
        r = b @ g.reshape(g.shape + (1,))
        return r.reshape(r.shape[:-1])
    return g @ b.mT


def _matmul_vjp_b(g, y, a, b):
    if a.ndim == 1:
        if b.ndim == 1:
            return g * a
        return a.reshape((-1, 1)) * g.reshape(g.shape[:-1] + (1, g.shape[-1]))
    if b.ndim == 1:
        r = a.mT @ g.reshape(g.shape + (1,))
        return r.reshape(r.shape[:-1])
    return a.mT @ g


@primitive(_matmul_vjp_a, _matmul_vjp_b, reads="x")
def matmul(a, b):
    """y = a @ b;  ā = ḡ @ bᵀ,  b̄ = aᵀ @ ḡ   (1-D operands promoted as NumPy does)"""
    return a @ b


def _rows(a):
    """a as (rows, last axis): every batch axis flattened (spelled out, since -1 cannot be
    inferred when the last axis is empty)."""
    return a.reshape((math.prod(a.shape[:-1]), a.shape[-1]))


# A product of at most 2-D ndarrays with a small result goes through ndarray.dot: on a policy's
# tiny arrays it costs half of `@` (no gufunc set-up); but dot zeroes its output before BLAS
# writes it, a pass that counts on activation-sized results. (len(a) · b's columns bounds the
# result's size.) Batched inputs and Tensors (higher order, recorded) keep `@`.
_SMALL = 4096


def _linear_vjp_x(g, y, x, w, b=None):
    if type(g) is np.ndarray and type(w) is np.ndarray and g.ndim <= 2 \
            and len(g) * w.shape[1] <= _SMALL:
        return g.dot(w)
    return g @ w


def _linear_vjp_w(g, y, x, w, b=None):
    # Batch axes flattened, so W̄ = Σ over every row of ḡᵀx comes out in W's own layout.
    if g.ndim != 2:
        g, x = _rows(g), _rows(x)
    if type(g) is np.ndarray and type(x) is np.ndarray and w.size <= _SMALL:
        return g.T.dot(x)
    return g.mT @ x


def _linear_forward(x, w, b=None):
    """y = x Wᵀ + b;  x̄ = ḡ W,  W̄ = ḡᵀ x,  b̄ = Σ ḡ   (W̄ and b̄ summed over all rows)"""
    if type(x) is np.ndarray and type(w) is np.ndarray and x.ndim <= 2 \
            and len(x) * len(w) <= _SMALL:
        y = x.dot(w.T)
    else:  # (a subclass's own dot, np.ma's, would differ from what the VJPs assume)
        y = x @ w.T
    if b is None:
        return y
    if type(b) is np.ndarray and b.dtype == y.dtype and y.base is None:
        y += b  # the product is a fresh array: add the bias in place, no second temporary
        return y
    return y + b


linear = Primitive("linear", _linear_forward,
                   (_linear_vjp_x, _linear_vjp_w,
                    lambda g, y, x, w, b=None: sum_to(g, b.shape)),
                   reads="01",  # b̄ needs b's shape only: the bias is not locked
                   math=_linear_forward.__doc__.strip())  # type: ignore[union-attr]


class _LinearVJPs:
    """linear's three VJPs at one upstream ḡ, each worked out when the sweep reads its entry
    (the input of a first layer needs no gradient, and its product is never computed)."""

    __slots__ = ("g", "x", "w", "b")

    def __init__(self, g, x, w, b):
        self.g, self.x, self.w, self.b = g, x, w, b

    def __getitem__(self, i):
        if i == 0:
            return _linear_vjp_x(self.g, None, self.x, self.w)
        if i == 1:
            return _linear_vjp_w(self.g, None, self.x, self.w)
        return sum_to(self.g, self.b.shape)


def _linear_relu_forward(x, w, b=None):
    """y = max(x Wᵀ + b, 0);  with ḡ' = ḡ·[y > 0]:  x̄ = ḡ' W,  W̄ = ḡ'ᵀ x,  b̄ = Σ ḡ'"""
    y = _linear_forward(x, w, b)  # a fresh array: the relu goes into it, no second activation
    return np.maximum(y, 0, out=y) if y.dtype.kind != "b" else np.maximum(y, 0)  # bool: → int


# What nn.Sequential records for a Linear followed by a ReLU, whose pre-activation nobody sees.
linear_relu = Primitive("linear_relu", _linear_relu_forward,
                        vjp_all=lambda g, y, x, w, b=None: _LinearVJPs(g * (y > 0), x, w, b),
                        vjp_in_place=lambda g, y, x, w, b=None:
                        _LinearVJPs(np.multiply(g, y > 0, out=g), x, w, b),
                        reads="01y", math=_linear_relu_forward.__doc__.strip())  # type: ignore[union-attr]


# --- shape and indexing -----------------------------------------------------------------------
@primitive(lambda g, y, x, shape: g.reshape(x.shape))
def reshape(x, shape):
    """y = x reshaped;  x̄ = ḡ reshaped back"""
    return x.reshape(shape)


@primitive(lambda g, y, x, axes: g.transpose(tuple(np.argsort(axes))))
def transpose(x, axes):
    """y = x with axes permuted;  x̄ = ḡ with the inverse permutation"""
    return x.transpose(axes)


@primitive(lambda g, y, x, shape: sum_to(g, x.shape))
def broadcast_to(x, shape):
    """y = x broadcast to shape;  x̄ = ḡ summed over the broadcast axes"""
    return np.broadcast_to(x, shape)


@primitive(lambda g, y, x, index, basic: _scatter(g, index, x.shape, basic))
def getitem(x, index, basic):
    """y = x[index];  x̄ = zeros with ḡ added at index   (repeated indices accumulate)"""
    return x[index]


def _scatter_add_forward(g, index, shape, basic):
    out = np.zeros(shape, dtype=np.result_type(g))
    if basic:
        out[index] = g  # a basic index never repeats an element
        return out
    flat = _flat_positions(index, shape)
    if flat is not None:  # the same sums in the same order; np.add.at is slow with a tuple index
        np.add.at(out.reshape(-1), flat, g)
    else:
        np.add.at(out, index, g)
    return out


def _flat_positions(index, shape):
    """For an index of one integer array (or int) per axis, e.g. logp[rows, actions]: the flat
    position of each element picked (they are in range: the forward checked; negative ones wrap).
    None for other indices."""
    parts = index if type(index) is tuple else (index,)
    if len(parts) != len(shape) or len(parts) < 2:
        return None
    for p in parts:
        if not (type(p) is np.ndarray and p.dtype.kind in "iu") and type(p) is not int:
            return None
    return np.ravel_multi_index(parts, shape, mode="wrap")


scatter_add = Primitive("scatter_add", _scatter_add_forward,
                        (lambda g, y, src, index, shape, basic: g[index],),
                        math="y = zeros(shape) with src added at index;  s̄rc = ḡ[index]")


def _concatenate_vjp(g, y, *xs, axis):
    bounds = np.cumsum([0] + [x.shape[axis] for x in xs])
    lead = (slice(None),) * axis
    return tuple(g[lead + (slice(lo, hi),)] for lo, hi in zip(bounds[:-1], bounds[1:]))


def _concatenate(*xs, axis):
    """y = [x₀, x₁, …] along axis;  x̄ᵢ = ḡ's slice of xᵢ"""
    return np.concatenate(xs, axis=axis)


concatenate = Primitive("concatenate", _concatenate, vjp_all=_concatenate_vjp,
                         math=_concatenate.__doc__.strip())  # type: ignore[union-attr]


def _stack(*xs, axis):
    """y = xᵢ stacked on a new axis;  x̄ᵢ = ḡ[…, i, …]"""
    return np.stack(xs, axis=axis)


stack = Primitive("stack", _stack,
                   vjp_all=lambda g, y, *xs, axis: tuple(g[(slice(None),) * axis + (i,)]
                                                         for i in range(len(xs))),
                   math=_stack.__doc__.strip())  # type: ignore[union-attr]

TABLE: tuple[Primitive, ...] = (
    add, subtract, multiply, divide, power, negative, exp, log, sqrt, tanh, sigmoid, relu,
    absolute, astype, maximum, minimum, where, clip, sum, mean, amax, amin, softmax, log_softmax,
    logsumexp, matmul, linear, linear_relu, reshape, transpose, broadcast_to, getitem, scatter_add,
    concatenate, stack,
)
