"""The optimizers' flat step (a group's state in one buffer per kind and dtype, the gradients
gathered once, whole-buffer updates, each parameter's array changed in place) against the
per-parameter update (`_update`, what plain mode runs), bit for bit, step after step: SGD, Adam,
AdamW and RMSprop over many steps with frozen parameters, missing grads, two groups with their
own lr under a scheduler, float32 and float64 parameters in one group, and between steps arrays,
grads, state entries and step counts replaced, edited or deleted, state dicts reloaded, grads
that share memory with parameters. Then the guarantees around it: in place, a parameter the live
tape locked is refused with nothing changed, state entries stay the same views, a subclass that
overrides `_update` alone keeps it, copies step on their own."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from minigrad import kernels, nn, optim
from minigrad.optim import lr_scheduler, optimizers

CONFIGS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("SGD", dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, weight_decay=0.3)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.05)),
    ("RMSprop", dict(lr=0.005, alpha=0.9, centered=True)),
]
# Group 0 mixes dtypes and holds two parameters of one shape and dtype (B, E), so that a grad
# can be another parameter's array; group 1 holds a third (H) and a 0-d parameter.
SHAPES = [((3, 4), np.float64), ((4,), np.float64), ((2, 3), np.float32), ((5,), np.float32),
          ((4,), np.float64), ((), np.float64), ((2, 2, 2), np.float64), ((4,), np.float64)]
B, E, H = 1, 4, 7


@contextmanager
def flat_mode(on: bool) -> Iterator[None]:
    """The optimizers step flat (on) or parameter by parameter, as in plain mode."""
    before = kernels.ENABLED
    kernels.ENABLED = on
    try:
        yield
    finally:
        kernels.ENABLED = before


@contextmanager
def counting_flat_updates() -> Iterator[list[int]]:
    """A list that grows by one each time any optimizer's flat update runs."""
    calls: list[int] = []
    saved = {cls: cls.__dict__["_flat_update"]
             for cls in (optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop)}

    def spy(original: Any) -> Any:
        def run(self: Any, *args: Any) -> None:
            calls.append(1)
            original(self, *args)
        return run

    try:
        for cls, original in saved.items():
            cls._flat_update = spy(original)  # type: ignore[method-assign]
        yield calls
    finally:
        for cls, original in saved.items():
            cls._flat_update = original  # type: ignore[method-assign]


def snapshot(ps: list[mg.Tensor], opt: optim.Optimizer) -> Any:
    """Every parameter's bytes and every state entry's, in the state's own key order."""
    def exact(v: Any) -> Any:
        return (v.dtype.str, v.shape, v.tobytes()) if isinstance(v, np.ndarray) else v
    sd = opt.state_dict()
    return ([exact(p.data) for p in ps],
            {i: [(k, exact(v)) for k, v in s.items()] for i, s in sd["state"].items()},
            [g["lr"] for g in sd["param_groups"]])


def perturb(opt: optim.Optimizer, ps: list[mg.Tensor], rng: np.random.Generator) -> None:
    """What a user may do between steps, drawn at random (the same draws on either path)."""
    u = rng.random(8)
    if u[0] < 0.08:  # freeze or unfreeze one
        p = ps[rng.integers(len(ps))]
        p.requires_grad = not p.requires_grad
    if u[1] < 0.06:  # a new array of the same shape and dtype
        p = ps[rng.integers(len(ps))]
        p.data = p.data.copy()
    states = [opt.state[p] for p in ps if opt.state.get(p)]
    arrays = [(s, k) for s in states for k in sorted(s) if isinstance(s[k], np.ndarray)]
    if u[2] < 0.08 and arrays:  # a state entry replaced by a new array
        s, k = arrays[rng.integers(len(arrays))]
        s[k] = s[k] * 0.5
    if u[3] < 0.08 and arrays:  # a state entry changed in place
        s, k = arrays[rng.integers(len(arrays))]
        s[k] *= 0.75
    if u[4] < 0.05 and states and "step" in states[0]:  # a step count set back
        s = states[rng.integers(len(states))]
        s["step"] = max(1, s["step"] - 2)
    if u[5] < 0.05 and states:  # one parameter's state dropped: it starts afresh
        del opt.state[next(p for p in ps if opt.state.get(p) is states[0])]
    if u[6] < 0.05:
        opt.load_state_dict(opt.state_dict())
    if u[7] < 0.04:  # a NumPy scalar where the optimizer keeps Python floats
        opt.param_groups[0]["lr"] = np.float64(opt.param_groups[0]["lr"])
    if "betas" in opt.param_groups[0] and rng.random() < 0.08:
        # Adam keeps these as arrays of its buffers' dtype
        group = opt.param_groups[int(rng.integers(2))]
        group["betas"] = (float(rng.uniform(0.7, 0.95)), float(rng.uniform(0.9, 0.999)))
        group["eps"] = float(rng.choice([1e-8, 1e-5, 1e-3]))


