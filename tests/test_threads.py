"""Threads (API.md, "Threads"): grad mode and detect_anomaly belong to the thread that sets
them, threads build and backpropagate graphs at the same time, a graph may be backpropagated in
another thread than the one that built it, and the in-place guarantee holds under threads.

Where an interleaving matters it is forced, not hoped for: a `Baton` hands the turn from thread
to thread in a fixed order, and an identity `mg.Function` whose backward takes a turn parks a
thread inside `backward()`. The stress tests that cannot be scripted run a bounded number of
iterations with a tiny switch interval and check only what must hold under every schedule.
Every wait has a timeout and every thread is joined with one, so a failure never hangs.
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn, optim
from minigrad.nn import functional as F  # noqa: N812  (PyTorch's spelling)

TIMEOUT = 10.0  # seconds any single wait may take before the test fails instead of hanging


class Baton:
    """Hands the turn from thread to thread in a fixed order: `at(n)` waits for step n, `next()`
    ends the current step. If a thread fails, the others stop waiting at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._step = 0
        self._failed = False

    def at(self, n: int) -> None:
        with self._cond:
            came = self._cond.wait_for(lambda: self._step == n or self._failed, TIMEOUT)
            if self._failed:
                raise RuntimeError(f"step {n}: another thread failed")
            assert came, f"step {n} never came (still at step {self._step})"

    def next(self) -> None:
        with self._cond:
            self._step += 1
            self._cond.notify_all()

    @contextmanager
    def turn(self, n: int) -> Iterator[None]:
        """Step n: wait for it, run the block, hand the turn on."""
        self.at(n)
        yield
        self.next()

    def fail(self) -> None:
        with self._cond:
            self._failed = True
            self._cond.notify_all()


