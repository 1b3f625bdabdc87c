"""The tape: in-place safety of everything it saved, lock lifetimes, leaf grads that never alias,
deep graphs without recursion, each VJP run once, flat memory over a long training loop, and
intermediates freed after backward."""

from __future__ import annotations

import copy
import gc
import importlib
import sys
import tracemalloc
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import minigrad as mg

tape_module = importlib.import_module("minigrad.tensor")  # mg.tensor is the function
# Born-read-only outputs and in-place VJPs rest on CPython's reference counts; where those are
# not trusted (CPython >= 3.14, other interpreters) the engine locks and copies instead.
REFCOUNTS = tape_module._refcount is sys.getrefcount
needs_refcounts = pytest.mark.skipif(not REFCOUNTS, reason="reference counts not trusted here")

# --------------------------------------------------------------------------------------------
# In-place safety. For every write path of the contract, the outcome must be one of: the write
# is refused with an error, backward raises RuntimeError, or the gradient equals the one at the
# values the forward pass used. Never a different gradient.
# --------------------------------------------------------------------------------------------
# Ops whose VJP reads what the tape saved (inputs, output or parameters such as an index).
SAVING_OPS: list[tuple[str, Callable[[mg.Tensor], mg.Tensor]]] = [
    ("multiply", lambda t: t * t),
    ("divide", lambda t: 1.0 / t),
    ("power", lambda t: t ** 3),
    ("power exponent", lambda t: 1.5 ** t),
    ("exp", lambda t: t.exp()),
    ("log", lambda t: t.log()),
    ("sqrt", lambda t: t.sqrt()),
    ("tanh", lambda t: t.tanh()),
    ("sigmoid", lambda t: t.sigmoid()),
    ("relu", lambda t: (t - 1.0).relu()),
    ("abs", lambda t: (t - 1.0).abs()),
    ("maximum", lambda t: mg.maximum(t, 1.0)),
    ("clip", lambda t: t.clip(0.8, 1.6)),
    ("max", lambda t: t.max(axis=0)),
    ("softmax", lambda t: t.softmax(axis=0)),
    ("log_softmax", lambda t: t.log_softmax(axis=-1)),
    ("logsumexp", lambda t: t.logsumexp(axis=0)),
    ("matmul", lambda t: t @ t.T),
    ("matmul view", lambda t: t[0] @ t.T),
    ("getitem int array", lambda t: t[np.array([1, 1, 0])] * t[np.array([0, 1, 1])]),
    ("where", lambda t: mg.where(t.data > 1.0, t * t, t)),
    ("transposed view", lambda t: t.T * t.T),
    ("reshaped view", lambda t: t.reshape(-1) * t.reshape(-1)),
    ("sliced view", lambda t: t[1:] * t[:-1]),
]

X0 = np.array([[0.7, 1.3, 1.9], [1.1, 0.9, 1.6]])


def weighted_loss(y: mg.Tensor) -> mg.Tensor:
    w = np.linspace(0.5, 1.5, y.size).reshape(y.shape)  # non-uniform, fixed
    return (y * w).sum()


def reference_grad(op: Callable[[mg.Tensor], mg.Tensor]) -> np.ndarray:
    x = mg.tensor(X0.copy(), requires_grad=True)
    weighted_loss(op(x) + op(x + 0.25)).backward()
    assert x.grad is not None
    return x.grad


# Each path: (name, setup) where setup(arr, x, h) performs the write; arr is the ndarray given to
# mg.Tensor, x the leaf, h an intermediate that the op consumed.
def _rebind_leaf(arr: np.ndarray, x: mg.Tensor, h: mg.Tensor) -> None:
    x.data = np.full_like(X0, 5.0)


def _rebind_intermediate(arr: np.ndarray, x: mg.Tensor, h: mg.Tensor) -> None:
    h.data = np.full_like(X0, 5.0)


WRITES: list[tuple[str, Callable[[np.ndarray, mg.Tensor, mg.Tensor], Any]]] = [
    ("leaf .data[...] =", lambda arr, x, h: x.data.__setitem__(Ellipsis, 5.0)),
    ("leaf .data[0, 1] =", lambda arr, x, h: x.data.__setitem__((0, 1), 5.0)),
    ("leaf .data *=", lambda arr, x, h: x.data.__imul__(2.0)),
    ("ndarray given to mg.Tensor", lambda arr, x, h: arr.__setitem__(Ellipsis, 5.0)),
    ("through .numpy()", lambda arr, x, h: x.numpy().__setitem__(0, 5.0)),
    ("through np.asarray", lambda arr, x, h: np.asarray(x).__iadd__(1.0)),
    ("through .detach().data", lambda arr, x, h: x.detach().data.__setitem__(0, 5.0)),
    ("np.exp(out=leaf.data)", lambda arr, x, h: np.exp(arr, out=arr)),
    ("intermediate .data[...] =", lambda arr, x, h: h.data.__setitem__(Ellipsis, 5.0)),
    ("intermediate .data *=", lambda arr, x, h: h.data.__imul__(2.0)),
    ("intermediate .numpy()", lambda arr, x, h: h.numpy().__setitem__(0, 5.0)),
    ("rebind leaf .data", _rebind_leaf),
    ("rebind intermediate .data", _rebind_intermediate),
]


