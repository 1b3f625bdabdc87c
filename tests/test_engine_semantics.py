"""The "Semantics fixed by the contract" of API.md, one rule at a time: numerical stability of the
softmax family, dtype rules, operands mixing on either side, NumPy functions on Tensors,
comparisons, gradient shapes and accumulation, retain_graph, no_grad, detach, error types."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg

SEEDS = st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------------------------------
# Numerical stability: softmax / log_softmax / logsumexp at logits of ±1e4, and float32
# --------------------------------------------------------------------------------------------
def careful_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference softmax, log_softmax and logsumexp over the last axis, one row at a time in
    float64 Python arithmetic: shifted by the row max, sums with math.fsum."""
    flat = x.astype(np.float64).reshape(-1, x.shape[-1])
    sm, lsm, lse = np.empty_like(flat), np.empty_like(flat), np.empty(len(flat))
    for r, row in enumerate(flat):
        m = max(row)
        z = [math.exp(v - m) for v in row]
        s = math.fsum(z)
        lse[r] = m + math.log(s)
        for i, v in enumerate(row):
            sm[r, i] = z[i] / s
            lsm[r, i] = (v - m) - math.log(s)
    return sm.reshape(x.shape), lsm.reshape(x.shape), lse.reshape(x.shape[:-1])


