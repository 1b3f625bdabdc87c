"""Workloads W0–W5, W7 and W8, each written several ways that compute the same thing.

- **numpy**: the floor. A hand-written forward and backward, the straightforward code a careful
  person writes (in place where that is natural, no wasted work, no tricks beyond that).
- **minigrad**: the public API, as a user writes it (`mg.nn` when it imports, else raw Tensors).
- **minigrad-compiled**: the same user code as a plain function of its parameters, wrapped in
  `mg.compile(mg.value_and_grad(...))`: one generated program for the forward and backward.
- **torch**: PyTorch CPU, as a user writes it (`torch.nn`, `torch.log_softmax`, `backward`).
- **autograd**: HIPS autograd, when it imports.
- **bare** (W0–W3): the least an eager NumPy tape can do (`benchmarks/bare_tape.py`): the same
  ops, one closure each, no checks and no in-place safety. A measuring stick, not a peer.

Each implementation is a factory returning an `Impl`: `step()` runs one forward + backward
(what is timed) and returns the gradients; `grads()` turns one step's result into ndarrays in
a common layout, so `--check` can assert that all implementations agree.

Every step starts from the same parameters and data, resets gradients the way a user does
(`zero_grad`, `x.grad = None`), wraps new inputs when the framework needs that (`mg.Tensor(obs)`,
`torch.from_numpy(obs)`), and computes the loss value as well as the gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import minigrad as mg
from benchmarks import bare_tape as bt
from benchmarks.harness import autograd_module, torch_module

IMPLS = ("numpy", "minigrad", "minigrad-compiled", "torch", "autograd", "bare")


@dataclass
class Impl:
    step: Callable[[], Any]
    grads: Callable[[Any], list[np.ndarray]]  # step()'s result -> gradients as ndarrays


@dataclass
class Variant:
    name: str                      # a row of the table: "W3-float32"
    workload: str                  # "W3"
    what: str                      # one line for the table
    factories: dict[str, Callable[[], Impl]]
    ops: int | None = None         # W0, W5: ops per step, for the per-op column
    activation_bytes: int | None = None  # W4: one (4096, 1000) array, the unit of peak memory
    measure_peak: bool = False
    rtol: float = 1e-7             # --check tolerance (relative to the largest |gradient|)
    notes: list[str] = field(default_factory=list)


def minigrad_nn() -> Any:
    """`minigrad.nn`, or None until it exists."""
    try:
        import minigrad.nn as nn
    except ImportError:
        return None
    return nn


def _numpy_grads(result: Any) -> list[np.ndarray]:
    return [np.asarray(g) for g in result]


def _torch_grads(result: Any) -> list[np.ndarray]:
    return [g.detach().numpy() for g in result]


# =============================================================================================
# W0: per-op overhead, ((x*2+1).tanh()).sum() on a (4,) float64 array
# =============================================================================================
def w0(quick: bool) -> list[Variant]:
    x0 = np.array([0.1, -0.2, 0.3, -0.4])

    def numpy_impl() -> Impl:
        x = x0.copy()

        def step() -> Any:
            y = np.tanh(x * 2 + 1)
            loss = y.sum()
            gx = 1 - y * y
            gx *= 2
            return loss, gx
        return Impl(step, lambda r: [r[1]])

    def minigrad_impl() -> Impl:
        x = mg.tensor(x0, requires_grad=True)

        def step() -> Any:
            x.grad = None
            loss = ((x * 2 + 1).tanh()).sum()
            loss.backward()
            return x.grad
        return Impl(step, lambda r: [r])

    def torch_impl() -> Impl:
        torch = torch_module()
        x = torch.tensor(x0, requires_grad=True)

        def step() -> Any:
            x.grad = None
            loss = ((x * 2 + 1).tanh()).sum()
            loss.backward()
            return x.grad
        return Impl(step, lambda r: [r.numpy()])

    def autograd_impl() -> Impl:
        ag = autograd_module()
        anp = ag.numpy
        grad_fn = ag.grad(lambda x: anp.sum(anp.tanh(x * 2 + 1)))
        x = x0.copy()
        return Impl(lambda: grad_fn(x), lambda r: [r])

    def bare_impl() -> Impl:
        x = bt.Node(x0.copy())

        def step() -> Any:
            x.grad = None
            loss = bt.total(bt.tanh(bt.shift(bt.scale(x, 2), 1)))
            bt.backward(loss)
            return x.grad
        return Impl(step, lambda r: [r])

    def compiled_impl() -> Impl:
        vg = mg.compile(mg.value_and_grad(lambda x: ((x * 2 + 1).tanh()).sum()))
        x = mg.tensor(x0)
        return Impl(lambda: vg(x)[1], lambda r: [r.numpy()])

    return [Variant("W0", "W0", "per-op overhead: ((x*2+1).tanh()).sum(), x (4,) float64",
                    {"numpy": numpy_impl, "minigrad": minigrad_impl,
                     "minigrad-compiled": compiled_impl, "torch": torch_impl,
                     "autograd": autograd_impl, "bare": bare_impl}, ops=4, rtol=1e-12)]


# =============================================================================================
# W1–W3: Linear-ReLU-Linear-log_softmax with a loss on log-probabilities
# =============================================================================================
def _mlp_params(sizes: tuple[int, int, int], dtype: Any, seed: int) -> list[np.ndarray]:
    """[W1 (h, in), b1, W2 (out, h), b2]: PyTorch's layout and default init."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(fan_in)
        params.append(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(dtype))
        params.append(rng.uniform(-bound, bound, fan_out).astype(dtype))
    return params