def run_write_scenario(op: Callable[[mg.Tensor], mg.Tensor],
                       write: Callable[[np.ndarray, mg.Tensor, mg.Tensor], Any]) -> str:
    """Forward, write, backward; return which allowed outcome happened, or fail."""
    expected = reference_grad(op)
    arr = X0.copy()
    x = mg.Tensor(arr, requires_grad=True)  # shares arr's memory
    h = x + 0.25  # an intermediate, fresh memory
    loss = weighted_loss(op(x) + op(h))
    try:
        write(arr, x, h)
    except (ValueError, RuntimeError, TypeError):
        outcome = "refused"
    else:
        outcome = "accepted"
    try:
        loss.backward()
    except RuntimeError:
        return "backward raised"
    assert x.grad is not None
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12,
                               err_msg="an in-place write changed the gradient silently")
    return outcome


@pytest.mark.parametrize("wname,write", WRITES, ids=[w for w, _ in WRITES])
@pytest.mark.parametrize("opname,op", SAVING_OPS, ids=[o for o, _ in SAVING_OPS])
def test_in_place_write_never_changes_the_gradient(opname: str, op: Any, wname: str,
                                                   write: Any) -> None:
    run_write_scenario(op, write)


READS_INPUT = ["multiply", "divide", "power", "log", "maximum", "clip", "max", "logsumexp",
               "matmul", "matmul view", "transposed view", "reshaped view", "sliced view"]


@pytest.mark.parametrize("opname", READS_INPUT)
def test_writes_into_saved_arrays_are_refused(opname: str) -> None:
    """The engine's chosen outcome when an op saved its input: the raw write is refused."""
    op = dict(SAVING_OPS)[opname]
    for wname in ("leaf .data[...] =", "leaf .data *=", "ndarray given to mg.Tensor",
                  "through .numpy()", "through np.asarray", "intermediate .data[...] =",
                  "intermediate .numpy()"):
        write = dict(WRITES)[wname]
        assert run_write_scenario(op, write) == "refused", wname


def test_writes_through_views_of_a_leaf_are_refused_or_harmless() -> None:
    """Views made by ops (slices, .T, reshape) before or after the op that saved the memory."""
    for make_view in (lambda t: t[0], lambda t: t.T, lambda t: t.reshape(-1), lambda t: t[::-1],
                      lambda t: t[None], lambda t: mg.broadcast_to(t, (2,) + t.shape)):
        x = mg.tensor(X0.copy(), requires_grad=True)
        early = make_view(x)  # made before the op below saved x
        loss = weighted_loss(x * x)
        late = make_view(x)
        for v in (early, late):
            with pytest.raises(ValueError):
                v.data[...] = 5.0
        loss.backward()
        np.testing.assert_allclose(x.grad, 2 * X0 * np.linspace(0.5, 1.5, 6).reshape(2, 3))


def test_writes_into_a_leaf_that_views_a_larger_array() -> None:
    """mg.Tensor may share memory with a slice of a user's array (e.g. one flat buffer for all
    parameters). Writing through the leaf, the buffer, or a sibling leaf on the same buffer must
    not change the gradient of a graph that saved a view of that leaf."""
    for path in ("leaf", "buffer", "sibling"):
        flat = np.arange(1.0, 13.0)
        w = mg.Tensor(flat[:6].reshape(2, 3), requires_grad=True)
        b = mg.Tensor(flat[6:], requires_grad=True)
        x = mg.tensor(X0.copy(), requires_grad=True)
        loss = weighted_loss(x * w.T.T[0] + b[:3] * x)  # the tape saves views of w and b
        target = {"leaf": w.data, "buffer": flat, "sibling": b.data}[path]
        try:
            target[...] = 0.0
        except ValueError:
            pass
        loss.backward()
        wts = np.linspace(0.5, 1.5, 6).reshape(2, 3)
        np.testing.assert_allclose(x.grad, (np.arange(1.0, 4.0) + np.arange(7.0, 10.0)) * wts,
                                   err_msg=path)
        # and after backward freed the tape, all of them are writeable again
        w.data -= 0.1 * w.grad  # type: ignore[operator]
        b.data -= 0.1 * b.grad  # type: ignore[operator]
        flat[...] = 1.0


