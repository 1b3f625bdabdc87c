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

EDGES = [np.nan, np.inf, -np.inf, 800.0, -800.0, -40.0, 0.0, 1.0, -1e-300]


def _rows(k: int, dtype: Any) -> np.ndarray:
    """Every row of k edge values, stacked (enough rows to take the column-by-column path)."""
    rows = np.array(list(itertools.product(EDGES, repeat=k)), dtype=dtype)
    return np.concatenate([rows, np.zeros((64, k), dtype=dtype)])


def _same(got: np.ndarray, want: np.ndarray, dtype: Any) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0)


KERNELS_OF_ROWS = [row for row in rules.TABLE if row.run is not row.forward or
                   getattr(kernels, row.name, None) is not None]


def test_every_kernel_names_a_row_and_is_tested() -> None:
    """A kernel in kernels.py is attached to the row of the same name (or to the tape)."""
    attached = {row.name for row in KERNELS_OF_ROWS}
    public = {name for name, value in vars(kernels).items()
              if callable(value) and not name.startswith("_") and value.__module__ ==
              kernels.__name__}
    assert public - attached == {"linear_vjp_x", "linear_vjp_w"}
    assert rules.linear.vjps[:2] == ((kernels.linear_vjp_x, kernels.linear_vjp_w)
                                     if kernels.ENABLED else rules.linear.rule_vjps[:2])
    assert attached == {"softmax", "log_softmax"}
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
