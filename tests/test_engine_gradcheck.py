"""The public functions and their spellings, gradchecked in float64 against central differences.

test_table.py gradchecks every row of the table once (and fails for a row without a case); this
file checks the ways of reaching them: methods and functions, axis and keepdims forms, index
kinds, 1-D and batched matmul, one input requiring grad or both, empty and 0-d arrays, random
programs that reuse values, and the contract's conventions at kinks, ties and domain edges.

Shapes come from hypothesis (broadcasting pairs with rank differences and size-1 axes, 0-d
arrays); values from a seeded NumPy generator, off the points where central differences are
undefined (kinks, ties, domain edges): those points are tested at the end of this file.
`check` proves that the primitives a test names were actually recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad import rules
from minigrad.graph import sum_to
from minigrad.transforms import toposort


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def ops_in_graph(t: mg.Tensor) -> set[str]:
    """Names of the primitives recorded on t's tape."""
    return {n._op.name for n in toposort(t, set()) if n._op is not None}


def check(f: Callable[..., Any], inputs: list[np.ndarray], *prims: str, **tol: float) -> None:
    """gradcheck f at inputs, after proving that f records every primitive in prims."""
    xs = [mg.tensor(a, requires_grad=True) for a in inputs]
    out = f(*xs)
    recorded = ops_in_graph(out)
    for p in prims:
        assert p in recorded, f"{p} not recorded by the function under test (got {recorded})"
    assert mg.gradcheck(f, [mg.tensor(a) for a in inputs], **tol) is True


def rng_of(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def uniform(rng: np.random.Generator, shape: tuple[int, ...], lo: float = -2.0,
            hi: float = 2.0) -> np.ndarray:
    return np.asarray(rng.uniform(lo, hi, size=shape))


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """|x| in [0.3, 2]: off the kink of relu/abs and away from a zero denominator."""
    return np.asarray(rng.uniform(0.3, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape))


def grid(rng: np.random.Generator, shape: tuple[int, ...], offset: float) -> np.ndarray:
    """Multiples of 0.5 plus offset: values drawn with two offsets differ by at least 0.25."""
    return np.asarray(rng.integers(-4, 5, size=shape) * 0.5 + offset, dtype=np.float64)


def distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """All values at least 0.2 apart: no near-ties for max/min reductions."""
    n = int(np.prod(shape))
    v = rng.permutation(n) * 0.25 - n * 0.125 + rng.uniform(-0.02, 0.02, size=n)
    return np.asarray(v.reshape(shape))


SEEDS = st.integers(0, 2**32 - 1)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)
NONSCALAR = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)
PAIRS = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1,
                                          max_side=3)


@st.composite
def axis_args(draw: st.DrawFn, ndim: int) -> Any:
    """None, one axis (maybe negative) or a tuple of distinct axes (maybe negative, maybe ())."""
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if ndim == 0:  # NumPy allows 0 / -1 / () on 0-d arrays
        return draw(st.sampled_from([0, -1, ()]))
    sign = lambda a: a - ndim if draw(st.booleans()) else a  # noqa: E731
    if kind == "int":
        return sign(draw(st.integers(0, ndim - 1)))
    subset = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    return tuple(sign(a) for a in subset)


# --------------------------------------------------------------------------------------------
# Un-broadcasting, scalar operands, casts
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32, ">f8"])
@pytest.mark.parametrize("shape", [(7, 3), (2, 5, 4), (300, 1), (0, 3), (3, 0), (1, 1, 6)])
def test_a_bias_gradient_sums_every_row(shape: tuple[int, ...], dtype: Any) -> None:
    """A gradient summed over leading axes down to 1-D (a bias's) is the plain sum, in g's
    dtype, however g is laid out, and through the tape too."""
    rng = np.random.default_rng(11)
    g = rng.normal(size=shape).astype(dtype)
    lead = tuple(range(len(shape) - 1))
    for layout in (g, np.asfortranarray(g), np.flip(g, axis=0)):
        got = sum_to(layout, shape[-1:])
        assert got.shape == shape[-1:] and got.dtype.char == layout.dtype.char  # (any order)
        want = layout.astype(np.float64).sum(axis=lead)
        np.testing.assert_allclose(got, want, rtol=1e-5 if g.dtype == np.float32 else 1e-12)
    b = mg.tensor(rng.normal(size=shape[-1:]), requires_grad=True)  # through the tape
    up = rng.normal(size=shape)
    (mg.tensor(np.zeros(shape)) + b).backward(up)
    np.testing.assert_allclose(b.grad, up.sum(axis=lead), rtol=1e-12)


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                max_side=3), seed=SEEDS)
def test_sum_to_sums_exactly_the_broadcast_axes(shapes: Any, seed: int) -> None:
    """Un-broadcasting, the one place it happens: every element of g lands on the element of
    the input it was broadcast from."""
    shape = shapes.input_shapes[0]
    g = rng_of(seed).normal(size=shapes.result_shape)
    got = sum_to(g, shape)
    assert got.shape == shape
    want = np.zeros(shape)
    for idx in np.ndindex(*g.shape):
        tail = idx[len(idx) - len(shape):] if shape else ()
        want[tuple(0 if n == 1 else i for i, n in zip(tail, shape))] += g[idx]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@given(shape=SHAPES, seed=SEEDS, k=st.sampled_from([2, 3, -1, 0.5, -1.5]))