HUGE = np.array([[1e4, -1e4, 0.0, 5.0],
                 [-1e4, -1e4, -1e4, -1e4 + 1.0],
                 [1e4, 1e4 - 1.0, 1e4 - 3.0, -1e4],
                 [1e4, 1e4, 1e4, 1e4]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_family_finite_and_correct_at_huge_logits(dtype: Any) -> None:
    x = HUGE.astype(dtype)
    sm, lsm, lse = careful_rows(x)
    tol = dict(rtol=1e-12, atol=1e-300) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-6)
    for fn, ref in ((mg.softmax, sm), (mg.log_softmax, lsm), (mg.logsumexp, lse)):
        t = mg.tensor(x, requires_grad=True)
        y = fn(t)
        assert y.dtype == dtype, f"{fn.__name__} changed the dtype"
        assert np.isfinite(y.data).all(), f"{fn.__name__} is not finite at ±1e4"
        np.testing.assert_allclose(y.data, ref, **tol)  # type: ignore[arg-type]
        up = np.linspace(-1.0, 2.0, y.size).reshape(y.shape).astype(dtype)
        y.backward(up)
        assert t.grad is not None and t.grad.dtype == dtype and np.isfinite(t.grad).all()
        # the analytic VJPs, evaluated on the careful reference
        g = up.astype(np.float64)
        expected = {
            "softmax": sm * (g - (g * sm).sum(-1, keepdims=True)),
            "log_softmax": g - sm * g.sum(-1, keepdims=True),
            "logsumexp": g[..., None] * sm,
        }[fn.__name__]
        np.testing.assert_allclose(t.grad, expected, **tol)  # type: ignore[arg-type]


@pytest.mark.parametrize("cols", [2, 4, 16, 17, 50])
def test_log_softmax_is_exact_at_huge_logits_for_any_width(cols: int) -> None:
    x = np.tile(HUGE, (1, cols // 4 + 1))[:, :cols]
    x[:, 2:] += np.linspace(-3.0, 3.0, cols - 2)
    _, lsm, _ = careful_rows(x)
    got = mg.log_softmax(mg.tensor(x), axis=-1).data
    np.testing.assert_allclose(got, lsm, rtol=1e-12, atol=1e-300)


@given(seed=SEEDS, shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
       scale=st.sampled_from([1.0, 30.0, 1e4]), dtype=st.sampled_from([np.float64, np.float32]),
       transposed=st.booleans())
def test_softmax_family_matches_the_careful_reference(
        seed: int, shape: tuple[int, ...], scale: float, dtype: Any, transposed: bool) -> None:
    """Any shape, any logit size, contiguous or not (rows not consecutive in memory)."""
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
    if transposed:
        x = np.ascontiguousarray(x.T).T
    sm, lsm, lse = careful_rows(x)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    for fn, ref in ((mg.softmax, sm), (mg.log_softmax, lsm), (mg.logsumexp, lse)):
        got = fn(x).data
        assert got.dtype == dtype and got.shape == ref.shape and np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, **tol)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [2, 8, 16, 20, 64])
def test_log_softmax_keeps_the_digits_of_log_probabilities_near_zero(n: int, dtype: Any) -> None:
    """One logit far above n − 1 zeros: its log-probability is −log1p((n − 1)e^(−c)), tiny, and
    must keep its digits (the log of a sum near 1 would keep none below 1e-16)."""
    for c in (5.0, 14.0, 40.0, 80.0):
        x = np.zeros(n, dtype=dtype)
        x[0] = c
        y = mg.log_softmax(x).data
        tail = math.log1p((n - 1) * math.exp(-c))
        np.testing.assert_allclose(y[0], -tail, rtol=1e-14 if dtype == np.float64 else 1e-6)
        np.testing.assert_allclose(y[1:], -c - tail, rtol=1e-14 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cols", [2, 3, 4, 17])
def test_softmax_family_gives_numpys_results_at_inf_and_nan(cols: int, dtype: Any) -> None:
    """Rows of NaN, ±inf, ±the largest float, ±800 and 0 (and ordinary rows): the NaNs and
    infinities NumPy's own shifted formula gives, the same numbers elsewhere."""
    big = float(np.finfo(dtype).max)
    edges = [np.nan, np.inf, -np.inf, big, -big, 800.0, -800.0, 0.0]
    x = np.concatenate([np.array(list(itertools.product(edges, repeat=2)), dtype=dtype),
                        np.random.default_rng(cols).normal(size=(64, 2)).astype(dtype)])
    x = np.concatenate([x] + [x[:, :1][::-1]] * (cols - 2), axis=1)  # 128 rows of cols logits
    assert x.shape == (128, cols)
    with np.errstate(all="ignore"):
        m = np.maximum.reduce(x, axis=-1, keepdims=True, initial=-np.inf)
        e = np.exp(x - m)
        s = np.add.reduce(e, axis=-1, keepdims=True)
        for got, expected in ((mg.log_softmax(x, axis=-1).data, (x - m) - np.log(s)),
                              (mg.softmax(x, axis=-1).data, e / s)):
            assert got.dtype == dtype
            # NaN and ±inf where NumPy's; float32 numbers within its rounding of the plain
            # formula (log_softmax keeps more digits near 0 than the plain formula does)
            np.testing.assert_allclose(got, expected, rtol=1e-6,
                                       atol=0.0 if dtype == np.float64 else 1e-7)


def test_softmax_family_gives_native_byte_order() -> None:
    for fn in (mg.softmax, mg.log_softmax, mg.logsumexp):
        assert fn(np.array([1.0, 2.0], dtype=">f8")).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_from_log_softmax_at_huge_logits(dtype: Any) -> None:
    logits = mg.tensor(HUGE.astype(dtype), requires_grad=True)
    target = np.array([1, 3, 3, 0])
    loss = -logits.log_softmax(-1)[np.arange(4), target].mean()
    sm, lsm, _ = careful_rows(HUGE.astype(dtype))
    assert loss.dtype == dtype and np.isfinite(loss.item())
    assert loss.item() == pytest.approx(-lsm[np.arange(4), target].mean(), rel=1e-6)
    loss.backward()
    onehot = np.eye(4)[target]
    assert logits.grad is not None and logits.grad.dtype == dtype
    np.testing.assert_allclose(logits.grad, (sm - onehot) / 4, rtol=1e-5, atol=1e-7)


def test_logsumexp_and_softmax_with_minus_inf_entries() -> None:
    x = mg.tensor([[-np.inf, 0.0, 1.0], [2.0, -np.inf, -np.inf]], requires_grad=True)
    lse = x.logsumexp(-1)
    np.testing.assert_allclose(lse.data, [np.log(1 + np.e), 2.0])
    lse.backward(np.ones(2))
    assert x.grad is not None and np.isfinite(x.grad).all()
    np.testing.assert_allclose(x.grad, [[0.0, 1 / (1 + np.e), np.e / (1 + np.e)], [1, 0, 0]])
    np.testing.assert_allclose(mg.softmax(x.data).data[1], [1.0, 0.0, 0.0])


# --------------------------------------------------------------------------------------------
# dtype rules
# --------------------------------------------------------------------------------------------
SCALAR_OPS: list[tuple[str, Callable[[Any], Any]]] = [
    ("t + 2.0", lambda t: t + 2.0), ("2.0 + t", lambda t: 2.0 + t),
    ("t - 1", lambda t: t - 1), ("3 - t", lambda t: 3 - t),
    ("t * 2.5", lambda t: t * 2.5), ("2.5 * t", lambda t: 2.5 * t),
    ("t / 3.0", lambda t: t / 3.0), ("1.0 / t", lambda t: 1.0 / t),
    ("t ** 2", lambda t: t ** 2), ("t ** 0.5", lambda t: t ** 0.5),
    ("2.0 ** t", lambda t: 2.0 ** t),
    ("-t", lambda t: -t), ("maximum", lambda t: mg.maximum(t, 0.5)),
    ("minimum", lambda t: mg.minimum(0.5, t)), ("clip", lambda t: mg.clip(t, 0.1, 0.9)),
    ("where", lambda t: mg.where(np.array([True, False, True]), t, 0.0)),
    ("mean", lambda t: t.mean()), ("sum", lambda t: t.sum(axis=0)), ("max", lambda t: t.max()),
    ("softmax", lambda t: t.softmax()), ("log_softmax", lambda t: t.log_softmax()),
    ("logsumexp", lambda t: t.logsumexp()), ("exp", lambda t: t.exp()),
    ("log", lambda t: t.log()), ("sqrt", lambda t: t.sqrt()), ("tanh", lambda t: t.tanh()),
    ("sigmoid", lambda t: t.sigmoid()), ("relu", lambda t: t.relu()), ("abs", lambda t: t.abs()),
    ("getitem", lambda t: t[np.array([0, 0, 2])]), ("matmul", lambda t: t @ t),
    ("reshape", lambda t: t.reshape(3, 1).T), ("stack", lambda t: mg.stack([t, t])),
    ("np.exp", lambda t: np.exp(t)), ("np.maximum", lambda t: np.maximum(t, 0.25)),
    ("sin", lambda t: t.sin()), ("cos", lambda t: np.cos(t)), ("log1p", lambda t: mg.log1p(t)),
    ("expm1", lambda t: mg.expm1(t)), ("square", lambda t: mg.square(t)),
    ("var", lambda t: t.var(ddof=1)), ("std", lambda t: t.std()),
    ("pad", lambda t: mg.pad(t, 1, constant_values=2.0)), ("split", lambda t: mg.split(t, 3)[1]),
    ("unbind", lambda t: mg.unbind(t)[2]), ("squeeze", lambda t: t[None].squeeze()),
    ("linear", lambda t: mg.linear(t, np.ones((2, 3), t.dtype), 0.5)),
]


@pytest.mark.parametrize("name,fn", SCALAR_OPS, ids=[n for n, _ in SCALAR_OPS])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_python_scalars_never_promote(name: str, fn: Callable[[Any], Any], dtype: Any) -> None:
    t = mg.tensor(np.array([0.25, 0.5, 0.75], dtype=dtype), requires_grad=True)
    y = fn(t)
    assert y.dtype == dtype, f"{name}: {dtype.__name__} became {y.dtype}"
    y.sum().backward()
    assert t.grad is not None and t.grad.dtype == dtype and t.grad.shape == (3,)


def test_gradient_has_its_tensors_dtype_when_dtypes_mix() -> None:
    a = mg.tensor(np.ones(3, np.float32), requires_grad=True)
    b = mg.tensor(np.full(3, 2.0), requires_grad=True)  # float64
    y = a * b  # NumPy's promotion: float64
    assert y.dtype == np.float64
    y.backward(np.ones(3))
    assert a.grad is not None and b.grad is not None
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_array_equal(a.grad, [2.0, 2.0, 2.0])
    # a float64 upstream on a float32 output is cast to the output's dtype
    c = mg.tensor(np.ones(2, np.float32), requires_grad=True)
    (c * 3.0).backward(np.array([1.0, 2.0]))
    assert c.grad is not None and c.grad.dtype == np.float32


def test_astype_is_a_differentiable_cast() -> None:
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = x.astype(np.float32)
    assert y.dtype == np.float32 and y.requires_grad
    (y * y).sum().backward()
    assert x.grad is not None and x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    with pytest.raises(TypeError):
        x.astype(np.int64)  # a requires-grad Tensor cannot become an integer on the tape
    assert mg.tensor([1.5, 2.5]).astype(np.int64).dtype == np.int64  # off the tape: fine


@pytest.mark.parametrize("data", [[1, 2], 3, True, np.arange(3), np.arange(3, dtype=np.int8),
                                  [[1, 2], [3, 4]]])
@pytest.mark.parametrize("make", [mg.tensor, mg.Tensor])
def test_ints_lists_and_scalars_with_requires_grad_become_float64(data: Any, make: Any) -> None:
    t = make(data, requires_grad=True)
    assert t.dtype == np.float64 and t.requires_grad
    np.testing.assert_array_equal(t.data, np.asarray(data, dtype=np.float64))
    (t * t).sum().backward()
    assert t.grad is not None and t.grad.dtype == np.float64


def test_setting_requires_grad_later() -> None:
    t = mg.tensor([1.0, 2.0])
    t.requires_grad = True
    (t * 1.5).sum().backward()
    np.testing.assert_array_equal(t.grad, [1.5, 1.5])
    i = mg.tensor([1, 2])
    with pytest.raises(TypeError):
        i.requires_grad = True  # an integer grad would truncate 1.5 to 1 silently
    assert not i.requires_grad
    i.requires_grad = False  # harmless


def test_construction_dtypes_and_copies() -> None:
    assert mg.tensor([1, 2]).dtype == np.int64  # no requires_grad: NumPy's own dtype
    assert mg.tensor([1.0, 2.0]).dtype == np.float64
    assert mg.tensor([1, 2], dtype=np.float32).dtype == np.float32
    assert mg.tensor(np.ones(2, np.float32), requires_grad=True).dtype == np.float32
    assert mg.zeros((2, 3), dtype=np.float32).dtype == np.float32
    assert mg.ones(3).dtype == np.float64 and mg.ones(3).shape == (3,)
    assert mg.zeros(4, requires_grad=True).requires_grad
    # a NumPy scalar of the same dtype keeps it too (NumPy's own rule)
    assert (mg.tensor(np.ones(2, np.float32)) * np.float32(3.0)).dtype == np.float32
    with pytest.raises(TypeError):
        mg.Tensor([1, 2], requires_grad=True, dtype=np.int32)
    with pytest.raises(TypeError):
        mg.tensor(["a", "b"])
    src = np.arange(3.0)
    t = mg.tensor(src)  # always a copy
    src[0] = 100.0
    assert t.data[0] == 0.0
    t2 = mg.tensor(np.float32(2.5))
    assert t2.dtype == np.float32 and t2.shape == () and t2.item() == 2.5


# --------------------------------------------------------------------------------------------
# Operands on either side
# --------------------------------------------------------------------------------------------
BINARY: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b),
    ("/", lambda a, b: a / b), ("**", lambda a, b: a ** b), ("@", lambda a, b: a @ b),
    ("maximum", mg.maximum), ("minimum", mg.minimum),
    ("np.add", np.add), ("np.multiply", np.multiply), ("np.power", np.power),
    ("np.matmul", np.matmul),
]
OTHER_KINDS: list[tuple[str, Callable[[np.ndarray], Any]]] = [
    ("ndarray", lambda v: v), ("Tensor", lambda v: mg.tensor(v)),
    ("python float", lambda v: float(v[0])), ("numpy scalar", lambda v: np.float64(v[0])),
    ("list", lambda v: v.tolist()), ("0-d ndarray", lambda v: np.asarray(v[0])),
]


