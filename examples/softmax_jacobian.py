"""The softmax Jacobian, and why backprop never needs it: the runnable answer to

    "I wrote a NumPy policy network for CartPole. My softmax derivative gives a (20,20) matrix
     and backprop breaks. Is softmax_grad right?"

    def softmax_grad(s):                    # the function from the question
        s = s.reshape(-1, 1)
        return np.diagflat(s) - s @ s.T

For ONE row it is right: diag(s) - s sᵀ is the (K,K) Jacobian of s = softmax(z). Given a batch
of rows it is wrong, and the program around it had three more mistakes. Each section below checks
one claim numerically with minigrad's own transforms (`mg.jacobian`, `mg.vjp`, `mg.grad`):

1. one row: the (K,K) Jacobian diag(s) - s sᵀ
2. a batch: an (N,K,N,K) block-diagonal Jacobian, and what np.diagflat of a batch does instead
3. the VJP s * (g - (g*s).sum(-1, keepdims=True)) equals Jᵀg row by row, in O(N·K)
4. time and peak memory: VJP vs explicit Jacobian at N=4096, K=1000
5. the log-likelihood's gradient w.r.t. the logits is onehot(a) - softmax(z): no Jacobian at all
6. REINFORCE weights each row by its return (unweighted, the expected update is zero)
7. in-place relu/softmax on saved activations: minigrad refuses the write

The explicit Jacobians here are a teaching demo; minigrad's backward() never builds one.

    python examples/softmax_jacobian.py            # a few seconds
    python examples/softmax_jacobian.py --small    # sizes for a smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from typing import NoReturn

import numpy as np

import minigrad as mg


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 74 - len(title)))


def check(name: str, got: np.ndarray, want: np.ndarray, tol: float = 1e-12) -> None:
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    status = "ok" if err <= tol else "MISMATCH"
    print(f"  {name:<58} max |diff| = {err:.1e}  {status}")
    if err > tol:
        raise SystemExit(f"check failed: {name}")


def fmt_time(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.1f} s"


def fmt_bytes(b: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b:.0f} B"


def softmax_np(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_grad(s: np.ndarray) -> np.ndarray:
    """The question's function: right for one row, wrong for a batch."""
    s = s.reshape(-1, 1)
    return np.diagflat(s) - s @ s.T


# ---------------------------------------------------------------------------------------------
def one_row(rng: np.random.Generator) -> None:
    section("1. One row: the (K,K) Jacobian is diag(s) - s s^T")
    z = rng.normal(size=5)
    s = softmax_np(z)
    jac = mg.jacobian(lambda t: t.softmax(axis=-1), z)  # one VJP per output element
    print(f"  z = {np.round(z, 3)}\n  s = softmax(z) = {np.round(s, 3)}")
    print(f"  mg.jacobian(softmax, z).shape = {jac.shape}")
    check("mg.jacobian vs diag(s) - outer(s, s)", jac, np.diag(s) - np.outer(s, s))
    check("the question's softmax_grad(s), one row", softmax_grad(s), jac)
    check("J is symmetric", jac, jac.T)
    check("each row of J sums to 0 (softmax sums to 1)", jac.sum(axis=1), np.zeros(5))


