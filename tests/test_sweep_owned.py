"""Sweep-owned gradients: a VJP kernel may write into its upstream ḡ only when nobody but the
sweep holds ḡ (graph.py: _owned). Each test below hands a gradient to someone else (a second
parent, a leaf's .grad, retain_grad, a requested result, the caller's upstream, a view) or runs
the VJPs on Tensors (higher order, mg.compile), and compares with the gradient written out in
NumPy: an in-place write into an array someone else holds changes one of them, and fails here.
The arrays are larger than the size below which the sweep never writes in place.

In plain mode no row has an owned kernel; the same gradients hold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels, rules

N, M = 64, 16  # 8 KB of float64: large enough for the sweep to write in place


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, M)), rng.normal(size=(N, M))


@pytest.fixture
def owned_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the rows whose owned kernel ran (none in plain mode)."""
    calls: list[str] = []
    for row in (rules.relu, rules.log_softmax):
        kernel = row.vjp_owned
        if kernel is not None:
            def spy(*args: Any, _k: Any = kernel, _n: str = row.name, **kw: Any) -> Any:
                calls.append(_n)
                return _k(*args, **kw)
            monkeypatch.setattr(row, "vjp_owned", spy)
    return calls


def test_a_private_upstream_is_written_in_place(owned_calls: list[str]) -> None:
    """The case the kernels exist for (so the tests below are not vacuous): relu's ḡ comes from
    a product nobody else holds."""
    x0, w = _data()
    x = mg.tensor(x0, requires_grad=True)
    ((x * 2.0).relu() * w).sum().backward()
    np.testing.assert_array_equal(x.grad, 2.0 * (w * (x0 * 2.0 > 0)))
    assert owned_calls == (["relu"] if kernels.ENABLED else [])


def test_one_gradient_given_to_two_parents(owned_calls: list[str]) -> None:
    """add's VJP hands the same ḡ to both operands: the first relu must not mask it for the
    second (their masks are disjoint, so a write would zero the second's gradient)."""
    x0, w = _data(1)
    x = mg.tensor(x0, requires_grad=True)
    (((x * 1.0).relu() + (x * -1.0).relu()) * w).sum().backward()
    np.testing.assert_array_equal(x.grad, w * (x0 > 0) - w * (-x0 > 0))
    if kernels.ENABLED:
        assert owned_calls == ["relu"]  # the second, once the first no longer holds ḡ


def test_a_gradient_also_given_to_a_leaf() -> None:
    """c's .grad is the very array relu gets as ḡ (add hands it to both)."""
    x0, w = _data(2)
    x = mg.tensor(x0, requires_grad=True)
    c = mg.tensor(np.zeros((N, M)), requires_grad=True)
    ((c + (x * 3.0).relu()) * w).sum().backward()
    np.testing.assert_array_equal(c.grad, w)
    np.testing.assert_array_equal(x.grad, 3.0 * w * (x0 > 0))


def test_a_gradient_reaching_a_leaf_through_a_view() -> None:
    """relu's ḡ is a reshaped view of the array c's .grad holds: it owns no memory."""
    x0, w = _data(3)
    x = mg.tensor(x0, requires_grad=True)
    c = mg.tensor(np.zeros(N * M), requires_grad=True)
    ((c + (x * 1.0).relu().reshape(N * M)) * w.reshape(-1)).sum().backward()
    np.testing.assert_array_equal(c.grad, w.reshape(-1))
    np.testing.assert_array_equal(x.grad, w * (x0 > 0))


