"""2-D convolution and max pooling: rows of their own, the functions and the Modules.

A convolution is one matrix product, recorded as two rows. `conv2d_windows` copies the windows
the kernel visits, read through a strided view of the padded input, into a matrix of shape
(N·OH·OW, kh·kw·C), one row per output pixel (im2col); `conv2d` multiplies it by the weight as a
(kh·kw·C, O) matrix and adds the bias. The tape keeps the windows for w̄ = ḡᵀ·windows, so they
are copied once per step, not again in backward. Arrays are NCHW as in PyTorch, but what these
rows compute is laid out channels-last in memory (an (N, C, H, W) array whose strides walk C
fastest): a window's row is then made of contiguous runs of kw·C numbers, and the product
writes the output in place.

No VJP builds a Jacobian. `conv2d`'s are products (ḡ·W, ḡᵀ·windows, Σ ḡ) written with methods
that Tensors have too. The windows' VJP adds each row of ḡ back over its window, one kernel
offset at a time (kh·kw strided slice-adds, `conv2d_windows_vjp`), and the two are each other's
VJPs, so convolutions nest through `mg.grad(mg.grad(f))`. Max pooling is alike: its VJP routes
ḡ to each window's first maximum (`max_pool2d_vjp`), whose own VJP picks ḡ back up there
(`max_pool2d_pick`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from minigrad.functions import reshape
from minigrad.graph import TensorBase, apply
from minigrad.nn.modules import Module, _generator
from minigrad.rules import Primitive, primitive
from minigrad.tensor import Tensor

__all__ = ["Conv2d", "MaxPool2d", "conv2d", "max_pool2d"]

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]  # ((top, bottom), (left, right))


def _call(op: Primitive, *args: Any, **params: Any) -> Any:
    """A VJP's product: recorded when it runs on Tensors (higher order), else plain NumPy."""
    if any(isinstance(a, TensorBase) for a in args):
        return op(*args, **params)
    return op.forward(*args, **params)


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------
def _out_size(size: Pair, kernel: Pair, stride: Pair, padding: Pads, dilation: Pair) -> Pair:
    """OH = ⌊(H + pads − d·(k − 1) − 1) / s⌋ + 1, and OW alike."""
    return tuple((n + lo + hi - d * (k - 1) - 1) // s + 1  # type: ignore[return-value]
                 for n, k, s, (lo, hi), d in zip(size, kernel, stride, padding, dilation))


def _taps(kernel: Pair, dilation: Pair) -> Iterator[tuple[int, int, int]]:
    """(index of the offset in kh·kw, row offset, column offset) for each kernel offset."""
    for p in range(kernel[0]):
        for q in range(kernel[1]):
            yield p * kernel[1] + q, p * dilation[0], q * dilation[1]


def _tap(a: Any, r: int, c: int, out: Pair, stride: Pair, rows: int = 2) -> Any:
    """The elements of a that offset (r, c) meets, one per output pixel: a strided slice of the
    two spatial axes starting at axis `rows`."""
    lead = (slice(None),) * rows
    return a[lead + (slice(r, r + stride[0] * (out[0] - 1) + 1, stride[0]),
                     slice(c, c + stride[1] * (out[1] - 1) + 1, stride[1]))]


def _channels_last(n: int, c: int, h: int, w: int, dtype: Any) -> np.ndarray:
    """An empty (n, c, h, w) array laid out (n, h, w, c) in memory that owns that memory (a
    transposed view would be copied when the tape saves it)."""
    return np.empty_like(np.empty((n, h, w, c), dtype).transpose(0, 3, 1, 2))


def _padded(x: np.ndarray, padding: Pads, fill: Any = 0, last: bool = True) -> np.ndarray:
    """x with `fill` around its spatial axes; channels-last (N, H, W, C) when `last`."""
    (top, bottom), (left, right) = padding
    v = x.transpose(0, 2, 3, 1) if last else x
    if top == bottom == left == right == 0:
        return v
    n, h, w = x.shape[0], x.shape[2], x.shape[3]
    shape = (n, h + top + bottom, w + left + right, x.shape[1]) if last else \
        (n, x.shape[1], h + top + bottom, w + left + right)
    out = np.full(shape, fill, dtype=x.dtype)
    (out[:, top:top + h, left:left + w] if last else out[:, :, top:top + h, left:left + w])[...] = v
    return out


