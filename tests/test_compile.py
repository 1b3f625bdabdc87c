"""`mg.compile` against eager minigrad: the same values and gradients, traced exactly when the
signature changes, refused (CompileError at the user's line) where a replay would differ.

Every comparison is with the same function run eagerly, never with a number written down, and
each compiled step is called again on new values after its trace (a value frozen into the
program at trace time would show there):

- every row of the table, and every primitive of `nn`, compiled both ways (loss + backward(),
  and `mg.compile(mg.value_and_grad(...))`), on the table tests' own hypothesis cases;
- the examples' networks, trained 50 Adam steps compiled and eagerly;
- retracing (`step.traces`) for each part of the signature and for nothing else, the LRU of 8;
- CompileError for each refused case, naming the line;
- index arrays read afresh, threads, two forwards before two backwards, outputs that later calls
  never overwrite, writes between a forward and its backward, no_grad, transforms, the source.
"""

from __future__ import annotations

import ast
import math
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_higher_order import Square  # a custom Function: Python state between passes
from test_table import COMPOSITIONS, FIRST_ORDER, ROW_IDS, TABLE, Case  # the table's own cases

import minigrad as mg
from minigrad import nn, optim, rules
from minigrad.nn import convolution, primitives
from minigrad.nn import functional as F  # noqa: N812  (PyTorch's spelling)

RTOL = 1e-10  # float64: the program runs the same NumPy calls as eager, up to summation order


def assert_close(got: Any, want: Any, rtol: float = RTOL) -> None:
    got = got.data if isinstance(got, mg.Tensor) else got
    want = want.data if isinstance(want, mg.Tensor) else want
    assert np.shape(got) == np.shape(want), (np.shape(got), np.shape(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-3)


def shuffled(a: np.ndarray, seed: int) -> np.ndarray:
    """The same values in another order: a second input that stays off the kinks, ties and
    domain edges the first was drawn to avoid, and differs from it where it has two values."""
    flat = np.asarray(a).ravel()
    order = np.random.default_rng(seed).permutation(flat.size)
    if flat.size > 1 and np.array_equal(order, np.arange(flat.size)):
        order = np.roll(order, 1)
    return flat[order].reshape(np.shape(a)).astype(np.asarray(a).dtype)


def weights_for(shape: tuple[int, ...]) -> np.ndarray:
    """An upstream that is not all ones: a transposed or misplaced gradient shows."""
    return np.linspace(0.5, 1.5, math.prod(shape)).reshape(shape)


# =============================================================================================
# 1. Every primitive, both forms
# =============================================================================================
def check_case(case: Case) -> None:
    """case.f compiled (a weighted sum as the loss) equals eager, on the case's inputs and then
    on the same values shuffled, as loss + backward() and as compiled value_and_grad."""
    n = len(case.inputs)
    w = weights_for(case.f(*[mg.tensor(a) for a in case.inputs]).shape)

    def loss(*xs: mg.Tensor) -> mg.Tensor:
        return (case.f(*xs) * w).sum()

    step = mg.compile(loss)
    vg = mg.compile(mg.value_and_grad(loss, argnums=tuple(range(n))))
    for seed in (0, 1):
        inputs = [a if seed == 0 else shuffled(a, seed) for a in case.inputs]
        eager_xs = [mg.tensor(a, requires_grad=True) for a in inputs]
        want = loss(*eager_xs)
        want.backward()
        xs = [mg.tensor(a, requires_grad=True) for a in inputs]
        got = step(*xs)
        assert got.requires_grad
        got.backward()
        assert_close(got, want)
        for x, ex in zip(xs, eager_xs):
            assert x.grad is not None and ex.grad is not None
            assert x.grad.dtype == ex.grad.dtype
            assert_close(x.grad, ex.grad)
        value, grads = vg(*inputs)
        assert_close(value, want)
        for g, ex in zip(grads, eager_xs):
            assert isinstance(g, mg.Tensor)
            assert_close(g, ex.grad)
    assert step.traces == 1 and vg.traces == 1


COMPILED_SETTINGS = settings(max_examples=15)


@pytest.mark.parametrize("row", TABLE, ids=ROW_IDS)
def test_every_row_compiles_to_eagers_values_and_gradients(row: rules.Primitive) -> None:
    build = FIRST_ORDER[row.name]

    @COMPILED_SETTINGS
    @given(d=st.data())
    def run(d: st.DataObject) -> None:
        check_case(build(d))

    run()


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_every_composition_compiles_to_eagers_values_and_gradients(name: str) -> None:
    @COMPILED_SETTINGS
    @given(d=st.data())
    def run(d: st.DataObject) -> None:
        check_case(COMPOSITIONS[name](d))

    run()


# --- nn: its own primitives and every function of nn.functional -----------------------------
RNG = np.random.default_rng(20240601)  # the cases below draw from it once, at import


@pytest.fixture(autouse=True)
def _values_of_a_test_do_not_depend_on_the_others() -> None:
    """Each test draws the same values whichever tests ran before it (-k reproduces a run)."""
    global RNG
    RNG = np.random.default_rng(20240602)


def _u(*shape: int, lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    return RNG.uniform(lo, hi, size=shape)


def _off_zero(*shape: int) -> np.ndarray:
    """|x| in [0.3, 2]: off the kinks at 0 (relu, leaky_relu, elu, abs)."""
    return RNG.uniform(0.3, 2.0, size=shape) * RNG.choice([-1.0, 1.0], size=shape)


def _distinct(*shape: int) -> np.ndarray:
    """Values at least 0.2 apart: max pooling never meets a tie."""
    n = math.prod(shape)
    return (RNG.permutation(n) * 0.25 - n * 0.125).reshape(shape)


TARGETS = np.array([0, 2, 1, 2, 0, 1])
TARGETS_2 = np.array([1, 1, 0, 2, 2, 0])
CLASS_W = np.array([0.5, 2.0, 1.25])
PROBS = RNG.uniform(0.1, 0.9, size=(6, 3))

# name -> (f, inputs): f maps Tensors to a Tensor; nn's rows and nn.functional, every option
NN_CASES: dict[str, tuple[Callable[..., mg.Tensor], list[np.ndarray]]] = {
    "erf": (primitives.erf, [_u(3, 4)]),
    "softplus": (lambda x: primitives.softplus(x, beta=1.5, threshold=2.0), [_off_zero(3, 4)]),
    "standardize": (lambda x: primitives.standardize(x, axis=(1,), eps=1e-5), [_u(3, 4)]),
    "linear_relu": (primitives.linear_relu, [_u(4, 3), _u(2, 3), _u(2)]),
    "linear_relu without bias": (primitives.linear_relu, [_u(2, 4, 3), _u(5, 3)]),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=1), [_u(2, 2, 5, 5),
                                                                        _u(3, 2, 3, 3), _u(3)]),
    "conv2d strided": (lambda x, w: F.conv2d(x, w, stride=2, padding=0, dilation=1),
                       [_u(1, 2, 6, 6), _u(2, 2, 2, 2)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2), [_distinct(2, 2, 4, 4)]),
    "linear": (F.linear, [_u(4, 3), _u(2, 3), _u(2)]),
    "relu": (F.relu, [_off_zero(4, 3)]),
    "tanh": (F.tanh, [_u(4, 3)]),
    "sigmoid": (F.sigmoid, [_u(4, 3)]),
    "softmax": (lambda x: F.softmax(x, axis=0), [_u(4, 3)]),
    "log_softmax": (lambda x: F.log_softmax(x, axis=1), [_u(4, 3)]),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), [_off_zero(4, 3)]),
    "gelu": (F.gelu, [_u(4, 3)]),
    "gelu tanh": (lambda x: F.gelu(x, approximate="tanh"), [_u(4, 3)]),
    "silu": (F.silu, [_u(4, 3)]),
    "elu": (lambda x: F.elu(x, alpha=0.7), [_off_zero(4, 3)]),
    "softplus fn": (lambda x: F.softplus(x, beta=2.0), [_u(4, 3)]),
    "dropout eval": (lambda x: F.dropout(x, 0.5, training=False), [_u(4, 3)]),
    "embedding": (lambda w: F.embedding(np.array([[0, 3], [3, 1]]), w), [_u(4, 3)]),
    "embedding padding": (lambda w: F.embedding(np.array([0, 3, 3, 1]), w, padding_idx=3),
                          [_u(4, 3)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, 3, w, b), [_u(4, 3), _u(3), _u(3)]),
    "batch_norm batch stats": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                               [_u(5, 3), _u(3), _u(3)]),
    "cross_entropy": (lambda z: F.cross_entropy(z, TARGETS), [_u(6, 3)]),
    "cross_entropy sum": (lambda z: F.cross_entropy(z, TARGETS, reduction="sum"), [_u(6, 3)]),
    "cross_entropy none": (lambda z: F.cross_entropy(z, TARGETS, reduction="none"), [_u(6, 3)]),
    "cross_entropy weight": (lambda z: F.cross_entropy(z, TARGETS, weight=CLASS_W), [_u(6, 3)]),
    "cross_entropy smoothing": (lambda z: F.cross_entropy(z, TARGETS, label_smoothing=0.2),
                                [_u(6, 3)]),
    "cross_entropy ignore": (lambda z: F.cross_entropy(z, np.array([0, -1, 1, 2, -1, 1]),
                                                       ignore_index=-1), [_u(6, 3)]),
    "nll_loss": (lambda z: F.nll_loss(F.log_softmax(z, axis=1), TARGETS, weight=CLASS_W),
                 [_u(6, 3)]),
    "mse_loss": (lambda p: F.mse_loss(p, PROBS), [_u(6, 3)]),
    "l1_loss": (lambda p: F.l1_loss(p, PROBS, reduction="sum"), [PROBS + _off_zero(6, 3)]),
    "smooth_l1_loss": (lambda p: F.smooth_l1_loss(p, PROBS, beta=0.5), [_u(6, 3)]),
    "huber_loss": (lambda p: F.huber_loss(p, PROBS, delta=0.5, reduction="none"), [_u(6, 3)]),
    "binary_cross_entropy_with_logits": (
        lambda z: F.binary_cross_entropy_with_logits(z, PROBS), [_u(6, 3)]),
    "binary_cross_entropy_with_logits weights": (lambda z: F.binary_cross_entropy_with_logits(
        z, PROBS, weight=PROBS[0], pos_weight=CLASS_W), [_u(6, 3)]),
    "batch_norm running stats": (lambda x, w, b: F.batch_norm(
        x, PROBS[0], PROBS[1] + 0.5, w, b, training=False), [_u(5, 3), _u(3), _u(3)]),
}


