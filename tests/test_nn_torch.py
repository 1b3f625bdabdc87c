"""minigrad.nn's layers, losses and initialisers against PyTorch's, in float64.

Each layer gets the same weights in both libraries (through the state dict, in both directions),
then the same inputs and upstream gradients: values, the gradient of the input and of every
parameter, and the running statistics must agree to rounding, in training and in eval mode.
Runs only where torch is installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F  # noqa: N812  (PyTorch's spelling)
from minigrad.nn import init

torch = pytest.importorskip("torch")
TF = torch.nn.functional
CLOSE = {"rtol": 1e-12, "atol": 1e-13}


def to_torch(sd: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: torch.from_numpy(v) for k, v in sd.items()}


def assert_same_state(ours: nn.Module, theirs: Any) -> None:
    mine, their_sd = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(their_sd)
    for k, v in mine.items():
        np.testing.assert_allclose(v, their_sd[k].numpy(), **CLOSE, err_msg=k)


def run_both(ours: nn.Module, theirs: Any, x: np.ndarray, g: np.ndarray) -> None:
    """One forward and backward through each; values and every gradient must agree."""
    a = mg.tensor(x, requires_grad=True)
    t = torch.tensor(x, requires_grad=True)
    ya, yt = ours(a), theirs(t)
    np.testing.assert_allclose(ya.data, yt.detach().numpy(), **CLOSE)
    ya.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(a.grad, t.grad.numpy(), **CLOSE)
    theirs_params = dict(theirs.named_parameters())
    assert [k for k, _ in ours.named_parameters()] == list(theirs_params)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, theirs_params[name].grad.numpy(), **CLOSE,
                                   err_msg=name)
    ours.zero_grad()
    theirs.zero_grad()


def randomised(module: nn.Module, seed: int) -> nn.Module:
    """Parameters away from their defaults (ones and zeros hide layout mistakes)."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = rng.normal(size=p.shape)
    return module


# --- activations ------------------------------------------------------------------------------
X = np.concatenate([np.linspace(-30, 30, 601), [1e4, -1e4, 0.0, 19.999, 20.001, -1e-8]])
ACTIVATIONS: list[tuple[str, Callable[[Any], Any], Any, Any]] = [
    ("leaky_relu", lambda t: F.leaky_relu(t, 0.2), lambda t: TF.leaky_relu(t, 0.2),
     (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2))),
    ("gelu", F.gelu, TF.gelu, (nn.GELU(), torch.nn.GELU())),
    ("gelu_tanh", lambda t: F.gelu(t, "tanh"), lambda t: TF.gelu(t, approximate="tanh"),
     (nn.GELU("tanh"), torch.nn.GELU("tanh"))),
    ("silu", F.silu, TF.silu, (nn.SiLU(), torch.nn.SiLU())),
    ("elu", lambda t: F.elu(t, 0.7), lambda t: TF.elu(t, 0.7),
     (nn.ELU(0.7), torch.nn.ELU(0.7))),
    ("softplus", F.softplus, TF.softplus, (nn.Softplus(), torch.nn.Softplus())),
    ("softplus_beta", lambda t: F.softplus(t, 2.5, 4.0), lambda t: TF.softplus(t, 2.5, 4.0),
     (nn.Softplus(2.5, 4.0), torch.nn.Softplus(2.5, 4.0))),
]


@pytest.mark.parametrize("name,ours,theirs,modules", ACTIVATIONS,
                         ids=[a[0] for a in ACTIVATIONS])
def test_activations_match_torch(name: str, ours: Any, theirs: Any, modules: Any) -> None:
    g = np.cos(X)
    a, t = mg.tensor(X, requires_grad=True), torch.tensor(X, requires_grad=True)
    ya, yt = ours(a), theirs(t)
    np.testing.assert_allclose(ya.data, yt.detach().numpy(), rtol=1e-13, atol=1e-14)
    ya.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(a.grad, t.grad.numpy(), rtol=1e-12, atol=1e-14)
    run_both(modules[0], modules[1], X, g)
    assert repr(modules[0]) == repr(modules[1])


# --- layers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm,affine,bias", [(5, True, True), ((3, 5), True, True),
                                              (5, False, True), (5, True, False)])
