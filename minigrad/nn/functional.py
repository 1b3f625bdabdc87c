"""Stateless layers and losses, built from the engine's public ops (PyTorch's names, arguments
and defaults).

Most are a few ops: `silu` is x·σ(x), `huber_loss` is c·(d − c/2) with c = clip(d, −δ, δ).
Four are rows of their own (`primitives.py`): `erf` (under `gelu`), `softplus`, the
standardisation inside `layer_norm` and `batch_norm`, and `linear_relu` (defined with
`nn.LinearReLU` in `modules.py`). The losses are written on `log_softmax`
and `softplus`, which never form a probability and then take its log: at logits of ±1e4, or in
float32, softmax underflows to 0 and log(0) = −inf, while
log_softmax(z) = z − max z − log Σ e^(z − max z) stays finite.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np

from minigrad.functions import clip, constant, linear, log_softmax, reshape, softmax, where
from minigrad.modes import THREAD
from minigrad.nn import primitives
from minigrad.nn.convolution import conv2d, max_pool2d
from minigrad.nn.modules import _generator, linear_relu
from minigrad.rules import absolute, expm1, relu, sigmoid, tanh
from minigrad.tensor import Tensor

__all__ = [
    "batch_norm", "binary_cross_entropy_with_logits", "cross_entropy", "dropout", "elu",
    "embedding", "gelu", "huber_loss", "l1_loss", "layer_norm", "leaky_relu", "linear",
    "linear_relu", "log_softmax", "mse_loss", "nll_loss", "relu", "sigmoid", "silu",
    "smooth_l1_loss", "softmax", "softplus", "tanh",
]
__all__ += ["conv2d", "max_pool2d"]  # nn/convolution.py

Reduction = Literal["mean", "sum", "none"]


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _value(x: Any) -> np.ndarray:
    return np.asarray(x.data if isinstance(x, Tensor) else x)


def _float_dtype(x: Any) -> np.dtype[Any]:
    """x's dtype if floating, else float64 (what the engine computes integers in)."""
    dt = _value(x).dtype
    return dt if dt.kind == "f" else np.dtype(np.float64)


# --- activations ------------------------------------------------------------------------------
def leaky_relu(x: Any, negative_slope: float = 0.01) -> Tensor:
    """y = x where x > 0, else negative_slope·x;  the slope at 0 is negative_slope (PyTorch's).
    One recorded multiply by a constant mask of 1s and slopes."""
    slopes = functools.partial(_slopes, slope=negative_slope, dtype=_float_dtype(x))
    return _tensor(x) * constant(slopes, x, name="leaky_relu_slopes")


def _slopes(v: np.ndarray, slope: float, dtype: Any) -> np.ndarray:
    """1 where v > 0, else slope: leaky_relu's constant mask (a function of the input's values,
    so `constant` computes it, and a compiled step at every call)."""
    return np.where(v > 0, 1.0, slope).astype(dtype)


def silu(x: Any) -> Tensor:
    """y = x·σ(x) (also called swish)."""
    return _tensor(x) * sigmoid(x)


def elu(x: Any, alpha: float = 1.0) -> Tensor:
    """y = x where x > 0, else α(eˣ − 1); the slope at 0 is α (PyTorch's).

    eˣ is taken of min(x, 0) (a clip, which passes the gradient at 0): eˣ of a large positive x
    would overflow, and the where's zero gradient times its infinite slope would be NaN."""
    return where(_tensor(x) > 0, x, alpha * expm1(clip(x, None, 0)))


