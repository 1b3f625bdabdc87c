"""W6: CartPole end to end. REINFORCE trained to the environment's threshold, four ways.

All four run `examples/cartpole_reinforce.py` itself (its `main(["--seed", S, "--quiet",
"--episodes", E, "--runs-dir", TMP])`: its loop, its hyperparameters, its stopping rule and its
machine-readable last line), with the engine swapped out where the engine works:

- **minigrad-compiled**: the example as it is: it acts through its policy compiled with
  `mg.compile` under `mg.no_grad()` (its `actor`), and updates with one batched forward +
  backward on the engine and `mg.optim.Adam`.
- **minigrad**: the same user code without `mg.compile`: `actor` replaced by the policy's
  forward and softmax run eagerly under `mg.no_grad()`.
- **numpy**: the floor. `actor` replaced by a hand-written NumPy forward on the parameters'
  arrays, and `update` by the same update written by hand: forward, backward (policy gradient,
  entropy bonus, optional clipping) and torch.optim.Adam's rule, in place on the same arrays.
- **torch**: the policy mirrored by a float64 `torch.nn.Sequential` that shares the parameters'
  memory (`torch.from_numpy`); acting runs that module under `torch.no_grad()`, and `update`
  uses `backward()`, `torch.nn.utils.clip_grad_norm_` and `torch.optim.Adam`, as a PyTorch user
  writes it.

With one seed all four start from the same weights and draw the same uniforms, so they follow
the same trajectory until rounding differences in the updates make them diverge. Wall seconds
are the example's own (its training loop only: no process start, imports or model
construction); the share spent inside `env.step` is measured by wrapping the environment's
`step`. `--check` first asserts that the updates compute the same gradients on one batch.

Each (seed, implementation) trains in its own fresh process (`python -m benchmarks.cartpole`),
one after another, seeds interleaved across implementations.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "cartpole_reinforce.py")
IMPLS = ("numpy", "minigrad", "minigrad-compiled", "torch")
HOOKS = ("main", "make_policy", "update", "actor")


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("cartpole_reinforce_example", EXAMPLE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {EXAMPLE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [h for h in HOOKS if not callable(getattr(module, h, None))]
    if missing:
        raise RuntimeError(f"examples/cartpole_reinforce.py no longer defines "
                           f"{', '.join(missing)}: the W6 ports in benchmarks/cartpole.py swap "
                           f"those functions and need updating")
    return module


class StepTimer:
    """Wraps the first env made by gymnasium.make / make_vec (the training env: the example's
    greedy evaluation after training makes another) so that its env.step's time is summed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.wrapped = False

    def _wrap(self, make: Any) -> Any:
        def timed_make(*args: Any, **kwargs: Any) -> Any:
            env = make(*args, **kwargs)
            if self.wrapped:
                return env
            self.wrapped = True
            step = env.step

            def timed_step(action: Any) -> Any:
                t0 = time.perf_counter()
                out = step(action)
                self.seconds += time.perf_counter() - t0
                self.calls += 1
                return out
            env.step = timed_step
            return env
        return timed_make

    def install(self) -> None:
        import gymnasium as gym

        gym.make = self._wrap(gym.make)
        if hasattr(gym, "make_vec"):
            gym.make_vec = self._wrap(gym.make_vec)


# ---------------------------------------------------------------------------------------------
# The hand-written update (the floor)
# ---------------------------------------------------------------------------------------------
def numpy_grads(params: list[np.ndarray], obs: np.ndarray, actions: np.ndarray,
                returns: np.ndarray, entropy: float) -> list[np.ndarray]:
    """Gradients of −mean(adv·log π(a|s)) + entropy·mean(Σ π log π) for the 4-H-A ReLU policy."""
    w1, b1, w2, b2 = params
    n = len(actions)
    rows = np.arange(n)
    adv = (returns - returns.mean()) / (returns.std() + 1e-8)
    h = obs @ w1.T
    h += b1
    np.maximum(h, 0, out=h)
    z = h @ w2.T
    z += b2
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    s = p.sum(axis=1, keepdims=True)
    p /= s
    c = adv / n
    dz = p * c[:, None]  # d(−mean(adv·logp[a]))/dz = adv/n · (softmax − onehot)
    dz[rows, actions] -= c
    if entropy:  # d(ent·mean(Σ p log p))/dz = ent/n · p · (log p − Σ p log p)
        plogp = p * (z - np.log(s))
        plogp -= p * plogp.sum(axis=1, keepdims=True)
        plogp *= entropy / n
        dz += plogp
    dh = dz @ w2
    dh *= h > 0
    return [dh.T @ obs, dh.sum(axis=0), dz.T @ h, dz.sum(axis=0)]