def test_layer_norm_matches_torch(norm: Any, affine: bool, bias: bool) -> None:
    rng = np.random.default_rng(0)
    ours = randomised(nn.LayerNorm(norm, eps=1e-3, elementwise_affine=affine, bias=bias), 1)
    theirs = torch.nn.LayerNorm(norm, eps=1e-3, elementwise_affine=affine, bias=bias).double()
    theirs.load_state_dict(to_torch(ours.state_dict()))
    x = rng.normal(size=(2, 3, 5)) * 4 + 2
    run_both(ours, theirs, x, rng.normal(size=x.shape))
    assert_same_state(ours, theirs)


BATCH_NORMS = [  # (ours, theirs, input shape)
    (lambda **k: nn.BatchNorm1d(4, **k), lambda **k: torch.nn.BatchNorm1d(4, **k), (8, 4)),
    (lambda **k: nn.BatchNorm1d(4, **k), lambda **k: torch.nn.BatchNorm1d(4, **k), (5, 4, 3)),
    (lambda **k: nn.BatchNorm2d(4, **k), lambda **k: torch.nn.BatchNorm2d(4, **k), (3, 4, 2, 3)),
]
BN_OPTIONS = [{}, {"momentum": None}, {"momentum": 0.3, "eps": 1e-3}, {"affine": False},
              {"bias": False}, {"track_running_stats": False}]


@pytest.mark.parametrize("options", BN_OPTIONS, ids=[str(o) for o in BN_OPTIONS])
@pytest.mark.parametrize("make_ours,make_theirs,shape", BATCH_NORMS,
                         ids=["1d-2d", "1d-3d", "2d"])
def test_batch_norm_matches_torch_in_training_and_eval(make_ours: Any, make_theirs: Any,
                                                       shape: tuple[int, ...],
                                                       options: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    ours = randomised(make_ours(**options), 1)
    theirs = make_theirs(**options).double()
    theirs.load_state_dict(to_torch(ours.state_dict()))
    for _ in range(3):
        x = rng.normal(size=shape) * 3 + 1
        run_both(ours, theirs, x, rng.normal(size=shape))
        assert_same_state(ours, theirs)  # the running statistics and the batch count
    ours.eval()
    theirs.eval()
    x = rng.normal(size=shape)
    run_both(ours, theirs, x, rng.normal(size=shape))
    assert_same_state(ours, theirs)
    assert repr(ours) == repr(theirs)
    back = make_ours(**options)  # and torch's state loads into ours
    back.load_state_dict(theirs.state_dict())
    assert_same_state(back, theirs)


def test_embedding_matches_torch() -> None:
    rng = np.random.default_rng(0)
    for pad in (None, 2):
        ours = nn.Embedding(6, 3, rng=0, padding_idx=pad)
        theirs = torch.nn.Embedding(6, 3, padding_idx=pad).double()
        np.testing.assert_array_equal(theirs.weight.detach().numpy()[2] == 0, pad == 2)
        theirs.load_state_dict(to_torch(ours.state_dict()))
        idx = np.array([[0, 2, 5], [2, 2, 1]])
        ya, yt = ours(idx), theirs(torch.from_numpy(idx))
        np.testing.assert_array_equal(ya.data, yt.detach().numpy())
        g = rng.normal(size=ya.shape)
        ya.backward(g)
        yt.backward(torch.from_numpy(g))
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), **CLOSE)
        assert repr(ours) == repr(theirs)


def test_flatten_matches_torch() -> None:
    x = np.arange(120.0).reshape(2, 3, 4, 5)
    for args in ((), (0,), (1, 2), (-3, -2), (2, 2)):
        ours, theirs = nn.Flatten(*args), torch.nn.Flatten(*args)
        assert ours(x).shape == tuple(theirs(torch.from_numpy(x)).shape)
        assert repr(ours) == repr(theirs)


def test_dropout_matches_torch_where_randomness_does_not_enter() -> None:
    x = np.random.default_rng(0).uniform(1, 2, (200, 100))
    ours, theirs = nn.Dropout(0.3, rng=0), torch.nn.Dropout(0.3)
    a, t = ours(x).data, theirs(torch.from_numpy(x)).numpy()
    for y in (a, t):  # the same support: 0 or x/(1 − p)
        kept = y != 0
        np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-15)
        assert abs((~kept).mean() - 0.3) < 0.01
    np.testing.assert_array_equal(ours.eval()(x).data, theirs.eval()(torch.from_numpy(x)))
    assert repr(ours) == "Dropout(p=0.3)"


