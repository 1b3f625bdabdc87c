"""Every primitive and its vector-Jacobian products, in one table.

A row is a NumPy forward with its VJPs beside it, one per input: given the upstream gradient
`g` (the output's shape), the output `y` and the inputs, return that input's gradient. The math
is the docstring's one line. The tape (graph.py) sums gradients over broadcast axes and casts
them to the input's dtype, so the rules never deal with either.

The rules are plain NumPy. During `backward()` they run on ndarrays. When a transform asks for
higher order (`mg.grad(mg.grad(f))`, `mg.hessian`) the same rules run on Tensors, and NumPy's
dispatch sends `np.exp`, `np.where`, … back into this table, so the VJP itself is recorded.

`reads` says which inputs a VJP reads ("x": all, digits: those) and whether it reads its output
("y"): the tape keeps those values unchangeable. `numpy` is the NumPy function that dispatches
to the row when the row is itself the public function. `kernel`, where given, is a faster
forward from kernels.py that computes the same thing; plain mode runs `forward` instead.
`vjp_into`, where given (an op with one input), adds the input's gradient into a buffer of its
shape in place (`buf += x̄`, x̄ as the rule gives it, never built whole): the sweep sums many
slices of one Tensor that way, each at the cost of its own size. `kernel_vjp_owned`, run when
the sweep owns ḡ (graph.py), may write into ḡ's memory; like `vjp_all` it returns the gradients
of all inputs at once (indexed by input)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad import kernels
from minigrad.graph import TensorBase, apply, sum_to
from minigrad.scatter import add_at

if TYPE_CHECKING:
    from minigrad.tensor import Tensor

Fn = Callable[..., Any]


class Primitive:
    """One row of the table. Calling it applies it: `rules.exp(t)` records exp on the tape."""

    __slots__ = ("name", "forward", "run", "rule_vjps", "vjps", "vjp_all", "vjp_into", "vjp_owned",
                 "reads", "reads_all", "reads_inputs", "reads_output", "reads_any", "math", "numpy")

    def __init__(self, name: str, forward: Fn, vjps: tuple[Fn, ...] = (), vjp_all: Fn | None = None,
                 reads: str = "", math: str = "", numpy: Any = None, kernel: Fn | None = None,
                 kernel_vjps: tuple[Fn | None, ...] = (), vjp_into: Fn | None = None,
                 kernel_vjp_owned: Fn | None = None) -> None:
        self.name, self.forward, self.rule_vjps, self.vjp_all = name, forward, vjps, vjp_all
        if vjp_into is not None and len(vjps) != 1:
            raise ValueError(f"{name}: vjp_into is for an op with one input (the sweep runs it "
                             f"instead of the rule), got {len(vjps)}")
        self.vjp_into, self.vjp_owned = vjp_into, kernel_vjp_owned if kernels.ENABLED else None
        self.reads, self.math, self.numpy = reads, math, numpy
        self.reads_all = "x" in reads  # every input; else the digits name the inputs read
        self.reads_inputs = tuple(int(c) for c in reads if c.isdigit())
        self.reads_output = "y" in reads
        self.reads_any = self.reads_all or bool(self.reads_inputs)
        self.run = kernel if kernel is not None and kernels.ENABLED else forward
        # The VJPs the sweep runs: a kernel where one is named and kernels are on, else the rule.
        self.vjps = tuple(k or v for k, v in zip(kernel_vjps, vjps)) + vjps[len(kernel_vjps):] \
            if kernels.ENABLED else vjps

    def __call__(self, *args: Any, **params: Any) -> Tensor:
        return apply(self, *args, **params)

    def __repr__(self) -> str:
        return f"<primitive {self.name}: {self.math}>"


def primitive(*vjps: Fn, reads: str = "xy", vjp_all: Fn | None = None, numpy: Any = None,
              kernel: Fn | None = None, kernel_vjps: tuple[Fn | None, ...] = (),
              vjp_into: Fn | None = None, kernel_vjp_owned: Fn | None = None
              ) -> Callable[[Fn], Primitive]:
    """Make a NumPy forward a row of the table; its docstring is the math. `vjps`: one rule per
    input, `(g, y, *inputs) -> that input's gradient`, written with NumPy functions so that for
    higher order they run on Tensors and are recorded."""
    def make(forward: Fn) -> Primitive:
        return Primitive(forward.__name__, forward, vjps, vjp_all, reads, (forward.__doc__ or
                         "").strip(), numpy, kernel, kernel_vjps, vjp_into, kernel_vjp_owned)
    return make


def row(forward: Any, math: str, *vjps: Fn, reads: str = "", name: str | None = None,
        kernel: Fn | None = None) -> Primitive:
    """A row whose forward is a NumPy function itself (a ufunc is also the NumPy function that
    dispatches to the row)."""
    return Primitive(name or forward.__name__, forward, vjps, None, reads, math,
                     forward if isinstance(forward, np.ufunc) else None, kernel)


def _keep(a: Any, axis: tuple[int, ...], keepdims: bool, ndim: int) -> Any:
    """Reinsert reduced axes as size 1, so a reduction's output broadcasts against its input."""
    if keepdims or a.ndim == 0:
        return a
    shape = list(a.shape)
    for ax in sorted(axis):
        shape.insert(ax, 1)
    return a.reshape(tuple(shape))