class NumpyUpdate:
    """Replaces the example's update(policy, opt, obs, actions, returns, entropy, clip)."""

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.t = 0
        self.m: list[np.ndarray] = []
        self.v: list[np.ndarray] = []

    def __call__(self, policy: Any, opt: Any, obs: np.ndarray, actions: np.ndarray,
                 returns: np.ndarray, entropy: float, clip: float | None) -> None:
        params = [p.data for p in policy.parameters()]
        grads = numpy_grads(params, obs, actions, returns, entropy)
        if clip:  # torch.nn.utils.clip_grad_norm_'s rule
            coef = clip / (np.sqrt(sum(float(np.vdot(g, g)) for g in grads)) + 1e-6)
            if coef < 1:
                for g in grads:
                    g *= coef
        self.adam(params, grads)

    def adam(self, params: list[np.ndarray], grads: list[np.ndarray], b1: float = 0.9,
             b2: float = 0.999, eps: float = 1e-8) -> None:
        """torch.optim.Adam's update, in place."""
        if not self.m:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.t += 1
        step = self.lr / (1 - b1 ** self.t)
        sqrt_c2 = np.sqrt(1 - b2 ** self.t)
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            denom = np.sqrt(v)
            denom /= sqrt_c2
            denom += eps
            p -= step * m / denom


# ---------------------------------------------------------------------------------------------
# The PyTorch port
# ---------------------------------------------------------------------------------------------
class TorchPort:
    """A float64 torch twin of the example's policy, sharing its parameters' memory."""

    def __init__(self, lr: float) -> None:
        from benchmarks.harness import torch_module

        self.torch = torch_module()
        self.lr = lr
        self.model: Any = None
        self.opt: Any = None

    def make_policy(self, original: Any) -> Any:
        def make_policy(*args: Any, **kwargs: Any) -> Any:
            policy = original(*args, **kwargs)
            self.attach(policy)
            return policy
        return make_policy

    def attach(self, policy: Any) -> None:
        torch = self.torch
        w1, b1, w2, b2 = (p.data for p in policy.parameters())
        model = torch.nn.Sequential(
            torch.nn.Linear(w1.shape[1], w1.shape[0], dtype=torch.float64), torch.nn.ReLU(),
            torch.nn.Linear(w2.shape[1], w2.shape[0], dtype=torch.float64))
        for param, arr in zip(model.parameters(), (w1, b1, w2, b2)):
            param.data = torch.from_numpy(arr)  # shared memory: both see every update
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=self.lr)

    def actor(self, policy: Any) -> Any:
        """The example's actor, on the torch twin: probabilities under torch.no_grad()."""
        torch, model = self.torch, self.model

        def act(obs: np.ndarray) -> Probs:
            with torch.no_grad():
                x = torch.as_tensor(obs, dtype=torch.float64)
                return Probs(torch.softmax(model(x), dim=-1).numpy())
        return act

    def loss(self, obs: np.ndarray, actions: np.ndarray, returns: np.ndarray,
             entropy: float) -> Any:
        torch = self.torch
        adv = (returns - returns.mean()) / (returns.std() + 1e-8)
        logp_all = torch.log_softmax(self.model(torch.from_numpy(obs)), dim=-1)
        logp = logp_all[torch.arange(len(actions)), torch.from_numpy(actions)]
        loss = -(logp * torch.from_numpy(adv)).mean()
        if entropy:
            loss = loss + entropy * (logp_all.exp() * logp_all).sum(dim=-1).mean()
        return loss

    def update(self, policy: Any, opt: Any, obs: np.ndarray, actions: np.ndarray,
               returns: np.ndarray, entropy: float, clip: float | None) -> None:
        loss = self.loss(obs, actions, returns, entropy)
        self.opt.zero_grad()
        loss.backward()
        if clip:
            self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.opt.step()