def numpy_mlp_step(x: np.ndarray, params: list[np.ndarray], index: tuple[Any, Any],
                   coef: Any) -> tuple[Any, list[np.ndarray]]:
    """Hand-written forward + backward of loss = −Σ coef · log_softmax(MLP(x))[index].

    `index` picks one log-probability per row (rows, targets); `coef` weighs them (the
    return / N for REINFORCE, 1 / N for cross-entropy). dloss/dlogits = coef · (softmax − onehot).
    """
    w1, b1, w2, b2 = params
    h = x @ w1.T
    h += b1
    np.maximum(h, 0, out=h)
    z = h @ w2.T
    z += b2
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    s = p.sum(axis=1, keepdims=True)
    loss = -np.sum(coef * (z[index] - np.log(s[index[0], 0])))
    p /= s
    dz = p  # softmax, reused in place as dloss/dlogits
    dz *= coef[:, None] if np.ndim(coef) else coef
    dz[index] -= coef
    gw2 = dz.T @ h
    gb2 = dz.sum(axis=0)
    dh = dz @ w2
    dh *= h > 0
    gw1 = dh.T @ x
    gb1 = dh.sum(axis=0)
    return loss, [gw1, gb1, gw2, gb2]


def _mlp_variant(name: str, workload: str, what: str, sizes: tuple[int, int, int], dtype: Any,
                 x: np.ndarray, targets: np.ndarray, weights: np.ndarray | None,
                 kind: str) -> Variant:
    """kind: "reinforce1" (batch 1: −logp[0, a]·G), "reinforce" (−(logp[rows, a]·G).mean()),
    or "xent" (mean cross-entropy of integer targets)."""
    params = _mlp_params(sizes, dtype, seed=1)
    n = x.shape[0]
    rows = np.arange(n)
    a0 = int(targets[0])
    g0 = float(weights[0]) if weights is not None else 1.0
    notes: list[str] = []

    def numpy_impl() -> Impl:
        ps = [p.copy() for p in params]
        if kind == "reinforce1":
            def step() -> Any:
                return numpy_mlp_step(x, ps, (0, a0), g0)
        elif kind == "reinforce":
            def step() -> Any:
                return numpy_mlp_step(x, ps, (rows, targets), weights / n)
        else:
            def step() -> Any:
                return numpy_mlp_step(x, ps, (rows, targets), 1 / n)
        return Impl(step, lambda r: r[1])

    def minigrad_impl() -> Impl:
        nn = minigrad_nn()
        if nn is not None:
            # The fused layer where the engine has it (explicit since the Sequential stopped
            # fusing Linear + ReLU behind the user's back); before that, Linear and ReLU.
            if hasattr(nn, "LinearReLU"):
                model = nn.Sequential(nn.LinearReLU(sizes[0], sizes[1], dtype=dtype),
                                      nn.Linear(sizes[1], sizes[2], dtype=dtype))
                keys = ("0.weight", "0.bias", "1.weight", "1.bias")
            else:
                model = nn.Sequential(nn.Linear(sizes[0], sizes[1], dtype=dtype), nn.ReLU(),
                                      nn.Linear(sizes[1], sizes[2], dtype=dtype))
                keys = ("0.weight", "0.bias", "2.weight", "2.bias")
            model.load_state_dict(dict(zip(keys, params)))
            plist = list(model.parameters())
            zero_grad = model.zero_grad
            forward = model
            layout = lambda gs: list(gs)  # noqa: E731
            cross_entropy = getattr(getattr(nn, "functional", None), "cross_entropy", None)
        else:
            # Until minigrad.nn lands: raw Tensors, weights stored (in, out) so no transpose
            w1, b1, w2, b2 = (mg.tensor(p.T if p.ndim == 2 else p, requires_grad=True)
                              for p in params)
            plist = [w1, b1, w2, b2]

            def zero_grad() -> None:
                for p in plist:
                    p.grad = None

            def forward(t: Any) -> Any:
                return (t @ w1 + b1).relu() @ w2 + b2
            layout = lambda gs: [gs[0].T, gs[1], gs[2].T, gs[3]]  # noqa: E731
            cross_entropy = None

        if kind == "reinforce1":
            def loss_fn(t: Any) -> Any:
                logp = forward(t).log_softmax(axis=-1)
                return -(logp[0, a0] * g0)
        elif kind == "reinforce":
            def loss_fn(t: Any) -> Any:
                logp = forward(t).log_softmax(axis=-1)
                return -(logp[rows, targets] * weights).mean()
        elif cross_entropy is not None:
            def loss_fn(t: Any) -> Any:
                return cross_entropy(forward(t), targets)
        else:
            def loss_fn(t: Any) -> Any:
                return -forward(t).log_softmax(axis=-1)[rows, targets].mean()

        def step() -> Any:
            zero_grad()
            loss = loss_fn(mg.Tensor(x))
            loss.backward()
            return [p.grad for p in plist]
        return Impl(step, layout)

    def torch_impl() -> Impl:
        torch = torch_module()
        tdtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
        model = torch.nn.Sequential(torch.nn.Linear(sizes[0], sizes[1], dtype=tdtype),
                                    torch.nn.ReLU(),
                                    torch.nn.Linear(sizes[1], sizes[2], dtype=tdtype))
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in
                               zip(("0.weight", "0.bias", "2.weight", "2.bias"), params)})
        plist = list(model.parameters())
        trows = torch.from_numpy(rows)
        ttargets = torch.from_numpy(targets.astype(np.int64))
        if kind == "reinforce1":
            def loss_fn(t: Any) -> Any:
                logp = torch.log_softmax(model(t), dim=-1)
                return -(logp[0, a0] * g0)
        elif kind == "reinforce":
            def loss_fn(t: Any) -> Any:
                logp = torch.log_softmax(model(t), dim=-1)
                return -(logp[trows, ttargets] * torch.from_numpy(weights)).mean()
        else:
            def loss_fn(t: Any) -> Any:
                return torch.nn.functional.cross_entropy(model(t), ttargets)

        def step() -> Any:
            model.zero_grad()
            loss = loss_fn(torch.from_numpy(x))
            loss.backward()
            return [p.grad for p in plist]
        return Impl(step, _torch_grads)

    def autograd_impl() -> Impl:
        ag = autograd_module()
        anp = ag.numpy

        def logp_fn(ps: list[Any], t: Any) -> Any:
            w1, b1, w2, b2 = ps
            z = anp.dot(anp.maximum(anp.dot(t, w1.T) + b1, 0), w2.T) + b2
            z = z - anp.max(z, axis=1, keepdims=True)
            return z - anp.log(anp.sum(anp.exp(z), axis=1, keepdims=True))

        if kind == "reinforce1":
            def loss_fn(ps: list[Any], t: Any) -> Any:
                return -(logp_fn(ps, t)[0, a0] * g0)
        elif kind == "reinforce":
            def loss_fn(ps: list[Any], t: Any) -> Any:
                return -anp.mean(logp_fn(ps, t)[rows, targets] * weights)
        else:
            def loss_fn(ps: list[Any], t: Any) -> Any:
                return -anp.mean(logp_fn(ps, t)[rows, targets])
        grad_fn = ag.grad(loss_fn)
        ps = [p.copy() for p in params]
        return Impl(lambda: grad_fn(ps, x), _numpy_grads)

    def bare_impl() -> Impl:
        w1, b1, w2, b2 = ps = [bt.Node(p.copy()) for p in params]

        def step() -> Any:
            for p in ps:
                p.grad = None
            h = bt.relu(bt.linear(bt.Node(x), w1, b1))
            logp = bt.log_softmax(bt.linear(h, w2, b2))
            if kind == "reinforce1":
                loss = bt.neg(bt.scale(bt.pick(logp, (0, a0)), g0))
            elif kind == "reinforce":
                loss = bt.neg(bt.mean(bt.scale(bt.pick(logp, (rows, targets)), weights)))
            else:
                loss = bt.neg(bt.mean(bt.pick(logp, (rows, targets))))
            bt.backward(loss)
            return [p.grad for p in ps]
        return Impl(step, _numpy_grads)

    def compiled_impl() -> Impl:
        if kind == "reinforce1":
            def loss_fn(w1: Any, b1: Any, w2: Any, b2: Any, t: Any) -> Any:
                logp = ((t @ w1.T + b1).relu() @ w2.T + b2).log_softmax(axis=-1)
                return -(logp[0, a0] * g0)
        elif kind == "reinforce":
            def loss_fn(w1: Any, b1: Any, w2: Any, b2: Any, t: Any) -> Any:
                logp = ((t @ w1.T + b1).relu() @ w2.T + b2).log_softmax(axis=-1)
                return -(logp[rows, targets] * weights).mean()
        else:
            def loss_fn(w1: Any, b1: Any, w2: Any, b2: Any, t: Any) -> Any:
                logits = (t @ w1.T + b1).relu() @ w2.T + b2
                return -logits.log_softmax(axis=-1)[rows, targets].mean()
        vg = mg.compile(mg.value_and_grad(loss_fn, argnums=(0, 1, 2, 3)))
        ps = [mg.tensor(p) for p in params]
        return Impl(lambda: vg(*ps, x)[1], lambda gs: [g.numpy() for g in gs])

    if minigrad_nn() is None:
        notes.append("minigrad: raw Tensors (minigrad.nn not available)")
    rtol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-9
    return Variant(name, workload, what, {"numpy": numpy_impl, "minigrad": minigrad_impl,
                                          "minigrad-compiled": compiled_impl,
                                          "torch": torch_impl, "autograd": autograd_impl,
                                          "bare": bare_impl},
                   rtol=rtol, notes=notes)