def set_grads(ps: list[mg.Tensor], rng: np.random.Generator) -> None:
    """Each parameter's grad for this step: usually a fresh array of its dtype; sometimes None,
    of the other float dtype, a view into a larger array, or another parameter's array."""
    for p in ps:
        g = rng.normal(size=p.shape) + 0.3 * p.data
        u = rng.random()
        if u < 0.12:
            p.grad = None
        elif u < 0.17:
            p.grad = g.astype(np.float32 if p.dtype == np.float64 else np.float64)
        elif u < 0.22:
            holder = np.empty((2, *p.shape), p.dtype)
            holder[1] = g
            p.grad = holder[1]
        else:
            p.grad = g.astype(p.dtype)
    u = rng.random(2)
    if u[0] < 0.1 and ps[E].shape == ps[B].shape:
        ps[E].grad = ps[B].data  # read after B's update when stepped one by one
    if u[1] < 0.1 and ps[H].shape == ps[B].shape:
        ps[H].grad = ps[B].data  # another group's: B is updated first either way


def run(name: str, kw: dict[str, Any], seed: int, flat: bool, steps: int = 30
        ) -> tuple[list[Any], int]:
    """The state after every step of one scenario, and how many flat updates ran."""
    rng = np.random.default_rng(seed)
    ps = [mg.tensor(rng.normal(size=shape).astype(dtype), requires_grad=True)
          for shape, dtype in SHAPES]
    with flat_mode(flat), counting_flat_updates() as calls:
        opt = getattr(optim, name)([{"params": ps[:5]}, {"params": ps[5:], "lr": kw["lr"] / 2}],
                                   **kw)
        sched = lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)
        history = []
        for _ in range(steps):
            perturb(opt, ps, rng)
            set_grads(ps, rng)
            opt.step()
            sched.step()
            history.append(snapshot(ps, opt))
    return history, len(calls)


def assert_same_histories(name: str, kw: dict[str, Any], seed: int) -> None:
    ours, flat_updates = run(name, kw, seed, flat=True)
    ref, none = run(name, kw, seed, flat=False)
    assert none == 0
    assert flat_updates >= len(ref) // 2, "the flat update hardly ran: the test tests nothing"
    for step, (a, b) in enumerate(zip(ours, ref), start=1):
        assert a == b, f"{name} {kw} seed {seed}: step {step} differs"


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
@pytest.mark.parametrize("seed", [0, 1])
def test_flat_steps_equal_the_per_parameter_steps_bit_for_bit(name, kw, seed):
    assert_same_histories(name, kw, seed)


@given(config=st.sampled_from(CONFIGS), seed=st.integers(0, 2**32 - 1))
def test_flat_steps_equal_the_per_parameter_steps_on_drawn_scenarios(config, seed):
    assert_same_histories(*config, seed)


# --- the guarantees around it -------------------------------------------------------------------
def _net_and_grads(seed: int = 0) -> tuple[nn.Module, list[np.ndarray]]:
    net = nn.Sequential(nn.Linear(4, 16, rng=seed), nn.ReLU(), nn.Linear(16, 2, rng=seed + 1))
    rng = np.random.default_rng(seed)
    return net, [rng.normal(size=p.shape) for p in net.parameters()]


@pytest.mark.parametrize("make", [lambda ps: optim.Adam(ps, lr=0.01),
                                  lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.RMSprop(ps, momentum=0.5, centered=True)])