def test_only_parameter_views_are_tracked() -> None:
    """Sibling-view bookkeeping is for leaves that require grad; a dataset split into many row
    Tensors adds nothing to it (locking stays O(1) per saved array)."""
    data = np.arange(3000.0).reshape(1000, 3).copy()  # owns its memory
    rows = [mg.Tensor(data[i]) for i in range(1000)]
    assert id(data) not in tape_module._leaf_views
    w = mg.Tensor(data[0], requires_grad=True)
    assert len(tape_module._leaf_views[id(data)]) == 1
    loss = (rows[5] * w).sum()
    for saved in (w.data, rows[5].data, data):
        with pytest.raises(ValueError):
            saved[0] = 1.0
    rows[7].data[0] = 1.0  # a row view disjoint from everything saved stays writeable
    loss.backward()
    np.testing.assert_array_equal(w.grad, [15.0, 16.0, 17.0])
    del w, loss
    assert id(data) not in tape_module._leaf_views


def test_saved_parameters_of_an_op_are_protected() -> None:
    """where's condition, an integer index and clip's bounds are saved by the tape too."""
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    cond = np.array([True, True, False])
    idx = np.array([0, 0, 2])
    lo, hi = np.array([0.0, 2.5, 0.5]), np.array([2.0, 3.0, 2.5])
    loss = (mg.where(cond, x, 0.0) * 1.0).sum() + (x[idx] * np.array([1.0, 2.0, 3.0])).sum() \
        + (mg.clip(x, lo, hi) * 10.0).sum()
    for arr in (cond, idx, lo, hi):
        try:
            arr[...] = arr[::-1].copy()
        except ValueError:
            pass
    loss.backward()
    np.testing.assert_allclose(x.grad, [1 + 3 + 10, 1 + 0 + 0, 0 + 3 + 0])


@pytest.mark.parametrize("kind", ["array", "arrays", "tensor", "list"])
def test_an_index_array_rewritten_after_the_forward_moves_no_gradient(kind: str) -> None:
    """The tape keeps its own copy of an integer index: the caller may reuse its arrays (a
    rollout buffer of actions, say) before backward() and the gradient still goes where the
    forward picked."""
    x0 = np.arange(12.0).reshape(4, 3)
    rows, cols = np.array([0, 1, 1, 3]), np.array([2, 0, 0, 1])
    index: Any = {"array": rows, "arrays": (rows, cols), "tensor": (mg.Tensor(rows), cols),
                  "list": (rows, [2, 0, 0, 1])}[kind]
    x = mg.tensor(x0, requires_grad=True)
    picked = x[index]
    expected = np.zeros_like(x0)
    np.add.at(expected, index if kind == "array" else (rows, cols), 1.0)
    rows[:] = 2  # the caller reuses its buffers
    cols[:] = 1
    picked.sum().backward()
    np.testing.assert_array_equal(x.grad, expected)


def test_inputs_no_vjp_reads_stay_writeable_and_writes_to_them_are_harmless() -> None:
    """linear's bias (b̄ = Σḡ needs only its shape) and divide's numerator (ā = ḡ/b, b̄ = −ḡy/b)
    are not locked: a write into them between forward and backward is allowed and leaves every
    gradient as it was at the forward values; the arrays the VJPs do read stay refused."""
    def run(write: bool) -> list[np.ndarray]:
        rng = np.random.default_rng(3)
        x = mg.tensor(rng.normal(size=(5, 3)), requires_grad=True)
        w = mg.tensor(rng.normal(size=(4, 3)), requires_grad=True)
        b = mg.tensor(rng.normal(size=4), requires_grad=True)
        num = mg.tensor(rng.normal(size=4), requires_grad=True)
        den = mg.tensor(rng.uniform(1.0, 2.0, size=4), requires_grad=True)
        y = mg.nn.functional.linear(x, w, b) * (num / den)
        loss = (y * y).sum()
        if write:
            b.data[...] = 100.0
            num.data *= -3.0
            for saved in (x.data, w.data, den.data):
                with pytest.raises(ValueError):
                    saved[...] = 0.0
        loss.backward()
        return [t.grad for t in (x, w, b, num, den)]  # type: ignore[misc]

    for got, want in zip(run(write=True), run(write=False)):
        np.testing.assert_array_equal(got, want)


def test_an_unread_input_that_views_a_read_one_is_locked() -> None:
    """A bias that is a view of the weight's memory, or a numerator viewing the denominator's,
    would let a write reach what the VJP reads: then every input is locked."""
    rng = np.random.default_rng(4)
    w = mg.tensor(rng.normal(size=(3, 3)), requires_grad=True)
    x = mg.tensor(rng.normal(size=(2, 3)), requires_grad=True)
    bias = w.data[0]  # made before the op: its own writeable flag
    loss = mg.nn.functional.linear(x, w, bias).sum()
    with pytest.raises(ValueError):
        bias[...] = 7.0
    buf = rng.uniform(1.0, 2.0, size=4)
    den, num = mg.Tensor(buf, requires_grad=True), buf[::-1]
    ratio = ((num / den) * np.arange(1.0, 5.0)).sum()
    with pytest.raises(ValueError):
        num[...] = 5.0
    loss.backward()
    ratio.backward()