def nn_primitives() -> list[rules.Primitive]:
    return [v for m in (primitives, convolution) for v in vars(m).values()
            if isinstance(v, rules.Primitive)]


def test_every_nn_primitive_and_function_has_a_compiled_case() -> None:
    """A new row in nn, or a new function in nn.functional, needs a case here (the rows that
    only VJPs record are reached through the compiled backward of the row they belong to)."""
    vjp_rows = {"conv2d_windows_vjp", "max_pool2d_vjp", "max_pool2d_pick", "conv2d_windows"}
    covered = {name.split()[0] for name in NN_CASES}
    assert not {p.name for p in nn_primitives()} - vjp_rows - covered
    public = {n for n in F.__all__ if callable(getattr(F, n))}
    assert not public - covered, f"nn.functional without a compiled case: {public - covered}"


@pytest.mark.parametrize("name", sorted(NN_CASES))
def test_nn_functions_compile_to_eagers_values_and_gradients(name: str) -> None:
    f, inputs = NN_CASES[name]
    check_case(Case(f, inputs))


VALUE_DEPENDENT: dict[str, tuple[Callable[[mg.Tensor, np.ndarray], mg.Tensor],
                                  list[np.ndarray]]] = {
    "leaky_relu": (lambda x, y: F.leaky_relu(x * mg.Tensor(y), 0.1).sum(),
                   [PROBS - 0.5, 0.5 - PROBS]),
    "elu": (lambda x, y: F.elu(x - mg.Tensor(y)).sum(), [PROBS, -PROBS]),
    "bce": (lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=CLASS_W),
            [PROBS, PROBS[::-1]]),
    "cross_entropy": (lambda x, t: F.cross_entropy(x, t, weight=CLASS_W, label_smoothing=0.1),
                      [TARGETS, TARGETS_2]),
    "cross_entropy ignore": (lambda x, t: F.cross_entropy(x, t, ignore_index=2),
                             [TARGETS, TARGETS_2, np.array([0, 1, 0, 1, 1, 0])]),
    "nll_loss": (lambda x, t: F.nll_loss(x, t, weight=CLASS_W), [TARGETS, TARGETS_2]),
    "embedding": (lambda x, i: (F.embedding(i, x) ** 2).sum(), [TARGETS, TARGETS_2]),
    "embedding padding": (lambda x, i: (F.embedding(i, x, padding_idx=2) ** 2).sum(),
                          [TARGETS, TARGETS_2, np.array([0, 1, 0, 1, 1, 0])]),
    "where": (lambda x, y: mg.where(mg.Tensor(y) > 0.5, x, -x).sum(), [PROBS, PROBS[::-1]]),
}


@pytest.mark.parametrize("kind", sorted(VALUE_DEPENDENT))
def test_what_nn_computes_from_an_arguments_values_is_read_at_every_call(kind: str) -> None:
    """A mask, weight or index that minigrad computes from an argument's values (leaky_relu's
    slopes, elu's branch, the targets' rows and weights) belongs to that call, not the trace."""
    f, seconds = VALUE_DEPENDENT[kind]
    step = mg.compile(f)
    x = _off_zero(6, 3)
    for y in seconds:
        xs = mg.tensor(x, requires_grad=True), mg.tensor(x, requires_grad=True)
        want, got = f(xs[0], y), step(xs[1], y)
        assert_close(got, want)
        want.backward()
        got.backward()
        assert_close(xs[1].grad, xs[0].grad)
    assert step.traces == 1


# =============================================================================================
# 2. The examples' networks, trained: compiled steps equal eager steps
# =============================================================================================
STEPS = 50
TRAIN_RTOL = 1e-8  # 50 Adam steps: rounding differences of a sum's order may grow a little


def cartpole_policy(seed: int) -> nn.Sequential:
    """examples/cartpole_reinforce.py's policy: 4 → 32 → 2, ReLU."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(4, 32, rng=rng), nn.ReLU(), nn.Linear(32, 2, rng=rng))


def cartpole_batches(seed: int, n: int = 256) -> list[tuple[Any, ...]]:
    """Observations, actions and normalised returns of STEPS updates (a batch of 256 steps:
    the intermediates are large enough for the memory plan to place them)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        adv = rng.normal(size=n)
        out.append((rng.normal(size=(n, 4)), rng.integers(0, 2, size=n),
                    (adv - adv.mean()) / adv.std(), float(rng.uniform(0.0, 0.02))))
    return out


