"""Conv2d and MaxPool2d (minigrad/nn/convolution.py), without PyTorch.

- forward values against a direct loop over output pixels (an independent reference);
- gradients against central differences in float64 over hypothesis-drawn geometries (kernel,
  stride, padding, dilation, batch and channel counts; max-pool inputs with distinct values, so
  no window has a tie and no finite difference crosses one), and second order through the
  VJPs, which are rows of their own;
- ties and NaN in max pooling, float32, unbatched input, empty batches, inputs written after
  the forward pass, the modules (shapes, init, rng, state_dict) and every argument error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minigrad as mg
import minigrad.nn.functional as F  # noqa: N812
from minigrad import nn
from minigrad.transforms import toposort

TIGHT = {"atol": 1e-7, "rtol": 1e-6}


def ops_in_graph(t: mg.Tensor) -> set[str]:
    """Names of the primitives recorded on t's tape."""
    return {n._op.name for n in toposort(t, set()) if n._op is not None}


# --------------------------------------------------------------------------------------------
# References: one output pixel at a time
# --------------------------------------------------------------------------------------------
def _patches(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int]) -> Any:
    """(i, j, the (N, C, kh, kw) patch of output pixel (i, j)) for every output pixel."""
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    oh = (xp.shape[2] - span[0]) // stride[0] + 1
    ow = (xp.shape[3] - span[1]) // stride[1] + 1
    for i in range(oh):
        for j in range(ow):
            r, c = i * stride[0], j * stride[1]
            yield i, j, xp[:, :, r:r + span[0]:dilation[0], c:c + span[1]:dilation[1]]


def conv_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Any,
                   pads: Any, dilation: Any) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    found = list(_patches(xp, w.shape[2:], stride, dilation))
    oh, ow = found[-1][0] + 1, found[-1][1] + 1
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i, j, patch in found:
        y[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return y if b is None else y + b[:, None, None]


def pool_reference(x: np.ndarray, kernel: Any, stride: Any, pad: Any, dilation: Any
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The max pool and the gradient of its sum (each window's first maximum gets 1)."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2), constant_values=-np.inf)
    found = list(_patches(xp, kernel, stride, dilation))
    y = np.zeros(x.shape[:2] + (found[-1][0] + 1, found[-1][1] + 1))
    grad = np.zeros_like(xp)
    for i, j, patch in found:
        flat = patch.reshape(patch.shape[0], patch.shape[1], -1)
        y[:, :, i, j] = flat.max(axis=-1)
        first = flat.argmax(axis=-1)  # the first maximum in row-major window order
        for n, c in np.ndindex(*first.shape):
            p, q = divmod(int(first[n, c]), kernel[1])
            grad[n, c, i * stride[0] + p * dilation[0], j * stride[1] + q * dilation[1]] += 1
    return y, grad[:, :, pad[0]:pad[0] + x.shape[2], pad[1]:pad[1] + x.shape[3]]


# --------------------------------------------------------------------------------------------
# Geometries
# --------------------------------------------------------------------------------------------
@st.composite
def conv_cases(draw: st.DrawFn, max_side: int = 3) -> dict[str, Any]:
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    size = []
    for k, d, p in zip(kernel, dilation, padding):
        least = max(1, d * (k - 1) + 1 - 2 * p)  # at least one output pixel
        size.append(draw(st.integers(least, least + max_side)))
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)),
                o=draw(st.integers(1, 3)), size=tuple(size), kernel=kernel, stride=stride,
                dilation=dilation, padding=padding, bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)))


def conv_arrays(case: dict[str, Any]) -> list[np.ndarray]:
    rng = np.random.default_rng(case["seed"])
    arrays = [rng.normal(size=(case["n"], case["c"], *case["size"])),
              rng.normal(size=(case["o"], case["c"], *case["kernel"]))]
    return arrays + ([rng.normal(size=case["o"])] if case["bias"] else [])


def conv_fn(case: dict[str, Any]) -> Any:
    def f(x: Any, w: Any, b: Any = None) -> mg.Tensor:
        return F.conv2d(x, w, b, stride=case["stride"], padding=case["padding"],
                        dilation=case["dilation"])
    return f


