"""minigrad.optim against PyTorch: AdamW and RMSprop step for step in float64 (parameters and every
state entry) and in float32; frozen and unfrozen parameters; optimizer state dicts that load into
torch.optim; the lr sequence of each scheduler over 30 epochs (fresh, resumed with last_epoch,
two on one optimizer, driving an optimizer) and its state dict; clip_grad_value_."""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad import optim
from minigrad.nn.utils import clip_grad_value_
from minigrad.optim import lr_scheduler

torch = pytest.importorskip("torch")

# loss(w) = ½ wᵀAw − cᵀw + ¼ Σ w⁴ + ⟨w, v⟩ with a second, separately optimized vector v.
_RNG = np.random.default_rng(7)
_M = _RNG.normal(size=(5, 5))
A = _M @ _M.T / 5 + np.eye(5)
C = _RNG.normal(size=5)
W0, V0 = _RNG.normal(size=5), _RNG.normal(size=5)


def _loss(w, v, a, c):
    return 0.5 * (w @ (a @ w)) - (c * w).sum() + 0.25 * (w ** 4).sum() + (w * v).sum()


class Pair:
    """The same two parameters and loss in minigrad and in torch."""

    def __init__(self, dtype=np.float64):
        self.ours = [mg.tensor(x.astype(dtype), requires_grad=True) for x in (W0, V0)]
        self.theirs = [torch.tensor(x.astype(dtype), requires_grad=True) for x in (W0, V0)]
        self.a, self.c = A.astype(dtype), C.astype(dtype)
        self.ta, self.tc = torch.tensor(self.a), torch.tensor(self.c)

    def step(self, opt, topt):
        opt.zero_grad()
        topt.zero_grad()
        _loss(*self.ours, self.a, self.c).backward()
        _loss(*self.theirs, self.ta, self.tc).backward()
        opt.step()
        topt.step()

    def assert_close(self, opt, topt, msg, tol):
        for i, (p, tp) in enumerate(zip(self.ours, self.theirs)):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), **tol, err_msg=f"{msg} p{i}")
            ours, theirs = opt.state.get(p, {}), topt.state.get(tp, {})
            assert set(ours) == set(theirs), msg
            for k, value in ours.items():
                np.testing.assert_allclose(value, np.asarray(theirs[k]), **tol,
                                           err_msg=f"{msg} p{i} {k}")