def test_a_view_input_of_an_op_that_reads_no_input_stays_writeable() -> None:
    """The lock-everything rule for views is for ops that read some inputs only: where (reads
    its condition) leaves a view input writeable, and its gradient does not depend on it."""
    buf = np.arange(1.0, 7.0)
    a = mg.Tensor(buf[:3], requires_grad=True)
    loss = (mg.where(np.array([True, False, True]), a, 0.0) * 2.0).sum()
    a.data[...] = 9.0
    loss.backward()
    np.testing.assert_array_equal(a.grad, [2.0, 0.0, 2.0])


def test_rebinding_data_during_a_higher_order_transform_raises_or_is_exact() -> None:
    def f(t: mg.Tensor) -> mg.Tensor:
        y = t.exp()
        y.data = np.zeros_like(y.data)  # rebind the saved output inside the traced function
        return y.sum()

    x0 = np.array([0.5, -1.0])
    try:
        h = mg.hessian(f, x0)
    except RuntimeError:
        return
    np.testing.assert_allclose(h, np.diag(np.exp(x0)))


# --------------------------------------------------------------------------------------------
# Lock lifetimes
# --------------------------------------------------------------------------------------------
def test_parameter_update_after_backward() -> None:
    w = mg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    x = np.array([[1.0, -1.0]])
    lr = 0.1
    for _ in range(3):
        loss = ((x @ w).tanh() ** 2).sum()
        with pytest.raises(ValueError):
            w.data -= lr  # the tape still needs w
        loss.backward()
        w.data -= lr * w.grad  # type: ignore[operator]
        w.grad = None
    assert w.data.flags.writeable


def test_dropping_a_graph_without_backward_releases_its_locks() -> None:
    w = mg.tensor(np.ones(3), requires_grad=True)
    loss = (w.exp() * w).sum()
    assert not w.data.flags.writeable
    del loss
    assert w.data.flags.writeable
    w.data[0] = 5.0
    # an exception in the middle of a forward also leaves nothing locked behind
    with pytest.raises(ValueError):
        _ = (w * w) + mg.ones(4)
    assert w.data.flags.writeable


def test_retain_graph_keeps_the_lock_until_the_graph_is_gone() -> None:
    w = mg.tensor(np.ones(3), requires_grad=True)
    loss = (w * w).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(ValueError):
        w.data[0] = 5.0
    loss.backward()  # frees
    w.data[0] = 5.0
    loss2 = (w * w).sum()
    loss2.backward(retain_graph=True)
    assert not w.data.flags.writeable
    del loss2
    assert w.data.flags.writeable


def test_two_graphs_sharing_a_parameter() -> None:
    w = mg.tensor(np.ones(3), requires_grad=True)
    a = (w * w).sum()
    b = (w * w.exp()).sum()
    a.backward()
    assert not w.data.flags.writeable  # b's graph still needs w
    b.backward()
    assert w.data.flags.writeable
    assert id(w.data) not in tape_module._locks


def test_a_user_read_only_array_stays_read_only() -> None:
    arr = np.ones(3)
    arr.setflags(write=False)
    w = mg.Tensor(arr, requires_grad=True)
    (w * w).sum().backward()
    assert not arr.flags.writeable  # minigrad never unlocks what it did not lock


