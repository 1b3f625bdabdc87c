"""`python -m benchmarks`: run the workloads, print a markdown table, optionally write JSON.

    python -m benchmarks                  W0–W5, W7, W8: median of 7 repeats of ≥ 0.2 s
    python -m benchmarks --full           W0–W8 (W6 trains CartPole: minutes)
    python -m benchmarks --only W1,W4     a subset (W6 only when named here or with --full)
    python -m benchmarks --quick          smoke run: 3 tiny repeats, short W5 chains, no W6
    python -m benchmarks --check          first assert every implementation's gradients agree
    python -m benchmarks --json out.json --markdown out.md
    python -m benchmarks --against HEAD   minigrad at a git revision against the working tree:
                                          see benchmarks/against.py (--against HEAD --help)
    python -m benchmarks.scaling          the embedding backward against a sort-based scatter,
                                          and per-step slicing: see benchmarks/scaling.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np

from benchmarks import harness, report, runner
from benchmarks.workloads import IMPLS, WORKLOADS, Impl, Variant

ALL = ("W0", "W1", "W2", "W3", "W4", "W5", "W7", "W8", "W6")  # W6 last: it trains


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 3 repeats of ~5 ms, W5 at 1k/10k ops, W6 never")
    p.add_argument("--full", action="store_true", help="include W6 (CartPole training)")
    p.add_argument("--only", default=None, help="comma-separated workloads, e.g. W1,W4")
    p.add_argument("--check", action="store_true",
                   help="assert all implementations' gradients agree on one step")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the results table as markdown")
    p.add_argument("--repeats", type=int, default=None, help="repeats (default 7; quick 3)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of work per repeat (default 0.2; quick 0.005)")
    p.add_argument("--impls", default=",".join(IMPLS),
                   help=f"comma-separated subset of {','.join(IMPLS)} (numpy is always run)")
    p.add_argument("--isolation", choices=("process", "shared", "none"), default=None,
                   help="process (default): each implementation of each workload in its own "
                        "fresh worker process; shared (--quick's default): one worker per "
                        "implementation for all workloads; none: all in this process")
    p.add_argument("--malloc", choices=("default", "warm"), default="default",
                   help="default: glibc's adaptive thresholds in each fresh process (what a "
                        "user's program gets); warm: freed memory stays in the heap, so no "
                        "step pays page faults (the engine's own cost)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="W6 seeds (default 0,1,2,3,4)")
    p.add_argument("--max-episodes", type=int, default=2000, help="W6 episode cap per seed")
    args = p.parse_args(argv)
    if args.only:
        wanted = [w.strip().upper() for w in args.only.split(",") if w.strip()]
        bad = [w for w in wanted if w not in ALL]
        if bad:
            p.error(f"--only: unknown workload(s) {', '.join(bad)}; choose from {', '.join(ALL)}")
        args.workloads = [w for w in ALL if w in wanted]
    else:
        args.workloads = [w for w in ALL if args.full or w != "W6"]
    if args.quick and "W6" in args.workloads:
        if args.only:
            p.error("--quick never runs W6 (it trains CartPole for minutes)")
        args.workloads.remove("W6")
    args.isolation = args.isolation or ("shared" if args.quick else "process")
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.min_time = args.min_time if args.min_time is not None else (
        0.005 if args.quick else 0.2)
    args.impl_list = ["numpy"] + [i for i in args.impls.split(",") if i in IMPLS and
                                  i != "numpy"]
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def available(impl: str) -> str | None:
    """None when impl can run here, else why not."""
    if impl == "torch" and harness.torch_module() is None:
        return f"PyTorch not importable ({harness.torch_missing_reason()}): skipped"
    if impl == "autograd" and harness.autograd_module() is None:
        return "HIPS autograd not importable: skipped"
    return None


def check_variant(v: Variant, impls: dict[str, Impl]) -> list[str]:
    """Gradients of one step of every implementation against the floor's; failures as text."""
    ref = impls["numpy"].grads(impls["numpy"].step())
    failures = []
    for name, impl in impls.items():
        if name == "numpy":
            continue
        got = impl.grads(impl.step())
        if len(got) != len(ref):
            failures.append(f"{v.name} {name}: {len(got)} gradients, the floor has {len(ref)}")
            continue
        for i, (a, b) in enumerate(zip(got, ref)):
            a = np.asarray(a)
            if a.shape != b.shape or a.dtype != b.dtype:
                failures.append(f"{v.name} {name}: gradient {i} is {a.dtype}{a.shape}, the "
                                f"floor's is {b.dtype}{b.shape}")
                continue
            scale = float(np.max(np.abs(b))) if b.size else 0.0
            err = float(np.max(np.abs(a - b))) if b.size else 0.0
            if not err <= v.rtol * max(scale, 1e-30):
                failures.append(f"{v.name} {name}: gradient {i} differs from the floor's by "
                                f"{err:.3g} (max |grad| {scale:.3g}, rtol {v.rtol:g})")
    return failures