def _windows(x: np.ndarray, kernel: Pair, stride: Pair, padding: Pads, dilation: Pair
             ) -> np.ndarray:
    """The im2col matrix (N·OH·OW, kh·kw·C): row (n, i, j) holds the window of output pixel
    (i, j) of image n, as (kh, kw, C) flattened, read through a strided view of the padded
    input and copied once into an array of its own."""
    xp = _padded(x, padding)
    oh, ow = _out_size(x.shape[2:], kernel, stride, padding, dilation)  # type: ignore[arg-type]
    n, c = x.shape[:2]
    sn, sh, sw, sc = xp.strides
    # window (i, j), offset (p, q), channel c sits at xp[n, s·i + d·p, s·j + d·q, c]
    view = as_strided(xp, (n, oh, ow, *kernel, c),
                      (sn, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1],
                       sc), writeable=False)
    rows = np.empty((n * oh * ow, kernel[0] * kernel[1] * c), dtype=x.dtype)
    rows.reshape(view.shape)[...] = view
    return rows


# ---------------------------------------------------------------------------------------------
# Convolution: the windows as rows (a row pair, each the other's VJP), then one product
# ---------------------------------------------------------------------------------------------
def _windows_vjp(g, y, x, *, kernel, stride, padding, dilation):
    return _call(conv2d_windows_vjp, g, shape=x.shape, kernel=kernel, stride=stride,
                 padding=padding, dilation=dilation)


@primitive(_windows_vjp, reads="")
def conv2d_windows(x, *, kernel, stride, padding, dilation):
    """y[(n,i,j),(p,q,c)] = x[n,c,s·i+d·p,s·j+d·q] (0 in the padding);  x̄ = each row of ḡ added back over its window (conv2d_windows_vjp)"""  # noqa: E501
    return _windows(x, kernel, stride, padding, dilation)


def _windows_vjp_vjp(g, y, gy, *, shape, kernel, stride, padding, dilation):
    return _call(conv2d_windows, g, kernel=kernel, stride=stride, padding=padding,
                 dilation=dilation)


@primitive(_windows_vjp_vjp, reads="")
def conv2d_windows_vjp(gy, *, shape, kernel, stride, padding, dilation):
    """x̄[n,c,s·i+d·p,s·j+d·q] += ḡ_y[(n,i,j),(p,q,c)] over all windows;  ḡ_y' = conv2d_windows(ḡ)"""  # noqa: E501
    n, c, h, w = shape
    oh, ow = _out_size((h, w), kernel, stride, padding, dilation)
    shares = gy.reshape(n, oh, ow, kernel[0] * kernel[1], c)
    (top, bottom), (left, right) = padding
    xp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=gy.dtype)
    for k, r, col in _taps(kernel, dilation):  # slice-adds: no index is repeated in one
        _tap(xp, r, col, (oh, ow), stride, rows=1)[...] += shares[:, :, :, k]
    return xp[:, top:top + h, left:left + w].transpose(0, 3, 1, 2)


def _pixel_rows(g: Any) -> Any:
    """(N, O, OH, OW) as rows (N·OH·OW, O): one output pixel per row."""
    return g.transpose(0, 2, 3, 1).reshape(-1, g.shape[1])


