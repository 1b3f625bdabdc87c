"""A character-level recurrent network that learns to write like a small text file.

The text is `examples/data/tape.txt` (6.6 kB written for this repository) or any
UTF-8 file given with `--text`. Its last tenth is held out. The model is an Elman RNN written
with `minigrad.nn` pieces and a Python loop over time:

    h_t = tanh(E[x_t] + W h_{t−1} + b),    logits_t = V h_t + c

trained with Adam on the cross-entropy of the next character, over random windows of
`--seq-len` characters (backpropagation through time within each window), gradients clipped
to a total norm of `--clip`. It prints the held-out loss in bits per character (a uniform guess
costs log2 of the alphabet's size), then a sample written from the trained model.

    python examples/char_rnn.py
    python examples/char_rnn.py --steps 1000 --hidden 128 --temperature 0.5

A mistake in the arguments (a missing or unreadable text file included) ends with one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

import minigrad as mg
from minigrad import nn, optim
from minigrad.nn import functional as F  # noqa: N812  (PyTorch's convention)

TEXT = Path(__file__).resolve().parent / "data" / "tape.txt"


class CharRNN(nn.Module):
    """Embedding → tanh recurrence → linear read-out of the next character's logits."""

    def __init__(self, vocab: int, hidden: int, rng: np.random.Generator) -> None:
        self.embed = nn.Embedding(vocab, hidden, rng=rng)  # E[x] = one-hot(x) times a matrix
        self.recur = nn.Linear(hidden, hidden, rng=rng)    # W h + b
        self.head = nn.Linear(hidden, vocab, rng=rng)      # V h + c

    def forward(self, idx: np.ndarray, h: mg.Tensor | None = None
                ) -> tuple[mg.Tensor, mg.Tensor]:
        """idx (B, T) character ids → logits (B, T, vocab) and the last hidden state."""
        states = []
        for e in mg.unbind(self.embed(idx), axis=1):  # one (B, hidden) input per time step
            h = (e if h is None else e + self.recur(h)).tanh()
            states.append(h)
        assert h is not None
        return self.head(mg.stack(states, axis=1)), h


