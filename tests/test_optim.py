"""minigrad.optim: SGD and Adam against their formulas step for step (and against PyTorch where
it is installed), in-place updates, frozen parameters, checked hyperparameters, state_dict round
trips and what load_state_dict refuses."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn, optim
from minigrad.nn import functional as F  # noqa: N812  (PyTorch's spelling)

# A fixed quadratic: loss(w) = ½ wᵀAw − cᵀw + ¼ Σ w⁴, gradient Aw − c + w³ (not linear in w,
# so a wrong update shows up in later steps' gradients too).
_RNG = np.random.default_rng(0)
_M = _RNG.normal(size=(5, 5))
A = _M @ _M.T / 5 + np.eye(5)
C = _RNG.normal(size=5)
W0 = _RNG.normal(size=5)


def grad_ref(w: np.ndarray) -> np.ndarray:
    return A @ w - C + w ** 3


def loss_mg(w: mg.Tensor) -> mg.Tensor:
    return 0.5 * (w @ (A @ w)) - (C * w).sum() + 0.25 * (w ** 4).sum()


def run(opt_factory, steps: int, w0: np.ndarray = W0, dtype=np.float64) -> list[np.ndarray]:
    """Parameters after each of `steps` steps of the optimizer, gradients from backward()."""
    w = mg.tensor(w0.astype(dtype), requires_grad=True)
    opt = opt_factory([w])
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss_mg(w).backward()
        opt.step()
        out.append(w.data.copy())
    return out


# --- the textbook formulas, written independently of optim.py -----------------------------------
def sgd_ref(steps, lr, momentum=0.0, weight_decay=0.0, dampening=0.0, nesterov=False):
    w, buf, out = W0.copy(), None, []
    for _ in range(steps):
        g = grad_ref(w) + weight_decay * w
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        w = w - lr * g
        out.append(w)
    return out


def adam_ref(steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    b1, b2 = betas
    w, m, v, out = W0.copy(), np.zeros(5), np.zeros(5), []
    for t in range(1, steps + 1):
        g = grad_ref(w) + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(w)
    return out


SGD_CASES = [
    dict(lr=0.05),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, weight_decay=0.1),
    dict(lr=0.02, momentum=0.8, weight_decay=0.05, dampening=0.3),
    dict(lr=0.02, momentum=0.9, nesterov=True),
]
ADAM_CASES = [
    dict(),
    dict(lr=0.05),
    dict(lr=0.05, weight_decay=0.1),
    dict(lr=0.1, betas=(0.5, 0.9), eps=1e-3),
]


@pytest.mark.parametrize("kw", SGD_CASES)
def test_sgd_matches_the_formula_step_for_step(kw):
    ours = run(lambda ps: optim.SGD(ps, **kw), 8)
    for step, (a, b) in enumerate(zip(ours, sgd_ref(8, **kw))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("kw", ADAM_CASES)
def test_adam_matches_the_formula_step_for_step(kw):
    ours = run(lambda ps: optim.Adam(ps, **kw), 8)
    for step, (a, b) in enumerate(zip(ours, adam_ref(8, **kw))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=f"step {step + 1}")


def test_first_adam_step_moves_each_weight_by_lr():
    # m̂ = g and v̂ = g² on step 1, so every weight moves by lr·sign(g) (ε aside)
    w = mg.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w.grad = np.array([0.5, -40.0, 1e-3])
    optim.Adam([w], lr=0.1).step()
    np.testing.assert_allclose(w.data, [0.9, -1.9, 2.9], rtol=1e-5)


@pytest.mark.parametrize("factory", [lambda ps: optim.Adam(ps, lr=0.05, weight_decay=0.01),
                                     lambda ps: optim.SGD(ps, 0.05, momentum=0.9,
                                                          weight_decay=0.01)])
def test_float32_parameters_stay_float32(factory):
    ours = run(factory, 5, dtype=np.float32)
    ref = run(factory, 5, dtype=np.float64)
    assert all(w.dtype == np.float32 for w in ours)
    np.testing.assert_allclose(ours[-1], ref[-1], rtol=1e-4, atol=1e-5)
    w = mg.tensor(W0.astype(np.float32), requires_grad=True)
    opt = factory([w])
    loss_mg(w).backward()
    opt.step()
    assert all(v.dtype == np.float32 for v in opt.state[w].values() if isinstance(v, np.ndarray))


def test_step_updates_in_place_and_skips_params_without_grad():
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    b = mg.tensor([3.0], requires_grad=True)
    arr = a.data
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = np.array([1.0, -1.0])
    opt.step()
    assert a.data is arr  # the same array, changed in place
    np.testing.assert_allclose(a.data, [0.9, 2.1], rtol=1e-6)
    np.testing.assert_array_equal(b.data, [3.0])
    assert b not in opt.state and opt.state[a]["step"] == 1
    b.grad = np.array([2.0])
    opt.step()
    assert opt.state[a]["step"] == 2 and opt.state[b]["step"] == 1  # counted per parameter


def test_zero_grad():
    w = mg.tensor([1.0], requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    w.grad = np.array([2.0])
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(w.grad, [0.0])
    opt.zero_grad()
    assert w.grad is None


# --- in place, and frozen parameters -------------------------------------------------------------
def test_step_refuses_a_read_only_parameter_array_and_changes_nothing():
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    frozen_array = np.ones(2)
    frozen_array.setflags(write=False)
    b = mg.Tensor(frozen_array, requires_grad=True)
    if b.data.flags.writeable:
        pytest.skip("this engine gives a Tensor made from a read-only array a writeable copy")
    opt = optim.SGD([a, b], lr=0.1)
    a.grad, b.grad = np.ones(2), np.ones(2)
    with pytest.raises(RuntimeError, match=r"read-only.*np.array\(p.data\).*Nothing was changed"):
        opt.step()
    np.testing.assert_array_equal(a.data, [1.0, 2.0])


def _engine_locks_a_graph_s_leaves() -> bool:
    w = mg.tensor([1.0], requires_grad=True)
    out = w * w
    locked = not w.data.flags.writeable
    del out
    return locked


@pytest.mark.skipif(_engine_locks_a_graph_s_leaves(),
                    reason="this engine makes a live graph's leaves read-only")
def test_step_updates_parameters_a_live_graph_still_holds():
    lin = nn.Linear(3, 1, rng=0)
    w0 = lin.weight.data.copy()
    x = np.arange(6.0).reshape(2, 3)
    loss = (lin(x) ** 2).sum()
    loss.backward(retain_graph=True)
    first = lin.weight.grad.copy()
    optim.SGD(lin.parameters(), lr=0.1).step()  # in place, while the graph is alive
    np.testing.assert_allclose(lin.weight.data, w0 - 0.1 * first, rtol=1e-15)
    lin.zero_grad()
    loss.backward()  # still the gradient at the values the forward pass used
    np.testing.assert_array_equal(lin.weight.grad, first)


def test_frozen_parameters_are_skipped_and_trained_once_unfrozen():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), rng.integers(0, 2, size=8)
    for make in (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps)):
        net = nn.Sequential(nn.Linear(3, 4, rng=0), nn.ReLU(), nn.Linear(4, 2, rng=1))
        net[0].requires_grad_(False)
        opt = make(net.parameters())  # built while the first layer is frozen: it is included
        assert [len(g["params"]) for g in opt.param_groups] == [4]
        frozen, head = net[0].weight.data.copy(), net[2].weight.data.copy()
        _train(net, opt, x, y, 2)
        net[0].weight.grad = np.ones((4, 3))  # a stale gradient does not move it either
        opt.step()
        np.testing.assert_array_equal(net[0].weight.data, frozen)
        assert not np.array_equal(net[2].weight.data, head)
        assert net[0].weight not in opt.state
        net[0].requires_grad_(True)
        _train(net, opt, x, y, 2)
        assert not np.array_equal(net[0].weight.data, frozen)


# --- state_dict / load_state_dict ---------------------------------------------------------------
def _train(net, opt, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize("make", [
    lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
])
def test_resuming_from_a_checkpoint_continues_exactly(make, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)), rng.integers(0, 3, size=16)

    def fresh(seed):
        return nn.Sequential(nn.Linear(4, 8, rng=seed), nn.ReLU(), nn.Linear(8, 3, rng=seed))

    net = fresh(0)
    opt = make(net.parameters())
    _train(net, opt, x, y, 3)
    mg.save({"model": net.state_dict(), "optim": opt.state_dict(), "epoch": 3},
            tmp_path / "ck.npz")
    _train(net, opt, x, y, 3)

    ck = mg.load(tmp_path / "ck.npz")
    net2 = fresh(1)
    opt2 = make(net2.parameters())
    net2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["optim"])
    assert ck["epoch"] == 3
    _train(net2, opt2, x, y, 3)
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_optimizer_state_dict_layout_and_copies():
    w = mg.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.Adam([w], lr=0.1, betas=(0.8, 0.9))
    w.grad = np.array([1.0, 1.0])
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"] == [{"lr": 0.1, "betas": (0.8, 0.9), "eps": 1e-8,
                                   "weight_decay": 0.0, "params": [0]}]
    assert set(sd["state"]) == {0} and sd["state"][0]["step"] == 1
    m = sd["state"][0]["exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], m)  # a snapshot, not a view


def test_load_state_dict_restores_hyperparameters_and_accepts_string_keys():
    w = mg.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.Adam([w], lr=0.1)
    w.grad = np.array([1.0, 1.0])
    opt.step()
    sd = opt.state_dict()
    sd["state"] = {str(k): v for k, v in sd["state"].items()}  # as a JSON-ish tool would
    sd["param_groups"][0]["betas"] = [0.5, 0.6]
    sd["param_groups"][0]["lr"] = 0.3
    opt2 = optim.Adam([mg.tensor([1.0, 2.0], requires_grad=True)])
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.3 and opt2.param_groups[0]["betas"] == (0.5, 0.6)
    (state,) = opt2.state.values()
    assert state["step"] == 1 and state["exp_avg"].dtype == np.float64


def test_load_state_dict_rejects_what_does_not_fit():
    a = mg.tensor(np.zeros(2), requires_grad=True)
    b = mg.tensor(np.zeros(3), requires_grad=True)
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9)
    a.grad, b.grad = np.ones(2), np.ones(3)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match=r"param_groups\[0\] lists 2 parameters, this "
                                         r"optimizer's group 0 has 1$"):
        optim.SGD([a], lr=0.1, momentum=0.9).load_state_dict(sd)
    swapped = optim.SGD([b, a], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"state\[0\]\['momentum_buffer'\]: must be an array of "
                                         r"the parameter's shape \(3,\), got shape \(2,\)"):
        swapped.load_state_dict(sd)
    assert not swapped.state
    with pytest.raises(ValueError, match=r"has 1 parameter group\(s\), this optimizer 2"):
        optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1).load_state_dict(sd)
    for bad in ({"weights": 1}, {"state": {}, "param_groups": [1]}, [sd]):
        with pytest.raises(ValueError, match="'state' .* and 'param_groups'"):
            opt.load_state_dict(bad)  # type: ignore[arg-type]


def _adam_checkpoint() -> tuple[mg.Tensor, optim.Adam, dict]:
    p = mg.tensor(np.ones(3), requires_grad=True)
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.ones(3)
    opt.step()
    return p, opt, opt.state_dict()


BAD_ADAM_STATE = [  # (where, key, value, what the message says)
    ("group", "lr", "fast", r"param_groups\[0\]: lr must be a real number, got str 'fast'"),
    ("group", "lr", -1.0, r"param_groups\[0\]: lr must be a finite number >= 0, got -1.0"),
    ("group", "lr", float("nan"), r"lr must be a finite number >= 0, got nan"),
    ("group", "eps", None, r"eps must be a real number, got NoneType None"),
    ("group", "betas", [0.9], r"betas must be a pair of real numbers, got list \[0.9\]"),
    ("group", "betas", (0.9, 1.5), r"betas must lie in \[0, 1\), got \(0.9, 1.5\)"),
    ("group", "amsgrad", True, r"param_groups\[0\]\['amsgrad'\]: not a hyperparameter of Adam"),
    ("state", "exp_avg", 0.0, r"state\[0\]\['exp_avg'\]: must be an array of the parameter's "
                              r"shape \(3,\), got shape \(\)"),
    ("state", "exp_avg", np.full(3, "x"), r"\['exp_avg'\]: must be an array of real numbers"),
    ("state", "exp_avg_sq", np.zeros((3, 1)), r"\['exp_avg_sq'\]: .*got shape \(3, 1\)"),
    ("state", "step", 1.5, r"state\[0\]\['step'\]: must be a whole number >= 0, got float 1.5"),
    ("state", "step", "1", r"\['step'\]: must be a whole number >= 0, got str '1'"),
    ("state", "momentum_buffer", np.zeros(3),
     r"state\[0\] has the keys \['exp_avg', 'exp_avg_sq', 'momentum_buffer', 'step'\]"),
]


@pytest.mark.parametrize("where,key,value,message", BAD_ADAM_STATE, ids=[
    f"{key}={type(value).__name__ if isinstance(value, np.ndarray) else repr(value)}"
    for _, key, value, _ in BAD_ADAM_STATE])
def test_load_state_dict_checks_every_value_and_changes_nothing(where, key, value, message):
    p, opt, good = _adam_checkpoint()
    bad = copy.deepcopy(good)
    (bad["param_groups"][0] if where == "group" else bad["state"][0])[key] = value
    fresh = optim.Adam([mg.tensor(np.ones(3), requires_grad=True)], lr=0.5)
    with pytest.raises(ValueError, match=message):
        fresh.load_state_dict(bad)
    assert fresh.param_groups[0]["lr"] == 0.5 and not fresh.state  # unchanged
    fresh.load_state_dict(good)  # and the good one still loads
    assert fresh.param_groups[0]["lr"] == 0.1 and fresh.state


def test_load_state_dict_reports_every_problem_at_once():
    p, opt, sd = _adam_checkpoint()
    sd["param_groups"][0]["lr"] = "fast"
    sd["param_groups"][0]["betas"] = [0.9]
    sd["state"][0]["exp_avg"] = 0.0
    sd["state"][7] = {}
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(sd)
    for needle in ("['exp_avg']", "state[7]: no parameter group lists", "lr must", "betas must"):
        assert needle in str(info.value)


def test_load_state_dict_of_sgd_checks_its_rules():
    w = mg.tensor(np.ones(2), requires_grad=True)
    sd = optim.SGD([w], lr=0.1, momentum=0.9).state_dict()
    sd["param_groups"][0]["momentum"] = 0.0
    sd["param_groups"][0]["nesterov"] = True
    opt = optim.SGD([w], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: nesterov needs momentum > 0"):
        opt.load_state_dict(sd)
    sd["param_groups"][0]["nesterov"] = "yes"
    with pytest.raises(ValueError, match=r"nesterov must be a bool, got str 'yes'"):
        opt.load_state_dict(sd)
    sd = optim.SGD([w], lr=0.1, momentum=0.9).state_dict()
    sd["state"] = {"0": {"momentum_buffer": None}}  # what torch saves before the first step
    opt.load_state_dict(sd)
    assert opt.state[w] == {"momentum_buffer": None}


# --- construction -------------------------------------------------------------------------------
def test_parameter_groups_have_their_own_hyperparameters():
    a = mg.tensor([1.0], requires_grad=True)
    b = mg.tensor([1.0], requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": b, "lr": 0.5}], lr=0.1)
    a.grad, b.grad = np.array([1.0]), np.array([1.0])
    opt.step()
    np.testing.assert_allclose([a.item(), b.item()], [0.9, 0.5])
    opt.param_groups[0]["lr"] = 0.2  # a schedule changes the group's value
    opt.step()
    np.testing.assert_allclose(a.item(), 0.7)


def test_constructor_checks():
    w = mg.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="SGD: lr must be a finite number >= 0, got -1.0"):
        optim.SGD([w], lr=-1.0)
    with pytest.raises(TypeError, match="SGD: lr must be a real number, got str 'a'"):
        optim.SGD([w], lr="a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Adam: lr must be a real number, got bool True"):
        optim.Adam([w], lr=True)
    with pytest.raises(ValueError, match="betas must lie in"):
        optim.Adam([w], betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="betas must be a pair"):
        optim.Adam([w], betas=0.9)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Adam: weight_decay must be a real number"):
        optim.Adam([{"params": [w], "weight_decay": "0.1"}])
    with pytest.raises(ValueError, match="not a leaf"):
        optim.SGD([w * 2], lr=0.1)
    with pytest.raises(ValueError, match="appears twice"):
        optim.SGD([w, w], lr=0.1)
    with pytest.raises(TypeError, match="not a Tensor"):
        optim.SGD([np.zeros(2)], lr=0.1)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([{"params": [w], "dampening": 0.5}], lr=0.1, momentum=0.9, nesterov=True)
    assert optim.SGD([mg.tensor([1.0])], lr=0.1).param_groups  # frozen parameters are accepted
    opt = optim.Adam([w], lr=np.float32(0.5), betas=np.array([0.5, 0.75]))  # type: ignore[arg-type]
    assert type(opt.param_groups[0]["lr"]) is float and opt.param_groups[0]["betas"] == (0.5, 0.75)
    assert "Adam" in repr(optim.Adam([w])) and "lr=0.001" in repr(optim.Adam([w]))


def test_step_with_closure_returns_the_loss():
    w = mg.tensor(W0.copy(), requires_grad=True)
    opt = optim.SGD([w], lr=0.01)

    def closure():
        opt.zero_grad()
        loss = loss_mg(w)
        loss.backward()
        return loss

    with mg.no_grad():  # the closure records anyway
        loss = opt.step(closure)
    np.testing.assert_allclose(w.data, sgd_ref(1, lr=0.01)[0], rtol=1e-12)
    assert loss.item() == pytest.approx(loss_mg(mg.tensor(W0)).item())


# --- PyTorch, where installed -----------------------------------------------------------------
def _torch_run(torch, cls, kw, steps, dtype):
    w = torch.tensor(W0.astype(dtype), requires_grad=True)
    a, c = torch.tensor(A.astype(dtype)), torch.tensor(C.astype(dtype))
    opt = cls([w], **kw)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (w @ (a @ w)) - (c * w).sum() + 0.25 * (w ** 4).sum()).backward()
        opt.step()
        out.append(w.detach().numpy().copy())
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kw", [("SGD", kw) for kw in SGD_CASES]
                         + [("Adam", kw) for kw in ADAM_CASES])
def test_matches_torch_step_for_step(name, kw, dtype):
    torch = pytest.importorskip("torch")
    ours = run(lambda ps: getattr(optim, name)(ps, **kw), 10, dtype=dtype)
    theirs = _torch_run(torch, getattr(torch.optim, name), kw, 10, dtype)
    tol = dict(rtol=1e-11, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, **tol, err_msg=f"{name} {kw} step {step + 1}")


def test_state_dict_layout_matches_torch():
    torch = pytest.importorskip("torch")
    w = mg.tensor(W0.copy(), requires_grad=True)
    tw = torch.tensor(W0.copy(), requires_grad=True)
    for ours, theirs in ((optim.Adam([w]), torch.optim.Adam([tw])),
                         (optim.SGD([w], lr=0.1, momentum=0.9),
                          torch.optim.SGD([tw], lr=0.1, momentum=0.9))):
        w.grad, tw.grad = np.ones(5), torch.ones(5, dtype=torch.float64)
        ours.step()
        theirs.step()
        a, b = ours.state_dict(), theirs.state_dict()
        assert set(a["state"][0]) == set(b["state"][0])
        assert set(a["param_groups"][0]) <= set(b["param_groups"][0])
        assert a["param_groups"][0]["params"] == b["param_groups"][0]["params"]
