"""The gradient of indexing: the sort-based scatter-add (`scatter.add_at`, what getitem's VJP and
scatter_add compute) against np.add.at, getitem's in-place form (`vjp_into`) against its rule,
and the sweep that sums many slices of one Tensor into one buffer, so slicing a Tensor once per
time step costs linear time in the number of steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad import rules

SEEDS = st.integers(0, 2**32 - 1)
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


@st.composite
def advanced_index(draw: st.DrawFn, shape: tuple[int, ...]) -> Any:
    """Integer arrays of any rank (0-d and empty too; negative and repeated entries likely),
    one per axis or mixed with slices and Ellipsis, and boolean masks."""
    rng = np.random.default_rng(draw(SEEDS))
    n = shape[0]
    idx_shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    kind = draw(st.sampled_from(["rows", "rows", "per axis", "with slices", "mask", "row mask"]))
    if kind == "rows":  # an embedding's lookup: whole rows of the first axis
        dtype = draw(st.sampled_from([np.int64, np.int32, np.intp]))
        return rng.integers(-n, n, size=idx_shape).astype(dtype)
    if kind == "per axis":
        return tuple(rng.integers(-m, m, size=idx_shape) for m in shape)
    if kind == "with slices" and len(shape) >= 2:
        return (slice(None), rng.integers(-shape[1], shape[1], size=idx_shape), Ellipsis)
    if kind == "row mask":
        return rng.random(n) < 0.5
    return rng.random(shape) < 0.5


def _add_at_reference(shape: tuple[int, ...], index: Any, src: np.ndarray) -> np.ndarray:
    out = np.zeros(shape, dtype=src.dtype)
    np.add.at(out, index, src)
    return out


@given(shape=SHAPES, data=st.data(), dtype=st.sampled_from([np.float64, np.float32]))
def test_scatter_add_equals_np_add_at(shape: tuple[int, ...], data: st.DataObject,
                                      dtype: Any) -> None:
    index = data.draw(advanced_index(shape))
    picked = np.zeros(shape)[index].shape
    rng = np.random.default_rng(data.draw(SEEDS))
    # small integers: every order of summation gives the same float, so equality is exact
    ints = rng.integers(-8, 9, size=picked).astype(dtype)
    got = rules.scatter_add.forward(ints, index=index, shape=shape, basic=False)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(got, _add_at_reference(shape, index, ints))
    reals = rng.normal(size=picked).astype(dtype)
    got = rules.scatter_add.forward(reals, index=index, shape=shape, basic=False)
    if dtype == np.float64:  # summed in the same order as np.add.at: the same floats
        np.testing.assert_array_equal(got, _add_at_reference(shape, index, reals))
    else:  # summed in float64 and rounded once, where np.add.at rounds at every addition
        exact = _add_at_reference(shape, index, reals.astype(np.float64))
        np.testing.assert_array_equal(got, exact.astype(np.float32))


def test_embedding_rows_repeat_negative_and_multi_dimensional() -> None:
    """A (2, 3) index into a (5, 4, 2) table: each picked row gets the sum of its upstreams."""
    table = np.arange(40.0).reshape(5, 4, 2)
    idx = np.array([[0, -1, 4], [0, 2, 0]])  # -1 is row 4; row 0 three times
    for dtype in (np.float32, np.float64):
        w = mg.tensor(table.astype(dtype), requires_grad=True)
        up = (np.arange(48.0).reshape(2, 3, 4, 2) - 20).astype(dtype)
        w[idx].backward(up)
        expected = np.zeros((5, 4, 2), dtype)
        expected[0] = up[0, 0] + up[1, 0] + up[1, 2]
        expected[4] = up[0, 1] + up[0, 2]
        expected[2] = up[1, 1]
        assert w.grad is not None and w.grad.dtype == dtype
        np.testing.assert_array_equal(w.grad, expected)


@given(shape=SHAPES, data=st.data())
def test_vjp_into_adds_what_the_rule_gives(shape: tuple[int, ...], data: st.DataObject) -> None:
    """getitem's in-place form (the sweep's) equals its rule: buf + x̄, x̄ = zeros with ḡ at index."""
    rng = np.random.default_rng(data.draw(SEEDS))
    if data.draw(st.booleans()):
        index: Any = tuple(slice(None, None, data.draw(st.sampled_from([1, -1, 2])))
                           if data.draw(st.booleans()) else int(rng.integers(n))
                           for n in shape)
        basic = True
    else:
        index, basic = data.draw(advanced_index(shape)), False
    x = rng.normal(size=shape)
    y = x[index]
    g = rng.integers(-8, 9, size=y.shape).astype(np.float64)
    start = rng.integers(-8, 9, size=shape).astype(np.float64)
    buf = start.copy()
    rules.getitem.vjp_into(buf, g, index=index, basic=basic)
    rule = rules.getitem.rule_vjps[0](g, y, x, index=index, basic=basic)
    np.testing.assert_array_equal(buf, start + rule)


# --------------------------------------------------------------------------------------------
# the sweep: slices of one Tensor summed in one buffer
# --------------------------------------------------------------------------------------------
def test_slices_mixed_with_whole_gradients_in_any_order() -> None:
    """y = Σ_t c_t·h[:, t] + 3·Σ h + Σ (h[1:] · h[1:]), h = 2x, with the whole-array uses recorded
    between the slices: x̄ = 2·(c broadcast + 3 + 2h·[row ≥ 1])."""
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(3, 5))
    c = rng.normal(size=5)
    for leaf_too in (False, True):
        x = mg.tensor(x0, requires_grad=True)
        h = x * 2.0
        terms = []
        for t in range(5):
            terms.append((h[:, t] * c[t]).sum())
            if t == 1:
                terms.append((h * 3.0).sum())
            if t == 3:
                terms.append((h[1:] * h[1:]).sum())
            if leaf_too:  # the leaf itself sliced as well: its buffer is delivered at the end
                terms.append(x[:, t].sum())
        mg.stack(terms).sum().backward()
        expected = 2 * (c[None, :] + 3.0 + 2 * (2 * x0) * (np.arange(3) >= 1)[:, None])
        if leaf_too:
            expected = expected + 1.0
        np.testing.assert_allclose(x.grad, expected, rtol=1e-12)


def test_slices_under_retain_graph_grad_and_retain_grad() -> None:
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(4, 6))
    w = rng.normal(size=6)

    def f(x: Any) -> Any:
        h = x.tanh()
        return mg.stack([(h[:, t] * w[t]).sum() for t in range(6)]).sum()

    expected = (1 - np.tanh(x0) ** 2) * w
    x = mg.tensor(x0, requires_grad=True)
    h = x.tanh()
    h.retain_grad()
    y = mg.stack([(h[:, t] * w[t]).sum() for t in range(6)] + [x[0, 0] * 0.0]).sum()
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)
    np.testing.assert_allclose(h.grad, np.broadcast_to(w, (4, 6)), rtol=1e-12)
    y.backward()  # a second sweep starts from fresh buffers: the gradient doubles, no more
    np.testing.assert_allclose(x.grad, 2 * expected, rtol=1e-12)
    np.testing.assert_allclose(mg.grad(f)(x0).data, expected, rtol=1e-12)
    # the input itself sliced: its buffer is what grad returns, owned by nobody else
    g = mg.grad(lambda a: mg.stack([a[t] * 1.5 for t in range(4)]).sum())(x0)
    np.testing.assert_array_equal(g.data, np.full((4, 6), 1.5))
    g.data[0, 0] = 7.0  # writeable: nothing else holds it


def test_second_order_through_slices() -> None:
    """f = Σ_t x[t]³ sliced per step: the Hessian is diag(6x), the per-step slices recorded."""
    x0 = np.array([0.5, -1.0, 2.0])
    f = lambda x: mg.stack([x[t] ** 3 for t in range(3)]).sum()  # noqa: E731
    np.testing.assert_allclose(mg.hessian(f, x0), np.diag(6 * x0), rtol=1e-12)
    gg = mg.grad(lambda x: mg.grad(f)(x).sum())(x0)  # ∇ Σ 3x² = 6x
    np.testing.assert_allclose(gg.data, 6 * x0, rtol=1e-12)


def test_slicing_once_per_step_adds_into_one_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop that slices one (4, steps, 16) Tensor once per step: every slice's gradient is added
    into one buffer of the Tensor's shape, the same array for all steps, and no slice's gradient
    is built as a whole-size array (which would cost the whole Tensor's size per step: time
    quadratic in the number of steps)."""
    steps, calls = 800, []
    add_into = rules.getitem.vjp_into
    assert add_into is not None

    def spy(buf: np.ndarray, g: np.ndarray, **params: Any) -> None:
        calls.append((buf, g.shape))  # buf kept alive: a new buffer could not reuse its id
        add_into(buf, g, **params)

    def whole(*args: Any, **params: Any) -> None:
        raise AssertionError("a slice's gradient was built as a whole-size array")

    monkeypatch.setattr(rules.getitem, "vjp_into", spy)
    monkeypatch.setattr(rules.getitem, "vjps", (whole,))
    x = mg.tensor(np.ones((4, steps, 16)), requires_grad=True)
    h = x * 1.0
    out = mg.stack([h[:, t] * (t + 1.0) for t in range(steps)])
    out.backward(np.ones(out.shape))
    assert len(calls) == steps and all(buf is calls[0][0] for buf, _ in calls)
    assert calls[0][0].shape == (4, steps, 16) and {s for _, s in calls} == {(4, 16)}
    np.testing.assert_array_equal(x.grad, np.broadcast_to(np.arange(1.0, steps + 1)[:, None],
                                                          (4, steps, 16)))


@pytest.mark.parametrize("how", ["unbind", "split"])
def test_unbind_and_split_go_through_the_buffer(how: str) -> None:
    x0 = np.arange(12.0).reshape(3, 4)
    x = mg.tensor(x0, requires_grad=True)
    parts = mg.unbind(x, axis=1) if how == "unbind" else mg.split(x, 4, axis=1)
    mg.stack([(p * (i + 1)).sum() for i, p in enumerate(parts)]).sum().backward()
    np.testing.assert_array_equal(x.grad, np.broadcast_to(np.arange(1.0, 5.0), (3, 4)))


def test_the_scaling_benchmark_runs_and_checks_its_gradients() -> None:
    """`python -m benchmarks.scaling --quick`: every way of the embedding's gradient agrees with
    np.add.at (it asserts so before timing) and the report has both sections."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--quick"], cwd=root,
                          env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("minigrad / sort-based floor") == 2
    assert "RNN cell per step" in proc.stdout and "slices alone" in proc.stdout
