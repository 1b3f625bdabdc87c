"""Functional transforms and higher order: grad of grad and hessian against analytic second
derivatives, argnums, value_and_grad, vjp, jvp, hvp, jacobian, gradcheck's error, custom
Functions (first-order: they work once, and raise when differentiated twice)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg

SEEDS = st.integers(0, 2**32 - 1)
SMALL = hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3)


def sig(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


# name, function on Tensors, f', f'', domain
ELEMENTWISE: list[tuple[str, Callable[[Any], Any], Callable[[Any], Any], Callable[[Any], Any],
                        tuple[float, float]]] = [
    ("tanh", lambda t: t.tanh(), lambda x: 1 - np.tanh(x) ** 2,
     lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2), (-2.0, 2.0)),
    ("exp", lambda t: t.exp(), np.exp, np.exp, (-2.0, 2.0)),
    ("log", lambda t: t.log(), lambda x: 1 / x, lambda x: -1 / x ** 2, (0.3, 3.0)),
    ("cube", lambda t: t ** 3, lambda x: 3 * x ** 2, lambda x: 6 * x, (-2.0, 2.0)),
    ("sigmoid", lambda t: t.sigmoid(), lambda x: sig(x) * (1 - sig(x)),
     lambda x: sig(x) * (1 - sig(x)) * (1 - 2 * sig(x)), (-3.0, 3.0)),
    ("sqrt", lambda t: t.sqrt(), lambda x: 0.5 / np.sqrt(x), lambda x: -0.25 * x ** -1.5,
     (0.3, 3.0)),
    ("reciprocal", lambda t: 1.0 / t, lambda x: -1 / x ** 2, lambda x: 2 / x ** 3, (0.3, 3.0)),
    ("sin", lambda t: t.sin(), np.cos, lambda x: -np.sin(x), (-3.0, 3.0)),
    ("cos", lambda t: np.cos(t), lambda x: -np.sin(x), lambda x: -np.cos(x), (-3.0, 3.0)),
    ("log1p", lambda t: mg.log1p(t), lambda x: 1 / (1 + x), lambda x: -1 / (1 + x) ** 2,
     (-0.7, 3.0)),
    ("expm1", lambda t: np.expm1(t), np.exp, np.exp, (-2.0, 2.0)),
    ("square", lambda t: mg.square(t), lambda x: 2 * x, lambda x: 2 + 0 * x, (-2.0, 2.0)),
]
IDS = [e[0] for e in ELEMENTWISE]


@pytest.mark.parametrize("name,fn,d1,d2,dom", ELEMENTWISE, ids=IDS)
@given(shape=SMALL, seed=SEEDS)
def test_grad_of_grad_elementwise(name: str, fn: Any, d1: Any, d2: Any, dom: Any,
                                  shape: tuple[int, ...], seed: int) -> None:
    x = np.random.default_rng(seed).uniform(*dom, size=shape)
    f = lambda t: fn(t).sum()  # noqa: E731
    g = mg.grad(f)(x)
    assert isinstance(g, mg.Tensor) and g.shape == x.shape
    np.testing.assert_allclose(g.data, d1(x), rtol=1e-10)
    # d/dx_i of Σ_j f'(x_j) is f''(x_i)
    gg = mg.grad(lambda t: mg.grad(f)(t).sum())(x)  # type: ignore[union-attr]
    np.testing.assert_allclose(gg.data, d2(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,fn,d1,d2,dom", ELEMENTWISE, ids=IDS)
def test_scalar_grad_grad_and_hessian(name: str, fn: Any, d1: Any, d2: Any, dom: Any) -> None:
    x0 = float(np.mean(dom)) + 0.1
    assert mg.grad(mg.grad(fn))(x0).item() == pytest.approx(d2(x0), rel=1e-10)
    x = np.linspace(dom[0], dom[1], 6).reshape(2, 3)
    h = mg.hessian(lambda t: fn(t).sum(), x)
    assert isinstance(h, np.ndarray) and h.shape == (2, 3, 2, 3)
    expected = np.diag(d2(x).ravel()).reshape(2, 3, 2, 3)
    np.testing.assert_allclose(h, expected, rtol=1e-10, atol=1e-12)


def test_third_derivative_of_cube() -> None:
    d3 = mg.grad(mg.grad(mg.grad(lambda t: t ** 3)))(1.7)
    assert d3.item() == pytest.approx(6.0)  # type: ignore[union-attr]
    d4 = mg.grad(mg.grad(mg.grad(mg.grad(lambda t: t ** 3))))(1.7)
    assert d4.item() == pytest.approx(0.0, abs=1e-12)  # type: ignore[union-attr]


@pytest.mark.parametrize("ddof", [0, 1])
def test_var_and_std_hessians_are_analytic(ddof: int) -> None:
    """var = Σ(x − m)² / (n − ddof): H = 2 (I − 11ᵀ/n) / (n − ddof); std = √var:
    H = (H_var − ∇var ∇varᵀ / (2 var)) / (2 std)."""
    x = np.array([0.3, -1.2, 2.0, 0.7, 1.1])
    n = x.size
    centering = np.eye(n) - np.ones((n, n)) / n
    h_var = 2 * centering / (n - ddof)
    np.testing.assert_allclose(mg.hessian(lambda t: t.var(ddof=ddof), x), h_var, atol=1e-12)
    var = np.var(x, ddof=ddof)
    g_var = 2 * (x - x.mean()) / (n - ddof)
    h_std = (h_var - np.outer(g_var, g_var) / (2 * var)) / (2 * np.sqrt(var))
    np.testing.assert_allclose(mg.hessian(lambda t: np.std(t, ddof=ddof), x), h_std,
                               rtol=1e-10, atol=1e-12)
    # over one axis of a batch: block diagonal, one block per row
    xb = np.stack([x, x[::-1] * 2.0])
    h = mg.hessian(lambda t: t.var(axis=1, ddof=ddof).sum(), xb)
    np.testing.assert_allclose(h[0, :, 0, :], h_var, atol=1e-12)
    np.testing.assert_array_equal(h[0, :, 1, :], 0.0)


def softmax_np(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@given(seed=SEEDS, k=st.integers(1, 5))
def test_softmax_hessian_is_analytic(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=k), rng.normal(size=k)
    s = softmax_np(x)
    ws = float(w @ s)
    # H = diag(w∘s) − (w∘s)sᵀ − s(w∘s)ᵀ + 2(w·s)ssᵀ − (w·s)diag(s)
    expected = (np.diag(w * s) - np.outer(w * s, s) - np.outer(s, w * s)
                + 2 * ws * np.outer(s, s) - ws * np.diag(s))
    f = lambda t: (t.softmax() * w).sum()  # noqa: E731
    h = mg.hessian(f, x)
    assert h.shape == (k, k)
    np.testing.assert_allclose(h, expected, rtol=1e-9, atol=1e-12)
    # grad of grad: ∇ ⟨∇f(x), v⟩ = H v
    v = rng.normal(size=k)
    hv = mg.grad(lambda t: (mg.grad(f)(t) * v).sum())(x)  # type: ignore[operator]
    np.testing.assert_allclose(hv.data, expected @ v, rtol=1e-9, atol=1e-12)  # type: ignore[union-attr]


@given(seed=SEEDS, k=st.integers(1, 5))
def test_log_softmax_hessian_is_analytic(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=k), rng.normal(size=k)
    s = softmax_np(x)
    # Σ wᵢ log_softmax(x)ᵢ = w·x − (Σw)·lse(x): H = −(Σw)(diag(s) − ssᵀ)
    expected = -w.sum() * (np.diag(s) - np.outer(s, s))
    f = lambda t: (t.log_softmax() * w).sum()  # noqa: E731
    np.testing.assert_allclose(mg.hessian(f, x), expected, rtol=1e-9, atol=1e-12)
    v = rng.normal(size=k)
    hv = mg.grad(lambda t: (mg.grad(f)(t) * v).sum())(x)  # type: ignore[operator]
    np.testing.assert_allclose(hv.data, expected @ v, rtol=1e-9, atol=1e-12)  # type: ignore[union-attr]
    np.testing.assert_allclose(mg.hessian(lambda t: t.logsumexp(), x),
                               np.diag(s) - np.outer(s, s), rtol=1e-9, atol=1e-12)


def test_batched_softmax_hessian_is_block_diagonal() -> None:
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    h = mg.hessian(lambda t: (t.log_softmax(-1) * w).sum(), x)
    assert h.shape == (2, 3, 2, 3)
    for r in range(2):
        s = softmax_np(x[r])
        np.testing.assert_allclose(h[r, :, r, :], -w[r].sum() * (np.diag(s) - np.outer(s, s)),
                                   rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(h[0, :, 1, :], 0.0)
    np.testing.assert_array_equal(h[1, :, 0, :], 0.0)


@given(seed=SEEDS)
def test_hessian_of_a_small_network_matches_finite_differences_of_its_gradient(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, y = rng.normal(size=(4, 3)), rng.integers(0, 2, size=4)
    w0 = rng.normal(size=(3, 2)) * 0.5

    def loss(w: mg.Tensor) -> mg.Tensor:
        logits = (a @ w).tanh() * 2.0 + mg.maximum(a @ w, 0.0) * 0.1
        return -logits.log_softmax(-1)[np.arange(4), y].mean() + (w ** 2).sum() * 0.01

    h = mg.hessian(loss, w0)
    assert h.shape == (3, 2, 3, 2)
    np.testing.assert_allclose(h.reshape(6, 6), h.reshape(6, 6).T, atol=1e-12)
    grad_f = mg.grad(loss)
    eps = 1e-6
    for idx in np.ndindex(3, 2):
        e = np.zeros_like(w0)
        e[idx] = eps
        col = (grad_f(w0 + e).data - grad_f(w0 - e).data) / (2 * eps)  # type: ignore[union-attr]
        np.testing.assert_allclose(h[(...,) + idx], col, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------
# grad / value_and_grad
# --------------------------------------------------------------------------------------------
def test_grad_argnums_int_tuple_and_negative() -> None:
    f = lambda a, b, c: (a * mg.exp(b) + c ** 2).sum()  # noqa: E731
    a, b, c = np.array([1.0, 2.0]), np.array([0.5, -0.5]), np.array([3.0, 4.0])
    ga = mg.grad(f)(a, b, c)
    assert isinstance(ga, mg.Tensor)
    np.testing.assert_allclose(ga.data, np.exp(b))
    gb = mg.grad(f, argnums=1)(a, b, c)
    np.testing.assert_allclose(gb.data, a * np.exp(b))  # type: ignore[union-attr]
    gc = mg.grad(f, argnums=-1)(a, b, c)
    np.testing.assert_allclose(gc.data, 2 * c)  # type: ignore[union-attr]
    both = mg.grad(f, argnums=(2, 0))(a, b, c)
    assert isinstance(both, tuple) and len(both) == 2
    np.testing.assert_allclose(both[0].data, 2 * c)
    np.testing.assert_allclose(both[1].data, np.exp(b))
    single = mg.grad(f, argnums=(1,))(a, b, c)
    assert isinstance(single, tuple) and len(single) == 1
    with pytest.raises((ValueError, IndexError)):
        mg.grad(f, argnums=3)(a, b, c)


def test_value_and_grad() -> None:
    f = lambda x, y: (x * y).sum() + 1.0  # noqa: E731
    x, y = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    v, g = mg.value_and_grad(f)(x, y)
    assert isinstance(v, mg.Tensor) and isinstance(g, mg.Tensor)
    assert v.item() == 33.0
    np.testing.assert_array_equal(g.data, y)
    v2, (gx, gy) = mg.value_and_grad(f, argnums=(0, 1))(x, y)  # type: ignore[misc]
    assert v2.item() == 33.0
    np.testing.assert_array_equal(gx.data, y)
    np.testing.assert_array_equal(gy.data, x)


def test_grad_inputs_tensors_ints_and_requires_grad() -> None:
    f = lambda t: (t * t).sum()  # noqa: E731
    np.testing.assert_array_equal(mg.grad(f)([1, 2]).data, [2.0, 4.0])  # type: ignore[union-attr]
    assert mg.grad(f)(np.array([1, 2])).dtype == np.float64  # type: ignore[union-attr]
    t = mg.tensor([1.0, 2.0])
    np.testing.assert_array_equal(mg.grad(f)(t).data, [2.0, 4.0])  # type: ignore[union-attr]
    assert t.grad is None and not t.requires_grad
    p = mg.tensor([1.0, 2.0], requires_grad=True)
    g = mg.grad(f)(p)
    assert p.grad is None  # transforms never touch .grad
    # p is on a tape: the gradient stays differentiable, and .grad stays a plain array
    (g * g).sum().backward()  # type: ignore[operator]
    assert type(p.grad) is np.ndarray
    np.testing.assert_allclose(p.grad, 8 * p.data)
    f32 = mg.grad(f)(np.array([1.0, 2.0], dtype=np.float32))
    assert f32.dtype == np.float32  # type: ignore[union-attr]


def test_grad_requires_a_one_element_output() -> None:
    with pytest.raises((ValueError, RuntimeError)):
        mg.grad(lambda t: t * 2.0)(np.ones(3))
    g = mg.grad(lambda t: (t * 2.0).sum().reshape(1, 1))(np.ones(3))  # one element: fine
    assert g.data.tolist() == [2.0] * 3  # type: ignore[union-attr]


def test_grad_of_an_unused_argument_is_zero() -> None:
    g = mg.grad(lambda a, b: (a * 2.0).sum(), argnums=1)(np.ones(2), np.ones(3))
    np.testing.assert_array_equal(g.data, np.zeros(3))  # type: ignore[union-attr]


def test_closing_over_a_tensor_that_requires_grad_keeps_the_gradient_differentiable() -> None:
    """A gradient penalty: the inner gradient (w.r.t. x) depends on the parameter w, which the
    function only closes over; differentiating the penalty must reach w (no silent zero)."""
    rng = np.random.default_rng(0)
    x0, w0 = rng.normal(size=3), rng.normal(size=3)
    w = mg.tensor(w0, requires_grad=True)
    gx = mg.grad(lambda x: (x * w).tanh().sum())(x0)  # = w·(1 − tanh²(x·w))
    penalty = (gx * gx).sum()  # type: ignore[operator]
    assert penalty.requires_grad
    penalty.backward()

    def penalty_np(wv: np.ndarray) -> float:
        return float(((wv * (1 - np.tanh(x0 * wv) ** 2)) ** 2).sum())

    eps = 1e-6
    num = [(penalty_np(w0 + eps * e) - penalty_np(w0 - eps * e)) / (2 * eps) for e in np.eye(3)]
    np.testing.assert_allclose(w.grad, num, rtol=1e-6, atol=1e-9)
    # value_and_grad's value is on the tape too
    v, _ = mg.value_and_grad(lambda x: (x * w).sum())(x0)
    assert v.requires_grad


def test_upstreams_tangents_and_directions_on_a_tape_stay_differentiable() -> None:
    """vjp_fn(u), jvp's tangent and hvp's v are linear arguments; when they require grad, the
    result must carry that dependence (not silently drop it)."""
    x0 = np.array([0.3, -0.7])
    d = (1 - np.tanh(x0) ** 2) ** 2
    u = mg.tensor([1.0, 2.0], requires_grad=True)
    _, vjp_fn = mg.vjp(lambda t: t.tanh(), x0)
    (g,) = vjp_fn(u)
    (g * g).sum().backward()
    np.testing.assert_allclose(u.grad, 2 * u.data * d)
    t = mg.tensor([1.0, 2.0], requires_grad=True)
    _, tangent = mg.jvp(lambda a: a.tanh(), (x0,), (t,))
    (tangent * tangent).sum().backward()
    np.testing.assert_allclose(t.grad, 2 * t.data * d)
    v = mg.tensor([1.0, 2.0], requires_grad=True)
    mg.hvp(lambda a: (a ** 3).sum(), x0, v).sum().backward()
    np.testing.assert_allclose(v.grad, 6 * x0)


# --------------------------------------------------------------------------------------------
# vjp / jvp / hvp / jacobian
# --------------------------------------------------------------------------------------------
def test_vjp_returns_a_tuple_and_can_be_called_twice() -> None:
    a = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    x0 = np.array([0.3, -0.2, 0.1])
    out, vjp_fn = mg.vjp(lambda t: (a @ t).tanh(), x0)
    assert isinstance(out, mg.Tensor) and out.shape == (2,)
    np.testing.assert_allclose(out.data, np.tanh(a @ x0))
    jac = (1 - np.tanh(a @ x0) ** 2)[:, None] * a
    for u in (np.array([1.0, 0.0]), np.array([0.5, -2.0]), mg.tensor([0.0, 1.0])):
        res = vjp_fn(u)
        assert isinstance(res, tuple) and len(res) == 1 and isinstance(res[0], mg.Tensor)
        np.testing.assert_allclose(res[0].data, np.asarray(u) @ jac, rtol=1e-12)
    with pytest.raises((ValueError, RuntimeError)):
        vjp_fn(np.ones(3))
    _, vjp2 = mg.vjp(lambda p, q: p * q, np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    gp, gq = vjp2(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(gp.data, [3.0, 40.0])
    np.testing.assert_array_equal(gq.data, [1.0, 20.0])


@given(seed=SEEDS, shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
def test_jacobian_shape_and_value(seed: int, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=shape)
    a = rng.normal(size=(2,) + shape)
    # out[k, ...] = a[k, ...] * tanh(x[...]): out.shape = (2,) + shape
    jac = mg.jacobian(lambda t: a * t.tanh(), x0)
    assert isinstance(jac, np.ndarray) and jac.shape == (2,) + shape + shape
    expected = np.zeros((2,) + shape + shape)
    d = 1 - np.tanh(x0) ** 2
    for k in range(2):
        for idx in np.ndindex(*shape):
            expected[(k,) + idx + idx] = a[(k,) + idx] * d[idx]
    np.testing.assert_allclose(jac, expected, rtol=1e-12)


def test_jacobian_of_a_row_softmax_is_block_diagonal() -> None:
    x0 = np.array([[0.1, 0.5, -0.3], [2.0, 1.0, 0.0]])
    jac = mg.jacobian(lambda t: t.softmax(-1), x0)
    assert jac.shape == (2, 3, 2, 3)
    for r in range(2):
        s = softmax_np(x0[r])
        np.testing.assert_allclose(jac[r, :, r, :], np.diag(s) - np.outer(s, s), atol=1e-15)
        np.testing.assert_array_equal(jac[r, :, 1 - r, :], 0.0)


@given(seed=SEEDS)
def test_jvp_equals_jacobian_times_tangent(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x0, y0 = rng.normal(size=3), rng.normal(size=3)
    tx, ty = rng.normal(size=3), rng.normal(size=3)

    def f(x: mg.Tensor, y: mg.Tensor) -> mg.Tensor:
        return (x * y.exp()).softmax() + x.tanh()

    out, tangent = mg.jvp(f, (x0, y0), (tx, ty))
    assert isinstance(out, mg.Tensor) and isinstance(tangent, mg.Tensor)
    jx = mg.jacobian(lambda x: f(x, mg.tensor(y0)), x0)
    jy = mg.jacobian(lambda y: f(mg.tensor(x0), y), y0)
    np.testing.assert_allclose(out.data, f(mg.tensor(x0), mg.tensor(y0)).data)
    np.testing.assert_allclose(tangent.data, jx @ tx + jy @ ty, rtol=1e-9, atol=1e-12)


@given(seed=SEEDS)
def test_hvp_equals_hessian_times_vector(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x0, v = rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
    f = lambda t: ((t @ t).tanh() * t).sum() + t.logsumexp(None)  # noqa: E731
    hv = mg.hvp(f, x0, v)
    assert isinstance(hv, mg.Tensor) and hv.shape == (2, 2)
    h = mg.hessian(f, x0).reshape(4, 4)
    np.testing.assert_allclose(hv.data.ravel(), h @ v.ravel(), rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# gradcheck and custom Functions
# --------------------------------------------------------------------------------------------
class Square(mg.Function):
    """y = x²;  x̄ = 2x·ḡ"""

    @staticmethod
    def forward(ctx: Any, x: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
        (x,) = ctx.saved
        return 2 * x * g


class WrongSquare(Square):
    """y = x² with a deliberately wrong backward (3x instead of 2x)."""

    @staticmethod
    def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
        (x,) = ctx.saved
        return 3 * x * g


class MulAdd(mg.Function):
    """y = a·b + b;  ā = ḡ·b,  b̄ = ḡ·(a + 1)"""

    @staticmethod
    def forward(ctx: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a, b)
        return a * b + b

    @staticmethod
    def backward(ctx: Any, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = ctx.saved
        return g * b, g * (a + 1)


def test_gradcheck_names_input_index_and_both_values() -> None:
    x = np.array([0.5, -1.25, 2.0])
    other = np.array([1.0, 1.0, 1.0])
    with pytest.raises(mg.GradcheckError) as info:
        mg.gradcheck(lambda o, t: o * WrongSquare.apply(t), [mg.tensor(other), mg.tensor(x)])
    err = info.value
    assert isinstance(err, RuntimeError)
    msg = str(err)
    assert "input 1" in msg, msg
    assert "index (0,)" in msg, msg
    numbers = [float(v) for v in re.findall(r"-?\d+\.\d*(?:e-?\d+)?", msg)]
    # analytic 3·0.5 and numerical 2·0.5 (up to the finite difference's error)
    assert any(v == 1.5 for v in numbers), msg
    assert any(abs(v - 1.0) < 1e-6 for v in numbers), msg
    assert mg.gradcheck(lambda t: Square.apply(t), mg.tensor(x)) is True
    assert mg.gradcheck(MulAdd.apply, [mg.tensor(x), mg.tensor(other * 2)]) is True


def test_gradcheck_catches_a_wrong_rule_in_a_composition() -> None:
    with pytest.raises(mg.GradcheckError):
        mg.gradcheck(lambda t: (WrongSquare.apply(t) * 2.0).sum(), mg.tensor([1.0, 2.0]))
    assert mg.gradcheck(lambda t: (t * 2.0).sum(), [mg.tensor([1.0, 2.0])]) is True


def test_custom_function_first_order() -> None:
    a = mg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    b = mg.tensor([0.5, -1.0], requires_grad=True)  # broadcast inside the custom op
    y = MulAdd.apply(a, b)
    np.testing.assert_array_equal(y.data, a.data * b.data + b.data)
    y.backward(np.ones((2, 2)))
    np.testing.assert_array_equal(a.grad, np.broadcast_to(b.data, (2, 2)))
    np.testing.assert_array_equal(b.grad, (a.data + 1).sum(axis=0))
    g = mg.grad(lambda t: Square.apply(t).sum())(np.array([1.0, -3.0]))
    np.testing.assert_array_equal(g.data, [2.0, -6.0])  # type: ignore[union-attr]
    with mg.no_grad():
        assert not Square.apply(a).requires_grad


@pytest.mark.parametrize("how", ["grad of grad", "hessian", "jvp", "hvp", "backward of grad"])
def test_custom_function_raises_when_differentiated_twice(how: str) -> None:
    f = lambda t: Square.apply(t).sum()  # noqa: E731
    x = np.array([1.0, 2.0])
    with pytest.raises(RuntimeError, match="first-order"):
        if how == "grad of grad":
            mg.grad(lambda t: mg.grad(f)(t).sum())(x)  # type: ignore[union-attr]
        elif how == "hessian":
            mg.hessian(f, x)
        elif how == "jvp":
            mg.jvp(lambda t: Square.apply(t), (x,), (np.ones(2),))
        elif how == "hvp":
            mg.hvp(f, x, np.ones(2))
        else:
            p = mg.tensor(x, requires_grad=True)
            (mg.grad(f)(p) ** 2).sum().backward()  # type: ignore[operator]
    # scalar input: the nested gradient of a custom op must not be a silent zero either
    with pytest.raises(RuntimeError, match="first-order"):
        mg.grad(mg.grad(lambda t: Square.apply(t)))(3.0)


# --------------------------------------------------------------------------------------------
# Second order: VJPs, run on Tensors, are themselves gradchecked (every row once, by the table
# itself, in test_table.py; here the forms it does not draw: matmul ranks, index kinds, ...)
# --------------------------------------------------------------------------------------------
def _u(seed: int, shape: tuple[int, ...], lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, size=shape)


def _grid(seed: int, shape: tuple[int, ...], offset: float) -> np.ndarray:
    """Multiples of 0.5 plus offset: off every kink and tie by at least 0.25."""
    return np.random.default_rng(seed).integers(-4, 5, size=shape) * 0.5 + offset


NO_TIES = np.array([[0.3, 1.2, -0.6], [0.9, 0.0, 1.5]])
# (primitive, f, inputs): f is chosen so that its second derivative is not identically zero
SECOND_ORDER: list[tuple[str, Callable[..., Any], list[np.ndarray]]] = [
    ("add", lambda a, b: (a + b) ** 2, [_u(0, (2, 3)), _u(1, (3,))]),
    ("subtract", lambda a, b: (a - b) ** 2, [_u(2, (2, 3)), _u(3, (1, 3))]),
    ("multiply", lambda a, b: a * b * a, [_u(4, (2, 3)), _u(5, (3,))]),
    ("divide", lambda a, b: a / b, [_u(6, (2, 3)), _u(7, (3,), 0.5, 2.0)]),
    ("power", lambda a, b: a ** b, [_u(8, (2, 3), 0.5, 2.0), _u(9, (3,))]),
    ("power", lambda a: a ** 3 + 2.0 ** a, [_u(10, (2, 3))]),
    ("negative", lambda a: -(a * a), [_u(11, (3,))]),
    ("exp", lambda a: a.exp(), [_u(12, (3,))]),
    ("log", lambda a: a.log(), [_u(13, (3,), 0.5, 2.0)]),
    ("sqrt", lambda a: a.sqrt(), [_u(14, (3,), 0.5, 2.0)]),
    ("tanh", lambda a: a.tanh(), [_u(15, (3,))]),
    ("sigmoid", lambda a: a.sigmoid(), [_u(16, (3,))]),
    ("relu", lambda a: a.relu() * a, [_grid(17, (4,), 0.25)]),
    ("absolute", lambda a: a.abs() * a, [_grid(18, (4,), 0.25)]),
    ("astype", lambda a: a.astype(np.float64) * a, [_u(19, (3,))]),
    ("maximum", lambda a, b: mg.maximum(a, b) * a, [_grid(20, (2, 3), 0.0), _grid(21, (3,), 0.25)]),
    ("minimum", lambda a, b: mg.minimum(a, b) * b, [_grid(22, (2, 3), 0.0), _grid(23, (3,), 0.25)]),
    ("where", lambda a, b: mg.where(np.array([True, False, True]), a * a, b * a),
     [_u(24, (2, 3)), _u(25, (3,))]),
    ("clip", lambda a: a.clip(-1.0, 1.0) * a, [_grid(26, (5,), 0.25)]),
    ("sum", lambda a: a.sum(axis=0) * a.sum(axis=(0, 1), keepdims=True), [_u(27, (2, 3))]),
    ("mean", lambda a: a.mean(axis=1) * a.mean(keepdims=True) ** 2, [_u(50, (2, 3))]),
    ("amax", lambda a: a.max(axis=1, keepdims=True) * a, [NO_TIES]),
    ("amin", lambda a: a.min(axis=0) * a, [NO_TIES]),
    ("softmax", lambda a: a.softmax(0), [_u(28, (2, 3))]),
    ("log_softmax", lambda a: a.log_softmax(-1), [_u(29, (2, 3))]),
    ("logsumexp", lambda a: a.logsumexp((0, 1), keepdims=True) * a, [_u(30, (2, 3))]),
    ("matmul", lambda a, b: (a @ b) ** 2, [_u(31, (2, 3)), _u(32, (3, 2))]),
    ("matmul", lambda a, b: (a @ b) ** 2, [_u(33, (3,)), _u(34, (3, 2))]),
    ("matmul", lambda a, b: (a @ b) ** 2, [_u(35, (2, 3)), _u(36, (3,))]),
    ("matmul", lambda a, b: (a @ b) ** 2, [_u(37, (3,)), _u(38, (3,))]),
    ("matmul", lambda a, b: (a @ b) ** 2, [_u(39, (2, 1, 2, 3)), _u(40, (3, 3, 2))]),
    ("matmul", lambda a, b: (a @ b) ** 2, [_u(41, (3,)), _u(42, (2, 3, 2))]),
    ("matmul", lambda a, b: (a @ b) ** 2, [_u(43, (2, 2, 3)), _u(44, (3,))]),
    ("linear", lambda x, w, b: mg.linear(x, w, b) ** 2, [_u(45, (4, 3)), _u(46, (2, 3)),
                                                         _u(47, (2,))]),
    ("linear", lambda x, w: mg.linear(x, w).tanh(), [_u(48, (2, 2, 3)), _u(49, (2, 3))]),
    ("reshape", lambda a: a.reshape(3, 2) ** 2, [_u(45, (2, 3))]),
    ("transpose", lambda a: a.transpose(1, 0, 2) ** 2, [_u(46, (2, 3, 2))]),
    ("broadcast_to", lambda a: mg.broadcast_to(a, (2, 2, 3)) ** 2, [_u(47, (1, 3))]),
    ("getitem", lambda a: a[::-1, 1:] ** 2, [_u(48, (3, 3))]),
    ("getitem", lambda a: a[np.array([0, 0, 2])] ** 2, [_u(49, (3, 2))]),
    ("getitem", lambda a: a[np.array([[True, False], [True, True], [False, True]])] ** 2,
     [_u(50, (3, 2))]),
    ("concatenate", lambda a, b: mg.concatenate([a * a, b], axis=1) ** 2,
     [_u(51, (2, 2)), _u(52, (2, 1))]),
    ("stack", lambda a, b: mg.stack([a * b, b], axis=-1) ** 2, [_u(53, (2, 2)), _u(54, (2, 2))]),
    ("pad", lambda a: mg.pad(a * a, ((1, 0), (0, 2)), constant_values=1.0) * a.sum(),
     [_u(58, (2, 3))]),
    ("sin", lambda a: a.sin() * a, [_u(59, (3,))]),
    ("cos", lambda a, b: (a * b).cos(), [_u(60, (2, 3)), _u(61, (3,))]),
    ("log1p", lambda a: mg.log1p(a * a), [_u(62, (3,))]),
    ("expm1", lambda a: mg.expm1(a).tanh(), [_u(63, (3,))]),
    ("square", lambda a, b: mg.square(a - b), [_u(64, (2, 3)), _u(65, (3,))]),
    # compositions of rows
    ("var", lambda a: a.var(axis=0, ddof=1) * a.var(), [_u(66, (3, 2))]),
    ("std", lambda a: a.std(axis=1, keepdims=True) * a, [_u(67, (2, 3))]),
    ("squeeze", lambda a: mg.squeeze(a * a, 0) ** 2, [_u(68, (1, 3))]),
    ("flatten", lambda a: (a * a).flatten() * a.flatten(), [_u(69, (2, 2))]),
    ("split", lambda a: mg.split(a * a, [1], axis=1)[1] * a[:, :2], [_u(70, (2, 3))]),
    ("unbind", lambda a: mg.unbind(a * a)[0] * mg.unbind(a)[1], [_u(71, (2, 3))]),
]


@pytest.mark.parametrize("prim,f,inputs", SECOND_ORDER,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SECOND_ORDER)])
def test_every_vjp_is_itself_differentiable(prim: str, f: Callable[..., Any],
                                            inputs: list[np.ndarray]) -> None:
    """gradcheck x ↦ ∇_x Σ w·f(x): the recorded VJPs against differences of the gradient."""
    n = len(inputs)
    shape = f(*(mg.tensor(a) for a in inputs)).shape
    w = np.linspace(0.5, 1.5, int(np.prod(shape))).reshape(shape)  # a non-uniform upstream
    for k in range(n):
        def gradient(*xs: mg.Tensor, k: int = k) -> mg.Tensor:
            g = mg.grad(lambda *ys: (f(*ys) * w).sum(), argnums=tuple(range(n)))(*xs)
            return g[k]  # type: ignore[index]

        assert mg.gradcheck(gradient, [mg.tensor(a) for a in inputs]) is True


class TwoGradsForOne(mg.Function):
    @staticmethod
    def forward(ctx: Any, x: np.ndarray) -> np.ndarray:
        return x * 2

    @staticmethod
    def backward(ctx: Any, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return g, g


class WrongShape(mg.Function):
    @staticmethod
    def forward(ctx: Any, x: np.ndarray) -> np.ndarray:
        return x.sum(keepdims=True)

    @staticmethod
    def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
        return np.ones(7)


class OnlyFirst(mg.Function):
    """y = a·b, differentiated with respect to a only (None for b)."""

    @staticmethod
    def forward(ctx: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(b)
        return a * b

    @staticmethod
    def backward(ctx: Any, g: np.ndarray) -> tuple[np.ndarray, None]:
        (b,) = ctx.saved
        return g * b, None


def test_custom_function_misuse_and_none_gradients() -> None:
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="2 gradients for 1 inputs"):
        TwoGradsForOne.apply(x).sum().backward()
    with pytest.raises(RuntimeError, match=r"WrongShape.*\(7,\).*\(2,\)"):
        WrongShape.apply(x).sum().backward()
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    b = mg.tensor([3.0, 4.0], requires_grad=True)
    OnlyFirst.apply(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])
    assert b.grad is None
    # saved arrays of a custom Function are protected like any primitive's: a write to one is
    # refused or harmless (b.detach() shares b's memory, so the tape keeps a copy)
    c = mg.tensor([1.0, 2.0], requires_grad=True)
    y = OnlyFirst.apply(c, b.detach())
    try:
        b.data[0] = 10.0
    except ValueError:
        pass
    y.sum().backward()
    np.testing.assert_array_equal(c.grad, [3.0, 4.0])