@pytest.mark.parametrize("opname,op", BINARY, ids=[n for n, _ in BINARY])
@pytest.mark.parametrize("kind,make", OTHER_KINDS, ids=[k for k, _ in OTHER_KINDS])
@pytest.mark.parametrize("tensor_side", ["left", "right"])
def test_operands_mix_on_either_side(opname: str, op: Callable[[Any, Any], Any], kind: str,
                                     make: Callable[[np.ndarray], Any], tensor_side: str) -> None:
    tv, ov = np.array([1.5, 0.5, 2.0]), np.array([0.75, 1.25, 0.5])
    other = make(ov)
    t = mg.tensor(tv, requires_grad=True)
    pair = (t, other) if tensor_side == "left" else (other, t)
    if opname in ("@", "np.matmul") and np.ndim(other) == 0:
        with pytest.raises(ValueError):  # as NumPy: matmul needs two arrays
            op(*pair)
        return
    ov_val = np.asarray(ov if np.ndim(other) else ov[0])
    ref_op = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "**": np.power,
              "@": np.matmul, "maximum": np.maximum, "minimum": np.minimum}.get(opname, op)

    def ref(v: np.ndarray) -> Any:
        return ref_op(v, ov_val) if tensor_side == "left" else ref_op(ov_val, v)

    y = op(*pair)
    assert isinstance(y, mg.Tensor), f"{kind} {opname} Tensor gave {type(y).__name__}"
    assert y.requires_grad
    np.testing.assert_allclose(y.data, ref(tv), rtol=1e-12)
    y.sum().backward()
    eps = 1e-6
    numeric = [(np.sum(ref(tv + eps * e)) - np.sum(ref(tv - eps * e))) / (2 * eps)
               for e in np.eye(3)]
    assert t.grad is not None and t.grad.shape == (3,)
    np.testing.assert_allclose(t.grad, numeric, rtol=1e-6, atol=1e-8)


