"""The README's CartPole table: train cartpole_reinforce.py with its defaults on each seed and
print the results as the Markdown table (and the summary line under it) that the README shows.

Each seed is one run of `python examples/cartpole_reinforce.py --seed S --quiet`, a process of
its own, read from its machine-readable last line; the runs go to a temporary folder that is
removed at the end (`--runs-dir DIR` keeps them). Progress goes to stderr, the table to stdout:

    python examples/cartpole_table.py --seeds 0-9 > table.md

Every column but "wall s" (the run's training time) is the same on every machine that has the
same versions of NumPy and Gymnasium. A mistake in the arguments ends with one line on stderr
and exit status 2; a run that fails, with its own error line and status 1.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from typing import NamedTuple

from cartpole_reinforce import Parser, number, parse_args

PROG = "cartpole_table.py"
EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cartpole_reinforce.py")
LAST_LINE = re.compile(r"^seed=(\d+) solved=(yes|no) episodes=(\d+) steps=(\d+) "
                       r"seconds=(\d+\.\d+) mean100=(-?\d+\.\d) greedy=(-?\d+\.\d)$")


class Result(NamedTuple):
    seed: int
    solved: bool
    episodes: int
    steps: int
    seconds: float
    greedy: float


def seed_list(text: str) -> list[int]:
    """An argparse type: "0-9", "3", "0,2,5-7" as a list of distinct seeds, in that order."""
    seeds: list[int] = []
    seen: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise argparse.ArgumentTypeError(
                f"expected seeds such as 0-9 or 0,3,5 (integers of at least 0), got {text!r}")
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        if high < low:
            raise argparse.ArgumentTypeError(f"the range {part.strip()} is empty (write {high}-"
                                             f"{low})")
        for seed in range(low, high + 1):
            if seed in seen:
                raise argparse.ArgumentTypeError(f"seed {seed} is given twice in {text!r}")
            seen.add(seed)
            seeds.append(seed)
    return seeds


def format_table(results: list[Result], eval_episodes: int) -> str:
    """The README's table and the line under it; an unsolved seed shows the episodes it ran."""
    lines = [f"| seed | episodes | env steps | wall s | greedy eval of the saved policy "
             f"({eval_episodes} episodes) |", "|---|---|---|---|---|"]
    for r in results:
        episodes = f"{r.episodes}" if r.solved else f"{r.episodes} (not solved)"
        lines.append(f"| {r.seed} | {episodes} | {r.steps:,} | {r.seconds:.2f} | "
                     f"{r.greedy:.1f} |")
    counts = sorted(r.episodes for r in results)
    mid = len(counts) // 2
    median = counts[mid] if len(counts) % 2 else (counts[mid - 1] + counts[mid]) / 2
    solved = sum(r.solved for r in results)
    note = "" if solved == len(results) else " (an unsolved seed counts the episodes it ran)"
    lines += ["", f"{solved} of {len(results)} solved, median "
                  f"{f'{median:.1f}'.removesuffix('.0')} episodes{note}."]
    return "\n".join(lines)


def train(seed: int, episodes: int | None, runs_dir: str) -> Result:
    """One default training run of the example, as a process of its own."""
    extra = ["--episodes", str(episodes)] if episodes is not None else []
    proc = subprocess.run([sys.executable, EXAMPLE, "--seed", str(seed), "--quiet",
                           "--runs-dir", runs_dir, *extra], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    m = LAST_LINE.match(lines[-1]) if proc.returncode == 0 and lines else None
    if m is None:
        why = (proc.stderr.strip().splitlines() or lines or ["no output"])[-1]
        raise RuntimeError(f"seed {seed}: the run failed (status {proc.returncode}): {why}")
    return Result(int(m.group(1)), m.group(2) == "yes", int(m.group(3)), int(m.group(4)),
                  float(m.group(5)), float(m.group(7)))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = Parser(prog=PROG, description="Train cartpole_reinforce.py with its defaults on each "
                "seed and print the README's table of the results.")
    ap.add_argument("--seeds", type=seed_list, default=seed_list("0-9"), metavar="SEEDS",
                    help="seeds such as 0-9 or 0,3,5 (default 0-9)")
    ap.add_argument("--episodes", type=number(int, 1), default=None, metavar="N",
                    help="pass --episodes N to each run (default: the example's own)")
    ap.add_argument("--runs-dir", metavar="DIR", default=None,
                    help="keep the runs' folders in DIR (default: a temporary folder, removed)")
    args = ap.parse_args(argv)
    if args.runs_dir is not None and os.path.exists(args.runs_dir) and not os.path.isdir(
            args.runs_dir):
        ap.error(f"--runs-dir {args.runs_dir}: that is not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    eval_episodes = parse_args([]).eval_episodes  # what each run's greedy evaluation plays
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="cartpole_table_") as scratch:
            for seed in args.seeds:
                results.append(train(seed, args.episodes, args.runs_dir or scratch))
                r = results[-1]
                print(f"seed {r.seed}: {'solved' if r.solved else 'not solved'} in "
                      f"{r.episodes} episodes, {r.seconds:.2f} s", file=sys.stderr)
    except RuntimeError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(format_table(results, eval_episodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
