"""A small MLP classifier on synthetic two-moons data, trained with minigrad.

Two interleaving half circles with Gaussian noise (made here with NumPy, no dataset download),
a 2 -> hidden -> hidden -> 2 ReLU network (`minigrad.nn`), softmax cross-entropy, full-batch Adam.
It prints the train and test accuracy; `--plot PATH` draws the decision boundary.

    python examples/two_moons.py
    python examples/two_moons.py --plot two_moons.png

A mistake in the arguments ends with one line on stderr and exit status 2; Ctrl-C with one line
and status 130.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

import minigrad as mg
from minigrad import nn, optim
from minigrad.nn import functional as F  # noqa: N812  (PyTorch's convention)


def make_moons(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n points: class 0 on the upper half circle, class 1 on the lower one, shifted to
    interleave; Gaussian noise of std `noise`. Returns X (n, 2) float64 and y (n,) int."""
    n0 = n // 2
    t0 = rng.uniform(0, np.pi, n0)
    t1 = rng.uniform(0, np.pi, n - n0)
    upper = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    lower = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    x = np.concatenate([upper, lower]) + rng.normal(scale=noise, size=(n, 2))
    y = np.concatenate([np.zeros(n0, dtype=np.int64), np.ones(n - n0, dtype=np.int64)])
    order = rng.permutation(n)
    return x[order], y[order]


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with mg.no_grad():
        return float((model(mg.Tensor(x)).numpy().argmax(axis=1) == y).mean())


def plot_boundary(path: str, model: nn.Module, x: np.ndarray, y: np.ndarray, mu: np.ndarray,
                  sd: np.ndarray, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = x.min(axis=0) - 0.5, x.max(axis=0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    with mg.no_grad():
        p1 = model(mg.Tensor((grid - mu) / sd)).softmax(axis=1).numpy()[:, 1]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.contourf(gx, gy, p1.reshape(gx.shape), levels=20, cmap="RdBu_r", alpha=0.6)
    ax.contour(gx, gy, p1.reshape(gx.shape), levels=[0.5], colors="k", linewidths=1.5)
    ax.scatter(x[:, 0], x[:, 1], c=y, cmap="RdBu_r", edgecolors="k", linewidths=0.3, s=12)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


class Parser(argparse.ArgumentParser):
    """A mistake on the command line ends in one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def number(kind: type, low: float, *, open_low: bool = False, hint: str = ""
           ) -> Callable[[str], Any]:
    """An argparse type: a finite `kind` (int or float) of at least (or above) `low`."""
    wanted = f"{'greater than' if open_low else 'at least'} {low:g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not (math.isfinite(value) and (value > low if open_low else value >= low)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}{hint}")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = Parser(prog="two_moons.py", description="Two-moons MLP classifier on minigrad.")
    ap.add_argument("--seed", type=number(int, 0), default=0, help="default %(default)s")
    ap.add_argument("--n", type=number(int, 10, hint=" (a fifth of them are the test set)"),
                    default=1000, help="points, 80%% train and 20%% test, at least 10 "
                                       "(default %(default)s)")
    ap.add_argument("--noise", type=number(float, 0), default=0.15,
                    help="std of the Gaussian noise (default %(default)s)")
    ap.add_argument("--hidden", type=number(int, 1), default=32,
                    help="hidden units (default %(default)s)")
    ap.add_argument("--steps", type=number(int, 1), default=300,
                    help="full-batch Adam steps (default %(default)s)")
    ap.add_argument("--lr", type=number(float, 0, open_low=True), default=0.01,
                    help="Adam's learning rate (default %(default)s)")
    ap.add_argument("--plot", metavar="PATH", default=None,
                    help="write the decision boundary as a PNG here; needs matplotlib")
    ap.add_argument("--quiet", action="store_true", help="only the last line")
    args = ap.parse_args(argv)
    if args.plot is not None:  # checked now, not after training
        directory = os.path.dirname(args.plot) or "."
        if os.path.isdir(args.plot):
            ap.error(f"--plot {args.plot}: that is a directory; give a file name")
        if not os.path.isdir(directory):
            ap.error(f"--plot {args.plot}: the directory {directory} does not exist")
        if not os.access(directory, os.W_OK | os.X_OK):
            ap.error(f"--plot {args.plot}: the directory {directory} is not writable")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print("two_moons.py: error: --plot needs matplotlib: pip install matplotlib (or "
              "pip install -e '.[examples]')", file=sys.stderr)
        return 1
    try:
        return run(args)
    except KeyboardInterrupt:
        print("two_moons.py: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"two_moons.py: error: cannot write {args.plot}: {e.strerror or e}",
              file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    x, y = make_moons(args.n, args.noise, rng)
    n_train = int(0.8 * len(x))
    mu, sd = x[:n_train].mean(axis=0), x[:n_train].std(axis=0)  # standardise with train stats
    xs = (x - mu) / sd
    x_train, y_train, x_test, y_test = xs[:n_train], y[:n_train], xs[n_train:], y[n_train:]

    model = nn.Sequential(nn.Linear(2, args.hidden, rng=rng), nn.ReLU(),
                          nn.Linear(args.hidden, args.hidden, rng=rng), nn.ReLU(),
                          nn.Linear(args.hidden, 2, rng=rng))
    opt = optim.Adam(model.parameters(), lr=args.lr)
    inputs = mg.Tensor(x_train)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss = F.cross_entropy(model(inputs), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if not args.quiet and (step % 50 == 0 or step == 1):
            print(f"step {step:>4}  loss {loss.item():.4f}  "
                  f"train accuracy {accuracy(model, x_train, y_train):.3f}")
    seconds = time.perf_counter() - t0

    train_acc = accuracy(model, x_train, y_train)
    test_acc = accuracy(model, x_test, y_test)
    if args.plot:
        plot_boundary(args.plot, model, x, y, mu, sd,
                      f"two moons (noise {args.noise:g}): MLP 2-{args.hidden}-{args.hidden}-2 "
                      f"on minigrad, test accuracy {test_acc:.1%}")
        if not args.quiet:
            print(f"saved the decision boundary to {args.plot}")
    print(f"two_moons train_accuracy={train_acc:.4f} test_accuracy={test_acc:.4f} "
          f"steps={args.steps} seconds={seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