def run_threads(*targets: Callable[[], Any], baton: Baton | None = None) -> None:
    """Run each target in its own thread, join them (bounded) and re-raise the first error."""
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # handed to the main thread below
                errors.append(e)
                if baton is not None:
                    baton.fail()
        return run

    threads = [threading.Thread(target=guarded(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(3 * TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread is still running (hung)"
    if errors:
        raise errors[0]


def pause_op(on_backward: Callable[[], None]) -> Any:
    """An identity mg.Function whose backward calls on_backward() first: it holds the thread
    that runs backward() inside the sweep for as long as on_backward() waits."""

    class Pause(mg.Function):
        @staticmethod
        def forward(ctx: Any, x: np.ndarray) -> np.ndarray:
            return x.copy()

        @staticmethod
        def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
            on_backward()
            return g

    return Pause


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as CPython allows, so unscripted races get their chances."""
    prev = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(prev)


@pytest.fixture
def unraisable() -> Iterator[list[str]]:
    """Errors raised where nobody can catch them (a finalizer, __del__), collected."""
    seen: list[str] = []
    prev = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(f"{u.exc_type.__name__}: {u.exc_value} "
                                               f"in {u.object!r}")
    try:
        yield seen
    finally:
        sys.unraisablehook = prev


def assert_main_thread_records() -> None:
    """After the threads are done, this thread records and backpropagates as usual."""
    assert mg.is_grad_enabled()
    x = mg.tensor([2.0, -1.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [4.0, -2.0])


# ---------------------------------------------------------------------------------------------
# Grad mode is per thread
# ---------------------------------------------------------------------------------------------
def test_backward_in_one_thread_never_stops_recording_in_another() -> None:
    baton = Baton()
    pause = pause_op(lambda: (baton.next(), baton.at(2)))  # step 0 ends inside A's backward

    def a() -> None:
        w = mg.tensor([1.0], requires_grad=True)
        out = pause.apply(w * 1.5).sum()
        baton.at(0)
        out.backward()  # parked inside the sweep during step 1 (B records)
        baton.next()  # step 2 ends: A's backward has returned
        with baton.turn(3):
            np.testing.assert_array_equal(w.grad, [1.5])

    def b() -> None:
        x = mg.tensor([3.0], requires_grad=True)
        part1 = x * x
        with baton.turn(1):  # A is inside backward() now
            assert mg.is_grad_enabled()
            part2 = 10.0 * x
            hidden = nn.Linear(1, 1, rng=0)(x.reshape(1, 1)).sum()
            assert part2.requires_grad and hidden.requires_grad
        with baton.turn(4):  # A's backward has returned
            (part1 + part2).sum().backward()
            np.testing.assert_array_equal(x.grad, [16.0])  # 2x + 10, nothing left out

    run_threads(a, b, baton=baton)
    assert_main_thread_records()


def _trainer_and_actor(order: str, baton: Baton) -> tuple[Callable[[], None],
                                                          Callable[[], None]]:
    """Thread A trains (a backward that takes turns inside its sweep), thread B acts under
    no_grad; `order` says how the no_grad block and the backward overlap."""
    x = mg.tensor([1.0, 2.0], requires_grad=True)

    if order == "no_grad ends after the backward":
        # A: in backward (0) . . . . . returns (2), records (3)
        # B:              no_grad (1) . . . . . . . . . . . . . still inside (4), leaves (4)
        pause = pause_op(lambda: (baton.next(), baton.at(2)))

        def trainer() -> None:
            w = mg.tensor([2.0], requires_grad=True)
            out = pause.apply(w * w).sum()
            baton.at(0)
            out.backward()
            baton.next()
            with baton.turn(3):
                np.testing.assert_array_equal(w.grad, [4.0])
                assert (w * x).requires_grad

        def actor() -> None:
            baton.at(1)
            with mg.no_grad():
                assert not (x * x).requires_grad
                baton.next()
                baton.at(4)  # A's backward returned meanwhile
                assert not mg.is_grad_enabled()
                assert not (x * x).requires_grad
            assert mg.is_grad_enabled()
            assert (x * x).requires_grad
            baton.next()

        return trainer, actor

    if order == "backward spans the end of no_grad":
        # B: no_grad (0) . . . . . . . . . . . . . . . . . leaves, records (3)
        # A:            forward (1), in backward (2) . . . . . . . . . . . returns (4)
        pause = pause_op(lambda: (baton.next(), baton.at(4)))  # step 2 ends inside backward

        def trainer() -> None:
            w = mg.tensor([2.0], requires_grad=True)
            with baton.turn(1):  # B is inside no_grad: A still records
                out = pause.apply(w * w).sum()
                assert out.requires_grad
            baton.at(2)
            out.backward()
            np.testing.assert_array_equal(w.grad, [4.0])
            (x * w).sum().backward()
            np.testing.assert_array_equal(x.grad, [2.0, 2.0])
            baton.next()

        def actor() -> None:
            baton.at(0)
            with mg.no_grad():
                baton.next()
                baton.at(3)  # A is inside its backward
                assert not (x * x).requires_grad
            assert mg.is_grad_enabled()
            assert (x * x).requires_grad
            baton.next()

        return trainer, actor

    # "enable_grad in one thread, no_grad in the other"
    # A: no_grad (0) . . . . . . . . . . . op not recorded (2), leaves, records (3)
    # B:            enable_grad inside no_grad (1) . . . . . . . . . . . . . . . . leaves (4)
    def trainer() -> None:
        baton.at(0)
        with mg.no_grad():
            baton.next()
            baton.at(2)
            assert not mg.is_grad_enabled()
            assert not (x * x).requires_grad
        assert (x * x).requires_grad
        baton.next()

    def actor() -> None:
        baton.at(1)
        with mg.no_grad(), mg.enable_grad():
            assert (x * 3.0).requires_grad
            baton.next()
            baton.at(3)
            assert (x * 3.0).requires_grad
        baton.next()

    return trainer, actor


@pytest.mark.parametrize("order", ["no_grad ends after the backward",
                                   "backward spans the end of no_grad",
                                   "enable_grad in one thread, no_grad in the other"])
def test_no_grad_overlapping_another_threads_work_never_leaks(order: str) -> None:
    baton = Baton()
    run_threads(*_trainer_and_actor(order, baton), baton=baton)
    assert_main_thread_records()


def test_transform_in_one_thread_never_records_in_another_threads_no_grad() -> None:
    # mg.grad switches recording on while it traces f: in its own thread only.
    baton = Baton()
    x = mg.tensor([1.0, 2.0], requires_grad=True)

    def f(t: mg.Tensor) -> mg.Tensor:
        y = (t ** 3).sum()
        baton.next()  # step 1 ends inside the trace
        baton.at(3)
        return y

    def a() -> None:
        baton.at(1)
        g = mg.grad(f)(np.array([1.0, 2.0]))
        np.testing.assert_array_equal(g.data, [3.0, 12.0])

    def b() -> None:
        baton.at(0)
        with mg.no_grad():
            baton.next()
            baton.at(2)  # A is tracing f
            assert not (x * x).requires_grad
            baton.next()
        assert (x * x).requires_grad

    run_threads(a, b, baton=baton)
    assert_main_thread_records()


# ---------------------------------------------------------------------------------------------
# detect_anomaly is per thread
# ---------------------------------------------------------------------------------------------
def _sites(t: mg.Tensor) -> list[str | None]:
    return [row.site for row in mg.tape(t).rows]


def test_detect_anomaly_in_one_thread_is_off_in_another() -> None:
    baton = Baton()

    def a() -> None:
        baton.at(0)
        with mg.detect_anomaly():
            baton.next()
            baton.at(2)  # B has run its ops meanwhile
            x = mg.tensor([0.0, 1.0], requires_grad=True)
            y = x * 2.0
            assert all(s is not None and __file__ in s for s in _sites(y))
            with np.errstate(divide="ignore"), pytest.raises(RuntimeError, match="log"):
                x.log()
        baton.next()

    def b() -> None:
        with baton.turn(1):  # A is inside detect_anomaly
            x = mg.tensor([0.0, 1.0], requires_grad=True)
            with np.errstate(divide="ignore"):
                y = x.log()  # -inf at 0: legitimate here, no anomaly mode in this thread
                assert _sites(y) == [None]
                y.sum().backward()  # its VJP gives inf at 0: not checked here either
            np.testing.assert_array_equal(y.data, [-np.inf, 0.0])
            np.testing.assert_array_equal(x.grad, [np.inf, 1.0])

    run_threads(a, b, baton=baton)


def test_detect_anomaly_left_in_one_thread_stays_on_in_another() -> None:
    baton = Baton()

    def a() -> None:
        baton.at(0)
        with mg.detect_anomaly():
            baton.next()
            baton.at(2)
        baton.next()  # step 2: A leaves detect_anomaly while B is still inside

    def b() -> None:
        baton.at(1)
        with mg.detect_anomaly():
            baton.next()
            baton.at(3)
            x = mg.tensor([0.0, 1.0], requires_grad=True)
            with np.errstate(divide="ignore"), pytest.raises(RuntimeError, match="log"):
                x.log()
            assert all(s is not None for s in _sites(x * 2.0))
        with np.errstate(divide="ignore"):
            x.log()  # outside the block: no check
        baton.next()

    run_threads(a, b, baton=baton)


# ---------------------------------------------------------------------------------------------
# The in-place guarantee and the lock table under threads
# ---------------------------------------------------------------------------------------------
def _saved_as_is(t: mg.Tensor, arr: np.ndarray) -> bool:
    """Did the op that made t save arr itself (not a copy) for its VJP? (The tape's record.)"""
    return any(v is arr for v in getattr(t, "_values", None) or ())


def test_write_from_another_thread_while_a_graph_holds_the_parameter() -> None:
    # A records a graph that saved weight; B writes into weight (directly and through an
    # optimizer) while that graph lives: refused, or harmless to A's gradient. Once A's backward
    # has freed the graph, or A has dropped a second one, B's writes go through.
    baton = Baton()
    weight = mg.tensor(np.full((2, 2), 3.0), requires_grad=True)
    opt = optim.SGD([weight], lr=0.5)
    outcome: list[str] = []

    def holder() -> None:
        s = mg.tensor(np.ones((2, 2)), requires_grad=True)
        with baton.turn(0):
            z = weight * s  # the VJP of s reads weight
        with baton.turn(2):  # B has tried to write meanwhile
            z.backward(np.ones((2, 2)))
            np.testing.assert_array_equal(z.data, np.full((2, 2), 3.0))
            np.testing.assert_array_equal(s.grad, z.data)  # the weight the forward used
        with baton.turn(4):
            dropped = weight * s
            del dropped  # a graph dropped without backward() releases what it locked

    def writer() -> None:
        with baton.turn(1):
            try:
                weight.data[0, 0] = 7.0
            except ValueError:
                outcome.append("refused")
            else:
                outcome.append("written")
                weight.data[0, 0] = 3.0
            weight.grad = np.ones((2, 2))
            before = weight.data.copy()
            try:
                opt.step()
            except RuntimeError as e:
                assert "read-only" in str(e)
                np.testing.assert_array_equal(weight.data, before)  # nothing was changed
            else:
                weight.data[...] = before
        with baton.turn(3):  # A's backward has freed its graph
            weight.data[0, 0] = 3.0
            weight.grad = np.ones((2, 2))
            opt.step()
            np.testing.assert_array_equal(weight.data, np.full((2, 2), 2.5))
        with baton.turn(5):
            weight.data[...] = 1.0

    run_threads(holder, writer, baton=baton)
    assert outcome in (["refused"], ["written"])
    np.testing.assert_array_equal(weight.data, np.ones((2, 2)))


def test_lock_table_two_threads_dropping_graphs_over_one_parameter(
        fast_switching: None, unraisable: list[str]) -> None:
    # Two threads record weight * s over and over and drop the graph (forward only); every
    # eighth graph is backpropagated instead, and a third thread keeps writing into weight. The
    # VJP of s reads weight, so each graph must lock weight or save a copy of it: s.grad must be
    # the weight the forward used (z = weight * 1 is exactly that), whether the writes were
    # refused or went through.
    readonly = importlib.import_module("minigrad.readonly")
    weight = mg.tensor(np.ones((4, 4)), requires_grad=True)
    n = 20_000
    done = threading.Event()
    writes = {"refused": 0, "done": 0}
    problems: list[str] = []

    def worker() -> None:
        s = mg.tensor(np.ones((4, 4)), requires_grad=True)
        ones = np.ones((4, 4))
        for i in range(n):
            z = weight * s
            if weight.data.flags.writeable and _saved_as_is(z, weight.data):
                problems.append(f"iteration {i}: weight writeable while a live graph saved it")
            if i % 8 == 0:
                s.grad = None
                z.backward(ones)
                if not np.array_equal(s.grad, z.data):
                    problems.append(f"iteration {i}: gradient {s.grad.ravel()[:3]} is not the "
                                    f"weight the forward used {z.data.ravel()[:3]}")
            del z

    def writer() -> None:
        v = 0
        while not done.is_set():
            v += 1
            try:
                weight.data[v % 4] = 1.0 + v % 5
            except ValueError:
                writes["refused"] += 1
            else:
                writes["done"] += 1

    writing = threading.Thread(target=writer, daemon=True)
    writing.start()
    try:
        run_threads(worker, worker)
    finally:
        done.set()
        writing.join(TIMEOUT)
    assert not writing.is_alive()
    gc.collect()
    assert writes["refused"] + writes["done"] > 0
    assert problems == [], problems[:3]
    assert unraisable == [], unraisable[:3]  # e.g. a KeyError in a Lease finalizer
    assert weight.data.flags.writeable
    assert readonly._locks == {}
    weight.data[...] = 0.0  # writeable for good, as a parameter between steps


# ---------------------------------------------------------------------------------------------
# Graphs across threads
# ---------------------------------------------------------------------------------------------
def _mlp_loss(seed: int) -> tuple[nn.Module, mg.Tensor]:
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(4, 16, rng=seed), nn.Tanh(), nn.Linear(16, 3, rng=seed + 1))
    xs = mg.tensor(rng.normal(size=(32, 4)))
    y = rng.integers(0, 3, 32)
    return model, F.cross_entropy(model(xs), y)


def _grads(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: p.grad.copy() for k, p in model.named_parameters()}


def test_graph_built_in_one_thread_backpropagated_in_another() -> None:
    ref_model, ref_loss = _mlp_loss(0)
    ref_loss.backward(retain_graph=True)
    ref_once = _grads(ref_model)
    ref_loss.backward()
    ref_twice = _grads(ref_model)

    built: dict[str, Any] = {}
    run_threads(lambda: built.update(zip(("model", "loss"), _mlp_loss(0))))
    model, loss = built["model"], built["loss"]
    run_threads(lambda: loss.backward(retain_graph=True))  # the builder thread is gone
    for k, g in _grads(model).items():
        np.testing.assert_array_equal(g, ref_once[k], err_msg=k)
    loss.backward()  # and once more, in the main thread, through the retained tape
    for k, g in _grads(model).items():
        np.testing.assert_array_equal(g, ref_twice[k], err_msg=k)
    assert all(p.data.flags.writeable for p in model.parameters())


def test_handed_over_graph_backpropagated_while_its_builder_records() -> None:
    # A builds a graph and hands it to B; while B is inside its backward, A builds the next one.
    baton = Baton()
    pause = pause_op(lambda: (baton.next(), baton.at(3)))  # step 1 ends inside B's backward
    ref_model, ref_loss = _mlp_loss(1)
    ref_loss.backward()
    ref = _grads(ref_model)
    box: dict[str, Any] = {}

    def builder() -> None:
        with baton.turn(0):
            box["model"], loss = _mlp_loss(1)
            box["loss"] = pause.apply(loss)
        with baton.turn(2):  # B is inside backward()
            box["model2"], box["loss2"] = _mlp_loss(1)
            assert box["loss2"].requires_grad
        baton.at(4)  # B's backward has returned
        box["loss2"].backward()

    def learner() -> None:
        baton.at(1)
        box["loss"].backward()
        baton.next()  # step 3 ends when the backward has returned

    run_threads(builder, learner, baton=baton)
    for name in ("model", "model2"):
        for k, g in _grads(box[name]).items():
            np.testing.assert_array_equal(g, ref[k], err_msg=f"{name}: {k}")


def _train(seed: int, steps: int, before: Callable[[int], None] = lambda i: None,
           wrap: Callable[[int, mg.Tensor], mg.Tensor] = lambda i, t: t
           ) -> tuple[dict[str, np.ndarray], list[float]]:
    """SGD on a small classifier; `before` runs before each step's forward, `wrap` may wrap each
    loss (in an identity op). Returns the final state_dict and the losses."""
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(4, 16, rng=seed), nn.Tanh(), nn.Linear(16, 2, rng=seed + 1))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xs = rng.normal(size=(32, 4))
    y = rng.integers(0, 2, 32)
    losses = []
    for i in range(steps):
        before(i)
        loss = wrap(i, F.cross_entropy(model(mg.tensor(xs)), y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {k: v.copy() for k, v in model.state_dict().items()}, losses


def test_two_threads_training_two_models_match_serial_training(fast_switching: None) -> None:
    steps = 150
    ref = {seed: _train(seed, steps) for seed in (0, 10)}
    # Forced at step 0: model 10's forward runs while model 0's thread is inside backward().
    in_backward, forward_done = threading.Event(), threading.Event()

    def hold() -> None:
        in_backward.set()
        assert forward_done.wait(TIMEOUT)

    pause = pause_op(hold)
    out: dict[int, Any] = {}

    def first() -> None:
        out[0] = _train(0, steps, wrap=lambda i, t: pause.apply(t) if i == 0 else t)

    def second() -> None:
        def before(i: int) -> None:
            if i == 0:
                assert in_backward.wait(TIMEOUT)

        def wrap(i: int, t: mg.Tensor) -> mg.Tensor:
            if i == 0:
                forward_done.set()
            return t

        out[10] = _train(10, steps, before, wrap)

    try:
        run_threads(first, second)
    finally:
        forward_done.set()  # never leave the other thread waiting
    for seed in (0, 10):
        state, losses = out[seed]
        assert losses == ref[seed][1]
        for k, v in state.items():
            np.testing.assert_array_equal(v, ref[seed][0][k], err_msg=f"seed {seed}: {k}")


def test_actor_acting_under_no_grad_while_learner_updates_matches_serial(
        fast_switching: None) -> None:
    # The actor acts with the current policy under no_grad (and fits a private baseline, which
    # records) while the learner runs its forward and backward; the learner steps once the
    # actor has acted. Step 0 is forced: the learner records inside the actor's no_grad block.
    steps = 100

    def setup() -> tuple[nn.Module, optim.Optimizer, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(3)
        policy = nn.Sequential(nn.Linear(4, 16, rng=3), nn.Tanh(), nn.Linear(16, 2, rng=4))
        opt = optim.Adam(policy.parameters(), lr=0.01)
        obs = rng.normal(size=(steps, 8, 4))
        acts = rng.integers(0, 2, size=(steps, 8))
        rets = rng.normal(size=(steps, 8))
        return policy, opt, obs, acts, rets

    def act(policy: nn.Module, obs: np.ndarray, base: mg.Tensor) -> np.ndarray:
        with mg.no_grad():
            probs = policy(mg.tensor(obs)).softmax(-1)
            assert not probs.requires_grad
        loss = ((mg.tensor(obs) @ base - 1.0) ** 2).mean()  # a recorded fit of its own
        base.grad = None
        loss.backward()
        base.data = base.data - 0.1 * base.grad
        return probs.data.copy()

    def learn(policy: nn.Module, opt: optim.Optimizer, obs: np.ndarray, acts: np.ndarray,
              rets: np.ndarray) -> mg.Tensor:
        logp = F.log_softmax(policy(mg.tensor(obs)), axis=-1)[np.arange(len(acts)), acts]
        loss = -(logp * rets).mean()
        opt.zero_grad()
        loss.backward()
        return loss

    # one after the other
    policy, opt, obs, acts, rets = setup()
    base = mg.tensor(np.zeros(4), requires_grad=True)
    ref_probs = []
    for k in range(steps):
        ref_probs.append(act(policy, obs[k], base))
        learn(policy, opt, obs[k], acts[k], rets[k])
        opt.step()
    ref_state = {k: v.copy() for k, v in policy.state_dict().items()}
    ref_base = base.data.copy()

    # at once
    policy, opt, obs, acts, rets = setup()
    base = mg.tensor(np.zeros(4), requires_grad=True)
    probs: list[np.ndarray] = []
    may_act = [threading.Event() for _ in range(steps)]
    acted = [threading.Event() for _ in range(steps)]
    inside, learner_recorded = threading.Event(), threading.Event()

    def actor() -> None:
        try:
            for k in range(steps):
                assert may_act[k].wait(TIMEOUT)
                if k == 0:
                    with mg.no_grad():
                        inside.set()
                        assert learner_recorded.wait(TIMEOUT)
                probs.append(act(policy, obs[k], base))
                acted[k].set()
        finally:  # never leave the learner waiting
            inside.set()
            for e in acted:
                e.set()

    def learner() -> None:
        try:
            for k in range(steps):
                may_act[k].set()
                if k == 0:
                    assert inside.wait(TIMEOUT)
                loss = learn(policy, opt, obs[k], acts[k], rets[k])
                if k == 0:
                    assert loss.requires_grad
                    learner_recorded.set()
                assert acted[k].wait(TIMEOUT)
                opt.step()
        finally:  # never leave the actor waiting
            learner_recorded.set()
            for e in may_act:
                e.set()

    run_threads(actor, learner)
    assert len(probs) == steps
    for k in range(steps):
        np.testing.assert_array_equal(probs[k], ref_probs[k], err_msg=f"step {k}")
    for k, v in policy.state_dict().items():
        np.testing.assert_array_equal(v, ref_state[k], err_msg=k)
    np.testing.assert_array_equal(base.data, ref_base)
    assert_main_thread_records()


def test_concurrent_backward_through_a_shared_parameter(fast_switching: None,
                                                         unraisable: list[str]) -> None:
    # Each thread backpropagates its own graphs through the shared weight: its own input's gradient
    # is exact every time, nothing raises, and weight is writeable with no lock left at the end.
    readonly = importlib.import_module("minigrad.readonly")
    rng = np.random.default_rng(0)
    weight = mg.tensor(rng.normal(size=(8, 8)), requires_grad=True)
    xs = rng.normal(size=(16, 8))
    x_ref = mg.tensor(xs, requires_grad=True)
    (x_ref @ weight).tanh().sum().backward()
    n = 1500

    def worker() -> None:
        for _ in range(n):
            x = mg.tensor(xs, requires_grad=True)
            (x @ weight).tanh().sum().backward()
            np.testing.assert_array_equal(x.grad, x_ref.grad)

    run_threads(worker, worker)
    gc.collect()
    assert unraisable == []
    assert weight.data.flags.writeable
    assert readonly._locks == {}


_GRAD_SLOT = mg.Tensor.grad  # the slot a leaf keeps its gradient in


class _PausingLeaf(mg.Tensor):
    """A leaf whose `.grad` assignments, while `armed`, each wait (bounded) until a second
    thread's assignment arrives: the first thread is held after it has read `.grad` and computed
    the sum, before it stores it. An engine that accumulates under a lock makes the second
    thread wait for the first instead, the barrier times out and both sums come out right."""

    armed: threading.Barrier | None = None

    @property
    def grad(self) -> Any:
        return _GRAD_SLOT.__get__(self, type(self))

    @grad.setter
    def grad(self, value: Any) -> None:
        barrier = _PausingLeaf.armed
        if barrier is not None and threading.current_thread() is not threading.main_thread():
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
        _GRAD_SLOT.__set__(self, value)


def test_concurrent_backward_accumulates_every_contribution_to_a_shared_grad(
        fast_switching: None) -> None:
    rng = np.random.default_rng(0)
    weight = _PausingLeaf(rng.normal(size=(8, 8)), requires_grad=True)
    xs = rng.normal(size=(16, 8))
    (mg.tensor(xs) @ weight).tanh().sum().backward()
    one = weight.grad.copy()

    # Forced: both threads' accumulations overlap (from None, then onto a gradient).
    for start in (None, one):
        weight.grad = None if start is None else start.copy()
        losses = [(mg.tensor(xs) @ weight).tanh().sum() for _ in range(2)]
        _PausingLeaf.armed = threading.Barrier(2, timeout=0.3)
        try:
            run_threads(losses[0].backward, losses[1].backward)
        finally:
            _PausingLeaf.armed = None
        expected = one + one if start is None else start + one + one
        np.testing.assert_array_equal(weight.grad, expected)

    # Unscripted: 2 x 1000 backward calls, each adding the same `one`.
    n = 1000
    weight.grad = None

    def worker() -> None:
        for _ in range(n):
            (mg.tensor(xs) @ weight).tanh().sum().backward()

    run_threads(worker, worker)
    expected = one.copy()
    for _ in range(2 * n - 1):
        expected = expected + one
    np.testing.assert_array_equal(weight.grad, expected)


# ---------------------------------------------------------------------------------------------
# no_grad / enable_grad as decorators of generator functions
# ---------------------------------------------------------------------------------------------
def test_no_grad_decorated_generator_applies_inside_it_in_its_own_thread_only() -> None:
    baton = Baton()
    policy = nn.Linear(4, 2, rng=0)
    obs = mg.tensor(np.ones((1, 4)))
    x = mg.tensor([1.0, 2.0], requires_grad=True)

    @mg.no_grad()
    def rollout(n: int) -> Iterator[tuple[mg.Tensor, bool]]:
        for _ in range(n):
            out = policy(obs)
            yield out, mg.is_grad_enabled()

    @mg.no_grad()
    def rollout_taking_turns() -> Iterator[mg.Tensor]:
        baton.next()  # step 0 ends inside the generator's body
        baton.at(2)  # B records meanwhile
        assert not mg.is_grad_enabled()
        yield policy(obs)

    def a() -> None:
        outs = []
        for out, enabled in rollout(3):
            assert not enabled and not out.requires_grad
            assert mg.is_grad_enabled() and (x * x).requires_grad  # paused: the caller's mode
            outs.append(out)
        assert len(outs) == 3
        baton.at(0)
        (out,) = list(rollout_taking_turns())
        assert not out.requires_grad
        with baton.turn(2):
            assert (x * x).requires_grad

    def b() -> None:
        with baton.turn(1):  # A is inside its generator's body
            assert mg.is_grad_enabled()
            assert policy(obs).requires_grad

    run_threads(a, b, baton=baton)

    # A generator started in one thread and resumed in another: the body is under no_grad in
    # whichever thread runs it, and that thread records again between resumptions.
    gen = rollout(2)
    first, _ = next(gen)
    rest: list[Any] = []

    def resume() -> None:
        out, enabled = next(gen)
        rest.append((out.requires_grad, enabled, (x * x).requires_grad))

    run_threads(resume)
    assert not first.requires_grad
    assert rest == [(False, False, True)]
    for p in policy.parameters():  # nothing above locked the parameters
        assert p.data.flags.writeable
    assert_main_thread_records()


def test_enable_grad_decorated_generator_records_only_inside_it() -> None:
    x = mg.tensor([1.0, 2.0], requires_grad=True)

    @mg.enable_grad()
    def squares(n: int) -> Iterator[mg.Tensor]:
        for _ in range(n):
            yield x * x

    seen: list[tuple[bool, bool]] = []

    def a() -> None:
        with mg.no_grad():
            for y in squares(2):
                seen.append((y.requires_grad, (x * x).requires_grad))

    run_threads(a)
    assert seen == [(True, False), (True, False)]
    assert_main_thread_records()


def test_no_grad_decorated_generator_forwards_throw_and_close_under_the_mode() -> None:
    x = mg.tensor([1.0], requires_grad=True)
    cleanup: list[bool] = []

    @mg.no_grad()
    def body() -> Iterator[Any]:
        try:
            yield 1
        except ValueError:
            yield (x * x).requires_grad
        finally:
            cleanup.append((x * x).requires_grad)

    gen = body()
    next(gen)
    assert gen.throw(ValueError("delivered into the body")) is False
    gen.close()
    assert cleanup == [False]