def test_power_with_python_scalars(shape: tuple[int, ...], seed: int, k: float) -> None:
    x = uniform(rng_of(seed), shape, 0.5, 2.0)
    check(lambda t: t ** k, [x], "power")     # scalar exponent
    check(lambda t: k ** t if k > 0 else (-k) ** t, [x], "power")  # scalar base (__rpow__)


@given(shape=SHAPES, seed=SEEDS)
def test_astype(shape: tuple[int, ...], seed: int) -> None:
    x = uniform(rng_of(seed), shape)
    check(lambda t: t.astype(np.float64) * 2.0, [x], "astype")
    # Through float32: differences need a step float32 can resolve.
    check(lambda t: t.astype(np.float32), [x], "astype", eps=1e-2, atol=1e-3, rtol=1e-3)
    # The gradient comes back in the leaf's own dtype.
    leaf = mg.tensor(x.astype(np.float32), requires_grad=True)
    (leaf.astype(np.float64) * uniform(rng_of(seed + 1), shape)).sum().backward()
    assert leaf.grad is not None and leaf.grad.dtype == np.float32


# --------------------------------------------------------------------------------------------
# Two-input selections
# --------------------------------------------------------------------------------------------
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3,
                                                max_side=3), seed=SEEDS)
def test_where_broadcast(shapes: Any, seed: int) -> None:
    rng = rng_of(seed)
    sc, sa, sb = shapes.input_shapes
    cond = rng.random(sc) < 0.5
    a, b = uniform(rng, sa), uniform(rng, sb)
    check(lambda x, y: mg.where(cond, x, y), [a, b], "where")
    check(lambda x: mg.where(mg.tensor(cond), x, 0.0), [a], "where")  # bool Tensor condition
    np.testing.assert_array_equal(mg.where(cond, a, b).data, np.where(cond, a, b))


@given(shape=SHAPES, seed=SEEDS, bounds=st.sampled_from(["both", "lo", "hi", "array"]))
def test_clip(shape: tuple[int, ...], seed: int, bounds: str) -> None:
    rng = rng_of(seed)
    x = grid(rng, shape, 0.25)  # bounds below are multiples of 0.5: never near a bound
    lo, hi = {"both": (-1.0, 1.0), "lo": (-0.5, None), "hi": (None, 0.5),
              "array": (grid(rng, shape[-1:], 0.0) - 1.0, grid(rng, shape[-1:], 0.0) + 1.0)
              }[bounds]
    check(lambda t: mg.clip(t, lo, hi), [x], "clip")
    check(lambda t: t.clip(lo, hi), [x], "clip")
    np.testing.assert_array_equal(mg.clip(x, lo, hi).data, np.clip(x, lo, hi))


# --------------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------------
@given(data=st.data(), shape=SHAPES, seed=SEEDS, keepdims=st.booleans())
def test_sum_mean(data: st.DataObject, shape: tuple[int, ...], seed: int, keepdims: bool) -> None:
    axis = data.draw(axis_args(len(shape)))
    x = uniform(rng_of(seed), shape)
    ref_axis = () if x.ndim == 0 and axis is not None else axis  # np.mean refuses axis 0 on 0-d
    for method, ref in (("sum", np.sum), ("mean", np.mean)):
        f = lambda t, m=method: getattr(t, m)(axis=axis, keepdims=keepdims)  # noqa: E731
        np.testing.assert_allclose(f(mg.tensor(x)).data,
                                   ref(x, axis=ref_axis, keepdims=keepdims), rtol=1e-12)
        check(f, [x], method)
    check(lambda t: mg.mean(t, axis, keepdims), [x], "mean")


@given(data=st.data(), shape=SHAPES, seed=SEEDS, keepdims=st.booleans())
def test_max_min_reductions(data: st.DataObject, shape: tuple[int, ...], seed: int,
                            keepdims: bool) -> None:
    axis = data.draw(axis_args(len(shape)))
    x = distinct(rng_of(seed), shape)
    for method, name, ref in (("max", "amax", np.max), ("min", "amin", np.min)):
        f = lambda t, m=method: getattr(t, m)(axis, keepdims)  # noqa: E731
        np.testing.assert_array_equal(f(mg.tensor(x)).data, ref(x, axis=axis, keepdims=keepdims))
        check(f, [x], name)


# --------------------------------------------------------------------------------------------
# Softmax family
# --------------------------------------------------------------------------------------------
def np_logsumexp(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


@given(shape=NONSCALAR, seed=SEEDS, data=st.data())
def test_softmax_log_softmax(shape: tuple[int, ...], seed: int, data: st.DataObject) -> None:
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1))
    x = uniform(rng_of(seed), shape, -3.0, 3.0)
    lse = np_logsumexp(x, axis, True)
    np.testing.assert_allclose(mg.softmax(x, axis).data, np.exp(x - lse), rtol=1e-12)
    np.testing.assert_allclose(mg.log_softmax(x, axis).data, x - lse, rtol=1e-12, atol=1e-14)
    check(lambda t: t.softmax(axis), [x], "softmax")
    check(lambda t: t.log_softmax(axis), [x], "log_softmax")
    # a non-uniform weighting, so the VJP's g - <g, s> term is exercised with varied g
    w = uniform(rng_of(seed + 1), shape)
    check(lambda t: (t.softmax(axis) * w).sum(), [x], "softmax")