def batch(rng: np.random.Generator) -> None:
    n, k = 10, 2  # 10 CartPole states x 2 actions: the question's (20,20) matrix
    section(f"2. A batch of N={n} rows, K={k}: an (N,K,N,K) block-diagonal Jacobian")
    zb = rng.normal(size=(n, k))
    sb = softmax_np(zb)
    jac = mg.jacobian(lambda t: t.softmax(axis=-1), zb)  # d S[n,i] / d Z[m,j]
    print(f"  mg.jacobian(softmax, zb).shape = {jac.shape}   (output row n depends on input row n "
          f"only)")
    blocks = np.stack([jac[i, :, i, :] for i in range(n)])
    check("diagonal blocks J[n,:,n,:] = diag(s_n) - s_n s_n^T", blocks,
          np.stack([np.diag(s) - np.outer(s, s) for s in sb]))
    off = jac.copy()
    for i in range(n):
        off[i, :, i, :] = 0
    check("off-diagonal blocks J[n,:,m,:], n != m, are all 0", off, np.zeros_like(off))

    wrong = softmax_grad(sb)  # diagflat of the flattened batch: what the question computed
    true_flat = jac.reshape(n * k, n * k)
    print(f"  softmax_grad(S) on the batch has shape {wrong.shape}: it treats the {n * k} "
          f"probabilities as ONE softmax")
    mixed = np.abs(wrong - true_flat) > 1e-12
    print(f"  it differs from the true (flattened) Jacobian in {int(mixed.sum())} of "
          f"{mixed.size} entries, e.g. d S[0,0]/d Z[1,0]: true {true_flat[0, k]:+.4f}, "
          f"softmax_grad {wrong[0, k]:+.4f} (rows mixed)")
    db = max(np.abs(wrong[i * k:(i + 1) * k, i * k:(i + 1) * k] - blocks[i]).max()
             for i in range(n))
    print(f"  its diagonal blocks are right (max |diff| {db:.1e}); its off-diagonal blocks are "
          f"-s_n s_m^T instead of 0")
    g = rng.normal(size=(n, k))
    try:
        g @ wrong  # the question's "l2_error.dot(softmax_grad(l2))": backprop breaks here
    except ValueError as e:
        print(f"  upstream (N,K) @ softmax_grad(S): ValueError: {e}")


def vjp_rows(rng: np.random.Generator) -> None:
    n, k = 6, 4
    section("3. The VJP: s * (g - (g*s).sum(-1, keepdims=True)) equals J^T g row by row")
    zb, g = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    sb = softmax_np(zb)
    out, vjp_fn = mg.vjp(lambda t: t.softmax(axis=-1), zb)
    (engine,) = vjp_fn(g)  # minigrad's backward: the one-line formula from ops.py
    jac = mg.jacobian(lambda t: t.softmax(axis=-1), zb)  # (N,K,N,K)
    full = np.einsum("nimj,ni->mj", jac, g)  # J^T g with the whole batch Jacobian
    rowwise = np.stack([(np.diag(s) - np.outer(s, s)).T @ gr for s, gr in zip(sb, g)])
    formula = sb * (g - (g * sb).sum(axis=-1, keepdims=True))
    check("engine VJP vs (N,K,N,K) Jacobian^T g", engine.numpy(), full)
    check("engine VJP vs per-row J_n^T g_n", engine.numpy(), rowwise)
    check("engine VJP vs s * (g - <g, s>)", engine.numpy(), formula)
    print("  J is symmetric, so J^T g = J g = s*g - s (s.g): O(K) per row, no K x K matrix")


# ---------------------------------------------------------------------------------------------
def _measure(fn: object, repeats: int) -> tuple[float, int]:
    """Best wall time of fn() and its peak traced memory above what was live before."""
    best = float("inf")
    peak = 0
    for _ in range(repeats):
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
        peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
        tracemalloc.stop()
    return best, peak


