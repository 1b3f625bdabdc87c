"""minigrad.nn's layers, losses and initialisers, checked without PyTorch.

- nn's own rows (`nn/primitives.py`: erf, softplus, standardize, linear_relu): gradchecked in
  float64 against central differences over hypothesis shapes, at first and second order, values
  off the kinks; erf against `math.erf`; softplus and the logistic loss finite at ±1e4.
- every layer and loss against its formula written out in NumPy, its gradient against the
  formula's derivative or against finite differences, train/eval behaviour, running
  statistics, the state dict round trip, and the errors for bad shapes and arguments.

test_nn_torch.py compares the same layers with PyTorch where it is installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F  # noqa: N812  (PyTorch's spelling)
from minigrad.nn import init, primitives
from minigrad.rules import Primitive
from minigrad.transforms import toposort

SEEDS = st.integers(0, 2**32 - 1)
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)
SECOND_ORDER = settings(max_examples=max(5, settings.default.max_examples // 4))


def ops_in_graph(t: mg.Tensor) -> list[str]:
    """Names of the primitives recorded on t's tape, each node once."""
    return [n._op.name for n in toposort(t, set()) if n._op is not None]


def second_order(f: Callable[..., mg.Tensor], inputs: list[np.ndarray], **tol: float) -> None:
    """gradcheck x ↦ ∇ₓ Σ w·f(x)²: the VJPs, recorded, against differences of the gradient."""
    n = len(inputs)
    shape = f(*(mg.tensor(a) for a in inputs)).shape
    w = np.linspace(0.5, 1.5, math.prod(shape)).reshape(shape)

    def h(*xs: mg.Tensor) -> mg.Tensor:
        y = f(*xs)
        return (y * y * w).sum()

    for k in range(n):
        def gradient(*xs: mg.Tensor, k: int = k) -> mg.Tensor:
            return mg.grad(h, argnums=tuple(range(n)))(*xs)[k]  # type: ignore[index]

        assert mg.gradcheck(gradient, [mg.tensor(a) for a in inputs], **tol) is True


def off_kink(rng: np.random.Generator, shape: tuple[int, ...], lo: float = 0.1,
             hi: float = 3.0) -> np.ndarray:
    """|x| in [lo, hi] with a random sign: central differences never straddle 0."""
    return rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


def math_erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


# =============================================================================================
# nn's rows of the table
# =============================================================================================
ROWS = [primitives.erf, primitives.softplus, primitives.standardize, primitives.linear_relu]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_each_row_states_its_math_in_one_line(row: Primitive) -> None:
    assert isinstance(row, Primitive)
    forward, _, vjp = row.math.partition(";")
    assert "\n" not in row.math and "=" in forward and "ḡ" in vjp and "x̄" in vjp, row.math


def test_erf_matches_math_erf_to_a_few_ulps() -> None:
    x = np.concatenate([np.linspace(-8, 8, 40001), np.linspace(-40, 40, 801),
                        [0.46875, -0.46875, np.nextafter(0.46875, 1), 4.0, -4.0,
                         np.nextafter(4.0, 5), 5.9, 26.9, 27.0, 1e-300, -0.0, 0.0]])
    got = primitives.erf.forward(x)
    want = math_erf(x)
    assert np.max(np.abs(got - want)) <= 4 * np.finfo(float).eps
    small = np.abs(x) < 0.46875  # relative accuracy where erf is small
    assert np.all(np.abs(got - want)[small] <= 4 * np.finfo(float).eps * np.abs(want[small]))
    np.testing.assert_array_equal(primitives.erf.forward(-x), -got)  # odd
    special = primitives.erf.forward(np.array([np.inf, -np.inf, np.nan]))
    np.testing.assert_array_equal(special[:2], [1.0, -1.0])
    assert np.isnan(special[2])
    assert primitives.erf.forward(np.float32([0.5])).dtype == np.float32


@given(shape=SHAPES, seed=SEEDS)
def test_erf_and_gelu_pass_gradcheck(shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, shape)
    assert ops_in_graph(primitives.erf(mg.tensor(x, requires_grad=True))) == ["erf"]
    assert "erf" in ops_in_graph(F.gelu(mg.tensor(x, requires_grad=True)))
    for f in (primitives.erf, F.gelu, lambda t: F.gelu(t, approximate="tanh")):
        assert mg.gradcheck(f, mg.tensor(x), atol=1e-7, rtol=1e-6)


@given(shape=SHAPES, seed=SEEDS, beta=st.sampled_from([0.5, 1.0, 3.0]),
       threshold=st.sampled_from([1.0, 20.0, math.inf]))
def test_softplus_passes_gradcheck_on_both_sides_of_its_threshold(
        shape: tuple[int, ...], seed: int, beta: float, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-4, 4, shape)
    x = np.where(np.abs(beta * x - threshold) < 0.1, x + 0.3 / beta, x)  # off the switch

    def f(t: mg.Tensor) -> mg.Tensor:
        return F.softplus(t, beta, threshold)

    assert ops_in_graph(f(mg.tensor(x, requires_grad=True))) == ["softplus"]
    assert mg.gradcheck(f, mg.tensor(x), atol=1e-7, rtol=1e-6)


@st.composite
def standardize_cases(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, ...]]:
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=3))
    axes = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True))
    x = np.random.default_rng(draw(SEEDS)).normal(size=shape)
    return x, tuple(sorted(axes))


@given(case=standardize_cases(), eps=st.sampled_from([1e-5, 0.5]))
def test_standardize_passes_gradcheck_over_any_axes(case: Any, eps: float) -> None:
    x, axes = case
    y = primitives.standardize(mg.tensor(x, requires_grad=True), axis=axes, eps=eps)
    mean = x.mean(axis=axes, keepdims=True)
    want = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    np.testing.assert_allclose(y.data, want, rtol=1e-12, atol=1e-14)
    assert ops_in_graph(y) == ["standardize"]
    assert mg.gradcheck(lambda t: primitives.standardize(t, axis=axes, eps=eps), mg.tensor(x),
                        atol=1e-7, rtol=1e-6)


