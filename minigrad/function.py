"""Custom primitives, PyTorch's shape: subclass `Function`, write `forward` and `backward` on
ndarrays, call `MyOp.apply(*tensors)`. Check the backward with `mg.gradcheck`.

Custom Functions are first-order: their backward runs on plain arrays. If a transform tries to
differentiate through that backward (grad of grad), it raises instead of returning a wrong zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad.graph import TensorBase, apply
from minigrad.rules import Primitive

if TYPE_CHECKING:
    from minigrad.tensor import Tensor


class FunctionCtx:
    """Carries what forward saves for backward."""

    __slots__ = ("saved", "extra")

    def __init__(self) -> None:
        self.saved: tuple[np.ndarray, ...] = ()
        self.extra: dict[str, Any] = {}

    def save_for_backward(self, *arrays: np.ndarray) -> None:
        self.saved = arrays


def _refuse(g: Any, y: Any, *args: Any, value: Any, name: str) -> Any:
    raise RuntimeError(f"{name} is a custom mg.Function and is first-order only: its backward "
                       f"cannot be differentiated again (grad of grad, hessian, jvp)")


# Its inputs are the upstream and the Function's own inputs: the backward's result depends on
# both, so differentiating it along either path must reach this node and raise, never give 0.
_first_order_only = Primitive("first_order_only", lambda *args, value, name: value,
                              vjp_all=_refuse,
                              math="a custom Function's backward result (not differentiable)")


class Function:
    """Subclass with `forward(ctx, *arrays) -> ndarray` and `backward(ctx, grad) -> grads`
    (one per input, None for none) as static methods; use `Op.apply(*tensors)`."""

    @staticmethod
    def forward(ctx: FunctionCtx, *arrays: Any) -> np.ndarray:
        # `*arrays: Any` lets a subclass's `forward(ctx, x)`, with its own inputs, type-check.
        raise NotImplementedError

    @staticmethod
    def backward(ctx: FunctionCtx, grad: np.ndarray) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *tensors: Any) -> Tensor:
        prim = cls.__dict__.get("_primitive")
        if prim is None:
            # The output is copied: a forward may return an array it keeps and writes again.
            prim = Primitive(cls.__name__, lambda *xs, ctx: np.array(cls.forward(ctx, *xs)),
                             vjp_all=lambda g, y, *xs, ctx: cls._vjp(ctx, g, xs),
                             reads="xy", math=(cls.__doc__ or "custom Function").strip())
            cls._primitive = prim  # type: ignore[attr-defined]
        return apply(prim, *tensors, ctx=FunctionCtx())

    @classmethod
    def _vjp(cls, ctx: FunctionCtx, g: Any, xs: tuple[Any, ...]) -> tuple[Any, ...]:
        # On the tape (a transform asked for higher order), g and the inputs are Tensors.
        recorded = isinstance(g, TensorBase) or any(isinstance(x, TensorBase) for x in xs)
        grads = cls.backward(ctx, g._data if isinstance(g, TensorBase) else g)
        if not isinstance(grads, tuple):
            grads = (grads,)
        if len(grads) != len(xs):
            raise RuntimeError(f"{cls.__name__}.backward returned {len(grads)} gradients for "
                               f"{len(xs)} inputs; return one per input (None for none)")
        grads = tuple(None if gi is None else np.asarray(gi) for gi in grads)
        if recorded:
            return tuple(None if gi is None else
                         apply(_first_order_only, g, *xs, value=gi, name=cls.__name__)
                         for gi in grads)
        return grads