@given(data=st.data(), shape=SHAPES, seed=SEEDS, keepdims=st.booleans())
def test_logsumexp(data: st.DataObject, shape: tuple[int, ...], seed: int, keepdims: bool) -> None:
    axis = data.draw(axis_args(len(shape)))
    x = uniform(rng_of(seed), shape, -3.0, 3.0)
    np.testing.assert_allclose(mg.logsumexp(x, axis, keepdims).data,
                               np_logsumexp(x, axis, keepdims), rtol=1e-12)
    check(lambda t: t.logsumexp(axis, keepdims), [x], "logsumexp")


def test_softmax_family_default_axis_is_last() -> None:
    x = uniform(rng_of(0), (2, 3, 4))
    np.testing.assert_allclose(mg.tensor(x).softmax().data, mg.softmax(x, axis=2).data)
    np.testing.assert_allclose(mg.tensor(x).log_softmax().data, mg.log_softmax(x, 2).data)
    np.testing.assert_allclose(mg.tensor(x).logsumexp().data, np_logsumexp(x, -1, False))


# --------------------------------------------------------------------------------------------
# matmul: 1-D, 2-D, batched with broadcast batch axes
# --------------------------------------------------------------------------------------------
@st.composite
def matmul_shapes(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    ka, kb = draw(st.sampled_from(["1d", "2d", "batched"])), draw(st.sampled_from(
        ["1d", "2d", "batched"]))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=2,
                                                   max_side=3)).input_shapes
    sa = {"1d": (k,), "2d": (n, k), "batched": batch[0] + (n, k)}[ka]
    sb = {"1d": (k,), "2d": (k, m), "batched": batch[1] + (k, m)}[kb]
    return sa, sb


@given(shapes=matmul_shapes(), seed=SEEDS)
def test_matmul(shapes: tuple[tuple[int, ...], tuple[int, ...]], seed: int) -> None:
    rng = rng_of(seed)
    a, b = uniform(rng, shapes[0]), uniform(rng, shapes[1])
    np.testing.assert_allclose((mg.tensor(a) @ mg.tensor(b)).data, a @ b, rtol=1e-12)
    check(lambda x, y: x @ y, [a, b], "matmul")
    check(lambda x: mg.matmul(x, b), [a], "matmul")   # only one side requires grad
    check(lambda y: a @ y, [b], "matmul")             # ndarray @ Tensor


@given(lead=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3),
       n_in=st.integers(1, 3), n_out=st.integers(1, 3), bias=st.booleans(), seed=SEEDS)
def test_linear(lead: tuple[int, ...], n_in: int, n_out: int, bias: bool, seed: int) -> None:
    rng = rng_of(seed)
    x, w, b = uniform(rng, lead + (n_in,)), uniform(rng, (n_out, n_in)), uniform(rng, (n_out,))
    expected = x @ w.T + (b if bias else 0)
    got = mg.linear(x, w, b if bias else None).data
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    if bias:
        check(lambda x_, w_, b_: mg.linear(x_, w_, b_), [x, w, b], "linear")
        check(lambda w_: mg.linear(x, w_, b), [w], "linear")  # the input needs no gradient
        check(lambda x_, b_: mg.linear(x_, w, b_), [x, uniform(rng, ())], "linear")  # 0-d bias
    else:
        check(lambda x_, w_: mg.linear(x_, w_), [x, w], "linear")


def test_linear_of_a_masked_array_uses_its_data_in_the_forward_as_in_the_vjps() -> None:
    """ndarray subclasses reach the forward as they are: np.ma's own dot would drop the masked
    entries from y while W̄ = ḡᵀx still counted them."""
    x = np.ma.array([[1.0, 1e6]], mask=[[0, 1]])
    w = mg.tensor(np.ones((1, 2)), requires_grad=True)
    y = mg.linear(x, w)
    y.backward(np.ones((1, 1)))
    np.testing.assert_array_equal(y.data, [[1.0 + 1e6]])
    np.testing.assert_array_equal(w.grad, [[1.0, 1e6]])


@pytest.mark.parametrize("x_shape", [(2,), (3, 2), (4, 3, 2), (0, 2)])
@pytest.mark.parametrize("b_shape", [(0,), ()])
def test_linear_with_no_outputs_has_empty_gradients(x_shape: tuple[int, ...],
                                                    b_shape: tuple[int, ...]) -> None:
    """out_features = 0: every gradient is zero, of its input's shape (nothing to infer from)."""
    x = mg.tensor(np.ones(x_shape), requires_grad=True)
    w = mg.tensor(np.ones((0, 2)), requires_grad=True)
    b = mg.tensor(np.ones(b_shape), requires_grad=True)
    y = mg.linear(x, w, b)
    assert y.shape == x_shape[:-1] + (0,)
    y.backward(np.ones(y.shape))
    for t in (x, w, b):
        assert t.grad is not None and t.grad.shape == t.shape and not np.any(t.grad)


def test_linear_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"linear: .*\(2, 3\).*\(4, 2\)"):
        mg.linear(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"linear: bias of shape \(3,\)"):
        mg.linear(np.ones((2, 3)), np.ones((4, 3)), np.ones(3))


# --------------------------------------------------------------------------------------------
# Shape ops
# --------------------------------------------------------------------------------------------
@st.composite
def reshape_target(draw: st.DrawFn, size: int) -> tuple[int, ...]:
    dims: list[int] = []
    rest = size
    for _ in range(draw(st.integers(0, 2))):
        d = draw(st.sampled_from([d for d in range(1, rest + 1) if rest % d == 0]))
        dims.append(d)
        rest //= d
    dims.append(rest)
    if draw(st.booleans()):  # let NumPy infer one dimension
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    return tuple(dims)