@st.composite
def linear_relu_cases(draw: st.DrawFn) -> list[np.ndarray]:
    """x (batch axes, in), W (out, in) and maybe b (out,) whose pre-activation x Wᵀ + b stays
    at least 0.05 from the ReLU's kink, so central differences never straddle it (x is drawn
    again until it does)."""
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(SEEDS))
    w = rng.normal(size=(n_out, n_in))
    b = [rng.normal(size=n_out)] if draw(st.booleans()) else []
    while True:
        x = rng.normal(size=batch + (n_in,))
        if np.abs(x @ w.T + sum(b)).min() > 0.05:
            return [x, w, *b]


@given(case=linear_relu_cases())
def test_linear_relu_equals_linear_then_relu_and_passes_gradcheck(case: list[np.ndarray]) -> None:
    z = case[0] @ case[1].T + (case[2] if len(case) == 3 else 0)
    y = primitives.linear_relu(*(mg.tensor(a, requires_grad=True) for a in case))
    np.testing.assert_allclose(y.data, np.maximum(z, 0), rtol=1e-13, atol=1e-15)
    assert ops_in_graph(y) == ["linear_relu"]
    assert mg.gradcheck(primitives.linear_relu, [mg.tensor(a) for a in case], atol=1e-7,
                        rtol=1e-6)


@SECOND_ORDER
@given(seed=SEEDS)
def test_the_rows_vjps_are_differentiable(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.5, 2.5, (2, 3))
    for f in (primitives.erf, F.gelu, lambda t: F.gelu(t, "tanh"),
              lambda t: F.softplus(t, 2.0, 20.0)):
        second_order(f, [x], atol=1e-6, rtol=1e-5)
    second_order(lambda t: primitives.standardize(t, axis=(1,), eps=0.1), [x], atol=1e-6,
                 rtol=1e-5)
    w, b = rng.normal(size=(4, 3)), rng.normal(size=4)
    b += np.where(np.abs(x @ w.T + b) < 0.1, 0.3, 0.0).max(axis=0)  # off the kink
    second_order(primitives.linear_relu, [x, w, b], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_and_the_logistic_loss_are_finite_at_huge_logits(dtype: Any) -> None:
    z = mg.tensor(np.array([1e4, -1e4, 0.0, 50.0, -50.0], dtype), requires_grad=True)
    for threshold in (20.0, math.inf):
        y = F.softplus(z, 1.0, threshold)
        assert y.dtype == dtype
        np.testing.assert_allclose(y.data, [1e4, 0.0, math.log(2), 50.0, math.exp(-50)],
                                   rtol=1e-6)
        z.grad = None
        y.sum().backward()
        np.testing.assert_allclose(z.grad, [1.0, 0.0, 0.5, 1.0, math.exp(-50)], rtol=1e-6)
    targets = np.array([0.0, 1.0, 0.5, 1.0, 0.0], dtype)
    z.grad = None
    loss = F.binary_cross_entropy_with_logits(z, targets, reduction="none")
    # ℓ = y·softplus(−z) + (1 − y)·softplus(z): 1e4, 1e4, log 2, softplus(−50) twice
    np.testing.assert_allclose(loss.data, [1e4, 1e4, math.log(2), math.exp(-50), math.exp(-50)],
                               rtol=1e-5)
    loss.sum().backward()
    sig = np.array([1.0, 0.0, 0.5, 1.0, 0.0])
    assert z.grad.dtype == dtype and np.all(np.isfinite(z.grad))
    np.testing.assert_allclose(z.grad, sig - targets, atol=1e-6)


# =============================================================================================
# Activations
# =============================================================================================
X = np.linspace(-4, 4, 41)  # 0 included: the conventions at the kinks are PyTorch's
GELU_EXACT = X * 0.5 * (1 + math_erf(X / math.sqrt(2)))
K = math.sqrt(2 / math.pi)

ACTIVATIONS: list[tuple[str, Callable[[Any], mg.Tensor], np.ndarray, np.ndarray]] = [
    # name, function, value, derivative (written out)
    ("leaky_relu", lambda t: F.leaky_relu(t, 0.2), np.where(X > 0, X, 0.2 * X),
     np.where(X > 0, 1.0, 0.2)),
    ("silu", F.silu, X / (1 + np.exp(-X)),
     1 / (1 + np.exp(-X)) + X * np.exp(-X) / (1 + np.exp(-X)) ** 2),
    ("elu", lambda t: F.elu(t, 0.7), np.where(X > 0, X, 0.7 * np.expm1(X)),
     np.where(X > 0, 1.0, 0.7 * np.exp(X))),
    ("softplus", lambda t: F.softplus(t, 2.0, 6.0),
     np.where(2 * X > 6, X, np.log1p(np.exp(2 * X)) / 2),
     np.where(2 * X > 6, 1.0, 1 / (1 + np.exp(-2 * X)))),
    ("gelu", F.gelu, GELU_EXACT,
     0.5 * (1 + math_erf(X / math.sqrt(2))) + X * np.exp(-X * X / 2) / math.sqrt(2 * math.pi)),
    ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh"),
     0.5 * X * (1 + np.tanh(K * (X + 0.044715 * X ** 3))),
     0.5 * (1 + np.tanh(K * (X + 0.044715 * X ** 3)))
     + 0.5 * X * (1 - np.tanh(K * (X + 0.044715 * X ** 3)) ** 2) * K * (1 + 3 * 0.044715 * X * X)),
]