def test_a_network_of_every_layer_loads_into_the_same_torch_network() -> None:
    rng = np.random.default_rng(0)
    ours = nn.Sequential(nn.Linear(4, 6, rng=0), nn.LayerNorm(6), nn.GELU(), nn.Dropout(0.0),
                         nn.Linear(6, 5, rng=1), nn.BatchNorm1d(5), nn.ELU(),
                         nn.Linear(5, 2, rng=2))
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.LayerNorm(6), torch.nn.GELU(),
                                 torch.nn.Dropout(0.0), torch.nn.Linear(6, 5),
                                 torch.nn.BatchNorm1d(5), torch.nn.ELU(),
                                 torch.nn.Linear(5, 2)).double()
    theirs.load_state_dict(to_torch(ours.state_dict()))
    x, y = rng.normal(size=(16, 4)), rng.integers(0, 2, 16)
    opt = mg.optim.SGD(ours.parameters(), lr=0.1)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.1)
    for _ in range(3):  # training moves the weights and the running statistics alike
        opt.zero_grad()
        topt.zero_grad()
        F.cross_entropy(ours(x), y).backward()
        TF.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
        topt.step()
    assert_same_state(ours, theirs)
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(ours(x).data, theirs(torch.from_numpy(x)).detach().numpy(),
                               **CLOSE)


# --- losses -----------------------------------------------------------------------------------
CE_OPTIONS = [{}, {"weight": True}, {"ignore_index": 1}, {"label_smoothing": 0.2},
              {"weight": True, "label_smoothing": 0.3}]


@pytest.mark.parametrize("options", CE_OPTIONS, ids=[str(o) for o in CE_OPTIONS])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_and_nll_match_torch(options: dict[str, Any], reduction: str) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 4)) * 3
    z[0] = [1e4, -1e4, 0.0, 3.0]
    t = np.array([0, 3, options.get("ignore_index", -100), 1, 2, 1, 3])
    kw = dict(options, reduction=reduction)
    if kw.pop("weight", False):
        kw["weight"] = rng.uniform(0.5, 2, 4)
    tkw = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    pairs = [(F.cross_entropy, TF.cross_entropy, z)]
    if "label_smoothing" not in kw:  # torch's nll_loss has no label smoothing
        pairs.append((F.nll_loss, TF.nll_loss, z / 3))
    for ours, theirs, inputs in pairs:
        a, b = mg.tensor(inputs, requires_grad=True), torch.tensor(inputs, requires_grad=True)
        la, lb = ours(a, t, **kw), theirs(b, torch.from_numpy(t), **tkw)
        np.testing.assert_allclose(la.data, lb.detach().numpy(), **CLOSE)
        w = np.linspace(0.5, 1.5, la.size).reshape(la.shape)
        la.backward(w)
        lb.backward(torch.from_numpy(w))
        np.testing.assert_allclose(a.grad, b.grad.numpy(), **CLOSE)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_with_logits_matches_torch(reduction: str) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3)) * 4
    z[0] = [1e4, -1e4, 0.0]
    y = rng.uniform(0, 1, (5, 3))
    y[0] = [0.0, 1.0, 0.5]
    for kw in ({}, {"pos_weight": rng.uniform(0.5, 3, 3)},
               {"weight": rng.uniform(0.5, 2, (5, 1)), "pos_weight": rng.uniform(0.5, 3, 3)}):
        tkw = {k: torch.from_numpy(v) for k, v in kw.items()}
        a, b = mg.tensor(z, requires_grad=True), torch.tensor(z, requires_grad=True)
        ya, yb = mg.tensor(y, requires_grad=True), torch.tensor(y, requires_grad=True)
        la = F.binary_cross_entropy_with_logits(a, ya, reduction, **kw)
        lb = TF.binary_cross_entropy_with_logits(b, yb, reduction=reduction, **tkw)
        np.testing.assert_allclose(la.data, lb.detach().numpy(), rtol=1e-12, atol=1e-12)
        w = np.linspace(0.5, 1.5, la.size).reshape(la.shape)
        la.backward(w)
        lb.backward(torch.from_numpy(w))
        np.testing.assert_allclose(a.grad, b.grad.numpy(), **CLOSE)
        np.testing.assert_allclose(ya.grad, yb.grad.numpy(), **CLOSE)  # the targets' too