def test_a_retained_gradient() -> None:
    x0, w = _data(4)
    x = mg.tensor(x0, requires_grad=True)
    h = x * 1.0
    r = h.relu()
    lp = r.log_softmax(axis=-1)
    r.retain_grad()
    lp.retain_grad()
    (lp * w).sum().backward()
    y = lp.data
    want_r = w - np.exp(y) * w.sum(axis=-1, keepdims=True)
    np.testing.assert_array_equal(lp.grad, w)
    np.testing.assert_allclose(r.grad, want_r, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(x.grad, want_r * (x0 > 0), rtol=1e-13, atol=1e-15)


def test_the_callers_upstream_is_never_written() -> None:
    x0, up = _data(5)
    x = mg.tensor(x0, requires_grad=True)
    kept = up.copy()
    (x * 1.0).relu().backward(up)
    np.testing.assert_array_equal(up, kept)
    np.testing.assert_array_equal(x.grad, up * (x0 > 0))
    z = mg.tensor(x0, requires_grad=True)
    (z * 1.0).log_softmax(axis=-1).backward(up)
    np.testing.assert_array_equal(up, kept)


def test_requested_results_and_value_and_grad() -> None:
    """mg.grad/value_and_grad return the gradients: none of them is written afterwards."""
    x0, w = _data(6)

    def f(a: Any, b: Any) -> Any:
        s = a * 1.0 + b  # the same ḡ to a's product and to b, a requested input
        return (s.relu().log_softmax(axis=-1) * w).sum() + (s * w).sum()

    value, (ga, gb) = mg.value_and_grad(f, argnums=(0, 1))(x0, x0 * 0.5)
    s = x0 * 1.5
    y = np.log(np.exp(np.maximum(s, 0)) / np.exp(np.maximum(s, 0)).sum(-1, keepdims=True))
    want = (w - np.exp(y) * w.sum(-1, keepdims=True)) * (s > 0) + w
    np.testing.assert_allclose(ga.data if isinstance(ga, mg.Tensor) else ga, want, rtol=1e-12)
    np.testing.assert_allclose(gb.data if isinstance(gb, mg.Tensor) else gb, want, rtol=1e-12)


def test_gradients_summed_from_several_consumers() -> None:
    x0, w = _data(7)
    x = mg.tensor(x0, requires_grad=True)
    h = x * 2.0
    r = h.relu()
    loss = (r * w).sum() + (r * r).sum() + r[np.arange(N), np.arange(N) % M].sum()
    loss.backward()
    y = np.maximum(2.0 * x0, 0)
    gr = w + 2 * y
    np.add.at(gr, (np.arange(N), np.arange(N) % M), 1.0)
    np.testing.assert_allclose(x.grad, 2.0 * gr * (y > 0), rtol=1e-13)


def test_retain_graph_twice_and_anomaly_mode() -> None:
    x0, w = _data(8)
    x = mg.tensor(x0, requires_grad=True)
    loss = ((x * 1.0).relu().log_softmax(axis=-1) * w).sum()
    loss.backward(retain_graph=True)
    first = x.grad.copy()
    x.grad = None
    with mg.detect_anomaly():
        loss.backward()
    np.testing.assert_array_equal(x.grad, first)


def test_higher_order_runs_the_rules_on_tensors() -> None:
    """Under create_graph the VJPs run on Tensors (never in place): the gradient of a gradient
    equals central finite differences of the first-order gradient, which does run in place."""
    rng = np.random.default_rng(9)
    x0, w, v = rng.normal(size=(N, M)), rng.normal(size=(N, M)), rng.normal(size=(N, M))

    def f(t: Any) -> Any:
        return ((t * t).relu().log_softmax(axis=-1) * w).sum()

    g1 = mg.grad(f)
    inner = mg.grad(lambda t: (g1(t) * v).sum())(x0)
    eps = 1e-6
    fd = (np.asarray(g1(x0 + eps * v).data) - np.asarray(g1(x0 - eps * v).data)) / (2 * eps)
    # Hessian symmetry: (∇(∇f·v))·u = vᵀ H u = (H v)·u, with H v ≈ fd; checked on the whole
    np.testing.assert_allclose(np.asarray(inner.data), fd, rtol=1e-4, atol=1e-6)
    outer_first = np.asarray(g1(x0).data)
    x = mg.tensor(x0, requires_grad=True)
    f(x).backward()
    np.testing.assert_allclose(outer_first, x.grad, rtol=1e-13)


def test_a_compiled_step_equals_eager() -> None:
    """mg.compile traces the sweep with create_graph: what it records is the rules' work."""
    x0, w = _data(10)
    lin = mg.nn.Linear(M, M, rng=0)

    def step(x: Any) -> Any:
        return (lin(x).relu().log_softmax(axis=-1) * w).sum()

    compiled = mg.compile(mg.value_and_grad(step))
    for _ in range(2):
        value, grad = compiled(x0)
    x = mg.tensor(x0, requires_grad=True)
    loss = step(x)
    loss.backward()
    np.testing.assert_allclose(np.asarray(value.data), loss.data, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grad.data), x.grad, rtol=1e-12, atol=1e-14)


def test_a_fortran_ordered_gradient_meets_element_picks() -> None:
    """A Tensor whose whole gradient arrives first as a transposed (Fortran-ordered) view and
    is then picked element by element: the picks are added into a C-ordered copy of it."""
    rng = np.random.default_rng(11)
    x0, w = rng.normal(size=(3, 4)), rng.normal(size=(4, 3))
    rows, cols = np.array([0, 1, 2, 2, -1]), np.array([1, 3, 0, 0, -1])
    v = np.arange(1.0, 6.0)
    leaf = mg.tensor(x0, requires_grad=True)
    x = leaf * 1.0
    ((x[rows, cols] * v).sum() + (x.T * w).sum()).backward()
    want = w.T.copy()
    np.add.at(want, (rows, cols), v)
    np.testing.assert_allclose(leaf.grad, want, rtol=1e-14)