class Probs:
    """What the example's actor returns, as far as the example reads it: `.data`."""

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray) -> None:
        self.data = data


def numpy_actor(policy: Any) -> Any:
    """The floor's acting: the policy's forward and softmax by hand on its parameters' arrays
    (read at each call: Adam updates them in place, and a rebinding would be seen)."""
    params = list(policy.parameters())

    def act(obs: np.ndarray) -> Probs:
        w1, b1, w2, b2 = (p.data for p in params)
        z = np.maximum(obs @ w1.T + b1, 0.0) @ w2.T + b2
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return Probs(e / e.sum(axis=-1, keepdims=True))
    return act


def eager_actor(policy: Any) -> Any:
    """The example's actor without mg.compile: the same lines, run on the tape's engine (the
    example calls it under mg.no_grad(), so nothing is recorded)."""
    def act(obs: np.ndarray) -> Any:
        return policy(obs).softmax(axis=-1)
    return act


def install_port(impl: str, example: Any) -> None:
    """Swap the engine parts of the example for the port's."""
    lr = example.parse_args([]).lr
    if impl == "numpy":
        example.actor = numpy_actor
        example.update = NumpyUpdate(lr)
    elif impl == "minigrad":
        example.actor = eager_actor
    elif impl == "torch":
        port = TorchPort(lr)
        example.make_policy = port.make_policy(example.make_policy)
        example.actor = port.actor
        example.update = port.update


def train(impl: str, seed: int, max_episodes: int, example: Any) -> dict[str, Any]:
    install_port(impl, example)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), tempfile.TemporaryDirectory() as runs:
        code = example.main(["--seed", str(seed), "--quiet", "--episodes", str(max_episodes),
                             "--runs-dir", runs])  # each run's folder goes when it is measured
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("seed=")]
    if code not in (0, None) or not lines:
        raise RuntimeError(f"the example exited with {code}: {out.getvalue()[-300:]}")
    fields = dict(kv.split("=", 1) for kv in lines[-1].split())
    return {"solved": fields["solved"] == "yes", "episodes": int(fields["episodes"]),
            "steps": int(fields["steps"]), "seconds": float(fields["seconds"]),
            "mean100": float(fields["mean100"])}


def check_updates(with_torch: bool) -> list[str]:
    """The three updates' gradients on one random batch, against the hand-written ones."""
    example = load_example()
    cfg = example.parse_args([])
    rng = np.random.default_rng(60)
    policy = example.make_policy(4, cfg.hidden, 2, rng)
    n = 300
    obs = rng.normal(size=(n, 4))
    actions = rng.integers(0, 2, n)
    returns = rng.normal(size=n) * 10 + 20
    params = [p.data.copy() for p in policy.parameters()]
    ref = numpy_grads(params, obs, actions, returns, cfg.entropy)

    class Capture:  # an optimizer that records the gradients instead of stepping
        def __init__(self, ps: list[Any]) -> None:
            self.ps, self.grads = ps, []

        def zero_grad(self) -> None:
            for p in self.ps:
                p.grad = None

        def step(self) -> None:
            self.grads = [np.array(p.grad) for p in self.ps]

    got: dict[str, list[np.ndarray]] = {}
    cap = Capture(list(policy.parameters()))
    example.update(policy, cap, obs, actions, returns, cfg.entropy, None)
    got["minigrad"] = cap.grads
    if with_torch:
        port = TorchPort(cfg.lr)
        port.attach(policy)
        port.loss(obs, actions, returns, cfg.entropy).backward()
        got["torch"] = [p.grad.numpy().copy() for p in port.model.parameters()]
    failures = []
    for impl, grads in got.items():
        for i, (a, b) in enumerate(zip(grads, ref)):
            err = float(np.max(np.abs(a - b)))
            if a.shape != b.shape or not err <= 1e-9 * max(float(np.max(np.abs(b))), 1e-30):
                failures.append(f"W6 {impl}: update gradient {i} differs from the hand-written "
                                f"one by {err:.3g}")
    return failures