@pytest.mark.parametrize("name,f,value,slope", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_values_and_slopes_are_the_formulas(name: str, f: Any, value: np.ndarray,
                                                       slope: np.ndarray) -> None:
    x = mg.tensor(X, requires_grad=True)
    y = f(x)
    np.testing.assert_allclose(y.data, value, rtol=1e-13, atol=1e-15)
    y.backward(np.ones_like(X))
    np.testing.assert_allclose(x.grad, slope, rtol=1e-12, atol=1e-15)
    x32 = mg.tensor(X.astype(np.float32), requires_grad=True)  # float32 stays float32
    y32 = f(x32)
    y32.sum().backward()
    assert y32.dtype == np.float32 and x32.grad.dtype == np.float32
    np.testing.assert_allclose(y32.data, value, rtol=1e-5, atol=1e-6)


@given(shape=SHAPES, seed=SEEDS)
def test_compositional_activations_pass_gradcheck(shape: tuple[int, ...], seed: int) -> None:
    x = off_kink(np.random.default_rng(seed), shape)
    for f in (lambda t: F.leaky_relu(t, 0.3), F.silu, lambda t: F.elu(t, 1.3)):
        assert mg.gradcheck(f, mg.tensor(x), atol=1e-7, rtol=1e-6)


def test_elu_has_a_finite_gradient_at_huge_inputs() -> None:
    x = mg.tensor([1e4, -1e4, 800.0], requires_grad=True)
    F.elu(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 1.0])


def test_activation_modules_call_the_functions() -> None:
    x = mg.tensor(X)
    for module, f in ((nn.LeakyReLU(0.3), lambda t: F.leaky_relu(t, 0.3)),
                      (nn.GELU(), F.gelu), (nn.GELU("tanh"), lambda t: F.gelu(t, "tanh")),
                      (nn.SiLU(), F.silu), (nn.ELU(alpha=0.5), lambda t: F.elu(t, 0.5)),
                      (nn.Softplus(beta=2.0, threshold=3.0), lambda t: F.softplus(t, 2.0, 3.0))):
        np.testing.assert_array_equal(module(x).data, f(x).data)
        assert list(module.parameters()) == [] and module.state_dict() == {}
    assert repr(nn.LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(nn.Softplus()) == "Softplus(beta=1.0, threshold=20.0)"
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        nn.GELU("erf")
    with pytest.raises(ValueError, match="gelu: approximate"):
        F.gelu(x, approximate="fast")


# =============================================================================================
# Dropout
# =============================================================================================
def test_dropout_zeroes_with_probability_p_and_scales_the_rest() -> None:
    x = mg.tensor(np.random.default_rng(0).uniform(1, 2, 40_000), requires_grad=True)
    p = 0.3
    y = F.dropout(x, p, rng=1)
    kept = y.data != 0
    np.testing.assert_allclose(y.data[kept], x.data[kept] / (1 - p), rtol=1e-15)
    # the zero fraction is Binomial(n, p)/n: 5 standard deviations is ~0.012
    assert abs((~kept).mean() - p) < 5 * math.sqrt(p * (1 - p) / x.size)
    y.backward(np.ones(x.shape))
    np.testing.assert_allclose(x.grad, np.where(kept, 1 / (1 - p), 0.0), rtol=1e-15)
    assert abs(y.data.mean() / x.data.mean() - 1) < 0.02  # the expectation is kept


def test_dropout_randomness_comes_from_rng() -> None:
    x = np.ones((20, 30))
    a, b = F.dropout(x, 0.5, rng=7).data, F.dropout(x, 0.5, rng=7).data
    np.testing.assert_array_equal(a, b)  # an int seed: the same mask
    gen = np.random.default_rng(7)
    np.testing.assert_array_equal(F.dropout(x, 0.5, rng=gen).data, a)  # the same stream
    assert not np.array_equal(F.dropout(x, 0.5, rng=gen).data, a)  # which moved on
    assert not np.array_equal(F.dropout(x, 0.5).data, F.dropout(x, 0.5).data)  # None: fresh
    layer = nn.Dropout(0.5, rng=7)
    first, second = layer(x).data, layer(x).data
    np.testing.assert_array_equal(first, a)
    assert not np.array_equal(first, second)  # the layer's own generator moves on
    with pytest.raises(TypeError, match="rng must be an np.random.Generator"):
        F.dropout(x, 0.5, rng=0.5)  # type: ignore[arg-type]


def test_dropout_in_eval_mode_and_at_the_ends_of_p() -> None:
    x = mg.tensor(np.arange(1.0, 7.0).reshape(2, 3), requires_grad=True)
    layer = nn.Dropout(0.9, rng=0).eval()
    assert layer(x) is x and F.dropout(x, 0.9, training=False) is x
    assert F.dropout(x, 0.0) is x
    y = F.dropout(x, 1.0)
    np.testing.assert_array_equal(y.data, np.zeros((2, 3)))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))
    assert F.dropout(np.float32([1, 2]), 0.5, rng=0).dtype == np.float32
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25)"
    for p in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="probability p must be a number in"):
            F.dropout(x, p)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Dropout: probability"):
            nn.Dropout(p)  # type: ignore[arg-type]


# =============================================================================================
# Embedding
# =============================================================================================
def test_embedding_picks_rows_and_accumulates_repeated_indices() -> None:
    emb = nn.Embedding(5, 3, rng=0)
    idx = np.array([[0, 2, 2], [4, 2, 0]])
    y = emb(idx)
    np.testing.assert_array_equal(y.data, emb.weight.data[idx])
    assert y.shape == (2, 3, 3)
    g = np.random.default_rng(1).normal(size=y.shape)
    y.backward(g)
    want = np.zeros((5, 3))
    for (i, j), k in np.ndenumerate(idx):
        want[k] += g[i, j]
    np.testing.assert_allclose(emb.weight.grad, want, rtol=1e-14)
    assert emb(mg.tensor(np.array([1, 3]))).shape == (2, 3)  # a Tensor of indices
    assert emb([4]).shape == (1, 3) and emb(np.int64(2)).shape == (3,)


