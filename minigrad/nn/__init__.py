"""Networks: `Module`, Linear and Sequential (`modules`), the other layers (`layers`), stateless
layers and losses (`functional`), initialisers (`init`), gradient clipping (`utils`). Names and
checkpoint layouts follow PyTorch's `torch.nn`."""

from minigrad.nn import functional, init, utils
from minigrad.nn.convolution import Conv2d, MaxPool2d
from minigrad.nn.layers import (
    ELU,
    GELU,
    BatchNorm1d,
    BatchNorm2d,
    Dropout,
    Embedding,
    Flatten,
    LayerNorm,
    LeakyReLU,
    SiLU,
    Softplus,
)
from minigrad.nn.modules import (
    Identity,
    IncompatibleKeys,
    Linear,
    LinearReLU,
    LogSoftmax,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
)

__all__ = [
    "Identity", "IncompatibleKeys", "Linear", "LinearReLU", "LogSoftmax", "Module", "ReLU",
    "Sequential", "Sigmoid", "Softmax", "Tanh", "functional", "utils",
]
__all__ += ["Conv2d", "MaxPool2d"]  # nn/convolution.py
__all__ += [  # nn/layers.py, nn/init.py
    "BatchNorm1d", "BatchNorm2d", "Dropout", "ELU", "Embedding", "Flatten", "GELU", "LayerNorm",
    "LeakyReLU", "SiLU", "Softplus", "init",
]