# NumPy functions on a Tensor either stay on the tape (checked against finite differences of the
# same function) or raise TypeError; they never silently return an ndarray or drop the gradient.
NUMPY_FUNCS: list[tuple[str, Callable[[Any], Any]]] = [
    ("exp", np.exp), ("log", np.log), ("sqrt", np.sqrt), ("tanh", np.tanh), ("abs", np.abs),
    ("negative", np.negative), ("square", np.square), ("sin", np.sin), ("cos", np.cos),
    ("log1p", np.log1p), ("expm1", np.expm1), ("reciprocal", np.reciprocal),
    ("sum", np.sum), ("sum axis", lambda t: np.sum(t, axis=0)), ("mean", np.mean),
    ("max", np.max), ("amin", np.amin), ("prod", np.prod), ("cumsum", np.cumsum),
    ("var", np.var), ("std", np.std), ("sort", np.sort), ("dot", lambda t: np.dot(t, t)),
    ("outer", lambda t: np.outer(t, t)), ("einsum", lambda t: np.einsum("ij->j", t)),
    ("tensordot", lambda t: np.tensordot(t, t)), ("norm", np.linalg.norm),
    ("transpose", np.transpose), ("reshape", lambda t: np.reshape(t, -1)),
    ("squeeze", np.squeeze), ("expand_dims", lambda t: np.expand_dims(t, 0)),
    ("swapaxes", lambda t: np.swapaxes(t, 0, 1)), ("clip", lambda t: np.clip(t, 0.6, 1.4)),
    ("where", lambda t: np.where(np.eye(2, dtype=bool), t, 0.0)),
    ("concatenate", lambda t: np.concatenate([t, t])), ("stack", lambda t: np.stack([t, t])),
    ("broadcast_to", lambda t: np.broadcast_to(t, (3, 2, 2))),
    ("matmul", lambda t: np.matmul(t, t)), ("maximum", lambda t: np.maximum(t, 1.0)),
    ("power", lambda t: np.power(t, 3)), ("divide", lambda t: np.divide(1.0, t)),
    ("round", np.round), ("floor", np.floor), ("sign", np.sign), ("trace", np.trace),
    ("diag", np.diag), ("flip", np.flip), ("roll", lambda t: np.roll(t, 1)),
    ("ufunc.reduce", lambda t: np.add.reduce(t)), ("out=", lambda t: np.exp(t, out=t.data)),
    ("copy", np.copy), ("ravel", np.ravel), ("atleast_2d", np.atleast_2d),
]