def _spread(g: Any, axis: tuple[int, ...], keepdims: bool, shape: tuple[int, ...]) -> Any:
    """A reduction's upstream broadcast back over the axes it reduced (as a new array)."""
    return np.zeros(shape, dtype=g.dtype) + _keep(g, axis, keepdims, len(shape))


# =============================================================================================
# The table
# =============================================================================================
# --- arithmetic (elementwise, NumPy broadcasting) -------------------------------------------
add = row(np.add, "y = a + b;  ā = ḡ,  b̄ = ḡ",
          lambda g, y, a, b: g, lambda g, y, a, b: g)
subtract = row(np.subtract, "y = a − b;  ā = ḡ,  b̄ = −ḡ",
               lambda g, y, a, b: g, lambda g, y, a, b: -g)
multiply = row(np.multiply, "y = a·b;  ā = ḡ·b,  b̄ = ḡ·a",
               lambda g, y, a, b: g * b, lambda g, y, a, b: g * a, reads="x")
divide = row(np.divide, "y = a / b;  ā = ḡ / b,  b̄ = −ḡ·y / b",
             lambda g, y, a, b: g / b, lambda g, y, a, b: -g * y / b, reads="1y")
negative = row(np.negative, "y = −x;  x̄ = −ḡ", lambda g, y, x: -g)


def _pow_base_vjp(g, y, a, b):
    # d/da a⁰ = 0, also at a = 0 where b·a^(b−1) would be 0·inf: a^(b−1) is taken as 1 there.
    return g * b * a ** (np.where(b == 0, 1, b) - 1)


def _pow_exponent_vjp(g, y, a, b):
    # log a is taken as 0 where a = 0 (y is 0 or 1 there): PyTorch's convention, no 0·(−inf).
    return g * y * np.log(np.where(a == 0, 1, a))


power = row(np.power, "y = a^b;  ā = ḡ·b·a^(b−1),  b̄ = ḡ·y·log a",
            _pow_base_vjp, _pow_exponent_vjp, reads="xy")

# --- elementwise functions (written with the output where that is cheaper) -----------------
exp = row(np.exp, "y = eˣ;  x̄ = ḡ·y", lambda g, y, x: g * y, reads="y")
expm1 = row(np.expm1, "y = eˣ − 1;  x̄ = ḡ·(y + 1)", lambda g, y, x: g * (y + 1), reads="y")
log = row(np.log, "y = ln x;  x̄ = ḡ / x", lambda g, y, x: g / x, reads="x")
log1p = row(np.log1p, "y = ln(1 + x);  x̄ = ḡ / (1 + x)", lambda g, y, x: g / (x + 1), reads="x")
sqrt = row(np.sqrt, "y = √x;  x̄ = ḡ / (2y)", lambda g, y, x: g / (2 * y), reads="y")
square = row(np.square, "y = x²;  x̄ = ḡ·2x", lambda g, y, x: g * (2 * x), reads="x")
sin = row(np.sin, "y = sin x;  x̄ = ḡ·cos x", lambda g, y, x: g * np.cos(x), reads="x")
cos = row(np.cos, "y = cos x;  x̄ = −ḡ·sin x", lambda g, y, x: -g * np.sin(x), reads="x")
tanh = row(np.tanh, "y = tanh x;  x̄ = ḡ·(1 − y²)", lambda g, y, x: g * (1 - y * y), reads="y")
absolute = row(np.absolute, "y = |x|;  x̄ = ḡ·sign x   (abs'(0) = 0)",
               lambda g, y, x: g * np.sign(x), reads="x")