def w1(quick: bool) -> list[Variant]:
    from benchmarks.train import w1_train  # W1-train, the same net trained with Adam

    rng = np.random.default_rng(10)
    x = rng.normal(size=(1, 4))
    return [_mlp_variant("W1", "W1", "policy step: 4-16-2, batch 1, −logp[a]·G", (4, 16, 2),
                         np.float64, x, np.array([1]), np.array([3.7]), "reinforce1"),
            *w1_train(quick)]


def w2(quick: bool) -> list[Variant]:
    rng = np.random.default_rng(20)
    n = 500
    x = rng.normal(size=(n, 4))
    actions = rng.integers(0, 2, n)
    returns = rng.normal(size=n)
    return [_mlp_variant("W2", "W2", "episode batch: 4-128-2, batch 500, "
                         "−(logp[range, a]·G).mean()", (4, 128, 2), np.float64, x, actions,
                         returns, "reinforce")]


def w3(quick: bool) -> list[Variant]:
    out = []
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(30)
        x = rng.normal(size=(128, 784)).astype(dtype)
        y = rng.integers(0, 10, 128)
        name = np.dtype(dtype).name
        out.append(_mlp_variant(f"W3-{name}", "W3", f"MLP 784-256-10, batch 128, ReLU, "
                                f"cross-entropy, {name}", (784, 256, 10), dtype, x, y, None,
                                "xent"))
    return out