def softplus(x: Any, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """y = log(1 + e^(βx))/β, finite for any x; y = x where βx > threshold (PyTorch's)."""
    return primitives.softplus(x, beta=beta, threshold=threshold)


def gelu(x: Any, approximate: str = "none") -> Tensor:
    """y = x·Φ(x) = ½x(1 + erf(x/√2)), Φ the standard normal CDF; approximate="tanh" uses
    ½x(1 + tanh(√(2/π)(x + 0.044715x³))) instead. Both in PyTorch's order of operations."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    x = _tensor(x)
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2 / math.pi)
        return x * 0.5 * (1 + tanh(inner))
    return x * 0.5 * (1 + primitives.erf(x * (1 / math.sqrt(2))))


# --- layers -----------------------------------------------------------------------------------
def dropout(x: Any, p: float = 0.5, training: bool = True,
            rng: np.random.Generator | int | None = None) -> Tensor:
    """While training, zero each element with probability p and scale the rest by 1/(1 − p), so
    the expected output is x; otherwise y = x. `rng`: np.random.Generator, int seed, or None
    for a fresh `default_rng()`. The gradient is the same mask times ḡ."""
    p = _probability(p, "dropout")
    if not training or p == 0.0:
        return _tensor(x)
    if THREAD.modes.trace is not None:
        THREAD.modes.trace.refuse("a random draw (dropout in training mode)")
    shape = np.shape(_value(x))
    if p == 1.0:
        mask = np.zeros(shape, _float_dtype(x))
    else:
        keep = _generator(rng).random(shape) >= p
        mask = np.where(keep, 1.0 / (1.0 - p), 0.0).astype(_float_dtype(x))
    return _tensor(x) * mask


def _probability(p: Any, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) \
            or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: probability p must be a number in [0, 1], got {p!r}")
    return float(p)


def embedding(idx: Any, weight: Any, padding_idx: int | None = None) -> Tensor:
    """Rows of `weight` (num_embeddings, embedding_dim) picked by integer indices: the output
    has shape idx.shape + (embedding_dim,). The gradient adds ḡ into the picked rows (repeated
    indices accumulate); with padding_idx, that row gets no gradient (PyTorch's)."""
    shape = np.shape(_value(weight))
    if len(shape) != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got "
                         f"shape {shape}")
    i = _value(idx)
    if i.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {i.dtype} (shape "
                        f"{i.shape}); convert with .astype(int)")
    # `constant` of the indices: a compiled step checks them (and masks the padding) per call
    ids = constant(functools.partial(_checked_ids, shape=shape), idx, name="embedding_ids")
    out = _tensor(weight)[ids]
    if padding_idx is None:
        return out
    pad = _padding_index(padding_idx, shape[0], "embedding")
    return where((ids != pad)[..., None], out, out.detach())


def _checked_ids(i: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The indices, each in [0, num_embeddings) (a negative one would pick from the end)."""
    if i.size and (i.min() < 0 or i.max() >= shape[0]):
        bad = i[(i < 0) | (i >= shape[0])].flat[0]
        raise IndexError(f"embedding: index {bad} is out of range for {shape[0]} embeddings "
                         f"(weight shape {shape}); indices must lie in [0, {shape[0]})")
    return i


def _padding_index(padding_idx: int, n: int, name: str) -> int:
    if not -n <= padding_idx < n:
        raise ValueError(f"{name}: padding_idx {padding_idx} must lie in [-{n}, {n}) for {n} "
                         f"embeddings")
    return padding_idx % n


def layer_norm(x: Any, normalized_shape: int | tuple[int, ...], weight: Any = None,
               bias: Any = None, eps: float = 1e-5) -> Tensor:
    """Standardise over the last len(normalized_shape) axes, then y·weight + bias:
    y = (x − μ)/√(σ² + ε) with the biased variance σ², as PyTorch."""
    norm = _shape_tuple(normalized_shape)
    xs = np.shape(_value(x))
    if not norm or xs[len(xs) - len(norm):] != norm or len(xs) < len(norm):
        raise ValueError(f"layer_norm: input of shape {xs} must end in normalized_shape {norm}")
    for what, t in (("weight", weight), ("bias", bias)):
        if t is not None and np.shape(_value(t)) != norm:
            raise ValueError(f"layer_norm: {what} of shape {np.shape(_value(t))} must have "
                             f"normalized_shape {norm}")
    axes = tuple(range(len(xs) - len(norm), len(xs)))
    return _affine(primitives.standardize(x, axis=axes, eps=float(eps)), weight, bias)


def _shape_tuple(shape: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    items = shape if isinstance(shape, (tuple, list)) else (shape,)
    return tuple(int(s) for s in items)


def _affine(y: Tensor, weight: Any, bias: Any, shape: tuple[int, ...] | None = None) -> Tensor:
    """y·weight + bias, each reshaped to `shape` (to broadcast over the axes after them)."""
    if weight is not None:
        y = y * (weight if shape is None else reshape(weight, shape))
    if bias is not None:
        y = y + (bias if shape is None else reshape(bias, shape))
    return y


def batch_norm(x: Any, running_mean: Any, running_var: Any, weight: Any = None, bias: Any = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Standardise each channel (axis 1 of (N, C, ...)) over the batch and the other axes, then
    y·weight + bias.

    training: with the batch's mean and biased variance; the running statistics, where given
    (Tensors or writeable arrays), move towards the batch's in place:
    r ← (1 − momentum)·r + momentum·batch, with the unbiased variance n/(n − 1)·σ², as PyTorch.
    Otherwise: with the running statistics, y = (x − mean)/√(var + ε).
    """
    xs = np.shape(_value(x))
    axes, n = _channel_axes(xs, "batch_norm", training)
    c = xs[1]
    for what, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and np.shape(_value(t)) != (c,):
            raise ValueError(f"batch_norm: {what} of shape {np.shape(_value(t))} does not fit "
                             f"input of shape {xs}: it must be ({c},), one per channel")
    per_channel = (c,) + (1,) * (len(xs) - 2)  # broadcasts over (N, C, ...)
    if training:
        if running_mean is not None or running_var is not None:
            value = _value(x)
            _blend(running_mean, value.mean(axis=axes), momentum)
            _blend(running_var, value.var(axis=axes) * (n / (n - 1)), momentum)
        y = primitives.standardize(x, axis=axes, eps=float(eps))
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are needed when not "
                             "training (or pass training=True to use the batch's statistics)")
        # constants of the running statistics, read where they are now (buffers move)
        dt = _float_dtype(x)
        mean = constant(functools.partial(_channel_mean, shape=per_channel, dtype=dt),
                        running_mean, name="running_mean")
        scale = constant(functools.partial(_channel_scale, shape=per_channel, dtype=dt, eps=eps),
                         running_var, name="inverse_std")
        y = (_tensor(x) - mean) * scale
    return _affine(y, weight, bias, per_channel if len(xs) > 2 else None)


def _channel_mean(mean: np.ndarray, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return mean.reshape(shape).astype(dtype)


def _channel_scale(var: np.ndarray, shape: tuple[int, ...], dtype: Any, eps: float
                   ) -> np.ndarray:
    """1/√(var + ε) per channel."""
    return (1 / np.sqrt(var.reshape(shape) + eps)).astype(dtype)


def _channel_axes(shape: tuple[int, ...], name: str, training: bool
                  ) -> tuple[tuple[int, ...], int]:
    """The axes a batch norm reduces over (all but the channels, axis 1) and their size."""
    if len(shape) < 2:
        raise ValueError(f"{name}: input must be (N, C, ...), got shape {shape}")
    axes = (0,) + tuple(range(2, len(shape)))
    n = math.prod(shape[a] for a in axes)
    if training and n <= 1:
        raise ValueError(f"{name}: expected more than 1 value per channel when training, got "
                         f"input of shape {shape}")
    return axes, n


def _blend(stat: Any, batch: np.ndarray, momentum: float) -> None:
    """stat ← (1 − momentum)·stat + momentum·batch, in place."""
    if stat is not None:
        _store(stat, _value(stat) * (1 - momentum) + batch * momentum)


def _store(stat: Tensor | np.ndarray, value: Any) -> None:
    """Write value into a statistic in place, so references to its array see it; a Tensor
    whose array a live graph holds read-only gets a new array instead."""
    if THREAD.modes.trace is not None:
        THREAD.modes.trace.refuse("a buffer write (BatchNorm's running statistics)")
    target = stat.data if isinstance(stat, Tensor) else stat
    if isinstance(stat, Tensor) and not target.flags.writeable:
        stat.data = np.array(value, dtype=target.dtype)
    else:
        np.copyto(target, value, casting="unsafe")


# --- losses -----------------------------------------------------------------------------------
_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Tensor, reduction: str, name: str, negate: bool = False) -> Tensor:
    """±loss averaged, summed or as is. The sign is folded into the mean's scale, so a loss
    costs one op fewer on the tape (small networks at batch 1 are overhead-bound)."""
    _check_reduction(reduction, name)
    if reduction == "mean":
        n = loss.size
        return loss.sum() * (((-1.0 if negate else 1.0) / n) if n else float("nan"))
    if reduction == "sum":
        return -loss.sum() if negate else loss.sum()
    return -loss if negate else loss


def _check_reduction(reduction: str, name: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _class_indices(targets: Any, n: int, c: int, logits_shape: tuple[int, ...], name: str,
                   ignore_index: int) -> np.ndarray:
    """Check that targets are N integer class indices in [0, C) or ignore_index; return them
    as an ndarray."""
    t = _value(targets)
    if t.size == 0:  # [] comes out float64; no index to check anyway
        t = t.astype(np.intp)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: targets must be integer class indices, got dtype {t.dtype} "
                        f"(shape {t.shape}); convert with .astype(int)")
    if t.shape != (n,):
        raise ValueError(f"{name}: targets must have shape (N,) = ({n},) for input of shape "
                         f"{logits_shape}, got shape {t.shape}")
    _check_targets(t, c, name, ignore_index, f"input shape {logits_shape}")
    return t


def _check_targets(t: np.ndarray, c: int, name: str, ignore_index: int, where: str) -> None:
    bad = t[((t < 0) | (t >= c)) & (t != ignore_index)]
    if bad.size:
        raise ValueError(f"{name}: target {bad[0]} is out of range for {c} classes "
                         f"({where}, targets shape {t.shape}); "
                         f"targets must lie in [0, {c}) or equal ignore_index={ignore_index}")


def _check_2d(x: Any, name: str, what: str) -> tuple[int, int]:
    shape = np.shape(_value(x))
    if len(shape) != 2:
        raise ValueError(f"{name}: {what} must have shape (N, C), got shape {shape}")
    return shape[0], shape[1]


def _class_weights(weight: Any, c: int, name: str) -> np.ndarray | None:
    if weight is None:
        return None
    if isinstance(weight, Tensor) and weight.requires_grad:
        raise TypeError(f"{name}: weight is a Tensor that requires grad, but class weights are "
                        f"constants here (as in PyTorch); pass weight.detach()")
    w = _value(weight)
    if w.dtype.kind not in "biuf" or w.shape != (c,):
        raise ValueError(f"{name}: weight must be ({c},) real numbers, one per class, got "
                         f"shape {w.shape} of dtype {w.dtype}")
    return w


def nll_loss(log_probs: Any, targets: Any, weight: Any = None, ignore_index: int = -100,
             reduction: Reduction = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Negative log-likelihood of class indices: ℓᵢ = −w[tᵢ]·log_probs[i, tᵢ].

    `log_probs` is (N, C) (for example `log_softmax(logits, axis=1)`), `targets` N integers in
    [0, C) or `ignore_index` (such rows count for nothing, also not in the mean). `weight`: C
    constants, one per class; "mean" divides by Σᵢ w[tᵢ] over the rows not ignored (by their
    count without weights), as PyTorch. With label smoothing ε, ℓᵢ = (1 − ε)·ℓᵢ − ε/C·Σ_c
    w[c]·log_probs[i, c] (PyTorch's cross_entropy; its nll_loss has no label_smoothing).
    """
    n, c = _check_2d(log_probs, "nll_loss", "log_probs")
    t = _class_indices(targets, n, c, np.shape(_value(log_probs)), "nll_loss", ignore_index)
    return _nll(_tensor(log_probs), t, weight, ignore_index, reduction, label_smoothing,
                "nll_loss")


def cross_entropy(logits: Any, targets: Any, weight: Any = None, ignore_index: int = -100,
                  reduction: Reduction = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy of class indices, stable at any logit size:
    ℓᵢ = −log softmax(zᵢ)[tᵢ] = logsumexp(zᵢ) − zᵢ[tᵢ];   ∂ℓᵢ/∂zᵢ = softmax(zᵢ) − onehot(tᵢ).
    Recorded as the fused log_softmax primitive, then the pick of each row's target and the
    reduction as nodes of their own (there is no single cross-entropy primitive).

    `logits` is (N, C); `targets` are N integers in [0, C) (an ndarray, a Tensor or a list);
    `weight`, `ignore_index`, `reduction` ("mean" over N, "sum" or "none": the N losses) and
    `label_smoothing` as in `nll_loss`, which this is on log_softmax(logits).
    """
    n, c = _check_2d(logits, "cross_entropy", "logits")
    t = _class_indices(targets, n, c, np.shape(_value(logits)), "cross_entropy", ignore_index)
    return _nll(log_softmax(logits, axis=1), t, weight, ignore_index, reduction,
                label_smoothing, "cross_entropy")


def _nll(lp: Tensor, t: np.ndarray, weight: Any, ignore_index: int, reduction: str,
         smoothing: float, name: str) -> Tensor:
    """−Σ of the picked (and smoothed) log-probabilities, reduced as PyTorch does."""
    _check_reduction(reduction, name)
    n, c = lp.shape
    w = _class_weights(weight, c, name)
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must lie in [0, 1], got {smoothing!r}")
    if w is None and not smoothing and THREAD.modes.trace is None and (t != ignore_index).all():
        return _reduce(lp[np.arange(n), t], reduction, name, negate=True)  # pick and reduce
    # What the targets decide is `constant` of them: a compiled step computes it at each call
    # (the targets are an input there), and checks their range each time as eager does.
    of_t = functools.partial(_target_terms, weight=w, ignore_index=ignore_index, c=c,
                             smoothing=smoothing, dtype=lp.dtype, name=name)
    safe = constant(functools.partial(of_t, what="safe"), t, name="safe_targets")
    rows = lp[np.arange(n), safe] * constant(functools.partial(of_t, what="rows"), t,
                                             name="row_weights")  # −ℓᵢ, 0 where ignored
    if smoothing:
        spread = constant(functools.partial(of_t, what="spread"), t, name="smoothing")
        rows = rows * (1.0 - smoothing) + (lp * spread).sum(axis=1)
    if reduction == "mean":
        return rows.sum() * constant(functools.partial(of_t, what="scale"), t, name="mean_scale")
    return _reduce(rows, reduction, name, negate=True)


def _target_terms(t: np.ndarray, weight: np.ndarray | None, ignore_index: int, c: int,
                  smoothing: float, dtype: Any, name: str, what: str) -> np.ndarray:
    """What the targets t decide in nll: the class each row picks ("safe", 0 where ignored),
    each row's weight w[tᵢ] ("rows", 0 where ignored), the smoothing term ε/C·w[c] of each row
    and class ("spread"), and −1/Σᵢ w[tᵢ] ("scale", the mean's factor; NaN if nothing counts)."""
    _check_targets(t, c, name, ignore_index, f"{name} ({len(t)} targets)")
    keep = t != ignore_index
    safe = np.where(keep, t, 0)
    if what == "safe":
        return safe
    if what == "spread":
        return ((smoothing / c) * (np.ones(c) if weight is None else weight) *
                keep[:, None]).astype(dtype)
    row_w = (np.ones(len(t)) if weight is None else weight[safe].astype(np.float64)) * keep
    if what == "rows":
        return row_w.astype(dtype)
    total = float(row_w.sum())
    return np.asarray(-1.0 / total if total else float("nan")).astype(dtype)


def _difference(pred: Any, target: Any, name: str) -> Tensor:
    """pred − target, of equal shapes: a (N, 1) prediction against a (N,) target would
    broadcast to (N, N) and silently compute something else, so it is refused."""
    ps, ts = np.shape(_value(pred)), np.shape(_value(target))
    if ps != ts:
        raise ValueError(f"{name}: pred has shape {ps} but target has shape {ts}; they must "
                         f"be equal (reshape one of them)")
    return _tensor(pred - target)


def mse_loss(pred: Any, target: Any, reduction: Reduction = "mean") -> Tensor:
    """Squared error: ℓ = (pred − target)², averaged ("mean"), summed ("sum") or elementwise."""
    d = _difference(pred, target, "mse_loss")
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(pred: Any, target: Any, reduction: Reduction = "mean") -> Tensor:
    """Absolute error: ℓ = |pred − target| (its slope at 0 is 0, as PyTorch's)."""
    return _reduce(absolute(_difference(pred, target, "l1_loss")), reduction, "l1_loss")


def _huber(d: Tensor, delta: float) -> Tensor:
    """½d² where |d| ≤ δ, else δ(|d| − ½δ), as c·(d − ½c) with c = clip(d, −δ, δ): its slope
    d̄ = c is continuous at |d| = δ."""
    c = clip(d, -delta, delta)
    return c * (d - 0.5 * c)


def huber_loss(pred: Any, target: Any, reduction: Reduction = "mean", delta: float = 1.0
               ) -> Tensor:
    """Huber loss: ℓ = ½d² where |d| ≤ δ, else δ(|d| − ½δ), for d = pred − target."""
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta!r}")
    return _reduce(_huber(_difference(pred, target, "huber_loss"), delta), reduction,
                   "huber_loss")


def smooth_l1_loss(pred: Any, target: Any, reduction: Reduction = "mean", beta: float = 1.0
                   ) -> Tensor:
    """Smooth L1: ℓ = ½d²/β where |d| < β, else |d| − ½β (the Huber loss over β); beta=0 is
    the L1 loss."""
    if not beta >= 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta!r}")
    d = _difference(pred, target, "smooth_l1_loss")
    loss = absolute(d) if beta == 0 else _huber(d, beta) * (1.0 / beta)
    return _reduce(loss, reduction, "smooth_l1_loss")


def binary_cross_entropy_with_logits(logits: Any, targets: Any, reduction: Reduction = "mean",
                                     *, weight: Any = None, pos_weight: Any = None) -> Tensor:
    """Sigmoid cross-entropy, stable at any logit size: for logit z and target y in [0, 1],
    ℓ = −[p·y·log σ(z) + (1 − y)·log(1 − σ(z))] = p·y·softplus(−z) + (1 − y)·softplus(z),
    with p = pos_weight (1 by default, broadcast along the last axis); ∂ℓ/∂z = σ(z) − y for
    p = 1. `weight` rescales each element (broadcast) before the reduction.

    Both terms are non-negative, so a small loss keeps its digits: the equal form
    (1 − y)·z + softplus(−z) loses them to cancellation when z and softplus(−z) nearly cancel.
    """
    zs, ys = np.shape(_value(logits)), np.shape(_value(targets))
    if zs != ys:
        raise ValueError(f"binary_cross_entropy_with_logits: targets of shape {ys} must have "
                         f"the logits' shape {zs}")
    z = _tensor(logits)
    y = _constant_like(targets, z)
    positive = primitives.softplus(-z, beta=1.0, threshold=math.inf) * y  # −y·log σ(z)
    if pos_weight is not None:
        positive = positive * _constant_like(pos_weight, z)
    loss = positive + primitives.softplus(z, beta=1.0, threshold=math.inf) * (1 - y)
    if weight is not None:
        loss = loss * _constant_like(weight, z)
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def _constant_like(value: Any, like: Tensor) -> Any:
    """A Tensor as it is (it may be differentiated), anything else as an array of like's dtype
    (so float32 stays float32)."""
    return value if isinstance(value, Tensor) else Tensor(value, dtype=like.dtype)
