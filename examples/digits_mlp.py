"""Handwritten digits with an MLP: scikit-learn's bundled 8×8 digits, trained with minigrad.

The data set (1,797 images of 8×8 pixels, 16 grey levels, ten classes) ships inside
scikit-learn, so nothing is downloaded: `pip install -e '.[digits]'`. A seeded fifth of the
images is the test set. The network is 64 → hidden → hidden → 10 with ReLU
(`nn.Sequential` of `nn.Linear`), trained with mini-batch Adam on softmax cross-entropy. It
prints the loss and test accuracy per epoch, then one machine-readable line.

    python examples/digits_mlp.py
    python examples/digits_mlp.py --epochs 30 --hidden 128

`examples/digits_cnn.py` trains a convolutional network on the same data with the same loop.
A mistake in the arguments ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

import numpy as np

import minigrad as mg
from minigrad import nn, optim
from minigrad.nn import functional as F  # noqa: N812  (PyTorch's convention)


class Digits(NamedTuple):
    """Images as (N, 1, 8, 8) float64 in [0, 1], labels as (N,) ints, split train / test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(seed: int, test_fraction: float = 0.2, limit: int | None = None) -> Digits:
    """scikit-learn's digits, shuffled by `seed` and split; `limit` keeps the first images
    after shuffling (for quick runs)."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))[:limit]
    x = (data.images[order] / 16.0)[:, None]  # grey levels 0..16 → [0, 1], one channel
    y = data.target[order].astype(np.int64)
    n_test = max(1, round(test_fraction * len(y)))
    return Digits(x[n_test:], y[n_test:], x[:n_test], y[:n_test])


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 512) -> float:
    model.eval()
    with mg.no_grad():
        hits = sum(int((model(mg.Tensor(x[i:i + batch])).numpy().argmax(axis=1)
                        == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    model.train()
    return hits / len(y)


def train(model: nn.Module, data: Digits, args: argparse.Namespace, name: str) -> int:
    """Mini-batch Adam on cross-entropy, reshuffled every epoch; prints one line per epoch and
    the summary line `<name> test_accuracy=… train_accuracy=… epochs=… seconds=…`."""
    rng = np.random.default_rng(args.seed)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    n = len(data.y_train)
    seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        total = 0.0
        for i in range(0, n, args.batch_size):
            idx = order[i:i + args.batch_size]
            loss = F.cross_entropy(model(mg.Tensor(data.x_train[idx])), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        seconds += time.perf_counter() - t0
        if not args.quiet:
            print(f"epoch {epoch:>3}  loss {total / n:.4f}  "
                  f"test accuracy {accuracy(model, data.x_test, data.y_test):.4f}")
    print(f"{name} test_accuracy={accuracy(model, data.x_test, data.y_test):.4f} "
          f"train_accuracy={accuracy(model, data.x_train, data.y_train):.4f} "
          f"epochs={args.epochs} seconds={seconds:.2f}")
    return 0


# --- the command line ---------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """A mistake on the command line ends in one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def number(kind: type, low: float, high: float = math.inf, *, open_low: bool = False,
           open_high: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite `kind` (int or float) between low and high."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        if not (math.isfinite(value) and above and below):
            least = f"{'greater than' if open_low else 'at least'} {low:g}"
            most = "" if high == math.inf else \
                f" and {'less than' if open_high else 'at most'} {high:g}"
            raise argparse.ArgumentTypeError(f"must be {least}{most}, got {text}")
        return value
    return parse


def common_parser(prog: str, description: str, epochs: int, lr: float) -> Parser:
    """The flags both digits examples take."""
    ap = Parser(prog=prog, description=description)
    ap.add_argument("--seed", type=number(int, 0), default=0,
                    help="shuffling, split and initial weights (default %(default)s)")
    ap.add_argument("--epochs", type=number(int, 1), default=epochs,
                    help="passes over the training set (default %(default)s)")
    ap.add_argument("--batch-size", type=number(int, 1), default=32,
                    help="images per Adam step (default %(default)s)")
    ap.add_argument("--lr", type=number(float, 0, open_low=True), default=lr,
                    help="Adam's learning rate (default %(default)s)")
    ap.add_argument("--limit", type=number(int, 10, 1797), default=None, metavar="N",
                    help="use only N of the 1,797 images, for a quick run (default: all)")
    ap.add_argument("--quiet", action="store_true", help="only the last line")
    return ap


def run_main(prog: str, parser: Parser, build: Callable[[argparse.Namespace,
                                                        np.random.Generator], nn.Module],
             argv: list[str] | None) -> int:
    """Parse, check that scikit-learn is there, build the model and train it."""
    args = parser.parse_args(argv)
    if importlib.util.find_spec("sklearn") is None:
        print(f"{prog}: error: the digits come with scikit-learn: pip install scikit-learn "
              f"(or pip install -e '.[digits]')", file=sys.stderr)
        return 1
    data = load_digits(args.seed, limit=args.limit)
    model = build(args, np.random.default_rng(args.seed))
    try:
        return train(model, data, args, prog.removesuffix(".py"))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def build_mlp(args: argparse.Namespace, rng: np.random.Generator) -> nn.Module:
    return nn.Sequential(nn.Flatten(),
                         nn.Linear(64, args.hidden, rng=rng), nn.ReLU(),
                         nn.Linear(args.hidden, args.hidden, rng=rng), nn.ReLU(),
                         nn.Linear(args.hidden, 10, rng=rng))


def main(argv: list[str] | None = None) -> int:
    ap = common_parser("digits_mlp.py", "An MLP on scikit-learn's 8×8 digits, on minigrad.",
                       epochs=20, lr=1e-3)
    ap.add_argument("--hidden", type=number(int, 1), default=64,
                    help="units in each of the two hidden layers (default %(default)s)")
    return run_main("digits_mlp.py", ap, build_mlp, argv)


if __name__ == "__main__":
    sys.exit(main())