F64 = dict(rtol=1e-11, atol=1e-13)
F32 = dict(rtol=2e-5, atol=2e-6)
CASES = [
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.05, weight_decay=0.3)),
    ("AdamW", dict(lr=0.02, betas=(0.5, 0.8), eps=1e-4, weight_decay=0.0)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.003, alpha=0.9, weight_decay=0.05)),
    ("RMSprop", dict(momentum=0.9)),
    ("RMSprop", dict(centered=True)),
    ("RMSprop", dict(lr=0.005, alpha=0.8, eps=1e-4, weight_decay=0.1, momentum=0.5,
                     centered=True)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kw", CASES)
def test_parameters_and_state_match_torch_step_for_step(name, kw, dtype):
    pair = Pair(dtype)
    opt = getattr(optim, name)(pair.ours, **kw)
    topt = getattr(torch.optim, name)(pair.theirs, **kw)
    for step in range(15):
        pair.step(opt, topt)
        pair.assert_close(opt, topt, f"{name} {kw} step {step + 1}",
                          F64 if dtype == np.float64 else F32)


@pytest.mark.parametrize("name,kw", [CASES[1], CASES[-1]])
def test_a_frozen_parameter_is_skipped_then_trained_as_torch_does(name, kw):
    pair = Pair()
    opt = getattr(optim, name)(pair.ours, **kw)
    topt = getattr(torch.optim, name)(pair.theirs, **kw)
    for flag in (False, True):
        pair.ours[1].requires_grad = flag
        pair.theirs[1].requires_grad_(flag)
        for step in range(4):
            pair.step(opt, topt)
            pair.assert_close(opt, topt, f"requires_grad={flag} step {step + 1}", F64)


@pytest.mark.parametrize("name,kw", CASES)
def test_our_state_dict_loads_into_torch_and_continues_alike(name, kw):
    pair = Pair()
    opt = getattr(optim, name)(pair.ours, **kw)
    topt = getattr(torch.optim, name)(pair.theirs, **kw)
    for _ in range(3):
        pair.step(opt, topt)
    sd = opt.state_dict()
    tsd = topt.state_dict()
    assert set(sd["param_groups"][0]) <= set(tsd["param_groups"][0])
    assert {k: set(v) for k, v in sd["state"].items()} == {
        k: set(v) for k, v in tsd["state"].items()}
    fresh = [torch.tensor(p.data.copy(), requires_grad=True) for p in pair.ours]
    topt2 = getattr(torch.optim, name)(fresh, lr=0.123)
    topt2.load_state_dict({"param_groups": sd["param_groups"], "state": {
        i: {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in s.items()}
        for i, s in sd["state"].items()}})
    pair.theirs = fresh
    for step in range(3):
        pair.step(opt, topt2)
        pair.assert_close(opt, topt2, f"after loading, step {step + 1}", F64)


# --- schedules ---------------------------------------------------------------------------------
def _groups(lib):
    a, b = lib.zeros(2, requires_grad=True), lib.zeros(3, requires_grad=True)
    return [{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.03}]


def _both(make_sched, make_opt=None):
    """(our optimizer, its schedulers), (torch's, theirs); make_sched(module, opt) -> list."""
    opt = (make_opt or (lambda lib, gs: lib.SGD(gs, lr=1.0)))(optim, _groups(mg))
    topt = (make_opt or (lambda lib, gs: lib.SGD(gs, lr=1.0)))(torch.optim, _groups(torch))
    return (opt, make_sched(lr_scheduler, opt)), (topt, make_sched(torch.optim.lr_scheduler,
                                                                   topt))


def _assert_same_lrs(ours, theirs, msg):
    (opt, scheds), (topt, tscheds) = ours, theirs
    np.testing.assert_allclose([g["lr"] for g in opt.param_groups],
                               [g["lr"] for g in topt.param_groups], rtol=1e-14, atol=1e-17,
                               err_msg=msg)
    for s, t in zip(scheds, tscheds):
        assert s.last_epoch == t.last_epoch, msg
        np.testing.assert_allclose(s.get_last_lr(), t.get_last_lr(), rtol=1e-14, atol=1e-17,
                                   err_msg=msg)


def _epochs(ours, theirs, n, tag):
    """n epochs of both, or until torch's schedule turns an lr negative (False), which ours
    must refuse."""
    for epoch in range(n):
        for opt, scheds in (theirs, ours):
            opt.step()
            try:
                for s in scheds:
                    s.step()
            except ValueError as e:
                assert "must be a finite number >= 0, got -" in str(e), str(e)
                assert min(g["lr"] for g in theirs[0].param_groups) < 0, str(e)
                return False
        _assert_same_lrs(ours, theirs, f"{tag}, epoch {epoch + 1}")
    return True


SCHEDULES = {
    "StepLR(3)": lambda m, o: [m.StepLR(o, step_size=3)],
    "StepLR(4, 0.7)": lambda m, o: [m.StepLR(o, 4, gamma=0.7)],
    "ExponentialLR(0.9)": lambda m, o: [m.ExponentialLR(o, gamma=0.9)],
    "CosineAnnealingLR(10)": lambda m, o: [m.CosineAnnealingLR(o, T_max=10)],
    "CosineAnnealingLR(7, 0.01)": lambda m, o: [m.CosineAnnealingLR(o, 7, eta_min=0.01)],
    "LinearLR()": lambda m, o: [m.LinearLR(o)],
    "LinearLR(1, 0.1, 12)": lambda m, o: [m.LinearLR(o, 1.0, 0.1, total_iters=12)],
    "LinearLR(0.5, 0.8, 3)": lambda m, o: [m.LinearLR(o, 0.5, 0.8, 3)],
    "LambdaLR": lambda m, o: [m.LambdaLR(o, lambda e: 1 / (1 + e))],
    "LambdaLR per group": lambda m, o: [m.LambdaLR(o, [lambda e: 0.95 ** e,
                                                        lambda e: 1.0 + (e % 4)])],
    "LinearLR + ExponentialLR": lambda m, o: [m.LinearLR(o, 0.2, total_iters=6),
                                              m.ExponentialLR(o, 0.95)],
    "StepLR + CosineAnnealingLR": lambda m, o: [m.StepLR(o, 5, 0.5),
                                                m.CosineAnnealingLR(o, 8, 0.001)],
    "CosineAnnealingLR + LambdaLR": lambda m, o: [m.CosineAnnealingLR(o, 6),
                                                  m.LambdaLR(o, lambda e: 0.9 ** e)],
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_lr_sequences_match_torch_over_30_epochs(name):
    ours, theirs = _both(SCHEDULES[name])
    _assert_same_lrs(ours, theirs, f"{name}, construction")
    assert _epochs(ours, theirs, 30, name)
    for s, t in zip(ours[1], theirs[1]):
        sd, tsd = s.state_dict(), t.state_dict()
        assert set(sd) <= set(tsd), name
        for k, v in sd.items():
            if k != "lr_lambdas":
                np.testing.assert_allclose(v, tsd[k], rtol=1e-14, err_msg=f"{name} {k}")
        if "lr_lambdas" in sd:
            assert sd["lr_lambdas"] == tsd["lr_lambdas"]


@pytest.mark.parametrize("name", SCHEDULES)
def test_resuming_with_last_epoch_matches_torch(name):
    """Eight epochs, the optimizers' state dicts into fresh optimizers, the schedulers made again
    with last_epoch=8 (the constructor steps once more, in both), then 20 more epochs."""
    ours, theirs = _both(SCHEDULES[name])
    assert _epochs(ours, theirs, 8, name)
    opt, topt = optim.SGD(_groups(mg), lr=1.0), torch.optim.SGD(_groups(torch), lr=1.0)
    opt.load_state_dict(ours[0].state_dict())
    topt.load_state_dict(theirs[0].state_dict())
    make = SCHEDULES[name]

    def again(module, o):
        return make(_Resumed(module, 8), o)

    ours, theirs = (opt, again(lr_scheduler, opt)), (topt, again(torch.optim.lr_scheduler, topt))
    _assert_same_lrs(ours, theirs, f"{name}, resumed")
    # Resumed, StepLR's halving takes the cosine below eta_min, where PyTorch's recursive
    # formula then gives negative learning rates; ours refuses them.
    negative = name == "StepLR + CosineAnnealingLR"
    assert _epochs(ours, theirs, 20, f"{name}, resumed") is not negative


class _Resumed:
    """A scheduler module whose classes are made with last_epoch given."""

    def __init__(self, module, last_epoch):
        self.module, self.last_epoch = module, last_epoch

    def __getattr__(self, name):
        cls = getattr(self.module, name)
        return lambda *args, **kw: cls(*args, **kw, last_epoch=self.last_epoch)


@pytest.mark.parametrize("name,kw,sched", [
    ("Adam", dict(lr=0.05), lambda m, o: [m.CosineAnnealingLR(o, T_max=12, eta_min=1e-3)]),
    ("AdamW", dict(lr=0.05, weight_decay=0.2), lambda m, o: [m.LinearLR(o, 0.1, 1.0, 5),
                                                             m.ExponentialLR(o, 0.97)]),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True), lambda m, o: [m.StepLR(o, 4, 0.5)]),
    ("SGD", dict(lr=0.02, momentum=0.9, nesterov=True),
     lambda m, o: [m.LambdaLR(o, lambda e: 1 / (1 + 0.1 * e))]),
])
def test_scheduled_training_matches_torch(name, kw, sched):
    pair = Pair()
    opt = getattr(optim, name)(pair.ours, **kw)
    topt = getattr(torch.optim, name)(pair.theirs, **kw)
    ours, theirs = sched(lr_scheduler, opt), sched(torch.optim.lr_scheduler, topt)
    for step in range(30):
        pair.step(opt, topt)
        for s in (*ours, *theirs):
            s.step()
        pair.assert_close(opt, topt, f"{name} step {step + 1}", F64)
        np.testing.assert_allclose(ours[-1].get_last_lr(), theirs[-1].get_last_lr(),
                                   rtol=1e-14)


def test_clip_grad_value_matches_torch():
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=(3, 4)) * 3, rng.normal(size=5)]
    ours = [mg.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, tp, g in zip(ours, theirs, grads):
        p.grad, tp.grad = g.copy(), torch.tensor(g)
    clip_grad_value_(ours, 1.5)
    torch.nn.utils.clip_grad_value_(theirs, 1.5)
    for p, tp in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad, tp.grad.numpy())
    assert any(np.any(np.abs(g) > 1.5) for g in grads)  # something was clipped
