"""minigrad: a small reverse-mode automatic-differentiation engine on NumPy.

Read in this order: `graph.py` (recording and the reverse sweep) with `rules.py` (every
primitive and its VJP, one table), then `functions.py` (argument handling), `tensor.py` (the
operators and methods, one line each), `transforms.py` (grad, vjp, jvp, jacobian, hessian,
gradcheck), then `nn`, `optim`, `serialization`. `kernels.py` holds the speed-only code,
`readonly.py` the in-place guard, `modes.py` the per-thread switches.
"""

from minigrad.compile import CompileError, compile  # noqa: A004  (JAX's and PyTorch's name)
from minigrad.debug import draw, tape, to_dot
from minigrad.function import Function, FunctionCtx
from minigrad.functions import (
    argmax,
    argmin,
    broadcast_to,
    clip,
    concatenate,
    expand_dims,
    flatten,
    linear,
    log_softmax,
    logsumexp,
    matmul,
    max,
    mean,
    min,
    pad,
    reshape,
    softmax,
    split,
    squeeze,
    stack,
    std,
    sum,
    swapaxes,
    transpose,
    unbind,
    var,
    where,
)
from minigrad.graph import ShapeMismatchError
from minigrad.modes import detect_anomaly, enable_grad, is_grad_enabled, no_grad
from minigrad.rules import (
    Primitive,
    add,
    cos,
    divide,
    exp,
    expm1,
    log,
    log1p,
    maximum,
    minimum,
    multiply,
    negative,
    power,
    primitive,
    relu,
    sigmoid,
    sin,
    sqrt,
    square,
    subtract,
    tanh,
)
from minigrad.rules import absolute as abs  # noqa: A004  (NumPy's and PyTorch's name)
from minigrad.tensor import Tensor, ones, tensor, zeros
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
    "Function", "FunctionCtx", "GradcheckError", "Primitive", "ShapeMismatchError", "Tensor",
    "abs", "add", "argmax", "argmin", "broadcast_to", "clip", "concatenate", "cos",
    "detect_anomaly", "divide", "enable_grad", "exp", "expand_dims", "expm1", "flatten", "grad",
    "gradcheck", "hessian", "hvp", "is_grad_enabled", "jacobian", "jvp", "linear", "log",
    "log1p", "log_softmax", "logsumexp", "matmul", "max", "maximum", "mean", "min", "minimum",
    "multiply", "negative", "no_grad", "ones", "pad", "power", "primitive", "relu", "reshape",
    "sigmoid", "sin", "softmax", "split", "sqrt", "square", "squeeze", "stack", "std",
    "subtract", "sum", "swapaxes", "tanh", "tensor", "transpose", "unbind", "value_and_grad",
    "var", "vjp", "where", "zeros",
    "draw", "tape", "to_dot",  # study tools (debug.py)
    "CompileError", "compile",
]

# Networks, optimizers and checkpoints are built on the engine above, so they come last.
from minigrad import nn, optim  # noqa: E402
from minigrad.serialization import load, save  # noqa: E402

__all__ += ["load", "nn", "optim", "save"]
