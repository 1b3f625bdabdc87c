"""minigrad: a small reverse-mode automatic-differentiation engine on NumPy.

Read in this order: `tensor.py` (the tape and the reverse sweep), `ops.py` (every primitive and
its VJP, one table), `functions.py` (the public functions' argument handling), `transforms.py`
(grad, vjp, jvp, jacobian, hessian, gradcheck), then `nn`, `optim`, `serialization`.
"""

from minigrad.debug import draw, tape, to_dot
from minigrad.function import Function, FunctionCtx
from minigrad.functions import (
    abs,
    argmax,
    argmin,
    broadcast_to,
    clip,
    concatenate,
    exp,
    expand_dims,
    linear,
    log,
    log_softmax,
    logsumexp,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    relu,
    reshape,
    sigmoid,
    softmax,
    sqrt,
    squeeze,
    stack,
    sum,
    swapaxes,
    tanh,
    transpose,
    where,
)
from minigrad.tensor import (
    Tensor,
    detect_anomaly,
    enable_grad,
    is_grad_enabled,
    no_grad,
    ones,
    tensor,
    zeros,
)
from minigrad.transforms import (
    GradcheckError,
    grad,
    gradcheck,
    hessian,
    hvp,
    jacobian,
    jvp,
    value_and_grad,
    vjp,
)

__version__ = "0.1.0"

__all__ = [
    "Function", "FunctionCtx", "GradcheckError", "Tensor", "abs", "argmax", "argmin",
    "broadcast_to", "clip", "concatenate", "detect_anomaly", "enable_grad", "exp", "expand_dims",
    "grad", "gradcheck", "linear", "hessian", "hvp", "is_grad_enabled", "jacobian", "jvp", "log",
    "log_softmax", "logsumexp", "matmul", "max", "maximum", "mean", "min", "minimum", "no_grad",
    "ones", "relu", "reshape", "sigmoid", "softmax", "sqrt", "squeeze", "stack", "sum",
    "swapaxes", "tanh", "tensor", "transpose", "value_and_grad", "vjp", "where", "zeros",
    "draw", "tape", "to_dot",  # study tools (debug.py)
]

# Networks, optimizers and checkpoints are built on the engine above, so they come last.
from minigrad import nn, optim  # noqa: E402
from minigrad.serialization import load, save  # noqa: E402

__all__ += ["load", "nn", "optim", "save"]
