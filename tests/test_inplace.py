"""In-place writes between a forward pass and its backward(): the contract's guarantee.

For every way of writing (into a leaf's .data, through a view of it taken before or after the
forward, into the ndarray given to mg.Tensor, through .numpy() or np.asarray, an intermediate's
.data, rebinding .data), exactly one of these happens:

- the write is refused (ValueError: the array is read-only),
- backward() raises RuntimeError saying what went wrong (naming the op, or the rebound leaf),
- the gradient equals the one at the values the forward pass used.

Never a different gradient. How the engine keeps it (readonly.py): an op's output is read-only
from birth; an input a VJP reads is kept as it is when it is read-only for good, *locked* (made
read-only until backward() frees the graph or the graph is dropped) when it is not small and
nothing but its Tensor holds it, and copied otherwise (a small array, an array the caller holds
too, one with views, a view). So a write to a large array only minigrad holds is refused, and
any other write is harmless. Every scenario runs with small and with large arrays.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest

import minigrad as mg
from minigrad import graph, readonly

# --------------------------------------------------------------------------------------------
# The matrix: every op whose VJP reads what the tape saved, every way of writing
# --------------------------------------------------------------------------------------------
SAVING_OPS: list[tuple[str, Callable[[mg.Tensor], mg.Tensor]]] = [
    ("multiply", lambda t: t * t),
    ("divide", lambda t: 1.0 / t),
    ("power", lambda t: t ** 3),
    ("power exponent", lambda t: 1.5 ** t),
    ("exp", lambda t: t.exp()),
    ("expm1", lambda t: mg.expm1(t)),
    ("log", lambda t: t.log()),
    ("log1p", lambda t: mg.log1p(t)),
    ("sqrt", lambda t: t.sqrt()),
    ("square", lambda t: mg.square(t)),
    ("sin", lambda t: t.sin()),
    ("cos", lambda t: t.cos()),
    ("tanh", lambda t: t.tanh()),
    ("sigmoid", lambda t: t.sigmoid()),
    ("relu", lambda t: (t - 1.0).relu()),
    ("abs", lambda t: (t - 1.0).abs()),
    ("maximum", lambda t: mg.maximum(t, 1.0)),
    ("minimum", lambda t: mg.minimum(1.0, t)),
    ("clip", lambda t: t.clip(0.8, 1.6)),
    ("max", lambda t: t.max(axis=0)),
    ("min", lambda t: t.min(axis=1)),
    ("var", lambda t: t.var(axis=0, ddof=1)),
    ("softmax", lambda t: t.softmax(axis=0)),
    ("log_softmax", lambda t: t.log_softmax(axis=-1)),
    ("logsumexp", lambda t: t.logsumexp(axis=0)),
    ("matmul", lambda t: t @ t.T),
    ("matmul view", lambda t: t[0] @ t.T),
    ("linear", lambda t: mg.linear(t, t, t[:, 0])),
    ("getitem int array", lambda t: t[np.array([1, 1, 0])] * t[np.array([0, 1, 1])]),
    ("where", lambda t: mg.where(t.data > 1.0, t * t, t)),
    ("transposed view", lambda t: t.T * t.T),
    ("reshaped view", lambda t: t.reshape(-1) * t.reshape(-1)),
    ("sliced view", lambda t: t[1:] * t[:-1]),
]
# The ops above that read their input x itself (not only their output): x is saved.
READS_INPUT = ["multiply", "divide", "power", "log", "log1p", "square", "sin", "cos", "abs",
               "maximum", "minimum", "clip", "max", "min", "logsumexp", "matmul", "matmul view",
               "linear", "transposed view", "reshaped view", "sliced view"]

X0 = np.array([[0.7, 1.3, 1.9], [1.1, 0.9, 1.6]])
WEIGHTS = np.linspace(0.5, 1.5, 6).reshape(2, 3)
# The guard copies small arrays outright (a copy costs less than a lock); it locks only arrays
# above that size. BIG float64 elements are above it.
BIG = getattr(readonly, "_COPY_UP_TO", 0) // 8 + 16
# A large X0: values in the same range, none within reach of a kink (relu and abs at 1, clip's
# bounds) or a tie (max and min over rows).
XL = np.random.default_rng(5).uniform(0.7, 1.9, size=(2, BIG // 2 + 1))
SIZES = {"small": X0, "large": XL}


def weighted_loss(y: mg.Tensor) -> mg.Tensor:
    w = np.linspace(0.5, 1.5, y.size).reshape(y.shape)  # non-uniform, fixed
    return (y * w).sum()


def reference_grad(op: Callable[[mg.Tensor], mg.Tensor], x0: np.ndarray) -> np.ndarray:
    x = mg.tensor(x0, requires_grad=True)
    weighted_loss(op(x) + op(x + 0.25)).backward()
    assert x.grad is not None
    return x.grad


class Write(NamedTuple):
    """A way of writing: `before(x, arr)` runs before the forward pass (to take a view) and
    returns a handle; `after(handle, x, h, arr)` writes between forward and backward. x is the
    leaf, h = x + 0.25 an intermediate the op consumed, arr the ndarray given to mg.Tensor (None
    when the leaf was made by mg.tensor, which copies)."""

    name: str
    after: Callable[[Any, mg.Tensor, mg.Tensor, Any], Any]
    before: Callable[[mg.Tensor, Any], Any] = lambda x, arr: None
    needs_arr: bool = False


def _fill(a: np.ndarray) -> None:
    a[...] = 5.0


def _rebind(t: mg.Tensor, shape: tuple[int, ...]) -> None:
    t.data = np.full(shape, 5.0)


WRITES: list[Write] = [
    Write("leaf .data[...] =", lambda v, x, h, arr: _fill(x.data)),
    Write("leaf .data[0, 1] =", lambda v, x, h, arr: x.data.__setitem__((0, 1), 5.0)),
    Write("leaf .data *=", lambda v, x, h, arr: x.data.__imul__(2.0)),
    Write("through .numpy()", lambda v, x, h, arr: x.numpy().__setitem__(0, 5.0)),
    Write("through np.asarray", lambda v, x, h, arr: np.asarray(x).__iadd__(1.0)),
    Write("through .detach().data", lambda v, x, h, arr: _fill(x.detach().data)),
    Write("np.exp(out=leaf .data)", lambda v, x, h, arr: np.exp(x.data, out=x.data)),
    Write("view after the forward", lambda v, x, h, arr: _fill(x.data[0])),
    Write("view before: data[0]", lambda v, x, h, arr: _fill(v), lambda x, arr: x.data[0]),
    Write("view before: data.T", lambda v, x, h, arr: _fill(v), lambda x, arr: x.data.T),
    Write("view before: np.ravel", lambda v, x, h, arr: _fill(v),
          lambda x, arr: np.ravel(x.data)),
    Write("view before: reshape(-1)", lambda v, x, h, arr: _fill(v),
          lambda x, arr: x.data.reshape(-1)),
    Write("view before: [::-1]", lambda v, x, h, arr: _fill(v), lambda x, arr: x.data[::-1]),
    Write("ndarray given to mg.Tensor", lambda v, x, h, arr: _fill(arr), needs_arr=True),
    Write("np.exp(out=that ndarray)", lambda v, x, h, arr: np.exp(arr, out=arr),
          needs_arr=True),
    Write("view of that ndarray made first", lambda v, x, h, arr: _fill(v),
          lambda x, arr: arr[:, ::-1], needs_arr=True),
    Write("intermediate .data[...] =", lambda v, x, h, arr: _fill(h.data)),
    Write("intermediate .data *=", lambda v, x, h, arr: h.data.__imul__(2.0)),
    Write("intermediate .numpy()", lambda v, x, h, arr: h.numpy().__setitem__(0, 5.0)),
    Write("rebind leaf .data", lambda v, x, h, arr: _rebind(x, x.shape)),
    Write("rebind leaf .data to another shape", lambda v, x, h, arr: _rebind(x, x.shape[::-1])),
    Write("rebind intermediate .data", lambda v, x, h, arr: _rebind(h, h.shape)),
    Write("rebind intermediate .data to another shape",
          lambda v, x, h, arr: _rebind(h, (h.size,))),
]
CONSTRUCTIONS = ["mg.tensor", "mg.Tensor(arr)"]  # the Tensor alone holds its array, or not


def make_leaf(construction: str, x0: np.ndarray) -> tuple[mg.Tensor, np.ndarray | None]:
    if construction == "mg.tensor":
        return mg.tensor(x0, requires_grad=True), None
    arr = x0.copy()
    return mg.Tensor(arr, requires_grad=True), arr  # shares arr's memory


def ops_on_tape(t: mg.Tensor) -> set[str]:
    names: set[str] = set()
    stack, seen = [t], set()
    while stack:
        node = stack.pop()
        if node._op is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.add(node._op.name)
        stack.extend(i for i in node._inputs if i is not None)
    return names


def run_write_scenario(op: Callable[[mg.Tensor], mg.Tensor], write: Write,
                       construction: str, x0: np.ndarray = X0) -> str:
    """Forward, write, backward; return which allowed outcome happened, or fail."""
    expected = reference_grad(op, x0)
    x, arr = make_leaf(construction, x0)
    handle = write.before(x, arr)
    h = x + 0.25
    loss = weighted_loss(op(x) + op(h))
    names = ops_on_tape(loss)
    try:
        write.after(handle, x, h, arr)
    except ValueError as e:
        assert "read-only" in str(e), e
        outcome = "refused"
    else:
        outcome = "accepted"
    try:
        loss.backward()
    except RuntimeError as e:
        msg = str(e)
        assert any(n in msg for n in names) or "rebound" in msg, f"names nothing: {msg}"
        return "backward raised"
    assert x.grad is not None
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12,
                               err_msg="an in-place write changed the gradient silently")
    return outcome


def _write_cases() -> list[Any]:
    return [pytest.param(w, c, id=f"{w.name}-{c}") for w in WRITES for c in CONSTRUCTIONS
            if c == "mg.Tensor(arr)" or not w.needs_arr]


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("write,construction", _write_cases())
@pytest.mark.parametrize("opname,op", SAVING_OPS, ids=[o for o, _ in SAVING_OPS])
def test_in_place_write_never_changes_the_gradient(opname: str, op: Any, write: Write,
                                                   construction: str, size: str) -> None:
    run_write_scenario(op, write, construction, SIZES[size])


def test_the_matrix_detects_a_silently_changed_gradient(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """The check above is not vacuous: if the tape kept the caller's writeable array as it is
    (no lock, no copy), a write through a view taken before the forward would move the
    gradient, and the scenario fails."""
    monkeypatch.setattr(graph, "guard", lambda value, lease: value)
    write = next(w for w in WRITES if w.name == "view before: data[0]")
    with pytest.raises(AssertionError, match="changed the gradient silently"):
        run_write_scenario(dict(SAVING_OPS)["multiply"], write, "mg.tensor")


# --------------------------------------------------------------------------------------------
# Which outcome: arrays only minigrad holds are locked, arrays the caller holds are copied
# --------------------------------------------------------------------------------------------
DIRECT_WRITES = ["leaf .data[...] =", "leaf .data *=", "through .numpy()", "through np.asarray",
                 "through .detach().data", "np.exp(out=leaf .data)", "view after the forward"]
# Ops that read x itself as their first use of it (an earlier op on x holds x's array in its
# record, so the leaf is no longer its only holder: then it is copied instead). x is large.
LOCKING_OPS = ["multiply", "divide", "power", "log", "log1p", "square", "sin", "cos", "maximum",
               "minimum", "clip", "max", "min", "logsumexp"]


@pytest.mark.parametrize("opname", LOCKING_OPS)
def test_a_write_into_an_array_only_a_tensor_holds_is_refused(opname: str) -> None:
    op = dict(SAVING_OPS)[opname]
    expected = mg.grad(lambda t: weighted_loss(op(t)))(XL).data  # type: ignore[union-attr]
    for wname in DIRECT_WRITES:
        write = next(w for w in WRITES if w.name == wname)
        x = mg.tensor(XL, requires_grad=True)
        loss = weighted_loss(op(x))
        assert readonly.locked_by_a_graph(x.data)
        with pytest.raises(ValueError, match="read-only"):
            write.after(None, x, x, None)
        loss.backward()
        np.testing.assert_allclose(x.grad, expected, rtol=1e-12)
        assert not readonly.locked_by_a_graph(x.data) and x.data.flags.writeable


@pytest.mark.parametrize("opname,op", SAVING_OPS, ids=[o for o, _ in SAVING_OPS])
def test_a_write_into_an_intermediate_is_refused(opname: str, op: Any) -> None:
    """An op's output is read-only from birth and for good: the consumer's saved value."""
    for wname in ("intermediate .data[...] =", "intermediate .data *=", "intermediate .numpy()"):
        write = next(w for w in WRITES if w.name == wname)
        assert run_write_scenario(op, write, "mg.tensor") == "refused", wname


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("opname", READS_INPUT)
def test_a_write_into_an_array_the_caller_holds_is_accepted_and_harmless(opname: str, size: str
                                                                          ) -> None:
    """The tape has its own copy: the caller's array (and views of it, and the leaf's .data,
    which is that array) stays theirs to change."""
    op = dict(SAVING_OPS)[opname]
    for wname in ("ndarray given to mg.Tensor", "view of that ndarray made first",
                  "leaf .data[...] =", "through .numpy()", "view before: data[0]"):
        write = next(w for w in WRITES if w.name == wname)
        assert run_write_scenario(op, write, "mg.Tensor(arr)", SIZES[size]) == "accepted", wname


@pytest.mark.parametrize("n", [2, int(np.sqrt(BIG)) + 1], ids=["small", "large"])
@pytest.mark.parametrize("how", ["W.data[0]", "W.data.T", "np.ravel(W.data)",
                                 "W.data.reshape(-1)", "W.data[:, ::-1]", "memoryview"])
def test_a_view_of_a_leafs_array_taken_before_the_forward_cannot_change_the_gradient(
        how: str, n: int) -> None:
    """The view was made before the tape saw W, so locking W's array would leave the view
    writeable: the tape must not keep W's array itself then."""
    w0 = np.arange(1.0, n * n + 1).reshape(n, n)
    w = mg.tensor(w0, requires_grad=True)
    x = mg.tensor(np.ones(n), requires_grad=True)
    view = {"W.data[0]": lambda: w.data[0], "W.data.T": lambda: w.data.T,
            "np.ravel(W.data)": lambda: np.ravel(w.data),
            "W.data.reshape(-1)": lambda: w.data.reshape(-1),
            "W.data[:, ::-1]": lambda: w.data[:, ::-1],
            "memoryview": lambda: np.frombuffer(memoryview(w.data), dtype=np.float64)}[how]()
    loss = (w @ x).sum()  # x.grad = W's column sums
    for target in (view, w.data):
        try:
            target[...] = 100.0
        except ValueError:
            pass  # refused: allowed
    loss.backward()
    np.testing.assert_array_equal(x.grad, w0.sum(axis=0))
    np.testing.assert_array_equal(w.grad, np.ones((n, n)))


