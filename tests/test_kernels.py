"""Every kernel equals the plain rule it stands in for, on edge values.

The kernels run in the default mode and the rules alone in plain mode (MINIGRAD_KERNELS=plain),
so these tests call both directly: they hold in either mode.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from minigrad import graph, kernels, rules
from minigrad.nn import primitives as nn_rows
from minigrad.scatter import add_at

EDGES = [np.nan, np.inf, -np.inf, 800.0, -800.0, -40.0, 0.0, 1.0, -1e-300]


def _rows(k: int, dtype: Any) -> np.ndarray:
    """Every row of k edge values, stacked (enough rows to take the column-by-column path)."""
    rows = np.array(list(itertools.product(EDGES, repeat=k)), dtype=dtype)
    return np.concatenate([rows, np.zeros((64, k), dtype=dtype)])


def _same(got: np.ndarray, want: np.ndarray, dtype: Any) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0)


ROWS = [*rules.TABLE, *(getattr(nn_rows, name) for name in nn_rows.__all__)]
KERNELS_OF_ROWS = [row for row in ROWS if row.run is not row.forward or
                   getattr(kernels, row.name, None) is not None]


def test_every_kernel_names_a_row_and_is_tested() -> None:
    """A kernel in kernels.py is attached to the row of the same name (or to the tape)."""
    attached = {row.name for row in KERNELS_OF_ROWS}
    public = {name for name, value in vars(kernels).items()
              if callable(value) and not name.startswith("_") and value.__module__ ==
              kernels.__name__}
    assert public - attached == {"linear_vjp_x", "linear_vjp_w", "getitem_vjp_into",
                                 "relu_vjp_owned", "log_softmax_vjp_owned"}
    assert rules.linear.vjps[:2] == ((kernels.linear_vjp_x, kernels.linear_vjp_w)
                                     if kernels.ENABLED else rules.linear.rule_vjps[:2])
    assert (rules.getitem.vjp_into is kernels.getitem_vjp_into) == kernels.ENABLED
    for row, kernel in [(rules.relu, kernels.relu_vjp_owned),
                        (rules.log_softmax, kernels.log_softmax_vjp_owned)]:
        assert row.vjp_owned is (kernel if kernels.ENABLED else None)
    assert {row.name for row in ROWS if row.vjp_owned} == (
        {"relu", "log_softmax", "linear_relu"} if kernels.ENABLED else set())
    assert attached == {"softmax", "log_softmax", "linear_relu", "linear", "matmul"}
    for row in KERNELS_OF_ROWS:
        assert (row.run is getattr(kernels, row.name)) == kernels.ENABLED


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_kernels_equal_their_rules(name: str, k: int, dtype: Any) -> None:
    x = _rows(k, dtype)
    row, kernel = getattr(rules, name), getattr(kernels, name)
    with np.errstate(all="ignore"):
        for axis in [(1,), (0,), (0, 1)]:
            _same(kernel(x, axis), row.forward(x, axis), dtype)
        for i in range(0, len(x) - 64, 7):  # a few logits at a time: the Python-float path
            small = x[i:i + max(1, 16 // k)]
            _same(kernel(small, (1,)), row.forward(small, (1,)), dtype)
            for one in (x[i], x[i:i + 1], x[i:i + 2]):  # one observation's logits, or two rows
                axis = (one.ndim - 1,)
                _same(kernel(one, axis), row.forward(one, axis), dtype)
        for i in range(0, len(x) - 64, 5):  # a small batch: fewer than 64 logits in all
            batch = x[i:i + 8]
            _same(kernel(batch, (1,)), row.forward(batch, (1,)), dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_kernels_on_empty_and_3d(name: str) -> None:
    row, kernel = getattr(rules, name), getattr(kernels, name)
    for shape, axis in [((0, 3), (1,)), ((3, 0), (1,)), ((40, 5, 2), (2,)), ((40, 5, 2), (1,))]:
        x = np.random.default_rng(0).normal(size=shape) * 50
        with np.errstate(all="ignore"):
            _same(kernel(x, axis), row.forward(x, axis), np.float64)


@pytest.mark.parametrize("shape,target", [((500, 2), (2,)), ((17, 5, 3), (3,)), ((1, 4), (4,)),
                                          ((3, 4), (1, 4)), ((3, 4), (3, 1)), ((4,), (4,))])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_sum_to_sums_what_broadcasting_added(shape: tuple[int, ...], target: tuple[int, ...],
                                            order: str, dtype: Any) -> None:
    """sum_to (the tape's un-broadcasting, no kernel) equals NumPy's sum over the added and
    stretched axes, also for Fortran-ordered and integer gradients."""
    g = np.asarray(np.random.default_rng(2).normal(size=shape) * 10, dtype=dtype, order=order)
    lead = len(shape) - len(target)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(target)
                                      if n == 1 and shape[lead + i] != 1)
    want = np.sum(g, axis=axes, keepdims=True).reshape(target)
    got = graph.sum_to(g, target)
    assert got.shape == target and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape,w_shape", [((1, 4), (16, 4)), ((500, 4), (128, 4)),
                                             ((4,), (3, 4)), ((2, 3, 4), (5, 4)),
                                             ((0, 4), (3, 4)), ((3, 2), (0, 2)),
                                             ((3, 0), (2, 0))])
def test_linear_vjp_kernels_equal_their_rules(x_shape: tuple[int, ...],
                                              w_shape: tuple[int, ...], dtype: Any) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=x_shape).astype(dtype)
    w = rng.normal(size=w_shape).astype(dtype)
    g = rng.normal(size=x_shape[:-1] + w_shape[:1]).astype(dtype)
    for kernel, rule in zip((kernels.linear_vjp_x, kernels.linear_vjp_w),
                            rules.linear.rule_vjps):
        got, want = kernel(g, None, x, w), rule(g, None, x, w)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


def _picks(shape: tuple[int, ...]) -> list[Any]:
    """Indices of every kind getitem records: element picks with repeats and negatives, row
    picks, mixed, broadcast, boolean, basic."""
    n, m = shape
    r = np.array([0, 1, n - 1, -1, 0, 0, 2])
    c = np.array([1, -1, 0, m - 1, 1, 1, 2])
    return [(r, c), (r.reshape(7, 1), c.reshape(1, 7)), r, (r, 2), (3, c), (r[:1], c[:1]),
            (np.arange(n) % 2 == 0,), (np.arange(n) % 2 == 0, c[:1]), (slice(1, 3), 2),
            (np.array(2), np.array(-1))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_getitem_scatter_kernel_equals_add_at(dtype: Any) -> None:
    """getitem's vjp_into kernel (np.add.at at flat positions for element picks) adds the same
    sums into the buffer as add_at, also onto a buffer that already holds values. (The sweep's
    buffers are C-ordered, as add_at requires: test_sweep_owned checks that.)"""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 5)).astype(dtype)
    for index in _picks(x.shape):
        basic = isinstance(index, tuple) and all(isinstance(i, (int, slice)) for i in index)
        g = rng.normal(size=x[index].shape).astype(dtype)
        start = rng.normal(size=x.shape).astype(dtype)
        got, want = start.copy(), start.copy()
        kernels.getitem_vjp_into(got, g, index, basic)
        add_at(want, index, g, basic)
        plain = start.copy()
        np.add.at(plain, index, g)  # the plain statement
        tol = 1e-5 if dtype == np.float32 else 1e-13  # repeated picks: summed in another order
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        np.testing.assert_allclose(got, plain, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_getitem_scatter_kernel_sums_many_repeats_as_add_at(dtype: Any) -> None:
    """20,000 picks of two elements: the sums as add_at's (float32 summed in float64 and rounded
    once, not rounded at every pick), within a few ulps of the exact sum."""
    rng = np.random.default_rng(8)
    rows = np.zeros(20_000, dtype=np.int64)
    cols = rng.integers(0, 2, size=20_000)
    g = rng.uniform(0.0, 1.0, size=20_000).astype(dtype)
    got, want = np.zeros((3, 2), dtype), np.zeros((3, 2), dtype)
    kernels.getitem_vjp_into(got, g, (rows, cols), False)
    add_at(want, (rows, cols), g, False)
    exact = np.zeros((3, 2))
    np.add.at(exact, (rows, cols), g.astype(np.float64))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, exact, rtol=4 * np.finfo(dtype).eps)


EDGE_G = np.array(EDGES + [-0.0, 2.5, -3.0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_owned_kernel_equals_its_rule(dtype: Any) -> None:
    """Written into ḡ, bit for bit the rule's ḡ·[y > 0], NaN and ±inf in ḡ and y included."""
    g = np.array(list(itertools.product(EDGE_G, repeat=2)), dtype=dtype)
    with np.errstate(invalid="ignore"):
        y = rules.relu.forward(g[:, ::-1].copy())
    g_in = g.copy()
    with np.errstate(invalid="ignore"):  # inf·0
        want = rules.relu.rule_vjps[0](g, y, None)
        got = kernels.relu_vjp_owned(g_in, y, None)[0]
    assert got is g_in and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_log_softmax_owned_kernel_equals_its_rule(k: int, dtype: Any) -> None:
    x = _rows(k, dtype)
    with np.errstate(all="ignore"):
        for axis in [(1,), (0,), (0, 1)]:
            y = rules.log_softmax.forward(x, axis)
            g = np.resize(EDGE_G, x.shape).astype(dtype)[::-1].copy()
            want = rules.log_softmax.rule_vjps[0](g, y, x, axis)
            g_in = g.copy()
            got = kernels.log_softmax_vjp_owned(g_in, y, x, axis)[0]
            assert got is g_in
            _same(got, want, dtype)


