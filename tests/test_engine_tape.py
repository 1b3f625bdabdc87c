"""The tape: records and the reverse sweep. Leaf grads that never alias, deep graphs without
recursion, each VJP run once, flat memory over a long training loop, intermediates freed after
backward, and plain backward() running the rules on ndarrays. (What the tape saved and in-place
writes: test_inplace.py.)"""

from __future__ import annotations

import copy
import gc
import tracemalloc
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import minigrad as mg
from minigrad import graph, readonly


# --------------------------------------------------------------------------------------------
# Records: subclasses, copies, nested sweeps
# --------------------------------------------------------------------------------------------
def test_a_tensor_subclass_is_recorded() -> None:
    class Named(mg.Tensor):
        __slots__ = ("label",)

    x = Named([1.0, 2.0], requires_grad=True)
    (x * x + 2.0 * x).sum().backward()
    np.testing.assert_allclose(x.grad, [4.0, 6.0])


def test_copy_of_an_op_output_never_shares_its_record() -> None:
    """copy.copy of an op output is a recorded view of it: backward through the copy frees
    the original's node too, so a later backward through the original raises instead of
    reading saved arrays that were unlocked (and possibly changed) in between."""
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    c = copy.copy(y)
    c.sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])
    x.data[...] = [10.0, 20.0]
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.sum().backward()
    both = x * 3.0
    (copy.copy(both).sum() + both.sum()).backward()
    leaf = copy.copy(x)
    assert leaf.requires_grad and leaf.data is x.data


def test_a_backward_inside_a_vjp_keeps_its_gradients_apart() -> None:
    """A custom backward may run backward() on part of the graph being swept; each sweep keeps
    its pending gradients to itself."""
    box: dict[str, Any] = {}

    class Probe(mg.Function):
        @staticmethod
        def forward(ctx: Any, a: np.ndarray) -> np.ndarray:
            return a * 1.0

        @staticmethod
        def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
            with mg.enable_grad():
                aux = (box["h"] * box["h"]).sum()
            aux.backward(retain_graph=True)
            return g

    def f(x: Any) -> Any:
        h = x * 3.0
        box["h"] = h
        return (Probe.apply(h) + h).sum()

    np.testing.assert_allclose(mg.grad(f)(np.array([1.0, 2.0])), [6.0, 6.0])