@primitive(lambda g, y, x: g * y * (1 - y), reads="y")
def sigmoid(x):
    """y = 1 / (1 + e⁻ˣ);  x̄ = ḡ·y·(1 − y)"""
    e = np.exp(-np.abs(x))  # never overflows; both branches are exact
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@primitive(lambda g, y, x: g * (y > 0), reads="y", kernel_vjp_owned=kernels.relu_vjp_owned)
def relu(x):
    """y = max(x, 0);  x̄ = ḡ·[x > 0]   (relu'(0) = 0)"""
    return np.maximum(x, 0)


@primitive(lambda g, y, x, dtype: g.astype(x.dtype), reads="")
def astype(x, dtype):
    """y = x as dtype;  x̄ = ḡ as x's dtype"""
    return x.astype(dtype)


# --- two-input selections (ties split evenly, as PyTorch does) ------------------------------
maximum = row(np.maximum, "y = max(a, b);  ā = ḡ·([a > b] + ½[a = b]),  b̄ = ḡ·([b > a] + ½[a = b])",
              lambda g, y, a, b: g * ((a > b) + 0.5 * (a == b)),
              lambda g, y, a, b: g * ((b > a) + 0.5 * (a == b)), reads="x")
minimum = row(np.minimum, "y = min(a, b);  ā = ḡ·([a < b] + ½[a = b]),  b̄ = ḡ·([b < a] + ½[a = b])",
              lambda g, y, a, b: g * ((a < b) + 0.5 * (a == b)),
              lambda g, y, a, b: g * ((b < a) + 0.5 * (a == b)), reads="x")


@primitive(lambda g, y, a, b, cond: np.where(cond, g, 0),
           lambda g, y, a, b, cond: np.where(cond, 0, g), reads="")
def where(a, b, cond):
    """y = cond ? a : b;  ā = cond ? ḡ : 0,  b̄ = cond ? 0 : ḡ   (cond: a frozen bool array)"""
    return np.where(cond, a, b)


def _clip_vjp(g, y, x, lo, hi):
    inside = True if lo is None else x >= lo
    return np.where(inside if hi is None else inside & (x <= hi), g, 0)


@primitive(_clip_vjp, reads="x")
def clip(x, lo, hi):
    """y = min(max(x, lo), hi);  x̄ = ḡ·[lo ≤ x ≤ hi]"""
    return np.clip(x, lo, hi)


# --- reductions (axis: a sorted tuple of non-negative axes, normalised in functions.py) ------
sum = row(np.add.reduce, "y = Σ_axis x;  x̄ = ḡ broadcast back over axis",
          lambda g, y, x, axis, keepdims: _spread(g, axis, keepdims, x.shape), name="sum")


@primitive(lambda g, y, x, axis, keepdims, count: _spread(g / count, axis, keepdims, x.shape),
           reads="")
def mean(x, axis, keepdims, count):
    """y = Σ_axis x / n;  x̄ = ḡ / n broadcast back over axis"""
    return np.add.reduce(x, axis=axis, keepdims=keepdims) / count


def _extreme_vjp(g, y, x, axis, keepdims):
    hit = x == _keep(y, axis, keepdims, x.ndim)
    return _keep(g, axis, keepdims, x.ndim) * (hit / hit.sum(axis=axis, keepdims=True))


amax = row(np.maximum.reduce, "y = max_axis x;  x̄ = ḡ·[x = y] / #ties   (ties share evenly)",
           _extreme_vjp, reads="xy", name="amax")
amin = row(np.minimum.reduce, "y = min_axis x;  x̄ = ḡ·[x = y] / #ties   (ties share evenly)",
           _extreme_vjp, reads="xy", name="amin")


# --- the softmax family: the largest logit subtracted first, VJPs from the output, O(N·K) ---
@primitive(lambda g, y, x, axis: y * (g - (g * y).sum(axis=axis, keepdims=True)), reads="y",
           kernel=kernels.softmax)