def test_writes_through_views_made_by_ops_are_refused() -> None:
    """Views made by ops (slices, .T, reshape, broadcast) are op outputs: read-only from birth,
    before or after the op that saved the memory."""
    for make_view in (lambda t: t[0], lambda t: t.T, lambda t: t.reshape(-1), lambda t: t[::-1],
                      lambda t: t[None], lambda t: mg.broadcast_to(t, (2,) + t.shape)):
        x = mg.tensor(X0, requires_grad=True)
        early = make_view(x)  # made before the op below saved x
        loss = weighted_loss(x * x)
        late = make_view(x)
        for v in (early, late):
            with pytest.raises(ValueError, match="read-only"):
                v.data[...] = 5.0
        loss.backward()
        np.testing.assert_allclose(x.grad, 2 * X0 * WEIGHTS)


def test_writes_into_a_leaf_that_views_a_larger_array() -> None:
    """mg.Tensor may share memory with a slice of a user's array (one flat buffer for all
    parameters). Writing through the leaf, the buffer, or a sibling leaf on the same buffer must
    not change the gradient of a graph that saved a view of that leaf."""
    for path in ("leaf", "buffer", "sibling"):
        flat = np.arange(1.0, 13.0)
        w = mg.Tensor(flat[:6].reshape(2, 3), requires_grad=True)
        b = mg.Tensor(flat[6:], requires_grad=True)
        x = mg.tensor(X0, requires_grad=True)
        loss = weighted_loss(x * w.T.T[0] + b[:3] * x)  # the tape saves views of w and b
        target = {"leaf": w.data, "buffer": flat, "sibling": b.data}[path]
        target[...] = 0.0  # a view: the tape has its own copy, so nothing is locked
        loss.backward()
        np.testing.assert_allclose(x.grad, (np.arange(1.0, 4.0) + np.arange(7.0, 10.0))
                                   * WEIGHTS, err_msg=path)
        w.data -= 0.1 * w.grad  # type: ignore[operator]
        b.data -= 0.1 * b.grad  # type: ignore[operator]