REGRESSION = [
    ("mse", lambda p, t, r: F.mse_loss(p, t, r), lambda p, t, r: TF.mse_loss(p, t, reduction=r)),
    ("l1", lambda p, t, r: F.l1_loss(p, t, r), lambda p, t, r: TF.l1_loss(p, t, reduction=r)),
    ("huber", lambda p, t, r: F.huber_loss(p, t, r, delta=0.5),
     lambda p, t, r: TF.huber_loss(p, t, reduction=r, delta=0.5)),
    ("smooth_l1", lambda p, t, r: F.smooth_l1_loss(p, t, r, beta=0.5),
     lambda p, t, r: TF.smooth_l1_loss(p, t, reduction=r, beta=0.5)),
    ("smooth_l1_beta0", lambda p, t, r: F.smooth_l1_loss(p, t, r, beta=0.0),
     lambda p, t, r: TF.smooth_l1_loss(p, t, reduction=r, beta=0.0)),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name,ours,theirs", REGRESSION, ids=[r[0] for r in REGRESSION])
def test_regression_losses_match_torch(name: str, ours: Any, theirs: Any, reduction: str
                                       ) -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=(4, 5))
    pred = target + rng.normal(size=(4, 5))
    pred[0, :4] = target[0, :4] + [0.0, 0.5, -0.5, 1e-9]  # at the kinks
    for requires in ((True, False), (True, True)):
        p, t = mg.tensor(pred, requires_grad=True), mg.tensor(target, requires_grad=requires[1])
        tp = torch.tensor(pred, requires_grad=True)
        tt = torch.tensor(target, requires_grad=requires[1])
        la, lb = ours(p, t, reduction), theirs(tp, tt, reduction)
        np.testing.assert_allclose(la.data, lb.detach().numpy(), **CLOSE)
        w = np.linspace(0.5, 1.5, la.size).reshape(la.shape)
        la.backward(w)
        lb.backward(torch.from_numpy(w))
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), **CLOSE)
        if requires[1]:
            np.testing.assert_allclose(t.grad, tt.grad.numpy(), **CLOSE)


# --- init -------------------------------------------------------------------------------------
def test_calculate_gain_matches_torch() -> None:
    for name in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose2d", "sigmoid", "tanh",
                 "relu", "selu"):
        assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name),
                                                          rel=1e-15)
    for slope in (None, 0, 0.2, 3):
        assert init.calculate_gain("leaky_relu", slope) == pytest.approx(
            torch.nn.init.calculate_gain("leaky_relu", slope), rel=1e-15)


INIT_CASES = [
    ("xavier_uniform_", {"gain": 1.5}), ("xavier_normal_", {}),
    ("kaiming_uniform_", {}), ("kaiming_uniform_", {"a": math.sqrt(5)}),
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", {"nonlinearity": "tanh"}), ("normal_", {"mean": 0.5, "std": 0.2}),
    ("uniform_", {"a": -2.0, "b": 0.5}),
]


@pytest.mark.parametrize("shape", [(400, 300), (64, 32, 3, 3)])
@pytest.mark.parametrize("name,kwargs", INIT_CASES, ids=[f"{c[0]}{c[1]}" for c in INIT_CASES])
def test_inits_draw_from_torchs_distributions(name: str, kwargs: dict[str, Any],
                                              shape: tuple[int, ...]) -> None:
    ours = getattr(init, name)(mg.tensor(np.zeros(shape)), **kwargs, rng=0).data
    torch.manual_seed(0)
    theirs = getattr(torch.nn.init, name)(torch.zeros(shape, dtype=torch.float64),
                                          **kwargs).numpy()
    # the same distribution: the same quantiles (the extremes for a uniform), mean and spread,
    # to sampling error: at 18,432 draws each, 5 standard errors of the difference are about
    # 0.09σ for the deciles, 0.05σ for the mean and 4% for the standard deviation
    q = [0, 1] if "uniform" in name else [0.1, 0.5, 0.9]
    spread = np.std(theirs)
    np.testing.assert_allclose(np.quantile(ours, q), np.quantile(theirs, q), rtol=0,
                               atol=0.1 * spread)
    assert abs(ours.mean() - theirs.mean()) < 0.05 * spread
    assert abs(ours.std() / spread - 1) < 0.04


def test_default_inits_of_the_layers_match_torchs() -> None:
    for ours, theirs in ((nn.LayerNorm((2, 3)), torch.nn.LayerNorm((2, 3))),
                         (nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3))):
        assert_same_state(ours, theirs.double())
    ours_e, theirs_e = nn.Embedding(300, 200, rng=0).weight.data, torch.nn.Embedding(300, 200)
    assert abs(ours_e.std() - theirs_e.weight.detach().numpy().std()) < 0.01  # both N(0, 1)
