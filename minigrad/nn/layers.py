"""Layers beyond Linear, each a thin Module over `functional`: PyTorch's names, arguments,
defaults, parameter names and layouts, and default initialisation, so a `state_dict` moves
between the two unchanged.

`rng` is an np.random.Generator or an int seed wherever randomness is drawn (None: a fresh
`default_rng()`). Layers that behave differently while training (Dropout, BatchNorm) read the
module's `training` flag, set by `train()` and `eval()`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigrad.functions import reshape
from minigrad.nn import functional as F  # noqa: N812  (PyTorch's spelling)
from minigrad.nn.modules import Module, _generator
from minigrad.tensor import Tensor

__all__ = [
    "BatchNorm1d", "BatchNorm2d", "Dropout", "ELU", "Embedding", "Flatten", "GELU", "LayerNorm",
    "LeakyReLU", "SiLU", "Softplus",
]


def _float_dtype(dtype: Any, name: str) -> np.dtype[Any]:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"{name}: dtype must be floating, got {dt}")
    return dt


def _size(n: Any, what: str, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name}: {what} must be a non-negative integer, got {n!r}")
    return int(n)


# --- activations ------------------------------------------------------------------------------
class LeakyReLU(Module):
    """y = x where x > 0, else negative_slope·x."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.training = True
        self.negative_slope = negative_slope

    def forward(self, x: Any) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    """y = x·Φ(x), Φ the standard normal CDF (approximate="tanh": its tanh form)."""

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.training = True
        self.approximate = approximate

    def forward(self, x: Any) -> Tensor:
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """y = x·σ(x)."""

    def forward(self, x: Any) -> Tensor:
        return F.silu(x)


class ELU(Module):
    """y = x where x > 0, else α(eˣ − 1)."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.training = True
        self.alpha = alpha

    def forward(self, x: Any) -> Tensor:
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softplus(Module):
    """y = log(1 + e^(βx))/β, and y = x where βx > threshold."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        self.training = True
        self.beta = beta
        self.threshold = threshold

    def forward(self, x: Any) -> Tensor:
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


