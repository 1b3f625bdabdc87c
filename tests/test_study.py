"""The study transforms against finite differences, custom Functions, and the tape tools on a
small network. Property tests run under the deterministic "ci" hypothesis profile
(tests/conftest.py); all finite differences are central and in float64."""

from __future__ import annotations

import re
import runpy
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import minigrad as mg

Fn = Callable[..., mg.Tensor]

# Smooth on the whole input range, so finite differences are exact to rounding.
SCALAR_FUNCTIONS: dict[str, Fn] = {
    "tanh(x)·x": lambda x: (x.tanh() * x).sum(),
    "softmax(x)·x": lambda x: (x.softmax(axis=-1) * x).sum(),
    "logsumexp(x²)": lambda x: mg.logsumexp(x * x, axis=-1).sum(),
    "sigmoid(x)·exp(x/2)": lambda x: (x.sigmoid() * (0.5 * x).exp()).sum(),
    "sqrt(Σx² + 1)": lambda x: ((x * x).sum() + 1.0).sqrt(),
    "x³·Σx": lambda x: (x ** 3 * x.sum()).sum(),
    "repeated index": lambda x: (x.reshape(-1)[np.array([0, 0, -1])] ** 2 * x.mean()).sum(),
    "log_softmax·x": lambda x: (x.log_softmax(axis=-1) * x.exp()).sum(),
    "1/(1+x²)": lambda x: (1.0 / (1.0 + x * x)).sum(),
    # kinks at 0, but the second derivative is continuous: finite differences straddling the
    # kink are off by O(ε), so these get a looser tolerance
    "relu(x)³": lambda x: (x.relu() ** 3).sum(),
    "|x|³ + max(x, 0)³": lambda x: (x.abs() ** 3 + mg.maximum(x, 0.0) ** 3).sum(),
    "where(x>0, x, x/2)³": lambda x: (mg.where(x.numpy() > 0, x, x * 0.5) ** 3).sum(),
}
KINKED = {"relu(x)³", "|x|³ + max(x, 0)³", "where(x>0, x, x/2)³"}
VECTOR_FUNCTIONS: dict[str, Fn] = {
    "tanh(x)·x": lambda x: x.tanh() * x,
    "softmax": lambda x: x.softmax(axis=-1),
    "concat(exp x, Σx)": lambda x: mg.concatenate([x.reshape(-1).exp(), x.sum().reshape(1)]),
    "outer log_softmax": lambda x: (x.reshape(-1, 1) * x.reshape(1, -1)).log_softmax(axis=0),
    "transpose·x": lambda x: x.T @ x if x.ndim == 2 else x * x.sum(),
}

points = arrays(np.float64, array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=3),
                elements=st.floats(-2, 2, allow_nan=False, width=64))


def like(x: np.ndarray) -> st.SearchStrategy[np.ndarray]:
    """A direction of x's shape."""
    return arrays(np.float64, x.shape, elements=st.floats(-1, 1, allow_nan=False, width=64))


def value(f: Fn, *xs: np.ndarray) -> np.ndarray:
    with mg.no_grad():
        return f(*(mg.tensor(x) for x in xs)).numpy().astype(np.float64)


def fd_directional(f: Fn, xs: tuple[np.ndarray, ...], ts: tuple[np.ndarray, ...],
                   eps: float = 1e-6) -> np.ndarray:
    """(f(x + εt) − f(x − εt)) / 2ε: the derivative of f along t."""
    plus = value(f, *(x + eps * t for x, t in zip(xs, ts)))
    minus = value(f, *(x - eps * t for x, t in zip(xs, ts)))
    return (plus - minus) / (2 * eps)