def test_embedding_init_and_padding_idx() -> None:
    big = nn.Embedding(200, 100, rng=0)
    assert big.weight.shape == (200, 100) and big.weight.requires_grad
    assert abs(big.weight.data.mean()) < 0.01 and abs(big.weight.data.std() - 1) < 0.01
    np.testing.assert_array_equal(nn.Embedding(4, 2, rng=3).weight.data,
                                  nn.Embedding(4, 2, rng=3).weight.data)
    emb = nn.Embedding(4, 2, rng=0, padding_idx=-1)
    assert emb.padding_idx == 3 and repr(emb) == "Embedding(4, 2, padding_idx=3)"
    np.testing.assert_array_equal(emb.weight.data[3], [0.0, 0.0])
    emb.weight.data[3] = [5.0, 6.0]  # the row's value is still used, only never trained
    y = emb(np.array([3, 1, 3]))
    np.testing.assert_array_equal(y.data[0], [5.0, 6.0])
    y.backward(np.ones((3, 2)))
    np.testing.assert_array_equal(emb.weight.grad, [[0, 0], [1, 1], [0, 0], [0, 0]])
    assert nn.Embedding(3, 2, dtype=np.float32).weight.dtype == np.float32


def test_embedding_errors() -> None:
    emb = nn.Embedding(5, 3, rng=0)
    with pytest.raises(TypeError, match=r"embedding: indices must be integers.*float64"):
        emb(np.array([0.0, 1.0]))
    with pytest.raises(IndexError, match=r"index 5 is out of range for 5 embeddings.*\(5, 3\)"):
        emb(np.array([0, 5]))
    with pytest.raises(IndexError, match="index -1 is out of range"):
        emb(np.array([-1]))  # never wraps around
    with pytest.raises(ValueError, match=r"weight must be 2-D.*\(5,\)"):
        F.embedding(np.array([0]), mg.tensor(np.zeros(5)))
    with pytest.raises(ValueError, match=r"padding_idx 4 must lie in \[-4, 4\)"):
        nn.Embedding(4, 2, padding_idx=4)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="num_embeddings must be a non-negative integer"):
            nn.Embedding(bad, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype must be floating"):
        nn.Embedding(2, 2, dtype=np.int64)


# =============================================================================================
# LayerNorm
# =============================================================================================
def _layer_norm_reference(x: np.ndarray, k: int, w: Any, b: Any, eps: float) -> np.ndarray:
    axes = tuple(range(x.ndim - k, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return (y if w is None else y * w) + (0 if b is None else b)


@pytest.mark.parametrize("norm", [4, (4,), (3, 4)])
def test_layer_norm_values_and_gradients(norm: Any) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4)) * 3 + 1
    ln = nn.LayerNorm(norm, eps=1e-3)
    shape = ln.normalized_shape
    assert shape == ((norm,) if isinstance(norm, int) else norm)
    np.testing.assert_array_equal(ln.weight.data, np.ones(shape))
    np.testing.assert_array_equal(ln.bias.data, np.zeros(shape))
    ln.weight.data[...] = rng.normal(size=shape)
    ln.bias.data[...] = rng.normal(size=shape)
    y = ln(x)
    np.testing.assert_allclose(y.data, _layer_norm_reference(x, len(shape), ln.weight.data,
                                                             ln.bias.data, 1e-3), rtol=1e-12)
    assert list(ln.state_dict()) == ["weight", "bias"]

    def f(t: mg.Tensor, w: mg.Tensor, b: mg.Tensor) -> mg.Tensor:
        return F.layer_norm(t, shape, w, b, eps=1e-3)

    assert mg.gradcheck(f, [mg.tensor(x), ln.weight, ln.bias], atol=1e-7, rtol=1e-6)


def test_layer_norm_options_and_constant_rows() -> None:
    x = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 6.0]])
    bare = nn.LayerNorm(3, elementwise_affine=False)
    assert bare.weight is None and bare.bias is None and bare.state_dict() == {}
    t = mg.tensor(x, requires_grad=True)
    y = bare(t)
    np.testing.assert_allclose(y.data, _layer_norm_reference(x, 1, None, None, 1e-5),
                               rtol=1e-12)
    np.testing.assert_array_equal(y.data[0], [0, 0, 0])  # a constant row: zeros, not NaN
    y.backward(np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 0.0]]))
    assert np.all(np.isfinite(t.grad))
    no_bias = nn.LayerNorm(3, bias=False)
    assert list(no_bias.state_dict()) == ["weight"]
    assert repr(no_bias) == "LayerNorm((3,), eps=1e-05, elementwise_affine=True, bias=False)"
    assert nn.LayerNorm(3, dtype=np.float32)(x.astype(np.float32)).dtype == np.float32


def test_layer_norm_errors() -> None:
    ln = nn.LayerNorm((3, 4))
    with pytest.raises(ValueError, match=r"input of shape \(2, 4, 3\) must end in "
                                         r"normalized_shape \(3, 4\)"):
        ln(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="must end in normalized_shape"):
        ln(np.zeros(4))
    with pytest.raises(ValueError, match=r"weight of shape \(4,\) must have normalized_shape"):
        F.layer_norm(np.zeros((2, 3, 4)), (3, 4), np.ones(4))


