"""The transforms on pytrees (dicts, lists and tuples nesting Tensors and arrays), `has_aux`, and
the results they refuse: a tuple or list from f without has_aux, or more than one element, is a
TypeError, never a silent zero gradient."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg

SEEDS = st.integers(0, 2**32 - 1)
Params = namedtuple("Params", ["w", "b"])


def _mse(x: np.ndarray, w: Any, b: Any) -> Any:
    return ((mg.linear(x, w, b)) ** 2).sum()


def _mse_grads(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σ (x wᵀ + b)²:  w̄ = 2 rᵀ x,  b̄ = 2 Σ_rows r,  with r = x wᵀ + b."""
    r = x @ w.T + b
    return 2 * r.T @ x, 2 * r.sum(axis=0)


@pytest.fixture
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 3)), rng.normal(size=(2, 3)), rng.normal(size=2)


# --------------------------------------------------------------------------------------------
# pytrees in, the same structure out
# --------------------------------------------------------------------------------------------
def test_a_dict_of_parameters_gives_a_dict_of_gradients_with_its_keys_in_order(problem: Any
                                                                               ) -> None:
    x, w, b = problem
    gw, gb = _mse_grads(x, w, b)
    params = {"weight": w, "bias": b}
    value, grads = mg.value_and_grad(lambda p: _mse(x, p["weight"], p["bias"]))(params)
    assert list(grads) == ["weight", "bias"]
    assert all(isinstance(g, mg.Tensor) for g in grads.values())
    np.testing.assert_allclose(grads["weight"].data, gw, rtol=1e-12)
    np.testing.assert_allclose(grads["bias"].data, gb, rtol=1e-12)
    np.testing.assert_allclose(value.item(), ((x @ w.T + b) ** 2).sum(), rtol=1e-12)
    reordered = mg.grad(lambda p: _mse(x, p["weight"], p["bias"]))({"bias": b, "weight": w})
    assert list(reordered) == ["bias", "weight"]
    assert params["weight"] is w  # the caller's structure is left alone


@pytest.mark.parametrize("make", [
    lambda w, b: [w, b], lambda w, b: (w, b), lambda w, b: Params(w, b),
    lambda w, b: [mg.tensor(w), b], lambda w, b: (w, mg.tensor(b)),
], ids=["list", "tuple", "namedtuple", "list with a Tensor", "tuple with a Tensor"])
def test_lists_tuples_and_namedtuples_keep_their_type(problem: Any, make: Any) -> None:
    x, w, b = problem
    gw, gb = _mse_grads(x, w, b)
    params = make(w, b)
    grads = mg.grad(lambda p: _mse(x, p[0], p[1]))(params)
    assert type(grads) is type(params) and len(grads) == 2
    np.testing.assert_allclose(grads[0].data, gw, rtol=1e-12)
    np.testing.assert_allclose(grads[1].data, gb, rtol=1e-12)


def test_nested_containers_none_and_numbers(problem: Any) -> None:
    x, w, b = problem
    gw, gb = _mse_grads(x, w, b)
    tree = {"layer": [{"w": w, "b": b}], "scale": (2.0, None)}

    def f(p: Any) -> Any:
        layer = p["layer"][0]
        return _mse(x, layer["w"], layer["b"]) * p["scale"][0]

    grads = mg.grad(f)(tree)
    assert set(grads) == {"layer", "scale"} and type(grads["layer"]) is list
    assert grads["scale"][1] is None  # None is no leaf: no gradient
    np.testing.assert_allclose(grads["layer"][0]["w"].data, 2.0 * gw, rtol=1e-12)
    np.testing.assert_allclose(grads["layer"][0]["b"].data, 2.0 * gb, rtol=1e-12)
    np.testing.assert_allclose(grads["scale"][0].item(), ((x @ w.T + b) ** 2).sum(), rtol=1e-12)


def test_a_list_of_plain_numbers_is_still_one_array() -> None:
    g = mg.grad(lambda t: (t * t).sum())([1.0, 2.0, 3.0])
    assert isinstance(g, mg.Tensor)
    np.testing.assert_array_equal(g.data, [2.0, 4.0, 6.0])
    g2 = mg.grad(lambda t: (t * t).sum())([[1.0, 2.0], [3.0, 4.0]])
    assert isinstance(g2, mg.Tensor) and g2.shape == (2, 2)


