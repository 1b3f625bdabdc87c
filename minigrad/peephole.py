"""Two rewrites of a traced function's lines that leave fewer views and temporaries behind.

The reverse sweep is written one VJP at a time, so it transposes products and reshapes sums
that a person would have written directly:

- `m = a @ b; t = m.T` becomes `t = b.T @ a.T` (`(ab)ᵀ = bᵀaᵀ`), a transposed operand's `.T`
  cancelling: the gradient of `x @ W.T` comes out as `g.T @ x`, a fresh array, not a view.
- `s = np.add.reduce(x, axis=A, keepdims=True); r = s.reshape(shape)`, where the reshape only
  drops the kept axes, becomes `r = np.add.reduce(x, axis=A, keepdims=False)`.

Each applies only when nothing else reads the intermediate. The second gives the same numbers;
the first lets BLAS multiply in another order, which may change the last bits of a sum.
"""

from __future__ import annotations

from typing import Any

from minigrad.trace import Line


def simplify(lines: list[Line], returned: set[str]) -> list[Line]:
    """lines with the two rewrites applied where they hold."""
    readers: dict[str, int] = {}
    for ln in lines:
        for u in set(ln.uses):
            readers[u] = readers.get(u, 0) + 1
    made = {ln.target: ln for ln in lines}
    dropped: set[int] = set()  # the lines folded into the one before them, by identity
    for ln in lines:
        src = made.get(ln.operands[0]) if ln.operands else None
        if src is None or readers.get(src.target) != 1 or src.target in returned:
            continue
        if _transposes(ln) and src.op == "matmul" and _two_d(src):
            a, b = src.operands
            bt, at = _t(b, made), _t(a, made)
            _replace(src, ln, f"{bt} @ {at}", [n.removesuffix(".T") for n in (bt, at)])
        elif ln.op == "reshape" and src.op == "sum" and _drops_kept_axes(src, ln):
            _replace(src, ln, src.expr.replace("keepdims=True", "keepdims=False"), src.uses)
        else:
            continue
        dropped.add(id(ln))
    kept = [ln for ln in lines if id(ln) not in dropped]
    need = set(returned)  # a cancelled `.T` may have lost its last reader
    alive = []
    for ln in reversed(kept):
        if ln.target in need:
            alive.append(ln)
            need.update(ln.uses)
    return alive[::-1]


def _replace(src: Line, ln: Line, expr: str, uses: list[str]) -> None:
    """src now computes ln's result under ln's name; ln is dropped. It stays an op of src's
    kind (a product, a sum: a new array, see plan.FRESH), no longer one ufunc of names."""
    src.target, src.expr, src.uses, src.value = ln.target, expr, list(uses), ln.value
    src.ufunc, src.operands = None, []


def _transposes(ln: Line) -> bool:
    return ln.op == "transpose" and ln.expr.endswith(".T") and getattr(ln.value, "ndim", 0) == 2


def _two_d(ln: Line) -> bool:
    """A product of two matrices: (ab)ᵀ = bᵀaᵀ holds for those, not for a stack of them."""
    return getattr(ln.value, "ndim", 0) == 2 and len(ln.operands) == 2 and ln.ndims == (2, 2)


def _t(name: str, made: dict[str, Line]) -> str:
    """name transposed, as source: a `.T` of a `.T` cancels."""
    ln = made.get(name)
    if ln is not None and _transposes(ln) and ln.operands:
        return ln.operands[0]
    return f"{name}.T"


def _drops_kept_axes(src: Line, ln: Line) -> bool:
    """The reshape only removes the axes the sum kept (as size 1)."""
    value: Any = src.value
    axes, keepdims = src.params.get("axis"), src.params.get("keepdims")
    if not (keepdims is True and isinstance(axes, tuple) and hasattr(value, "shape")):
        return False
    left = tuple(n for i, n in enumerate(value.shape) if i not in axes)
    return getattr(ln.value, "shape", None) == left
