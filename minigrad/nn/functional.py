"""Stateless layers and losses, built from the engine's public ops (PyTorch's names).

The losses are written on `log_softmax`, which never forms softmax and then takes its log: at
logits of ±1e4, or in float32, softmax underflows to 0 and log(0) = −inf, while
log_softmax(z) = z − max z − log Σ e^(z − max z) stays finite.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from minigrad.functions import linear, log_softmax, softmax
from minigrad.rules import relu, sigmoid, tanh
from minigrad.tensor import Tensor

__all__ = [
    "cross_entropy", "linear", "log_softmax", "mse_loss", "nll_loss", "relu", "sigmoid", "softmax",
    "tanh",
]

Reduction = Literal["mean", "sum", "none"]


def _reduce(loss: Tensor, reduction: str, name: str, negate: bool = False) -> Tensor:
    """±loss averaged, summed or as is. The sign is folded into the mean's scale, so a loss
    costs one op fewer on the tape (small networks at batch 1 are overhead-bound)."""
    if reduction == "mean":
        n = loss.size
        return loss.sum() * (((-1.0 if negate else 1.0) / n) if n else float("nan"))
    if reduction == "sum":
        return -loss.sum() if negate else loss.sum()
    if reduction == "none":
        return -loss if negate else loss
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _class_indices(targets: Any, n: int, c: int, logits_shape: tuple[int, ...],
                   name: str) -> np.ndarray:
    """Check that targets are N integer class indices in [0, C); return them as an ndarray."""
    t = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if t.size == 0:  # [] comes out float64; no index to check anyway
        t = t.astype(np.intp)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: targets must be integer class indices, got dtype {t.dtype} "
                        f"(shape {t.shape}); convert with .astype(int)")
    if t.shape != (n,):
        raise ValueError(f"{name}: targets must have shape (N,) = ({n},) for input of shape "
                         f"{logits_shape}, got shape {t.shape}")
    if n and (t.min() < 0 or t.max() >= c):
        bad = t[(t < 0) | (t >= c)]
        raise ValueError(f"{name}: target {bad[0]} is out of range for {c} classes "
                         f"(input shape {logits_shape}, targets shape {t.shape}); "
                         f"targets must lie in [0, {c})")
    return t


def _check_2d(x: Any, name: str, what: str) -> tuple[int, int]:
    shape = np.shape(x)
    if len(shape) != 2:
        raise ValueError(f"{name}: {what} must have shape (N, C), got shape {shape}")
    return shape[0], shape[1]


def nll_loss(log_probs: Any, targets: Any, reduction: Reduction = "mean") -> Tensor:
    """Negative log-likelihood of class indices: ℓᵢ = −log_probs[i, targets[i]].

    `log_probs` is (N, C) (for example `log_softmax(logits, axis=1)`), `targets` N integers in
    [0, C). The gradient with respect to log_probs is −1 at each target, 0 elsewhere.
    """
    n, c = _check_2d(log_probs, "nll_loss", "log_probs")
    t = _class_indices(targets, n, c, np.shape(log_probs), "nll_loss")
    lp = log_probs if isinstance(log_probs, Tensor) else Tensor(log_probs)
    return _reduce(lp[np.arange(n), t], reduction, "nll_loss", negate=True)


def cross_entropy(logits: Any, targets: Any, reduction: Reduction = "mean") -> Tensor:
    """Softmax cross-entropy of class indices, stable at any logit size:
    ℓᵢ = −log softmax(zᵢ)[tᵢ] = logsumexp(zᵢ) − zᵢ[tᵢ];   ∂ℓᵢ/∂zᵢ = softmax(zᵢ) − onehot(tᵢ).
    Recorded as the fused log_softmax primitive, then the pick of each row's target and the
    reduction as nodes of their own (there is no single cross-entropy primitive).

    `logits` is (N, C); `targets` are N integers in [0, C) (an ndarray, a Tensor or a list);
    `reduction` is "mean" (over N), "sum" or "none" (the N losses).
    """
    n, c = _check_2d(logits, "cross_entropy", "logits")
    t = _class_indices(targets, n, c, np.shape(logits), "cross_entropy")
    picked = log_softmax(logits, axis=1)[np.arange(n), t]
    return _reduce(picked, reduction, "cross_entropy", negate=True)


def mse_loss(pred: Any, target: Any, reduction: Reduction = "mean") -> Tensor:
    """Squared error: ℓ = (pred − target)², averaged ("mean"), summed ("sum") or elementwise.

    The shapes must be equal: a (N, 1) prediction against a (N,) target would broadcast to
    (N, N) and silently compute something else, so it is refused.
    """
    ps, ts = np.shape(pred), np.shape(target)
    if ps != ts:
        raise ValueError(f"mse_loss: pred has shape {ps} but target has shape {ts}; they must "
                         f"be equal (reshape one of them)")
    diff = pred - target
    if not isinstance(diff, Tensor):
        diff = Tensor(diff)
    return _reduce(diff * diff, reduction, "mse_loss")