# =============================================================================================
# W4: softmax forward + VJP on (4096, 1000) float64: time and peak memory
# =============================================================================================
def w4(quick: bool) -> list[Variant]:
    rng = np.random.default_rng(40)
    x = rng.normal(size=(4096, 1000))
    g = rng.normal(size=(4096, 1000))

    def numpy_impl() -> Impl:
        def step() -> Any:
            y = x - x.max(axis=1, keepdims=True)
            np.exp(y, out=y)
            y /= y.sum(axis=1, keepdims=True)
            gx = g * y
            s = gx.sum(axis=1, keepdims=True)
            np.subtract(g, s, out=gx)
            gx *= y
            return gx
        return Impl(step, lambda r: [r])

    def minigrad_impl() -> Impl:
        xt = mg.Tensor(x, requires_grad=True)

        def step() -> Any:
            xt.grad = None
            y = xt.softmax(axis=-1)
            y.backward(g)
            return xt.grad
        return Impl(step, lambda r: [r])

    def torch_impl() -> Impl:
        torch = torch_module()
        xt = torch.from_numpy(x).requires_grad_()
        gt = torch.from_numpy(g)

        def step() -> Any:
            xt.grad = None
            y = torch.softmax(xt, dim=-1)
            y.backward(gt)
            return xt.grad
        return Impl(step, lambda r: [r.numpy()])

    def autograd_impl() -> Impl:
        ag = autograd_module()
        anp = ag.numpy

        def softmax(t: Any) -> Any:
            e = anp.exp(t - anp.max(t, axis=1, keepdims=True))
            return e / anp.sum(e, axis=1, keepdims=True)

        def step() -> Any:
            vjp, _ = ag.make_vjp(softmax)(x)
            return vjp(g)
        return Impl(step, lambda r: [r])

    def compiled_impl() -> Impl:
        # The VJP of softmax at g is the gradient of ⟨softmax(x), g⟩: ordinary user code.
        grad = mg.compile(mg.grad(lambda t, u: (t.softmax(axis=-1) * u).sum()))
        return Impl(lambda: grad(x, g), lambda r: [r.numpy()])

    return [Variant("W4", "W4", "softmax forward + VJP, (4096, 1000) float64",
                    {"numpy": numpy_impl, "minigrad": minigrad_impl,
                     "minigrad-compiled": compiled_impl, "torch": torch_impl,
                     "autograd": autograd_impl},
                    activation_bytes=x.nbytes, measure_peak=True, rtol=1e-10)]