# =============================================================================================
# BatchNorm
# =============================================================================================
def _bn_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def _bn_reference(x: np.ndarray, mean: np.ndarray, var: np.ndarray, w: np.ndarray,
                  b: np.ndarray, eps: float) -> np.ndarray:
    shape = (-1,) + (1,) * (x.ndim - 2)
    return ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * w.reshape(shape)
            + b.reshape(shape))


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)])
def test_batch_norm_training_normalises_with_the_batch_and_moves_the_running_stats(
        shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    bn = nn.BatchNorm1d(3, momentum=0.2)
    bn.weight.data[:] = rng.normal(size=3)
    bn.bias.data[:] = rng.normal(size=3)
    running_mean, running_var = np.zeros(3), np.ones(3)
    mean_array = bn.running_mean.data
    for step in range(3):
        x = rng.normal(size=shape) * 2 + 1
        y = bn(x)
        axes = _bn_axes(x)
        n = x.size // 3
        np.testing.assert_allclose(
            y.data, _bn_reference(x, x.mean(axes), x.var(axes), bn.weight.data, bn.bias.data,
                                  1e-5), rtol=1e-12, atol=1e-14)
        running_mean = 0.8 * running_mean + 0.2 * x.mean(axes)
        running_var = 0.8 * running_var + 0.2 * x.var(axes) * n / (n - 1)  # unbiased
        np.testing.assert_allclose(bn.running_mean.data, running_mean, rtol=1e-14)
        np.testing.assert_allclose(bn.running_var.data, running_var, rtol=1e-14)
        assert bn.num_batches_tracked.data == step + 1
    assert bn.running_mean.data is mean_array  # updated in place, as PyTorch
    bn.eval()
    x = rng.normal(size=shape)
    y = bn(x)
    np.testing.assert_allclose(y.data, _bn_reference(x, running_mean, running_var,
                                                     bn.weight.data, bn.bias.data, 1e-5),
                               rtol=1e-12)
    np.testing.assert_allclose(bn.running_mean.data, running_mean, rtol=1e-14)  # unchanged
    assert bn.num_batches_tracked.data == 3


def test_batch_norm_momentum_none_is_the_cumulative_average() -> None:
    rng = np.random.default_rng(1)
    bn = nn.BatchNorm1d(2, momentum=None)
    batches = [rng.normal(size=(5, 2)) + i for i in range(4)]
    for x in batches:
        bn(x)
    np.testing.assert_allclose(bn.running_mean.data, np.mean([x.mean(0) for x in batches], 0),
                               rtol=1e-13)
    np.testing.assert_allclose(bn.running_var.data,
                               np.mean([x.var(0, ddof=1) for x in batches], 0), rtol=1e-13)


def test_batch_norm_without_running_stats_or_affine() -> None:
    rng = np.random.default_rng(2)
    bn = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    assert bn.state_dict() == {} and list(bn.parameters()) == [] and list(bn.buffers()) == []
    assert bn.running_mean is None and bn.num_batches_tracked is None
    x = rng.normal(size=(4, 3))
    want = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    np.testing.assert_allclose(bn(x).data, want, rtol=1e-12)
    np.testing.assert_allclose(bn.eval()(x).data, want, rtol=1e-12)  # batch stats in eval too
    assert repr(bn) == "BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=False, bias=False, " \
                       "track_running_stats=False)"
    no_bias = nn.BatchNorm1d(3, bias=False)
    assert list(no_bias.state_dict()) == ["weight", "running_mean", "running_var",
                                          "num_batches_tracked"]


def test_batch_norm_state_dict_round_trip_and_layout() -> None:
    rng = np.random.default_rng(3)
    bn = nn.BatchNorm1d(3)
    sd = bn.state_dict()
    assert list(sd) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert sd["num_batches_tracked"].shape == () and sd["num_batches_tracked"].dtype == np.int64
    for _ in range(2):
        bn(rng.normal(size=(8, 3)))
    other = nn.BatchNorm1d(3)
    other.load_state_dict(bn.state_dict())
    x = rng.normal(size=(8, 3))
    np.testing.assert_array_equal(other.eval()(x).data, bn.eval()(x).data)
    assert other.num_batches_tracked.data == 2


def test_batch_norm_gradients_pass_gradcheck_in_both_modes() -> None:
    rng = np.random.default_rng(4)
    for shape in ((5, 3), (3, 3, 2), (2, 3, 2, 2)):
        x = rng.normal(size=shape)
        w, b = rng.normal(size=3), rng.normal(size=3)
        mean, var = rng.normal(size=3), rng.uniform(0.5, 2, 3)
        for training in (True, False):
            def f(t: mg.Tensor, w: mg.Tensor, b: mg.Tensor, training: bool = training,
                  mean: np.ndarray = mean, var: np.ndarray = var) -> mg.Tensor:
                return F.batch_norm(t, mean, var, w, b, training=training, momentum=0.0)

            assert mg.gradcheck(f, [mg.tensor(x), mg.tensor(w), mg.tensor(b)], atol=1e-7,
                                rtol=1e-6)


def test_batch_norm_2d() -> None:
    rng = np.random.default_rng(5)
    bn = nn.BatchNorm2d(2)
    x = rng.normal(size=(3, 2, 4, 4))
    np.testing.assert_allclose(
        bn(x).data, _bn_reference(x, x.mean((0, 2, 3)), x.var((0, 2, 3)), np.ones(2),
                                  np.zeros(2), 1e-5), rtol=1e-12)
    np.testing.assert_allclose(bn.running_mean.data, 0.1 * x.mean((0, 2, 3)), rtol=1e-13)
    with pytest.raises(ValueError, match=r"BatchNorm2d\(2\): expected input of shape "
                                         r"\(N, C, H, W\)"):
        bn(np.zeros((3, 2, 4)))


def test_batch_norm_errors_leave_the_statistics_alone() -> None:
    bn = nn.BatchNorm1d(3)
    for bad in (np.zeros(3), np.zeros((2, 3, 4, 5)), np.zeros((4, 2))):
        with pytest.raises(ValueError, match=r"BatchNorm1d\(3\): expected input of shape "
                                             r"\(N, C\) or \(N, C, L\) with C=3"):
            bn(bad)
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 3\)"):
        bn(np.ones((1, 3)))
    assert bn.num_batches_tracked.data == 0
    np.testing.assert_array_equal(bn.running_mean.data, np.zeros(3))
    bn.eval()(np.ones((1, 3)))  # one sample is fine with the running statistics
    with pytest.raises(ValueError, match=r"running_mean of shape \(2,\) does not fit"):
        F.batch_norm(np.zeros((4, 3)), np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="running_mean and running_var are needed"):
        F.batch_norm(np.zeros((4, 3)), None, None)


def test_batch_norm_trains_while_an_eval_graph_holds_its_buffers() -> None:
    rng = np.random.default_rng(6)
    bn = nn.BatchNorm1d(2).eval()
    x = mg.tensor(rng.normal(size=(4, 2)), requires_grad=True)
    held = bn(x)  # a live graph
    bn.train()(rng.normal(size=(4, 2)))
    held.sum().backward()
    np.testing.assert_allclose(x.grad, np.ones((4, 2)) / np.sqrt(1 + 1e-5), rtol=1e-12)


