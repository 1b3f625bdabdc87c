"""`python -m benchmarks.scaling [--quick]`: the gradient of indexing, and how it scales.

- **embedding**: forward and backward of `W[idx]` with (50,000) indices into a (1000, 64) table,
  float32 and float64, the upstream given. The floor is hand-written NumPy: the gather, then a
  sort-based scatter-add of the upstream, written two ways: argsort the indices, sum each run
  of equal indices with `np.add.reduceat` and add the sums into their rows; or number the
  distinct indices with `np.unique` and sum into them with `np.bincount` (the engine's way).
  The faster of the two is the floor; `np.add.at` is shown for reference. Target: minigrad
  within 1.5× of the floor.
- **slicing**: the backward of a loop that slices one Tensor once per time step (`x[:, t]`),
  800 steps against eight loops of 100 steps (the same total work). Two loops: an RNN cell per
  step (`tanh(x W_ihᵀ[:, t] + h W_hhᵀ)`, B=4, H=128, 45 inputs) and the slices alone
  (stacked, B=4, H=64). Target: 800 steps within 2× of eight times 100.

Times are CPU time of this process (`time.process_time`: a shared machine's other load does
not count), the median of the repeats, the implementations interleaved; one thread (the
variables are set in benchmarks/__init__.py).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import minigrad as mg

EMBEDDING_TARGET = 1.5
SLICING_TARGET = 2.0


def median_seconds(ways: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Each way's median CPU time, the ways taking turns: A, B, C, A, B, C, …"""
    for fn in ways.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, fn in ways.items():
            t0 = time.process_time()
            fn()
            times[name].append(time.process_time() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


# ---------------------------------------------------------------------------------------------
# embedding
# ---------------------------------------------------------------------------------------------
def scatter_down_rows(idx: np.ndarray, g: np.ndarray, rows: int) -> np.ndarray:
    """The sort-based scatter-add as usually written: the runs summed down the sorted rows."""
    out = np.zeros((rows, g.shape[1]), dtype=g.dtype)
    order = np.argsort(idx)
    s = idx[order]
    first = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    out[s[first]] += np.add.reduceat(g[order], first, axis=0)
    return out


def scatter_bincount(idx: np.ndarray, g: np.ndarray, rows: int) -> np.ndarray:
    """The same sums: the distinct indices numbered (a sort), then summed by np.bincount."""
    out = np.zeros((rows, g.shape[1]), dtype=g.dtype)
    picked, number = np.unique(idx, return_inverse=True)
    width = g.shape[1]
    slots = (number[:, None] * width + np.arange(width)).ravel()
    sums = np.bincount(slots, weights=g.ravel(), minlength=picked.size * width)
    out[picked] += sums.reshape(picked.size, width).astype(g.dtype)
    return out


def scatter_add_at(idx: np.ndarray, g: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows, g.shape[1]), dtype=g.dtype)
    np.add.at(out, idx, g)
    return out


def embedding(n: int, rows: int, dim: int, dtype: Any, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(rows, dim)).astype(dtype)
    idx = rng.integers(0, rows, size=n)
    up = rng.normal(size=(n, dim)).astype(dtype)
    w = mg.tensor(table, requires_grad=True)

    def engine() -> Any:
        w.grad = None
        w[idx].backward(up)
        return w.grad

    def by_hand(scatter: Callable[..., np.ndarray]) -> Callable[[], Any]:
        def step() -> Any:
            out = table[idx]  # the forward's gather; its output lives through the backward
            return out, scatter(idx, up, rows)
        return step

    ref = scatter_add_at(idx, up, rows)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for got in (engine(), scatter_down_rows(idx, up, rows), scatter_bincount(idx, up, rows)):
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    ways = {"minigrad": engine, "numpy, argsort + np.add.reduceat": by_hand(scatter_down_rows),
            "numpy, np.unique + np.bincount": by_hand(scatter_bincount),
            "numpy, np.add.at": by_hand(scatter_add_at)}
    times = median_seconds(ways, repeats)
    floor = min(times["numpy, argsort + np.add.reduceat"], times["numpy, np.unique + np.bincount"])
    return {"dtype": np.dtype(dtype).name, "times": times, "ratio": times["minigrad"] / floor}


# ---------------------------------------------------------------------------------------------
# slicing once per time step
# ---------------------------------------------------------------------------------------------
def rnn_graph(steps: int) -> mg.Tensor:
    rng = np.random.default_rng(0)
    b, h_size, v = 4, 128, 45
    w_ih = mg.tensor(rng.normal(size=(h_size, v)) * 0.1, requires_grad=True)
    w_hh = mg.tensor(rng.normal(size=(h_size, h_size)) * 0.05, requires_grad=True)
    xw = mg.linear(rng.normal(size=(b, steps, v)), w_ih)
    h: Any = np.zeros((b, h_size))
    hs = []
    for t in range(steps):
        h = (xw[:, t] + mg.linear(h, w_hh)).tanh()
        hs.append(h)
    return mg.stack(hs, axis=1).sum()


def slices_graph(steps: int) -> mg.Tensor:
    x = mg.tensor(np.ones((4, steps, 64)), requires_grad=True)
    h = x * 1.0
    return (mg.stack([h[:, t] for t in range(steps)]) * 2.0).sum()


def backward_seconds(build: Callable[[int], mg.Tensor], steps: int, loops: int,
                     repeats: int) -> float:
    """Median over repeats of the backward CPU time of `loops` graphs of `steps` steps each."""
    times = []
    for _ in range(repeats):
        total = 0.0
        for _ in range(loops):
            out = build(steps)
            t0 = time.process_time()
            out.backward()
            total += time.process_time() - t0
        times.append(total)
    return statistics.median(times)


def slicing(name: str, build: Callable[[int], mg.Tensor], long: int, repeats: int
            ) -> dict[str, Any]:
    short = long // 8
    one = backward_seconds(build, long, 1, repeats)
    eight = backward_seconds(build, short, 8, repeats)
    return {"loop": name, "long": long, "short": short, "long_s": one, "eight_short_s": eight,
            "ratio": one / eight}


def verdict(ratio: float, target: float, quick: bool) -> str:
    if quick:
        return "not judged at --quick sizes"
    return "met" if ratio <= target else "MISSED"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes, 3 repeats: a smoke run, the targets not judged")
    args = p.parse_args(argv)
    repeats = 3 if args.quick else 15
    n, rows, steps = (5_000, 100, 80) if args.quick else (50_000, 1000, 800)
    print(f"embedding backward: ({n:,}) indices into a ({rows}, 64) table, median of {repeats}")
    for dtype in (np.float32, np.float64):
        r = embedding(n, rows, 64, dtype, repeats)
        for way, s in r["times"].items():
            print(f"  {r['dtype']:8s} {way:34s} {s * 1e3:8.2f} ms")
        print(f"  {r['dtype']:8s} minigrad / sort-based floor: {r['ratio']:.2f}x "
              f"(target {EMBEDDING_TARGET}x: {verdict(r['ratio'], EMBEDDING_TARGET, args.quick)})")
    print(f"slicing once per step, backward only, median of {repeats}")
    for name, build in (("RNN cell per step", rnn_graph), ("slices alone", slices_graph)):
        r = slicing(name, build, steps, repeats)
        print(f"  {name:18s} {r['long']} steps {r['long_s'] * 1e3:8.2f} ms, 8 x {r['short']} "
              f"steps {r['eight_short_s'] * 1e3:8.2f} ms: {r['ratio']:.2f}x "
              f"(target {SLICING_TARGET}x: {verdict(r['ratio'], SLICING_TARGET, args.quick)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