def cost(rng: np.random.Generator, n: int, k: int, jac_rows: int) -> None:
    section(f"4. Cost at N={n}, K={k}: VJP (full size) vs explicit Jacobian ({jac_rows} rows)")
    zb = rng.normal(size=(n, k))
    upstream = rng.normal(size=(n, k))
    act = zb.nbytes

    def vjp_run() -> None:
        z = mg.Tensor(zb, requires_grad=True)
        z.softmax(axis=-1).backward(upstream)  # forward + minigrad's VJP
        assert z.grad is not None

    t_vjp, m_vjp = _measure(vjp_run, 3)
    z = mg.Tensor(zb, requires_grad=True)
    z.softmax(axis=-1).backward(upstream)
    z_few, g_few = zb[:jac_rows], upstream[:jac_rows]

    def jac_run() -> np.ndarray:
        sb = softmax_np(z_few)
        jac = -sb[:, :, None] * sb[:, None, :]  # per-row (K,K) blocks: (rows, K, K)
        jac[:, np.arange(k), np.arange(k)] += sb  # diag(s) - s s^T
        return np.matmul(g_few[:, None, :], jac)[:, 0, :]  # g^T J, row by row

    t_jac, m_jac = _measure(jac_run, 2)
    assert z.grad is not None  # filled by z.softmax(...).backward(upstream) above
    check(f"explicit J^T g on {jac_rows} rows vs the engine's VJP", jac_run(),
          z.grad[:jac_rows], 1e-12)
    scale = n / jac_rows
    need = n * k * k * 8
    rows = [(f"VJP, all {n} rows (measured)", t_vjp, m_vjp,
             f"({m_vjp / act:.1f}x one activation)"),
            (f"Jacobian, {jac_rows} rows (measured)", t_jac, m_jac, ""),
            (f"Jacobian, {n} rows (x{scale:.0f}, extrapolated)", t_jac * scale, need,
             "(N*K*K*8 bytes)")]
    print(f"  one (N,K) float64 activation = {fmt_bytes(act)}")
    print(f"  {'':<40}{'time':>10}{'peak memory':>14}")
    for label, t, m, note in rows:
        print(f"  {label:<40}{fmt_time(t):>10}{fmt_bytes(m):>14}  {note}".rstrip())
    print(f"  the whole-batch (N,K,N,K) Jacobian would be N*K*N*K*8 bytes = "
          f"{fmt_bytes(n * k * n * k * 8)}, almost all zeros")
    print(f"  the VJP is {t_jac * scale / t_vjp:.0f}x faster and needs "
          f"{need / max(m_vjp, 1):.0f}x less memory than the per-row Jacobians")
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        print(f"  this machine has {fmt_bytes(ram)} of RAM: the explicit Jacobians "
              f"{'would not fit' if need > ram else 'fit'}")
    except (ValueError, OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------------------------
def log_likelihood(rng: np.random.Generator) -> None:
    n, k = 8, 2
    section("5. The log-likelihood's gradient w.r.t. the logits is onehot(a) - softmax(z)")
    zb = rng.normal(size=(n, k))
    a = rng.integers(0, k, size=n)
    onehot = np.eye(k)[a]
    sb = softmax_np(zb)

    def loglik(z: mg.Tensor) -> mg.Tensor:
        return z.log_softmax(axis=-1)[np.arange(n), a].sum()

    dz = mg.grad(loglik)(zb).numpy()
    check("mg.grad(sum log softmax(z)[a]) vs onehot(a) - softmax(z)", dz, onehot - sb)
    # The question's program: its `y - l2` (onehot - probs) already was this gradient; it then
    # multiplied by softmax's Jacobian again, i.e. applied the chain rule through softmax twice.
    twice = np.stack([(np.diag(s) - np.outer(s, s)) @ e for s, e in zip(sb, onehot - sb)])
    err = np.abs(twice - dz).max()
    print(f"  (onehot - s) times softmax's Jacobian again (per row, shapes fixed): max |diff| = "
          f"{err:.2f} from the true gradient, wrong")
    print(f"  row 0: true {np.round(dz[0], 4)}, chain rule applied twice {np.round(twice[0], 4)}")


def reinforce_weighting(rng: np.random.Generator) -> None:
    section("6. REINFORCE weights each row by its return")
    n, k = 6, 2
    zb = rng.normal(size=(n, k))
    a = rng.integers(0, k, size=n)
    returns = rng.normal(size=n) * 10
    onehot = np.eye(k)[a]

    def objective(z: mg.Tensor) -> mg.Tensor:  # sum_t G_t log pi(a_t | s_t)
        return (z.log_softmax(axis=-1)[np.arange(n), a] * returns).sum()

    check("mg.grad(sum G_t log pi(a_t)) vs G_t * (onehot - s), row by row",
          mg.grad(objective)(zb).numpy(), returns[:, None] * (onehot - softmax_np(zb)))
    # Without the weights the expected update is zero: E_a[grad log pi(a)] = sum_a pi(a) grad
    # log pi(a) = grad sum_a pi(a) = 0. The program only pushed up whatever it happened to do.
    s = softmax_np(rng.normal(size=k))
    draws = rng.choice(k, size=200_000, p=s)
    score = np.eye(k)[draws] - s
    print(f"  unweighted: mean over 200,000 sampled actions of onehot(a) - s = "
          f"{np.round(score.mean(axis=0), 4)} (0 in expectation: no signal)")
    reward = (draws == 1).astype(float)  # action 1 is the good one
    print(f"  weighted by a return that favours action 1: mean of r * (onehot(a) - s) = "
          f"{np.round((reward[:, None] * score).mean(axis=0), 4)} (raises action 1's logit)")


def in_place(rng: np.random.Generator) -> None:
    section("7. In-place relu / softmax on saved activations: refused")
    x = rng.normal(size=(3, 4))
    w1_np, w2_np = rng.normal(size=(4, 5)), rng.normal(size=(5, 2))

    # Hand-written NumPy: the backward pass reads `h` and `p` later, so an in-place edit of either
    # silently changes the gradient.
    h = np.maximum(x @ w1_np, 0)
    cache = {"h": h}
    p = softmax_np(h @ w2_np)
    dlogits = p  # the classic "dlogits = probs; dlogits[range, a] -= 1" ...
    dlogits[np.arange(3), 0] -= 1  # ... just rewrote p: the saved probabilities are gone
    print(f"  NumPy: after `dlogits = p; dlogits[range, a] -= 1`, p's rows sum to "
          f"{np.round(p.sum(axis=1), 3)} (were 1)")
    cache["h"] *= 0.5  # any later in-place op on h changes what the weight gradient will read
    print("  NumPy: `h *= 0.5` on a cached activation also changes W2's gradient silently")

    xt = mg.tensor(x)
    w1, w2 = mg.tensor(w1_np, requires_grad=True), mg.tensor(w2_np, requires_grad=True)
    ht = (xt @ w1).relu()  # matmul with w2 saves h for W2's gradient
    pt = (ht @ w2).softmax(axis=-1)  # softmax's VJP reads its output p
    loss = pt[np.arange(3), 0].log().sum()
    for what, write in (("p.data[range, a] -= 1", lambda: pt.data.__setitem__(
                            (np.arange(3), 0), pt.data[np.arange(3), 0] - 1)),
                        ("np.maximum(h.data, 0, out=h.data)  (in-place relu)",
                         lambda: np.maximum(ht.data, 0, out=ht.data)),
                        ("h.data *= 0.5", lambda: ht.data.__imul__(0.5))):
        try:
            write()
            print(f"  minigrad: {what}: accepted (unexpected!)")
        except ValueError as e:
            print(f"  minigrad: {what}: ValueError: {e}")
    loss.backward()
    assert w2.grad is not None
    w2.data -= 0.1 * w2.grad  # the tape is freed: parameters are writeable again
    h_copy = np.array(ht)  # an op's output stays read-only for good; a copy is yours to change
    h_copy *= 0.5
    print("  after loss.backward() frees the tape, parameters are writeable again (an op's "
          "output stays read-only: np.array(t) gives a copy you may change)")


class Parser(argparse.ArgumentParser):
    """A mistake on the command line ends in one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="softmax_jacobian.py",
                description="The softmax Jacobian, and why backprop never needs it: the "
                            "runnable answer to 'my softmax derivative gives a (20,20) matrix "
                            "and backprop breaks'.")
    ap.add_argument("--small", action="store_true",
                    help="small sizes for section 4 (N=512, K=100): a smoke test")
    ap.add_argument("--seed", type=seed, default=0,
                    help="seeds the random inputs (default %(default)s)")
    args = ap.parse_args(argv)
    try:
        sections(np.random.default_rng(args.seed), args.small)
    except KeyboardInterrupt:
        print("softmax_jacobian.py: interrupted", file=sys.stderr)
        return 130
    return 0


def sections(rng: np.random.Generator, small: bool) -> None:
    one_row(rng)
    batch(rng)
    vjp_rows(rng)
    if small:
        cost(rng, 512, 100, 32)
    else:
        cost(rng, 4096, 1000, 32)
    log_likelihood(rng)
    reinforce_weighting(rng)
    in_place(rng)
    print("\nSo: softmax_grad is right for one row only; backprop needs s*(g - <g,s>) row by row, "
          "and for\nREINFORCE simply G_t * (onehot(a_t) - softmax(z_t)). No Jacobian anywhere.")


if __name__ == "__main__":
    sys.exit(main())