def test_argnums_with_several_pytrees(problem: Any) -> None:
    x, w, b = problem
    gw, gb = _mse_grads(x, w, b)
    f = lambda s, p, q: _mse(x, p["w"], q[0]) * s  # noqa: E731
    g_p, g_q = mg.grad(f, argnums=(1, 2))(1.5, {"w": w}, [b])
    np.testing.assert_allclose(g_p["w"].data, 1.5 * gw, rtol=1e-12)
    np.testing.assert_allclose(g_q[0].data, 1.5 * gb, rtol=1e-12)


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> Any:
    """A random pytree of small float64 arrays."""
    kind = draw(st.sampled_from(["array", "dict", "list", "tuple"] if depth < 3 else ["array"]))
    if kind == "array":
        return draw(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=3),
                               elements=st.floats(-2, 2)))
    children = [draw(trees(depth + 1)) for _ in range(draw(st.integers(1, 3)))]
    if kind == "dict":
        return {f"k{len(children) - i}": c for i, c in enumerate(children)}
    return children if kind == "list" else tuple(children)


def _same_structure(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert type(b) is dict and list(a) == list(b)
        for k in a:
            _same_structure(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(b) is type(a) and len(b) == len(a)
        for u, v in zip(a, b):
            _same_structure(u, v)
    else:
        assert isinstance(b, mg.Tensor) and b.shape == np.shape(a) and b.dtype == np.float64


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [v for k in tree for v in _leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [v for c in tree for v in _leaves(c)]
    return [tree]


@given(tree=trees(), seed=SEEDS)
def test_any_tree_gets_each_leafs_own_gradient(tree: Any, seed: int) -> None:
    """f = Σ_leaves Σ cᵢ·sin(leafᵢ): each leaf's gradient is cᵢ·cos(leafᵢ), in its place."""
    leaves = _leaves(tree)
    rng = np.random.default_rng(seed)
    coefs = [rng.normal(size=np.shape(a)) for a in leaves]

    def f(p: Any) -> Any:
        return sum(((mg.sin(leaf) * c).sum() for leaf, c in zip(_leaves(p), coefs)),
                   mg.tensor(0.0))

    grads = mg.grad(f)(tree)
    _same_structure(tree, grads)
    for g, a, c in zip(_leaves(grads), leaves, coefs):
        np.testing.assert_allclose(g.data, c * np.cos(a), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------------------------
# has_aux
# --------------------------------------------------------------------------------------------
def test_has_aux_returns_aux_detached_and_untouched(problem: Any) -> None:
    x, w, b = problem
    gw, _ = _mse_grads(x, w, b)
    tag = object()

    def f(p: Any) -> Any:
        logits = mg.linear(x, p, b)
        return (logits ** 2).sum(), {"logits": logits, "tag": tag, "n": 5}

    (value, aux), g = mg.value_and_grad(f, has_aux=True)(w)
    np.testing.assert_allclose(g.data, gw, rtol=1e-12)
    np.testing.assert_allclose(value.item(), ((x @ w.T + b) ** 2).sum(), rtol=1e-12)
    assert aux["tag"] is tag and aux["n"] == 5
    assert isinstance(aux["logits"], mg.Tensor) and not aux["logits"].requires_grad
    np.testing.assert_allclose(aux["logits"].data, x @ w.T + b, rtol=1e-12)
    g2, aux2 = mg.grad(f, has_aux=True)(w)
    np.testing.assert_allclose(g2.data, gw, rtol=1e-12)
    assert aux2["tag"] is tag
    # a list pair is a pair too, and aux may be a plain number
    g3, n = mg.grad(lambda p: [(p * p).sum(), 7], has_aux=True)(np.array([1.0, 2.0]))
    assert n == 7
    np.testing.assert_array_equal(g3.data, [2.0, 4.0])


def test_has_aux_inside_another_transform_keeps_aux_on_the_tape() -> None:
    """d/dx of aux = x³ (carried out of an inner grad) is 3x²; the inner gradient 2x nests too."""
    x0 = np.array([0.5, -1.5])

    def inner(t: Any) -> Any:
        return (t * t).sum(), t ** 3

    def outer(t: Any) -> Any:
        g, aux = mg.grad(inner, has_aux=True)(t)
        assert aux.requires_grad
        return (g * 2.0).sum() + aux.sum()

    np.testing.assert_allclose(mg.grad(outer)(x0).data, 4.0 + 3 * x0 ** 2, rtol=1e-12)


@pytest.mark.parametrize("result", [
    lambda t: (t * t).sum(), lambda t: ((t * t).sum(),), lambda t: ((t * t).sum(), 1, 2),
    lambda t: {"loss": (t * t).sum()},
], ids=["a Tensor", "a 1-tuple", "a 3-tuple", "a dict"])
def test_has_aux_wants_a_pair(result: Any) -> None:
    with pytest.raises(TypeError, match=r"has_aux=True, f must return a pair \(value, aux\)"):
        mg.grad(result, has_aux=True)(np.ones(2))


# --------------------------------------------------------------------------------------------
# what f may not return: never a silent zero
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("result", [
    lambda l: (l,), lambda l: [l], lambda l: (l, l * 2.0), lambda l: (l, 1.0),
    lambda l: {"loss": l},
], ids=["(loss,)", "[loss]", "(loss, aux Tensor)", "(loss, 1.0)", "{'loss': loss}"])
def test_a_container_from_f_without_has_aux_is_a_type_error(result: Any) -> None:
    w = np.ones((2, 3))
    x = np.ones((4, 3))
    f = lambda v: result((mg.linear(x, v) ** 2).sum())  # noqa: E731
    for transform in (mg.grad, mg.value_and_grad):
        with pytest.raises(TypeError, match="has_aux=True"):
            transform(f)(w)
    with pytest.raises(TypeError, match="vjp: f must return one Tensor"):
        mg.vjp(f, w)
    with pytest.raises(TypeError, match="jvp: f must return one Tensor"):
        mg.jvp(f, (w,), (np.ones_like(w),))


def test_more_than_one_element_is_a_type_error_naming_the_shape() -> None:
    with pytest.raises(TypeError, match=r"one element, got shape \(3,\)") as info:
        mg.grad(lambda t: t * 2.0)(np.ones(3))
    assert isinstance(info.value, (ValueError, RuntimeError))  # shape misuse, as before


def test_a_leaf_that_is_not_a_number_names_the_argument() -> None:
    with pytest.raises(TypeError, match="grad: argument 1 holds a str"):
        mg.grad(lambda a, p: (a * p["w"]).sum(), argnums=(0, 1))(np.ones(2),
                                                                {"w": np.ones(2), "n": "x"})


# --------------------------------------------------------------------------------------------
# nesting, vjp, jvp
# --------------------------------------------------------------------------------------------
def test_grad_of_grad_through_a_dict() -> None:
    """f = Σ w²·v³ with p = {w, v}: the Hessian-vector product with direction d = {dw, dv}
    is ∇⟨∇f, d⟩ = {2v³·dw + 6w·v²·dv, 6w·v²·dw + 6w²·v·dv}."""
    rng = np.random.default_rng(3)
    w, v, dw, dv = (rng.normal(size=3) for _ in range(4))
    f = lambda p: (p["w"] ** 2 * p["v"] ** 3).sum()  # noqa: E731

    def directional(p: Any) -> Any:
        g = mg.grad(f)(p)
        return (g["w"] * dw).sum() + (g["v"] * dv).sum()

    hv = mg.grad(directional)({"w": w, "v": v})
    np.testing.assert_allclose(hv["w"].data, 2 * v ** 3 * dw + 6 * w * v ** 2 * dv, rtol=1e-12)
    np.testing.assert_allclose(hv["v"].data, 6 * w * v ** 2 * dw + 6 * w ** 2 * v * dv,
                               rtol=1e-12)


def test_leaves_on_a_tape_keep_the_gradient_differentiable() -> None:
    w = mg.tensor([0.3, -0.4], requires_grad=True)
    g = mg.grad(lambda p: (p["w"] ** 3).sum())({"w": w})
    assert g["w"].requires_grad and w.grad is None
    g["w"].sum().backward()  # d/dw Σ 3w² = 6w
    np.testing.assert_allclose(w.grad, 6 * w.data, rtol=1e-12)


def test_vjp_on_pytrees(problem: Any) -> None:
    x, w, b = problem
    out, vjp_fn = mg.vjp(lambda p, s: mg.linear(x, p["w"], p["b"]) * s, {"w": w, "b": b}, 2.0)
    u = np.random.default_rng(1).normal(size=out.shape)
    g_p, g_s = vjp_fn(u)
    assert list(g_p) == ["w", "b"]
    np.testing.assert_allclose(g_p["w"].data, 2.0 * u.T @ x, rtol=1e-12)
    np.testing.assert_allclose(g_p["b"].data, 2.0 * u.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(g_s.item(), (u * (x @ w.T + b)).sum(), rtol=1e-12)


def test_jvp_on_pytrees(problem: Any) -> None:
    x, w, b = problem
    rng = np.random.default_rng(2)
    dw, db = rng.normal(size=w.shape), rng.normal(size=b.shape)
    out, tangent = mg.jvp(lambda p: mg.linear(x, p["w"], p["b"]), ({"w": w, "b": b},),
                          ({"w": dw, "b": db},))
    np.testing.assert_allclose(out.data, x @ w.T + b, rtol=1e-12)
    np.testing.assert_allclose(tangent.data, x @ dw.T + db, rtol=1e-12)
    with pytest.raises(ValueError, match="tangent 0 is not structured as primal 0"):
        mg.jvp(lambda p: p["w"].sum(), ({"w": w, "b": b},), ({"w": dw},))