def test_views_of_a_dataset_are_copied_not_locked() -> None:
    """A dataset split into row Tensors (views of one array): a saved row is the tape's own
    copy, so the dataset stays writeable and the lock table stays empty."""
    data = np.arange(50.0 * BIG).reshape(50, BIG)
    rows = [mg.Tensor(data[i]) for i in range(50)]
    w = mg.Tensor(data[0], requires_grad=True)
    before = len(readonly._locks)
    loss = (rows[5] * w).sum()
    assert len(readonly._locks) == before
    for arr in (w.data, rows[5].data, data):
        arr[0] = -1.0
    loss.backward()
    np.testing.assert_array_equal(w.grad, np.arange(5.0 * BIG, 6.0 * BIG))


def test_saved_parameters_of_an_op_are_its_own() -> None:
    """where's condition, an integer index and clip's bounds are the tape's own copies: the
    caller's arrays stay writeable and a write to them moves no gradient."""
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    cond = np.array([True, True, False])
    idx = np.array([0, 0, 2])
    lo, hi = np.array([0.0, 2.5, 0.5]), np.array([2.0, 3.0, 2.5])
    loss = (mg.where(cond, x, 0.0) * 1.0).sum() + (x[idx] * np.array([1.0, 2.0, 3.0])).sum() \
        + (mg.clip(x, lo, hi) * 10.0).sum()
    for arr in (cond, idx, lo, hi):
        arr[...] = arr[::-1].copy()
    loss.backward()
    np.testing.assert_allclose(x.grad, [1 + 3 + 10, 1 + 0 + 0, 0 + 3 + 0])