def test_zero_grad_with_an_attribute_named_like_an_internal() -> None:
    class M(mg.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._values = np.ones(3)
            self._member_values = [1, 2]
            self.lin = mg.nn.Linear(2, 2)

        def forward(self, x: Any) -> Any:
            return self.lin(x)

    m = M()
    m(mg.tensor([[1.0, 2.0]])).sum().backward()
    m.zero_grad()
    assert m.lin.weight.grad is None

# --------------------------------------------------------------------------------------------
# Leaf grads never alias each other, the upstream, or anything the tape holds
# --------------------------------------------------------------------------------------------
ALIAS_CASES: list[tuple[str, Callable[[mg.Tensor, mg.Tensor], mg.Tensor]]] = [
    ("a + b", lambda a, b: a + b),
    ("a - b", lambda a, b: a - b),
    ("a + b broadcast", lambda a, b: a + b[0]),
    ("sum(a + b)", lambda a, b: (a + b).sum()),
    ("stack", lambda a, b: mg.stack([a, b])),
    ("concatenate", lambda a, b: mg.concatenate([a, b])),
    ("where", lambda a, b: mg.where(np.array([True, False]), a, b)),
    ("a + a + b", lambda a, b: a + a + b),
    ("reshape", lambda a, b: a.reshape(2, 1) + b.reshape(2, 1)),
    ("identity leaf", lambda a, b: a),
]


@pytest.mark.parametrize("name,fn", ALIAS_CASES, ids=[n for n, _ in ALIAS_CASES])
def test_leaf_grads_never_alias(name: str, fn: Any) -> None:
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    b = mg.tensor([3.0, 4.0], requires_grad=True)
    y = fn(a, b)
    up = np.ones(y.shape)
    y.backward(up)
    grads = [g for g in (a.grad, b.grad) if g is not None]
    snapshot = [g.copy() for g in grads]
    for g in grads:
        assert g.flags.writeable and g.base is None
        assert not np.shares_memory(g, up)
    grads[0] *= 7.0  # what an optimizer or clip_grad_norm_ does
    if len(grads) == 2:
        assert not np.shares_memory(grads[0], grads[1])
        np.testing.assert_array_equal(grads[1], snapshot[1])
    up[...] = -1.0
    np.testing.assert_array_equal(grads[0], snapshot[0] * 7.0)


def test_transform_results_never_alias() -> None:
    gx, gy = mg.grad(lambda a, b: a + b, argnums=(0, 1))(1.0, 2.0)  # type: ignore[misc]
    gx.data += 1.0
    assert gy.item() == 1.0
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    u = np.array([1.0, 1.0])
    out, vjp_fn = mg.vjp(lambda a, b: a + b, x, y)
    g1, g2 = vjp_fn(u)
    assert not np.shares_memory(g1.data, g2.data) and not np.shares_memory(g1.data, u)
    _, (p, q) = mg.value_and_grad(lambda a, b: (a - b).sum(), argnums=(0, 1))(x, y)
    assert not np.shares_memory(p.data, q.data)


# --------------------------------------------------------------------------------------------
# Deep graphs
# --------------------------------------------------------------------------------------------
N_DEEP = 100_000


def test_backward_through_a_100k_op_chain() -> None:
    x = mg.tensor(0.5, requires_grad=True)
    c = 1.000001
    y = x
    for _ in range(N_DEEP):
        y = y * c
    y.backward()
    # every VJP ran exactly once: the gradient is c**N (a revisit would double a term)
    assert x.grad == pytest.approx(c ** N_DEEP, rel=1e-9)
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_dropping_a_100k_op_graph_without_backward() -> None:
    x = mg.tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(N_DEEP):
        y = y.tanh()
    ref = weakref.ref(y)
    del y
    gc.collect()
    assert ref() is None
    assert x.data.flags.writeable  # every lock released
    assert id(x.data) not in readonly._locks


# --------------------------------------------------------------------------------------------
# Each node's VJP runs once
# --------------------------------------------------------------------------------------------
class Counted(mg.Function):
    """y = 2x, counting its backward calls."""

    calls = 0

    @staticmethod
    def forward(ctx: Any, x: np.ndarray) -> np.ndarray:
        return 2 * x

    @staticmethod
    def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
        Counted.calls += 1
        return 2 * g


def test_each_vjp_runs_once_in_a_diamond() -> None:
    Counted.calls = 0
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    a = Counted.apply(x)
    b, c = a * 3.0, a.exp()   # two branches from a
    d = Counted.apply(b + c)  # join
    e = d + d + a             # reuse again
    e.sum().backward()
    assert Counted.calls == 2  # one per Counted node, however many paths lead to it
    np.testing.assert_allclose(x.grad, 2 * (2 * 2 * (3.0 + np.exp(2 * x.data))) + 2)


def test_each_vjp_runs_once_in_a_wide_reused_graph() -> None:
    Counted.calls = 0
    x = mg.tensor(1.0, requires_grad=True)
    a = Counted.apply(x)
    total = a
    for _ in range(50):
        total = total + a * a  # a feeds 100 more uses
    total.backward()
    assert Counted.calls == 1
    assert x.grad == pytest.approx(2 * (1 + 50 * 2 * 2.0))


# --------------------------------------------------------------------------------------------
# Memory: a long training loop stays flat; intermediates are freed after backward
# --------------------------------------------------------------------------------------------
def test_10k_training_steps_run_in_flat_memory() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3))
    y = np.sin(x.sum(axis=1, keepdims=True))
    params = [mg.tensor(rng.normal(size=(3, 8)) * 0.5, requires_grad=True),
              mg.tensor(np.zeros(8), requires_grad=True),
              mg.tensor(rng.normal(size=(8, 1)) * 0.5, requires_grad=True),
              mg.tensor(np.zeros(1), requires_grad=True)]
    w1, b1, w2, b2 = params
    lr = 0.05
    losses = []
    try:
        for step in range(1, 10_001):
            h = (x @ w1 + b1).tanh()
            loss = ((h @ w2 + b2 - y) ** 2).mean()
            for p in params:
                p.grad = None
            loss.backward()
            for p in params:
                p.data -= lr * p.grad  # type: ignore[operator]
            if step in (1_000, 10_000):
                losses.append(loss.item())
                gc.collect()
                if step == 1_000:  # trace only what is allocated from here on (and kept)
                    tracemalloc.start()
                    base = tracemalloc.get_traced_memory()[0]
                else:
                    growth = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert growth < 64 * 1024, f"memory grew by {growth} bytes over 9,000 steps"
    assert losses[1] < losses[0]  # it did train
    assert all(id(p.data) not in readonly._locks for p in params)