@given(shape=SHAPES, seed=SEEDS, data=st.data())
def test_reshape_family(shape: tuple[int, ...], seed: int, data: st.DataObject) -> None:
    x = uniform(rng_of(seed), shape)
    target = data.draw(reshape_target(x.size))
    np.testing.assert_array_equal(mg.tensor(x).reshape(target).data, x.reshape(target))
    check(lambda t: t.reshape(target), [x], "reshape")
    check(lambda t: t.reshape(*target), [x], "reshape")
    check(lambda t: mg.reshape(t, target), [x], "reshape")
    check(lambda t: np.reshape(t, target), [x], "reshape")
    check(lambda t: t.flatten(), [x], "reshape")
    check(lambda t: mg.flatten(t), [x], "reshape")
    check(lambda t: mg.expand_dims(t, 0), [x], "reshape")
    check(lambda t: np.expand_dims(t, (0, -1)), [x], "reshape")
    check(lambda t: mg.squeeze(mg.expand_dims(t, -1)), [x], "reshape")
    check(lambda t: np.squeeze(t), [x], "reshape")
    np.testing.assert_array_equal(np.squeeze(mg.tensor(x)).data, np.squeeze(x))
    np.testing.assert_array_equal(mg.tensor(x).flatten().data, x.flatten())
    assert np.expand_dims(mg.tensor(x), (0, -1)).shape == np.expand_dims(x, (0, -1)).shape


@given(shape=NONSCALAR, seed=SEEDS, data=st.data())
def test_moments_spellings_and_ddof(shape: tuple[int, ...], seed: int, data: st.DataObject
                                    ) -> None:
    """var and std: methods, functions and np.var / np.std, NumPy's ddof, against NumPy."""
    axis = data.draw(axis_args(len(shape)))
    keepdims = data.draw(st.booleans())
    x = distinct(rng_of(seed), shape)
    axes = range(x.ndim) if axis is None else np.atleast_1d(axis)
    n = int(np.prod([shape[a] for a in axes]))
    for ddof in (0, 1) if n > 1 else (0,):
        for name, ref in (("var", np.var), ("std", np.std)):
            want = ref(x, axis=axis, keepdims=keepdims, ddof=ddof)
            for f in (lambda t, n=name, d=ddof: getattr(t, n)(axis, keepdims, d),
                      lambda t, n=name, d=ddof: getattr(mg, n)(t, axis=axis,
                                                               keepdims=keepdims, ddof=d),
                      lambda t, r=ref, d=ddof: r(t, axis=axis, keepdims=keepdims, ddof=d)):
                np.testing.assert_allclose(f(mg.tensor(x)).data, want, rtol=1e-12)
            if name == "var" or n > 1:  # √var has an infinite slope at var = 0
                check(f, [x])


@given(shape=NONSCALAR, seed=SEEDS, data=st.data())
def test_split_and_unbind(shape: tuple[int, ...], seed: int, data: st.DataObject) -> None:
    """np.split's meaning (a count of equal sections, or cut points, maybe empty pieces) and
    unbind's (each slice along the axis, the axis removed), as mg. functions and np.split."""
    x = uniform(rng_of(seed), shape)
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    how: Any = data.draw(st.sampled_from([k for k in range(1, n + 1) if n % k == 0])
                         | st.lists(st.integers(-n - 1, n + 1), max_size=3))
    for pieces in (mg.split(mg.tensor(x), how, axis), np.split(mg.tensor(x), how, axis)):
        want = np.split(x, how, axis)
        assert isinstance(pieces, list) and len(pieces) == len(want)
        for p, w in zip(pieces, want):
            assert isinstance(p, mg.Tensor)
            np.testing.assert_array_equal(p.data, w)
    weights = [uniform(rng_of(seed + i), w.shape) for i, w in enumerate(np.split(x, how, axis))]
    check(lambda t: sum((p * w).sum() for p, w in zip(mg.split(t, how, axis), weights)), [x],
          "getitem")
    parts = mg.unbind(mg.tensor(x), axis)
    assert isinstance(parts, tuple) and len(parts) == n
    for i, p in enumerate(parts):
        np.testing.assert_array_equal(p.data, np.take(x, i, axis))
    check(lambda t: mg.stack(mg.unbind(t, axis)[::-1], axis), [x], "getitem", "stack")
    with pytest.raises(ValueError, match="split"):
        mg.split(mg.tensor(x), n + 1, axis)  # does not divide the axis


@given(shape=NONSCALAR, seed=SEEDS, data=st.data())
def test_pad_spellings(shape: tuple[int, ...], seed: int, data: st.DataObject) -> None:
    x = uniform(rng_of(seed), shape)
    width = data.draw(st.integers(0, 2) | st.tuples(st.integers(0, 2), st.integers(0, 2)))
    value = data.draw(st.sampled_from([0.0, -1.5]))
    want = np.pad(x, width, constant_values=value)
    for f in (lambda t: mg.pad(t, width, constant_values=value),
              lambda t: np.pad(t, width, constant_values=value),
              lambda t: np.pad(t, width, "constant", constant_values=value)):
        np.testing.assert_array_equal(f(mg.tensor(x)).data, want)
        check(f, [x], "pad")
    with pytest.raises(ValueError, match="constant"):
        mg.pad(mg.tensor(x), 1, mode="edge")
    with pytest.raises(ValueError, match="pad_width"):
        mg.pad(mg.tensor(x), -1)


