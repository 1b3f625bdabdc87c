"""Gradient utilities for training loops."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from minigrad.tensor import Tensor

__all__ = ["clip_grad_norm_"]


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