def windows(ids: np.ndarray, starts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ids[s : s + length] and targets ids[s + 1 : s + length + 1] for each start s."""
    rows = starts[:, None] + np.arange(length)
    return ids[rows], ids[rows + 1]


def bits_per_char(model: CharRNN, ids: np.ndarray, length: int) -> float:
    """Mean cross-entropy of the next character over ids, in bits, in windows of `length`."""
    starts = np.arange(0, len(ids) - 1, length)
    ends = np.minimum(starts + length, len(ids) - 1)
    total = 0.0
    with mg.no_grad():
        for s, e in zip(starts, ends):
            x, y = windows(ids, np.array([s]), int(e - s))
            logits, _ = model(x)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                     reduction="sum").item()
    return total / (len(ids) - 1) / math.log(2)


def sample(model: CharRNN, alphabet: str, prompt: str, length: int, temperature: float,
           rng: np.random.Generator) -> str:
    """The prompt continued by `length` characters drawn from softmax(logits / temperature)."""
    index = {c: i for i, c in enumerate(alphabet)}
    ids = [index[c] for c in prompt if c in index] or [0]
    out = []
    with mg.no_grad():
        logits, h = model(np.array([ids]))
        for _ in range(length):
            z = logits.numpy()[0, -1] / temperature
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
            out.append(alphabet[nxt])
            logits, h = model(np.array([[nxt]]), h)
    return prompt + "".join(out)


def train(args: argparse.Namespace, text: str) -> int:
    rng = np.random.default_rng(args.seed)
    alphabet = "".join(sorted(set(text)))
    ids = np.array([alphabet.index(c) for c in text], dtype=np.int64)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    model = CharRNN(len(alphabet), args.hidden, rng)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    if not args.quiet:
        print(f"{len(text):,} characters, an alphabet of {len(alphabet)} (uniform guess: "
              f"{math.log2(len(alphabet)):.2f} bits per character)")
    t0 = time.perf_counter()
    loss = None
    for step in range(1, args.steps + 1):
        starts = rng.integers(0, len(train_ids) - args.seq_len, size=args.batch_size)
        x, y = windows(train_ids, starts, args.seq_len)
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, len(alphabet)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        if not args.quiet and (step % 100 == 0 or step == 1):
            print(f"step {step:>5}  train loss {loss.item() / math.log(2):.3f} bits/char  "
                  f"held-out {bits_per_char(model, val_ids, args.seq_len):.3f}")
    seconds = time.perf_counter() - t0
    val = bits_per_char(model, val_ids, args.seq_len)
    if args.sample_length:
        print(sample(model, alphabet, args.prompt, args.sample_length, args.temperature, rng))
    assert loss is not None
    print(f"char_rnn steps={args.steps} train_bits_per_char={loss.item() / math.log(2):.3f} "
          f"val_bits_per_char={val:.3f} uniform_bits_per_char={math.log2(len(alphabet)):.3f} "
          f"seconds={seconds:.2f}")
    return 0


# --- the command line ---------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """A mistake on the command line ends in one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def number(kind: type, low: float, *, open_low: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite `kind` (int or float) of at least (or above) `low`."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not (math.isfinite(value) and (value > low if open_low else value >= low)):
            raise argparse.ArgumentTypeError(
                f"must be {'greater than' if open_low else 'at least'} {low:g}, got {text}")
        return value
    return parse


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, str]:
    ap = Parser(prog="char_rnn.py", description="A character-level RNN on minigrad.")
    ap.add_argument("--text", type=Path, default=TEXT, metavar="PATH",
                    help="a UTF-8 text file to learn (default: examples/data/tape.txt)")
    ap.add_argument("--seed", type=number(int, 0), default=0, help="default %(default)s")
    ap.add_argument("--steps", type=number(int, 1), default=400,
                    help="Adam steps (default %(default)s)")
    ap.add_argument("--batch-size", type=number(int, 1), default=16,
                    help="windows per step (default %(default)s)")
    ap.add_argument("--seq-len", type=number(int, 2), default=32,
                    help="characters per window: how far back the gradient reaches "
                         "(default %(default)s)")
    ap.add_argument("--hidden", type=number(int, 1), default=64,
                    help="size of the hidden state (default %(default)s)")
    ap.add_argument("--lr", type=number(float, 0, open_low=True), default=3e-3,
                    help="Adam's learning rate (default %(default)s)")
    ap.add_argument("--clip", type=number(float, 0, open_low=True), default=1.0,
                    help="largest total gradient norm (default %(default)s)")
    ap.add_argument("--sample-length", type=number(int, 0), default=300,
                    help="characters to write after training; 0 for none (default %(default)s)")
    ap.add_argument("--temperature", type=number(float, 0, open_low=True), default=0.7,
                    help="below 1: safer choices, above 1: wilder ones (default %(default)s)")
    ap.add_argument("--prompt", default="The ", help="how the sample starts (default %(default)r)")
    ap.add_argument("--quiet", action="store_true", help="only the sample and the last line")
    args = ap.parse_args(argv)
    try:
        text = args.text.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        ap.error(f"--text {args.text}: cannot read it as UTF-8 text "
                 f"({getattr(e, 'strerror', None) or e})")
    if int(0.9 * len(text)) <= args.seq_len or len(text) - int(0.9 * len(text)) < 2:
        ap.error(f"--text {args.text}: {len(text)} characters are too few for --seq-len "
                 f"{args.seq_len}: nine tenths of the text must be longer than a window")
    return args, text


def main(argv: list[str] | None = None) -> int:
    args, text = parse_args(argv)
    try:
        return train(args, text)
    except KeyboardInterrupt:
        print("char_rnn.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