# =============================================================================================
# W5: a deep chain of elementwise ops on a (16,) vector
# =============================================================================================
# The chain repeats h*2, h+1, h*0.5, h−0.5: values stay exactly where they started and the
# gradient is exactly 1, so no overflow, underflow or subnormal arithmetic skews the timing.
def w5(quick: bool) -> list[Variant]:
    x0 = np.random.default_rng(50).normal(size=16)
    return [_chain_variant(x0, n) for n in ((1_000, 10_000) if quick else (10_000, 100_000))]


def _chain_variant(x0: np.ndarray, n: int) -> Variant:
    reps = n // 4

    def numpy_impl() -> Impl:
        def step() -> Any:
            h = x0
            for _ in range(reps):
                h = h * 2.0
                h = h + 1.0
                h = h * 0.5
                h = h - 0.5
            loss = h.sum()
            g = np.ones_like(h)
            for _ in range(reps):  # reversed: −0.5 and +1 pass g through unchanged
                g = g * 0.5
                g = g * 2.0
            return loss, g
        return Impl(step, lambda r: [r[1]])

    def chain(x: Any) -> Any:
        h = x
        for _ in range(reps):
            h = h * 2.0
            h = h + 1.0
            h = h * 0.5
            h = h - 0.5
        return h

    def minigrad_impl() -> Impl:
        x = mg.tensor(x0, requires_grad=True)

        def step() -> Any:
            x.grad = None
            chain(x).sum().backward()
            return x.grad
        return Impl(step, lambda r: [r])

    def torch_impl() -> Impl:
        torch = torch_module()
        x = torch.tensor(x0, requires_grad=True)

        def step() -> Any:
            x.grad = None
            chain(x).sum().backward()
            return x.grad
        return Impl(step, lambda r: [r.numpy()])

    def autograd_impl() -> Impl:
        ag = autograd_module()
        grad_fn = ag.grad(lambda x: ag.numpy.sum(chain(x)))
        return Impl(lambda: grad_fn(x0), lambda r: [r])

    label = f"{n // 1000}k"
    return Variant(f"W5-{label}", "W5", f"deep chain: {n:,} elementwise ops on (16,) float64",
                   dict(numpy=numpy_impl, minigrad=minigrad_impl, torch=torch_impl,
                        autograd=autograd_impl), ops=n, rtol=1e-12)