def test_without_reference_counts_saved_outputs_are_locked_instead(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where reference counts are not trusted nothing is frozen for good: an output a VJP reads
    is locked like a leaf while the graph lives, and the gradient is the same."""
    monkeypatch.setattr(tape_module, "_refcount", lambda a: 99)
    x = mg.tensor([0.5, -1.0, 2.0], requires_grad=True)
    h = x.tanh()
    loss = (h * h.exp()).sum()
    with pytest.raises(ValueError):
        h.data[...] = 0.0
    loss.backward()
    y = np.tanh(x.data)
    np.testing.assert_allclose(x.grad, (1 - y * y) * (np.exp(y) + y * np.exp(y)))
    h.data[...] = 0.0  # the graph is freed: writeable again
    assert not tape_module._locks


@needs_refcounts
def test_recorded_outputs_are_read_only_for_good() -> None:
    """An op output on the tape is born read-only (nothing to lock or unlock per op) and stays
    so after backward(); outputs computed off the tape stay writeable; np.array(t) copies."""
    x = mg.tensor([0.5, -1.0, 2.0], requires_grad=True)
    h = x.tanh()
    y = (h * 2.0).sum()
    for t in (h, y):
        with pytest.raises(ValueError):
            t.data[...] = 0.0
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * (1 - np.tanh(x.data) ** 2))
    assert not h.data.flags.writeable
    copy = np.array(h)
    copy *= 2.0  # a copy is the user's own
    x.data -= 0.1 * x.grad  # the leaf is writeable again
    with mg.no_grad():
        assert x.tanh().data.flags.writeable
    assert (mg.tensor([1.0, 2.0]) * 2).data.flags.writeable  # no input requires grad


def test_an_output_that_is_its_input_does_not_lock_the_leaf_for_good() -> None:
    """astype to a Tensor's own dtype may return the input array itself: the leaf must become
    writeable again after backward, not inherit the born-read-only rule."""
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = x.astype(np.float64)
    loss = (y * y).sum()
    loss.backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])
    x.data[0] = 3.0


def test_a_tensor_subclass_is_recorded() -> None:
    class Named(mg.Tensor):
        __slots__ = ("label",)

    x = Named([1.0, 2.0], requires_grad=True)
    (x * x + 2.0 * x).sum().backward()
    np.testing.assert_allclose(x.grad, [4.0, 6.0])


def test_a_parameter_rebound_to_a_recorded_result_stays_writeable() -> None:
    """`w.data = w - lr * w.grad` with grad enabled records the update; the frozen result must
    not become the parameter's memory, or every later in-place update would fail."""
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    x.data = x - 0.1 * x.grad  # type: ignore[operator]
    x.grad = None
    (x * x).sum().backward()
    mg.optim.SGD([x], lr=0.1).step()
    np.testing.assert_allclose(x.data, [0.8 * 0.8, 1.6 * 0.8])  # two steps of x -= 0.2 x
    p = mg.Tensor(x * 0.5, requires_grad=True)  # a new leaf from a recorded value
    p.data -= 1.0


@needs_refcounts
def test_step_on_a_frozen_parameter_says_why() -> None:
    w = mg.tensor([1.0, 2.0], requires_grad=True)
    p = mg.Tensor(np.asarray(w.tanh()), requires_grad=True)  # shares the frozen output
    p.grad = np.ones(2)
    with pytest.raises(RuntimeError, match="no live graph holds it"):
        mg.optim.SGD([p], lr=0.1).step()


def test_a_function_that_returns_its_own_buffer_can_run_again() -> None:
    """A forward may return an array it keeps (a reused buffer): that array is not the op's
    to freeze for good; it is locked while the graph needs it, like a leaf."""
    buf = np.zeros(3)

    class Scale2(mg.Function):
        @staticmethod
        def forward(ctx: Any, a: np.ndarray) -> np.ndarray:
            np.multiply(a, 2.0, out=buf)
            return buf

        @staticmethod
        def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
            return 2 * g

    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for _ in range(3):
        y = Scale2.apply(x)
        with pytest.raises(ValueError):
            buf[0] = 5.0  # the live graph holds it
        y.sum().backward()
    np.testing.assert_allclose(x.grad, [6.0, 6.0, 6.0])
    assert buf.flags.writeable


def test_copy_of_an_op_output_never_shares_its_record() -> None:
    """copy.copy of an op output is a recorded view of it: backward through the copy frees
    the original's node too, so a later backward through the original raises instead of
    reading saved arrays that were unlocked (and possibly changed) in between."""
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    c = copy.copy(y)
    c.sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])
    x.data[...] = [10.0, 20.0]
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.sum().backward()
    both = x * 3.0
    (copy.copy(both).sum() + both.sum()).backward()
    leaf = copy.copy(x)
    assert leaf.requires_grad and leaf.data is x.data


def test_a_backward_inside_a_vjp_keeps_its_gradients_apart() -> None:
    """A custom backward may run backward() on part of the graph being swept; each sweep keeps
    its pending gradients to itself."""
    box: dict[str, Any] = {}

    class Probe(mg.Function):
        @staticmethod
        def forward(ctx: Any, a: np.ndarray) -> np.ndarray:
            return a * 1.0

        @staticmethod
        def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
            with mg.enable_grad():
                aux = (box["h"] * box["h"]).sum()
            aux.backward(retain_graph=True)
            return g

    def f(x: Any) -> Any:
        h = x * 3.0
        box["h"] = h
        return (Probe.apply(h) + h).sum()

    np.testing.assert_allclose(mg.grad(f)(np.array([1.0, 2.0])), [6.0, 6.0])


