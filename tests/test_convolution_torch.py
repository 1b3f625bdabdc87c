"""Conv2d and MaxPool2d against PyTorch in float64: outputs and the gradients of input, weight
and bias over hypothesis-drawn geometries, ties and NaN in max pooling, and a trained module's
state_dict loaded into torch.nn."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minigrad as mg
import minigrad.nn.functional as F  # noqa: N812
from minigrad import nn

torch = pytest.importorskip("torch")

CLOSE = {"rtol": 1e-10, "atol": 1e-12}


@st.composite
def geometries(draw: st.DrawFn, pool: bool = False) -> dict[str, Any]:
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    limit = [k // 2 for k in kernel] if pool else [3, 3]
    g = dict(kernel=kernel, stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
             dilation=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
             padding=(draw(st.integers(0, limit[0])), draw(st.integers(0, limit[1]))))
    size = []
    for k, d, p in zip(kernel, g["dilation"], g["padding"]):
        least = max(1, d * (k - 1) + 1 - 2 * p)
        size.append(draw(st.integers(least, least + 6)))
    if pool:  # no dilated window wholly in the padding (PyTorch's index there is out of range)
        for n, k, s, d, p in zip(size, kernel, g["stride"], g["dilation"], g["padding"]):
            out = (n + 2 * p - d * (k - 1) - 1) // s + 1
            assume(all(any(0 <= i * s - p + d * t < n for t in range(k)) for i in range(out)))
    g.update(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)), o=draw(st.integers(1, 4)),
             size=tuple(size), seed=draw(st.integers(0, 2**32 - 1)), bias=draw(st.booleans()))
    return g


@given(g=geometries())
def test_conv2d_matches_torch(g: dict[str, Any]) -> None:
    rng = np.random.default_rng(g["seed"])
    x = rng.normal(size=(g["n"], g["c"], *g["size"]))
    w = rng.normal(size=(g["o"], g["c"], *g["kernel"]))
    b = rng.normal(size=g["o"]) if g["bias"] else None
    kw = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"])
    ours = [mg.tensor(a, requires_grad=True) for a in (x, w) + ((b,) if b is not None else ())]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w) + ((b,) if b is not None else ())]
    y = F.conv2d(*ours, **kw)
    yt = torch.nn.functional.conv2d(*theirs, **kw)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), **CLOSE)
    up = rng.normal(size=y.shape)
    y.backward(up)
    yt.backward(torch.from_numpy(up))
    for a, at in zip(ours, theirs):
        assert a.grad is not None and a.grad.shape == tuple(at.shape)
        np.testing.assert_allclose(a.grad, at.grad.numpy(), **CLOSE)


@given(g=geometries(pool=True), ties=st.booleans())
def test_max_pool2d_matches_torch(g: dict[str, Any], ties: bool) -> None:
    rng = np.random.default_rng(g["seed"])
    shape = (g["n"], g["c"], *g["size"])
    # with ties: few distinct values, so most windows hold several maxima
    x = rng.integers(0, 3, size=shape).astype(float) if ties else rng.normal(size=shape)
    kw = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"])
    xt, xtt = mg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y = F.max_pool2d(xt, g["kernel"], **kw)
    yt = torch.nn.functional.max_pool2d(xtt, g["kernel"], **kw)
    np.testing.assert_array_equal(y.data, yt.detach().numpy())
    up = rng.normal(size=y.shape)
    y.backward(up)
    yt.backward(torch.from_numpy(up))
    np.testing.assert_allclose(xt.grad, xtt.grad.numpy(), **CLOSE)


def test_max_pool2d_nan_matches_torch() -> None:
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = x[0, 0, 3, 3] = np.nan
    for kernel, stride in ((2, 2), (3, 1), (3, 2)):
        xt, xtt = mg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y = F.max_pool2d(xt, kernel, stride)
        yt = torch.nn.functional.max_pool2d(xtt, kernel, stride)
        np.testing.assert_array_equal(y.data, yt.detach().numpy())
        up = np.linspace(1, 2, y.size).reshape(y.shape)
        y.backward(up)
        yt.backward(torch.from_numpy(up))
        np.testing.assert_allclose(xt.grad, xtt.grad.numpy(), **CLOSE)


def test_padding_same_with_an_even_kernel_matches_torch() -> None:
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(2, 3, 7, 6)), rng.normal(size=(2, 3, 4, 2))
    y = F.conv2d(x, w, padding="same", dilation=(1, 3))
    with pytest.warns(UserWarning):  # PyTorch warns that it pads a copy here
        yt = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                        padding="same", dilation=(1, 3))
    np.testing.assert_allclose(y.data, yt.numpy(), **CLOSE)


def test_cnn_state_dict_loads_into_torch_and_computes_the_same() -> None:
    ours = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, (2, 3), stride=(1, 2), rng=1), nn.ReLU())
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2),
                                 torch.nn.Conv2d(4, 6, (2, 3), stride=(1, 2)),
                                 torch.nn.ReLU()).double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(2).normal(size=(3, 1, 9, 10))
    np.testing.assert_allclose(ours(mg.tensor(x)).data,
                               theirs(torch.from_numpy(x)).detach().numpy(), **CLOSE)
    # and back: PyTorch's own initialisation loads into ours
    fresh = torch.nn.Conv2d(2, 3, 3).double()
    conv = nn.Conv2d(2, 3, 3, rng=0)
    conv.load_state_dict({k: v.detach().numpy() for k, v in fresh.state_dict().items()})
    x = np.random.default_rng(3).normal(size=(1, 2, 5, 5))
    np.testing.assert_allclose(conv(mg.tensor(x)).data,
                               fresh(torch.from_numpy(x)).detach().numpy(), **CLOSE)
