"""How a compiled step writes each primitive: the row's forward as a line of NumPy source.

A row without an entry here is written as a call of its forward function by name
(`log_softmax(v7, axis=(1,))`). An entry writes what that forward computes as plain source
instead, `np.maximum(v3, 0)` for relu, so the program reads like the hand-written NumPy it
replaces and skips a Python call per op. Each entry states the same NumPy calls as the row's
forward in `rules.py`; tests/test_compile.py checks every row compiled against eager.

Two kernels (they exist only for speed and plain mode turns them off): a scatter whose index
arrays provably pick no element twice is an assignment, not a sum (`scatter_unique`; for a
basic index, which never picks twice, it is the rule as it stands); and a small product of
matrices or vectors is written `a.dot(b)`, not `a @ b` (`small_products`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from minigrad import kernels

Refs = list[str]  # the operands as source
Params = dict[str, str]  # the parameters as source
Raw = dict[str, Any]  # the parameters' values at trace time, and "dynamic": the names of the
# variables that change between calls (anything else is a constant of the program)
Writer = Callable[[Refs, Params, Raw], "str | None"]


def _index(index: Any, source: str) -> str:
    """An index as it is written between brackets: slices as a:b:c, a tuple without parens."""
    if isinstance(index, tuple) and source.startswith("(") and source.endswith(")"):
        parts = _split_top(source[1:-1])
        return ", ".join(_slice(v, p) for v, p in zip(index, parts) if p) or "()"
    return _slice(index, source)


def _slice(v: Any, source: str) -> str:
    if isinstance(v, slice) and all(p is None or type(p) is int for p in (v.start, v.stop, v.step)):
        text = f"{'' if v.start is None else v.start}:{'' if v.stop is None else v.stop}"
        return text + ("" if v.step is None else f":{v.step}")
    return source


def _split_top(text: str) -> list[str]:
    """text split at the commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += c in "([{"
        depth -= c in ")]}"
        if c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _transpose(r: Refs, p: Params, raw: Raw) -> str:
    axes = raw["axes"]
    if axes is None or tuple(axes) == tuple(range(len(axes)))[::-1]:
        return f"{r[0]}.T"
    return f"{r[0]}.transpose({p['axes']})"


def _getitem(r: Refs, p: Params, raw: Raw) -> str:
    return f"{r[0]}[{_index(raw['index'], p['index'])}]"


def _scatter_add(r: Refs, p: Params, raw: Raw) -> str | None:
    index, source = raw["index"], p["index"]
    parts = _split_top(source[1:-1]) if isinstance(index, tuple) else [source]
    constant = [q not in raw["dynamic"] for q in parts]
    # A basic index picks each element once by construction: there writing is the rule's own
    # `out[index] += src` on zeros. Proving it for arrays of indices is the kernel.
    if raw["basic"] or kernels.ENABLED and picks_each_once(index, False, constant):
        return f"scatter_unique({r[0]}, {p['index']}, {p['shape']})"
    return None


def _linear(r: Refs, p: Params, raw: Raw) -> str:
    product = f"{r[0]} @ {r[1]}.mT"
    return product if len(r) < 3 or r[2] == "None" else f"{product} + {r[2]}"


WRITERS: dict[str, Writer] = {
    "relu": lambda r, p, raw: f"np.maximum({r[0]}, 0)",
    "linear": _linear,
    "mean": lambda r, p, raw: f"np.add.reduce({r[0]}, axis={p['axis']}, "
                              f"keepdims={p['keepdims']}) / {p['count']}",
    "transpose": _transpose,
    "reshape": lambda r, p, raw: f"{r[0]}.reshape({p['shape']})",
    "astype": lambda r, p, raw: f"{r[0]}.astype({p['dtype']})",
    "where": lambda r, p, raw: f"np.where({p['cond']}, {r[0]}, {r[1]})",
    "getitem": _getitem,
    "scatter_add": _scatter_add,
}


def write(name: str, refs: Refs, params: Params, raw: Raw, dynamic: set[str]) -> str | None:
    """The source of one primitive, or None to call its forward by name."""
    writer = WRITERS.get(name)
    return writer(refs, params, {**raw, "dynamic": dynamic}) if writer is not None else None


# --- the kernel ---------------------------------------------------------------------------------
def picks_each_once(index: Any, basic: bool, constant: list[bool]) -> bool:
    """Does `x[index]` pick every element at most once, whatever the inputs among the index
    arrays hold at later calls? True for a basic index, and for a tuple of 1-D integer arrays of
    one length where one that is a constant of the program (`constant[i]`) holds distinct
    values (`logp[np.arange(n), actions]`): its pairs are then distinct."""
    if basic:
        return True
    if not (isinstance(index, tuple) and len(index) > 1 and len(constant) == len(index)):
        return False
    arrays = [i for i in index if isinstance(i, np.ndarray)]
    if len(arrays) != len(index) or any(a.ndim != 1 or a.dtype.kind not in "iu" or
                                        len(a) != len(arrays[0]) for a in arrays):
        return False
    return any(c and len(np.unique(a)) == len(a) for a, c in zip(arrays, constant))


def scatter_unique(src: np.ndarray, index: Any, shape: tuple[int, ...]) -> np.ndarray:
    """= rules.scatter_add's forward when index picks no element twice (`picks_each_once`):
    zeros with src written at index; adding to a zero and writing are the same number."""
    out = np.zeros(shape, dtype=np.result_type(src))
    out[index] = src
    return out


# ndarray.dot skips matmul's gufunc set-up, which dominates a policy's tiny products; it zeroes
# its output before BLAS writes it, a pass that shows on activation-sized results: products up
# to this many elements only.
SMALL_PRODUCT = 4096
# Rows whose eager forward kernel (kernels.matmul, kernels.linear: a small product through
# ndarray.dot) generated code does in its own form: they are written as their rules, then here.
OWN_FORMS = frozenset({"matmul", "linear"})
_NAME = r"[A-Za-z_]\w*(?:\.m?T)?"
_PRODUCT = re.compile(rf"({_NAME}) @ ({_NAME})((?: \+ {_NAME})?)")


def small_products(ops: list[str], values: list[Any], exprs: list[str]) -> list[str]:
    """= `a @ b` for matrices and vectors (at most 2-D, as a result of at most 2 axes implies),
    written `a.dot(b)` where the result is a float array of at most SMALL_PRODUCT elements:
    the same product through BLAS, summed in its own order. `ops` and `values` are the lines'
    rows and traced results; a line the memory plan rewrote (`out=`) is left as it is."""
    if not kernels.ENABLED:
        return exprs
    out = []
    for op, value, expr in zip(ops, values, exprs):
        m = _PRODUCT.fullmatch(expr) if op in ("matmul", "linear") else None
        if m is not None and isinstance(value, np.ndarray) and 1 <= value.ndim <= 2 \
                and value.size <= SMALL_PRODUCT and value.dtype.char in "fd":
            b = m.group(2).removesuffix(".mT") + ".T" if m.group(2).endswith(".mT") \
                else m.group(2)
            expr = f"{m.group(1)}.dot({b}){m.group(3)}"
        out.append(expr)
    return out