@given(shape=SHAPES, seed=SEEDS, data=st.data())
def test_transpose_family(shape: tuple[int, ...], seed: int, data: st.DataObject) -> None:
    x = uniform(rng_of(seed), shape)
    nd = x.ndim
    perm = tuple(a - nd if data.draw(st.booleans()) else a
                 for a in data.draw(st.permutations(range(nd))))
    np.testing.assert_array_equal(mg.tensor(x).transpose(*perm).data, x.transpose(perm))
    check(lambda t: t.transpose(*perm), [x], "transpose")
    check(lambda t: t.transpose(perm), [x], "transpose")
    check(lambda t: t.T, [x], "transpose")
    check(lambda t: t.transpose(), [x], "transpose")
    if nd >= 2:
        i, j = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
        np.testing.assert_array_equal(mg.swapaxes(x, i, j).data, np.swapaxes(x, i, j))
        check(lambda t: t.swapaxes(i, j), [x], "transpose")
        check(lambda t: t.mT, [x], "transpose")
        np.testing.assert_array_equal(mg.tensor(x).mT.data, x.mT)


@given(shape=SHAPES, seed=SEEDS, data=st.data())
def test_broadcast_to(shape: tuple[int, ...], seed: int, data: st.DataObject) -> None:
    x = uniform(rng_of(seed), shape)
    lead = data.draw(st.lists(st.integers(1, 3), max_size=2))
    target = tuple(lead) + tuple(data.draw(st.integers(1, 3)) if n == 1 else n for n in shape)
    np.testing.assert_array_equal(mg.broadcast_to(x, target).data, np.broadcast_to(x, target))
    check(lambda t: mg.broadcast_to(t, target), [x], "broadcast_to")


# --------------------------------------------------------------------------------------------
# Indexing
# --------------------------------------------------------------------------------------------
INDEX_SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


@st.composite
def basic_index(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """Integers (maybe negative), slices with any step sign, None and one Ellipsis."""
    parts: list[Any] = []
    consumed = draw(st.integers(0, len(shape)))
    for n in shape[:consumed]:
        kind = draw(st.sampled_from(["int", "slice", "slice"]))
        if kind == "int":
            parts.append(draw(st.integers(-n, n - 1)))
        else:
            bound = st.none() | st.integers(-n - 1, n + 1)
            parts.append(slice(draw(bound), draw(bound), draw(st.sampled_from([None, 1, 2, -1,
                                                                                -2]))))
        if draw(st.integers(0, 4)) == 0:
            parts.append(None)
    if consumed < len(shape) and draw(st.booleans()):
        parts.append(Ellipsis)
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), None)
    return tuple(parts)


@given(shape=INDEX_SHAPES, seed=SEEDS, data=st.data())
def test_getitem_basic(shape: tuple[int, ...], seed: int, data: st.DataObject) -> None:
    x = uniform(rng_of(seed), shape)
    idx = data.draw(basic_index(shape))
    np.testing.assert_array_equal(mg.tensor(x)[idx].data, x[idx])
    check(lambda t: t[idx], [x], "getitem")


@given(shape=INDEX_SHAPES, seed=SEEDS, data=st.data())
def test_getitem_integer_arrays_repeat_and_accumulate(shape: tuple[int, ...], seed: int,
                                                      data: st.DataObject) -> None:
    rng = rng_of(seed)
    x = uniform(rng, shape)
    n = shape[0]
    k = data.draw(st.integers(1, 6))
    idx = rng.integers(-n, n, size=k)  # repeats are likely
    np.testing.assert_array_equal(mg.tensor(x)[idx].data, x[idx])
    check(lambda t: t[idx], [x], "getitem")
    check(lambda t: t[list(idx)], [x], "getitem")
    if len(shape) >= 2:  # two arrays broadcast against each other, plus a slice
        i0 = rng.integers(0, n, size=(2, 1))
        i1 = rng.integers(-shape[1], shape[1], size=(3,))
        np.testing.assert_array_equal(mg.tensor(x)[i0, i1].data, x[i0, i1])
        check(lambda t: t[i0, i1], [x], "getitem")
        check(lambda t: t[:, i1], [x], "getitem")
        last = rng.integers(-shape[-1], shape[-1], size=2)
        check(lambda t: t[..., last], [x], "getitem")
    # the exact accumulation: every repeated index adds its upstream
    t = mg.tensor(x, requires_grad=True)
    up = uniform(rng, (k,) + shape[1:])
    t[idx].backward(up)
    expected = np.zeros_like(x)
    for j, i in enumerate(idx):
        expected[i] += up[j]
    np.testing.assert_allclose(t.grad, expected, rtol=1e-12, atol=1e-15)
    # one integer array per axis (as logp[rows, actions]), with an int among them: the same
    for every in (True, False) if len(shape) >= 2 else ():
        picks = tuple(rng.integers(-m, m, size=k) if every or i else int(rng.integers(m))
                      for i, m in enumerate(shape))
        for dtype in (np.float64, np.float32, np.int64):
            if dtype == np.int64:  # scatter_add itself, which does not care for the dtype
                up = rng.integers(-5, 5, size=k)
                got = rules.scatter_add.forward(up, index=picks, shape=shape, basic=False)
            else:
                t = mg.tensor(x.astype(dtype), requires_grad=True)
                up = uniform(rng, (k,)).astype(dtype)
                t[picks].backward(up)
                got = t.grad
            assert got.dtype == dtype
            expected = np.zeros(shape, dtype=dtype)
            for j in range(k):
                expected[tuple(p if np.ndim(p) == 0 else p[j] for p in picks)] += up[j]
            np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == np.float32
                                       else 1e-12, atol=1e-15)