def fd_hessian(f: Fn, x: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Second differences of f's values only (no gradient from the engine):
    H_ij ≈ [f(x+εeᵢ+εeⱼ) − f(x+εeᵢ−εeⱼ) − f(x−εeᵢ+εeⱼ) + f(x−εeᵢ−εeⱼ)] / 4ε²."""
    n = x.size
    h = np.zeros((n, n))
    basis = np.eye(n).reshape((n, *x.shape)) * eps
    for i in range(n):
        for j in range(i, n):
            ei, ej = basis[i], basis[j]
            h[i, j] = h[j, i] = (value(f, x + ei + ej) - value(f, x + ei - ej)
                                 - value(f, x - ei + ej) + value(f, x - ei - ej)) / (4 * eps**2)
    return h.reshape(x.shape + x.shape)


# ---------------------------------------------------------------------------------------------
# jvp, hvp, hessian
# ---------------------------------------------------------------------------------------------
@given(st.sampled_from(sorted(VECTOR_FUNCTIONS)), points.flatmap(lambda x: st.tuples(
    st.just(x), like(x))))
def test_jvp_matches_finite_differences_and_the_jacobian(name: str, xt: tuple) -> None:
    f = VECTOR_FUNCTIONS[name]
    x, t = xt
    out, tangent_out = mg.jvp(f, (x,), (t,))
    np.testing.assert_allclose(out.numpy(), value(f, x), rtol=1e-12, atol=1e-12)
    assert tangent_out.shape == out.shape and tangent_out.dtype == np.float64
    np.testing.assert_allclose(tangent_out.numpy(), fd_directional(f, (x,), (t,)),
                               rtol=1e-6, atol=1e-7)
    jac = mg.jacobian(f, x)  # out.shape + x.shape, one VJP per output element
    np.testing.assert_allclose(tangent_out.numpy(),
                               np.tensordot(jac, t, axes=t.ndim), rtol=1e-10, atol=1e-12)


@given(st.sampled_from(sorted(SCALAR_FUNCTIONS)), points)
def test_hessian_matches_finite_differences_and_jacobian_of_grad(name: str, x: np.ndarray) -> None:
    f = SCALAR_FUNCTIONS[name]
    h = mg.hessian(f, x)
    assert h.shape == x.shape + x.shape
    np.testing.assert_allclose(h, fd_hessian(f, x), rtol=1e-5,
                               atol=1e-3 if name in KINKED else 1e-5)
    np.testing.assert_allclose(h, mg.jacobian(mg.grad(f), x), rtol=1e-12, atol=1e-12)
    flat = h.reshape(x.size, x.size)
    np.testing.assert_allclose(flat, flat.T, rtol=1e-9, atol=1e-10)  # symmetric


@given(st.sampled_from(sorted(SCALAR_FUNCTIONS)), points.flatmap(lambda x: st.tuples(
    st.just(x), like(x))))
def test_hvp_matches_finite_differences_and_the_hessian(name: str, xv: tuple) -> None:
    f = SCALAR_FUNCTIONS[name]
    x, v = xv
    hv = mg.hvp(f, x, v)
    assert hv.shape == x.shape
    # the derivative of the gradient along v, with the gradient from first-order reverse mode
    grad_f = mg.grad(f)
    np.testing.assert_allclose(hv.numpy(), fd_directional(grad_f, (x,), (v,)), rtol=1e-6,
                               atol=1e-4 if name in KINKED else 1e-6)
    h = mg.hessian(f, x).reshape(x.size, x.size)
    np.testing.assert_allclose(hv.numpy().reshape(-1), h @ v.reshape(-1), rtol=1e-9,
                               atol=1e-10)
    # forward-over-reverse gives the same product
    _, hv_fwd = mg.jvp(grad_f, (x,), (v,))
    np.testing.assert_allclose(hv_fwd.numpy(), hv.numpy(), rtol=1e-9, atol=1e-10)


def three_inputs(a: mg.Tensor, b: mg.Tensor, c: mg.Tensor) -> mg.Tensor:
    """a (n,), b (2, n) broadcast against a, c a scalar."""
    return (a * b).tanh() * c + mg.logsumexp(b, axis=-1).reshape(2, 1) - a.sigmoid() * c * c


@given(st.integers(1, 4).flatmap(lambda n: st.tuples(*(
    arrays(np.float64, shape, elements=st.floats(-2, 2, allow_nan=False, width=64))
    for shape in [(n,), (2, n), (), (n,), (2, n), ()]))))
def test_jvp_of_a_multi_input_function(data: tuple[np.ndarray, ...]) -> None:
    primals, tangents = data[:3], data[3:]
    out, tangent_out = mg.jvp(three_inputs, primals, tangents)
    assert out.shape == tangent_out.shape == (2, primals[0].size)
    np.testing.assert_allclose(tangent_out.numpy(), fd_directional(three_inputs, primals, tangents),
                               rtol=1e-6, atol=1e-7)
    # linear in the tangents: the sum of one-input-at-a-time products
    zeros = [np.zeros_like(t) for t in tangents]
    parts = [mg.jvp(three_inputs, primals, [t if k == i else zeros[k] for k in range(3)])[1]
             for i, t in enumerate(tangents)]
    np.testing.assert_allclose(tangent_out.numpy(), sum(p.numpy() for p in parts), rtol=1e-10,
                               atol=1e-12)
    # and each part is that input's Jacobian applied to its tangent
    for i, (p, t) in enumerate(zip(parts, tangents)):
        def only_i(x: mg.Tensor, i: int = i) -> mg.Tensor:
            return three_inputs(*[x if k == i else mg.tensor(primals[k]) for k in range(3)])
        jac = mg.jacobian(only_i, primals[i])
        np.testing.assert_allclose(p.numpy(), np.tensordot(jac, t, axes=t.ndim), rtol=1e-10,
                                   atol=1e-12)


def test_jvp_accepts_tensors_and_lists_and_returns_zeros_off_the_tape() -> None:
    out, tan = mg.jvp(lambda a: a.sum(), [mg.tensor([1.0, 2.0])], [mg.tensor([1.0, 3.0])])
    assert (out.item(), tan.item()) == (3.0, 4.0)
    out, tan = mg.jvp(lambda a: mg.tensor([5.0]), (np.ones(2),), (np.ones(2),))
    assert tan.numpy().tolist() == [0.0]
    with pytest.raises(ValueError, match="tangent 0 has shape"):
        mg.jvp(lambda a: a, (np.ones(2),), (np.ones(3),))


# ---------------------------------------------------------------------------------------------
# custom Functions
# ---------------------------------------------------------------------------------------------
def sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


class Softplus(mg.Function):
    """y = log(1 + eˣ), computed as max(x, 0) + log1p(e^−|x|);  x̄ = ḡ·sigmoid(x)"""

    @staticmethod
    def forward(ctx: mg.FunctionCtx, x: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(x)
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))

    @staticmethod
    def backward(ctx: mg.FunctionCtx, g: np.ndarray) -> np.ndarray:
        (x,) = ctx.saved
        return g * sigmoid(x)


class WrongSoftplus(Softplus):
    @staticmethod
    def backward(ctx: mg.FunctionCtx, g: np.ndarray) -> np.ndarray:
        (x,) = ctx.saved
        return g * sigmoid(-x)  # the sign slipped


class ScaledProduct(mg.Function):
    """y = a·b·s for arrays a, b (broadcast) and a scalar s;  ā = ḡ·b·s, b̄ = ḡ·a·s, s̄ = Σ ḡ·a·b"""

    @staticmethod
    def forward(ctx: mg.FunctionCtx, a: np.ndarray, b: np.ndarray, s: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a, b, s)
        return a * b * s

    @staticmethod
    def backward(ctx: mg.FunctionCtx, g: np.ndarray) -> tuple[np.ndarray, ...]:
        a, b, s = ctx.saved
        return g * b * s, g * a * s, (g * a * b).sum()


def test_gradcheck_passes_a_correct_custom_function() -> None:
    x = mg.tensor(np.array([-30.0, -1.0, 0.0, 0.5, 3.0, 30.0]))
    assert mg.gradcheck(Softplus.apply, x)
    y = Softplus.apply(mg.tensor([1000.0, -1000.0], requires_grad=True))
    assert np.allclose(y.numpy(), [1000.0, 0.0])  # no overflow at either end
    rng = np.random.default_rng(1)
    args = [mg.tensor(rng.normal(size=(2, 3))), mg.tensor(rng.normal(size=3)), mg.tensor(0.7)]
    assert mg.gradcheck(ScaledProduct.apply, args)


def test_gradcheck_catches_a_wrong_vjp() -> None:
    x = mg.tensor(np.array([-1.0, 0.5, 2.0]))
    with pytest.raises(mg.GradcheckError, match=r"input 0 at index \(0,\).*analytic.*numerical"):
        mg.gradcheck(WrongSoftplus.apply, x)
    assert issubclass(mg.GradcheckError, RuntimeError)


def test_custom_function_is_first_order_in_forward_mode() -> None:
    with pytest.raises(RuntimeError, match="first-order only"):
        mg.jvp(Softplus.apply, (np.ones(2),), (np.ones(2),))


def test_custom_function_refuses_second_order_reverse_mode() -> None:
    with pytest.raises(RuntimeError, match="first-order only"):
        mg.hessian(lambda t: Softplus.apply(t).sum(), np.ones(2))


# ---------------------------------------------------------------------------------------------
# tape and DOT export on a small network
# ---------------------------------------------------------------------------------------------
def small_network() -> tuple[mg.Tensor, dict[str, mg.Tensor]]:
    """Two linear layers, tanh, cross-entropy: logits = tanh(x W1ᵀ + b1) W2ᵀ + b2."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 4)), rng.integers(0, 3, size=8)
    params = {"W1": mg.tensor(rng.normal(size=(5, 4)), requires_grad=True),
              "b1": mg.zeros(5, requires_grad=True),
              "W2": mg.tensor(rng.normal(size=(3, 5)), requires_grad=True),
              "b2": mg.zeros(3, requires_grad=True)}
    h = (x @ params["W1"].T + params["b1"]).tanh()
    logits = h @ params["W2"].T + params["b2"]
    loss = -logits.log_softmax(axis=-1)[np.arange(8), y].mean()
    return loss, params


BACKWARD_ORDER = ["negative", "mean", "getitem", "log_softmax", "add", "matmul",
                  "transpose", "tanh", "add", "matmul", "transpose"]


def test_tape_of_a_small_network() -> None:
    loss, params = small_network()
    t = mg.tape(loss, names=params)
    assert len(t) == 11 and t.ops == BACKWARD_ORDER
    assert [r.name for r in t.leaves] == ["W1", "b1", "W2", "b2"]
    assert all(r.op == "leaf" and r.saved_bytes == 0 for r in t.leaves)
    done: set[int] = set()  # an op's VJP runs only after every op that uses its output
    for row in t.rows:
        assert not done.intersection(i for i in row.inputs if isinstance(i, int))
        done.add(row.id)
    saved = {r.op: r.saved_bytes for r in t.rows}
    assert saved["log_softmax"] == 8 * 3 * 8  # reads its output
    assert saved["tanh"] == 8 * 5 * 8  # reads its output
    assert saved["add"] == saved["transpose"] == saved["negative"] == 0
    assert saved["getitem"] == 2 * 8 * 8  # two int64 index arrays of 8
    assert t.total_saved_bytes == sum(r.saved_bytes for r in t.rows)
    text = str(t)
    assert text.splitlines()[0].startswith("tape: 11 ops")
    assert f"saved for backward: {t.total_saved_bytes:,} B" in text
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in params.values())