def test_intermediates_are_freed_after_backward_without_the_gc() -> None:
    gc.disable()  # reference counting alone must free them: the tape builds no cycles
    try:
        w = mg.tensor(np.ones((3, 3)), requires_grad=True)
        x = np.arange(3.0)
        h1 = x @ w
        h2 = h1.tanh()
        h3 = h2 * h1
        loss = h3.sum()
        refs = [weakref.ref(t) for t in (h1, h2, h3)]
        saved = weakref.ref(h2.data)  # tanh's output, saved for its VJP
        del h1, h2, h3
        assert all(r() is not None for r in refs)  # the graph keeps them until backward
        loss.backward()
        assert all(r() is None for r in refs), "intermediate Tensors outlived backward"
        assert saved() is None, "a saved array outlived backward"
        assert loss._op is not None and loss._values is None  # its own record freed too
    finally:
        gc.enable()


class _TensorCount:
    """Counts every Tensor made while on: all of them are made by graph.leaf (op outputs,
    constants, detach) through graph._new, or by TensorBase.__init__ (mg.tensor, mg.Tensor)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made = 0
        self.on = False
        new, init = graph._new, graph.TensorBase.__init__

        def counted_new(cls: type) -> Any:
            self.made += self.on
            return new(cls)

        def counted_init(t: Any, *args: Any, **kwargs: Any) -> None:
            self.made += self.on
            init(t, *args, **kwargs)

        monkeypatch.setattr(graph, "_new", counted_new)
        monkeypatch.setattr(graph.TensorBase, "__init__", counted_init)


def test_plain_backward_runs_the_vjps_on_ndarrays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a transform asking for higher order, backward records nothing and makes no
    Tensor; a custom Function's backward sees ndarrays. The counter is shown to count: the same
    graph differentiated with create_graph (what mg.grad(mg.grad(f)) does) makes Tensors."""
    seen: list[type] = []

    class Spy(mg.Function):
        @staticmethod
        def forward(ctx: Any, x: np.ndarray) -> np.ndarray:
            return x * 1.0

        @staticmethod
        def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
            seen.append(type(g))
            return g

    count = _TensorCount(monkeypatch)
    w = mg.tensor(np.ones((3, 2)), requires_grad=True)
    x = np.arange(6.0).reshape(2, 3)

    def forward(w: mg.Tensor) -> mg.Tensor:
        h = (x @ w).tanh().softmax(-1)[np.array([0, 1, 1])] * 2.0
        return (mg.pad(h, 1).sin() * w.sum() + mg.linear(h, w).exp().mean()).logsumexp(None)

    loss = Spy.apply(forward(w))
    count.on = True
    loss.backward()
    count.on = False
    assert count.made == 0, "backward built Tensors: the VJPs were not run on plain arrays"
    assert seen == [np.ndarray]
    assert type(w.grad) is np.ndarray
    # the positive control: on the tape, the same rules make (and record) Tensors
    loss = forward(w)
    count.on = True
    (g,) = graph.run_backward(loss, np.ones(()), inputs=[w], create_graph=True)  # type: ignore[misc]
    count.on = False
    assert count.made > 0 and isinstance(g, mg.Tensor) and g.requires_grad
    np.testing.assert_allclose(g.data, w.grad, rtol=1e-12)
