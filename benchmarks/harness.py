"""Timing, thread pinning and the record of what ran where.

Timing: each implementation's `step()` (one forward + backward) is warmed up, then the number
of inner iterations is calibrated so that one repeat takes at least `min_time` seconds; the
repeats of all implementations of a workload are interleaved (impl A, B, C, A, B, C, …: see
cli.py and runner.py) so that load from other processes on a shared machine hits them alike,
and the median over repeats is reported per step. The garbage collector stays on: it is part
of what a user pays.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

_torch: Any = None
_torch_error: str | None = None


def torch_module() -> Any:
    """`torch` pinned to one thread, or None when it does not import (the reason is kept)."""
    global _torch, _torch_error
    if _torch is None and _torch_error is None:
        try:
            import torch
        except Exception as e:  # ImportError, or a broken install
            _torch_error = f"{type(e).__name__}: {e}"
        else:
            torch.set_num_threads(1)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # already set, or work already started
                pass
            _torch = torch
    return _torch


def torch_missing_reason() -> str | None:
    torch_module()
    return _torch_error


_autograd: Any = None
_autograd_error: str | None = None


def autograd_module() -> Any:
    """HIPS autograd (`autograd`, `autograd.numpy`), or None when it does not import."""
    global _autograd, _autograd_error
    if _autograd is None and _autograd_error is None:
        try:
            import autograd
            import autograd.numpy  # noqa: F401
        except Exception as e:
            _autograd_error = f"{type(e).__name__}: {e}"
        else:
            _autograd = autograd
    return _autograd


def pin_threads() -> list[dict[str, Any]]:
    """Limit every BLAS/OpenMP pool threadpoolctl can see to one thread; return what it saw."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    threadpoolctl.threadpool_limits(1)
    keep = ("user_api", "internal_api", "num_threads", "version", "architecture",
            "threading_layer", "filepath")
    return [{k: info.get(k) for k in keep} for info in threadpoolctl.threadpool_info()]


def set_malloc(mode: str) -> str:
    """`default`: glibc's own adaptive thresholds. `warm`: freed memory stays in the heap.

    glibc returns freed memory to the OS (and maps big blocks fresh) according to thresholds
    that grow with what the process has freed so far; a step whose arrays come back from the
    OS pays a page fault per 4 KiB. `warm` fixes the thresholds at their maximum (mmap above
    32 MiB, trim above 256 MiB) so every implementation reuses a warm heap, whatever ran
    before. Returns what was done, for the record.
    """
    if mode != "warm":
        return "glibc defaults (adaptive mmap/trim thresholds)"
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = (libc.mallopt(m_mmap_threshold, 32 << 20) == 1
              and libc.mallopt(m_trim_threshold, 256 << 20) == 1)
    except (OSError, AttributeError, TypeError):
        ok = False
    if not ok:
        return "warm requested, but mallopt is not available here: allocator defaults"
    return "warm: mallopt(M_MMAP_THRESHOLD=32 MiB, M_TRIM_THRESHOLD=256 MiB)"


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def run(step: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - t0


def calibrate(step: Callable[[], Any], min_time: float, warm: bool = False) -> int:
    """Inner iterations so that one repeat of `step` takes at least `min_time` seconds."""
    if not warm:
        step()  # warm-up: first-call caches, allocator
    n = 1
    while True:
        dt = run(step, n)
        if dt >= min_time:
            return n
        # aim 20 % above the target, at most 10x more per round
        n = max(n + 1, min(n * 10, int(n * min_time * 1.2 / max(dt, 1e-9)) + 1))


# ---------------------------------------------------------------------------------------------
# What ran where
# ---------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(repo: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", repo, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _numpy_blas() -> str:
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]  # type: ignore[index]
        b = deps["blas"]
        return (f"{b.get('name')} {b.get('version')} (install threadpoolctl to see which "
                f"kernel runs)")
    except Exception:
        return "unknown (install threadpoolctl)"


def versions(blas: list[dict[str, Any]]) -> dict[str, Any]:
    import minigrad

    torch = torch_module()
    ag = autograd_module()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(minigrad.__file__)))
    try:
        from importlib.metadata import version
        ag_version = version("autograd") if ag is not None else None
    except Exception:
        ag_version = None
    env_keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "autograd": ag_version,
        "minigrad": f"{minigrad.__version__} ({_git_commit(repo) or 'no git'})",
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "blas": blas or _numpy_blas(),
        "env": {k: os.environ.get(k) for k in env_keys},
    }