def softmax(x, axis):
    """y = eˣ / Σ eˣ;  x̄ = y·(ḡ − Σ_axis ḡ·y)   (never diag(y) − y yᵀ)"""
    e = np.exp(x - np.maximum.reduce(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / np.add.reduce(e, axis=axis, keepdims=True)


@primitive(lambda g, y, x, axis: g - np.exp(y) * g.sum(axis=axis, keepdims=True),
           reads="y", kernel=kernels.log_softmax, kernel_vjp_owned=kernels.log_softmax_vjp_owned)
def log_softmax(x, axis):
    """y = x − log Σ eˣ;  x̄ = ḡ − eʸ·Σ_axis ḡ"""
    if x.size == 0:
        return x.copy()
    z = x - np.maximum.reduce(x, axis=axis, keepdims=True)
    # Σ e^z = k + r, with k the logits at the maximum (each e⁰ = 1) and r the rest; log1p of
    # (k − 1) + r keeps the digits of log-probabilities near 0, which log(1 + r) would lose.
    top = z == 0
    rest = np.add.reduce(np.exp(z), axis=axis, keepdims=True, where=~top)
    return z - np.log1p(rest + (np.add.reduce(top, axis=axis, keepdims=True, dtype=z.dtype) - 1))


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


matmul = row(np.matmul, "y = a @ b;  ā = ḡ @ bᵀ,  b̄ = aᵀ @ ḡ   (1-D operands promoted as NumPy "
             "does)", _matmul_vjp_a, _matmul_vjp_b, reads="x", kernel=kernels.matmul)


def _rows(a):
    """a as (rows, last axis), every batch axis flattened."""
    return a.reshape((math.prod(a.shape[:-1]), a.shape[-1]))


@primitive(lambda g, y, x, w, b=None: g @ w,
           lambda g, y, x, w, b=None: _rows(g).mT @ _rows(x),
           lambda g, y, x, w, b=None: sum_to(g, b.shape), reads="01",
           kernel=kernels.linear, kernel_vjps=(kernels.linear_vjp_x, kernels.linear_vjp_w))
def linear(x, w, b=None):
    """y = x Wᵀ + b;  x̄ = ḡ W,  W̄ = ḡᵀ x,  b̄ = Σ ḡ   (W̄ and b̄ summed over all rows)"""
    y = x @ w.mT
    return y if b is None else y + b


# --- shape and indexing -----------------------------------------------------------------------
reshape = row(np.reshape, "y = x reshaped;  x̄ = ḡ reshaped back",
              lambda g, y, x, shape: g.reshape(x.shape))
transpose = row(np.transpose, "y = x with axes permuted;  x̄ = ḡ with the inverse permutation",
                lambda g, y, x, axes: g.transpose(tuple(np.argsort(axes))))
broadcast_to = row(np.broadcast_to, "y = x broadcast to shape;  x̄ = ḡ summed over the broadcast "
                   "axes", lambda g, y, x, shape: sum_to(g, x.shape))


def _getitem_vjp(g, y, x, index, basic):
    if isinstance(g, TensorBase):  # higher order: the scatter is recorded
        return scatter_add(g, index=index, shape=x.shape, basic=basic)
    return scatter_add.forward(g, index=index, shape=x.shape, basic=basic)


@primitive(_getitem_vjp, reads="", vjp_into=kernels.getitem_vjp_into if kernels.ENABLED
           else lambda buf, g, index, basic: add_at(buf, index, g, basic))
def getitem(x, index, basic):
    """y = x[index];  x̄ = zeros with ḡ added at index   (repeated indices accumulate)"""
    return x[index]


@primitive(lambda g, y, src, index, shape, basic: g[index], reads="")
def scatter_add(src, index, shape, basic):
    """y = zeros(shape) with src added at index;  s̄rc = ḡ[index]"""
    out = np.zeros(shape, dtype=np.result_type(src))
    add_at(out, index, src, basic)
    return out


@primitive(lambda g, y, x, pad_width, constant_values:
           g[tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, x.shape))], reads="")
def pad(x, pad_width, constant_values):
    """y = x with constant borders;  x̄ = ḡ without them"""
    return np.pad(x, pad_width, constant_values=constant_values)


def _concatenate_vjp(g, y, *xs, axis):
    bounds = np.cumsum([0] + [x.shape[axis] for x in xs])
    lead = (slice(None),) * axis
    return tuple(g[lead + (slice(lo, hi),)] for lo, hi in zip(bounds[:-1], bounds[1:]))


@primitive(vjp_all=_concatenate_vjp, reads="")
def concatenate(*xs, axis):
    """y = [x₀, x₁, …] along axis;  x̄ᵢ = ḡ's slice of xᵢ"""
    return np.concatenate(xs, axis=axis)


@primitive(vjp_all=lambda g, y, *xs, axis: tuple(g[(slice(None),) * axis + (i,)]
                                                 for i in range(len(xs))), reads="")
def stack(*xs, axis):
    """y = xᵢ stacked on a new axis;  x̄ᵢ = ḡ[…, i, …]"""
    return np.stack(xs, axis=axis)


TABLE: tuple[Primitive, ...] = tuple(v for v in list(globals().values())
                                     if isinstance(v, Primitive))