# =============================================================================================
# W7: what detect_anomaly costs, outside the block and inside it
# =============================================================================================
def _flag_read(n: int) -> str:
    """What reading the anomaly flag costs (this thread's switch in minigrad.modes; a global in
    older engines), or why it was not timed: an engine internal, so that `--against` still runs
    W7's timed rows on an engine without it."""
    import importlib
    import timeit

    for module, name, read in (("minigrad.modes", "THREAD", "f.modes.anomaly"),
                               ("minigrad.modes", "MODES", "f.anomaly"),
                               ("minigrad.tensor", "STATE", "f.anomaly")):
        try:
            flags = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        ns = min(timeit.repeat(read, globals={"f": flags}, number=n, repeat=5)) / n
        return f"{ns * 1e9:.0f} ns"
    return "not timed: this engine has no anomaly flag where W7 looks for it"


def w7(quick: bool) -> list[Variant]:
    """W0's step twice: as is, and inside mg.detect_anomaly(). Outside the block an op pays one
    flag read (the anomaly switch), timed here on its own; inside, every op records its
    creating line and checks its output and VJP results for NaN/Inf."""
    x0 = np.array([0.1, -0.2, 0.3, -0.4])
    flag_read = _flag_read(200_000 if not quick else 2_000)
    variants = []
    for inside in (False, True):
        def numpy_impl() -> Impl:
            x = x0.copy()

            def step() -> Any:
                y = np.tanh(x * 2 + 1)
                gx = 1 - y * y
                gx *= 2
                return y.sum(), gx
            return Impl(step, lambda r: [r[1]])

        def minigrad_impl(inside: bool = inside) -> Impl:
            x = mg.tensor(x0, requires_grad=True)

            def plain() -> Any:
                x.grad = None
                ((x * 2 + 1).tanh()).sum().backward()
                return x.grad

            def checked() -> Any:
                with mg.detect_anomaly():
                    return plain()
            return Impl(checked if inside else plain, lambda r: [r])

        name = "W7-inside" if inside else "W7-outside"
        what = ("W0's step inside mg.detect_anomaly()" if inside else
                f"W0's step, no detect_anomaly (an op's cost of the off switch: one flag read, "
                f"{flag_read})")
        note = ("inside detect_anomaly()" if inside else
                f"off switch: one flag read per op, {flag_read}")
        variants.append(Variant(name, "W7", what, dict(numpy=numpy_impl, minigrad=minigrad_impl),
                                ops=4, rtol=1e-12, notes=[note]))
    return variants


