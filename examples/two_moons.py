"""A small MLP classifier on synthetic two-moons data, trained with minigrad.

Two interleaving half circles with Gaussian noise (made here with NumPy, no dataset download),
a 2 -> hidden -> hidden -> 2 ReLU network (`minigrad.nn`), softmax cross-entropy, full-batch Adam.
It prints the train and test accuracy; `--plot PATH` draws the decision boundary.

    python examples/two_moons.py
    python examples/two_moons.py --plot runs/two_moons.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time

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
                  sd: np.ndarray, title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(--plot skipped: matplotlib is not installed)", file=sys.stderr)
        return False
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Two-moons MLP classifier on minigrad.")
    ap.add_argument("--seed", type=int, default=0, help="default %(default)s")
    ap.add_argument("--n", type=int, default=1000,
                    help="points, 80%% train and 20%% test (default %(default)s)")
    ap.add_argument("--noise", type=float, default=0.15,
                    help="std of the Gaussian noise (default %(default)s)")
    ap.add_argument("--hidden", type=int, default=32, help="hidden units (default %(default)s)")
    ap.add_argument("--steps", type=int, default=300,
                    help="full-batch Adam steps (default %(default)s)")
    ap.add_argument("--lr", type=float, default=0.01,
                    help="Adam's learning rate (default %(default)s)")
    ap.add_argument("--plot", metavar="PATH", default=None, help="decision-boundary PNG")
    ap.add_argument("--quiet", action="store_true", help="only the last line")
    args = ap.parse_args(argv)

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
    if args.plot and plot_boundary(
            args.plot, model, x, y, mu, sd,
            f"two moons (noise {args.noise:g}): MLP 2-{args.hidden}-{args.hidden}-2 on minigrad,"
            f" test accuracy {test_acc:.1%}"):
        if not args.quiet:
            print(f"saved the decision boundary to {args.plot}")
    print(f"two_moons train_accuracy={train_acc:.4f} test_accuracy={test_acc:.4f} "
          f"steps={args.steps} seconds={seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