def test_zero_grad_with_an_attribute_named_like_an_internal() -> None:
    class M(mg.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._values = np.ones(3)
            self._member_values = [1, 2]
            self.lin = mg.nn.Linear(2, 2)

        def forward(self, x: Any) -> Any:
            return self.lin(x)

    m = M()
    m(mg.tensor([[1.0, 2.0]])).sum().backward()
    m.zero_grad()
    assert m.lin.weight.grad is None

# --------------------------------------------------------------------------------------------
# Leaf grads never alias each other, the upstream, or anything the tape holds
# --------------------------------------------------------------------------------------------
ALIAS_CASES: list[tuple[str, Callable[[mg.Tensor, mg.Tensor], mg.Tensor]]] = [
    ("a + b", lambda a, b: a + b),
    ("a - b", lambda a, b: a - b),
    ("a + b broadcast", lambda a, b: a + b[0]),
    ("sum(a + b)", lambda a, b: (a + b).sum()),
    ("stack", lambda a, b: mg.stack([a, b])),
    ("concatenate", lambda a, b: mg.concatenate([a, b])),
    ("where", lambda a, b: mg.where(np.array([True, False]), a, b)),
    ("a + a + b", lambda a, b: a + a + b),
    ("reshape", lambda a, b: a.reshape(2, 1) + b.reshape(2, 1)),
    ("identity leaf", lambda a, b: a),
]


@pytest.mark.parametrize("name,fn", ALIAS_CASES, ids=[n for n, _ in ALIAS_CASES])
def test_leaf_grads_never_alias(name: str, fn: Any) -> None:
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    b = mg.tensor([3.0, 4.0], requires_grad=True)
    y = fn(a, b)
    up = np.ones(y.shape)
    y.backward(up)
    grads = [g for g in (a.grad, b.grad) if g is not None]
    snapshot = [g.copy() for g in grads]
    for g in grads:
        assert g.flags.writeable and g.base is None
        assert not np.shares_memory(g, up)
    grads[0] *= 7.0  # what an optimizer or clip_grad_norm_ does
    if len(grads) == 2:
        assert not np.shares_memory(grads[0], grads[1])
        np.testing.assert_array_equal(grads[1], snapshot[1])
    up[...] = -1.0
    np.testing.assert_array_equal(grads[0], snapshot[0] * 7.0)


def test_transform_results_never_alias() -> None:
    gx, gy = mg.grad(lambda a, b: a + b, argnums=(0, 1))(1.0, 2.0)  # type: ignore[misc]
    gx.data += 1.0
    assert gy.item() == 1.0
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    u = np.array([1.0, 1.0])
    out, vjp_fn = mg.vjp(lambda a, b: a + b, x, y)
    g1, g2 = vjp_fn(u)
    assert not np.shares_memory(g1.data, g2.data) and not np.shares_memory(g1.data, u)
    _, (p, q) = mg.value_and_grad(lambda a, b: (a - b).sum(), argnums=(0, 1))(x, y)
    assert not np.shares_memory(p.data, q.data)


# --------------------------------------------------------------------------------------------
# Deep graphs
# --------------------------------------------------------------------------------------------
N_DEEP = 100_000


def test_backward_through_a_100k_op_chain() -> None:
    x = mg.tensor(0.5, requires_grad=True)
    c = 1.000001
    y = x
    for _ in range(N_DEEP):
        y = y * c
    y.backward()
    # every VJP ran exactly once: the gradient is c**N (a revisit would double a term)
    assert x.grad == pytest.approx(c ** N_DEEP, rel=1e-9)
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_dropping_a_100k_op_graph_without_backward() -> None:
    x = mg.tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(N_DEEP):
        y = y.tanh()
    ref = weakref.ref(y)
    del y
    gc.collect()
    assert ref() is None
    assert x.data.flags.writeable  # every lock released
    assert id(x.data) not in tape_module._locks


# --------------------------------------------------------------------------------------------
# Each node's VJP runs once
# --------------------------------------------------------------------------------------------
class Counted(mg.Function):
    """y = 2x, counting its backward calls."""

    calls = 0

    @staticmethod
    def forward(ctx: Any, x: np.ndarray) -> np.ndarray:
        return 2 * x

    @staticmethod
    def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
        Counted.calls += 1
        return 2 * g


def test_each_vjp_runs_once_in_a_diamond() -> None:
    Counted.calls = 0
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    a = Counted.apply(x)
    b, c = a * 3.0, a.exp()   # two branches from a
    d = Counted.apply(b + c)  # join
    e = d + d + a             # reuse again
    e.sum().backward()
    assert Counted.calls == 2  # one per Counted node, however many paths lead to it
    np.testing.assert_allclose(x.grad, 2 * (2 * 2 * (3.0 + np.exp(2 * x.data))) + 2)


def test_each_vjp_runs_once_in_a_wide_reused_graph() -> None:
    Counted.calls = 0
    x = mg.tensor(1.0, requires_grad=True)
    a = Counted.apply(x)
    total = a
    for _ in range(50):
        total = total + a * a  # a feeds 100 more uses
    total.backward()
    assert Counted.calls == 1
    assert x.grad == pytest.approx(2 * (1 + 50 * 2 * 2.0))


# --------------------------------------------------------------------------------------------
# In-place VJPs: the sweep writes into a gradient only when nothing else holds it
# --------------------------------------------------------------------------------------------
IN_PLACE_OPS = [op for op in vars(mg.ops).values()  # the one-input ones (linear_relu: below)
                if isinstance(op, mg.ops.Primitive) and op.vjp_in_place is not None and op.vjps]


IN_PLACE_PARAMS = {"log_softmax": [{"axis": (1,)}, {"axis": (0,)}, {"axis": (0, 1)}]}


def test_the_in_place_ops_are_the_activations() -> None:
    assert {op.name for op in IN_PLACE_OPS} >= {"relu", "tanh", "sigmoid", "exp", "log_softmax"}


@pytest.mark.parametrize(("op", "params"), [(op, params) for op in IN_PLACE_OPS
                                            for params in IN_PLACE_PARAMS.get(op.name, [{}])],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_an_in_place_vjp_equals_its_vjp_and_writes_into_g(op: Any, params: dict[str, Any]
                                                          ) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 3))
    y = op.forward(x, **params)
    g = rng.normal(size=(5, 3))
    expected = op.vjps[0](g, y, x, **params)
    buffer = g.copy()
    (out,) = op.vjp_in_place(buffer, y, x, **params)
    assert out is buffer
    np.testing.assert_allclose(out, expected, rtol=1e-15)