@pytest.mark.parametrize("name,fn", NUMPY_FUNCS, ids=[n for n, _ in NUMPY_FUNCS])
def test_numpy_function_on_a_tensor_records_or_raises(name: str, fn: Callable[[Any], Any]) -> None:
    x = np.array([[0.7, 1.3], [1.1, 0.9]])
    t = mg.tensor(x, requires_grad=True)
    try:
        y = fn(t)
    except TypeError:
        return  # refused: allowed
    assert isinstance(y, mg.Tensor), f"np.{name} on a Tensor returned {type(y).__name__}"
    if y.dtype.kind == "f":
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(y.data, fn(x), rtol=1e-12)
        # recorded or not, the gradient it carries must match finite differences
        assert mg.gradcheck(fn, [mg.tensor(x)]) is True


def test_ndarray_times_tensor_and_asarray() -> None:
    t = mg.tensor([1.0, 2.0], requires_grad=True)
    y = np.array([3.0, 4.0]) * t
    assert type(y) is mg.Tensor and y.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(t.grad, [3.0, 4.0])
    v = np.asarray(t)
    assert type(v) is np.ndarray
    np.testing.assert_array_equal(v, [1.0, 2.0])
    assert type(np.array(t)) is np.ndarray
    assert isinstance(t.numpy(), np.ndarray) and t.numpy().tolist() == [1.0, 2.0]


def test_item_gives_a_python_number_of_one_element_tensors_only() -> None:
    for data, want in (([[2.5]], 2.5), (3, 3), (np.float32(1.5), 1.5), ([True], True)):
        got = mg.tensor(data).item()
        assert got == want and type(got) is type(want), (data, got)
    assert type(mg.tensor([2.5], requires_grad=True).sum().item()) is float
    assert float(mg.tensor([0.5])) == 0.5 and int(mg.tensor(7)) == 7
    for bad in ([1.0, 2.0], np.zeros((2, 1)), np.zeros(0)):
        with pytest.raises(ValueError, match="one-element"):
            mg.tensor(bad).item()


# NumPy functions that reach a primitive of the table (or a composition of them): they must
# record, never raise. (np.sin & co. used to raise TypeError.)
MUST_RECORD: list[tuple[str, Callable[[Any], Any]]] = [
    ("sin", np.sin), ("cos", np.cos), ("log1p", np.log1p), ("expm1", np.expm1),
    ("square", np.square), ("abs", np.abs), ("absolute", np.absolute), ("exp", np.exp),
    ("tanh", np.tanh), ("sqrt", np.sqrt), ("negative", np.negative),
    ("var", lambda t: np.var(t, axis=0, ddof=1)), ("std", np.std), ("squeeze", np.squeeze),
    ("expand_dims", lambda t: np.expand_dims(t, 1)), ("pad", lambda t: np.pad(t, 1)),
    ("split", lambda t: np.split(t, 2, axis=1)[1]), ("max", np.max), ("amin", np.amin),
    ("clip", lambda t: np.clip(t, 0.8, 1.2)), ("swapaxes", lambda t: np.swapaxes(t, 0, 1)),
    ("matrix_transpose", np.matrix_transpose),
]


@pytest.mark.parametrize("name,fn", MUST_RECORD, ids=[n for n, _ in MUST_RECORD])
def test_numpy_functions_that_reach_the_table_record(name: str, fn: Callable[[Any], Any]
                                                     ) -> None:
    x = np.array([[0.7, 1.3], [1.1, 0.9]])
    y = fn(mg.tensor(x, requires_grad=True))
    assert isinstance(y, mg.Tensor) and y.requires_grad
    np.testing.assert_allclose(y.data, fn(x), rtol=1e-14)
    assert mg.gradcheck(fn, [mg.tensor(x)], atol=1e-8, rtol=1e-6) is True


@pytest.mark.parametrize("fn", [np.cumsum, np.sort, np.trace, np.round, lambda t: np.add.reduce(t),
                                lambda t: np.exp(t, out=np.empty(2))])
def test_numpy_functions_that_reach_no_primitive_raise_type_error(fn: Any) -> None:
    t = mg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="not a recorded primitive"):
        fn(t)


# --------------------------------------------------------------------------------------------
# Comparisons and argmax never require grad
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,fn,ref", [
    ("<", lambda a, b: a < b, np.less), ("<=", lambda a, b: a <= b, np.less_equal),
    (">", lambda a, b: a > b, np.greater), (">=", lambda a, b: a >= b, np.greater_equal),
    ("==", lambda a, b: a == b, np.equal), ("!=", lambda a, b: a != b, np.not_equal),
])
def test_comparisons_are_bool_tensors_off_the_tape(name: str, fn: Any, ref: Any) -> None:
    a = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    bv = np.array([2.0, 2.0, 2.0])
    for pair, vals in (((a, mg.tensor(bv, requires_grad=True)), (a.data, bv)),
                       ((a, bv), (a.data, bv)), ((bv, a), (bv, a.data)), ((a, 2.0), (a.data, 2.0)),
                       ((2.0, a), (2.0, a.data))):
        c = fn(*pair)
        assert isinstance(c, mg.Tensor) and c.dtype == np.bool_
        assert not c.requires_grad and c.is_leaf
        np.testing.assert_array_equal(c.data, ref(*vals))
    with pytest.raises(RuntimeError):
        fn(a, bv).backward(np.ones(3, dtype=bool))


