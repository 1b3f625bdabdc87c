"""Handwritten digits with a convolutional network, trained with minigrad.

The same data, split and training loop as `digits_mlp.py` (scikit-learn's bundled 8×8 digits,
mini-batch Adam on cross-entropy); only the model differs: two 3×3 convolutions with ReLU and
2×2 max pooling, then a linear layer, written as PyTorch would write it:

    Conv2d(1, C, 3, padding=1) → ReLU → MaxPool2d(2)        8×8 → 4×4
    Conv2d(C, 2C, 3, padding=1) → ReLU → MaxPool2d(2)       4×4 → 2×2
    Flatten → Linear(2C·2·2, 10)

Its `state_dict` loads into the same `torch.nn.Sequential`. With the defaults it reaches at
least 95% test accuracy.

    python examples/digits_cnn.py
    python examples/digits_cnn.py --channels 32 --epochs 20

A mistake in the arguments ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from digits_mlp import common_parser, number, run_main

from minigrad import nn


def build_cnn(args: argparse.Namespace, rng: np.random.Generator) -> nn.Module:
    c = args.channels
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * c * 2 * 2, 10, rng=rng))


def main(argv: list[str] | None = None) -> int:
    ap = common_parser("digits_cnn.py", "A small CNN on scikit-learn's 8×8 digits, on minigrad.",
                       epochs=15, lr=3e-3)
    ap.add_argument("--channels", type=number(int, 1), default=16,
                    help="channels of the first convolution; the second has twice as many "
                         "(default %(default)s)")
    return run_main("digits_cnn.py", ap, build_cnn, argv)


if __name__ == "__main__":
    sys.exit(main())
