"""Peak memory of one step, above what was live before it (W4).

NumPy's allocations are traced by `tracemalloc`, so the NumPy floor, minigrad and HIPS autograd
are measured the same way: the inputs x and g exist before tracing starts, the previous step's
gradient is dropped, and the peak of traced memory during one step (its result included) is
reported. PyTorch allocates outside Python's allocator, so for it the peak is the running sum
of the per-op memory its own profiler records (`torch.profiler`, `profile_memory=True`): net
bytes per op in the order the ops ran, so a temporary allocated and freed inside one fused
kernel is not seen. Both are reported in bytes and as multiples of one activation.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import tracemalloc
from collections.abc import Callable
from typing import Any

TRACEMALLOC = "tracemalloc"
TORCH_PROFILER = "torch.profiler (net per op)"


def tracemalloc_peak(step: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = step()
        peak = tracemalloc.get_traced_memory()[1] - base
        del result
    finally:
        tracemalloc.stop()
    return peak


@contextlib.contextmanager
def _quiet_fd2() -> Any:
    """The profiler's C++ side prints start/stop lines on file descriptor 2: silence them."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            with contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def torch_profiler_peak(step: Callable[[], Any]) -> int | None:
    try:
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    gc.collect()
    with _quiet_fd2():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = step()
            del result
    running = peak = 0
    for ev in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += ev.self_cpu_memory_usage
        peak = max(peak, running)
    return peak