@pytest.mark.parametrize("kind", ["array", "arrays", "tensor", "list"])
def test_an_index_array_rewritten_after_the_forward_moves_no_gradient(kind: str) -> None:
    """The caller may reuse its index arrays (a rollout buffer of actions) before backward()
    and the gradient still goes where the forward picked."""
    x0 = np.arange(12.0).reshape(4, 3)
    rows, cols = np.array([0, 1, 1, 3]), np.array([2, 0, 0, 1])
    index: Any = {"array": rows, "arrays": (rows, cols), "tensor": (mg.Tensor(rows), cols),
                  "list": (rows, [2, 0, 0, 1])}[kind]
    x = mg.tensor(x0, requires_grad=True)
    picked = x[index]
    expected = np.zeros_like(x0)
    np.add.at(expected, index if kind == "array" else (rows, cols), 1.0)
    rows[:] = 2
    cols[:] = 1
    picked.sum().backward()
    np.testing.assert_array_equal(x.grad, expected)


def test_inputs_no_vjp_reads_stay_writeable_and_writes_to_them_are_harmless() -> None:
    """linear's bias (b̄ = Σḡ needs only its shape) and divide's numerator (ā = ḡ/b,
    b̄ = −ḡy/b) are not saved: a write into them between forward and backward is allowed and
    leaves every gradient as it was at the forward values; the arrays the VJPs read are locked."""
    def run(write: bool) -> list[np.ndarray]:
        rng = np.random.default_rng(3)
        x = mg.tensor(rng.normal(size=(BIG, 3)), requires_grad=True)
        w = mg.tensor(rng.normal(size=(BIG, 3)), requires_grad=True)
        b = mg.tensor(rng.normal(size=BIG), requires_grad=True)
        num = mg.tensor(rng.normal(size=BIG), requires_grad=True)
        den = mg.tensor(rng.uniform(1.0, 2.0, size=BIG), requires_grad=True)
        y = mg.linear(x, w, b) * (num / den)
        loss = (y * y).sum()
        if write:
            b.data[...] = 100.0
            num.data *= -3.0
            for saved in (x.data, w.data, den.data):
                with pytest.raises(ValueError, match="read-only"):
                    saved[...] = 0.0
        loss.backward()
        return [t.grad for t in (x, w, b, num, den)]  # type: ignore[misc]

    for got, want in zip(run(write=True), run(write=False)):
        np.testing.assert_array_equal(got, want)


