"""Gradient utilities for training loops."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from minigrad.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0) -> float:
    """Scale all gradients together so that their joint norm is at most `max_norm`.

    total = ‖(‖g₁‖, ‖g₂‖, …)‖ (the norm of all gradients as one vector); if total > max_norm,
    every g is multiplied in place by max_norm / (total + 1e-6), as PyTorch does. Parameters
    whose grad is None are skipped. Returns the total norm before clipping, as a float.
    `norm_type` may be any p ≥ 1 or `math.inf` (the largest |g|).
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    p = float(norm_type)
    if p == math.inf:
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    elif p == 2.0:
        total = math.sqrt(sum(float(np.vdot(g, g).real) for g in grads))
    else:
        total = sum(float(np.sum(np.abs(g) ** p)) for g in grads) ** (1.0 / p)
    coef = float(max_norm) / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= np.asarray(coef, dtype=g.dtype)
    return total


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clip every gradient, in place, elementwise to [−clip_value, clip_value], as PyTorch does.

    Parameters whose grad is None are skipped; NaN stays NaN. `clip_value` must be a finite
    number >= 0.
    """
    c = _real_number("clip_grad_value_", "clip_value", clip_value)
    if not 0.0 <= c < math.inf:
        raise ValueError(f"clip_grad_value_: clip_value must be a finite number >= 0, got "
                         f"{clip_value!r}")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for p in params:
        if p.grad is not None:
            np.clip(p.grad, -c, c, out=p.grad)


def _real_number(op: str, key: str, value: object) -> float:
    """value as a float when it is one real number (a bool is not), else TypeError."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_)):
        return float(value)
    raise TypeError(f"{op}: {key} must be a real number, got {type(value).__name__} {value!r}")