def test_updates_in_place_with_the_state_as_views_of_one_buffer_per_kind(make):
    net, grads = _net_and_grads()
    ps = list(net.parameters())
    held = [p.data for p in ps]  # what a user or a module keeps
    with flat_mode(True):
        opt = make(ps)
        for p, g in zip(ps, grads):
            p.grad = g.copy()
        opt.step()
        first = {id(p): dict(opt.state[p]) for p in ps}
        before = [w.copy() for w in held]
        for p, g in zip(ps, grads):
            p.grad = g.copy()
        opt.step()
    for p, w, b in zip(ps, held, before):
        assert p.data is w and not np.array_equal(w, b)  # changed, in the same array
    kinds = [k for k, v in opt.state[ps[0]].items() if isinstance(v, np.ndarray)]
    assert kinds
    for k in kinds:
        base = opt.state[ps[0]][k].base
        assert base is not None and base.ndim == 1
        assert all(opt.state[p][k].base is base for p in ps)  # one buffer for the group
        assert all(opt.state[p][k] is first[id(p)][k] for p in ps)  # the same views still


def test_one_buffer_per_dtype_each_keeping_its_dtype():
    a = mg.tensor(np.ones(3, np.float32), requires_grad=True)
    b = mg.tensor(np.ones(2), requires_grad=True)
    c = mg.tensor(np.ones(4, np.float32), requires_grad=True)
    with flat_mode(True):
        opt = optim.Adam([a, b, c], lr=0.1)
        for p in (a, b, c):
            p.grad = np.full(p.shape, 0.5, p.dtype)
        opt.step()
    assert opt.state[a]["exp_avg"].base is opt.state[c]["exp_avg"].base
    assert opt.state[a]["exp_avg"].base is not opt.state[b]["exp_avg"].base
    assert [opt.state[p]["exp_avg"].dtype for p in (a, b, c)] == [np.float32, np.float64,
                                                                 np.float32]
    assert a.dtype == c.dtype == np.float32


def _locked_by_a_forward(w: mg.Tensor) -> tuple[mg.Tensor, bool]:
    loss = (mg.tensor(np.ones((2, 64)), requires_grad=True) @ w).sum()  # the VJP reads w
    return loss, not w.data.flags.writeable


def test_a_parameter_the_live_tape_locked_is_refused_and_nothing_changes():
    fresh = mg.tensor(np.ones((64, 64)), requires_grad=True)
    if not _locked_by_a_forward(fresh)[1]:
        pytest.skip("this engine copies what the tape saves instead of locking it")
    big = mg.tensor(np.random.default_rng(0).normal(size=(64, 64)), requires_grad=True)
    small = mg.tensor(np.ones(3), requires_grad=True)
    with flat_mode(True):
        opt = optim.Adam([small, big], lr=0.1)
        small.grad, big.grad = np.ones(3), np.ones((64, 64))
        opt.step()
        # The optimizer holds no reference to big's array, so the tape still locks it rather
        # than copying it at every forward pass.
        loss, locked = _locked_by_a_forward(big)
        assert locked
        small.grad, big.grad = np.ones(3), np.ones((64, 64))
        before = snapshot([small, big], opt)
        with pytest.raises(RuntimeError, match=r"still alive.*Nothing was changed"):
            opt.step()
        assert snapshot([small, big], opt) == before
        loss.backward()  # frees the graph and unlocks the array
        small.grad, big.grad = np.ones(3), np.ones((64, 64))
        opt.step()
    assert snapshot([small, big], opt) != before


def test_a_replaced_array_is_the_one_updated():
    net, grads = _net_and_grads()
    ps = list(net.parameters())
    with flat_mode(True):
        opt = optim.Adam(ps, lr=0.1)
        for p, g in zip(ps, grads):
            p.grad = g.copy()
        opt.step()
        old = ps[0].data
        kept = old.copy()
        ps[0].data = old.copy()
        for p, g in zip(ps, grads):
            p.grad = g.copy()
        opt.step()
    np.testing.assert_array_equal(old, kept)  # the array the parameter no longer holds
    assert not np.array_equal(ps[0].data, kept)


