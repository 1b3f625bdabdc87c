"""The rows `nn` adds to the engine's table, where NumPy has no function or a composition of
existing ops would be slow or unstable. Each is an `@primitive` like a user's own, its math in
its docstring, its VJPs written with NumPy functions so that they run on Tensors and nest
(`mg.grad(mg.grad(f))`).

- `erf`: NumPy has none; GELU is x·½(1 + erf(x/√2)) on it.
- `softplus`: log(1 + e^βx)/β as one stable expression, PyTorch's linear region above
  `threshold` included; the binary cross-entropy with logits is written on it.
- `standardize`: (x − mean)/√(var + ε) over some axes, the core of LayerNorm and BatchNorm. As
  ops it is nine nodes; as a row it saves its input and output, and its VJP is one line.
- `linear_relu`: max(x Wᵀ + b, 0), what `nn.LinearReLU` records. As two ops the tape keeps the
  pre-activation alive until backward; as one row it keeps only the output, whose sign is the
  ReLU's derivative.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minigrad import kernels
from minigrad.rules import linear, primitive

__all__ = ["erf", "linear_relu", "softplus", "standardize"]

# W. J. Cody's rational approximations of erf and erfc (Math. Comp. 23, 1969), accurate to
# double precision: coefficients from the highest power down, in the order Horner reads them.
_ERF_NEAR = ((1.85777706184603153e-1, 3.16112374387056560e00, 1.13864154151050156e02,
              3.77485237685302021e02, 3.20937758913846947e03),
             (1.0, 2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
              2.84423683343917062e03))  # erf(x) = x·P(x²)/Q(x²) for |x| ≤ 0.46875
_ERFC_MID = ((2.15311535474403846e-8, 5.64188496988670089e-1, 8.88314979438837594e00,
              6.61191906371416295e01, 2.98635138197400131e02, 8.81952221241769090e02,
              1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03),
             (1.0, 1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
              1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
              3.43936767414372164e03, 1.23033935480374942e03))  # erfc = e^(−y²)·P(y)/Q(y), y ≤ 4
_ERFC_FAR = ((1.63153871373020978e-2, 3.05326634961232344e-1, 3.60344899949804439e-1,
              1.25781726111229246e-1, 1.60837851487422766e-2, 6.58749161529837803e-4),
             (1.0, 2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
              6.05183413124413191e-2, 2.33520497626869185e-3))  # y > 4, in z = 1/y² (below)


def _ratio(coeffs: tuple[tuple[float, ...], tuple[float, ...]], z: np.ndarray) -> np.ndarray:
    """P(z)/Q(z), each by Horner's rule in place."""
    p, q = np.full_like(z, coeffs[0][0]), np.full_like(z, coeffs[1][0])
    for c in coeffs[0][1:]:
        p *= z
        p += c
    for c in coeffs[1][1:]:
        q *= z
        q += c
    p /= q
    return p


def _erf_values(x: np.ndarray) -> np.ndarray:
    """erf in float64 to within a few ulps, elementwise."""
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(x)
    # Both common ranges are computed everywhere and one picked by np.where: gathering and
    # scattering a random half of the elements by a mask costs more than the arithmetic.
    with np.errstate(over="ignore", invalid="ignore"):  # the formulas outside their ranges
        out = np.where(y <= 0.46875, y * _ratio(_ERF_NEAR, y * y),
                       1.0 - np.exp(-y * y) * _ratio(_ERFC_MID, y))
    far = y > 4.0
    if far.any():
        ys = y[far]
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # y² → inf
            z = 1.0 / (ys * ys)  # erfc = e^(−y²)·(1/√π − z·P(z)/Q(z)) / y
            erfc = np.exp(-ys * ys) * (1 / math.sqrt(math.pi) - z * _ratio(_ERFC_FAR, z)) / ys
        out[far] = 1.0 - np.where(ys < 27.0, erfc, 0.0)  # erfc(27) < 1e-300
    return np.copysign(out, x)  # erf is odd; NaN stays NaN


def _erf_vjp(g: Any, y: Any, x: Any) -> Any:
    return g * (2 / math.sqrt(math.pi)) * np.exp(-(x * x))


@primitive(_erf_vjp, reads="x")
def erf(x):
    """y = erf x = 2/√π ∫₀ˣ e^(−t²) dt;  x̄ = ḡ·2/√π·e^(−x²)"""
    out = _erf_values(x)
    return out.astype(x.dtype) if np.result_type(x).kind == "f" else out


def _softplus_vjp(g: Any, y: Any, x: Any, beta: float, threshold: float) -> Any:
    # σ(βx) = 1 − e^(−βy), since e^(βy) = 1 + e^(βx): accurate at both ends, from the output.
    return np.where(x * beta > threshold, g, -g * np.expm1(-beta * y))


@primitive(_softplus_vjp, reads="xy")
def softplus(x, beta, threshold):
    """y = log(1 + e^(βx))/β, and y = x where βx > threshold;  x̄ = ḡ·σ(βx) (ḡ above)"""
    bx = x * beta
    smooth = (np.maximum(bx, 0) + np.log1p(np.exp(-np.abs(bx)))) / beta  # never overflows
    return np.where(bx > threshold, x, smooth)


def _standardize_vjp(g: Any, y: Any, x: Any, axis: tuple[int, ...], eps: float) -> Any:
    centred = g - np.mean(g, axis=axis, keepdims=True)
    return (centred - y * np.mean(g * y, axis=axis, keepdims=True)) / np.sqrt(
        np.var(x, axis=axis, keepdims=True) + eps)


@primitive(_standardize_vjp, reads="xy")
def standardize(x, axis, eps):
    """y = (x − μ)/√(σ² + ε) over axis;  x̄ = (ḡ − mean ḡ − y·mean(ḡ·y))/√(σ² + ε)"""
    # σ² is the biased variance (divided by n), as LayerNorm and BatchNorm normalise with it.
    centred = x - np.mean(x, axis=axis, keepdims=True)
    return centred / np.sqrt(np.mean(centred * centred, axis=axis, keepdims=True) + eps)


class _LinearVJPsAt:
    """linear's VJPs at the upstream gz (x̄ = gz W, W̄ = gzᵀ x, b̄ = Σ gz), each computed when the
    sweep asks for it: an input without grad costs nothing. The sweep asks in input order, so a
    b̄ that is gz or a view of it (a single row) goes out only after x̄ and W̄ read it."""

    __slots__ = ("gz", "x", "w", "b")

    def __init__(self, gz: Any, x: Any, w: Any, b: Any) -> None:
        self.gz, self.x, self.w, self.b = gz, x, w, b

    def __getitem__(self, i: int) -> Any:
        return linear.vjps[i](self.gz, None, self.x, self.w, self.b)


# ReLU's derivative at z is [z > 0], which is [y > 0]: the upstream through the ReLU is ḡ·[y > 0].
@primitive(vjp_all=lambda g, y, x, w, b=None: _LinearVJPsAt(g * (y > 0), x, w, b), reads="01y",
           kernel=kernels.linear_relu, kernel_vjp_owned=lambda g, y, x, w, b=None:
           _LinearVJPsAt(kernels.relu_vjp_owned(g, y, x)[0], x, w, b))
def linear_relu(x, w, b=None, /):  # b an input, never a keyword (apply's keywords are params)
    """y = max(x Wᵀ + b, 0);  with ḡ' = ḡ·[y > 0]:  x̄ = ḡ' W,  W̄ = ḡ'ᵀ x,  b̄ = Σ ḡ'"""
    return np.maximum(x @ w.mT if b is None else x @ w.mT + b, 0)
