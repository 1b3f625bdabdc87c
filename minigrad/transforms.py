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
from minigrad.modes import MODES, no_grad
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
        self._prev = MODES.grad_enabled
        MODES.grad_enabled = True
        MODES.transform_depth += 1

    def __exit__(self, *exc: object) -> None:
        MODES.grad_enabled = self._prev
        MODES.transform_depth -= 1


def _as_input(a: ArrayLike) -> Tensor:
    """A leaf to differentiate at. A Tensor already on a tape stays itself, keeping nesting
    connected; anything else becomes a fresh leaf (float64 if it was an integer)."""
    if isinstance(a, Tensor):
        return a if a.requires_grad else Tensor(a._data, requires_grad=True)
    return Tensor(a, requires_grad=True)


def _wants_graph(originals: Sequence[Any]) -> bool:
    """Record the VJPs when nested in another transform or when an input is on a tape already."""
    return MODES.grad_enabled and (MODES.transform_depth > 0 or any(
        isinstance(a, Tensor) and a.requires_grad for a in originals))


def _closes_over_tape(out: Tensor, xs: Sequence[Tensor]) -> bool:
    """Does out depend on a Tensor that requires grad other than through xs (a parameter that f
    closed over)? Then its derivatives must be recorded too, or that dependence is lost."""
    if not (MODES.grad_enabled and out.requires_grad):
        return False
    stop = {id(x) for x in xs}
    return any(t._op is None and id(t) not in stop for t in toposort(out, stop))


def _as_output(out: Any, name: str) -> Tensor:
    if isinstance(out, Tensor):
        return out
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
        return [leaf(np.zeros_like(x._data)) for x in xs]
    if create and not isinstance(upstream, Tensor):
        upstream = leaf(upstream)
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
        results.append(g if isinstance(g, Tensor) else leaf(g))
    return results


def value_and_grad(f: Callable[..., Any], argnums: int | Sequence[int] = 0
                   ) -> Callable[..., tuple[Tensor, Tensor | tuple[Tensor, ...]]]:
    """`f`'s value and its gradient with respect to the arguments in argnums.

    f must return one element. The gradient is a Tensor (a tuple for a tuple of argnums).
    """
    single = isinstance(argnums, int)
    nums: tuple[int, ...] = (argnums,) if isinstance(argnums, int) else tuple(argnums)

    def value_and_grad_f(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor | tuple[Tensor, ...]]:
        args_l = list(args)
        for i in nums:
            if not -len(args_l) <= i < len(args_l):
                raise ValueError(f"grad: argnums {argnums} out of range for {len(args_l)} "
                                 f"positional arguments")
        create = _wants_graph([args_l[i] for i in nums])
        xs = []
        for i in nums:
            args_l[i] = _as_input(args_l[i])
            xs.append(args_l[i])
        with _tracing():
            out = _as_output(f(*args_l, **kwargs), "grad")
        create = create or _closes_over_tape(out, xs)
        if out.size != 1:
            raise ShapeMismatchError(f"grad: f must return one element, got shape {out.shape}; "
                                     f"use mg.vjp or mg.jacobian for other outputs")
        grads = _sweep(out, np.ones_like(out._data), xs, create, retain=False)
        value = out if create else out.detach()
        return value, (grads[0] if single else tuple(grads))

    value_and_grad_f.__name__ = f"value_and_grad({getattr(f, '__name__', 'f')})"
    return value_and_grad_f


def grad(f: Callable[..., Any], argnums: int | Sequence[int] = 0
         ) -> Callable[..., Tensor | tuple[Tensor, ...]]:
    """The gradient of a one-element `f` with respect to argnums; nestable: grad(grad(f))."""
    vg = value_and_grad(f, argnums)

    def grad_f(*args: Any, **kwargs: Any) -> Tensor | tuple[Tensor, ...]:
        return vg(*args, **kwargs)[1]

    grad_f.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    return grad_f


def vjp(f: Callable[..., Any], *args: ArrayLike
        ) -> tuple[Tensor, Callable[..., tuple[Tensor, ...]]]:
    """`(f(*args), vjp_fn)`; `vjp_fn(u)` gives uᵀ·∂f/∂argᵢ for every argument, as a tuple.

    vjp_fn may be called many times (the tape is kept as long as vjp_fn lives).
    """
    create = _wants_graph(args)
    xs = [_as_input(a) for a in args]
    with _tracing():
        out = _as_output(f(*xs), "vjp")
    create = create or _closes_over_tape(out, xs)

    def vjp_fn(upstream: ArrayLike) -> tuple[Tensor, ...]:
        # an upstream on a tape keeps the result differentiable with respect to it too
        record = create or (isinstance(upstream, Tensor) and upstream.requires_grad
                            and MODES.grad_enabled)
        u = upstream if isinstance(upstream, Tensor) and record else \
            np.asarray(upstream._data if isinstance(upstream, Tensor) else upstream)
        if u.shape != out.shape:
            raise ShapeMismatchError(f"vjp: upstream has shape {u.shape} but f's output has "
                                     f"shape {out.shape}")
        if u.dtype != out.dtype and not isinstance(u, Tensor):
            u = u.astype(out.dtype)
        return tuple(_sweep(out, u, xs, record, retain=True))

    return (out if create else out.detach()), vjp_fn


def jvp(f: Callable[..., Any], primals: Sequence[ArrayLike], tangents: Sequence[ArrayLike]
        ) -> tuple[Tensor, Tensor]:
    """`(f(*primals), J·tangents)`: a forward-mode product, by transposing the VJP (no Jacobian)."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    nested = _wants_graph(primals)
    xs = [_as_input(p) for p in primals]
    ts: list[Any] = []
    for i, (x, t) in enumerate(zip(xs, tangents)):
        if isinstance(t, Tensor) and t.requires_grad and MODES.grad_enabled:
            tv: Any = t  # on a tape: the result stays differentiable with respect to it
            nested = True
        else:
            tv = np.asarray(t._data if isinstance(t, Tensor) else t, dtype=x.dtype)
        if tv.shape != x.shape:
            raise ShapeMismatchError(f"jvp: tangent {i} has shape {tv.shape} but primal {i} has "
                                     f"shape {x.shape}")
        ts.append(tv)
    with _tracing():
        out = _as_output(f(*xs), "jvp")
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