# =============================================================================================
# W8: one epoch of examples/digits_cnn.py's network on the 8×8 digits
# =============================================================================================
# Conv2d(1, 16, 3, padding=1) → ReLU → MaxPool2d(2) → Conv2d(16, 32, 3, padding=1) → ReLU →
# MaxPool2d(2) → Flatten → Linear(128, 10), cross-entropy, Adam at 3e-3, batches of 32, float64.
# A step is one epoch from the same initial weights and a fresh Adam; `--check` compares the
# gradients of its first batch (the trained weights themselves are no test: where a gradient is
# about 0, Adam turns a difference in the last bit into a step of ±lr).
def _digits(quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """The training images (N, 1, 8, 8) in [0, 1] and labels: scikit-learn's digits (80% of
    them, as the example splits), or random images of that shape when it is not installed."""
    n = 256 if quick else 1437
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        rng = np.random.default_rng(80)
        return (rng.uniform(size=(n, 1, 8, 8)), rng.integers(0, 10, n),
                "random 8×8 images (scikit-learn not installed)")
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))[360:360 + n]
    return (d.images[order] / 16.0)[:, None], d.target[order].astype(np.int64), "digits"


def _cnn_params(seed: int) -> dict[str, np.ndarray]:
    """PyTorch's layout and default init (U(±1/√fan_in)), keyed as the Sequential's."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in (("0", (16, 1, 3, 3)), ("3", (32, 16, 3, 3)), ("7", (10, 128))):
        bound = 1 / np.sqrt(np.prod(shape[1:]))
        out[f"{key}.weight"] = rng.uniform(-bound, bound, shape)
        out[f"{key}.bias"] = rng.uniform(-bound, bound, shape[0])
    return out


def _numpy_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3×3, padding 1, on channels-last x (N, H, W, C): the output (N, H, W, O) and the im2col
    rows (N·H·W, 9·C), kept for the weight gradient."""
    n, h, wd, c = x.shape
    xp = np.zeros((n, h + 2, wd + 2, c))
    xp[:, 1:-1, 1:-1] = x
    s = xp.strides
    rows = np.lib.stride_tricks.as_strided(xp, (n, h, wd, 3, 3, c), s[:3] + s[1:]).reshape(
        n * h * wd, 9 * c)
    y = rows @ w.transpose(2, 3, 1, 0).reshape(9 * c, -1)
    y += b
    return y.reshape(n, h, wd, -1), rows


