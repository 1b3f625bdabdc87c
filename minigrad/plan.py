"""The memory plan of a compiled step: where each large intermediate lives.

A straight-line program knows, for every array, the line that makes it and the last line that
reads it. Two rules follow, applied to the lines that are one ufunc of their operands (`out=`
is then the same computation written into a given array; NumPy makes an overlapping `out=` come
out right, so only speed, never a value, depends on the choice):

- **In place.** When an operand dies at a line (nothing reads it, or a view of it, later), is
  the program's own (made by one of its lines: not an input, not a constant, not returned) and
  has the result's shape and dtype, the line writes into it: `np.multiply(v4, v6, out=v4)`.
- **Buffers.** A result that is not returned (and shares no memory with anything returned) is
  written into a buffer kept from call to call (`out=bufs[0]`); two such results whose lives do
  not overlap share one buffer. Each call takes a set of buffers of its own (see program.py),
  so two threads, or a forward whose backward has not run yet, never share one.

What a function returns (outputs, gradients, the values its backward reads) is made afresh at
each call, so nothing handed out is overwritten by a later call. Arrays under `MIN_BYTES` are
left to NumPy's allocator, whose cache of small blocks is faster than passing a buffer in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigrad.trace import Line

MIN_BYTES = 8192

# Ops whose result is (or may be) a view of their first operand: its memory is that operand's.
VIEWS = {"transpose", "reshape", "broadcast_to", "getitem", "swapaxes", "squeeze",
         "expand_dims"}
# Rows whose forward always returns an array of its own.
FRESH = {"softmax", "log_softmax", "logsumexp", "sum", "mean", "amax", "amin", "sigmoid",
         "where", "clip", "pad", "concatenate", "stack", "linear", "astype", "scatter_add",
         "matmul"}


class _Block:
    """One block of memory: the line that made it, the variables on it, when it is last read."""

    __slots__ = ("root", "owned", "writers", "dies")

    def __init__(self, root: int, owned: bool) -> None:
        self.root = root
        self.owned = owned  # made by this function and writeable: may be written again
        self.writers: set[str] = set()  # members that are the block itself, not views of it
        self.dies = -1  # the last line reading a member; `_RETURNED` if one is returned


_RETURNED = 1 << 60


class Planner:
    """Runs the two rules over one function's lines (see the module's docstring)."""

    def __init__(self, lines: list[Line], returned: set[str]) -> None:
        self.lines = lines
        self.exprs = [ln.expr for ln in lines]
        self.block: dict[str, _Block] = {}
        self.value = {ln.target: ln.value for ln in lines}
        self.last: dict[str, int] = {}
        for i, ln in enumerate(lines):
            for u in ln.uses:
                self.last[u] = i
        for name in returned:
            self.last[name] = _RETURNED

    def run(self) -> tuple[list[str], list[tuple[Any, Any]]]:
        """The rewritten expressions, and the buffers they use (shape, dtype) as `bufs`."""
        for i, ln in enumerate(self.lines):
            self._place(i, ln)
        specs: list[tuple[Any, Any]] = []
        busy_until: list[int] = []  # per buffer, the last line its current block is read
        blocks = {id(b): b for b in self.block.values()}.values()
        for b in sorted(blocks, key=lambda b: b.root):
            ln = self.lines[b.root]
            if (b.dies >= _RETURNED or not b.owned or not _plannable(ln)
                    or "out=" in self.exprs[b.root]):
                continue
            key = (ln.value.shape, ln.value.dtype)
            k = next((k for k, s in enumerate(specs) if s == key and busy_until[k] < b.root),
                     len(specs))
            if k == len(specs):
                specs.append(key)
                busy_until.append(b.dies)
            busy_until[k] = b.dies
            self.exprs[b.root] = _with_out(ln, f"bufs[{k}]")
        return self.exprs, specs

    def _place(self, i: int, ln: Line) -> None:
        """Give line i's result its memory: an operand's (as a view, or in place) or new."""
        first = ln.operands[0] if ln.operands else None
        if ln.op in VIEWS:
            b = self.block.get(first) if first is not None else None
            b = b or _Block(i, owned=False)  # a view of an input or a constant
        elif ln.op in FRESH or ln.ufunc is not None:
            b = self._in_place(i, ln) or _Block(i, owned=True)
            b.writers.add(ln.target)
        else:
            # An op of unknown kind may return a view of any operand: their memory lives as long
            # as its result, and nobody writes into that result.
            b = _Block(i, owned=False)
            for u in ln.uses:
                if u in self.block:
                    other = self.block[u]
                    other.dies = max(other.dies, self.last.get(ln.target, -1))
        self.block[ln.target] = b
        b.dies = max(b.dies, self.last.get(ln.target, -1))

    def _in_place(self, i: int, ln: Line) -> _Block | None:
        """The block of an operand that line i may overwrite, the line rewritten to do so."""
        if not _plannable(ln) or ln.ufunc is np.matmul:
            return None
        for o in ln.operands:
            b = self.block.get(o)
            if b is None or not b.owned or b.dies > i or o not in b.writers:
                continue
            v = self.value.get(o)
            if isinstance(v, np.ndarray) and v.shape == ln.value.shape \
                    and v.dtype == ln.value.dtype:
                self.exprs[i] = _with_out(ln, o)
                return b
        return None


def _plannable(ln: Line) -> bool:
    v = ln.value
    return (ln.ufunc is not None and ln.ufunc.nout == 1 and isinstance(v, np.ndarray)
            and v.nbytes >= MIN_BYTES)


def _with_out(ln: Line, out: str) -> str:
    assert ln.ufunc is not None
    return f"np.{ln.ufunc.__name__}({', '.join(ln.operands)}, out={out})"