# Operand pairs for the small-product kernels: 2-D of one float dtype (ndarray.dot) on both sides
# of the size limit, with an empty axis among them; and what takes matmul: mixed dtypes,
# integers, 1-D and 3-D operands. Each in C and Fortran order (ndarray.dot), as np.matrix (matmul)
# and as views with negative strides (ndarray.dot, which copies them first).
_PRODUCTS = [((1, 4), (4, 16), "d", "d"), ((3, 5), (5, 2), "f", "f"), ((5, 3), (3, 2), "d", "d"),
             ((4, 7), (7, 1), "d", "d"), ((20, 64), (64, 30), "f", "f"),
             ((100, 4), (4, 40), "d", "d"), ((100, 4), (4, 41), "d", "d"),
             ((2, 3), (3, 4), "f", "d"), ((2, 3), (3, 4), "l", "l"), ((3,), (3, 4), "d", "d"),
             ((2, 2, 3), (3, 4), "d", "d"), ((0, 3), (3, 4), "d", "d"), ((2, 0), (0, 4), "f", "f")]


def _operands(a_shape: tuple[int, ...], b_shape: tuple[int, ...], a_type: str, b_type: str,
              layout: str) -> tuple[Any, Any]:
    rng = np.random.default_rng(11)
    a = rng.normal(size=a_shape).astype(a_type) * 3
    b = rng.normal(size=b_shape).astype(b_type) * 3
    if a.ndim == 2 and len(a) >= 3 and a.shape[1] and a.dtype.kind == "f":
        a[0, 0], a[1, -1], a[2, 0] = np.nan, np.inf, -np.inf  # three rows not finite, the rest so
    if layout == "F":
        a, b = np.asfortranarray(a), np.asfortranarray(b)
    elif layout == "matrix" and a.ndim == b.ndim == 2:
        a, b = np.asmatrix(a), np.asmatrix(b)
    elif layout == "reversed":  # the same values on a negative stride: a reversed copy, reversed
        a = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
        b = np.ascontiguousarray(b[..., ::-1])[..., ::-1]
    return a, b


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("layout", ["C", "F", "matrix", "reversed"])
@pytest.mark.parametrize("a_shape,b_shape,a_type,b_type", _PRODUCTS)
def test_small_product_kernels_equal_their_rules(a_shape: tuple[int, ...],
                                                 b_shape: tuple[int, ...], a_type: str,
                                                 b_type: str, layout: str) -> None:
    """matmul's and linear's kernels (ndarray.dot for small 2-D float products, else the rule's
    own expression) give the rule's dtype, shape, type and bits, with and without a bias, and
    leave their inputs as they were. On a view with negative strides, where matmul multiplies in
    its own loop and dot copies first, the last bit may differ."""
    a, b = _operands(a_shape, b_shape, a_type, b_type, layout)
    w = b.T  # linear's weight is (out, in)
    bias = np.linspace(-1, 1, b.shape[-1]).astype(b_type)
    before = [a.copy(), b.copy(), bias.copy()]
    with np.errstate(invalid="ignore"):  # inf · 0
        pairs = [(kernels.matmul(a, b), rules.matmul.forward(a, b))]
        for args in [(a, w), (a, w, bias), (a, w, 0.5)]:
            pairs.append((kernels.linear(*args), rules.linear.forward(*args)))
    for got, want in pairs:
        assert type(got) is type(want) and got.dtype == want.dtype and got.shape == want.shape
        if layout == "reversed":
            np.testing.assert_allclose(got, want, rtol=4 * np.finfo(want.dtype).eps
                                       if want.dtype.kind == "f" else 0)
        else:
            np.testing.assert_array_equal(got, want)
    for value, copy in zip((a, b, bias), before):
        np.testing.assert_array_equal(value, copy)