def child_main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=IMPLS, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--max-episodes", type=int, default=2000)
    ap.add_argument("--malloc", choices=("default", "warm"), default="default")
    a = ap.parse_args(argv)
    from benchmarks.harness import pin_threads, set_malloc

    set_malloc(a.malloc)
    pin_threads()
    timer = StepTimer()
    timer.install()
    result = train(a.impl, a.seed, a.max_episodes, load_example())
    result.update(env_step_s=timer.seconds, env_step_calls=timer.calls)
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# The parent: W6 rows
# ---------------------------------------------------------------------------------------------
def run(args: Any, notes: list[str], failures: list[str]) -> list[dict[str, Any]]:
    from benchmarks.cli import available, log

    if not os.path.exists(EXAMPLE):
        notes.append("W6 skipped: examples/cartpole_reinforce.py does not exist yet")
        return []
    if importlib.util.find_spec("gymnasium") is None:
        notes.append("W6 skipped: gymnasium is not installed (pip install -e '.[bench]')")
        return []
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    impls = [i for i in IMPLS if i in args.impl_list]
    for i in list(impls):
        why = available(i)
        if why is not None:
            impls.remove(i)
            if why not in notes:
                notes.append(why)
    if args.check:
        try:
            failures += check_updates(with_torch="torch" in impls)
        except Exception as e:
            failures.append(f"W6: could not check the updates: {type(e).__name__}: {e}")
    results: dict[str, list[dict[str, Any]]] = {i: [] for i in impls}
    errors: dict[str, str] = {}
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for seed in seeds:
        for impl in impls:
            if impl in errors:
                continue
            proc = subprocess.run([sys.executable, "-m", "benchmarks.cartpole", "--impl", impl,
                                   "--seed", str(seed), "--max-episodes",
                                   str(args.max_episodes), "--malloc", args.malloc],
                                  cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                errors[impl] = f"seed {seed}: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
                log(f"  W6 {impl} seed {seed}: {errors[impl]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[impl].append(r)
            log(f"  W6 {impl:<9} seed {seed}: {'solved' if r['solved'] else 'NOT solved'} in "
                f"{r['episodes']} episodes, {r['steps']} steps, {r['seconds']:.1f} s "
                f"({1e6 * r['seconds'] / max(r['steps'], 1):.1f} µs/step, env.step "
                f"{r['env_step_s'] / max(r['seconds'], 1e-9):.0%})")
    per_step = {i: statistics.median(r["seconds"] / max(r["steps"], 1) for r in rs)
                for i, rs in results.items() if rs}
    floor, torch_s = per_step.get("numpy"), per_step.get("torch")
    rows = []
    for impl in impls:
        rs = results[impl]
        row: dict[str, Any] = {
            "name": "W6", "workload": "W6", "impl": impl,
            "what": "CartPole REINFORCE to the threshold: wall seconds per env step",
            "median_s": per_step.get(impl), "ratio_to_floor": None, "ratio_to_torch": None,
            "peak_bytes": None, "seeds": [s for s in seeds][:len(rs)],
            "episodes": [r["episodes"] for r in rs], "steps": [r["steps"] for r in rs],
            "wall_s": [r["seconds"] for r in rs], "solved": [r["solved"] for r in rs],
            "env_step_fraction": (sum(r["env_step_s"] for r in rs) /
                                  max(sum(r["seconds"] for r in rs), 1e-9)) if rs else None,
        }
        if impl in per_step and floor:
            row["ratio_to_floor"] = per_step[impl] / floor
        if impl in per_step and torch_s:
            row["ratio_to_torch"] = per_step[impl] / torch_s
        if impl in errors:
            row["error"] = errors[impl]
        if impl == "numpy":
            row["note"] = "hand-written NumPy acting and update"
        elif impl == "minigrad":
            row["note"] = "acts eagerly under mg.no_grad()"
        elif impl == "minigrad-compiled":
            row["note"] = "the example as it is: acts through mg.compile"
        elif impl == "torch":
            row["note"] = "acts under torch.no_grad(); torch update"
        rows.append(row)
    return rows


if __name__ == "__main__":
    child_main()