def test_an_unread_input_that_views_a_read_one() -> None:
    """A bias that is a view of the weight's memory, or a numerator viewing the denominator's:
    a write through the unread input must not reach what the VJP reads."""
    rng = np.random.default_rng(4)
    w0, x0 = rng.normal(size=(3, 3)), rng.normal(size=(2, 3))
    w = mg.tensor(w0, requires_grad=True)
    x = mg.tensor(x0, requires_grad=True)
    bias = w.data[0]  # made before the op: its own writeable flag
    loss = (mg.linear(x, w, bias) * np.arange(1.0, 4.0)).sum()
    bias[...] = 7.0  # accepted (the tape copied w) or refused: either way harmless
    buf = rng.uniform(1.0, 2.0, size=4)
    den, num = mg.Tensor(buf, requires_grad=True), buf[::-1]
    ratio = ((num / den) * np.arange(1.0, 5.0)).sum()
    num_before = num.copy()
    num[...] = 5.0
    loss.backward()
    ratio.backward()
    np.testing.assert_allclose(x.grad, np.tile(np.arange(1.0, 4.0) @ w0, (2, 1)))
    np.testing.assert_allclose(w.grad, np.outer(np.arange(1.0, 4.0), x0.sum(axis=0)))
    den0 = num_before[::-1]
    np.testing.assert_allclose(den.grad, -num_before / den0 ** 2 * np.arange(1.0, 5.0))