def _numpy_conv_dx(g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The input gradient of _numpy_conv: each window's share added back, offset by offset."""
    n, h, wd, o = g.shape
    c = w.shape[1]
    shares = (g.reshape(-1, o) @ w.transpose(0, 2, 3, 1).reshape(o, 9 * c)).reshape(
        n, h, wd, 9, c)
    dxp = np.zeros((n, h + 2, wd + 2, c))
    for k in range(9):
        dxp[:, k // 3:k // 3 + h, k % 3:k % 3 + wd] += shares[:, :, :, k]
    return dxp[:, 1:-1, 1:-1]


def _numpy_pool(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2×2 max pool of a (N, H, W, C): the pool and, as PyTorch, each window's first maximum
    (ties are common: a blank patch of a digit gives the same positive value everywhere)."""
    n, h, w, c = a.shape
    win = a.reshape(n, h // 2, 2, w // 2, 2, c)
    y = win.max(axis=(2, 4))
    first = np.zeros(win.shape, dtype=bool)
    free = np.ones(y.shape, dtype=bool)
    for p in (0, 1):
        for q in (0, 1):
            hit = (win[:, :, p, :, q] == y) & free
            first[:, :, p, :, q] = hit
            free ^= hit
    return y, first


def numpy_cnn_epoch(x: np.ndarray, labels: np.ndarray, params: dict[str, np.ndarray],
                    lr: float, batch: int) -> list[dict[str, np.ndarray]]:
    """One epoch of hand-written forward, backward and Adam (torch.optim.Adam's update);
    returns the first batch's gradients and the trained parameters."""
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    first: dict[str, np.ndarray] = {}
    for t, i in enumerate(range(0, len(labels), batch), start=1):
        xb, yb = x[i:i + batch].transpose(0, 2, 3, 1), labels[i:i + batch]
        nb = len(yb)
        a1, rows1 = _numpy_conv(xb, p["0.weight"], p["0.bias"])
        np.maximum(a1, 0, out=a1)
        h1, where1 = _numpy_pool(a1)
        a2, rows2 = _numpy_conv(h1, p["3.weight"], p["3.bias"])
        np.maximum(a2, 0, out=a2)
        h2, where2 = _numpy_pool(a2)
        flat = h2.transpose(0, 3, 1, 2).reshape(nb, -1)  # PyTorch's Flatten order: (C, H, W)
        z = flat @ p["7.weight"].T + p["7.bias"]
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        dz = e / e.sum(axis=1, keepdims=True)
        dz[np.arange(nb), yb] -= 1
        dz /= nb
        g = {"7.weight": dz.T @ flat, "7.bias": dz.sum(axis=0)}
        dh2 = (dz @ p["7.weight"]).reshape(nb, 32, 2, 2).transpose(0, 2, 3, 1)
        da2 = (where2 * dh2[:, :, None, :, None]).reshape(a2.shape) * (a2 > 0)
        g["3.weight"] = (da2.reshape(-1, 32).T @ rows2).reshape(32, 3, 3, 16).transpose(0, 3, 1, 2)
        g["3.bias"] = da2.reshape(-1, 32).sum(axis=0)
        dh1 = _numpy_conv_dx(da2, p["3.weight"])
        da1 = (where1 * dh1[:, :, None, :, None]).reshape(a1.shape) * (a1 > 0)
        g["0.weight"] = (da1.reshape(-1, 16).T @ rows1).reshape(16, 3, 3, 1).transpose(0, 3, 1, 2)
        g["0.bias"] = da1.reshape(-1, 16).sum(axis=0)
        first = first or g
        for k, gk in g.items():
            m[k] += 0.1 * (gk - m[k])
            v2[k] *= 0.999
            v2[k] += 0.001 * gk * gk
            denom = np.sqrt(v2[k]) / np.sqrt(1 - 0.999 ** t) + 1e-8
            p[k] -= lr / (1 - 0.9 ** t) * (m[k] / denom)
    return [first, p]


def w8(quick: bool) -> list[Variant]:
    x, labels, source = _digits(quick)
    params = _cnn_params(seed=8)
    keys = list(params)
    lr, batch = 3e-3, 32

    def numpy_impl() -> Impl:
        return Impl(lambda: numpy_cnn_epoch(x, labels, params, lr, batch),
                    lambda r: [r[0][k] for k in keys])

    def minigrad_impl() -> Impl:
        nn = mg.nn
        model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(128, 10))
        loss_fn = nn.functional.cross_entropy

        def step() -> Any:
            model.load_state_dict(params)
            opt = mg.optim.Adam(model.parameters(), lr=lr)
            first = None
            for i in range(0, len(labels), batch):
                loss = loss_fn(model(mg.Tensor(x[i:i + batch])), labels[i:i + batch])
                opt.zero_grad()
                loss.backward()
                first = first or [p.grad.copy() for p in model.parameters()]
                opt.step()
            return first, model.state_dict()
        return Impl(step, lambda r: r[0])

    def torch_impl() -> Impl:
        torch = torch_module()
        tnn = torch.nn
        model = tnn.Sequential(tnn.Conv2d(1, 16, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                               tnn.Conv2d(16, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                               tnn.Flatten(), tnn.Linear(128, 10)).double()
        init = {k: torch.from_numpy(v) for k, v in params.items()}
        tx, ty = torch.from_numpy(x), torch.from_numpy(labels)

        def step() -> Any:
            model.load_state_dict(init)
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            first = None
            for i in range(0, len(labels), batch):
                loss = tnn.functional.cross_entropy(model(tx[i:i + batch]), ty[i:i + batch])
                opt.zero_grad()
                loss.backward()
                first = first or [p.grad.clone() for p in model.parameters()]
                opt.step()
            return first, model.state_dict()
        return Impl(step, lambda r: [g.numpy() for g in r[0]])

    what = (f"digits CNN, one epoch ({len(labels)} images, batches of {batch}, Adam), "
            f"float64; {source}")
    return [Variant("W8", "W8", what, dict(numpy=numpy_impl, minigrad=minigrad_impl,
                                          torch=torch_impl), rtol=1e-7,
                    notes=["W8: a step is an epoch; --check compares its first batch's "
                           "gradients"])]


WORKLOADS: dict[str, Callable[[bool], list[Variant]]] = {
    "W0": w0, "W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W7": w7, "W8": w8,
}