@st.composite
def pool_cases(draw: st.DrawFn) -> dict[str, Any]:
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    size = []
    for k, d, p in zip(kernel, dilation, padding):
        least = max(1, d * (k - 1) + 1 - 2 * p)
        size.append(draw(st.integers(least, least + 4)))
    for n, k, s, d, p in zip(size, kernel, stride, dilation, padding):
        # a dilated window may fall wholly into the padding: −inf there, and no gradient
        out = (n + 2 * p - d * (k - 1) - 1) // s + 1
        assume(all(any(0 <= i * s - p + d * t < n for t in range(k)) for i in range(out)))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 2)), *size), kernel=kernel,
                stride=stride, dilation=dilation, padding=padding,
                seed=draw(st.integers(0, 2**32 - 1)))


def distinct(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values 0.1 apart at least: no ties, and ±1e-6 never reorders them."""
    rng = np.random.default_rng(seed)
    size = math.prod(shape)
    return (rng.permutation(size) * 0.1 + rng.uniform(0, 0.01, size) - size * 0.05).reshape(shape)


# --------------------------------------------------------------------------------------------
# Values and gradients
# --------------------------------------------------------------------------------------------
@given(case=conv_cases())
def test_conv2d_forward_equals_the_loop_and_gradchecks(case: dict[str, Any]) -> None:
    arrays = conv_arrays(case)
    f = conv_fn(case)
    ts = [mg.tensor(a, requires_grad=True) for a in arrays]
    y = f(*ts)
    pads = [(p, p) for p in case["padding"]]
    want = conv_reference(arrays[0], arrays[1], arrays[2] if case["bias"] else None,
                          case["stride"], pads, case["dilation"])
    assert y.shape == want.shape
    np.testing.assert_allclose(y.data, want, rtol=1e-12, atol=1e-12)
    assert "conv2d" in ops_in_graph(y)
    assert mg.gradcheck(f, [mg.tensor(a) for a in arrays], **TIGHT) is True


def second_order(f: Any, arrays: list[np.ndarray]) -> None:
    """gradcheck x ↦ ∇ Σ v·f(x)², each input's gradient in turn: the VJPs, recorded, against
    differences of the gradient (squaring makes the upstream depend on the inputs)."""
    n = len(arrays)
    shape = f(*(mg.tensor(a) for a in arrays)).shape
    v = np.linspace(0.5, 1.5, math.prod(shape)).reshape(shape)

    def h(*ts: mg.Tensor) -> mg.Tensor:
        y = f(*ts)
        return (y * y * v).sum()

    for k in range(n):
        def gradient(*ts: mg.Tensor, k: int = k) -> mg.Tensor:
            return mg.grad(h, argnums=tuple(range(n)))(*ts)[k]  # type: ignore[index]

        assert mg.gradcheck(gradient, [mg.tensor(a) for a in arrays], **TIGHT) is True


@settings(max_examples=8)
@given(case=conv_cases(max_side=2))
def test_conv2d_second_order(case: dict[str, Any]) -> None:
    second_order(conv_fn(case), conv_arrays(case))


def test_conv2d_vjps_are_recorded_when_differentiated() -> None:
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(1, 2, 5, 5)), rng.normal(size=(3, 2, 3, 3))

    def gradient(xt: mg.Tensor, wt: mg.Tensor) -> Any:
        return mg.grad(lambda a, b: (F.conv2d(a, b, stride=2) ** 2).sum(), argnums=(0, 1))(xt, wt)

    gx, gw = gradient(mg.tensor(x, requires_grad=True), mg.tensor(w, requires_grad=True))
    assert {"conv2d", "conv2d_windows", "conv2d_windows_vjp"} <= ops_in_graph(gx)
    assert {"conv2d", "conv2d_windows"} <= ops_in_graph(gw)
    h = mg.hessian(lambda a: (F.conv2d(a, w, padding=1) ** 2).sum(), x)
    assert h.shape == x.shape * 2
    np.testing.assert_allclose(h.reshape(x.size, x.size), h.reshape(x.size, x.size).T,
                               atol=1e-10)


@given(case=pool_cases())
def test_max_pool2d_forward_equals_the_loop_and_gradchecks(case: dict[str, Any]) -> None:
    x = distinct(case["shape"], case["seed"])

    def f(t: Any) -> mg.Tensor:
        return F.max_pool2d(t, case["kernel"], case["stride"], case["padding"],
                            case["dilation"])

    xt = mg.tensor(x, requires_grad=True)
    y = f(xt)
    want, grad = pool_reference(x, case["kernel"], case["stride"], case["padding"],
                                case["dilation"])
    np.testing.assert_array_equal(y.data, want)
    y.sum().backward()
    np.testing.assert_array_equal(xt.grad, grad)
    assert mg.gradcheck(f, [mg.tensor(x)], **TIGHT) is True


@settings(max_examples=8)
@given(case=pool_cases())
def test_max_pool2d_second_order(case: dict[str, Any]) -> None:
    def f(t: Any) -> mg.Tensor:
        return F.max_pool2d(t, case["kernel"], case["stride"], case["padding"],
                            case["dilation"])

    second_order(f, [distinct(case["shape"], case["seed"])])


def test_max_pool2d_ties_go_to_the_first_maximum_and_overlaps_add_up() -> None:
    x = mg.tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
    F.max_pool2d(x, 3, stride=1).sum().backward()  # four windows, each first at its corner
    want = np.zeros((4, 4))
    want[:2, :2] = 1
    np.testing.assert_array_equal(x.grad[0, 0], want)
    x.grad = None
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad[0, 0], np.tile([[1, 0], [0, 0]], (2, 2)))
    z = np.array([[[[0.0, 5.0, 5.0], [5.0, 1.0, 5.0], [0.0, 0.0, 0.0]]]])
    zt = mg.tensor(z, requires_grad=True)
    F.max_pool2d(zt, 2, stride=1).sum().backward()
    # windows (0,0), (0,1), (1,1) pick (0,1), (0,1), (1,2); window (1,0) picks (1,0)
    np.testing.assert_array_equal(zt.grad[0, 0], [[0, 2, 0], [1, 0, 1], [0, 0, 0]])


def test_max_pool2d_window_wholly_in_the_padding_is_minus_inf() -> None:
    x = mg.tensor(np.array([[[[3.0]]]]), requires_grad=True)
    y = F.max_pool2d(x, (2, 1), stride=1, padding=(1, 0), dilation=(2, 1))
    assert y.data[0, 0, 0, 0] == -np.inf  # both taps in the padding, as in PyTorch
    y.sum().backward()
    assert x.grad[0, 0, 0, 0] == 0


def test_max_pool2d_nan_wins_and_takes_the_gradient() -> None:
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = x[0, 0, 1, 1] = np.nan
    xt = mg.tensor(x, requires_grad=True)
    y = F.max_pool2d(xt, 2)
    assert np.isnan(y.data[0, 0, 0, 0]) and y.data[0, 0, 1, 1] == 15
    y.sum().backward()
    assert xt.grad[0, 0, 1, 1] == 1 and xt.grad[0, 0, 0, 1] == 0  # the last NaN, as PyTorch
    assert xt.grad.sum() == 4


# --------------------------------------------------------------------------------------------
# Dtypes, layouts, shapes
# --------------------------------------------------------------------------------------------
def test_float32_stays_float32() -> None:
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float32)
    x = mg.tensor(np.random.default_rng(1).normal(size=(2, 2, 5, 5)).astype(np.float32),
                  requires_grad=True)
    y = F.max_pool2d(conv(x), 2)
    assert y.dtype == np.float32
    (y * 2.0).sum().backward()
    assert x.grad is not None and x.grad.dtype == np.float32
    assert conv.weight.grad is not None and conv.weight.grad.dtype == np.float32
    want = conv_reference(x.data.astype(np.float64), conv.weight.data.astype(np.float64),
                          conv.bias.data.astype(np.float64), (1, 1), [(1, 1)] * 2, (1, 1))
    np.testing.assert_allclose(conv(x).data, want, rtol=1e-5, atol=1e-5)


def test_any_input_layout_gives_the_same_values_and_gradients() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(3, 2, 6, 7))
    w = rng.normal(size=(4, 2, 3, 3))
    views = [base, np.asfortranarray(base),
             np.ascontiguousarray(base.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
             np.repeat(base, 2, axis=3)[:, :, :, ::2]]  # a strided view
    got = []
    for v in views:
        np.testing.assert_array_equal(v, base)
        wt = mg.tensor(w, requires_grad=True)
        y = F.max_pool2d(F.conv2d(mg.Tensor(v), wt, stride=(1, 2), padding=1), 2, stride=1)
        y.backward(np.linspace(-1, 1, y.size).reshape(y.shape))
        got.append((y.data.copy(), wt.grad))
    for y, g in got[1:]:
        np.testing.assert_allclose(y, got[0][0], rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(g, got[0][1], rtol=1e-13, atol=1e-13)


def test_unbatched_input_and_empty_batch() -> None:
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0)
    x = np.random.default_rng(3).normal(size=(2, 5, 4))
    one = conv(mg.tensor(x))
    assert one.shape == (3, 5, 4)
    np.testing.assert_allclose(one.data, conv(mg.tensor(x[None])).data[0], rtol=1e-14)
    assert F.max_pool2d(one, 2).shape == (3, 2, 2)
    empty = mg.tensor(np.zeros((0, 2, 5, 4)), requires_grad=True)
    y = F.max_pool2d(conv(empty), 2)
    assert y.shape == (0, 3, 2, 2)
    y.sum().backward()
    assert empty.grad is not None and empty.grad.shape == (0, 2, 5, 4)
    np.testing.assert_array_equal(conv.weight.grad, 0)


def test_padding_same_and_valid() -> None:
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(1, 2, 6, 5)), rng.normal(size=(3, 2, 4, 3))
    y = F.conv2d(x, w, padding="same", dilation=(1, 2))
    assert y.shape == (1, 3, 6, 5)
    # total padding d·(k − 1): 3 rows (1 above, 2 below), 4 columns (2 and 2)
    want = conv_reference(x, w, None, (1, 1), [(1, 2), (2, 2)], (1, 2))
    np.testing.assert_allclose(y.data, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.conv2d(x, w, padding="valid").data,
                               conv_reference(x, w, None, (1, 1), [(0, 0)] * 2, (1, 1)),
                               rtol=1e-12, atol=1e-12)
    assert mg.gradcheck(lambda a, b: F.conv2d(a, b, padding="same"),
                        [mg.tensor(x[:, :, :4, :4]), mg.tensor(w)], **TIGHT)


def test_inputs_written_after_the_forward_pass_do_not_change_the_gradient() -> None:
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=(2, 3, 16, 16)), rng.normal(size=(4, 3, 3, 3))  # over 4 KiB: locked
    expected_w = mg.grad(lambda t: (F.conv2d(x, t) ** 2).sum())(w).data
    expected_x = mg.grad(lambda t: (F.max_pool2d(t, 2) ** 2).sum())(x).data
    arr = x.copy()
    wt = mg.tensor(w, requires_grad=True)
    y = F.conv2d(mg.Tensor(arr), wt)  # arr is the caller's: the tape keeps the values it used
    pooled_in = mg.tensor(arr, requires_grad=True)  # only its Tensor holds the copy
    p = F.max_pool2d(pooled_in, 2)
    arr[...] = 0
    with pytest.raises(ValueError, match="read-only"):
        pooled_in.data[...] = 0  # locked while the graph lives
    (y ** 2).sum().backward()
    (p ** 2).sum().backward()
    np.testing.assert_allclose(wt.grad, expected_w, rtol=1e-13)
    np.testing.assert_allclose(pooled_in.grad, expected_x, rtol=1e-13)


def test_integer_input_without_grad() -> None:
    w = mg.tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    y = F.conv2d(np.arange(9).reshape(1, 1, 3, 3), w)
    np.testing.assert_array_equal(y.data, [[[[8, 12], [20, 24]]]])
    y.sum().backward()
    np.testing.assert_array_equal(w.grad, [[[[8, 12], [20, 24]]]])


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------
def test_conv2d_module_parameters_init_and_state() -> None:
    conv = nn.Conv2d(3, 8, (3, 2), stride=2, padding=1, rng=7)
    assert conv.weight.shape == (8, 3, 3, 2) and conv.bias is not None
    assert conv.bias.shape == (8,)
    assert [n for n, _ in conv.named_parameters()] == ["weight", "bias"]
    bound = 1 / math.sqrt(3 * 3 * 2)
    for p in (conv.weight.data, conv.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.5 * bound
    assert np.array_equal(nn.Conv2d(3, 8, (3, 2), rng=7).weight.data, conv.weight.data)
    assert not np.array_equal(nn.Conv2d(3, 8, (3, 2), rng=8).weight.data, conv.weight.data)
    assert nn.Conv2d(3, 8, 3, bias=False, rng=0).bias is None
    other = nn.Conv2d(3, 8, (3, 2), stride=2, padding=1, rng=0)
    other.load_state_dict(conv.state_dict())
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 6))
    np.testing.assert_array_equal(other(mg.tensor(x)).data, conv(mg.tensor(x)).data)
    assert repr(conv).startswith("Conv2d(3, 8, kernel_size=(3, 2), stride=(2, 2), padding=(1, 1)")
    assert "MaxPool2d(kernel_size=2, stride=2" in repr(nn.Sequential(nn.MaxPool2d(2)))


def test_a_small_cnn_learns() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 1, 6, 6))
    labels = (x[:, 0, :3].sum(axis=(1, 2)) > x[:, 0, 3:].sum(axis=(1, 2))).astype(int)
    conv, pool, fc = nn.Conv2d(1, 4, 3, padding=1, rng=1), nn.MaxPool2d(2), nn.Linear(36, 2, rng=2)
    opt = mg.optim.Adam([*conv.parameters(), *fc.parameters()], lr=0.05)
    losses = []
    for _ in range(40):
        h = pool(F.relu(conv(mg.Tensor(x))))
        loss = F.cross_entropy(fc(h.reshape(32, -1)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
X4 = np.zeros((2, 3, 5, 5))
W4 = np.zeros((4, 3, 3, 3))


@pytest.mark.parametrize("call,kind,words", [
    (lambda: F.conv2d(np.zeros((5, 5)), W4), ValueError, ["conv2d", "(5, 5)", "(N, C, H, W)"]),
    (lambda: F.conv2d(X4, np.zeros((4, 2, 3, 3))), ValueError,
     ["conv2d", "(2, 3, 5, 5)", "(4, 2, 3, 3)", "in_channels"]),
    (lambda: F.conv2d(X4, np.zeros((4, 3, 3))), ValueError, ["conv2d", "(4, 3, 3)"]),
    (lambda: F.conv2d(X4, W4, np.zeros(3)), ValueError, ["bias", "(3,)", "(4,)"]),
    (lambda: F.conv2d(X4, np.zeros((4, 3, 7, 3))), ValueError,
     ["conv2d", "(2, 3, 5, 5)", "kernel", "7×3"]),
    (lambda: F.conv2d(X4, W4, stride=0), ValueError, ["conv2d", "stride", "at least 1"]),
    (lambda: F.conv2d(X4, W4, stride=1.5), TypeError, ["conv2d", "stride", "int"]),
    (lambda: F.conv2d(X4, W4, padding=(1, 2, 3)), TypeError, ["conv2d", "padding"]),
    (lambda: F.conv2d(X4, W4, padding=-1), ValueError, ["conv2d", "padding", "at least 0"]),
    (lambda: F.conv2d(X4, W4, padding="full"), ValueError, ["conv2d", "'full'", "'same'"]),
    (lambda: F.conv2d(X4, W4, padding="same", stride=2), ValueError, ["same", "stride"]),
    (lambda: F.conv2d(X4, W4, dilation=0), ValueError, ["conv2d", "dilation"]),
    (lambda: F.max_pool2d(X4, 2, padding=2), ValueError, ["max_pool2d", "half the kernel"]),
    (lambda: F.max_pool2d(X4, 6), ValueError, ["max_pool2d", "(2, 3, 5, 5)", "6×6"]),
    (lambda: F.max_pool2d(X4, 0), ValueError, ["max_pool2d", "kernel_size"]),
    (lambda: F.max_pool2d(np.zeros(4), 2), ValueError, ["max_pool2d", "(4,)"]),
    (lambda: nn.Conv2d(0, 3, 3), ValueError, ["Conv2d", "in_channels"]),
    (lambda: nn.Conv2d(2, 3, 3, dtype=np.int64), TypeError, ["Conv2d", "dtype"]),
    (lambda: nn.Conv2d(2, 3, 3, rng="seed"), TypeError, ["rng"]),
    (lambda: nn.Conv2d(2, 3, 3, padding="same", stride=2), ValueError, ["same", "stride"]),
    (lambda: nn.MaxPool2d((2, 2, 2)), TypeError, ["MaxPool2d", "kernel_size"]),
    (lambda: nn.Conv2d(2, 3, 3, rng=0)(mg.tensor(np.zeros((1, 4, 5, 5)))), ValueError,
     ["(1, 4, 5, 5)", "(3, 2, 3, 3)"]),
])
def test_bad_arguments_are_refused_clearly(call: Any, kind: type, words: list[str]) -> None:
    with pytest.raises(kind) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_complex_input_is_refused_where_a_gradient_could_be_asked_for() -> None:
    w = mg.tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    with pytest.raises(TypeError, match="complex"):
        F.conv2d(np.ones((1, 1, 3, 3), dtype=complex), w)