def test_a_view_input_of_an_op_that_reads_no_input_stays_writeable() -> None:
    """where reads only its condition: a view input stays writeable and its gradient does not
    depend on it."""
    buf = np.arange(1.0, 7.0)
    a = mg.Tensor(buf[:3], requires_grad=True)
    loss = (mg.where(np.array([True, False, True]), a, 0.0) * 2.0).sum()
    a.data[...] = 9.0
    loss.backward()
    np.testing.assert_array_equal(a.grad, [2.0, 0.0, 2.0])


# --------------------------------------------------------------------------------------------
# Rebinding .data, and metadata changes of a saved array
# --------------------------------------------------------------------------------------------
def test_rebinding_a_leaf_to_another_shape_raises_in_backward() -> None:
    """The gradient has the shape the forward saw; a leaf rebound to another shape between
    forward and backward would get a gradient that does not fit it (or, accumulated or
    stepped, one broadcast into it): backward() raises, as PyTorch does, and leaves .grad."""
    p = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = (p * p).sum()
    p.data = np.zeros((2, 3))
    with pytest.raises(RuntimeError, match=r"rebound.*\(3,\).*\(2, 3\)"):
        loss.backward()
    assert p.grad is None
    q = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = (q * 2.0).sum()
    q.data = np.zeros((2, 3))
    with pytest.raises(RuntimeError, match="rebound"):
        loss.backward()
    mg.optim.SGD([q], lr=0.1).step()  # no gradient: nothing broadcast into q
    np.testing.assert_array_equal(q.data, np.zeros((2, 3)))
    r = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = (r * 2.0).sum()
    r.data = np.zeros(3)  # the same shape: fine, the tape kept what it needs
    loss.backward()
    np.testing.assert_array_equal(r.grad, [2.0, 2.0, 2.0])


def test_rebinding_data_during_a_higher_order_transform_raises_or_is_exact() -> None:
    def f(t: mg.Tensor) -> mg.Tensor:
        y = t.exp()
        y.data = np.zeros_like(y.data)  # rebind the saved output inside the traced function
        return y.sum()

    x0 = np.array([0.5, -1.0])
    try:
        h = mg.hessian(f, x0)
    except RuntimeError as e:
        assert "exp" in str(e)
        return
    np.testing.assert_allclose(h, np.diag(np.exp(x0)))


def test_rebinding_an_input_during_a_higher_order_transform_names_the_op() -> None:
    """Higher order runs the VJPs on the Tensors themselves: if one of them was rebound to
    other values after the op was recorded, backward says which op needs the old ones."""
    def f(t: mg.Tensor) -> mg.Tensor:
        w = mg.tensor([1.0, 2.0], requires_grad=True)
        y = (t * w).sum()
        w.data = np.array([5.0, 5.0])
        return y

    try:
        g = mg.grad(mg.grad(lambda t: f(t)))(np.array(0.5))  # type: ignore[arg-type]
    except RuntimeError as e:
        assert "multiply" in str(e)
        return
    np.testing.assert_allclose(g.data, 0.0)  # type: ignore[union-attr]