def test_argmax_argmin_are_integer_tensors_off_the_tape() -> None:
    x = mg.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], requires_grad=True)
    for fn, ref in ((x.argmax, np.argmax), (x.argmin, np.argmin)):
        for axis in (None, 0, 1, -1):
            r = fn(axis) if axis is not None else fn()
            assert isinstance(r, mg.Tensor) and r.dtype.kind in "iu" and not r.requires_grad
            np.testing.assert_array_equal(r.data, ref(x.data, axis=axis))
    assert mg.argmax(x, axis=1).tolist() == [1, 0]
    assert np.argmax(x).item() == 3


# --------------------------------------------------------------------------------------------
# Gradients: exact shapes, reset, accumulation
# --------------------------------------------------------------------------------------------
def unbroadcast_reference(up: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum up (of the broadcast shape) back onto `shape`, element by element."""
    out = np.zeros(shape)
    for idx in np.ndindex(*up.shape):
        tail = idx[len(idx) - len(shape):] if shape else ()
        out[tuple(0 if n == 1 else i for i, n in zip(tail, shape))] += up[idx]
    return out


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                max_side=3), seed=SEEDS)
def test_leaf_grad_has_exactly_the_leaf_shape(shapes: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes
    a = mg.tensor(rng.normal(size=sa), requires_grad=True)
    b = mg.tensor(rng.normal(size=sb), requires_grad=True)
    up = rng.normal(size=shapes.result_shape)
    (a * b + a).backward(up)
    assert a.grad is not None and b.grad is not None
    assert a.grad.shape == sa and b.grad.shape == sb
    assert type(a.grad) is np.ndarray and type(b.grad) is np.ndarray
    bb = np.broadcast_to(b.data, shapes.result_shape)
    aa = np.broadcast_to(a.data, shapes.result_shape)
    np.testing.assert_allclose(a.grad, unbroadcast_reference(up * (bb + 1), sa), atol=1e-12)
    np.testing.assert_allclose(b.grad, unbroadcast_reference(up * aa, sb), atol=1e-12)


def test_grad_reset_with_none_and_accumulation_without() -> None:
    x = mg.tensor([1.0, -2.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, -4.0])
    (x * x).sum().backward()  # a new graph: accumulates
    np.testing.assert_array_equal(x.grad, [4.0, -8.0])
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, -4.0])


def test_reuse_accumulates_never_assigns() -> None:
    a = mg.tensor(3.0, requires_grad=True)
    b = a + a
    c = b + b
    c.backward()
    assert a.grad == 4.0
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = x * x  # one node feeding two ops
    y = (h * 2.0).sum() + (h * 3.0).sum() + h[0]
    y.backward()
    np.testing.assert_array_equal(x.grad, [5 * 2 * 1.0 + 2 * 1.0, 5 * 2 * 2.0])
    w = mg.tensor(2.0, requires_grad=True)
    (w * w * w).backward()  # the same leaf three times in one product chain
    assert w.grad == 12.0


def test_backward_twice_after_zeroing_gives_the_same_gradient() -> None:
    rng = np.random.default_rng(3)
    w = mg.tensor(rng.normal(size=(3, 2)), requires_grad=True)
    x = rng.normal(size=(4, 3))
    grads = []
    for _ in range(2):
        w.grad = None
        ((x @ w).tanh() ** 2).mean().backward()
        grads.append(w.grad.copy())  # type: ignore[union-attr]
    np.testing.assert_array_equal(grads[0], grads[1])


def test_upstream_gradient_is_applied_and_not_aliased() -> None:
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    up = np.array([1.0, -1.0, 0.5])
    (x + 0.0).backward(up)
    np.testing.assert_array_equal(x.grad, up)
    up[0] = 99.0  # the caller's array is theirs: x.grad must not change with it
    np.testing.assert_array_equal(x.grad, [1.0, -1.0, 0.5])
    x.grad = None
    x.backward(mg.tensor([2.0, 2.0, 2.0]))  # a leaf's own backward, a Tensor upstream
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


# --------------------------------------------------------------------------------------------
# Tape lifetime, no_grad, detach
# --------------------------------------------------------------------------------------------
def test_retain_graph_allows_a_second_backward() -> None:
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.copy()  # type: ignore[union-attr]
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad, 2 * first)
    y.backward()  # frees
    np.testing.assert_allclose(x.grad, 3 * first)
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        y.backward()


def test_second_backward_through_freed_tape_raises() -> None:
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = x.tanh()
    y = h.sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        (h * 2.0).sum().backward()  # a new op on top of a freed part of the tape
    before = x.grad.copy()  # type: ignore[union-attr]
    (x * 2.0).sum().backward()  # a fresh graph from the leaf is fine
    np.testing.assert_allclose(x.grad, before + 2.0)


def test_no_grad_records_nothing_and_restores() -> None:
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    assert mg.is_grad_enabled()
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        y = (x * x).exp()
        with mg.no_grad():
            pass
        assert not mg.is_grad_enabled()
    assert mg.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    np.testing.assert_allclose(y.data, np.exp(x.data ** 2))
    with pytest.raises(RuntimeError):
        y.sum().backward()
    with pytest.raises(ZeroDivisionError), mg.no_grad():
        1 / 0  # noqa: B018
    assert mg.is_grad_enabled()

    @mg.no_grad()
    def f(t: mg.Tensor) -> mg.Tensor:
        return t * 2.0

    assert not f(x).requires_grad and mg.is_grad_enabled()
    assert (x * 2.0).requires_grad


def test_no_grad_on_a_generator_function_covers_its_body() -> None:
    """As a decorator, no_grad covers a generator's body each time it resumes (not only the
    call that creates it), and gives the caller its own mode back while the generator waits."""
    policy = mg.nn.Linear(4, 2, rng=0)
    seen_modes: list[bool] = []

    @mg.no_grad()
    def rollout(n: int) -> Any:
        for _ in range(n):
            seen_modes.append(mg.is_grad_enabled())
            received = yield policy(mg.tensor(np.ones(4)))
            seen_modes.append(received is None or mg.is_grad_enabled())
        return "done"

    outs = []
    gen = rollout(3)
    for out in gen:
        assert mg.is_grad_enabled()  # the caller's mode while the generator is paused
        outs.append(out)
    assert [o.requires_grad for o in outs] == [False, False, False]
    assert seen_modes == [False, True, False, True, False, True]
    for p in policy.parameters():  # nothing recorded, so nothing locks the parameters
        assert p.data.flags.writeable
        p.grad = np.ones_like(p.data)
    mg.optim.SGD(policy.parameters(), lr=0.1).step()
    # send(), throw() and the return value pass through
    gen = rollout(2)
    next(gen)
    assert not gen.send(1.0).requires_grad
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"
    gen = rollout(2)
    next(gen)
    with pytest.raises(KeyError):
        gen.throw(KeyError("x"))
    assert mg.is_grad_enabled()

    @mg.enable_grad()
    def recording() -> Any:
        yield policy(mg.tensor(np.ones(4)))

    with mg.no_grad():
        (out,) = list(recording())
        assert not mg.is_grad_enabled()
    assert out.requires_grad


def test_detach_shares_memory_and_stops_the_gradient() -> None:
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf and np.shares_memory(d.data, x.data)
    (x * x.detach()).sum().backward()
    np.testing.assert_array_equal(x.grad, x.data)  # not 2x: the detached factor is a constant
    h = x * 2.0
    (h.detach() * x).sum().backward()
    np.testing.assert_array_equal(x.grad, x.data + 2 * x.data)


# --------------------------------------------------------------------------------------------
# Errors: standard types, with the op and the shapes in the message
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sa,sb", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)), ((5,), (4, 2)),
                                   ((2, 2, 3), (2, 4, 2)), ((2, 1, 3), (4, 3, 2, 5))])
def test_matmul_shape_mismatch_is_a_value_error_naming_both_shapes(sa: tuple[int, ...],
                                                                   sb: tuple[int, ...]) -> None:
    a, b = mg.ones(sa, requires_grad=True), mg.ones(sb)
    for x, y in ((a, b), (a.data, b), (a, b.data)):
        with pytest.raises(ValueError) as info:
            x @ y
        msg = str(info.value)
        assert "matmul" in msg and str(sa) in msg and str(sb) in msg, msg


def test_broadcast_mismatch_is_a_value_error_with_shapes() -> None:
    with pytest.raises(ValueError) as info:
        mg.ones((2, 3), requires_grad=True) + mg.ones((4,))
    msg = str(info.value)
    assert "add" in msg and "(2, 3)" in msg and "(4,)" in msg
    with pytest.raises(ValueError):
        mg.concatenate([mg.ones((2, 3)), mg.ones((2, 4))], axis=0)
    with pytest.raises(ValueError):
        mg.ones((2, 3)).reshape(4, 2)
    with pytest.raises(ValueError):
        mg.ones((2, 3)).sum(axis=2)


@pytest.mark.parametrize("bad", ["abc", None, {"a": 1}, object(), [1, "x"]])
def test_wrong_operand_type_is_a_type_error(bad: Any) -> None:
    t = mg.tensor([1.0, 2.0], requires_grad=True)
    for op in (lambda: t + bad, lambda: bad + t, lambda: t * bad, lambda: bad * t,
               lambda: t @ bad, lambda: mg.maximum(t, bad), lambda: t - bad, lambda: bad / t):
        with pytest.raises(TypeError):
            op()


def test_clip_bounds_that_require_grad_are_refused_not_ignored() -> None:
    x = mg.tensor([0.0, 1.0, 2.0], requires_grad=True)
    lo = mg.tensor(0.5, requires_grad=True)
    with pytest.raises(TypeError, match="lo"):
        mg.clip(x, lo, 1.5)  # lo would silently get no gradient
    with pytest.raises(TypeError, match="hi"):
        x.clip(None, mg.tensor([1.0, 1.0, 1.0], requires_grad=True))
    y = mg.clip(x, lo.detach(), mg.tensor(1.5))  # constant Tensors are fine
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 0.0])


def test_backward_misuse_is_a_runtime_error() -> None:
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"\(2,\)"):
        (x * 2.0).backward()  # not one element and no upstream
    with pytest.raises(RuntimeError):
        mg.tensor([1.0]).backward()  # does not require grad
    with pytest.raises(RuntimeError, match=r"\(3,\).*\(2,\)"):
        (x * 2.0).backward(np.ones(3))  # upstream of the wrong shape
    with pytest.raises(ValueError):
        (x * 2.0).backward(np.ones(3))  # ... which is also a shape mismatch


# --------------------------------------------------------------------------------------------
# Refused inputs: complex numbers, non-numeric operands, malformed arguments
# --------------------------------------------------------------------------------------------
def test_complex_values_are_refused_wherever_a_gradient_could_be_asked_for() -> None:
    """The VJPs do not conjugate, so a complex gradient would be silently wrong: complex data
    cannot require grad, a recorded op cannot produce complex values, and backward() takes no
    complex upstream. Off the tape complex values are fine."""
    z0 = np.array([1 + 2j])
    with pytest.raises(TypeError, match="complex"):
        mg.tensor(z0, requires_grad=True)
    with pytest.raises(TypeError, match="complex"):
        mg.Tensor(z0, requires_grad=True)
    z = mg.tensor(z0)
    with pytest.raises(TypeError, match="complex"):
        z.requires_grad = True
    assert not z.requires_grad
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    for make in (lambda: x * z0[0], lambda: x + np.array([1j, 2j]), lambda: x * z,
                 lambda: x.astype(np.complex128), lambda: x ** np.array(0.5 + 1j)):
        with pytest.raises(TypeError, match="complex"):
            make()
    with pytest.raises(TypeError, match="real"):
        (x * 2.0).backward(np.ones(2) * 1j)
    with pytest.raises(TypeError):
        mg.grad(lambda t: (t * 2.0).sum())(z0)
    assert x.grad is None
    np.testing.assert_array_equal((z * z).data, z0 * z0)  # no gradient asked: allowed


@pytest.mark.parametrize("bad", [np.array([1.5, 2, 3], dtype=object),
                                 np.array([1, None, 3], dtype=object),
                                 np.array(["a", "b", "c"]), np.array([b"a", b"b", b"c"]),
                                 np.array(["2020-01-01"] * 3, dtype="datetime64[D]")],
                         ids=["object numbers", "object None", "str", "bytes", "datetime"])
def test_non_numeric_operands_are_a_type_error_naming_the_op(bad: np.ndarray) -> None:
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for name, op in (("multiply", lambda: x * bad), ("add", lambda: bad + x),
                     ("maximum", lambda: mg.maximum(x, bad)), ("where", lambda: mg.where(
                         np.array([True, False, True]), x, bad)), ("concatenate",
                     lambda: mg.concatenate([x, bad]))):
        with pytest.raises(TypeError, match=name) as info:
            op()
        assert str(bad.dtype) in str(info.value), info.value
    with pytest.raises(TypeError):
        mg.tensor(bad)


@pytest.mark.parametrize("label,call,words", [
    ("sum(axis=1.5)", lambda x: x.sum(axis=1.5), ["sum", "axis", "1.5"]),
    ("sum(axis='a')", lambda x: x.sum(axis="a"), ["sum", "axis"]),
    ("max(axis=(0, 0.5))", lambda x: x.max(axis=(0, 0.5)), ["max", "axis"]),
    ("softmax(axis=1.0)", lambda x: x.softmax(axis=1.0), ["softmax", "axis"]),
    ("reshape('a')", lambda x: x.reshape("a"), ["reshape", "shape"]),
    ("reshape(2.0, 2)", lambda x: x.reshape(2.0, 2), ["reshape", "shape"]),
    ("clip('a', 'b')", lambda x: x.clip("a", "b"), ["clip", "str"]),
    ("var(ddof=0.5)", lambda x: x.var(ddof=0.5), ["var", "ddof"]),
    ("split(t, 1.5)", lambda x: mg.split(x, 1.5), ["split"]),
    ("backward('a')", lambda x: (x * 2.0).backward("a"), ["backward", "gradient"]),
    ("backward([None] * 4)", lambda x: (x * 2.0).backward([None] * 4), ["backward",
                                                                        "gradient"]),
    ("backward([None, None])", lambda x: (x * 2.0).backward([None, None]), ["backward"]),
    ("backward({})", lambda x: (x * 2.0).backward({}), ["backward"]),
])
def test_malformed_arguments_are_a_type_error_saying_what_is_wrong(
        label: str, call: Callable[[mg.Tensor], Any], words: list[str]) -> None:
    x = mg.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    with pytest.raises(TypeError) as info:
        call(x)
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{label}: {msg!r} does not say {w!r}"
    assert x.grad is None


@pytest.mark.parametrize("name", ["sum", "max", "min", "logsumexp", "softmax", "log_softmax"])
def test_axis_minus_one_on_a_0d_tensor_is_numpys(name: str) -> None:
    x = mg.tensor(1.5, requires_grad=True)
    y = getattr(x, name)(-1)
    ref = {"sum": 1.5, "max": 1.5, "min": 1.5, "logsumexp": 1.5, "softmax": 1.0,
           "log_softmax": 0.0}[name]
    assert y.shape == () and y.item() == ref
    y.backward()
    assert x.grad == (0.0 if name in ("softmax", "log_softmax") else 1.0)


def test_pad_of_a_0d_tensor_is_numpys() -> None:
    x = mg.tensor(2.0, requires_grad=True)
    y = mg.pad(x, 1)
    assert y.shape == () and y.item() == np.pad(np.array(2.0), 1)
    y.backward()
    assert x.grad == 1.0