def flat_equals_one_by_one(name: str, kw: dict[str, Any], seed: int, groups: bool,
                           grads_of_step: Any) -> None:
    """Five steps flat and five one by one (as plain mode) from the same start: the same bytes.
    grads_of_step(step, ps, rng) sets the grads of a step."""
    results = []
    for flat in (True, False):
        rng = np.random.default_rng(seed)
        ps = [mg.tensor(rng.normal(size=shape).astype(dtype), requires_grad=True)
              for shape, dtype in SHAPES]
        with flat_mode(flat):
            opt = getattr(optim, name)([{"params": ps[:5]}, {"params": ps[5:]}] if groups
                                       else ps, **kw)
            for step in range(5):
                grads_of_step(step, ps, rng)
                opt.step()
        results.append(snapshot(ps, opt))
    assert results[0] == results[1]


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_a_grad_that_is_a_replaced_array_of_another_parameter(name, kw):
    """E's grad is B's array, which B got after the buckets were made: E must still be stepped
    after B's update reads it, as one by one."""
    def grads_of_step(step: int, ps: list[mg.Tensor], rng: np.random.Generator) -> None:
        for p in ps:
            p.grad = rng.normal(size=p.shape).astype(p.dtype)
        if step >= 2:
            ps[B].data = ps[B].data.copy()
            ps[E].grad = ps[B].data
    flat_equals_one_by_one(name, kw, 9, False, grads_of_step)


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_a_grad_that_is_an_earlier_groups_parameter_in_a_steady_loop(name, kw):
    """From the third step on, group 1's H takes B's array (group 0) as its grad, in a loop
    where nothing else changes: H's update must read B after B's, as one by one."""
    fixed: list[np.ndarray] = []

    def grads_of_step(step: int, ps: list[mg.Tensor], rng: np.random.Generator) -> None:
        if step == 0:
            fixed[:] = [rng.normal(size=p.shape).astype(p.dtype) for p in ps]
        for p, g in zip(ps, fixed):
            p.grad = g.copy()
        if step >= 2:
            ps[H].grad = ps[B].data
    flat_equals_one_by_one(name, kw, 4, True, grads_of_step)


def test_a_subclass_that_overrides_update_alone_keeps_it():
    class HalfSGD(optim.SGD):
        def _update(self, w, g, state, group):
            super()._update(w, g * 0.5, state, group)

    w = mg.tensor(np.ones(3), requires_grad=True)
    with flat_mode(True), counting_flat_updates() as calls:
        opt = HalfSGD([w], lr=0.1)
        w.grad = np.ones(3)
        opt.step()
    np.testing.assert_allclose(w.data, 1 - 0.1 * 0.5)
    assert not calls


def test_a_deep_copy_steps_on_its_own():
    net, grads = _net_and_grads()
    with flat_mode(True):
        opt = optim.Adam(net.parameters(), lr=0.05)
        for _ in range(2):
            for p, g in zip(net.parameters(), grads):
                p.grad = g.copy()
            opt.step()
        net2, opt2 = copy.deepcopy((net, opt))
        for n, o in ((net, opt), (net2, opt2)):
            for _ in range(3):
                for p, g in zip(n.parameters(), grads):
                    p.grad = g.copy()
                o.step()
    assert snapshot(list(net.parameters()), opt) == snapshot(list(net2.parameters()), opt2)
    assert opt2.state[list(net2.parameters())[0]]["step"] == 5


@pytest.mark.parametrize("name,kw", [c for c in CONFIGS if c[1].get("momentum")
                                     or c[0].startswith("Adam")][:4])