# When only a leaf holds its (large) array, the tape locks that array rather than copying it.
# Assigning .shape, .strides or .dtype changes an array in place without writing an element,
# and NumPy allows it on a read-only array: the tape must not see the change. Each case: a's
# (large) value and the change; b's gradient in (a * b * w).sum() must stay a * w.
N_SIDE = int(np.sqrt(BIG)) + 1
METADATA_WRITES: dict[str, tuple[np.ndarray, Callable[[np.ndarray], None]]] = {
    ".strides: a transpose in place": (np.arange(1.0, N_SIDE ** 2 + 1).reshape(N_SIDE, N_SIDE),
                                       lambda a: setattr(a, "strides", a.strides[::-1])),
    ".shape: (n,) to (n, 1)": (np.arange(1.0, BIG + 1), lambda a: setattr(a, "shape",
                                                                          (a.size, 1))),
    ".dtype: float64 to int64": (np.arange(1.0, BIG + 1), lambda a: setattr(a, "dtype",
                                                                            np.int64)),
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # setting .strides (NumPy >= 2.4)
@pytest.mark.parametrize("how", list(METADATA_WRITES))
def test_assigning_shape_strides_or_dtype_of_a_saved_array(how: str) -> None:
    a0, change = METADATA_WRITES[how]
    w = np.linspace(0.5, 1.5, a0.size).reshape(a0.shape)
    a = mg.tensor(a0)  # a constant only its Tensor holds: multiply's VJP for b reads it
    b = mg.tensor(np.ones(a0.shape), requires_grad=True)
    loss = (a * b * w).sum()
    assert readonly.locked_by_a_graph(a.data)  # locked, not copied: the case under test
    try:
        change(a.data)
    except (ValueError, AttributeError, TypeError):
        pass  # refused: allowed
    try:
        loss.backward()
    except RuntimeError as e:
        assert "multiply" in str(e)
        return
    np.testing.assert_array_equal(b.grad, a0 * w)


def test_assigning_the_shape_of_an_array_the_caller_holds_is_harmless() -> None:
    """The caller's array was copied when the tape saved it: changing its shape (a metadata
    write NumPy cannot refuse) leaves the tape's copy alone."""
    arr = np.array([1.0, 2.0, 3.0, 4.0])
    a = mg.Tensor(arr)
    b = mg.tensor([1.0, 1.0, 2.0, 2.0], requires_grad=True)
    loss = (a * b).sum()
    arr.shape = (4, 1)
    loss.backward()
    np.testing.assert_array_equal(b.grad, [1.0, 2.0, 3.0, 4.0])


# --------------------------------------------------------------------------------------------
# Lock lifetimes
# --------------------------------------------------------------------------------------------
def test_parameter_update_after_backward() -> None:
    w = mg.tensor(np.linspace(-1.0, 1.0, 2 * BIG).reshape(2, BIG), requires_grad=True)
    x = np.array([[1.0, -1.0]])
    lr = 0.1
    for _ in range(3):
        loss = ((x @ w).tanh() ** 2).sum()
        assert readonly.locked_by_a_graph(w.data)
        with pytest.raises(ValueError, match="read-only"):
            w.data -= lr  # the tape still needs w
        loss.backward()
        assert not readonly.locked_by_a_graph(w.data)
        w.data -= lr * w.grad  # type: ignore[operator]
        w.grad = None
    assert w.data.flags.writeable


def test_dropping_a_graph_without_backward_releases_its_locks() -> None:
    w = mg.tensor(np.ones(BIG), requires_grad=True)
    loss = ((w * 3.0).exp() * w).sum()  # two ops lock w
    assert not w.data.flags.writeable and readonly._locks[id(w.data)][1] == 2
    del loss
    assert w.data.flags.writeable
    w.data[0] = 5.0
    # an exception in the middle of a forward also leaves nothing locked behind
    with pytest.raises(ValueError):
        _ = (w * w) + mg.ones(BIG + 1)
    assert w.data.flags.writeable


def test_dropping_a_deep_graph_releases_every_lock() -> None:
    x = mg.tensor(np.ones(BIG), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * x
    assert readonly.locked_by_a_graph(x.data)
    del y
    gc.collect()
    assert x.data.flags.writeable and not readonly.locked_by_a_graph(x.data)
    assert id(x.data) not in readonly._locks


def test_retain_graph_keeps_the_lock_until_the_graph_is_gone() -> None:
    w = mg.tensor(np.ones(BIG), requires_grad=True)
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
    w = mg.tensor(np.ones(BIG), requires_grad=True)
    a = (w * w).sum()
    b = (w * w.exp()).sum()
    a.backward()
    assert not w.data.flags.writeable  # b's graph still needs w
    b.backward()
    assert w.data.flags.writeable
    assert id(w.data) not in readonly._locks


def test_a_user_read_only_array_stays_read_only() -> None:
    arr = np.ones(3)
    arr.setflags(write=False)
    w = mg.Tensor(arr, requires_grad=True)
    (w * w).sum().backward()
    assert not arr.flags.writeable  # minigrad never unlocks what it did not lock
    assert not readonly.locked_by_a_graph(arr)


def test_without_reference_counts_nothing_is_locked_and_everything_is_copied(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where reference counts are not trusted (CPython >= 3.14, other interpreters) the guard
    copies every array it cannot prove alone: writes are accepted and harmless."""
    monkeypatch.setattr(readonly, "COUNTS_REFS", False)
    x0 = np.linspace(-1.0, 2.0, BIG)
    w = mg.tensor(x0, requires_grad=True)
    loss = (w * w.exp()).sum()
    assert not readonly.locked_by_a_graph(w.data) and w.data.flags.writeable
    w.data[...] = 0.0
    loss.backward()
    np.testing.assert_allclose(w.grad, np.exp(x0) * (1 + x0))


def test_recorded_outputs_are_read_only_for_good() -> None:
    """An op output on the tape is born read-only and stays so after backward(); outputs
    computed off the tape stay writeable; np.array(t) copies."""
    x = mg.tensor([0.5, -1.0, 2.0], requires_grad=True)
    h = x.tanh()
    y = (h * 2.0).sum()
    for t in (h, y):
        with pytest.raises(ValueError, match="read-only"):
            t.data[...] = 0.0
        assert not readonly.locked_by_a_graph(t.data)  # read-only for good, not locked
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * (1 - np.tanh(x.data) ** 2))
    assert not h.data.flags.writeable
    copy = np.array(h)
    copy *= 2.0  # a copy is the user's own
    x.data -= 0.1 * x.grad  # the leaf is writeable again
    with mg.no_grad():
        assert x.tanh().data.flags.writeable
    assert (mg.tensor([1.0, 2.0]) * 2).data.flags.writeable  # no input requires grad


def test_an_output_that_is_its_input_does_not_freeze_the_input() -> None:
    """A forward may return its input array itself (astype to its own dtype, an identity
    Function): the output is frozen, the input is left as it was."""
    class Identity(mg.Function):
        @staticmethod
        def forward(ctx: Any, a: np.ndarray) -> np.ndarray:
            return a

        @staticmethod
        def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
            return g

    for make in (lambda t: t.astype(np.float64), Identity.apply):
        x = mg.tensor([1.0, 2.0], requires_grad=True)
        y = make(x)
        loss = (y * y).sum()
        with pytest.raises(ValueError):
            y.data[0] = 3.0
        loss.backward()
        np.testing.assert_allclose(x.grad, [2.0, 4.0])
        x.data[0] = 3.0


def test_a_tensor_made_from_a_recorded_value_is_writeable() -> None:
    """`w.data = w - lr * w.grad` with grad enabled records the update; the frozen result must
    not become the parameter's memory, or every later in-place update would fail. mg.Tensor(t)
    copies a read-only value too."""
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    x.data = x - 0.1 * x.grad  # type: ignore[operator]
    x.grad = None
    (x * x).sum().backward()
    mg.optim.SGD([x], lr=0.1).step()
    np.testing.assert_allclose(x.data, [0.8 * 0.8, 1.6 * 0.8])  # two steps of x -= 0.2 x
    p = mg.Tensor(x * 0.5, requires_grad=True)  # a new leaf from a recorded value
    p.data -= 1.0


def test_step_on_a_parameter_sharing_a_frozen_output_says_why() -> None:
    w = mg.tensor([1.0, 2.0], requires_grad=True)
    p = mg.Tensor(np.asarray(w.tanh()), requires_grad=True)  # np.asarray: the frozen output
    p.grad = np.ones(2)
    with pytest.raises(RuntimeError, match="read-only"):
        mg.optim.SGD([p], lr=0.1).step()


def test_a_function_that_returns_its_own_buffer_can_run_again() -> None:
    """A forward may return an array it keeps (a reused buffer): that array is not the op's to
    freeze for good; it may be locked while the graph needs it, or copied."""
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
        try:
            buf[0] = 5.0
        except ValueError:
            pass
        np.testing.assert_allclose(y.data, 2 * x.data)
        y.sum().backward()
    np.testing.assert_allclose(x.grad, [6.0, 6.0, 6.0])
    assert buf.flags.writeable


def test_a_custom_functions_saved_arrays_are_protected() -> None:
    class OnlyFirst(mg.Function):
        """y = a·b, differentiated with respect to a only."""

        @staticmethod
        def forward(ctx: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            ctx.save_for_backward(b)
            return a * b

        @staticmethod
        def backward(ctx: Any, g: np.ndarray) -> tuple[np.ndarray, None]:
            (b,) = ctx.saved
            return g * b, None

    b = mg.tensor([3.0, 4.0])
    c = mg.tensor([1.0, 2.0], requires_grad=True)
    y = OnlyFirst.apply(c, b)
    try:
        b.data[0] = 10.0
    except ValueError:
        pass
    y.sum().backward()
    np.testing.assert_array_equal(c.grad, [3.0, 4.0])