@pytest.mark.parametrize("rebind", ["float32", "one row"])
@pytest.mark.parametrize("op", IN_PLACE_OPS, ids=lambda op: op.name)
def test_an_output_rebound_to_another_array_takes_the_out_of_place_vjp(op: Any, rebind: str
                                                                      ) -> None:
    """When an output's .data is rebound (allowed) to an array of another dtype or shape, the
    gradient arriving has that dtype and shape: the rule must promote and broadcast it as the
    out-of-place rule does, not round it into float32 or fail on the shape."""
    rng = np.random.default_rng(12)
    x0, w = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    params = IN_PLACE_PARAMS.get(op.name, [{}])[0]
    x = mg.tensor(x0, requires_grad=True)
    out = tape_module.apply(op, x, **params)
    y = out.data
    out.data = y.astype(np.float32) if rebind == "float32" else y[:1].copy()
    (out * w[: len(out.data)]).sum().backward()
    g = (w[:1] if rebind == "one row" else w.astype(np.float32))
    expected = op.vjps[0](g, y, x0, **params)
    assert x.grad.shape == x0.shape and x.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad, np.broadcast_to(expected, x0.shape), rtol=1e-15)


@pytest.mark.parametrize("op", IN_PLACE_OPS, ids=lambda op: op.name)
def test_a_shared_gradient_is_never_written_in_place(op: Any) -> None:
    """add's VJP hands the same array to both inputs, and the caller keeps its upstream: the
    sweep must see that g has other holders and use the out-of-place VJP."""
    rng = np.random.default_rng(8)
    x0 = rng.normal(size=(4, 3))
    x = mg.tensor(x0, requires_grad=True)
    params = IN_PLACE_PARAMS.get(op.name, [{}])[0]
    a = tape_module.apply(op, x * 1.0, **params)
    b = tape_module.apply(op, x * 2.0, **params)
    upstream = rng.normal(size=(4, 3))
    kept = upstream.copy()
    (a + b).backward(upstream)
    y1, y2 = op.forward(x0, **params), op.forward(2 * x0, **params)
    expected = (op.vjps[0](upstream, y1, x0, **params)
                + 2 * op.vjps[0](upstream, y2, 2 * x0, **params))
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)
    np.testing.assert_array_equal(upstream, kept)


def test_a_chain_of_activations_is_exact_with_in_place_vjps() -> None:
    """Inside a chain every gradient is fresh and held once, so each activation's VJP runs in
    place; the result must match finite differences."""
    rng = np.random.default_rng(9)
    x = mg.tensor(rng.normal(size=(3, 4)), requires_grad=True)
    w = mg.tensor(rng.normal(size=(4, 5)), requires_grad=True)

    def f(x: Any, w: Any) -> Any:
        return ((x @ w).relu().tanh().sigmoid().exp() * 0.5).sum()

    mg.gradcheck(f, (x, w))

def _count_in_place(monkeypatch: pytest.MonkeyPatch, op: Any) -> dict[str, int]:
    calls = {"in_place": 0}
    rule = op.vjp_in_place

    def counted(*args: Any, **params: Any) -> Any:
        calls["in_place"] += 1
        return rule(*args, **params)

    monkeypatch.setattr(op, "vjp_in_place", counted)
    return calls


@needs_refcounts
@pytest.mark.parametrize("fused", [True, False])
def test_an_mlp_hidden_activation_reuses_its_gradient(monkeypatch: pytest.MonkeyPatch,
                                                      fused: bool) -> None:
    """In Linear-ReLU-Linear the gradient reaching relu is the fresh ḡW of the layer above and
    nobody else holds it: the in-place rule must be the one that runs (what W2 relies on),
    whether Sequential records linear_relu or the layers are called one by one."""
    calls = _count_in_place(monkeypatch, mg.ops.linear_relu if fused else mg.ops.relu)
    net = mg.nn.Sequential(mg.nn.Linear(4, 16), mg.nn.ReLU(), mg.nn.Linear(16, 2))
    x = np.random.default_rng(3).normal(size=(50, 4))
    layers = net.layers
    logits = net(mg.Tensor(x)) if fused else layers[2](layers[1](layers[0](mg.Tensor(x))))
    loss = logits.log_softmax(axis=-1)[np.arange(50), 0].mean()
    loss.backward()
    assert calls["in_place"] == 1
    w1 = net.layers[0].weight
    assert w1.grad is not None and w1.grad.shape == (16, 4)


