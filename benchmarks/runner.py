"""Where an implementation runs: in this process, or alone in a worker process (the default).

Why workers: glibc's allocator adapts to what a process has freed before (its mmap and trim
thresholds grow after a large block is freed), and that decides whether a step's
half-megabyte arrays come from a warm heap or from fresh, page-faulting memory. Measured here,
minigrad's W2 step took 2.0 ms in a fresh process and 0.7 ms after another workload (or
PyTorch) had raised the thresholds. So each (workload, implementation) gets its own fresh
process: what ran before, and whether torch is imported alongside, cannot change its time, and
every implementation sees the allocator a user's program would. The parent still interleaves
the repeats (worker A, B, C, A, B, C, …), so load from other processes hits all alike.
`--malloc warm` fixes glibc's thresholds in every worker instead (see harness.set_malloc): the
engine's own cost without the page faults, which fresh processes pay too.
`--quick` reuses one worker per implementation for all workloads (`--isolation shared`): it
only checks that everything runs, and starting PyTorch once per workload would dominate it.

`--against REV` (benchmarks/against.py) passes an engine directory: the worker then runs there
with that directory first on its path, so `import minigrad` finds that copy of the engine, and it
refuses to time anything if minigrad came from anywhere else (EngineMismatchError).

Protocol: one JSON object per line on the worker's stdin, one reply per line on its stdout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import harness, memory


def find_variant(name: str, quick: bool) -> Any:
    from benchmarks.workloads import WORKLOADS

    for v in WORKLOADS[name.split("-")[0]](quick):
        if v.name == name:
            return v
    raise KeyError(f"no workload variant {name!r}")


class InProcess:
    """One implementation of one variant, built and timed in this process."""

    def __init__(self, variant: Any, impl: str) -> None:
        self.variant = variant
        self.impl_name = impl
        self.impl = variant.factories[impl]()
        self.impl.step()  # warm-up; raises here if the implementation cannot run

    def calibrate(self, min_time: float) -> int:
        return harness.calibrate(self.impl.step, min_time, warm=True)

    def run(self, inner: int) -> float:
        return harness.run(self.impl.step, inner) / inner

    def peak(self) -> tuple[int | None, str]:
        if self.impl_name == "torch":
            return memory.torch_profiler_peak(self.impl.step), memory.TORCH_PROFILER
        return memory.tracemalloc_peak(self.impl.step), memory.TRACEMALLOC

    def close(self) -> None:
        self.impl = None


class WorkerError(RuntimeError):
    pass


class EngineMismatchError(RuntimeError):
    """The worker imported minigrad from somewhere else than the engine directory it was given."""


def engine_mismatch(engine: str) -> str | None:
    """None when `import minigrad` finds the copy in `engine`, else what it finds instead.

    Looks without importing it, so a copy that fails to import still counts as found.
    """
    spec = importlib.util.find_spec("minigrad")
    origin = spec.origin if spec is not None else None
    if origin is not None and Path(origin).resolve().parent.parent == Path(engine).resolve():
        return None
    return f"minigrad comes from {origin}, not from {engine}"


class Subprocess:
    """The same interface, served by a fresh `python -m benchmarks.runner` process.

    `engine`: a directory holding a `minigrad/` package to time instead of this checkout's;
    the benchmark code itself always comes from this checkout.
    """

    def __init__(self, variant: Any, impl: str, quick: bool, malloc: str = "default",
                 engine: str | None = None) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        path = ([engine] if engine else []) + [root, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(path)  # without engine: as before, to the byte
        cmd = [sys.executable, "-m", "benchmarks.runner", malloc] + ([engine] if engine else [])
        # cwd: `-m` puts it first on the worker's path, ahead of PYTHONPATH
        self.proc = subprocess.Popen(cmd, cwd=engine or root, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        try:
            self.setup(variant, impl, quick)
        except BaseException:  # nobody else can reach this worker to stop it
            self.close()
            raise

    def setup(self, variant: Any, impl: str, quick: bool) -> None:
        """Build (another) implementation in this worker and run its warm-up step."""
        try:
            self._ask(cmd="setup", variant=variant.name, impl=impl, quick=quick)
        except WorkerError:
            if self.proc.poll() is not None:
                self.close()
            raise

    def _ask(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError) as e:
            raise WorkerError(f"worker died ({e})") from None
        if not line:
            raise WorkerError(f"worker died (exit code {self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        if reply.get("fatal"):
            raise EngineMismatchError(reply["error"])
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply

    def calibrate(self, min_time: float) -> int:
        return int(self._ask(cmd="calibrate", min_time=min_time)["inner"])

    def run(self, inner: int) -> float:
        return float(self._ask(cmd="run", inner=inner)["seconds"])

    def peak(self) -> tuple[int | None, str]:
        r = self._ask(cmd="peak")
        return r["peak_bytes"], r["method"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def worker_main() -> None:
    """Serve one implementation: setup, then calibrate / run / peak until quit."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the workload prints must not break the protocol
    harness.set_malloc(sys.argv[1] if len(sys.argv) > 1 else "default")
    harness.pin_threads()
    mismatch = engine_mismatch(sys.argv[2]) if len(sys.argv) > 2 else None
    here: InProcess | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.get("cmd")
        try:
            if cmd == "quit":
                break
            if mismatch is not None:
                out.write(json.dumps({"error": mismatch, "fatal": True}) + "\n")
                out.flush()
                continue
            if cmd == "setup":
                if msg["impl"] == "torch" and harness.torch_module() is None:
                    raise RuntimeError(f"PyTorch not importable "
                                       f"({harness.torch_missing_reason()})")
                if here is not None:
                    here.close()
                here = None
                here = InProcess(find_variant(msg["variant"], msg["quick"]), msg["impl"])
                reply: dict[str, Any] = {"ok": True}
            elif here is None:
                raise RuntimeError("setup first")
            elif cmd == "calibrate":
                reply = {"inner": here.calibrate(msg["min_time"])}
            elif cmd == "run":
                reply = {"seconds": here.run(msg["inner"])}
            elif cmd == "peak":
                peak, method = here.peak()
                reply = {"peak_bytes": peak, "method": method}
            else:
                raise RuntimeError(f"unknown command {cmd!r}")
        except Exception as e:  # reported in the row; e.g. RecursionError deep in a chain
            reply = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    worker_main()
