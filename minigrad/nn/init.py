"""Initialisers: PyTorch's `torch.nn.init`, with its formulas and defaults.

Each fills a Tensor (or a writeable ndarray) in place, off the tape, and returns it:

```python
for m in model.modules():
    if isinstance(m, mg.nn.Linear):
        mg.nn.init.kaiming_normal_(m.weight, nonlinearity="relu", rng=0)
        mg.nn.init.zeros_(m.bias)
```
`rng` is an np.random.Generator, an int seed, or None for a fresh `default_rng()`. A parameter
whose array a live graph holds read-only gets a new array instead, so the graph keeps the values
its forward used.

The fans of a weight of shape (out, in, *kernel) are fan_in = in·∏kernel and
fan_out = out·∏kernel (PyTorch's layout: a Linear weight is (out_features, in_features)).
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np

from minigrad.nn.modules import _generator
from minigrad.tensor import Tensor

__all__ = [
    "calculate_gain", "constant_", "kaiming_normal_", "kaiming_uniform_", "normal_", "ones_",
    "uniform_", "xavier_normal_", "xavier_uniform_", "zeros_",
]

T = TypeVar("T", Tensor, np.ndarray)
Rng = np.random.Generator | int | None

_UNIT_GAIN = ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
              "conv_transpose2d", "conv_transpose3d")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The factor that keeps activations' variance steady through a layer followed by
    `nonlinearity`: 1 (linear, convolutions, sigmoid), 5/3 (tanh), √2 (relu),
    √(2/(1 + slope²)) (leaky_relu, slope `param`, 0.01 by default), 3/4 (selu)."""
    if nonlinearity in _UNIT_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, bool) or not isinstance(param, (int, float, np.number)):
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        else:
            slope = float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _array(tensor: Any, name: str) -> np.ndarray:
    if isinstance(tensor, Tensor):
        return tensor.data
    if isinstance(tensor, np.ndarray):
        return tensor
    raise TypeError(f"{name}: expected a Tensor or an ndarray, got {type(tensor).__name__}")


def _fill(tensor: T, values: Any) -> T:
    """Write values (broadcast to its shape, cast to its dtype) into tensor in place."""
    arr = _array(tensor, "init")
    if isinstance(tensor, Tensor) and not arr.flags.writeable:  # a live graph holds it
        tensor.data = np.array(np.broadcast_to(values, arr.shape), dtype=arr.dtype)
    else:
        np.copyto(arr, values, casting="unsafe")
    return tensor


def _random(tensor: Any, name: str) -> np.ndarray:
    arr = _array(tensor, name)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name}: can only fill floating arrays with random values, got dtype "
                        f"{arr.dtype}")
    return arr


def _fans(shape: tuple[int, ...], name: str) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"{name}: fan in and fan out need at least 2 dimensions (out, in, ...), "
                         f"got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def uniform_(tensor: T, a: float = 0.0, b: float = 1.0, rng: Rng = None) -> T:
    """Fill with values drawn from U(a, b)."""
    arr = _random(tensor, "uniform_")
    return _fill(tensor, _generator(rng).uniform(a, b, arr.shape))


def normal_(tensor: T, mean: float = 0.0, std: float = 1.0, rng: Rng = None) -> T:
    """Fill with values drawn from N(mean, std²)."""
    arr = _random(tensor, "normal_")
    if std < 0:
        raise ValueError(f"normal_: std must be non-negative, got {std}")
    return _fill(tensor, _generator(rng).normal(mean, std, arr.shape))


def constant_(tensor: T, val: float) -> T:
    """Fill with val."""
    _array(tensor, "constant_")
    return _fill(tensor, val)


def ones_(tensor: T) -> T:
    """Fill with 1."""
    return constant_(tensor, 1)


def zeros_(tensor: T) -> T:
    """Fill with 0."""
    return constant_(tensor, 0)


def xavier_uniform_(tensor: T, gain: float = 1.0, rng: Rng = None) -> T:
    """Glorot: U(−a, a) with a = gain·√(6/(fan_in + fan_out))."""
    arr = _random(tensor, "xavier_uniform_")
    fan_in, fan_out = _fans(arr.shape, "xavier_uniform_")
    if not arr.size:
        return tensor
    a = gain * math.sqrt(2.0 / (fan_in + fan_out)) * math.sqrt(3.0)
    return _fill(tensor, _generator(rng).uniform(-a, a, arr.shape))


def xavier_normal_(tensor: T, gain: float = 1.0, rng: Rng = None) -> T:
    """Glorot: N(0, std²) with std = gain·√(2/(fan_in + fan_out))."""
    arr = _random(tensor, "xavier_normal_")
    fan_in, fan_out = _fans(arr.shape, "xavier_normal_")
    if not arr.size:
        return tensor
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _fill(tensor, _generator(rng).normal(0.0, std, arr.shape))


def _kaiming_std(arr: np.ndarray, a: float, mode: str, nonlinearity: str, name: str) -> float:
    """gain/√fan, the fan of `mode` ("fan_in" keeps the forward's variance, "fan_out" the
    backward's)."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{name}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(arr.shape, name)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def kaiming_uniform_(tensor: T, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", rng: Rng = None) -> T:
    """He: U(−b, b) with b = √3·gain/√fan, gain = calculate_gain(nonlinearity, a). (With
    a = √5 this is nn.Linear's default, b = 1/√fan_in.) A tensor with no elements is left as is."""
    arr = _random(tensor, "kaiming_uniform_")
    if not arr.size:
        return tensor
    bound = math.sqrt(3.0) * _kaiming_std(arr, a, mode, nonlinearity, "kaiming_uniform_")
    return _fill(tensor, _generator(rng).uniform(-bound, bound, arr.shape))


def kaiming_normal_(tensor: T, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", rng: Rng = None) -> T:
    """He: N(0, std²) with std = gain/√fan, gain = calculate_gain(nonlinearity, a)."""
    arr = _random(tensor, "kaiming_normal_")
    if not arr.size:
        return tensor
    std = _kaiming_std(arr, a, mode, nonlinearity, "kaiming_normal_")
    return _fill(tensor, _generator(rng).normal(0.0, std, arr.shape))