def make_policy_loss(policy: nn.Module) -> Callable[..., mg.Tensor]:
    def policy_loss(obs: np.ndarray, actions: np.ndarray, adv: np.ndarray,
                    entropy: float) -> mg.Tensor:
        """examples/cartpole_reinforce.py's update, with the entropy weight an argument."""
        logp_all = policy(mg.Tensor(obs)).log_softmax(axis=-1)
        logp = logp_all[np.arange(len(actions)), actions]
        loss = -(logp * adv).mean()
        return loss + entropy * (logp_all.exp() * logp_all).sum(axis=-1).mean()
    return policy_loss


def train_backward(model: nn.Module, loss_fn: Callable[..., mg.Tensor],
                   batches: list[tuple[Any, ...]], clip: float | None = None) -> list[float]:
    """STEPS updates: loss_fn(*batch).backward(), gradient clipping, Adam."""
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for batch in batches:
        opt.zero_grad()
        loss = loss_fn(*batch)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
    return losses


def assert_same_training(eager: nn.Module, compiled: nn.Module, le: list[float],
                         lc: list[float]) -> None:
    np.testing.assert_allclose(lc, le, rtol=TRAIN_RTOL)
    for (name, p), (_, q) in zip(eager.named_parameters(), compiled.named_parameters()):
        np.testing.assert_allclose(q.data, p.data, rtol=TRAIN_RTOL, atol=1e-12, err_msg=name)
    assert not np.allclose(le[0], le[-1]), "the training must move the parameters"


def test_cartpole_policy_trains_the_same_compiled() -> None:
    batches = cartpole_batches(0)
    eager, compiled = cartpole_policy(1), cartpole_policy(1)
    le = train_backward(eager, make_policy_loss(eager), batches, clip=1.0)
    step = mg.compile(make_policy_loss(compiled))
    lc = train_backward(compiled, step, batches, clip=1.0)
    assert_same_training(eager, compiled, le, lc)
    assert step.traces == 1  # new arrays, new entropy weights: one trace


def digits_mlp(seed: int) -> nn.Sequential:
    """examples/digits_mlp.py's network, narrower: 64 → 32 → 32 → 10."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32, rng=rng), nn.ReLU(),
                         nn.Linear(32, 32, rng=rng), nn.ReLU(), nn.Linear(32, 10, rng=rng))


def digits_cnn(seed: int) -> nn.Sequential:
    """examples/digits_cnn.py's network with 4 channels: conv, pool, conv, pool, linear."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 10, rng=rng))


def digit_batches(seed: int, image: tuple[int, ...], n: int = 64) -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    return [(rng.uniform(0, 16, size=(n, *image)), rng.integers(0, 10, size=n))
            for _ in range(STEPS)]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_digits_networks_train_the_same_compiled(kind: str) -> None:
    build, image = (digits_mlp, (8, 8)) if kind == "mlp" else (digits_cnn, (1, 8, 8))
    batches = digit_batches(2, image, n=64 if kind == "mlp" else 16)
    eager, compiled = build(3), build(3)

    def loss_of(model: nn.Module) -> Callable[..., mg.Tensor]:
        return lambda x, y: F.cross_entropy(model(mg.Tensor(x)), y)

    le = train_backward(eager, loss_of(eager), batches)
    step = mg.compile(loss_of(compiled))
    lc = train_backward(compiled, step, batches)
    assert_same_training(eager, compiled, le, lc)
    assert step.traces == 1


class CharRNN(nn.Module):
    """examples/char_rnn.py's model: embedding → tanh recurrence → linear read-out."""

    def __init__(self, vocab: int, hidden: int, rng: np.random.Generator) -> None:
        self.embed = nn.Embedding(vocab, hidden, rng=rng)
        self.recur = nn.Linear(hidden, hidden, rng=rng)
        self.head = nn.Linear(hidden, vocab, rng=rng)

    def forward(self, idx: np.ndarray) -> mg.Tensor:
        states: list[mg.Tensor] = []
        h: mg.Tensor | None = None
        for e in mg.unbind(self.embed(idx), axis=1):
            h = (e if h is None else e + self.recur(h)).tanh()
            states.append(h)
        return self.head(mg.stack(states, axis=1))


def text_batches(seed: int, vocab: int, length: int = 20, n: int = 8
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        ids = rng.integers(0, vocab, size=(n, length + 1))
        out.append((ids[:, :-1], ids[:, 1:]))
    return out


def test_char_rnn_over_20_steps_trains_the_same_compiled() -> None:
    """A 20-step Python loop over time, unrolled into one program; the targets reshaped inside
    the step (a view of an argument is a line of the program, read afresh at each call)."""
    vocab = 7
    batches = text_batches(4, vocab)
    eager, compiled = (CharRNN(vocab, 12, np.random.default_rng(5)) for _ in range(2))

    def loss_of(model: CharRNN) -> Callable[..., mg.Tensor]:
        return lambda x, y: F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))

    le = train_backward(eager, loss_of(eager), batches, clip=1.0)
    step = mg.compile(loss_of(compiled))
    lc = train_backward(compiled, step, batches, clip=1.0)
    assert_same_training(eager, compiled, le, lc)
    assert step.traces == 1


def mlp_apply(params: list[mg.Tensor], x: Any) -> mg.Tensor:
    """The digits MLP written on its parameters, for the functional form."""
    h = mg.Tensor(x).reshape(len(x), -1)
    for i in range(0, len(params) - 2, 2):
        h = F.linear(h, params[i], params[i + 1]).relu()
    return F.linear(h, params[-2], params[-1])


def test_compiled_value_and_grad_trains_the_same() -> None:
    """mg.compile(mg.value_and_grad(loss)) over the parameters as a pytree (of arrays: the
    JAX style): one program for the forward and the backward, (value, grads) as eager's."""
    batches = digit_batches(6, (8, 8))

    def loss(params: list[mg.Tensor], x: np.ndarray, y: np.ndarray) -> mg.Tensor:
        return F.cross_entropy(mlp_apply(params, x), y)

    results = []
    for vg in (mg.value_and_grad(loss), mg.compile(mg.value_and_grad(loss))):
        params = list(digits_mlp(7).parameters())
        opt = optim.Adam(params, lr=1e-2)
        losses = []
        for x, y in batches:
            value, grads = vg([p.detach() for p in params], x, y)
            assert isinstance(grads, list) and len(grads) == len(params)
            assert not value.requires_grad
            for p, g in zip(params, grads):
                p.grad = g.data
            losses.append(value.item())
            opt.step()
        results.append((losses, [p.data.copy() for p in params]))
        assert getattr(vg, "traces", 1) == 1
    (le, pe), (lc, pc) = results
    np.testing.assert_allclose(lc, le, rtol=TRAIN_RTOL)
    for p, q in zip(pe, pc):
        np.testing.assert_allclose(q, p, rtol=TRAIN_RTOL, atol=1e-12)


