"""Functional transforms with JAX's names, built on the tape's reverse sweep.

Each transform traces `f` on fresh leaves and runs `run_backward` asking for the gradients of
those leaves only (nobody's `.grad` changes). Inside a transform, when an input is already on
someone's tape, or when `f` closes over a Tensor that requires grad (a parameter), the sweep
runs with `create_graph`: the VJPs are recorded, so the result can be differentiated again (a
gradient penalty reaches the parameters; under `mg.no_grad()` nothing is recorded). That is all
nesting needs: `grad(grad(f))`, `hessian = jacobian(grad(f))`, `hvp` as reverse-over-reverse,
and `jvp` by transposing a VJP (the VJP is linear in its upstream `u`, so differentiating
⟨vjp(u), t⟩ with respect to u gives J·t). No Jacobian is built, except by `jacobian`/`hessian`
themselves, one VJP per output element.

An argument of grad, value_and_grad, vjp and jvp may be a pytree: dicts, lists and tuples nesting
Tensors, arrays and numbers. Each leaf is an input of its own, and the gradients come back in
the argument's structure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minigrad.graph import (
    ArrayLike,
    ShapeMismatchError,
    TensorBase,
    freed_error,
    leaf,
    run_backward,
)
from minigrad.modes import THREAD, no_grad
from minigrad.tensor import Tensor


def toposort(root: TensorBase, stop: set[int]) -> list[TensorBase]:
    """Tensors on root's tape that require grad, inputs before outputs: the op outputs in the
    order of their recording numbers, each leaf (or `stop` Tensor) just before its first
    consumer."""
    made: list[TensorBase] = []
    seen = {id(root)}
    todo = [root]
    while todo:
        t = todo.pop()
        if t._op is None or id(t) in stop:
            continue
        if t._values is None:
            raise freed_error(t)
        made.append(t)
        for p in t._inputs:
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                todo.append(p)
    if not made:
        return [root]
    made.sort(key=lambda t: t._seq)
    order: list[TensorBase] = []
    placed: set[int] = set()
    for t in made:
        for p in t._inputs:
            if p is not None and (p._op is None or id(p) in stop) and id(p) not in placed:
                placed.add(id(p))
                order.append(p)
        order.append(t)
    return order



class GradcheckError(RuntimeError):
    """Analytic and numerical gradients disagree (names the input, the index and both values)."""


class _tracing:  # noqa: N801
    """Record while f runs, and tell nested transforms that they are nested."""

    def __enter__(self) -> None:
        modes = THREAD.modes
        self._prev = modes.grad_enabled
        modes.grad_enabled = True
        modes.transform_depth += 1

    def __exit__(self, *exc: object) -> None:
        modes = THREAD.modes
        modes.grad_enabled = self._prev
        modes.transform_depth -= 1


def _as_input(a: ArrayLike) -> Tensor:
    """A leaf to differentiate at. A Tensor already on a tape stays itself, keeping nesting
    connected; anything else becomes a fresh leaf (float64 if it was an integer)."""
    if isinstance(a, Tensor):
        return a if a.requires_grad else Tensor(a._data, requires_grad=True)
    return Tensor(a, requires_grad=True)


# --- pytrees: an argument may be a dict, list or tuple nesting Tensors, arrays and numbers ---
def _is_node(a: Any) -> bool:
    """A container to look inside: a dict, or a list or tuple holding a Tensor, an array, None or
    another container. A list of plain numbers stays one leaf, read as an array."""
    if isinstance(a, dict):
        return True
    return isinstance(a, (list, tuple)) and any(
        v is None or isinstance(v, (TensorBase, np.ndarray, dict)) or _is_node(v) for v in a)


def _tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    """tree with fn applied to each leaf, in order; the structure is kept (a dict's keys and
    their order, list, tuple, namedtuple), and None stays None."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    if not _is_node(tree):
        return fn(tree)
    items = [_tree_map(fn, v) for v in tree]
    if isinstance(tree, tuple):
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    return items


def _tree_leaves(trees: Sequence[Any]) -> list[Any]:
    """The leaves of each tree in turn, in _tree_map's order."""
    leaves: list[Any] = []
    for tree in trees:
        _tree_map(leaves.append, tree)
    return leaves


def _tree_inputs(tree: Any, name: str, i: int) -> Any:
    """tree with each leaf made an input to differentiate at (`_as_input`)."""
    def one(a: Any) -> Tensor:
        try:
            return _as_input(a)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}: argument {i} holds a {type(a).__name__} that is not a "
                            f"Tensor, an array or a number ({e}); arguments may be those, or "
                            f"dicts, lists and tuples of them") from None
    return _tree_map(one, tree)


def _detached(a: Any) -> Any:
    return a.detach() if isinstance(a, Tensor) else a