@pytest.mark.parametrize("copies", [1, 10])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", ["none", "row", "scalar", "float64", "python", "2-d"])
def test_linear_relu_kernel_equals_its_rule(dtype: Any, bias: str, copies: int) -> None:
    """A small product through ndarray.dot; an activation-sized one (10 copies of the rows) with
    the bias added in its own array where the bias neither casts nor broadcasts it; the rule's
    own expression otherwise (a float64 bias on float32, a bias of more axes): same values,
    dtype and shape, NaN and ±inf included."""
    x = np.tile(_rows(2, dtype), (copies, 1))
    w = np.array([[1.0, -1.0], [0.5, 2.0], [-3.0, 0.0]], dtype)
    b = {"none": None, "row": np.array([0.0, -1.0, 2.0], dtype), "scalar": np.array(1.5, dtype),
         "float64": np.array([0.0, -1.0, 2.0]), "python": -0.25,
         "2-d": np.ones((len(x), 3), dtype)}[bias]
    args = (x, w) if b is None else (x, w, b)
    with np.errstate(invalid="ignore", over="ignore"):  # inf − inf, float32 overflow
        want = nn_rows.linear_relu.forward(*args)
        got = kernels.linear_relu(*args)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert kernels.linear_relu(np.ones((2, 2), int), np.ones((3, 2), int)).dtype.kind == "i"


@pytest.mark.parametrize("bias", [True, False])
def test_linear_relu_owned_vjps_equal_the_rules(bias: bool) -> None:
    """The owned kernel writes ḡ·[y > 0] into ḡ, then linear's VJPs: the rule's values."""
    rng = np.random.default_rng(5)
    x, w, b = rng.normal(size=(300, 4)), rng.normal(size=(8, 4)), rng.normal(size=8)
    args = (x, w, b) if bias else (x, w)
    y = nn_rows.linear_relu.forward(*args)
    g = rng.normal(size=y.shape)
    want = nn_rows.linear_relu.vjp_all(g, y, *args)
    if not kernels.ENABLED:
        assert nn_rows.linear_relu.vjp_owned is None
        pytest.skip("plain mode: the row has no owned kernel")
    g_in = g.copy()
    got = nn_rows.linear_relu.vjp_owned(g_in, y, *args)
    assert got.gz is g_in  # ḡ·[y > 0] written into ḡ, then the linear's upstream
    for i in range(3 if bias else 2):
        np.testing.assert_allclose(got[i], want[i], rtol=1e-13, atol=1e-15)