def test_compiled_value_and_grad_of_parameters_is_on_the_tape_as_eager() -> None:
    """Given the parameters themselves (they require grad), value and gradients are recorded,
    as eager's are: a backward through the compiled value reaches the parameters."""
    def loss(params: list[mg.Tensor], x: np.ndarray, y: np.ndarray) -> mg.Tensor:
        return F.cross_entropy(mlp_apply(params, x), y)

    vg = mg.compile(mg.value_and_grad(loss))
    for x, y in digit_batches(8, (8, 8))[:3]:
        got_params, want_params = list(digits_mlp(9).parameters()), list(digits_mlp(9).parameters())
        (value, grads), (want, want_grads) = vg(got_params, x, y), \
            mg.value_and_grad(loss)(want_params, x, y)
        assert value.requires_grad and want.requires_grad
        assert_close(value, want)
        for g, w in zip(grads, want_grads):
            assert_close(g, w)
        (value + sum((g * g).sum() for g in grads)).backward()
        (want + sum((g * g).sum() for g in want_grads)).backward()
        for p, q in zip(got_params, want_params):
            assert_close(p.grad, q.grad)
    assert vg.traces == 1


# =============================================================================================
# 3. Retracing exactly when the signature changes
# =============================================================================================
def test_a_new_signature_traces_again_and_nothing_else_does() -> None:
    lin = nn.Linear(3, 2, rng=0)
    step = mg.compile(lambda x, n, scale: (lin(x) * n * scale).sum())
    x = _u(5, 3)

    def call(*args: Any) -> int:
        step(*args)
        return step.traces

    assert call(x, 2, 0.5) == 1
    assert call(x + 1.0, 2, 0.5) == 1, "new array values"
    assert call(x, 2, 0.25) == 1, "a new float value (a learning rate): an input"
    assert call(mg.tensor(x), 2, 0.5) == 2, "an array became a Tensor"
    assert call(mg.tensor(x + 3.0), 2, 0.5) == 2, "a new Tensor of the same signature"
    assert call(x, 3, 0.5) == 3, "a new int value"
    assert call(x, True, 0.5) == 4, "a bool is not the int 1"
    assert call(x[:2], 3, 0.5) == 5, "a new shape"
    assert call(x.astype(np.float32), 3, 0.5) == 6, "a new dtype"
    assert call(mg.tensor(x, requires_grad=True), 3, 0.5) == 7, "requires_grad"
    with mg.no_grad():
        assert call(mg.tensor(x, requires_grad=True), 3, 0.5) == 8, "grad mode"
    assert call(x, 3, 0.5) == 8, "a signature seen before (still among the last 8)"


@pytest.mark.parametrize("case", ["vector", "row", "matrices", "mixed dtypes", "large"])
def test_small_products_are_dot_with_kernels_and_equal_eagers(case: str) -> None:
    # lowering.small_products: `a.dot(b)` for a small float product of at most 2-D operands
    # (kernels on), `a @ b` in plain mode; the values are eager's either way.
    from minigrad import kernels
    from minigrad.lowering import SMALL_PRODUCT

    shapes = {"vector": ((4,), (3, 4)), "row": ((1, 4), (3, 4)), "matrices": ((5, 4), (3, 4)),
              "mixed dtypes": ((5, 4), (3, 4)), "large": ((100, 4), (50, 4))}[case]
    x = _u(*shapes[0]).astype(np.float32 if case == "mixed dtypes" else np.float64)
    w = mg.tensor(_u(*shapes[1]), requires_grad=True)
    b = mg.tensor(_u(shapes[1][0]), requires_grad=True)

    def loss(w: mg.Tensor, b: mg.Tensor, x: Any) -> mg.Tensor:
        return (mg.nn.functional.linear(x, w, b).tanh() @ w).sum()

    step = mg.compile(mg.value_and_grad(loss, argnums=(0, 1)))
    with mg.no_grad():
        got, grads = step(w, b, x)
        got, grads = step(w, b, x)  # replayed
    want, want_grads = mg.value_and_grad(loss, argnums=(0, 1))(w, b, mg.Tensor(x))
    assert_close(got, want)
    for g, h in zip(grads, want_grads):
        assert_close(g, h)
    small = kernels.ENABLED and case != "large"  # x wᵀ: 100 × 50 elements, over the bound
    assert ("x.dot(w.T) + b" in step.source) == small, step.source
    assert ("x @ w.mT + b" in step.source) == (not small), step.source
    assert 100 * 50 > SMALL_PRODUCT


def test_a_transposed_product_of_a_stack_is_not_rewritten() -> None:
    # peephole: (ab)ᵀ = bᵀaᵀ for two matrices; a (2, 3, 3) stack times a vector is 2-D too,
    # and bᵀaᵀ would multiply along the wrong axes.
    a, b, w = mg.tensor(_u(2, 3, 3)), mg.tensor(_u(3)), mg.tensor(_u(3, 2))

    def f(a: mg.Tensor, b: mg.Tensor) -> mg.Tensor:
        return (a @ b).T * w

    step = mg.compile(f)
    step(a, b)
    assert_close(step(a, b), f(a, b))


def test_clear_and_lru_order_hold_against_a_late_use() -> None:
    step = mg.compile(lambda x, k: x * k)
    x = mg.tensor(_u(3))
    step(x, 1), step(x, 2)
    key, program = step._quick[-1][1], step._quick[-1][2]
    step.clear()
    step._used(key, program)  # what a thread that read the entries before clear() does next
    assert step._quick == () and step.traces == 2
    step(x, 1)
    assert step.traces == 3, "clear(): the next call traces again"
    # a program traced again because its checks failed is the most recently used one
    model = nn.Linear(3, 2, rng=0)
    step = mg.compile(lambda x, k: model(x) * k)
    for k in range(8):
        step(x, k)
    model.weight = mg.tensor(_u(2, 3), requires_grad=True)  # the first program's check fails
    step(x, 0)
    assert step.traces == 9
    with pytest.warns(RuntimeWarning, match="more than 8 signatures"):
        step(x, 100)  # drops the least recently used: k=1, not the k=0 just traced again
    step(x, 0)
    assert step.traces == 10


def test_signatures_used_in_turn_each_replay_their_own_program() -> None:
    # A call first tries the recent programs' own checks of the whole signature: two programs
    # used in turn (an action index 0 or 1, a batch of one shape or another) must each get
    # exactly their calls, with the values of the call.
    def f(w: mg.Tensor, x: Any, a: int, scale: float) -> mg.Tensor:
        return (x @ w)[0, a] * scale

    w = mg.tensor(_u(4, 3), requires_grad=True)
    step = mg.compile(mg.value_and_grad(f))
    rng = np.random.default_rng(5)
    for k in range(12):
        x, a, scale = rng.normal(size=(1 + k % 2, 4)), int(rng.integers(0, 2)), float(k)
        with mg.no_grad():
            got, g = step(w, x, a, scale)
        want, g_want = mg.value_and_grad(f)(w, mg.Tensor(x), a, scale)
        assert_close(got, want)
        assert_close(g, g_want)
    assert step.traces == 4, "two shapes of x times two actions"
    with mg.no_grad():
        step(w, x, 1, np.float64(2.0))  # a NumPy scalar is an input of its own kind
        step(w, mg.tensor(x), 1, scale)  # a Tensor where an array was
        step(w, x, 1, 2)  # an int where a float was
    assert step.traces == 7