def test_dot_export_of_a_small_network() -> None:
    loss, params = small_network()
    src = mg.to_dot(loss, names=params)
    ops = re.findall(r'\[shape=box, style=rounded, label="(\w+)\\nVJP #(\d+)"\]', src)
    assert sorted(ops, key=lambda o: int(o[1])) == [
        (name, str(k)) for k, name in enumerate(BACKWARD_ORDER, 1)]
    ellipses = re.findall(r"^\s*(t\d+) \[shape=ellipse", src, re.M)
    assert len(ellipses) == 11 + 4  # one per op output and per leaf
    for name in params:
        assert re.search(rf'label="%\d+ {name}\\n[^"]*", style=filled', src)
    assert src.count("peripheries=2") == 1
    assert src.count("{") == src.count("}") == 1
    declared = set(re.findall(r"^\s*(\w+) \[", src, re.M)) - {"node", "edge"}
    edges = re.findall(r"^\s*(\w+) -> (\w+)", src, re.M)
    assert {n for edge in edges for n in edge} == declared
    assert all(a.startswith(("t", "c")) != b.startswith(("t", "c")) for a, b in edges)  # bipartite
    if shutil.which("dot"):
        done = subprocess.run(["dot", "-Tsvg"], input=src, capture_output=True, text=True,
                              timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count('class="node"') == len(declared)


def test_custom_function_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "custom_function.py"
    assert runpy.run_path(str(path))["main"]([]) == 0  # its main, without pytest's argv
    out = capsys.readouterr().out
    assert "raised GradcheckError" in out and "Softplus" in out