# =============================================================================================
# Flatten
# =============================================================================================
def test_flatten() -> None:
    x = mg.tensor(np.arange(120.0).reshape(2, 3, 4, 5), requires_grad=True)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0)(x).shape == (120,)
    assert nn.Flatten(1, 2)(x).shape == (2, 12, 5)
    assert nn.Flatten(-2, -1)(x).shape == (2, 3, 20)
    assert nn.Flatten(2, 2)(x).shape == (2, 3, 4, 5)
    assert nn.Flatten(0)(mg.tensor(3.0)).shape == (1,)
    y = nn.Flatten()(x)
    np.testing.assert_array_equal(y.data, x.data.reshape(2, 60))
    y.backward(np.arange(120.0).reshape(2, 60))
    np.testing.assert_array_equal(x.grad, x.data)
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    with pytest.raises(ValueError, match=r"start_dim=1 is out of range for an input of shape "
                                         r"\(3,\)"):
        nn.Flatten()(np.zeros(3))
    with pytest.raises(ValueError, match="start_dim=2 comes after end_dim=1"):
        nn.Flatten(2, 1)(x)


# =============================================================================================
# Classification losses
# =============================================================================================
def _nll_reference(lp: np.ndarray, t: np.ndarray, w: np.ndarray | None, ignore: int,
                   reduction: str, eps: float) -> Any:
    """PyTorch's definition, one row at a time."""
    n, c = lp.shape
    w = np.ones(c) if w is None else w
    rows, total = np.zeros(n), 0.0
    for i in range(n):
        if t[i] == ignore:
            continue
        rows[i] = -(1 - eps) * w[t[i]] * lp[i, t[i]] - eps / c * (w * lp[i]).sum()
        total += w[t[i]]
    return {"none": rows, "sum": rows.sum(), "mean": rows.sum() / total}[reduction]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(1, keepdims=True))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.25])
def test_cross_entropy_and_nll_with_weight_ignore_index_and_smoothing(
        reduction: str, weighted: bool, eps: float) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 4)) * 2
    t = np.array([0, 3, -100, 1, 2, 3])
    w = rng.uniform(0.5, 2, 4) if weighted else None
    want = _nll_reference(_log_softmax(z), t, w, -100, reduction, eps)
    got = F.cross_entropy(mg.tensor(z), t, weight=w, reduction=reduction, label_smoothing=eps)
    np.testing.assert_allclose(got.data, want, rtol=1e-12)
    got = F.nll_loss(mg.tensor(_log_softmax(z)), t, weight=w, reduction=reduction,
                     label_smoothing=eps)
    np.testing.assert_allclose(got.data, want, rtol=1e-12)
    assert mg.gradcheck(lambda x: F.cross_entropy(x, t, w, reduction=reduction,
                                                  label_smoothing=eps), mg.tensor(z))
    assert mg.gradcheck(lambda x: F.nll_loss(x, t, w, reduction=reduction,
                                             label_smoothing=eps), mg.tensor(z))


def test_ignore_index_may_be_a_class_and_all_ignored_means_nan() -> None:
    z = np.random.default_rng(1).normal(size=(4, 3))
    t = np.array([2, 0, 2, 1])
    got = F.cross_entropy(mg.tensor(z), t, ignore_index=2, reduction="none")
    np.testing.assert_allclose(got.data, _nll_reference(_log_softmax(z), t, None, 2, "none", 0))
    assert got.data[0] == 0 and got.data[2] == 0
    everything = np.array([-100] * 4)
    assert np.isnan(F.cross_entropy(mg.tensor(z), everything).item())  # 0/0, as PyTorch
    assert F.cross_entropy(mg.tensor(z), everything, reduction="sum").item() == 0.0
    x = mg.tensor(z, requires_grad=True)
    F.cross_entropy(x, everything, reduction="sum").backward()
    np.testing.assert_array_equal(x.grad, np.zeros((4, 3)))


def test_weighted_cross_entropy_keeps_float32() -> None:
    z = mg.tensor(np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32),
                  requires_grad=True)
    loss = F.cross_entropy(z, [0, 1, 2, 1, -100], weight=np.array([1.0, 2.0, 0.5]),
                           label_smoothing=0.1)
    loss.backward()
    assert loss.dtype == np.float32 and z.grad.dtype == np.float32


def test_classification_loss_argument_errors() -> None:
    z = mg.tensor(np.zeros((3, 4)))
    t = [0, 1, 2]
    with pytest.raises(ValueError, match=r"cross_entropy: weight must be \(4,\) real numbers.*"
                                         r"shape \(3,\)"):
        F.cross_entropy(z, t, weight=np.ones(3))
    with pytest.raises(TypeError, match="weight is a Tensor that requires grad"):
        F.nll_loss(z, t, weight=mg.tensor(np.ones(4), requires_grad=True))
    with pytest.raises(ValueError, match="label_smoothing must lie in"):
        F.cross_entropy(z, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"target -1 is out of range.*ignore_index=-100"):
        F.cross_entropy(z, [0, -1, 1])
    with pytest.raises(ValueError, match="target -100 is out of range"):
        F.cross_entropy(z, [0, -100, 1], ignore_index=-1)
    with pytest.raises(ValueError, match="reduction must be"):
        F.nll_loss(z, t, weight=np.ones(4), reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"weight must be \(4,\) real numbers.*<U3"):
        F.cross_entropy(z, t, "sum")  # the old positional reduction lands in weight's place


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_with_logits(reduction: str) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 3)) * 3
    y = rng.uniform(0, 1, (4, 3))
    pw, w = rng.uniform(0.5, 3, 3), rng.uniform(0.5, 2, (4, 1))
    s = _sigmoid(z)
    naive = -(pw * y * np.log(s) + (1 - y) * np.log(1 - s)) * w  # fine at these logits
    want = {"mean": naive.mean(), "sum": naive.sum(), "none": naive}[reduction]
    got = F.binary_cross_entropy_with_logits(mg.tensor(z), y, reduction, pos_weight=pw, weight=w)
    np.testing.assert_allclose(got.data, want, rtol=1e-12)
    x = mg.tensor(z, requires_grad=True)
    F.binary_cross_entropy_with_logits(x, y, "sum").backward()
    np.testing.assert_allclose(x.grad, s - y, rtol=1e-12, atol=1e-15)  # σ(z) − y
    assert mg.gradcheck(lambda a, b: F.binary_cross_entropy_with_logits(
        a, b, reduction, pos_weight=pw, weight=w), [mg.tensor(z), mg.tensor(y)])
    with pytest.raises(ValueError, match=r"targets of shape \(4,\) must have the logits' shape "
                                         r"\(4, 1\)"):
        F.binary_cross_entropy_with_logits(mg.tensor(np.zeros((4, 1))), np.zeros(4))