def test_module_flags_and_replaced_parameters_trace_again() -> None:
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Tanh(), nn.Linear(4, 2, rng=1))
    step = mg.compile(lambda x: model(x).sum())
    x = _u(5, 3)

    def same() -> None:
        assert_close(step(x), model(mg.tensor(x)).sum())

    same()
    model.eval()
    same()
    assert step.traces == 2, "training flag"
    model.train()
    same()
    assert step.traces == 3
    model[0].weight = mg.tensor(_u(4, 3), requires_grad=True)  # a nested module's parameter
    same()
    assert step.traces == 4
    model[2].bias.data = _u(2)  # the same Tensor, a new array: read afresh, no new trace
    model[0].weight.data[...] = 0.5  # written in place: also read afresh
    same()
    assert step.traces == 4
    model[2].bias.data = _u(3)[:2].astype(np.float32)  # a new dtype
    same()
    assert step.traces == 5
    model[2].bias.requires_grad = False
    same()
    assert step.traces == 6


class Agent:
    """Plain Python holding a model: fn a bound method, the model two attributes away."""

    def __init__(self) -> None:
        self.policy = nn.Sequential(nn.Linear(3, 2, rng=0))
        self.layers = [nn.Linear(2, 2, rng=1)]

    def loss(self, x: np.ndarray) -> mg.Tensor:
        return self.layers[0](self.policy(mg.Tensor(x))).sum()


def test_a_parameter_replaced_anywhere_on_the_way_is_seen() -> None:
    agent = Agent()
    x = _u(4, 3)
    for step in (mg.compile(agent.loss), mg.compile(lambda x: agent.loss(x))):
        assert_close(step(x), agent.loss(x))
        agent.layers[0] = nn.Linear(2, 2, rng=2)  # an item of a list
        assert_close(step(x), agent.loss(x))
        agent.policy[0].weight = mg.tensor(_u(2, 3), requires_grad=True)
        assert_close(step(x), agent.loss(x))
        agent.policy = nn.Sequential(nn.Linear(3, 2, rng=3))
        assert_close(step(x), agent.loss(x))
        assert step.traces == 4
    lin = nn.Linear(3, 2, rng=0)
    for step in (mg.compile(lin), mg.compile(lin.forward)):  # a Module, a bound method
        assert_close(step(x), lin(x))
        lin.weight = mg.tensor(_u(2, 3), requires_grad=True)
        assert_close(step(x), lin(x))
        assert step.traces == 2


def test_a_global_model_replaced_is_seen() -> None:
    global GLOBAL_MODEL
    GLOBAL_MODEL = nn.Linear(3, 2, rng=0)
    step = mg.compile(global_model_loss)
    x = _u(4, 3)
    assert_close(step(x), global_model_loss(x))
    GLOBAL_MODEL = nn.Linear(3, 2, rng=1)
    assert_close(step(x), global_model_loss(x))
    assert step.traces == 2


GLOBAL_MODEL = nn.Linear(3, 2, rng=0)


def global_model_loss(x: np.ndarray) -> mg.Tensor:
    return GLOBAL_MODEL(mg.Tensor(x)).sum()


def test_static_arguments_are_the_signature() -> None:
    def f(x: mg.Tensor, how: str, n: int) -> mg.Tensor:
        return (x.tanh() if how == "tanh" else x.sin()).sum() * n

    step = mg.compile(f, static_argnums=(1,))
    x = mg.tensor(_u(3))
    for how in ("tanh", "sin", "tanh"):
        assert_close(step(x, how, 2), f(x, how, 2))
    assert step.traces == 2
    with pytest.raises(TypeError, match="static argument 1 must be hashable"):
        step(x, ["tanh"], 2)