def _wants_graph(originals: Sequence[Any]) -> bool:
    """Record the VJPs when nested in another transform or when an input is on a tape already,
    and while mg.compile traces (the recorded VJPs are what it writes down)."""
    modes = THREAD.modes
    if modes.trace is not None:
        return True
    return modes.grad_enabled and (modes.transform_depth > 0 or any(
        isinstance(a, Tensor) and a.requires_grad for a in originals))


def _closes_over_tape(out: Tensor, xs: Sequence[Tensor]) -> bool:
    """Does out depend on a Tensor that requires grad other than through xs (a parameter that f
    closed over)? Then its derivatives must be recorded too, or that dependence is lost."""
    if not (THREAD.modes.grad_enabled and out.requires_grad):
        return False
    stop = {id(x) for x in xs}
    return any(t._op is None and id(t) not in stop for t in toposort(out, stop))


class NotOneElementError(ShapeMismatchError, TypeError):
    """grad's f returned more than one element: a TypeError, as any result grad cannot take,
    and a ShapeMismatchError (ValueError, RuntimeError), as shape misuse of the transforms."""


def _as_output(out: Any, name: str) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list, dict)):
        more = ("; to return more than the value, pass has_aux=True and return (value, aux)"
                if name == "grad" else "")
        raise TypeError(f"{name}: f must return one Tensor, got a {type(out).__name__} of "
                        f"length {len(out)}{more}")
    try:
        return Tensor(out)
    except TypeError:
        raise TypeError(f"{name}: f must return a Tensor or numbers, got {type(out).__name__}") \
            from None


def _sweep(out: Tensor, upstream: Any, xs: Sequence[Tensor], create: bool,
           retain: bool) -> list[Tensor]:
    """The gradients of out (times upstream) for each of xs: zeros where unreachable; on the
    tape when `create`, else fresh ndarrays that share memory with nothing (not the upstream,
    not each other)."""
    if not out.requires_grad:
        return [Tensor(np.zeros_like(x._data)) for x in xs]
    if create and not isinstance(upstream, Tensor):
        upstream = Tensor(upstream)  # made by the constructor: mg.compile sees a constant
    with _tracing() if create else no_grad():
        gs = run_backward(out, upstream, retain_graph=retain or create, inputs=xs,
                          create_graph=create)
    assert gs is not None
    results = []
    handed = {id(upstream)}
    for g, x in zip(gs, xs):
        if g is None:
            g = np.zeros_like(x._data)
        elif not create and (g.base is not None or id(g) in handed or not g.flags.writeable):
            g = np.array(g)  # a copy: results never alias the upstream or each other
        handed.add(id(g))
        results.append(g if isinstance(g, Tensor) else Tensor(g))
    return results