# =============================================================================================
# Regression losses
# =============================================================================================
D = np.array([-3.0, -1.0, -0.4, 0.0, 0.25, 0.5, 1.0, 2.5])  # pred − target, kinks included


@pytest.mark.parametrize("name,f,value,slope", [
    ("l1", F.l1_loss, np.abs(D), np.sign(D)),
    ("huber", lambda p, t, r: F.huber_loss(p, t, r, delta=0.5),
     np.where(np.abs(D) <= 0.5, 0.5 * D * D, 0.5 * (np.abs(D) - 0.25)), np.clip(D, -0.5, 0.5)),
    ("smooth_l1", lambda p, t, r: F.smooth_l1_loss(p, t, r, beta=0.5),
     np.where(np.abs(D) < 0.5, 0.5 * D * D / 0.5, np.abs(D) - 0.25), np.clip(D, -0.5, 0.5) / 0.5),
    ("smooth_l1_beta0", lambda p, t, r: F.smooth_l1_loss(p, t, r, beta=0.0), np.abs(D),
     np.sign(D)),
    ("mse", F.mse_loss, D * D, 2 * D),
])
def test_regression_losses_are_their_formulas(name: str, f: Any, value: np.ndarray,
                                              slope: np.ndarray) -> None:
    target = np.linspace(-1, 1, D.size)
    pred = mg.tensor(target + D, requires_grad=True)
    loss = f(pred, target, "none")
    np.testing.assert_allclose(loss.data, value, rtol=1e-12, atol=1e-15)
    loss.backward(np.ones(D.size))
    np.testing.assert_allclose(pred.grad, slope, rtol=1e-12, atol=1e-12)  # PyTorch's kinks
    np.testing.assert_allclose(f(pred, target, "mean").item(), value.mean(), rtol=1e-12)
    np.testing.assert_allclose(f(pred, target, "sum").item(), value.sum(), rtol=1e-12)
    with pytest.raises(ValueError, match=r"pred has shape \(8, 1\) but target has shape"):
        f(mg.tensor(np.zeros((8, 1))), target, "mean")