def test_at_most_8_traces_are_kept_and_dropping_one_warns_what_changed() -> None:
    step = mg.compile(lambda x, n: (x * n).sum())
    x = mg.tensor(_u(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n in range(8):
            step(x, n)
    assert step.traces == 8
    with pytest.warns(RuntimeWarning, match="more than 8 signatures") as caught:
        step(x, 8)
    assert "Argument leaf 1 changed from int 7 to int 8" in str(caught[0].message)
    assert step.traces == 9
    step(x, 8)  # kept
    step(x, 1)  # the least recently used (n=0) was dropped, n=1 is still there
    assert step.traces == 9
    with pytest.warns(RuntimeWarning):
        step(x, 0)
    assert step.traces == 10
    step.clear()
    step(x, 1)
    assert step.traces == 11


# =============================================================================================
# 4. CompileError, naming the user's line
# =============================================================================================
DROPOUT = nn.Dropout(0.5, rng=0)
BATCH_NORM = nn.BatchNorm1d(3)


def refused_branch(x: mg.Tensor, a: np.ndarray, lr: float) -> mg.Tensor:
    loss = (x * 2).sum()
    if loss > 0:  # REFUSED: bool
        return loss
    return -loss


REFUSED: dict[str, Callable[[mg.Tensor, np.ndarray, float], Any]] = {
    "bool": refused_branch,
    "float": lambda x, a, lr: x * float(x.sum()),  # REFUSED: float
    "item": lambda x, a, lr: x * x.sum().item(),  # REFUSED: item
    "asarray": lambda x, a, lr: mg.tensor(np.asarray(x) * 2),  # REFUSED: asarray
    "numpy": lambda x, a, lr: mg.tensor(x.numpy() + 1),  # REFUSED: numpy
    "data": lambda x, a, lr: x * x.data.max(),  # REFUSED: data
    "backward": lambda x, a, lr: (x * 2).sum().backward(),  # REFUSED: backward
    "opt.step": lambda x, a, lr: optim.SGD([x], lr=0.1).step(),  # REFUSED: opt.step
    "dropout": lambda x, a, lr: DROPOUT(x),  # REFUSED: dropout
    "batch_norm": lambda x, a, lr: BATCH_NORM(x.reshape(1, 3) * mg.ones((4, 1))),  # REFUSED: bn
    "numpy on an argument": lambda x, a, lr: x * (a * 2),  # REFUSED: numpy on an argument
    "a number of an argument": lambda x, a, lr: x * a[0],  # REFUSED: a number of an argument
    "iterating an argument": lambda x, a, lr: x * sum(a),  # REFUSED: iterating an argument
    "float comparison": lambda x, a, lr: x if lr > 0 else -x,  # REFUSED: cmp
    "float conversion": lambda x, a, lr: x * int(lr * 10),  # REFUSED: int
    "custom Function": lambda x, a, lr: Square.apply(x),  # REFUSED: custom Function
    "boolean mask": lambda x, a, lr: x[mg.Tensor(a) > 0].sum(),  # REFUSED: mask
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_a_replay_would_get_wrong_is_refused_at_the_users_line(case: str) -> None:
    fn = REFUSED[case]
    step = mg.compile(fn)
    with pytest.raises(mg.CompileError) as info:
        step(mg.tensor(_u(3), requires_grad=True), np.array([1.0, -2.0, 3.0]), 0.5)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert __file__ in message and "REFUSED" in message, message
    assert step.traces == 0
    DROPOUT.eval()
    BATCH_NORM.eval()
    if case in ("dropout", "batch_norm"):  # in eval mode they compile, and equal eager
        x = mg.tensor(_u(3))
        assert_close(mg.compile(fn)(x, np.zeros(3), 0.5), fn(x, np.zeros(3), 0.5))
    DROPOUT.train()
    BATCH_NORM.train()


def test_a_refused_trace_leaves_the_step_usable() -> None:
    """The modes are restored and nothing is cached: the next call traces afresh."""
    def f(x: mg.Tensor, ok: bool) -> mg.Tensor:
        y = (x * 2).sum()
        return y if ok else y * y.item()

    step = mg.compile(f)
    x = mg.tensor(_u(3), requires_grad=True)
    with pytest.raises(mg.CompileError):
        step(x, False)
    assert_close(step(x, True), f(x, True))
    assert step.traces == 1 and mg.is_grad_enabled()


# =============================================================================================
# 5. Arrays given as arguments are read at every call, never baked in
# =============================================================================================
def test_index_arrays_are_read_afresh_at_every_call() -> None:
    """The actions picked, an embedding's ids, (row, column) pairs and a Tensor of indices change
    per call: values and gradients follow them, and repeated indices accumulate even where the
    trace's were distinct."""
    def f(logits: mg.Tensor, actions: np.ndarray, ids: np.ndarray, rows: mg.Tensor,
          table: mg.Tensor, cols: np.ndarray) -> mg.Tensor:
        picked = logits.log_softmax(axis=1)[np.arange(len(actions)), actions]
        pairs = table[ids, cols] * weights_for((4,))  # two arguments: (i, j) pairs
        return (picked * weights_for(picked.shape)).sum() + (table[ids] ** 2).sum() + \
            logits[rows].sum() + pairs.sum()

    step = mg.compile(f)
    logits, table = _u(6, 3), _u(5, 2)
    calls = [(np.array([0, 1, 2, 0, 1, 2]), np.array([0, 1, 2, 3]), np.array([5, 4])),
             (np.array([2, 2, 2, 1, 1, 1]), np.array([4, 4, 4, 0]), np.array([1, 1])),
             (np.array([1, 0, 1, 0, 1, 0]), np.array([3, 2, 3, 2]), np.array([0, 3]))]
    for (actions, ids, rows), cols in zip(calls, ([0, 1, 0, 1], [1, 1, 1, 0], [0, 0, 0, 0])):
        xs = [mg.tensor(logits, requires_grad=True), mg.tensor(table, requires_grad=True)]
        ys = [mg.tensor(logits, requires_grad=True), mg.tensor(table, requires_grad=True)]
        want = f(xs[0], actions, ids, mg.tensor(rows), xs[1], np.array(cols))
        got = step(ys[0], actions, ids, mg.tensor(rows), ys[1], np.array(cols))
        assert_close(got, want)
        want.backward()
        got.backward()
        for a, b in zip(ys, xs):
            assert_close(a.grad, b.grad)
    assert step.traces == 1


def test_what_eager_checks_in_an_arguments_values_a_compiled_step_checks_at_every_call() -> None:
    """Targets out of range, an embedding index past the table (or negative, which NumPy would
    take from the end): refused with eager's error at any call, not only at the trace."""
    table = mg.tensor(_u(4, 3), requires_grad=True)
    emb = mg.compile(lambda i: F.embedding(i, table).sum())
    ce = mg.compile(lambda z, t: F.cross_entropy(z, t, ignore_index=-100))
    emb(np.array([0, 1]))
    ce(mg.tensor(_u(2, 3)), np.array([0, 2]))
    for bad in (np.array([4, 1]), np.array([-1, 1])):
        with pytest.raises(IndexError, match="out of range"):
            F.embedding(bad, table)
        with pytest.raises(IndexError, match="out of range"):
            emb(bad)
    for bad in (np.array([3, 1]), np.array([-1, 0])):
        with pytest.raises(ValueError, match="out of range"):
            F.cross_entropy(mg.tensor(_u(2, 3)), bad)
        with pytest.raises(ValueError, match="out of range"):
            ce(mg.tensor(_u(2, 3)), bad)
    assert emb.traces == 1 and ce.traces == 1


def test_arrays_made_inside_the_step_are_constants_and_views_of_arguments_are_lines() -> None:
    def f(x: np.ndarray, y: np.ndarray) -> mg.Tensor:
        w = np.linspace(0.0, 1.0, 6)  # made inside: a constant of the program
        z = mg.Tensor(x.reshape(-1)) * w + mg.Tensor(y.T[0]).astype(np.float64).sum()
        return z.sum() + mg.Tensor(x[:, 1:].copy()).sum()

    step = mg.compile(f)
    for seed in range(3):
        x, y = _u(2, 3) + seed, np.arange(4).reshape(2, 2) * (seed + 1)
        assert_close(step(x, y), f(x, y))
    assert step.traces == 1


def test_pytrees_in_and_out() -> None:
    lin = nn.Linear(3, 2, rng=0)

    def f(batch: dict[str, Any], scales: list[float]) -> dict[str, Any]:
        h = lin(mg.Tensor(batch["x"]))
        return {"loss": (h * scales[0]).sum() + (h * scales[1]).mean(),
                "parts": [h.tanh(), h.detach()]}

    step = mg.compile(f)
    for seed in range(2):
        batch = {"x": _u(4, 3) + seed}
        got, want = step(batch, [0.5, 2.0 + seed]), f(batch, [0.5, 2.0 + seed])
        assert set(got) == {"loss", "parts"} and len(got["parts"]) == 2
        assert_close(got["loss"], want["loss"])
        for a, b in zip(got["parts"], want["parts"]):
            assert_close(a, b)
    assert step.traces == 1


def test_float_arguments_keep_float32_float32_and_their_gradients_follow_them() -> None:
    """A Python float is a scalar NumPy keeps at the array's precision, in the forward and in
    the backward; in the backward its value is the call's (power's rule reads the exponent)."""
    def f(x: mg.Tensor, lr: float, p: float) -> mg.Tensor:
        scale = lr * (1.0 - p / 4) + abs(-p) ** 0.5  # arithmetic on floats: lines too
        return (x * scale + (x.abs() + 1.0) ** p + lr / (x * x + 1.0)).sum()

    step = mg.compile(f)
    for dtype in (np.float32, np.float64):
        for lr, p in ((0.1, 2.0), (0.3, 3.5), (1e-3, -0.5)):
            a, b = (mg.tensor(_u(8).astype(dtype), requires_grad=True) for _ in range(2))
            b.data[...] = a.data
            got, want = step(a, lr, p), f(b, lr, p)
            assert got.dtype == want.dtype == dtype
            got.backward()
            want.backward()
            assert a.grad is not None and b.grad is not None
            assert a.grad.dtype == dtype
            rtol = 1e-6 if dtype == np.float32 else RTOL
            assert_close(got, want, rtol)
            assert_close(a.grad, b.grad, rtol)
    assert step.traces == 2  # one per dtype


# =============================================================================================
# 6. Threads
# =============================================================================================
def test_threads_calling_one_compiled_step_get_eagers_results() -> None:
    lin = nn.Linear(64, 64, rng=0)  # (128, 64) intermediates: the memory plan's buffers

    def f(x: mg.Tensor) -> mg.Tensor:
        return (lin(x).tanh() ** 2).sum() + lin(x * 0.5).relu().mean()

    step = mg.compile(f)
    vg = mg.compile(mg.value_and_grad(f))
    inputs = [_u(128, 64) for _ in range(6)]
    want = []
    for a in inputs:
        x = mg.tensor(a, requires_grad=True)
        loss = f(x)
        loss.backward()
        want.append((loss.item(), x.grad))
    lin.zero_grad()
    failures: list[str] = []
    barrier = threading.Barrier(len(inputs))

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(8):
                x = mg.tensor(inputs[i], requires_grad=True)
                loss = step(x)
                value, g = vg(inputs[i])
                loss.backward()
                np.testing.assert_allclose(loss.item(), want[i][0], rtol=RTOL)
                np.testing.assert_allclose(value.item(), want[i][0], rtol=RTOL)
                np.testing.assert_allclose(x.grad, want[i][1], rtol=RTOL)
                np.testing.assert_allclose(g.data, want[i][1], rtol=RTOL)
        except Exception as e:  # noqa: BLE001  (reported by the main thread)
            failures.append(f"thread {i}: {e!r}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: calls interleave mid-program
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures
    assert not any(t.is_alive() for t in threads)
    # every thread's backward added into the shared parameters: 8 times each thread's gradient
    total = mg.tensor(np.zeros(()))
    for a in inputs:
        total = total + f(mg.tensor(a))
    lin.zero_grad()
    (total * 8.0).backward()
    want_w = lin.weight.grad
    lin.zero_grad()
    for a in inputs:
        for _ in range(8):
            step(mg.tensor(a)).backward()
    np.testing.assert_allclose(lin.weight.grad, want_w, rtol=1e-9)


# =============================================================================================
# 7. Forwards before backwards, outputs never overwritten, writes between forward and backward
# =============================================================================================
def big_step() -> tuple[nn.Linear, Callable[..., Any]]:
    """A step whose intermediates are large enough for the memory plan: (96, 64) float64."""
    lin = nn.Linear(64, 64, rng=3)

    def f(x: np.ndarray) -> tuple[mg.Tensor, mg.Tensor]:
        h = lin(mg.Tensor(x)).tanh()
        return (h * h).sum(), h.detach() * 2.0
    return lin, f


def test_two_forwards_then_two_backwards_and_outputs_are_never_overwritten() -> None:
    lin, f = big_step()
    step = mg.compile(f)
    xs = [_u(96, 64) for _ in range(4)]
    step(xs[3])  # the trace; the calls below replay
    outs = [step(x) for x in xs[:2]]
    kept = [(loss.item(), aux.data.copy()) for loss, aux in outs]
    for x in xs[2:]:
        step(x)  # later calls
    grads = []
    for k in (1, 0):  # backwards in the reverse order
        lin.zero_grad()
        outs[k][0].backward()
        grads.append((k, lin.weight.grad, lin.bias.grad))
    for k, (loss, aux) in enumerate(outs):
        assert loss.item() == kept[k][0]
        np.testing.assert_array_equal(aux.data, kept[k][1])
        want_loss, want_aux = f(xs[k])
        assert_close(loss, want_loss)
        assert_close(aux, want_aux)
    for k, gw, gb in grads:
        lin.zero_grad()
        f(xs[k])[0].backward()
        assert_close(gw, lin.weight.grad)
        assert_close(gb, lin.bias.grad)


def test_gradients_handed_out_are_never_overwritten() -> None:
    lin, f = big_step()
    vg = mg.compile(mg.value_and_grad(lambda x: f(x)[0]))
    xs = [_u(96, 64) for _ in range(3)]
    vg(xs[2])
    first = vg(mg.tensor(xs[0]))
    kept = first[1].data.copy()
    vg(mg.tensor(xs[1]))
    np.testing.assert_array_equal(first[1].data, kept)
    assert_close(first[1], mg.grad(lambda x: f(x)[0])(xs[0]))


def written_between(step: Callable[..., Any], write: Callable[[nn.Linear], None],
                    lin: nn.Linear, x: np.ndarray) -> str:
    """Forward, the write, backward: 'refused' or 'kept' (the gradient at the forward's values,
    checked against the gradient taken before any write); never a third outcome."""
    lin.zero_grad()
    step(x)[0].backward()
    want_w, want_b = lin.weight.grad.copy(), lin.bias.grad.copy()
    lin.zero_grad()
    weight, bias = lin.weight, lin.bias  # what the forward read (a gradient reaches these)
    loss = step(x)[0]
    try:
        write(lin)
    except (ValueError, RuntimeError):
        return "refused"
    try:
        loss.backward()
    except RuntimeError as e:
        assert "changed" in str(e) or "in place" in str(e) or "modified" in str(e), str(e)
        return "refused"
    np.testing.assert_array_equal(weight.grad, want_w)
    np.testing.assert_array_equal(bias.grad, want_b)
    return "kept"


WRITES: dict[str, Callable[[nn.Linear], None]] = {
    "weight in place": lambda lin: lin.weight.data.__setitem__(Ellipsis, 0.25),
    "weight *=": lambda lin: lin.weight.data.__imul__(3.0),
    "weight rebound": lambda lin: setattr(lin.weight, "data", np.zeros((64, 64))),
    "bias replaced": lambda lin: setattr(lin, "bias", mg.tensor(np.ones(64), requires_grad=True)),
    "sgd step": lambda lin: _sgd_step(lin),
}


def _sgd_step(lin: nn.Linear) -> None:
    for p in lin.parameters():
        p.grad = np.ones(p.shape)
    optim.SGD(lin.parameters(), lr=0.1).step()


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_write_between_a_compiled_forward_and_its_backward_is_refused_or_harmless(
        write: str) -> None:
    """The in-place guarantee: as eager, the write is refused, or backward raises, or the
    gradient is the one at the values the forward used."""
    x = _u(96, 64)
    lin, f = big_step()
    eager = written_between(f, WRITES[write], lin, x)
    lin, f = big_step()
    compiled = written_between(mg.compile(f), WRITES[write], lin, x)
    assert compiled == eager


def test_a_write_to_an_argument_after_the_forward_is_harmless() -> None:
    lin, f = big_step()
    step = mg.compile(lambda x: (lin(x).tanh() ** 2).sum())
    a = _u(96, 64)
    x = mg.tensor(a.copy(), requires_grad=True)
    step(mg.tensor(a))
    loss = step(x)
    try:
        x.data[...] = 0.0
    except ValueError:
        pass  # refused: as good
    loss.backward()
    want = mg.tensor(a, requires_grad=True)
    (lin(want).tanh() ** 2).sum().backward()
    assert_close(x.grad, want.grad)


def test_outputs_are_fresh_memory_as_eagers() -> None:
    """A constant output, an output eager copies (`mg.tensor(x)`, x · 1), and a value the
    backward reads: writing to what the step returned changes neither a later call nor a
    gradient; an argument returned is that argument."""
    def f(x: mg.Tensor, a: np.ndarray) -> tuple[mg.Tensor, ...]:
        h = (x * 2.0).tanh()
        return x, mg.tensor(np.ones(3)), mg.tensor(a), x * 1.0, (h * h).sum(), h.detach()

    step = mg.compile(f)
    for _ in range(3):
        x = mg.tensor(_u(3), requires_grad=True)
        a = _u(3)
        out = step(x, a)
        assert out[0] is x
        assert not np.shares_memory(out[3].data, x.data)  # recorded: read-only, as eager's
        for o in out[1:3]:
            o.data[...] = 7.0  # the user's own memory
        with pytest.raises(ValueError):
            out[5].data[...] = 7.0  # the backward reads it: read-only, as eager's
        out[4].backward()
        want = mg.tensor(x.data, requires_grad=True)
        f(want, a)[4].backward()
        assert_close(x.grad, want.grad)
        assert not np.any(a == 7.0) and not np.any(x.data == 7.0)
    np.testing.assert_array_equal(step(x, a)[1].data, np.ones(3))


# =============================================================================================
# 8. no_grad, transforms, accumulation, anomaly mode, the source
# =============================================================================================
def test_under_no_grad_a_forward_only_program_runs() -> None:
    lin = nn.Linear(3, 2, rng=0)
    step = mg.compile(lambda x: lin(x).tanh().sum())
    x = _u(4, 3)
    with mg.no_grad():
        out = step(x)
        again = step(x + 1.0)
    assert not out.requires_grad and not again.requires_grad
    assert_close(again, lin(mg.tensor(x + 1.0)).tanh().sum())
    assert "backward" not in step.source
    assert step(x).requires_grad and "def backward_0" in step.source
    assert step.traces == 2
    ident = mg.compile(lambda t: (t, t * 2.0))
    t = mg.tensor(_u(3), requires_grad=True)
    with mg.no_grad():
        for _ in range(2):  # the trace's call and a replay give the argument back, as eager
            same, twice = ident(t)
            assert same is t and not twice.requires_grad


def test_grad_accumulates_over_calls_and_transforms_see_the_function() -> None:
    lin = nn.Linear(3, 2, rng=0)

    def f(x: Any) -> mg.Tensor:
        return (lin(x).tanh() ** 2).sum()

    step = mg.compile(f)
    a, b = _u(4, 3), _u(4, 3)
    step(a).backward()
    step(b).backward()
    got = lin.weight.grad.copy()
    lin.zero_grad()
    f(a).backward()
    f(b).backward()
    assert_close(got, lin.weight.grad)
    assert_close(mg.grad(step)(mg.tensor(a)), mg.grad(f)(mg.tensor(a)))
    assert_close(mg.jacobian(lambda x: lin(x) * step(x), a),
                 mg.jacobian(lambda x: lin(x) * f(x), a))
    assert_close(mg.grad(mg.grad(lambda s: step(a * s * s)))(mg.tensor(0.3)),
                 mg.grad(mg.grad(lambda s: f(a * s * s)))(mg.tensor(0.3)))
    assert_close(mg.hessian(lambda v: step(v.reshape(4, 3)), a.ravel()),
                 mg.hessian(lambda v: f(v.reshape(4, 3)), a.ravel()))


def test_under_detect_anomaly_the_step_runs_eagerly_with_eagers_errors() -> None:
    step = mg.compile(lambda x: (x.log() * 2.0).sum())
    good = mg.tensor(_u(3, lo=0.5, hi=2.0), requires_grad=True)
    with mg.detect_anomaly():
        assert_close(step(good), (good.log() * 2.0).sum())
        with pytest.raises(RuntimeError, match="log") as compiled:
            with np.errstate(invalid="ignore"):
                step(mg.tensor(-np.ones(3), requires_grad=True))
        with pytest.raises(RuntimeError, match="log") as eager:
            with np.errstate(invalid="ignore"):
                (mg.tensor(-np.ones(3), requires_grad=True).log() * 2.0).sum()
    assert str(compiled.value).split(" created at")[0] == str(eager.value).split(" created at")[0]


def test_buffers_and_parameters_are_read_where_they_are_at_every_call() -> None:
    """BatchNorm's running statistics in eval mode move between calls (eager training steps,
    load_state_dict): the compiled step reads them afresh, as it does the parameters."""
    bn = nn.BatchNorm1d(3)
    step = mg.compile(lambda x: (bn(x) ** 2).sum())
    x = mg.tensor(_u(6, 3))
    bn.eval()
    assert_close(step(x), (bn(x) ** 2).sum())
    for _ in range(2):
        bn.train()
        bn(mg.tensor(_u(8, 3) * 3.0 + 1.0))  # eager: the statistics move, in place
        bn.eval()
        assert_close(step(x), (bn(x) ** 2).sum())
    state = bn.state_dict()
    state["running_var"] = state["running_var"] * 4.0
    bn.load_state_dict(state)
    assert_close(step(x), (bn(x) ** 2).sum())
    assert step.traces == 1


def test_the_source_is_python_commented_with_the_users_lines() -> None:
    lin = nn.Linear(3, 2, rng=0)
    step = mg.compile(lambda x, t: F.cross_entropy(lin(mg.Tensor(x)), t))  # SOURCE-LINE
    with pytest.raises(RuntimeError, match="nothing traced"):
        _ = step.source
    step(_u(4, 3), np.array([0, 1, 1, 0]))
    src = step.source
    tree = ast.parse(src)
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert names == {"forward", "backward_0"}
    assert "# step = mg.compile(lambda x, t: F.cross_entropy(lin(mg.Tensor(x)), t))  " \
           "# SOURCE-LINE" in src
    assert "VJP of" in src
    body_lines = [ln for ln in src.splitlines() if ln.startswith("    ") and "=" in ln]
    assert body_lines and all("  # " in ln for ln in body_lines)


def test_an_eager_transform_through_a_compiled_output_is_first_order_right() -> None:
    """A step compiled (and called) outside a transform is one node of the tape: a transform
    that sweeps through it gets the right first-order values, and a second order through it is
    refused, never 0."""
    w = mg.tensor(np.linspace(0.1, 0.9, 4), requires_grad=True)
    f = lambda v: (v.tanh() * 2.0)  # noqa: E731
    step = mg.compile(f)
    y, ye = step(w), f(w)
    assert_close(mg.grad(lambda v: (y * y).sum())(w), mg.grad(lambda v: (ye * ye).sum())(w))
    y = step(w)
    assert_close(mg.grad(lambda v: (y * v).sum())(mg.tensor(np.ones(4))), ye)
    y = step(w)
    with pytest.raises(mg.CompileError, match="first-order only"):
        mg.grad(lambda u: mg.grad(lambda v: (y * y * v).sum())(u).sum())(w)


RENDEZVOUS: list[threading.Barrier] = []  # armed: each call waits there for the other thread


@mg.primitive(lambda g, y, x: g, reads="")
def rendezvous(x):  # type: ignore[no-untyped-def]
    """y = x;  x̄ = ḡ   (a copy; while armed, the two threads meet here mid-program)"""
    if RENDEZVOUS:
        RENDEZVOUS[0].wait(timeout=10)
    return x.copy()


def test_two_threads_inside_one_program_at_once_keep_their_own_intermediates() -> None:
    """Each thread is held in the middle of the forward until the other one gets there: both
    have written their first half's intermediates (large: the memory plan places them in
    buffers, the forward-only program most of all) before either reads them in the second
    half."""
    def f(x: mg.Tensor) -> mg.Tensor:
        b = (x * 2.0).tanh() + 1.0  # made before the meeting point, read after it
        return (b + rendezvous(x)).tanh().sum()

    step = mg.compile(f)
    inputs = [_u(64, 64), _u(64, 64) + 1.0]
    for _ in range(2):  # the traces, then a replay of each: buffers made and kept (not armed)
        step(mg.tensor(inputs[0], requires_grad=True)).backward()
        with mg.no_grad():
            step(mg.tensor(inputs[0]))
    results: dict[int, Any] = {}
    errors: list[str] = []

    def work(i: int) -> None:
        try:
            with mg.no_grad():
                value = step(mg.tensor(inputs[i])).item()
            x = mg.tensor(inputs[i], requires_grad=True)
            loss = step(x)
            loss.backward()
            results[i] = (value, loss.item(), x.grad)
        except Exception as e:  # noqa: BLE001  (reported by the main thread)
            errors.append(repr(e))

    RENDEZVOUS.append(threading.Barrier(2))
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        RENDEZVOUS.clear()
    assert not errors, errors
    for i, a in enumerate(inputs):
        x = mg.tensor(a, requires_grad=True)
        want = f(x)
        want.backward()
        np.testing.assert_allclose(results[i][:2], [want.item()] * 2, rtol=RTOL)
        np.testing.assert_allclose(results[i][2], x.grad, rtol=RTOL)
    assert step.traces == 2