@given(shape=INDEX_SHAPES, seed=SEEDS)
def test_getitem_boolean_masks(shape: tuple[int, ...], seed: int) -> None:
    rng = rng_of(seed)
    x = uniform(rng, shape)
    full = rng.random(shape) < 0.5
    first = rng.random(shape[:1]) < 0.5
    np.testing.assert_array_equal(mg.tensor(x)[full].data, x[full])
    check(lambda t: t[full], [x], "getitem")
    check(lambda t: t[first], [x], "getitem")
    check(lambda t: t[mg.tensor(full)], [x], "getitem")   # a bool Tensor as the mask
    check(lambda t: t[t > 0.0], [x], "getitem")            # a comparison's result as the mask


# --------------------------------------------------------------------------------------------
# Joining
# --------------------------------------------------------------------------------------------
@given(shape=NONSCALAR, seed=SEEDS, data=st.data())
def test_concatenate(shape: tuple[int, ...], seed: int, data: st.DataObject) -> None:
    rng = rng_of(seed)
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))  # 0: an empty piece
    sizes[0] = max(sizes[0], 1)
    pieces = []
    for s in sizes:
        ps = list(shape)
        ps[axis] = s
        pieces.append(uniform(rng, tuple(ps)))
    np.testing.assert_array_equal(mg.concatenate(pieces, axis).data,
                                  np.concatenate(pieces, axis))
    check(lambda *ts: mg.concatenate(ts, axis=axis), pieces, "concatenate")
    check(lambda t: mg.concatenate([t, pieces[0]], axis), [pieces[0]], "concatenate")


@given(shape=SHAPES, seed=SEEDS, data=st.data(), n=st.integers(1, 3))
def test_stack(shape: tuple[int, ...], seed: int, data: st.DataObject, n: int) -> None:
    rng = rng_of(seed)
    nd = len(shape) + 1
    axis = data.draw(st.integers(-nd, nd - 1))
    pieces = [uniform(rng, shape) for _ in range(n)]
    np.testing.assert_array_equal(mg.stack(pieces, axis).data, np.stack(pieces, axis))
    check(lambda *ts: mg.stack(ts, axis=axis), pieces, "stack")


# --------------------------------------------------------------------------------------------
# Compositions: a small network, NumPy functions dispatched onto the tape
# --------------------------------------------------------------------------------------------
@given(seed=SEEDS, n=st.integers(1, 4))
def test_mlp_cross_entropy(seed: int, n: int) -> None:
    rng = rng_of(seed)
    x, y = uniform(rng, (n, 3)), rng.integers(0, 4, size=n)
    w1, b1, w2 = uniform(rng, (3, 5)), uniform(rng, (5,)), uniform(rng, (5, 4))

    def loss(p1: mg.Tensor, q1: mg.Tensor, p2: mg.Tensor) -> mg.Tensor:
        h = (x @ p1 + q1).tanh()
        return -(h @ p2).log_softmax(-1)[np.arange(n), y].mean()

    check(loss, [w1, b1, w2], "matmul", "add", "tanh", "log_softmax", "getitem", "mean")


@given(shape=NONSCALAR, seed=SEEDS)
def test_numpy_functions_on_tensors_are_recorded(shape: tuple[int, ...], seed: int) -> None:
    x = uniform(rng_of(seed), shape, 0.5, 2.0)
    check(lambda t: np.sum(np.log(np.exp(t) * t) + np.maximum(t, 1.25), axis=0),
          [x], "exp", "log", "maximum", "sum")
    check(lambda t: np.where(np.asarray(x) > 1.0, t * t, -t), [x], "where")


# --------------------------------------------------------------------------------------------
# Random programs: DAGs with reuse, diamonds and broadcasting, gradchecked end to end
# --------------------------------------------------------------------------------------------
UNARY_STEPS: list[Callable[[mg.Tensor], mg.Tensor]] = [
    lambda t: t.tanh(), lambda t: t.sigmoid(), lambda t: t * 0.7 + 0.1,
    lambda t: t.softmax(-1), lambda t: t.log_softmax(0) * 0.3, lambda t: t[::-1],
    lambda t: t.reshape(3, 2).T.T.reshape(2, 3), lambda t: t - t.mean(axis=-1, keepdims=True),
    lambda t: t.logsumexp(0, keepdims=True) + t, lambda t: (t * t + 1.0).sqrt(),
    lambda t: mg.concatenate([t[:, :1], t[:, 1:]], axis=1),
    lambda t: mg.stack([t, t * 2.0]).sum(axis=0), lambda t: t[np.array([1, 0, 1])][1:],
    lambda t: t @ np.ones((3, 3)) * 0.3,
]
BINARY_STEPS: list[Callable[[mg.Tensor, mg.Tensor], mg.Tensor]] = [
    lambda a, b: a + b, lambda a, b: a - b * 0.5, lambda a, b: a * b,
    lambda a, b: a / (1.0 + b * b), lambda a, b: a[0] * b, lambda a, b: (a @ b.T) @ b * 0.2,
    lambda a, b: mg.where(np.array([True, False, True]), a, b),
]


@st.composite
def programs(draw: st.DrawFn) -> list[tuple[bool, int, int, int]]:
    steps = []
    for n in range(draw(st.integers(1, 8))):
        binary = draw(st.booleans())
        op = draw(st.integers(0, (len(BINARY_STEPS) if binary else len(UNARY_STEPS)) - 1))
        # operands: any earlier value (2 leaves + n results), so values get reused
        steps.append((binary, op, draw(st.integers(0, n + 1)), draw(st.integers(0, n + 1))))
    return steps


