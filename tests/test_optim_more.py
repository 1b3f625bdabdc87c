"""minigrad.optim's AdamW and RMSprop against their formulas step for step, the lr_scheduler
schedules against their closed forms, last_epoch and state_dict semantics, what constructors and
load_state_dict refuse, and nn.utils.clip_grad_value_. No PyTorch here: test_optim_torch.py
compares with it."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn, optim
from minigrad.nn import functional as F  # noqa: N812  (PyTorch's spelling)
from minigrad.nn.utils import clip_grad_value_
from minigrad.optim import lr_scheduler

# loss(w) = ½ wᵀAw − cᵀw + ¼ Σ w⁴, gradient Aw − c + w³: not linear in w, so a wrong update
# shows up in the later steps' gradients too.
_RNG = np.random.default_rng(1)
_M = _RNG.normal(size=(4, 4))
A = _M @ _M.T / 4 + np.eye(4)
C = _RNG.normal(size=4)
W0 = _RNG.normal(size=4)


def grad_ref(w: np.ndarray) -> np.ndarray:
    return A @ w - C + w ** 3


def loss_mg(w: mg.Tensor) -> mg.Tensor:
    return 0.5 * (w @ (A @ w)) - (C * w).sum() + 0.25 * (w ** 4).sum()


def run(opt_factory, steps: int, dtype=np.float64) -> tuple[list[np.ndarray], mg.Tensor, object]:
    """Parameters after each step, gradients from backward(); also the parameter and optimizer."""
    w = mg.tensor(W0.astype(dtype), requires_grad=True)
    opt = opt_factory([w])
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss_mg(w).backward()
        opt.step()
        out.append(w.data.copy())
    return out, w, opt


# --- the textbook formulas, written independently of minigrad.optim ------------------------------
def adamw_ref(steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    w, m, v, out = W0.copy(), np.zeros(4), np.zeros(4), []
    for t in range(1, steps + 1):
        g = grad_ref(w)
        w = w * (1 - lr * weight_decay)  # decoupled: never part of g
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        out.append(w)
    return out


def rmsprop_ref(steps, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False):
    w, v, mean, buf, out = W0.copy(), np.zeros(4), np.zeros(4), np.zeros(4), []
    for _ in range(steps):
        g = grad_ref(w) + weight_decay * w
        v = alpha * v + (1 - alpha) * g * g
        mean = alpha * mean + (1 - alpha) * g
        denom = np.sqrt(v - mean * mean if centered else v) + eps
        if momentum:
            buf = momentum * buf + g / denom
            w = w - lr * buf
        else:
            w = w - lr * g / denom
        out.append(w)
    return out


ADAMW_CASES = [dict(), dict(lr=0.05), dict(lr=0.02, weight_decay=0.3),
               dict(lr=0.01, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.0)]
RMSPROP_CASES = [dict(), dict(lr=0.003, alpha=0.9), dict(momentum=0.9), dict(centered=True),
                 dict(lr=0.005, alpha=0.8, eps=1e-4, weight_decay=0.1, momentum=0.5,
                      centered=True)]


@pytest.mark.parametrize("kw", ADAMW_CASES)
def test_adamw_matches_the_formula_step_for_step(kw):
    ours, _, _ = run(lambda ps: optim.AdamW(ps, **kw), 12)
    for step, (a, b) in enumerate(zip(ours, adamw_ref(12, **kw))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=f"{kw} step {step + 1}")


@pytest.mark.parametrize("kw", RMSPROP_CASES)
def test_rmsprop_matches_the_formula_step_for_step(kw):
    ours, _, _ = run(lambda ps: optim.RMSprop(ps, **kw), 12)
    for step, (a, b) in enumerate(zip(ours, rmsprop_ref(12, **kw))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=f"{kw} step {step + 1}")


def test_adamw_decays_the_weights_apart_from_the_moments():
    adamw, _, _ = run(lambda ps: optim.AdamW(ps, lr=0.05, weight_decay=0.5), 5)
    adam_l2, _, _ = run(lambda ps: optim.Adam(ps, lr=0.05, weight_decay=0.5), 5)
    assert not np.allclose(adamw[-1], adam_l2[-1])  # L2 in the gradient is another method
    no_decay, _, _ = run(lambda ps: optim.AdamW(ps, lr=0.05, weight_decay=0.0), 5)
    adam, _, _ = run(lambda ps: optim.Adam(ps, lr=0.05), 5)
    np.testing.assert_array_equal(no_decay[-1], adam[-1])


def test_defaults_are_pytorchs():
    w = mg.tensor([1.0], requires_grad=True)
    assert {k: v for k, v in optim.AdamW([w]).param_groups[0].items() if k != "params"} == {
        "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}
    assert {k: v for k, v in optim.RMSprop([w]).param_groups[0].items() if k != "params"} == {
        "lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
        "centered": False}


@pytest.mark.parametrize("make", [lambda ps: optim.AdamW(ps, lr=0.01),
                                  lambda ps: optim.RMSprop(ps, momentum=0.9, centered=True)])
def test_float32_parameters_and_state_stay_float32(make):
    _, w, opt = run(make, 3, dtype=np.float32)
    assert w.data.dtype == np.float32
    assert all(v.dtype == np.float32 for v in opt.state[w].values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("kw,keys", [
    (dict(), {"step", "square_avg"}),
    (dict(momentum=0.9), {"step", "square_avg", "momentum_buffer"}),
    (dict(centered=True), {"step", "square_avg", "grad_avg"}),
    (dict(momentum=0.5, centered=True), {"step", "square_avg", "momentum_buffer", "grad_avg"}),
])
def test_rmsprop_keeps_the_state_its_hyperparameters_need(kw, keys):
    _, w, opt = run(lambda ps: optim.RMSprop(ps, **kw), 2)
    assert set(opt.state[w]) == keys and opt.state[w]["step"] == 2


def test_rmsprop_momentum_switched_on_between_steps_starts_from_zero():
    _, w, opt = run(lambda ps: optim.RMSprop(ps, lr=0.01), 1)
    opt.param_groups[0]["momentum"] = 0.9  # what a momentum schedule does
    before = w.data.copy()
    w.grad = grad_ref(w.data)
    g = w.grad.copy()
    v = opt.state[w]["square_avg"] * 0.99 + 0.01 * g * g
    opt.step()
    np.testing.assert_allclose(w.data, before - 0.01 * g / (np.sqrt(v) + 1e-8), rtol=1e-13)


def test_frozen_parameters_are_skipped_and_trained_once_unfrozen():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), rng.integers(0, 2, size=8)
    for make in (lambda ps: optim.AdamW(ps, lr=0.01),
                 lambda ps: optim.RMSprop(ps, momentum=0.9, centered=True)):
        net = nn.Sequential(nn.Linear(3, 4, rng=0), nn.ReLU(), nn.Linear(4, 2, rng=1))
        net[0].requires_grad_(False)
        opt = make(net.parameters())
        frozen, head = net[0].weight.data.copy(), net[2].weight.data.copy()
        _train(net, opt, x, y, 2)
        net[0].weight.grad = np.ones((4, 3))  # a stale gradient moves it neither (nor decays it)
        opt.step()
        np.testing.assert_array_equal(net[0].weight.data, frozen)
        assert not np.array_equal(net[2].weight.data, head)
        assert net[0].weight not in opt.state
        net[0].requires_grad_(True)
        _train(net, opt, x, y, 2)
        assert not np.array_equal(net[0].weight.data, frozen)
        assert net[0].weight in opt.state


def _train(net, opt, x, y, steps, sched=None):
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


# --- constructor checks --------------------------------------------------------------------------
@pytest.mark.parametrize("make,error,message", [
    (lambda w: optim.AdamW([w], lr=-0.1), ValueError,
     r"AdamW: lr must be a finite number >= 0, got -0.1"),
    (lambda w: optim.AdamW([w], weight_decay="0.1"), TypeError,
     r"AdamW: weight_decay must be a real number, got str '0.1'"),
    (lambda w: optim.AdamW([w], betas=(0.9, 1.0)), ValueError, r"AdamW: betas must lie in"),
    (lambda w: optim.AdamW([w], eps=math.inf), ValueError, r"eps must be a finite number"),
    (lambda w: optim.RMSprop([w], alpha=1.0), ValueError,
     r"RMSprop: alpha must lie in \[0, 1\), got 1.0"),
    (lambda w: optim.RMSprop([w], alpha=None), TypeError,
     r"RMSprop: alpha must be a real number, got NoneType None"),
    (lambda w: optim.RMSprop([w], momentum=-0.5), ValueError,
     r"RMSprop: momentum must be a finite number >= 0, got -0.5"),
    (lambda w: optim.RMSprop([w], centered=1), TypeError,
     r"RMSprop: centered must be a bool, got int 1"),
    (lambda w: optim.RMSprop([w], lr=float("nan")), ValueError, r"lr must be a finite number"),
    (lambda w: optim.RMSprop([{"params": [w], "weight_decay": -1}]), ValueError,
     r"RMSprop: weight_decay must be a finite number >= 0, got -1"),
])
def test_constructors_check_every_hyperparameter(make, error, message):
    with pytest.raises(error, match=message):
        make(mg.tensor([1.0], requires_grad=True))


# --- optimizer state_dict ------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.1),
    lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.9, centered=True, weight_decay=1e-3),
    lambda ps: optim.RMSprop(ps, lr=0.01),
])
def test_resuming_from_a_checkpoint_continues_exactly(make, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)), rng.integers(0, 3, size=16)

    def fresh(seed):
        net = nn.Sequential(nn.Linear(4, 8, rng=seed), nn.ReLU(), nn.Linear(8, 3, rng=seed))
        opt = make(net.parameters())
        return net, opt, lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    net, opt, sched = fresh(0)
    _train(net, opt, x, y, 3, sched)
    mg.save({"model": net.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict()},
            tmp_path / "ck.npz")
    _train(net, opt, x, y, 3, sched)

    ck = mg.load(tmp_path / "ck.npz")
    net2, opt2, sched2 = fresh(1)
    net2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["optim"])
    sched2.load_state_dict(ck["sched"])
    _train(net2, opt2, x, y, 3, sched2)
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert sched2.get_last_lr() == sched.get_last_lr() and sched2.last_epoch == 6
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def _checkpoint(opt_class, **kw):
    p = mg.tensor(np.ones(3), requires_grad=True)
    opt = opt_class([p], **kw)
    p.grad = np.ones(3)
    opt.step()
    return opt.state_dict()


BAD_RMSPROP = [  # (where, key, value, what the message says)
    ("group", "alpha", 1.5, r"param_groups\[0\]: alpha must lie in \[0, 1\), got 1.5"),
    ("group", "centered", "no", r"param_groups\[0\]: centered must be a bool, got str 'no'"),
    ("group", "betas", (0.9, 0.99), r"\['betas'\]: not a hyperparameter of RMSprop"),
    ("group", "momentum", 0.0, None),  # fine: the saved buffer may stay
    ("group", "centered", True, r"state\[0\] has the keys \['momentum_buffer', 'square_avg', "
                                r"'step'\]; RMSprop keeps \['grad_avg', 'momentum_buffer', "
                                r"'square_avg', 'step'\]$"),
    ("state", "momentum_buffer", None, r"state\[0\] has the keys \['square_avg', 'step'\]; "
                                       r"RMSprop keeps \['momentum_buffer', 'square_avg', "
                                       r"'step'\] \(and may keep \['grad_avg'\]\)"),
    ("state", "square_avg", np.zeros(2), r"state\[0\]\['square_avg'\]: must be an array of the "
                                         r"parameter's shape \(3,\), got shape \(2,\)"),
    ("state", "exp_avg", np.zeros(3), r"state\[0\] has the keys \['exp_avg', "),
    ("state", "step", -1, r"state\[0\]\['step'\]: must be a whole number >= 0, got int -1"),
]


@pytest.mark.parametrize("where,key,value,message", BAD_RMSPROP, ids=[
    f"{w}-{k}={type(v).__name__}" for w, k, v, _ in BAD_RMSPROP])
def test_rmsprop_load_state_dict_checks_everything_and_changes_nothing(where, key, value,
                                                                       message):
    good = _checkpoint(optim.RMSprop, lr=0.1, momentum=0.9)
    bad = copy.deepcopy(good)
    if where == "group":
        bad["param_groups"][0][key] = value
    elif value is None:
        del bad["state"][0][key]
    else:
        bad["state"][0][key] = value
    fresh = optim.RMSprop([mg.tensor(np.ones(3), requires_grad=True)], lr=0.5, momentum=0.9)
    if message is None:
        fresh.load_state_dict(bad)
        assert fresh.param_groups[0][key] == value and "momentum_buffer" in fresh.state[
            fresh.param_groups[0]["params"][0]]
        return
    with pytest.raises(ValueError, match=message):
        fresh.load_state_dict(bad)
    assert fresh.param_groups[0]["lr"] == 0.5 and not fresh.state  # unchanged
    fresh.load_state_dict(good)
    assert fresh.param_groups[0]["lr"] == 0.1 and fresh.state


def test_rmsprop_load_state_dict_switching_centered_on_with_its_state():
    good = _checkpoint(optim.RMSprop, centered=True)
    opt = optim.RMSprop([mg.tensor(np.ones(3), requires_grad=True)])  # not centered
    opt.load_state_dict(good)
    assert opt.param_groups[0]["centered"] is True
    assert set(next(iter(opt.state.values()))) == {"step", "square_avg", "grad_avg"}


def test_adamw_load_state_dict_round_trip_and_checks():
    sd = _checkpoint(optim.AdamW, lr=0.1, weight_decay=0.05)
    assert sd["param_groups"][0]["weight_decay"] == 0.05
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    opt = optim.AdamW([mg.tensor(np.ones(3), requires_grad=True)])
    opt.load_state_dict(copy.deepcopy(sd))
    assert opt.state_dict()["param_groups"] == sd["param_groups"]
    for k in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(opt.state_dict()["state"][0][k], sd["state"][0][k])
    sd["param_groups"][0]["weight_decay"] = -0.05
    with pytest.raises(ValueError, match=r"param_groups\[0\]: weight_decay must be a finite "):
        opt.load_state_dict(sd)


# --- schedules: closed forms over 30 epochs, two groups ------------------------------------------
def _two_groups(lrs=(0.1, 0.03)):
    a = mg.tensor(np.zeros(2), requires_grad=True)
    b = mg.tensor(np.zeros(3), requires_grad=True)
    return optim.SGD([{"params": [a], "lr": lrs[0]}, {"params": [b], "lr": lrs[1]}], lr=1.0)


def _sequence(sched, epochs=30):
    """[(epoch, lrs of the groups, what get_last_lr says)] from construction on."""
    out = [(sched.last_epoch, [g["lr"] for g in sched.optimizer.param_groups],
            sched.get_last_lr())]
    for _ in range(epochs):
        sched.optimizer.step()
        sched.step()
        out.append((sched.last_epoch, [g["lr"] for g in sched.optimizer.param_groups],
                    sched.get_last_lr()))
    return out


def _linear_factor(e, s, f, n):
    return s + (f - s) * min(e, n) / n


SCHEDULES = [  # (make, closed form of lr(epoch, initial_lr))
    (lambda o: lr_scheduler.StepLR(o, step_size=3), lambda e, b: b * 0.1 ** (e // 3)),
    (lambda o: lr_scheduler.StepLR(o, 4, gamma=0.7), lambda e, b: b * 0.7 ** (e // 4)),
    (lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9), lambda e, b: b * 0.9 ** e),
    (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10),
     lambda e, b: b * (1 + math.cos(math.pi * e / 10)) / 2),
    (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.01),  # 2+ periods
     lambda e, b: 0.01 + (b - 0.01) * (1 + math.cos(math.pi * e / 7)) / 2),
    (lambda o: lr_scheduler.LinearLR(o), lambda e, b: b * _linear_factor(e, 1 / 3, 1.0, 5)),
    (lambda o: lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=12),
     lambda e, b: b * _linear_factor(e, 1.0, 0.1, 12)),
    (lambda o: lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e)), lambda e, b: b / (1 + e)),
]


@pytest.mark.parametrize("make,closed_form", SCHEDULES)
def test_schedules_follow_their_closed_forms(make, closed_form):
    opt = _two_groups()
    seq = _sequence(make(opt))
    for epoch, (e, lrs, last) in enumerate(seq):
        assert e == epoch and last == lrs
        assert all(type(lr) is float for lr in lrs)
        np.testing.assert_allclose(lrs, [closed_form(e, 0.1), closed_form(e, 0.03)],
                                   rtol=1e-12, atol=1e-15, err_msg=f"epoch {e}")
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.03]


def test_lambda_lr_takes_one_function_per_group():
    opt = _two_groups()
    sched = lr_scheduler.LambdaLR(opt, [lambda e: 0.5 ** e, lambda e: e + 1])
    for _ in range(3):
        sched.step()
    assert sched.get_last_lr() == [0.1 * 0.5 ** 3, 0.03 * 4]


def test_get_last_lr_is_a_copy():
    sched = lr_scheduler.ExponentialLR(_two_groups(), gamma=0.5)
    sched.get_last_lr()[0] = 99.0
    assert sched.get_last_lr() == [0.1, 0.03]


def test_the_scheduled_lr_drives_the_optimizer():
    w = mg.tensor(np.zeros(1), requires_grad=True)
    opt = optim.SGD([w], lr=0.5)
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(6):
        w.grad = np.ones(1)
        opt.step()
        sched.step()
    # lrs at epochs 0..5: 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, each moving w by −lr
    assert w.item() == pytest.approx(-(0.5 + 0.5 + 0.25 + 0.25 + 0.125 + 0.125))


def test_two_schedulers_on_one_optimizer_multiply():
    opt = _two_groups()
    warm = lr_scheduler.LinearLR(opt, start_factor=0.2, total_iters=4)
    decay = lr_scheduler.ExponentialLR(opt, gamma=0.8)
    assert decay.base_lrs == [0.1, 0.03]  # the first scheduler's initial_lr is kept
    for e in range(1, 12):
        warm.step()
        decay.step()
        np.testing.assert_allclose(
            decay.get_last_lr(), [b * _linear_factor(e, 0.2, 1.0, 4) * 0.8 ** e
                                  for b in (0.1, 0.03)], rtol=1e-12)


def test_resuming_with_last_epoch():
    opt = _two_groups()
    with pytest.raises(ValueError, match=r"StepLR: last_epoch=4 resumes a schedule, but "
                                         r"param_groups \[0, 1\] have no 'initial_lr'"):
        lr_scheduler.StepLR(opt, 2, last_epoch=4)
    assert "initial_lr" not in opt.param_groups[0]
    sched = lr_scheduler.LambdaLR(opt, lambda e: 0.9 ** e)
    for _ in range(4):
        sched.step()
    sd = opt.state_dict()
    assert [g["initial_lr"] for g in sd["param_groups"]] == [0.1, 0.03]
    opt2 = _two_groups((1.0, 1.0))
    opt2.load_state_dict(sd)  # carries initial_lr into a group no scheduler touched yet
    # as in PyTorch, the constructor still steps: from epoch 4 to epoch 5
    resumed = lr_scheduler.LambdaLR(opt2, lambda e: 0.9 ** e, last_epoch=4)
    assert resumed.last_epoch == 5
    np.testing.assert_allclose(resumed.get_last_lr(), [0.1 * 0.9 ** 5, 0.03 * 0.9 ** 5],
                               rtol=1e-15)


@pytest.mark.parametrize("make,error,message", [
    (lambda o: lr_scheduler.StepLR(o, step_size=0), ValueError,
     r"StepLR: step_size must be >= 1, got 0"),
    (lambda o: lr_scheduler.StepLR(o, step_size=2.5), ValueError,
     r"StepLR: step_size must be a whole number, got 2.5"),
    (lambda o: lr_scheduler.StepLR(o, step_size="2"), TypeError,
     r"StepLR: step_size must be a whole number, got str '2'"),
    (lambda o: lr_scheduler.StepLR(o, 2, gamma=-0.1), ValueError,
     r"StepLR: gamma must be a finite number >= 0, got -0.1"),
    (lambda o: lr_scheduler.ExponentialLR(o, gamma="0.9"), TypeError,
     r"ExponentialLR: gamma must be a real number, got str '0.9'"),
    (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=0), ValueError,
     r"CosineAnnealingLR: T_max must be >= 1, got 0"),
    (lambda o: lr_scheduler.CosineAnnealingLR(o, 10, eta_min=math.nan), ValueError,
     r"eta_min must be a finite number >= 0, got nan"),
    (lambda o: lr_scheduler.LinearLR(o, start_factor=0.0), ValueError,
     r"LinearLR: start_factor must lie in \(0, 1\], got 0.0"),
    (lambda o: lr_scheduler.LinearLR(o, end_factor=1.5), ValueError,
     r"LinearLR: end_factor must lie in \[0, 1\], got 1.5"),
    (lambda o: lr_scheduler.LinearLR(o, total_iters=True), TypeError,
     r"LinearLR: total_iters must be a whole number, got bool True"),
    (lambda o: lr_scheduler.LambdaLR(o, 0.5), TypeError,
     r"LambdaLR: lr_lambda\[0\] must be a function of the epoch, got float 0.5"),
    (lambda o: lr_scheduler.LambdaLR(o, [lambda e: 1.0]), ValueError,
     r"LambdaLR: got 1 lr_lambda functions for 2 parameter group\(s\)"),
    (lambda o: lr_scheduler.ExponentialLR(o, 0.9, last_epoch=-2), ValueError,
     r"ExponentialLR: last_epoch must be >= -1, got -2"),
    (lambda o: lr_scheduler.StepLR(o.param_groups, 2), TypeError,
     r"StepLR: expected a minigrad optimizer, got list"),
])
def test_scheduler_constructors_check_their_arguments(make, error, message):
    opt = _two_groups()
    with pytest.raises(error, match=message):
        make(opt)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.03]
    assert all("initial_lr" not in g for g in opt.param_groups)


def test_a_learning_rate_that_is_no_learning_rate_is_refused_and_nothing_changes():
    opt = _two_groups()
    sched = lr_scheduler.LambdaLR(opt, lambda e: 1.0 - 0.4 * e)
    sched.step()
    sched.step()
    with pytest.raises(ValueError, match=r"LambdaLR: the learning rate of param_groups\[0\] at "
                                         r"epoch 3 must be a finite number >= 0, got -0.02"):
        sched.step()
    assert sched.last_epoch == 2 and sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
    bad = lr_scheduler.LambdaLR(_two_groups(), lambda e: "fast" if e else 1.0)
    with pytest.raises(TypeError, match=r"lr_lambda\[0\]\(1\) returned str 'fast'"):
        bad.step()
    with pytest.raises(ValueError, match=r"at epoch 0 must be a finite number >= 0, got inf"):
        lr_scheduler.LambdaLR(_two_groups(), lambda e: math.inf)


def test_a_group_added_after_the_scheduler_is_refused():
    opt = _two_groups()
    sched = lr_scheduler.StepLR(opt, 2)
    opt.add_param_group({"params": [mg.tensor([1.0], requires_grad=True)]})
    with pytest.raises(ValueError, match=r"StepLR: the optimizer has 3 parameter group\(s\), "
                                         r"this scheduler was made for 2"):
        sched.step()


# --- scheduler state_dict ------------------------------------------------------------------------
class Warmup:
    """A callable object with state: LambdaLR saves its attributes, as PyTorch does."""

    def __init__(self, steps):
        self.steps = steps

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.steps)


@pytest.mark.parametrize("make", [s[0] for s in SCHEDULES]
                         + [lambda o: lr_scheduler.LambdaLR(o, [Warmup(5), Warmup(3)])])
def test_scheduler_state_dict_round_trip_continues_exactly(make, tmp_path):
    opt = _two_groups()
    sched = make(opt)
    for _ in range(7):
        sched.step()
    mg.save({"optim": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.npz")
    expected = _sequence(sched, 20)

    ck = mg.load(tmp_path / "s.npz")
    opt2 = _two_groups((0.5, 0.5))
    sched2 = make(opt2)
    opt2.load_state_dict(ck["optim"])
    sched2.load_state_dict(ck["sched"])
    assert sched2.state_dict() == ck["sched"]
    assert _sequence(sched2, 20) == expected


def test_lambda_lr_restores_a_callable_objects_attributes():
    opt = _two_groups()
    sched = lr_scheduler.LambdaLR(opt, [Warmup(5), lambda e: 1.0])
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [{"steps": 5}, None]
    sd["lr_lambdas"][0]["steps"] = 10
    sched2 = lr_scheduler.LambdaLR(_two_groups(), [Warmup(5), lambda e: 1.0])
    sched2.load_state_dict(sd)
    assert sched2.lr_lambdas[0].steps == 10
    swapped = lr_scheduler.LambdaLR(_two_groups(), [lambda e: 1.0, Warmup(5)])
    with pytest.raises(ValueError, match=r"lr_lambdas\[0\] holds a callable object's "
                                         r"attributes, but lr_lambda\[0\] is function"):
        swapped.load_state_dict(sd)
    assert swapped.lr_lambdas[1].steps == 5


def test_scheduler_state_dict_layout():
    sched = lr_scheduler.CosineAnnealingLR(_two_groups(), T_max=5, eta_min=0.001)
    sched.step()
    sd = sched.state_dict()
    assert sd.keys() == {"last_epoch", "base_lrs", "_last_lr", "T_max", "eta_min"}
    assert sd["last_epoch"] == 1 and sd["base_lrs"] == [0.1, 0.03]
    assert sd["_last_lr"] == sched.get_last_lr() and (sd["T_max"], sd["eta_min"]) == (5, 0.001)


def test_scheduler_load_state_dict_checks_everything_and_changes_nothing():
    sched = lr_scheduler.StepLR(_two_groups(), step_size=2)
    good = sched.state_dict()
    bad = {**good, "gamma": -1.0, "base_lrs": [0.1], "last_epoch": 1.5, "warmup": 3}
    del bad["step_size"]
    with pytest.raises(ValueError) as info:
        sched.load_state_dict(bad)
    message = str(info.value)
    for needle in ("StepLR.load_state_dict: the state dict does not fit",
                   "'step_size' is missing", "'warmup': not part of a StepLR's state",
                   "gamma must be a finite number >= 0, got -1.0",
                   "base_lrs must be a list of 2 learning rate(s), one per parameter group",
                   "last_epoch must be a whole number, got 1.5"):
        assert needle in message
    assert sched.state_dict() == good
    with pytest.raises(ValueError, match=r"_last_lr\[1\] must be a finite number >= 0"):
        sched.load_state_dict({**good, "_last_lr": [0.1, -1]})
    with pytest.raises(ValueError, match="expected a dict as made by state_dict"):
        sched.load_state_dict([good])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"lr_lambdas must be a list of 2 entries"):
        lr_scheduler.LambdaLR(_two_groups(), lambda e: 1.0).load_state_dict(
            {**good, "lr_lambdas": [None]})


# --- clip_grad_value_ ----------------------------------------------------------------------------
def test_clip_grad_value_clips_each_element_in_place():
    a = mg.tensor(np.zeros(5), requires_grad=True)
    b = mg.tensor(np.zeros((2, 2), dtype=np.float32), requires_grad=True)
    frozen = mg.tensor(np.zeros(2))
    a.grad = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    b.grad = np.array([[2.0, -2.0], [0.25, np.nan]], dtype=np.float32)
    ga = a.grad
    assert clip_grad_value_([a, b, frozen], 1.0) is None
    assert a.grad is ga  # in place
    np.testing.assert_array_equal(a.grad, [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert b.grad.dtype == np.float32
    np.testing.assert_array_equal(b.grad, np.array([[1.0, -1.0], [0.25, np.nan]], np.float32))
    clip_grad_value_(a, 0)  # a single Tensor; 0 zeroes the gradient
    np.testing.assert_array_equal(a.grad, np.zeros(5))
    assert frozen.grad is None


@pytest.mark.parametrize("value,error,message", [
    (-1.0, ValueError, r"clip_grad_value_: clip_value must be a finite number >= 0, got -1.0"),
    (math.nan, ValueError, r"clip_value must be a finite number >= 0, got nan"),
    ("1", TypeError, r"clip_grad_value_: clip_value must be a real number, got str '1'"),
    (True, TypeError, r"clip_value must be a real number, got bool True"),
])
def test_clip_grad_value_checks_its_value(value, error, message):
    a = mg.tensor(np.zeros(2), requires_grad=True)
    a.grad = np.array([5.0, -5.0])
    with pytest.raises(error, match=message):
        clip_grad_value_([a], value)
    np.testing.assert_array_equal(a.grad, [5.0, -5.0])
