"""Networks: `Module` and layers (`modules`), stateless layers and losses (`functional`),
gradient clipping (`utils`). Names and checkpoint layouts follow PyTorch's `torch.nn`."""

from minigrad.nn import functional, utils
from minigrad.nn.modules import (
    Identity,
    IncompatibleKeys,
    Linear,
    LogSoftmax,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
)

__all__ = [
    "Identity", "IncompatibleKeys", "Linear", "LogSoftmax", "Module", "ReLU", "Sequential",
    "Sigmoid", "Softmax", "Tanh", "functional", "utils",
]