@given(shape=SHAPES, seed=SEEDS)
def test_regression_losses_pass_gradcheck(shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    target = rng.normal(size=shape)
    d = off_kink(rng, shape, 0.05, 2.0)
    d = np.where(np.abs(np.abs(d) - 0.7) < 0.05, d * 1.2, d)  # off the switch at 0.7
    for f in (F.l1_loss, lambda p, t: F.huber_loss(p, t, delta=0.7),
              lambda p, t: F.smooth_l1_loss(p, t, beta=0.7)):
        assert mg.gradcheck(f, [mg.tensor(target + d), mg.tensor(target)], atol=1e-7,
                            rtol=1e-6)


def test_regression_loss_argument_errors() -> None:
    p, t = mg.tensor(np.zeros(3)), np.zeros(3)
    with pytest.raises(ValueError, match="huber_loss: delta must be positive"):
        F.huber_loss(p, t, delta=0.0)
    with pytest.raises(ValueError, match="smooth_l1_loss: beta must be non-negative"):
        F.smooth_l1_loss(p, t, beta=-1.0)
    with pytest.raises(ValueError, match="l1_loss: reduction must be"):
        F.l1_loss(p, t, "avg")  # type: ignore[arg-type]


# =============================================================================================
# nn.init
# =============================================================================================
def test_calculate_gain() -> None:
    for name in ("linear", "conv2d", "sigmoid", "conv_transpose1d"):
        assert init.calculate_gain(name) == 1.0
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("leaky_relu", 0) == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", True)


# (function, kwargs, shape, the bound or std its formula gives, "uniform" or "normal")
INITS = [
    (init.uniform_, {"a": -0.5, "b": 2.0}, (300, 200), None, "uniform"),
    (init.normal_, {"mean": 1.0, "std": 0.3}, (300, 200), 0.3, "normal"),
    (init.xavier_uniform_, {"gain": 2.0}, (300, 200), 2 * math.sqrt(6 / 500), "uniform"),
    (init.xavier_normal_, {}, (300, 200), math.sqrt(2 / 500), "normal"),
    (init.kaiming_uniform_, {}, (300, 200), math.sqrt(6 / 200), "uniform"),
    (init.kaiming_uniform_, {"a": math.sqrt(5)}, (300, 200), 1 / math.sqrt(200), "uniform"),
    (init.kaiming_uniform_, {"mode": "fan_out", "nonlinearity": "relu"}, (40, 30, 3, 3),
     math.sqrt(6 / (40 * 9)), "uniform"),
    (init.kaiming_normal_, {"nonlinearity": "tanh"}, (50, 30, 3, 3),
     5 / 3 / math.sqrt(30 * 9), "normal"),
]


@pytest.mark.parametrize("fn,kwargs,shape,scale,kind", INITS,
                         ids=[f"{i[0].__name__}{i[1]}" for i in INITS])
def test_random_inits_draw_from_pytorchs_distributions(fn: Any, kwargs: dict[str, Any],
                                                       shape: tuple[int, ...], scale: Any,
                                                       kind: str) -> None:
    p = mg.tensor(np.zeros(shape), requires_grad=True)
    array = p.data
    assert fn(p, **kwargs, rng=0) is p
    assert p.data is array and p.requires_grad  # in place
    v = p.data
    if kind == "uniform":
        lo, hi = (kwargs["a"], kwargs["b"]) if fn is init.uniform_ else (-scale, scale)
        assert lo <= v.min() and v.max() <= hi
        assert v.min() < lo + 0.01 * (hi - lo) and v.max() > hi - 0.01 * (hi - lo)
        assert abs(v.std() / ((hi - lo) / math.sqrt(12)) - 1) < 0.02
    else:
        assert abs(v.mean() - kwargs.get("mean", 0.0)) < 0.05 * scale
        assert abs(v.std() / scale - 1) < 0.03
    again = mg.tensor(np.zeros(shape))
    np.testing.assert_array_equal(fn(again, **kwargs, rng=0).data, v)  # seeded
    gen = np.random.default_rng(0)
    np.testing.assert_array_equal(fn(np.zeros(shape), **kwargs, rng=gen), v)  # ndarrays too
    assert not np.array_equal(fn(np.zeros(shape), **kwargs, rng=gen), v)


def test_inits_keep_dtype_fill_constants_and_skip_empty_tensors() -> None:
    w = mg.tensor(np.zeros((3, 4), np.float32), requires_grad=True)
    assert init.xavier_normal_(w, rng=1).dtype == np.float32
    np.testing.assert_array_equal(init.constant_(w, 0.5).data, np.full((3, 4), 0.5))
    np.testing.assert_array_equal(init.ones_(w).data, np.ones((3, 4)))
    np.testing.assert_array_equal(init.zeros_(w).data, np.zeros((3, 4)))
    empty = mg.tensor(np.zeros((0, 3)))
    for fn in (init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_,
               init.kaiming_normal_):
        assert fn(empty).shape == (0, 3)


def test_init_of_a_parameter_a_live_graph_holds() -> None:
    lin = nn.Linear(40, 30, rng=0)  # large enough to be locked, not copied, by the graph
    x = np.ones((1, 40))
    w = mg.tensor(np.ones((1, 30)), requires_grad=True)
    out = (lin(x) * w).sum()  # the graph keeps the weight and the output it used
    assert not lin.weight.data.flags.writeable
    before = lin(x).data.copy()
    init.kaiming_normal_(lin.weight, rng=1)
    init.zeros_(lin.bias)
    assert not np.array_equal(lin(x).data, before)
    np.testing.assert_array_equal(lin.bias.data, np.zeros(30))
    out.backward()
    np.testing.assert_array_equal(lin.weight.grad, np.ones((30, 40)))
    np.testing.assert_allclose(w.grad, before, rtol=1e-15)  # d/dw at the old weights


def test_init_errors() -> None:
    for fn in (init.xavier_uniform_, init.kaiming_normal_):
        with pytest.raises(ValueError, match=r"at least 2 dimensions.*\(5,\)"):
            fn(mg.tensor(np.zeros(5)))
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out'"):
        init.kaiming_uniform_(mg.tensor(np.zeros((2, 2))), mode="fan_avg")
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.kaiming_uniform_(mg.tensor(np.zeros((2, 2))), nonlinearity="softmax")
    with pytest.raises(TypeError, match="floating arrays.*int64"):
        init.normal_(np.zeros((2, 2), np.int64))
    with pytest.raises(TypeError, match="expected a Tensor or an ndarray, got list"):
        init.uniform_([0.0, 1.0])  # type: ignore[type-var]
    with pytest.raises(ValueError, match="std must be non-negative"):
        init.normal_(np.zeros(2), std=-1.0)


# =============================================================================================
# Modules together: buffers, modes, checkpoints
# =============================================================================================
def test_a_buffer_registered_as_none_is_declared_but_not_saved() -> None:
    m = nn.Module()
    m.register_buffer("stat", None)
    assert m.state_dict() == {} and list(m.named_buffers()) == []
    m.stat = mg.tensor(np.zeros(2))
    assert list(m.state_dict()) == ["stat"]
    with pytest.raises(TypeError, match="is a buffer"):
        m.stat = [1.0, 2.0]


def _net(seed: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 6, rng=seed), nn.LayerNorm(6), nn.GELU(),
                         nn.Dropout(0.5, rng=seed), nn.Linear(6, 5, rng=seed + 1),
                         nn.BatchNorm1d(5), nn.ELU(), nn.Linear(5, 2, rng=seed + 2))


def test_a_network_of_every_layer_round_trips_through_its_state_dict() -> None:
    rng = np.random.default_rng(0)
    net = _net(0)
    sd = net.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias",
                        "5.weight", "5.bias", "5.running_mean", "5.running_var",
                        "5.num_batches_tracked", "7.weight", "7.bias"]
    opt = mg.optim.SGD(net.parameters(), lr=0.1)
    x = rng.normal(size=(16, 4))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(net(x), rng.integers(0, 2, 16)).backward()
        opt.step()
    assert all(p.grad is not None for p in net.parameters())
    copy = _net(5)
    copy.load_state_dict(net.state_dict())
    net.eval()
    copy.eval()
    assert not copy[3].training and not copy[5].training
    np.testing.assert_array_equal(copy(x).data, net(x).data)
    assert net(x).data.tolist() == net(x).data.tolist()  # eval: deterministic
    net.train()
    assert net[3].training and not np.array_equal(net(x).data, net(x).data)  # dropout draws


def test_apply_initialises_layers_by_type() -> None:
    net = _net(0)

    def reinit(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            init.xavier_uniform_(m.weight, rng=0)
            init.zeros_(m.bias)

    net.apply(reinit)
    assert all(np.all(m.bias.data == 0) for m in net if isinstance(m, nn.Linear))
    np.testing.assert_array_equal(net[4].weight.data,
                                  init.xavier_uniform_(np.zeros((5, 6)), rng=0))