@needs_refcounts
def test_log_softmax_reuses_the_scattered_gradient_of_a_pick(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """logp[rows, actions]'s VJP scatters into a fresh array that only the sweep holds: the
    log_softmax below it runs in place there, and its gradient is still right."""
    calls = _count_in_place(monkeypatch, mg.ops.log_softmax)
    rng = np.random.default_rng(4)
    z0, actions, weights = rng.normal(size=(30, 3)), rng.integers(0, 3, 30), rng.normal(size=30)
    z = mg.tensor(z0, requires_grad=True)
    (mg.log_softmax(z, axis=-1)[np.arange(30), actions] * weights).sum().backward()
    assert calls["in_place"] == 1
    p = np.exp(z0) / np.exp(z0).sum(axis=1, keepdims=True)
    onehot = np.eye(3)[actions]
    np.testing.assert_allclose(z.grad, weights[:, None] * (onehot - p), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Memory: a long training loop stays flat; intermediates are freed after backward
# --------------------------------------------------------------------------------------------
def test_10k_training_steps_run_in_flat_memory() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3))
    y = np.sin(x.sum(axis=1, keepdims=True))
    params = [mg.tensor(rng.normal(size=(3, 8)) * 0.5, requires_grad=True),
              mg.tensor(np.zeros(8), requires_grad=True),
              mg.tensor(rng.normal(size=(8, 1)) * 0.5, requires_grad=True),
              mg.tensor(np.zeros(1), requires_grad=True)]
    w1, b1, w2, b2 = params
    lr = 0.05
    losses = []
    try:
        for step in range(1, 10_001):
            h = (x @ w1 + b1).tanh()
            loss = ((h @ w2 + b2 - y) ** 2).mean()
            for p in params:
                p.grad = None
            loss.backward()
            for p in params:
                p.data -= lr * p.grad  # type: ignore[operator]
            if step in (1_000, 10_000):
                losses.append(loss.item())
                gc.collect()
                if step == 1_000:  # trace only what is allocated from here on (and kept)
                    tracemalloc.start()
                    base = tracemalloc.get_traced_memory()[0]
                else:
                    growth = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert growth < 64 * 1024, f"memory grew by {growth} bytes over 9,000 steps"
    assert losses[1] < losses[0]  # it did train
    assert all(id(p.data) not in tape_module._locks for p in params)


def test_intermediates_are_freed_after_backward_without_the_gc() -> None:
    gc.disable()  # reference counting alone must free them: the tape builds no cycles
    try:
        w = mg.tensor(np.ones((3, 3)), requires_grad=True)
        x = np.arange(3.0)
        h1 = x @ w
        h2 = h1.tanh()
        h3 = h2 * h1
        loss = h3.sum()
        refs = [weakref.ref(t) for t in (h1, h2, h3)]
        saved = weakref.ref(h2.data)  # tanh's output, saved for its VJP
        del h1, h2, h3
        assert all(r() is not None for r in refs)  # the graph keeps them until backward
        loss.backward()
        assert all(r() is None for r in refs), "intermediate Tensors outlived backward"
        assert saved() is None, "a saved array outlived backward"
        assert loss._op is not None and loss._values is None  # its own record freed too
    finally:
        gc.enable()


def test_plain_backward_runs_the_vjps_on_ndarrays(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path: without a transform asking for higher order, backward records nothing and
    makes no Tensor; a custom Function's backward sees ndarrays."""
    seen: list[type] = []

    class Spy(mg.Function):
        @staticmethod
        def forward(ctx: Any, x: np.ndarray) -> np.ndarray:
            return x * 1.0

        @staticmethod
        def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
            seen.append(type(g))
            return g

    w = mg.tensor(np.ones((3, 2)), requires_grad=True)
    x = np.arange(6.0).reshape(2, 3)
    loss = Spy.apply((x @ w).tanh().softmax(-1)[np.array([0, 1, 1])] * 2.0).logsumexp(None)
    made: list[int] = []
    original = mg.Tensor._make
    monkeypatch.setattr(mg.Tensor, "_make",
                        staticmethod(lambda d, n: made.append(1) or original(d, n)))
    loss.backward()
    assert not made, "backward built Tensors: the VJPs were not run on plain arrays"
    assert seen == [np.ndarray]
    assert type(w.grad) is np.ndarray


@needs_refcounts
def test_a_gradient_passed_on_alone_is_reused_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """x·2 hands tanh a fresh gradient and nothing else (its other operand needs none): once
    the sweep has passed it on, only `grads` holds it, so tanh's VJP runs in place."""
    calls = _count_in_place(monkeypatch, mg.ops.tanh)
    x = mg.tensor(np.linspace(-1.0, 1.0, 6), requires_grad=True)
    (x.tanh() * 2.0).sum().backward()
    assert calls["in_place"] == 1
    np.testing.assert_allclose(x.grad, 2.0 * (1 - np.tanh(x.data) ** 2), rtol=1e-14)
