"""The least an eager NumPy tape can do: the "bare" row of W0–W3.

A value, its gradient, its parents and a backward closure per node; a depth-first topological
sort; gradients summed into the parents. Nothing else: no shape or dtype checks, no broadcasting
rules, no locks against in-place changes, no freeing, no error messages, no modules. It records
the same ops as the minigrad workloads, one node each, so the gap between this row and
minigrad's is the price of minigrad's safety and generality, and the gap between this row and
the NumPy floor is the price of taping at all in Python. Not a library: a measuring stick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class Node:
    __slots__ = ("value", "grad", "parents", "back")

    def __init__(self, value: Any, parents: tuple[Node, ...] = (),
                 back: Callable[[Any], None] | None = None) -> None:
        self.value, self.grad, self.parents, self.back = value, None, parents, back


def _add_grad(t: Node, g: Any) -> None:
    t.grad = g if t.grad is None else t.grad + g


def scale(x: Node, c: Any) -> Node:
    out = Node(x.value * c, (x,))
    out.back = lambda g: _add_grad(x, g * c)
    return out


def shift(x: Node, c: Any) -> Node:
    out = Node(x.value + c, (x,))
    out.back = lambda g: _add_grad(x, g)
    return out


def neg(x: Node) -> Node:
    out = Node(-x.value, (x,))
    out.back = lambda g: _add_grad(x, -g)
    return out


def tanh(x: Node) -> Node:
    y = np.tanh(x.value)
    out = Node(y, (x,))
    out.back = lambda g: _add_grad(x, g * (1 - y * y))
    return out


def total(x: Node) -> Node:
    out = Node(x.value.sum(), (x,))
    out.back = lambda g: _add_grad(x, np.full(x.value.shape, g))
    return out


def mean(x: Node) -> Node:
    n = x.value.size
    out = Node(x.value.sum() / n, (x,))
    out.back = lambda g: _add_grad(x, np.full(x.value.shape, g / n))
    return out


def linear(x: Node, w: Node, b: Node) -> Node:
    """x Wᵀ + b, W in PyTorch's (out, in) layout; x gets a gradient only when it is an op output."""
    out = Node(x.value @ w.value.T + b.value, (x, w, b))

    def back(g: Any) -> None:
        if x.back is not None:
            _add_grad(x, g @ w.value)
        _add_grad(w, g.T @ x.value)
        _add_grad(b, g.sum(axis=0))
    out.back = back
    return out


def relu(x: Node) -> Node:
    y = np.maximum(x.value, 0)
    out = Node(y, (x,))
    out.back = lambda g: _add_grad(x, g * (y > 0))
    return out


def log_softmax(x: Node) -> Node:
    z = x.value - x.value.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    out = Node(z, (x,))
    out.back = lambda g: _add_grad(x, g - np.exp(z) * g.sum(axis=1, keepdims=True))
    return out


def pick(x: Node, index: Any) -> Node:
    out = Node(x.value[index], (x,))

    def back(g: Any) -> None:
        gx = np.zeros_like(x.value)
        gx[index] = g  # the workloads pick each element at most once
        _add_grad(x, gx)
    out.back = back
    return out


def backward(root: Node) -> None:
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
        elif id(t) not in seen:
            seen.add(id(t))
            stack.append((t, True))
            stack.extend((p, False) for p in t.parents if p.back is not None)
    root.grad = np.ones_like(root.value)
    for t in reversed(order):
        assert t.back is not None
        t.back(t.grad)
        t.grad = None
