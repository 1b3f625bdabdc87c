"""A custom primitive with mg.Function, checked with mg.gradcheck.

softplus(x) = log(1 + eˣ) is a smooth relu. Written the obvious way, `(1 + x.exp()).log()`, it
overflows for x > 709 (eˣ = inf) and loses everything below 1e-16 for x < -37 (1 + eˣ rounds
to 1). As one primitive we choose the stable forms ourselves:

    forward:   y = max(x, 0) + log1p(e^−|x|)     e^−|x| ≤ 1: never overflows
    backward:  x̄ = ḡ · sigmoid(x), with e = e^−|x|:  1/(1 + e) for x ≥ 0, e/(1 + e) for x < 0
               (again no exp of a large number, and tiny slopes like sigmoid(−40) survive)

and the tape stores one node instead of four. Then `mg.gradcheck` compares the backward with
central differences in float64, and catches a backward with a sign slip.

    python examples/custom_function.py
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import numpy as np

import minigrad as mg


def stable_sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


class Softplus(mg.Function):
    """y = log(1 + eˣ);  x̄ = ḡ·sigmoid(x)"""

    @staticmethod
    def forward(ctx: mg.FunctionCtx, x: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(x)  # the backward needs x, nothing else
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))

    @staticmethod
    def backward(ctx: mg.FunctionCtx, grad: np.ndarray) -> np.ndarray:
        (x,) = ctx.saved
        return grad * stable_sigmoid(x)


class SoftplusWithABug(Softplus):
    """The same forward; the backward uses sigmoid(−x), a slip that still 'looks right'
    (values in (0, 1), exact at x = 0)."""

    @staticmethod
    def backward(ctx: mg.FunctionCtx, grad: np.ndarray) -> np.ndarray:
        (x,) = ctx.saved
        return grad * stable_sigmoid(-x)


def softplus(x: mg.Tensor) -> mg.Tensor:
    return Softplus.apply(x)


class Parser(argparse.ArgumentParser):
    """A mistake on the command line ends in one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    Parser(prog="custom_function.py", description=__doc__,
           formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)  # only --help
    try:
        demo()
    except KeyboardInterrupt:
        print("custom_function.py: interrupted", file=sys.stderr)
        return 130
    return 0


def demo() -> None:
    x = mg.tensor([-1000.0, -40.0, -1.0, 0.0, 1.0, 40.0, 1000.0], requires_grad=True)

    with np.errstate(over="ignore"):
        naive_values = np.log(1 + np.exp(x.numpy()))
    y = softplus(x)
    y.sum().backward()
    print("x                 ", x.numpy())
    print("naive log(1 + eˣ) ", naive_values)
    print("Softplus.apply(x) ", y.numpy())
    print("its gradient      ", x.grad)

    print("\nWhat the tape recorded: one node for Softplus (a Function keeps its input and")
    print("output for the backward, and whatever ctx.save_for_backward got; here x itself):")
    print(mg.tape(softplus(x).sum(), names={"x": x}))

    # gradcheck: every derivative from the backward vs a central difference, in float64.
    points = mg.tensor(np.linspace(-6, 6, 13))
    print("\nmg.gradcheck(Softplus.apply, points):", mg.gradcheck(Softplus.apply, points))
    try:
        mg.gradcheck(SoftplusWithABug.apply, points)
    except mg.GradcheckError as e:
        print("mg.gradcheck(SoftplusWithABug.apply, points) raised GradcheckError:")
        print("   ", e)
    else:
        raise SystemExit("gradcheck should have caught the wrong backward")


if __name__ == "__main__":
    sys.exit(main())
