"""Grad mode and anomaly mode: switches that belong to the thread that sets them.

Each thread has its own copy of the switches (as in PyTorch): a `no_grad` block or a
`backward()` in one thread never changes what another thread records.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import os
import sys
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])


class Modes:
    """One thread's switches. A plain object, so a hot path reads `THREAD.modes` once (the one
    per-thread lookup) and then each switch as an ordinary attribute."""

    __slots__ = ("grad_enabled", "anomaly", "transform_depth", "vjp_of", "trace")

    def __init__(self) -> None:  # every new thread's starting values
        self.grad_enabled = True
        self.anomaly = False
        self.transform_depth = 0  # > 0 while a functional transform traces a function
        self.vjp_of: str | None = None  # under anomaly, while recording a VJP: its op's name
        self.trace: Any = None  # while mg.compile traces a step: the trace.Trace recording it


class _PerThread(threading.local):
    def __init__(self) -> None:  # runs in each thread at its first look
        self.modes = Modes()


THREAD = _PerThread()  # THREAD.modes: the calling thread's switches


def is_grad_enabled() -> bool:
    """Whether ops on Tensors that require grad are recorded in this thread."""
    return THREAD.modes.grad_enabled


class _GradMode:
    """A context manager and decorator that sets this thread's grad mode to `_enabled`.
    As a decorator it also covers a generator function's body, each time it resumes."""

    _enabled: bool

    def __enter__(self) -> None:
        self._prev = THREAD.modes.grad_enabled
        THREAD.modes.grad_enabled = self._enabled

    def __exit__(self, *exc: object) -> None:
        THREAD.modes.grad_enabled = self._prev

    def __call__(self, fn: F) -> F:
        enabled = self._enabled
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                return (yield from _in_mode(fn(*args, **kwargs), enabled))
            return generator  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with type(self)():
                return fn(*args, **kwargs)
        return wrapped  # type: ignore[return-value]


def _in_mode(gen: Generator[Any, Any, Any], enabled: bool) -> Generator[Any, Any, Any]:
    """Run gen with grad mode `enabled` while it runs, the caller's mode while it is paused;
    what the caller sends, throws or closes reaches gen under that mode too."""
    resume: Callable[..., Any] = gen.send
    arg: Any = None
    while True:
        prev, THREAD.modes.grad_enabled = THREAD.modes.grad_enabled, enabled
        try:
            item = resume(arg)
        except StopIteration as stop:
            return stop.value
        finally:
            THREAD.modes.grad_enabled = prev
        try:
            arg, resume = (yield item), gen.send
        except GeneratorExit:
            prev, THREAD.modes.grad_enabled = THREAD.modes.grad_enabled, enabled
            try:
                gen.close()
            finally:
                THREAD.modes.grad_enabled = prev
            raise
        except BaseException as e:  # noqa: BLE001  (thrown in by the caller: gen's to handle)
            arg, resume = e, gen.throw


class no_grad(_GradMode):  # noqa: N801  (PyTorch's name)
    """Nothing inside is recorded (in this thread)."""

    _enabled = False


class enable_grad(_GradMode):  # noqa: N801
    """Record even inside `no_grad` (in this thread)."""

    _enabled = True


class detect_anomaly:  # noqa: N801  (PyTorch's name)
    """Inside (in this thread): each op remembers the user-code line that made it, and the first
    op whose forward output or VJP result holds NaN or Inf raises RuntimeError naming the op,
    the shapes and that line. Outside it costs one flag read per op."""

    def __enter__(self) -> detect_anomaly:
        self._prev = THREAD.modes.anomaly
        THREAD.modes.anomaly = True
        return self

    def __exit__(self, *exc: object) -> None:
        THREAD.modes.anomaly = self._prev


# With the separator: a user's folder named like the package (minigrad_examples/) is not it.
_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@functools.cache
def _in_package(filename: str) -> bool:
    """Is this code object's file one of minigrad's? A file's code objects carry its absolute
    path (so the answer may be kept); `<string>`, `<stdin>` and the like are the user's."""
    return not filename.startswith("<") and \
        os.path.abspath(filename).startswith(_PKG_DIR)


def user_site() -> str:
    """File:line and source of the innermost frame outside minigrad itself."""
    frame = sys._getframe(1)
    while frame is not None and _in_package(frame.f_code.co_filename):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "<unknown>"
    src = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{frame.f_code.co_filename}:{frame.f_lineno}: {src}"


def shapes_of(values: Sequence[Any]) -> str:
    """The shapes of an op's input values, as an error message gives them."""
    return ", ".join(str(np.shape(v)) for v in values)


def check_finite(arr: Any, what: str, site: str | Callable[[], str] | None,
                 values: Sequence[Any]) -> None:
    """Under detect_anomaly: raise if arr holds NaN or Inf, naming what made it, the shapes of
    its op's input values and where (`site`, or the function that finds it: only then called)."""
    arr = np.asarray(arr)
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "Inf"
        where = (site() if callable(site) else site) or (
            "a line not recorded (the forward pass ran outside detect_anomaly(); run it inside "
            "the block to see where)")
        raise RuntimeError(f"detect_anomaly: {what} produced {bad} (input shapes "
                           f"{shapes_of(values)}, "
                           f"output shape {arr.shape}); the op was created at {where}")
