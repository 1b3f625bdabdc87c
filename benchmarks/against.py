"""`python -m benchmarks --against REV`: minigrad at git revision REV against the working tree.

    python -m benchmarks --against HEAD                 W0–W5, W7 and W8, 3 rounds
    python -m benchmarks --against HEAD~3 --only W1,W2 --rounds 5
    python -m benchmarks --against HEAD~1 --base HEAD   two revisions; the working tree unused

REV's `minigrad/` is extracted with `git archive` into a temporary directory and the working
tree's is copied next to it (a snapshot: edits made during the run do not reach it); each
side's workers run with its directory first on their path, and check that `minigrad` came from
there. The benchmark code, workloads and NumPy floor included, is the working tree's on both
sides: only the engine differs. The rounds alternate the order (REV then new, new then REV, ...)
so drift of the machine hits both alike. In each round every variant gets three fresh workers,
one after the other: the NumPy floor (for the × floor columns), then the two engines, each
calibrated and timed for --repeats repeats. A side's time is the median of all its repeats
over all rounds; the per-round figures are that round's medians. Time only, no peak memory.

Both sides' workers are started alike on purpose. With glibc's default malloc, W2 (half-megabyte
temporaries) runs about twice as fast in a process whose earlier frees happened to raise the
mmap threshold (see runner.py), and things as small as one more PYTHONPATH entry decided that,
for the same engine. Two engines whose modules differ can still land on different sides of it:
for W2, confirm a large ratio with `--malloc warm`, which takes the allocator out.

This process only names the variants, with REV's engine: the working tree's may not even import
in the middle of a refactor (its workers then report the error under the table).

Exit status: 0; 1 when a worker failed (its error is under the table) or found minigrad in the
wrong place; 2 for a bad revision or no git checkout.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import harness, report, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMED = ("W0", "W1", "W2", "W3", "W4", "W5", "W7", "W8")  # W6 trains CartPole: not here
KEYS = ("floor", "old", "new")

Times = dict[tuple[str, str], list[list[float]]]  # (variant, key) -> per round, the repeats


@dataclass
class Side:
    label: str   # for the table: "HEAD (6c96e7c)", "working tree (6c96e7c-dirty)"
    engine: str  # the directory holding its minigrad/


class UsageError(Exception):
    """A bad revision or checkout: one line on stderr, exit 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", required=True, metavar="REV", help="the old side: a git revision")
    p.add_argument("--base", metavar="REV2",
                   help="the new side: this revision instead of the working tree")
    p.add_argument("--only", default=None, help="comma-separated workloads, e.g. W1,W4")
    p.add_argument("--impl", default="minigrad", choices=("minigrad", "minigrad-compiled"),
                   help="the row compared between the two sides (default minigrad)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating order (default 3)")
    p.add_argument("--repeats", type=int, default=None,
                   help="repeats per side per round (default 7; quick 3)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of work per repeat (default 0.2; quick 0.005)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny repeats, short W5")
    p.add_argument("--malloc", choices=("default", "warm"), default="default",
                   help="glibc's thresholds in every worker, as in python -m benchmarks")
    p.add_argument("--markdown", metavar="PATH", help="also write the tables here")
    args = p.parse_args(argv)
    wanted = [w.strip().upper() for w in (args.only or ",".join(TIMED)).split(",") if w.strip()]
    bad = [w for w in wanted if w not in TIMED]
    if bad:
        p.error(f"--only: {', '.join(bad)} cannot be compared; choose from {', '.join(TIMED)}")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.workloads = [w for w in TIMED if w in wanted]
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.min_time = args.min_time if args.min_time is not None else (
        0.005 if args.quick else 0.2)
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def git(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", ROOT, *argv], capture_output=True, timeout=60)


def resolve(flag: str, rev: str) -> str:
    """The commit `rev` names in this repository."""
    out = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if rev.startswith("-") or out.returncode != 0:
        raise UsageError(f"{flag}: {rev!r} is not a commit of the git repository in {ROOT}")
    return out.stdout.decode().strip()


def extract(flag: str, rev: str, commit: str, dest: str) -> Side:
    """`git archive commit minigrad`, unpacked into dest."""
    out = git("archive", "--format=tar", commit, "minigrad")
    if out.returncode == 0:
        with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
            tar.extractall(dest, filter="data")
    if not os.path.isfile(os.path.join(dest, "minigrad", "__init__.py")):
        raise UsageError(f"{flag}: {rev} ({commit[:7]}) has no minigrad/ package")
    return Side(commit[:7] if commit.startswith(rev) else f"{rev} ({commit[:7]})", dest)


def snapshot(dest: str) -> Side:
    """The working tree's minigrad/, uncommitted and untracked files included, copied to dest."""
    shutil.copytree(os.path.join(ROOT, "minigrad"), os.path.join(dest, "minigrad"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tree = git("describe", "--always", "--dirty").stdout.decode().strip()
    return Side(f"working tree ({tree})", dest)


def measure(v: Any, impl: str, side: Side, args: argparse.Namespace) -> list[float]:
    """One fresh worker: warm-up, calibration, then args.repeats repeats (seconds per step)."""
    w = runner.Subprocess(v, impl, args.quick, args.malloc, engine=side.engine)
    try:
        inner = w.calibrate(args.min_time)
        return [w.run(inner) for _ in range(args.repeats)]
    finally:
        w.close()


def run_rounds(variants: list[Any], old: Side, new: Side, args: argparse.Namespace,
               times: Times, errors: dict[tuple[str, str], str]) -> None:
    """Round r: for each variant, the floor, then old and new (r even) or new and old (r odd)."""
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        log(f"round {r + 1}/{args.rounds}: {order[0]} first")
        for v in variants:
            for key in ("floor", *order):
                if (v.name, key) in errors:  # failed in an earlier round: it would again
                    continue
                side = new if key == "new" else old  # the floor never touches the engine
                try:
                    times[v.name, key].append(
                        measure(v, "numpy" if key == "floor" else args.impl, side, args))
                except runner.WorkerError as e:
                    errors[v.name, key] = str(e)
                    log(f"  {v.name:<11} {key:<5} {e}")
                else:
                    t = statistics.median(times[v.name, key][-1])
                    log(f"  {v.name:<11} {key:<5} {report.fmt_time(t):>10}")


def median(rounds: list[list[float]]) -> float | None:
    flat = [t for ts in rounds for t in ts]
    return statistics.median(flat) if flat else None


def ratio(a: float | None, b: float | None, fmt: str = ".3f") -> str:
    return "—" if a is None or not b else f"{a / b:{fmt}}"


def tables(variants: list[Any], times: Times, errors: dict[tuple[str, str], str], old: Side,
           new: Side, rounds: int) -> list[str]:
    """One markdown table per workload, a row per variant."""
    lines: list[str] = []
    for workload in dict.fromkeys(v.workload for v in variants):
        mine = [v for v in variants if v.workload == workload]
        heads = [f"round {r + 1}, {'old' if r % 2 == 0 else 'new'} first: old → new"
                 for r in range(rounds)]
        lines += [f"### {workload}", "",
                  f"| variant | floor | old: {old.label} | new: {new.label} | new / old | "
                  f"old × floor | new × floor | {' | '.join(heads)} |", "|---" * (7 + rounds) + "|"]
        for v in mine:
            floor, t_old, t_new = (median(times[v.name, k]) for k in KEYS)
            cells = []
            for r in range(rounds):
                o, n = (statistics.median(times[v.name, k][r])
                        if len(times[v.name, k]) > r else None for k in ("old", "new"))
                cells.append(f"{report.fmt_time(o)} → {report.fmt_time(n)} ({ratio(n, o)})")
            lines.append(f"| {v.name} | {report.fmt_time(floor)} | {report.fmt_time(t_old)} | "
                         f"{report.fmt_time(t_new)} | **{ratio(t_new, t_old)}** | "
                         f"{ratio(t_old, floor, '.2f')} | {ratio(t_new, floor, '.2f')} | "
                         f"{' | '.join(cells)} |")
        lines.append("")
        for v in mine:
            lines.append(f"- {v.name}: {v.what}")
            lines += [f"- {v.name}, {k}: **failed**: {errors[v.name, k]}" for k in KEYS
                      if (v.name, k) in errors]
        lines.append("")
    return lines


def footer(args: argparse.Namespace, argv: list[str] | None) -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    tree = git("describe", "--always", "--dirty").stdout.decode().strip()
    cmd = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    return [
        f"- command: `{cmd.strip()}`, in a checkout at {tree}; {args.rounds} round(s), "
        f"alternating which engine goes first; per round and side a fresh worker, "
        f"{args.repeats} repeats of ≥ {args.min_time:g} s; malloc {args.malloc}; one thread",
        "- old, new: the median time per step of all repeats of all rounds (new / old < 1: "
        "new is faster); per round, that round's medians",
        f"- machine: {harness._cpu_model()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"Python {sys.version.split()[0]}, NumPy {np.__version__}; load average at the end "
        f"{load}",
    ] + (["- W2 under glibc's default malloc can change twofold with what a process freed "
          "before: confirm a large W2 ratio with --malloc warm (see benchmarks/against.py)"]
         if args.malloc == "default" and "W2" in args.workloads else [])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minigrad-against-") as tmp:
        try:
            if shutil.which("git") is None:
                raise UsageError("--against: git is not installed")
            top = git("rev-parse", "--show-toplevel").stdout.decode().strip()
            if not top or not os.path.samefile(top, ROOT):
                raise UsageError(f"--against: {ROOT} is not the top of a git checkout")
            commits = {flag: resolve(flag, rev) for flag, rev in
                       (("--against", args.against), ("--base", args.base)) if rev is not None}
            old = extract("--against", args.against, commits["--against"],
                          os.path.join(tmp, "old"))
            new = (extract("--base", args.base, commits["--base"], os.path.join(tmp, "new"))
                   if args.base is not None else snapshot(os.path.join(tmp, "new")))
        except UsageError as e:
            print(e, file=sys.stderr)
            return 2
        sys.path.insert(0, old.engine)  # see the module docstring
        mismatch = runner.engine_mismatch(old.engine)
        if mismatch is not None:
            print(f"--against: {mismatch}", file=sys.stderr)
            return 1
        from benchmarks.workloads import WORKLOADS

        variants = [v for w in args.workloads for v in WORKLOADS[w](args.quick)]
        times: Times = {(v.name, k): [] for v in variants for k in KEYS}
        errors: dict[tuple[str, str], str] = {}
        try:
            run_rounds(variants, old, new, args, times, errors)
        except runner.EngineMismatchError as e:
            print(f"--against: {e}", file=sys.stderr)
            return 1
    table = "\n".join(tables(variants, times, errors, old, new, args.rounds)
                      + footer(args, argv)) + "\n"
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    log(f"done in {time.perf_counter() - t0:.1f} s")
    return 1 if errors else 0