def _weight_rows(w: Any) -> Any:
    """(O, C, kh, kw) as (O, kh·kw·C): the order of a window's row."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


# Written with methods and operators that Tensors have too: for higher order they record.
def _conv_vjp_rows(g, y, rows, w, b=None, *, out):
    return _pixel_rows(g) @ _weight_rows(w)


def _conv_vjp_w(g, y, rows, w, b=None, *, out):
    o, c, kh, kw = w.shape
    return (_pixel_rows(g).T @ rows).reshape(o, kh, kw, c).transpose(0, 3, 1, 2)


def _conv_vjp_b(g, y, rows, w, b=None, *, out):
    return g.sum(axis=(0, 2, 3))


@primitive(_conv_vjp_rows, _conv_vjp_w, _conv_vjp_b, reads="01")
def conv2d(rows, w, b=None, *, out):
    """y[n,o,i,j] = Σ_k rows[(n,i,j),k]·W[o,k] + b[o], W = w as (O, kh·kw·C);  r̄ows = ḡ·W,  w̄ = ḡᵀ·rows,  b̄ = Σ_{n,i,j} ḡ"""  # noqa: E501
    o = w.shape[0]
    y = _channels_last(out[0], o, out[1], out[2],
                       np.result_type(rows, w, *(() if b is None else (b,))))
    flat = y.transpose(0, 2, 3, 1).reshape(-1, o)  # a view: y's memory is in this order
    np.matmul(rows, _weight_rows(w).T, out=flat)
    if b is not None:
        flat += b
    return y


_CONV2D: Primitive = conv2d  # the row; the name `conv2d` is the public function below


# ---------------------------------------------------------------------------------------------
# Max pooling: the maximum of each window; ḡ goes to the window's first maximum
# ---------------------------------------------------------------------------------------------
def _lowest(dtype: np.dtype[Any]) -> Any:
    """What padding a max pool adds: smaller than every value (−inf for floats)."""
    if dtype.kind == "f":
        return -np.inf
    return np.iinfo(dtype).min if dtype.kind in "iu" else False


def _winners(x: np.ndarray, y: np.ndarray, kernel: Pair, stride: Pair, padding: Pads,
             dilation: Pair) -> Iterator[tuple[int, int, np.ndarray]]:
    """(row offset, column offset, mask) per kernel offset: where that offset holds the element
    its window's gradient goes to. PyTorch's choice: the first maximum at ties, the last NaN in
    a window holding NaN."""
    xp = _padded(x, padding, _lowest(x.dtype), last=False)
    out = y.shape[2:]
    taps = [(r, c, _tap(xp, r, c, out, stride)) for _, r, c in _taps(kernel, dilation)]
    nans = []
    if y.dtype.kind == "f" and np.isnan(np.add.reduce(y, axis=None)):  # NaN anywhere (or ∞ − ∞)
        todo = np.isnan(y)  # NaN windows whose last NaN is not found yet
        for _, _, tap in reversed(taps):
            last = (tap != tap) & todo
            todo ^= last
            nans.append(last)
        nans.reverse()
    free = None  # windows whose first maximum is not found yet (NaN equals nothing)
    for k, (r, c, tap) in enumerate(taps):
        hit = tap == y
        if free is None:
            free = ~hit
        else:
            hit &= free
            if k < len(taps) - 1:
                free ^= hit
        yield r, c, (hit | nans[k]) if nans else hit


def _pool_vjp(g, y, x, *, kernel, stride, padding, dilation):
    return _call(max_pool2d_vjp, g, x, y, kernel=kernel, stride=stride, padding=padding,
                 dilation=dilation)


@primitive(_pool_vjp, reads="xy")
def max_pool2d(x, *, kernel, stride, padding, dilation):
    """y[n,c,i,j] = max_{p,q} x[n,c,s·i+d·p,s·j+d·q];  x̄ = ḡ at each window's first maximum (max_pool2d_vjp)"""  # noqa: E501
    xp = _padded(x, padding, _lowest(x.dtype), last=False)
    out = _out_size(x.shape[2:], kernel, stride, padding, dilation)
    y = None
    for _, r, c in _taps(kernel, dilation):  # NaN propagates, as in PyTorch
        tap = _tap(xp, r, c, out, stride)
        y = tap.copy(order="K") if y is None else np.maximum(y, tap, out=y)
    return y


_MAX_POOL2D: Primitive = max_pool2d  # the row; `max_pool2d` is the public function below


def _none(*args: Any, **params: Any) -> None:
    """No gradient: which element is a window's maximum does not move with x."""
    return None


def _scatter_vjp(g, y, gy, x, ym, *, kernel, stride, padding, dilation):
    return _call(max_pool2d_pick, g, x, ym, kernel=kernel, stride=stride, padding=padding,
                 dilation=dilation)


def _pick_vjp(g, y, h, x, ym, *, kernel, stride, padding, dilation):
    return _call(max_pool2d_vjp, g, x, ym, kernel=kernel, stride=stride, padding=padding,
                 dilation=dilation)


@primitive(_scatter_vjp, _none, _none, reads="12")
def max_pool2d_vjp(gy, x, ym, *, kernel, stride, padding, dilation):
    """x̄ = zeros with ḡ_y added at each window's first maximum;  ḡ_y' = ḡ there (max_pool2d_pick); none for x, y"""  # noqa: E501
    (top, bottom), (left, right) = padding
    n, c, h, w = x.shape
    if top == bottom == left == right == 0:
        xp = np.zeros_like(x, dtype=np.result_type(gy))  # x's memory layout
    else:
        xp = np.zeros((n, c, h + top + bottom, w + left + right), dtype=np.result_type(gy))
    # windows s ≥ d·(k − 1) + 1 apart never share an element: each is written once
    apart = all(s >= d * (k - 1) + 1 for k, s, d in zip(kernel, stride, dilation))
    for r, col, hit in _winners(x, ym, kernel, stride, padding, dilation):
        tap = _tap(xp, r, col, ym.shape[2:], stride)
        if apart:
            np.multiply(gy, hit, out=tap)
        else:
            tap += gy * hit  # faster than an add masked by hit
    return xp[:, :, top:top + h, left:left + w]