# --- shape ------------------------------------------------------------------------------------
class Flatten(Module):
    """Axes start_dim … end_dim (inclusive) merged into one; by default all but the batch axis."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        self.training = True
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: Any) -> Tensor:
        shape = np.shape(x.data if isinstance(x, Tensor) else x)
        nd = max(len(shape), 1)  # a 0-d input counts as 1-d, as in PyTorch
        for what, d in (("start_dim", self.start_dim), ("end_dim", self.end_dim)):
            if not -nd <= d < nd:
                raise ValueError(f"Flatten: {what}={d} is out of range for an input of shape "
                                 f"{shape}")
        s, e = self.start_dim % nd, self.end_dim % nd
        if s > e:
            raise ValueError(f"Flatten: start_dim={self.start_dim} comes after "
                             f"end_dim={self.end_dim} for an input of shape {shape}")
        merged = int(np.prod(shape[s:e + 1]))
        return reshape(x, shape[:s] + (merged,) + shape[e + 1:] if shape else (1,))

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# --- regularisation ---------------------------------------------------------------------------
class Dropout(Module):
    """While training, zero each element with probability p and scale the rest by 1/(1 − p);
    in eval mode, y = x. Draws from its own generator, made from `rng` once."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | int | None = None) -> None:
        self.training = True
        self.p = F._probability(p, "Dropout")
        self.rng = _generator(rng)

    def forward(self, x: Any) -> Tensor:
        return F.dropout(x, self.p, self.training, self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --- lookup -----------------------------------------------------------------------------------
class Embedding(Module):
    """A table of num_embeddings vectors of size embedding_dim: `weight`, initialised N(0, 1) as
    in PyTorch (the padding_idx row, if given, zeros and never trained). Input: integer indices
    of any shape; output: their rows, shape idx.shape + (embedding_dim,)."""

    def __init__(self, num_embeddings: int, embedding_dim: int,
                 rng: np.random.Generator | int | None = None, *,
                 padding_idx: int | None = None, dtype: Any = np.float64) -> None:
        n = _size(num_embeddings, "num_embeddings", "Embedding")
        d = _size(embedding_dim, "embedding_dim", "Embedding")
        dt = _float_dtype(dtype, "Embedding")
        self.training = True
        self.num_embeddings, self.embedding_dim = n, d
        self.padding_idx = None if padding_idx is None else F._padding_index(
            padding_idx, n, "Embedding")
        w = _generator(rng).standard_normal((n, d)).astype(dt)
        if self.padding_idx is not None:
            w[self.padding_idx] = 0
        self.weight = Tensor(w, requires_grad=True)

    def forward(self, idx: Any) -> Tensor:
        return F.embedding(idx, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


# --- normalisation ----------------------------------------------------------------------------
class LayerNorm(Module):
    """Standardise over the trailing `normalized_shape` axes of each sample, then ·weight + bias
    (ones and zeros of normalized_shape, when elementwise_affine)."""

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True,
                 dtype: Any = np.float64) -> None:
        dt = _float_dtype(dtype, "LayerNorm")
        self.training = True
        self.normalized_shape = F._shape_tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight: Tensor | None = None
        self.bias: Tensor | None = None
        if elementwise_affine:
            self.weight = Tensor(np.ones(self.normalized_shape, dt), requires_grad=True)
            if bias:
                self.bias = Tensor(np.zeros(self.normalized_shape, dt), requires_grad=True)

    def forward(self, x: Any) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class _BatchNorm(Module):
    """BatchNorm over axis 1 (channels): batch statistics while training, which also move the
    running statistics (buffers `running_mean`, `running_var`, `num_batches_tracked`); in eval
    mode, the running statistics. momentum=None: their cumulative average instead of an
    exponential one. track_running_stats=False: no running statistics, batch statistics always.
    affine: learn `weight` (ones) and, unless bias=False, `bias` (zeros) per channel."""

    _ndims: tuple[int, ...] = ()
    _layout = ""
    running_mean: Tensor | None
    running_var: Tensor | None
    num_batches_tracked: Tensor | None

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: Any = np.float64, *, bias: bool = True) -> None:
        name = type(self).__name__
        c = _size(num_features, "num_features", name)
        dt = _float_dtype(dtype, name)
        self.training = True
        self.num_features, self.eps, self.momentum = c, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Tensor(np.ones(c, dt), requires_grad=True) if affine else None
        self.bias = Tensor(np.zeros(c, dt), requires_grad=True) if affine and bias else None
        tracked = track_running_stats
        self.register_buffer("running_mean", np.zeros(c, dt) if tracked else None)
        self.register_buffer("running_var", np.ones(c, dt) if tracked else None)
        self.register_buffer("num_batches_tracked", np.array(0, np.int64) if tracked else None)

    def forward(self, x: Any) -> Tensor:
        shape = np.shape(x.data if isinstance(x, Tensor) else x)
        name = type(self).__name__
        if len(shape) not in self._ndims or shape[1] != self.num_features:
            raise ValueError(f"{name}({self.num_features}): expected input of shape "
                             f"{self._layout} with C={self.num_features}, got shape {shape}")
        F._channel_axes(shape, name, self.training)  # checked before any statistic moves
        factor = 0.0 if self.momentum is None else self.momentum
        count = self.num_batches_tracked
        if self.training and self.track_running_stats and count is not None:
            F._store(count, count.data + 1)
            if self.momentum is None:  # the cumulative average over the batches seen
                factor = 1.0 / float(count.data)
        use_running = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if use_running else None,
                            self.running_var if use_running else None, self.weight, self.bias,
                            self.training or self.running_mean is None, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs, per channel C."""

    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs, per channel C."""

    _ndims = (4,)
    _layout = "(N, C, H, W)"