@settings(max_examples=150)
@given(prog=programs(), seed=SEEDS)
def test_random_programs(prog: list[tuple[bool, int, int, int]], seed: int) -> None:
    rng = rng_of(seed)
    a0, b0 = uniform(rng, (2, 3)), uniform(rng, (2, 3))
    w = uniform(rng, (2, 3))

    def f(a: mg.Tensor, b: mg.Tensor) -> mg.Tensor:
        vals = [a, b]
        for binary, op, i, j in prog:
            vals.append(BINARY_STEPS[op](vals[i], vals[j]) if binary else UNARY_STEPS[op](vals[i]))
        return (vals[-1] * w).sum() + vals[len(vals) // 2].sum()

    check(f, [a0, b0])


# --------------------------------------------------------------------------------------------
# Empty-size and 0-d arrays
# --------------------------------------------------------------------------------------------
EMPTY_CASES: list[tuple[str, Callable[..., Any], list[tuple[int, ...]], tuple[int, ...]]] = [
    ("add bcast", lambda a, b: a + b, [(0, 3), (1, 3)], (0, 3)),
    ("mul bcast", lambda a, b: a * b, [(2, 0), (2, 1)], (2, 0)),
    ("pow", lambda a: a ** 2, [(0,)], (0,)),
    ("exp", lambda a: a.exp(), [(0, 2)], (0, 2)),
    ("sum axis", lambda a: a.sum(axis=0), [(0, 3)], (3,)),
    ("sum all", lambda a: a.sum(), [(3, 0)], ()),
    ("mean other axis", lambda a: a.mean(axis=1), [(0, 3)], (0,)),
    ("max other axis", lambda a: a.max(axis=1), [(0, 3)], (0,)),
    ("softmax rows", lambda a: a.softmax(-1), [(0, 3)], (0, 3)),
    ("softmax empty axis", lambda a: a.softmax(-1), [(3, 0)], (3, 0)),
    ("log_softmax empty axis", lambda a: a.log_softmax(0), [(0, 2)], (0, 2)),
    ("logsumexp empty axis", lambda a: a.logsumexp(-1), [(2, 0)], (2,)),
    ("matmul", lambda a, b: a @ b, [(0, 3), (3, 2)], (0, 2)),
    ("matmul k=0", lambda a, b: a @ b, [(2, 0), (0, 3)], (2, 3)),
    ("reshape", lambda a: a.reshape(3, 0), [(0, 3)], (3, 0)),
    ("transpose", lambda a: a.T, [(0, 3)], (3, 0)),
    ("slice", lambda a: a[2:1], [(3,)], (0,)),
    ("int array", lambda a: a[np.array([], dtype=np.intp)], [(3,)], (0,)),
    ("empty list", lambda a: a[[]], [(3,)], (0,)),
    ("mask", lambda a: a[np.zeros(3, dtype=bool)], [(3,)], (0,)),
    ("concatenate", lambda a, b: mg.concatenate([a, b]), [(0, 2), (2, 2)], (2, 2)),
    ("stack", lambda a, b: mg.stack([a, b], 1), [(0,), (0,)], (0, 2)),
    ("where", lambda a, b: mg.where(np.zeros((0, 1), dtype=bool), a, b), [(0, 2), (1, 2)],
     (0, 2)),
    ("clip", lambda a: a.clip(0.0, 1.0), [(0,)], (0,)),
    ("broadcast_to", lambda a: mg.broadcast_to(a, (0, 3)), [(1, 3)], (0, 3)),
    ("sin", lambda a: a.sin(), [(0, 2)], (0, 2)),
    ("square", lambda a: mg.square(a), [(2, 0)], (2, 0)),
    ("pad", lambda a: mg.pad(a, 1), [(0, 2)], (2, 4)),
    ("var other axis", lambda a: a.var(axis=1), [(0, 3)], (0,)),
    ("unbind", lambda a: mg.stack(mg.unbind(a, 1), 1), [(0, 2)], (0, 2)),
    ("split", lambda a: mg.split(a, [1])[1], [(3, 0)], (2, 0)),
]


@pytest.mark.parametrize("name,fn,shapes,out_shape", EMPTY_CASES, ids=[c[0] for c in EMPTY_CASES])
def test_empty_size_arrays(name: str, fn: Callable[..., Any], shapes: list[tuple[int, ...]],
                           out_shape: tuple[int, ...]) -> None:
    """NumPy allows these empty shapes; backward must too, with grads of the inputs' shapes
    (zeros, except where an empty operand meets a non-empty one)."""
    rng = rng_of(1)
    arrays = [uniform(rng, s) for s in shapes]
    xs = [mg.tensor(a, requires_grad=True) for a in arrays]
    with np.errstate(divide="ignore"):  # logsumexp over nothing is log 0 = -inf
        out = fn(*xs)
    assert out.shape == out_shape
    out.backward(uniform(rng, out.shape))
    for a, x in zip(arrays, xs):
        assert x.grad is not None and x.grad.shape == a.shape and x.grad.dtype == np.float64
        if a.size and out.size == 0:
            np.testing.assert_array_equal(x.grad, 0.0)
    if out.size:
        check(fn, arrays)


@given(seed=SEEDS)
def test_zero_dimensional(seed: int) -> None:
    x = uniform(rng_of(seed), (), 0.5, 2.0)
    for f in (lambda t: t.exp(), lambda t: t.sum(), lambda t: t.max(axis=0),
              lambda t: t.logsumexp(), lambda t: t * t, lambda t: t[()], lambda t: t[None],
              lambda t: t[...], lambda t: t.reshape(1, 1), lambda t: t.sin(),
              lambda t: mg.square(t), lambda t: mg.log1p(t), lambda t: mg.expm1(t),
              lambda t: t.var() + t, lambda t: t.flatten(), lambda t: mg.expand_dims(t, 0)):
        check(f, [x])
    check(lambda t: t.exp(), [x], "exp")
    t = mg.tensor(x, requires_grad=True)
    (t * t).backward()
    assert t.grad is not None and t.grad.shape == () and t.grad == pytest.approx(2 * x)


# --------------------------------------------------------------------------------------------
# Kinks, ties and domain edges: the contract's conventions, tested at the exact points
# --------------------------------------------------------------------------------------------
def grad_of(f: Callable[..., mg.Tensor], *values: Any) -> list[np.ndarray]:
    xs = [mg.tensor(v, requires_grad=True) for v in values]
    f(*xs).sum().backward()
    return [x.grad for x in xs]  # type: ignore[misc]


def test_relu_and_abs_have_zero_gradient_at_zero() -> None:
    x = np.array([-1.5, -0.0, 0.0, 2.0])
    np.testing.assert_array_equal(grad_of(lambda t: t.relu(), x)[0], [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(grad_of(lambda t: t.abs(), x)[0], [-1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(grad_of(mg.relu, 0.0)[0], 0.0)


@pytest.mark.parametrize("method,values,axis,expected", [
    ("max", [1.0, 3.0, 3.0, 3.0], None, [0.0, 1 / 3, 1 / 3, 1 / 3]),
    ("min", [2.0, -1.0, 5.0, -1.0], None, [0.0, 0.5, 0.0, 0.5]),
    ("max", [[1.0, 1.0], [0.0, 2.0]], 1, [[0.5, 0.5], [0.0, 1.0]]),
    ("max", [[1.0, 1.0], [0.0, 1.0]], 0, [[1.0, 0.5], [0.0, 0.5]]),
    ("min", [[4.0, 4.0, 4.0]], (0, 1), [[1 / 3, 1 / 3, 1 / 3]]),
    ("max", [7.0, 7.0], -1, [0.5, 0.5]),
])
def test_max_min_reductions_split_ties_evenly(method: str, values: list[Any], axis: Any,
                                              expected: list[Any]) -> None:
    (g,) = grad_of(lambda t: getattr(t, method)(axis), np.array(values))
    np.testing.assert_allclose(g, expected, rtol=1e-15)


def test_max_ties_split_the_upstream_not_just_ones() -> None:
    t = mg.tensor([[2.0, 2.0, 1.0], [0.0, 5.0, 5.0]], requires_grad=True)
    t.max(axis=1, keepdims=True).backward(np.array([[4.0], [-6.0]]))
    np.testing.assert_allclose(t.grad, [[2.0, 2.0, 0.0], [0.0, -3.0, -3.0]])


def test_maximum_minimum_split_ties_evenly_with_broadcasting() -> None:
    a = np.array([[1.0, 2.0, 3.0]])
    b = np.array([[2.0], [3.0]])  # ties at (0, 1) and (1, 2)
    ga, gb = grad_of(mg.maximum, a, b)
    np.testing.assert_allclose(ga, [[0.0, 0.5, 1.5]])
    np.testing.assert_allclose(gb, [[1.5], [2.5]])
    ga, gb = grad_of(mg.minimum, a, b)
    np.testing.assert_allclose(ga, [[2.0, 1.5, 0.5]])
    np.testing.assert_allclose(gb, [[1.5], [0.5]])


def test_clip_passes_gradient_on_the_closed_interval() -> None:
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    np.testing.assert_array_equal(grad_of(lambda t: t.clip(0.0, 1.0), x)[0],
                                  [0.0, 1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(grad_of(lambda t: mg.clip(t, 0.0, None), x)[0],
                                  [0.0, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(grad_of(lambda t: mg.clip(t, None, 0.5), x)[0],
                                  [1.0, 1.0, 1.0, 0.0, 0.0])


def test_log_of_negative_is_nan_like_numpy() -> None:
    x = mg.tensor([-1.0, 0.0, 1.0], requires_grad=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = x.log()
        expected = np.log(np.array([-1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(y.data, expected)  # [nan, -inf, 0]
    assert np.isnan(y.data[0]) and y.data[1] == -np.inf
    with np.errstate(divide="ignore"):
        y.backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, [-1.0, np.inf, 1.0])  # d log x = 1/x, as PyTorch


def test_power_with_zero_exponent_has_zero_base_gradient_even_at_zero() -> None:
    # PyTorch's choice: d/da a**0 = 0 everywhere (not 0 * inf at a = 0), for scalar and array
    # exponents alike.
    for expo in (0, 0.0, np.zeros(3), mg.tensor(np.zeros(3))):
        (g,) = grad_of(lambda t, e=expo: t ** e, np.array([0.0, 1.0, -2.0]))
        np.testing.assert_array_equal(g, [0.0, 0.0, 0.0])
    ga, gb = grad_of(lambda a, b: a ** b, np.array([0.0, 2.0]), np.array([0.0, 3.0]))
    np.testing.assert_array_equal(ga, [0.0, 12.0])
    np.testing.assert_allclose(gb, [0.0, 8.0 * np.log(2.0)])  # log 0 taken as 0 where a = 0