def value_and_grad(f: Callable[..., Any], argnums: int | Sequence[int] = 0,
                   has_aux: bool = False) -> Callable[..., tuple[Any, Any]]:
    """`f`'s value and its gradient with respect to the arguments in argnums.

    f must return one element; with has_aux, a pair (value, aux), and the result is then
    ((value, aux), gradient), aux detached as the value is. An argument may be a pytree (a
    dict, list or tuple nesting Tensors and arrays): its gradient has the same structure. The
    gradient is a tuple, one per argument, for a tuple of argnums.
    """
    single = isinstance(argnums, int)
    nums: tuple[int, ...] = (argnums,) if isinstance(argnums, int) else tuple(argnums)

    def value_and_grad_f(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        args_l = list(args)
        for i in nums:
            if not -len(args_l) <= i < len(args_l):
                raise ValueError(f"grad: argnums {argnums} out of range for {len(args_l)} "
                                 f"positional arguments")
        create = _wants_graph(_tree_leaves([args_l[i] for i in nums]))
        for i in nums:
            args_l[i] = _tree_inputs(args_l[i], "grad", i)
        xs = _tree_leaves([args_l[i] for i in nums])
        with _tracing():
            out, aux = _value_and_aux(f(*args_l, **kwargs), has_aux)
        create = create or _closes_over_tape(out, xs)
        if out.size != 1:
            raise NotOneElementError(f"grad: f must return one element, got shape "
                                     f"{out.shape}; use mg.vjp or mg.jacobian for other outputs")
        grads = iter(_sweep(out, np.ones_like(out._data), xs, create, retain=False))
        per_arg = tuple(_tree_map(lambda _: next(grads), args_l[i]) for i in nums)
        value: Any = out if create else out.detach()
        if has_aux:
            value = (value, aux if create else _tree_map(_detached, aux))
        return value, (per_arg[0] if single else per_arg)

    value_and_grad_f.__name__ = f"value_and_grad({getattr(f, '__name__', 'f')})"
    value_and_grad_f.__wrapped__ = f  # type: ignore[attr-defined]  # its signature, for compile
    return value_and_grad_f


def _value_and_aux(result: Any, has_aux: bool) -> tuple[Tensor, Any]:
    """grad's f returns its value, or with has_aux a pair (value, aux)."""
    if not has_aux:
        return _as_output(result, "grad"), None
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        got = type(result).__name__
        if isinstance(result, (tuple, list)):
            got += f" of length {len(result)}"
        raise TypeError(f"grad: with has_aux=True, f must return a pair (value, aux), got {got}")
    return _as_output(result[0], "grad"), result[1]


def grad(f: Callable[..., Any], argnums: int | Sequence[int] = 0,
         has_aux: bool = False) -> Callable[..., Any]:
    """The gradient of a one-element `f` with respect to argnums; nestable: grad(grad(f)).
    With has_aux, f returns (value, aux) and the result is (gradient, aux)."""
    vg = value_and_grad(f, argnums, has_aux)

    def grad_f(*args: Any, **kwargs: Any) -> Any:
        value, g = vg(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    grad_f.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    grad_f.__wrapped__ = f  # type: ignore[attr-defined]
    return grad_f


def vjp(f: Callable[..., Any], *args: Any) -> tuple[Tensor, Callable[..., tuple[Any, ...]]]:
    """`(f(*args), vjp_fn)`; `vjp_fn(u)` gives uᵀ·∂f/∂argᵢ for every argument, as a tuple, each
    in its argument's structure (an argument may be a pytree, as for `grad`).

    vjp_fn may be called many times (the tape is kept as long as vjp_fn lives).
    """
    create = _wants_graph(_tree_leaves(args))
    targs = [_tree_inputs(a, "vjp", i) for i, a in enumerate(args)]
    xs = _tree_leaves(targs)
    with _tracing():
        out = _as_output(f(*targs), "vjp")
    create = create or _closes_over_tape(out, xs)

    def vjp_fn(upstream: ArrayLike) -> tuple[Any, ...]:
        # an upstream on a tape keeps the result differentiable with respect to it too
        record = create or (isinstance(upstream, Tensor) and upstream.requires_grad
                            and THREAD.modes.grad_enabled)
        u = upstream if isinstance(upstream, Tensor) and record else \
            np.asarray(upstream._data if isinstance(upstream, Tensor) else upstream)
        if u.shape != out.shape:
            raise ShapeMismatchError(f"vjp: upstream has shape {u.shape} but f's output has "
                                     f"shape {out.shape}")
        if u.dtype != out.dtype and not isinstance(u, Tensor):
            u = u.astype(out.dtype)
        grads = iter(_sweep(out, u, xs, record, retain=True))
        return tuple(_tree_map(lambda _: next(grads), a) for a in targs)

    return (out if create else out.detach()), vjp_fn


def _jvp_tangents(primals: Sequence[Any], tangents: Sequence[Any], xs: Sequence[Tensor]
                  ) -> tuple[list[Any], bool]:
    """The tangents' leaves, one per input leaf, each checked against its primal's structure
    and shape; and whether one of them is on a tape."""
    for i, (p, t) in enumerate(zip(primals, tangents)):
        if _tree_map(lambda _: 0, p) != _tree_map(lambda _: 0, t):
            raise ValueError(f"jvp: tangent {i} is not structured as primal {i} (a "
                             f"{type(t).__name__} for a {type(p).__name__}); give a tangent of "
                             f"the same dicts, lists and tuples")
    ts: list[Any] = []
    on_tape = False
    for i, (x, t) in enumerate(zip(xs, _tree_leaves(tangents))):
        if isinstance(t, Tensor) and t.requires_grad and THREAD.modes.grad_enabled:
            tv: Any = t  # on a tape: the result stays differentiable with respect to it
            on_tape = True
        else:
            tv = np.asarray(t._data if isinstance(t, Tensor) else t, dtype=x.dtype)
        if tv.shape != x.shape:
            raise ShapeMismatchError(f"jvp: tangent {i} has shape {tv.shape} but primal {i} has "
                                     f"shape {x.shape}")
        ts.append(tv)
    return ts, on_tape


def jvp(f: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]
        ) -> tuple[Tensor, Tensor]:
    """`(f(*primals), J·tangents)`: a forward-mode product, by transposing the VJP (no Jacobian).
    A primal may be a pytree (as for `grad`), with a tangent of the same structure."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    tprimals = [_tree_inputs(p, "jvp", i) for i, p in enumerate(primals)]
    xs = _tree_leaves(tprimals)
    ts, on_tape = _jvp_tangents(primals, tangents, xs)
    nested = on_tape or _wants_graph(_tree_leaves(primals))
    with _tracing():
        out = _as_output(f(*tprimals), "jvp")
    nested = nested or _closes_over_tape(out, xs)
    with _tracing():
        if not out.requires_grad:
            return out, leaf(np.zeros_like(out._data))
        u = Tensor(np.zeros_like(out._data), requires_grad=True)  # the VJP is linear in u
        gs = run_backward(out, u, retain_graph=True, inputs=xs, create_graph=True)
        assert gs is not None
        terms = [(g * t).sum() for g, t in zip(gs, ts) if g is not None and g.requires_grad]
    if not terms:
        return out, leaf(np.zeros_like(out._data))
    with _tracing():
        total = terms[0]
        for term in terms[1:]:
            total = total + term
    (tangent_out,) = _sweep(total, np.ones_like(total._data), [u], nested, retain=False)
    return (out if nested else out.detach()), tangent_out


def hvp(f: Callable[..., Any], x: ArrayLike, v: ArrayLike) -> Tensor:
    """The Hessian of a one-element f at x times v, without forming the Hessian."""
    v_val = v if isinstance(v, Tensor) else np.asarray(v)  # a v on a tape stays on it
    grad_f = grad(f)

    def directional(x_: Tensor) -> Tensor:
        return (grad_f(x_) * v_val).sum()  # type: ignore[operator, union-attr]

    return grad(directional)(x)  # type: ignore[return-value]


def jacobian(f: Callable[..., Any], x: ArrayLike) -> np.ndarray:
    """∂f/∂x as an ndarray of shape out.shape + x.shape, built one VJP per output element."""
    out, vjp_fn = vjp(f, x)
    x_shape = np.shape(x._data if isinstance(x, Tensor) else np.asarray(x))
    dtype = np.result_type(out.dtype, np.float64 if np.asarray(
        x._data if isinstance(x, Tensor) else x).dtype.kind not in "fc" else
        (x._data if isinstance(x, Tensor) else np.asarray(x)).dtype)
    jac = np.zeros(out.shape + x_shape, dtype=dtype)
    for idx in np.ndindex(*out.shape):
        e = np.zeros(out.shape, dtype=out.dtype)
        e[idx] = 1
        jac[idx] = vjp_fn(e)[0]._data
    return jac


def hessian(f: Callable[..., Any], x: ArrayLike) -> np.ndarray:
    """∂²f/∂x² of a one-element f, shape x.shape + x.shape: the Jacobian of the gradient."""
    return jacobian(grad(f), x)


def gradcheck(f: Callable[..., Any], inputs: ArrayLike | Sequence[ArrayLike], eps: float = 1e-6,
              atol: float = 1e-5, rtol: float = 1e-3) -> bool:
    """Compare every VJP-computed derivative of f with central differences, in float64.

    Returns True, or raises GradcheckError naming the input, the index and both values.
    """
    items = [inputs] if isinstance(inputs, (Tensor, np.ndarray)) else list(inputs)  # type: ignore[arg-type]
    bases = [np.array(x._data if isinstance(x, Tensor) else x, dtype=np.float64) for x in items]
    xs = [Tensor(b.copy(), requires_grad=True) for b in bases]
    with _tracing():
        out = _as_output(f(*xs), "gradcheck")
    out_shape = out.shape
    # Analytic: row i of each input's Jacobian is one VJP with the i-th unit upstream.
    analytic = [np.zeros(out_shape + b.shape) for b in bases]
    if out.requires_grad:
        for i in np.ndindex(*out_shape):
            e = np.zeros(out_shape, dtype=out.dtype)
            e[i] = 1
            with no_grad():
                gs = run_backward(out, e, retain_graph=True, inputs=xs)
            assert gs is not None
            for k, g in enumerate(gs):
                if g is not None:
                    analytic[k][i] = g
    # Numerical: one central difference per input element.
    for k, base in enumerate(bases):
        for j in np.ndindex(*base.shape):
            cols = []
            for step in (eps, -eps):
                moved = base.copy()
                moved[j] += step
                args = [Tensor(moved if m == k else bases[m]) for m in range(len(bases))]
                with no_grad():
                    cols.append(np.asarray(_as_output(f(*args), "gradcheck")._data,
                                           dtype=np.float64))
            numeric = (cols[0] - cols[1]) / (2 * eps)
            for i in np.ndindex(*out_shape):
                a, n = analytic[k][i + j], numeric[i]
                if not abs(a - n) <= atol + rtol * abs(n):
                    where = f"output index {i}, " if out_shape else ""
                    raise GradcheckError(f"gradcheck: input {k} at index {j} ({where}shape "
                                         f"{base.shape}): analytic {float(a)!r} vs numerical "
                                         f"{float(n)!r}")
    return True
