"""W1-train: W1's policy trained, one step = forward, backward and an Adam step.

The 4-16-2 ReLU policy of W1 (batch 1, loss −logp[a]·G) learns from a stream of eight fixed
(observation, action, return) samples, one per step in turn, with Adam at lr 0.02 (the CartPole
example's); the returns have both signs, so the weights wander without running off.

- **numpy**: the floor. The four parameters are views of ONE flat array, their gradients views
  of another; the backward writes into those views, and Adam updates the flat arrays with
  whole-array operations (torch.optim.Adam's update).
- **minigrad**: user code, `(x @ W1 + b1).relu() @ W2 + b2` on Tensors, `log_softmax`,
  `opt.zero_grad()`, `loss.backward()`, `opt.step()` with `mg.optim.Adam`.
- **minigrad-compiled**: the same loss as a plain function of the parameters, through
  `mg.compile(mg.value_and_grad(...))` called under `mg.no_grad()` (the parameters require
  grad, so otherwise the value and the gradients would be recorded for higher order); the
  gradients go to `.grad` and `opt.step()` runs.
- **torch**: the same lines on torch Tensors with `torch.optim.Adam`.

A step starts from where the previous one left the weights; `--check` compares one step from
the same initial weights and a fresh Adam: the gradients and the updated parameters.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import minigrad as mg
from benchmarks.harness import torch_module
from benchmarks.workloads import Impl, Variant, _mlp_params

LR, BETAS, EPS = 0.02, (0.9, 0.999), 1e-8
SIZES = (4, 16, 2)


def _samples() -> list[tuple[np.ndarray, int, float]]:
    rng = np.random.default_rng(11)
    return [(rng.normal(size=(1, 4)), int(rng.integers(0, 2)), float(rng.normal(scale=3.0)))
            for _ in range(8)]


class FlatAdamPolicy:
    """The hand-written floor: parameters and gradients as views of one flat array each."""

    def __init__(self, params: list[np.ndarray]) -> None:
        self.theta = np.concatenate([p.ravel() for p in params])  # W1 (16, 4), b1, W2 (2, 16), b2
        self.grad = np.zeros_like(self.theta)
        self.w1, self.b1, self.w2, self.b2 = self._views(self.theta, params)
        self.gw1, self.gb1, self.gw2, self.gb2 = self._views(self.grad, params)
        self.m = np.zeros_like(self.theta)
        self.v = np.zeros_like(self.theta)
        self.t = 0

    @staticmethod
    def _views(flat: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
        views, start = [], 0
        for p in like:
            views.append(flat[start:start + p.size].reshape(p.shape))
            start += p.size
        return views

    def step(self, x: np.ndarray, a: int, ret: float) -> float:
        # forward: h = relu(x W1ᵀ + b1), z = h W2ᵀ + b2, loss = −G · log_softmax(z)[a]
        h = x @ self.w1.T
        h += self.b1
        np.maximum(h, 0, out=h)
        z = h @ self.w2.T
        z += self.b2
        z -= z.max()
        e = np.exp(z)
        total = e.sum()
        loss = -ret * (z[0, a] - math.log(total))
        # backward: dloss/dz = G · (softmax − onehot(a)), written into the gradient's views
        dz = e / total
        dz *= ret
        dz[0, a] -= ret
        np.dot(dz.T, h, out=self.gw2)
        self.gb2[:] = dz[0]
        dh = dz @ self.w2
        dh *= h > 0
        np.dot(dh.T, x, out=self.gw1)
        self.gb1[:] = dh[0]
        # Adam on the flat arrays
        b1, b2 = BETAS
        self.t += 1
        g = self.grad
        self.m += (1 - b1) * (g - self.m)
        self.v *= b2
        self.v += (1 - b2) * (g * g)
        denom = np.sqrt(self.v) / math.sqrt(1 - b2 ** self.t) + EPS
        self.theta -= LR / (1 - b1 ** self.t) * (self.m / denom)
        return loss


def w1_train(quick: bool) -> list[Variant]:
    params = _mlp_params(SIZES, np.float64, seed=1)  # W1's initial weights
    samples = _samples()

    def numpy_impl() -> Impl:
        policy = FlatAdamPolicy(params)
        k = [0]

        def step() -> Any:
            x, a, ret = samples[k[0] % len(samples)]
            k[0] += 1
            policy.step(x, a, ret)
            return policy
        return Impl(step, lambda p: [a.copy() for a in (
            p.gw1, p.gb1, p.gw2, p.gb2, p.w1, p.b1, p.w2, p.b2)])

    def minigrad_impl() -> Impl:
        # weights stored (in, out), as one writes x @ W without a transpose
        w1, b1, w2, b2 = ps = [mg.tensor(p.T if p.ndim == 2 else p, requires_grad=True)
                               for p in params]
        opt = mg.optim.Adam(ps, lr=LR, betas=BETAS, eps=EPS)
        k = [0]

        def step() -> Any:
            x, a, ret = samples[k[0] % len(samples)]
            k[0] += 1
            opt.zero_grad()
            logp = ((mg.Tensor(x) @ w1 + b1).relu() @ w2 + b2).log_softmax(axis=-1)
            loss = -(logp[0, a] * ret)
            loss.backward()
            opt.step()
            return ps
        return Impl(step, lambda ps: _common_layout([p.grad for p in ps], [p.data for p in ps]))

    def compiled_impl() -> Impl:
        ps = [mg.tensor(p.T if p.ndim == 2 else p, requires_grad=True) for p in params]
        opt = mg.optim.Adam(ps, lr=LR, betas=BETAS, eps=EPS)

        def loss_fn(w1: Any, b1: Any, w2: Any, b2: Any, x: Any, a: int, ret: float) -> Any:
            logp = ((x @ w1 + b1).relu() @ w2 + b2).log_softmax(axis=-1)
            return -(logp[0, a] * ret)
        vg = mg.compile(mg.value_and_grad(loss_fn, argnums=(0, 1, 2, 3)))
        k = [0]

        def step() -> Any:
            x, a, ret = samples[k[0] % len(samples)]
            k[0] += 1
            with mg.no_grad():  # the gradients are wanted, not a tape behind them
                _, grads = vg(*ps, x, a, ret)
            for p, g in zip(ps, grads):
                p.grad = g.numpy()
            opt.step()
            return ps
        return Impl(step, lambda ps: _common_layout([p.grad for p in ps], [p.data for p in ps]))

    def torch_impl() -> Impl:
        torch = torch_module()
        w1, b1, w2, b2 = ps = [torch.tensor(p.T if p.ndim == 2 else p, requires_grad=True)
                               for p in params]
        opt = torch.optim.Adam(ps, lr=LR, betas=BETAS, eps=EPS)
        tsamples = [(torch.from_numpy(x), a, ret) for x, a, ret in samples]
        k = [0]

        def step() -> Any:
            x, a, ret = tsamples[k[0] % len(tsamples)]
            k[0] += 1
            opt.zero_grad()
            logp = torch.log_softmax((x @ w1 + b1).relu() @ w2 + b2, dim=-1)
            loss = -(logp[0, a] * ret)
            loss.backward()
            opt.step()
            return ps
        return Impl(step, lambda ps: _common_layout([p.grad.numpy() for p in ps],
                                                    [p.detach().numpy() for p in ps]))

    what = ("policy training step: W1's 4-16-2 net, forward + backward + Adam (lr 0.02); "
            "floor: one flat parameter array")
    return [Variant("W1-train", "W1", what,
                    {"numpy": numpy_impl, "minigrad": minigrad_impl,
                     "minigrad-compiled": compiled_impl, "torch": torch_impl},
                    rtol=1e-9, notes=["W1-train: --check compares the gradients and the "
                                      "parameters after one step"])]


def _common_layout(grads: list[np.ndarray], values: list[np.ndarray]) -> list[np.ndarray]:
    """(in, out) weights back to the floor's (out, in); copies, as the next step changes them."""
    return [np.array(a.T if a.ndim == 2 else a) for a in (*grads, *values)]