@primitive(_pick_vjp, _none, _none, reads="12")
def max_pool2d_pick(h, x, ym, *, kernel, stride, padding, dilation):
    """y = h at each window's first maximum of x;  h̄ = ḡ added back there (max_pool2d_vjp); none for x, y"""  # noqa: E501
    out = np.zeros(ym.shape, dtype=np.result_type(h))
    hp = _padded(h, padding, 0, last=False)
    for r, c, hit in _winners(x, ym, kernel, stride, padding, dilation):
        out += _tap(hp, r, c, ym.shape[2:], stride) * hit  # one hit per window
    return out


# ---------------------------------------------------------------------------------------------
# The functions: arguments checked and normalised, then one row
# ---------------------------------------------------------------------------------------------
def _pair(value: Any, what: str, name: str, least: int) -> Pair:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(
            v, (bool, np.bool_)) for v in items):
        raise TypeError(f"{name}: {what} must be an int or a pair of ints, got {value!r}")
    if min(items) < least:
        raise ValueError(f"{name}: {what} must be at least {least}, got {value!r}")
    return int(items[0]), int(items[1])


def _conv_padding(padding: Any, kernel: Pair, stride: Pair, dilation: Pair) -> Pads:
    """PyTorch's padding: an int, a pair, "valid" (none) or "same" (output size = input size,
    stride 1 only; an odd total puts the extra row and column at the bottom and right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ValueError(f"conv2d: padding must be an int, a pair of ints, 'valid' or "
                             f"'same', got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"conv2d: padding='same' needs stride 1, got stride {stride}; "
                             f"give the padding as numbers instead")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return (totals[0] // 2, totals[0] - totals[0] // 2), \
            (totals[1] // 2, totals[1] - totals[1] // 2)
    ph, pw = _pair(padding, "padding", "conv2d", 0)
    return (ph, ph), (pw, pw)


def _shape_of(a: Any) -> tuple[int, ...]:
    return a.shape if isinstance(a, TensorBase) else np.shape(a)


def _images(x: Any, name: str, what: str) -> tuple[Any, bool]:
    """x as a batch (N, C, H, W); an unbatched (C, H, W) image gets a batch axis of 1."""
    shape = _shape_of(x)
    if len(shape) == 4:
        return x, False
    if len(shape) == 3:
        return reshape(x, (1, *shape)), True
    raise ValueError(f"{name}: input must be (N, C, H, W) or (C, H, W), got shape {shape}"
                     f"{what}")


def _check_fits(name: str, shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Pads,
                dilation: Pair) -> None:
    out = _out_size(shape[2:], kernel, stride, padding, dilation)  # type: ignore[arg-type]
    if min(out) < 1:
        span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        raise ValueError(f"{name}: input of shape {shape} padded by {padding} is smaller than "
                         f"the (dilated) kernel, {span[0]}×{span[1]}; pad it more or use a "
                         f"smaller kernel")


def conv2d(input: Any, weight: Any, bias: Any = None,  # type: ignore[no-redef]  # noqa: F811
           stride: Any = 1, padding: Any = 0, dilation: Any = 1) -> Tensor:
    """2-D cross-correlation, PyTorch's `F.conv2d`: input (N, C, H, W) or (C, H, W), weight
    (O, C, kh, kw), bias (O,) or None; stride, padding and dilation an int or a pair, padding
    also "valid" or "same". Returns (N, O, OH, OW) with OH = ⌊(H + 2p − d·(kh − 1) − 1)/s⌋ + 1."""
    sw = _shape_of(weight)
    x, unbatched = _images(input, "conv2d", f" (weight {sw})")
    sx = _shape_of(x)
    if len(sw) != 4 or sw[1] != sx[1]:
        raise ValueError(f"conv2d: input of shape {_shape_of(input)} and weight of shape {sw} do "
                         f"not fit: the weight must be (out_channels, in_channels, kh, kw) with "
                         f"in_channels = the input's channels, {sx[1]}")
    if bias is not None and _shape_of(bias) != (sw[0],):
        raise ValueError(f"conv2d: bias of shape {_shape_of(bias)} does not fit weight of shape "
                         f"{sw}; it must be ({sw[0]},)")
    kernel = (int(sw[2]), int(sw[3]))
    stride_ = _pair(stride, "stride", "conv2d", 1)
    dilation_ = _pair(dilation, "dilation", "conv2d", 1)
    pads = _conv_padding(padding, kernel, stride_, dilation_)
    _check_fits("conv2d", sx, kernel, stride_, pads, dilation_)
    rows = apply(conv2d_windows, x, kernel=kernel, stride=stride_, padding=pads,
                 dilation=dilation_)
    out = (sx[0], *_out_size(sx[2:], kernel, stride_, pads, dilation_))  # type: ignore[arg-type]
    args = (rows, weight) if bias is None else (rows, weight, bias)
    y = apply(_CONV2D, *args, out=out)
    return reshape(y, y.shape[1:]) if unbatched else y


def max_pool2d(input: Any, kernel_size: Any,  # type: ignore[no-redef]  # noqa: F811
               stride: Any = None, padding: Any = 0, dilation: Any = 1) -> Tensor:
    """The maximum of each window, PyTorch's `F.max_pool2d`: input (N, C, H, W) or (C, H, W);
    stride defaults to kernel_size; padding (at most half the kernel) never wins a window. The
    gradient goes to each window's first maximum, as PyTorch's does at ties."""
    kernel = _pair(kernel_size, "kernel_size", "max_pool2d", 1)
    stride_ = kernel if stride is None else _pair(stride, "stride", "max_pool2d", 1)
    ph, pw = _pair(padding, "padding", "max_pool2d", 0)
    dilation_ = _pair(dilation, "dilation", "max_pool2d", 1)
    if ph > kernel[0] // 2 or pw > kernel[1] // 2:
        raise ValueError(f"max_pool2d: padding {padding!r} must be at most half the kernel size "
                         f"{kernel}")
    x, unbatched = _images(input, "max_pool2d", "")
    pads = ((ph, ph), (pw, pw))
    _check_fits("max_pool2d", _shape_of(x), kernel, stride_, pads, dilation_)
    y = apply(_MAX_POOL2D, x, kernel=kernel, stride=stride_, padding=pads, dilation=dilation_)
    return reshape(y, y.shape[1:]) if unbatched else y


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------
class Conv2d(Module):
    """2-D convolution, PyTorch's `nn.Conv2d`: weight (out_channels, in_channels, kh, kw) and
    bias (out_channels,), both ~ U(−k, k) with k = 1/√(in_channels·kh·kw) (kaiming_uniform with
    a = √5, as PyTorch initialises them). `rng`: an np.random.Generator or an int seed (None:
    fresh OS entropy)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, bias: bool = True,
                 rng: np.random.Generator | int | None = None, *, dilation: Any = 1,
                 dtype: Any = np.float64) -> None:
        for what, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Conv2d: {what} must be a positive int, got {v!r}")
        dt = np.dtype(dtype)
        if dt.kind != "f":
            raise TypeError(f"Conv2d: dtype must be floating, got {dt}")
        self.training = True
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = _pair(stride, "stride", "Conv2d", 1)
        self.dilation = _pair(dilation, "dilation", "Conv2d", 1)
        _conv_padding(padding, self.kernel_size, self.stride, self.dilation)  # checks it
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding",
                                                                      "Conv2d", 0)
        gen = _generator(rng)
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self.weight = Tensor(gen.uniform(-bound, bound, shape).astype(dt), requires_grad=True)
        self.bias: Tensor | None = (
            Tensor(gen.uniform(-bound, bound, (self.out_channels,)).astype(dt),
                   requires_grad=True) if bias else None)

    def forward(self, x: Any) -> Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        return s + ("" if self.bias is not None else ", bias=False")


class MaxPool2d(Module):
    """The maximum of each window, PyTorch's `nn.MaxPool2d` (stride defaults to kernel_size)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1) -> None:
        self.training = True
        _pair(kernel_size, "kernel_size", "MaxPool2d", 1)  # checked here, kept as given
        if stride is not None:
            _pair(stride, "stride", "MaxPool2d", 1)
        _pair(padding, "padding", "MaxPool2d", 0)
        _pair(dilation, "dilation", "MaxPool2d", 1)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation

    def forward(self, x: Any) -> Tensor:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}")