def run_variant(v: Variant, args: argparse.Namespace, notes: list[str], failures: list[str],
                pool: dict[str, Any]) -> list[dict[str, Any]]:
    """Time every implementation of one variant; `pool` keeps workers for --isolation shared."""
    impl_names = [n for n in args.impl_list if n in v.factories]
    errors: dict[str, str] = {}
    for name in list(impl_names):
        why = available(name)
        if why is not None:
            if why not in notes:
                notes.append(why)
            impl_names.remove(name)
    if args.check:
        impls = {}
        for name in impl_names:
            try:
                impls[name] = v.factories[name]()
            except Exception as e:
                errors[name] = f"{type(e).__name__}: {str(e)[:200]}"
        if "numpy" in impls:
            failures += check_variant(v, impls)
        del impls
    runners: dict[str, Any] = {}
    for name in impl_names:
        if name in errors:
            continue
        try:  # builds the implementation and runs one warm-up step
            if args.isolation == "none":
                runners[name] = runner.InProcess(v, name)
            elif args.isolation == "shared" and name in pool:
                runners[name] = pool[name]
                runners[name].setup(v, name, args.quick)
            else:
                runners[name] = runner.Subprocess(v, name, args.quick, args.malloc)
                if args.isolation == "shared":
                    pool[name] = runners[name]
        except Exception as e:  # e.g. RecursionError deep in a chain: the row says so
            errors[name] = f"{type(e).__name__}: {str(e)[:200]}"
    timed: dict[str, dict[str, Any]] = {}
    peaks: dict[str, tuple[int | None, str]] = {}
    try:
        inner = {name: r.calibrate(args.min_time) for name, r in runners.items()}
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):  # interleaved: A, B, C, A, B, C, ...
            for name, r in runners.items():
                times[name].append(r.run(inner[name]))
        timed = {name: {"median_s": statistics.median(ts), "repeats_s": ts,
                        "inner": inner[name]} for name, ts in times.items()}
        if v.measure_peak:
            peaks = {name: r.peak() for name, r in runners.items()}
    finally:
        for name, r in runners.items():
            if pool.get(name) is not r:
                r.close()
    rows = []
    floor = timed.get("numpy", {}).get("median_s")
    torch_s = timed.get("torch", {}).get("median_s")
    for name in impl_names:
        row: dict[str, Any] = {"name": v.name, "workload": v.workload, "impl": name,
                               "what": v.what, "median_s": None, "ratio_to_floor": None,
                               "ratio_to_torch": None, "peak_bytes": None}
        if name in timed:
            t = timed[name]
            row.update(median_s=t["median_s"], repeats_s=t["repeats_s"], inner=t["inner"])
            if floor:
                row["ratio_to_floor"] = t["median_s"] / floor
            if torch_s:
                row["ratio_to_torch"] = t["median_s"] / torch_s
            if v.ops:
                row["ops"] = v.ops
                row["per_op_s"] = t["median_s"] / v.ops
        if name in errors:
            row["error"] = errors[name]
        row_notes = list(v.notes) if name == "minigrad" else []
        if name in peaks:
            row["peak_bytes"], row["peak_method"] = peaks[name]
            if row["peak_bytes"] is not None and v.activation_bytes:
                row["peak_activations"] = row["peak_bytes"] / v.activation_bytes
            row_notes.append(f"peak: {row['peak_method']}")
        if row_notes:
            row["note"] = "; ".join(row_notes)
        rows.append(row)
        log(f"  {v.name:<11} {name:<9} {report.fmt_time(row['median_s']):>10}"
            f"  ×floor {report._ratio(row['ratio_to_floor']):>7}"
            f"  ×torch {report._ratio(row['ratio_to_torch']):>7}"
            + (f"  {row['error']}" if "error" in row else ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    malloc = harness.set_malloc(args.malloc)  # here, and in every worker it starts
    blas = harness.pin_threads()
    harness.torch_module()
    notes: list[str] = []
    failures: list[str] = []
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    pool: dict[str, Any] = {}
    try:
        for w in args.workloads:
            log(f"{w} ...")
            if w == "W6":
                from benchmarks import cartpole
                rows += cartpole.run(args, notes, failures)
                continue
            for v in WORKLOADS[w](args.quick):
                rows += run_variant(v, args, notes, failures, pool)
    finally:
        for r in pool.values():
            r.close()
    targets = report.check_targets(rows)
    env = harness.versions(blas)
    cmd = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    notes = [f"command: `{cmd.strip()}`; {args.repeats} repeats of ≥ {args.min_time:g} s "
             f"per implementation, interleaved; median per step; one thread; isolation "
             f"{args.isolation}; allocator: {malloc}"] + notes
    table = report.markdown(rows, targets, notes, env)
    print(table)
    if failures:
        print("--check FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
    elif args.check:
        log("--check: all implementations' gradients agree with the floor")
    log(f"done in {time.perf_counter() - t0:.1f} s")
    result = {"workloads": rows, "versions": env, "targets": targets,
              "settings": {"command": cmd.strip(), "quick": args.quick,
                           "isolation": args.isolation, "malloc": malloc,
                           "repeats": args.repeats, "min_time_s": args.min_time,
                           "check": None if not args.check else not failures},
              "notes": notes}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    return 1 if failures else 0
