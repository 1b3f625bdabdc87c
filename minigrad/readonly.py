"""The in-place guard: what the tape saves can never change under it.

Three calls, used by graph.py only:

- `freeze(ans, values)`: an op's output is read-only from birth, so nobody writes what the tape
  saved as that output.
- `guard(value, lease)`: an input a VJP reads is kept only if nobody can write its memory
  afterwards. A small array is simply copied. A larger one is used as it is when it is
  read-only for good; it is *locked* (made read-only until the graph is done with it) when it
  owns its memory and nothing else holds it but its Tensor, so no view of it can exist;
  anything else (an array the caller also holds, a view, a slice of a parameter buffer) is
  copied.
- `release(lease)`: a graph is done with what it locked (backward() freed it, or it was
  dropped); an array is writeable again once no live graph locks it.

So a write after the forward pass is either refused (a locked array) or harmless (a copy): the
gradient is always the one at the values the forward pass used. The lock table is shared by all
threads and changed under one lock.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

# Holders of a parameter's array while `guard` looks at it: the Tensor's slot, the caller's list
# of values, guard's argument, getrefcount's argument. More means a view or another holder.
_ALONE = 4
# Reference counts tell who else holds an array on CPython before 3.14 (later versions may
# borrow references); elsewhere nothing is locked and everything is copied.
COUNTS_REFS = sys.implementation.name == "cpython" and sys.version_info < (3, 14)

# A small array is copied whatever it is: a copy costs less than taking the table's lock, and
# makes any later write harmless.
_COPY_UP_TO = 4096  # bytes

_table_lock = threading.RLock()  # re-entrant: a Lease may be collected while the lock is held
_locks: dict[int, list[Any]] = {}  # id(array) -> [array, number of live graphs locking it]


def _read_only_owner(a: np.ndarray) -> np.ndarray | None:
    """The array owning a's memory if a and every array it views are read-only, else None."""
    while True:
        if a.flags.writeable:
            return None
        base = a.base
        if not isinstance(base, np.ndarray):
            return a  # owns its memory (or views a bytes-like object, read-only here)
        a = base


def freeze(ans: np.ndarray, values: list[Any]) -> np.ndarray:
    """An op's output, read-only. An output that is one of the op's inputs (a custom forward
    may return its input) is given a view of its own, so the input is left as it was."""
    for v in values:
        if ans is v:
            ans = ans.view()
            break
    ans.setflags(False)  # type: ignore[call-arg]
    return ans


class Lease(list):  # type: ignore[type-arg]
    """The arrays one recorded op locked, released by backward() or when the op's output is
    collected without one."""

    __slots__ = ()

    def __del__(self) -> None:
        if self:
            release(self)


def guard(value: Any, lease: list[np.ndarray]) -> Any:
    """value as the tape may keep it: itself if it cannot change while the graph lives (its
    memory read-only for good, or locked: the owner is added to lease), else a private copy."""
    if not isinstance(value, np.ndarray):
        return value  # scalars are immutable
    if value.nbytes <= _COPY_UP_TO:
        return value.copy()
    with _table_lock:
        owner = _read_only_owner(value)
        if owner is not None:
            entry = _locks.get(id(owner))
            if entry is not None:  # locked by a live graph: no writeable view of it exists
                entry[1] += 1
                lease.append(owner)
            return value.view()
        if COUNTS_REFS and value.base is None:
            # Lock first, then count holders: a view made after the lock is read-only, one
            # made before holds a reference and is counted.
            # (setflags positionally, where NumPy's stubs want keywords: keyword parsing is slow)
            value.setflags(False)  # type: ignore[call-arg]
            if sys.getrefcount(value) <= _ALONE:
                _locks[id(value)] = [value, 1]
                lease.append(value)
                return value.view()  # its own view: .shape = … on the caller's never reaches it
            value.setflags(True)  # type: ignore[call-arg]
    return value.copy()


def release(lease: Lease) -> None:
    with _table_lock:
        for arr in lease:
            entry = _locks[id(arr)]
            entry[1] -= 1
            if entry[1] == 0:
                arr.setflags(True)  # type: ignore[call-arg]
                del _locks[id(arr)]
        lease.clear()


def locked_by_a_graph(arr: np.ndarray) -> bool:
    """Is arr read-only because a live graph saved it (rather than for good)?"""
    return id(arr) in _locks