def test_a_training_loop_agrees_with_plain_mode(name, kw):
    """backward() in a loop, the ordinary way (fresh grads each step, zero_grad)."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(16, 4)), rng.integers(0, 2, size=16)
    results = []
    for flat in (True, False):
        net, _ = _net_and_grads(3)
        with flat_mode(flat):
            opt = getattr(optim, name)(net.parameters(), **kw)
            for _ in range(20):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
        results.append(snapshot(list(net.parameters()), opt))
    assert results[0] == results[1]


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
@pytest.mark.parametrize("holder", ["view", "buffer"])
def test_a_parameter_whose_array_is_memory_of_a_later_parameters_grad(name, kw, holder):
    """E's grad is an array owning its memory, and B's array (updated first) is a view of it
    (through an ndarray, or through a buffer object): one by one, E reads its grad after B's
    update changed it, so the flat step must not gather it before."""
    results = []
    for flat in (True, False):
        rng = np.random.default_rng(4)
        ps = [mg.tensor(rng.normal(size=shape).astype(dtype), requires_grad=True)
              for shape, dtype in SHAPES]
        with flat_mode(flat):
            opt = getattr(optim, name)(ps, **kw)
            for step in range(4):
                for p in ps:
                    p.grad = rng.normal(size=p.shape).astype(p.dtype)
                if step >= 2:
                    shared = rng.normal(size=ps[B].shape)
                    ps[B].data = (shared[:] if holder == "view" else
                                  np.frombuffer(memoryview(shared), shared.dtype))
                    ps[E].grad = shared
                    assert np.shares_memory(ps[B].data, ps[E].grad)
                opt.step()
        results.append(snapshot(ps, opt))
    assert results[0] == results[1]


@pytest.mark.parametrize("name,kw", [c for c in CONFIGS if c[0] in ("Adam", "RMSprop")]
                         + [("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01))])
def test_float16_parameters_step_as_one_by_one(name, kw):
    """The flat update rounds its hyperparameters to the buffers' dtype as NumPy rounds a Python
    float operand: float16 (alongside float32) is where a different rounding shows first."""
    results = []
    for flat in (True, False):
        rng = np.random.default_rng(2)
        ps = [mg.tensor(rng.normal(size=shape).astype(dtype), requires_grad=True)
              for shape, dtype in [((3, 4), np.float16), ((5,), np.float16), ((2,), np.float32)]]
        with flat_mode(flat), counting_flat_updates() as calls:
            opt = getattr(optim, name)(ps, **kw)
            for step in range(12):
                for p in ps:
                    p.grad = rng.normal(size=p.shape).astype(p.dtype)
                if step == 6 and "betas" in opt.param_groups[0]:
                    opt.param_groups[0]["betas"] = (0.5, 0.75)
                    opt.param_groups[0]["eps"] = 1e-3
                opt.step()
        assert bool(calls) == flat
        results.append(snapshot(ps, opt))
    assert results[0] == results[1]


def test_a_subclass_with_one_hyperparameter_steps_flat_while_it_is_a_python_number():
    flat_steps: list[int] = []

    class Scaled(optim.Optimizer):
        """w ← w − lr·g, flat or one by one."""

        def __init__(self, params, lr):
            super().__init__(params, {"lr": lr})

        def _update(self, w, g, state, group):
            w -= group["lr"] * g

        def _flat_update(self, b, g, ws, group):
            flat_steps.append(step)
            np.multiply(g, group["lr"], out=b.out)
            b.subtract(ws)

    results = []
    for flat in (True, False):
        rng = np.random.default_rng(6)
        ps = [mg.tensor(rng.normal(size=n).astype(np.float32), requires_grad=True)
              for n in (3, 4)]
        flat_steps.clear()
        with flat_mode(flat):
            opt = Scaled(ps, lr=0.1)
            for step in range(6):
                if step == 3:  # a float64 scalar: one by one, it is never rounded to float32
                    opt.param_groups[0]["lr"] = np.float64(1 / 3)
                for p in ps:
                    p.grad = rng.normal(size=p.shape).astype(np.float32)
                opt.step()
        assert flat_steps == ([0, 1, 2] if flat else [])
        results.append(snapshot(ps, opt))
    assert results[0] == results[1]


@pytest.mark.parametrize("views", [False, True])
def test_a_steady_loop_plans_once_and_steps_flat_every_time(views, monkeypatch):
    """Fresh gradient arrays every step (with views, as a compiled program returns a bias's
    gradient as a row of a matrix) keep the plan, and its quick check passes as it is: nothing
    is looked at closer (which would note the state again)."""
    noted = []
    remember = optimizers._Plan.remember
    monkeypatch.setattr(optimizers._Plan, "remember", lambda plan: (noted.append(1),
                                                                    remember(plan)))
    net, _ = _net_and_grads(1)
    ps = list(net.parameters())
    rng = np.random.default_rng(3)
    with flat_mode(True), counting_flat_updates() as calls:
        opt = optim.Adam(ps, lr=0.01)
        plans = []
        for _ in range(10):
            for p in ps:
                g = rng.normal(size=(1, *p.shape))
                p.grad = g[0] if views else g.reshape(p.shape).copy()
            opt.step()
            plans.append(opt._plans[id(opt.param_groups[0])])
    assert len(calls) == 10
    assert all(plan is plans[0] for plan in plans)
    assert len(noted) == 1  # when the plan was made
