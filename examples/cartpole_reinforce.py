"""REINFORCE on Gymnasium's CartPole, with a softmax policy trained by minigrad.

The clean, working version of the program behind the question that started minigrad ("my
softmax derivative gives a (20,20) matrix and backprop breaks"): see softmax_jacobian.py for
what went wrong there. Here the engine does the calculus; the example only has to get the
algorithm right.

The algorithm (Williams' REINFORCE with a normalised-return baseline):

1. Play `--batch-episodes` episodes with the current stochastic policy pi(a | s) =
   softmax(W2 relu(W1 s + b1) + b2). Acting needs no gradient, so it runs on the parameters'
   arrays in plain NumPy (no tape: a few µs per step); only observations, actions and rewards
   are stored.
2. For every step t, the discounted return-to-go G_t = r_t + gamma r_{t+1} + ... . An episode
   that hit the time limit (`truncated`, not `terminated`) did not fail: its tail is bootstrapped
   with the value of a pole that keeps standing, 1 / (1 - gamma), instead of being counted as a
   fall. The returns of the batch are then normalised (mean 0, std 1): a baseline that keeps the
   gradient's scale steady.
3. One batched forward on the engine over all stored steps, the loss
   -mean_t(G_t log pi(a_t | s_t)), one backward (the gradient w.r.t. the logits is
   G_t (onehot(a_t) - softmax(z_t)), no Jacobian), and one Adam step.

It stops when the mean return of the last 100 episodes reaches the environment's threshold
(`env.spec.reward_threshold`: 475 for CartPole-v1, 195 for CartPole-v0). The last line is
machine-readable:

    seed=S solved=yes|no episodes=E steps=N seconds=T mean100=M

    python examples/cartpole_reinforce.py                    # train, save runs/…npz and …png
    python examples/cartpole_reinforce.py --eval runs/cartpole_reinforce.npz   # 20 greedy episodes
    python examples/cartpole_reinforce.py --seed 3 --quiet   # one line of output

Needs `gymnasium`; `tqdm` (progress bar) and `matplotlib` (--plot) are optional and imported
only when used.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import deque
from typing import Any

import numpy as np

import minigrad as mg
from minigrad import nn, optim

DEFAULT_SAVE = os.path.join("runs", "cartpole_reinforce.npz")
DEFAULT_PLOT = os.path.join("runs", "cartpole_reinforce.png")


def make_policy(obs_dim: int, hidden: int, n_actions: int, rng: np.random.Generator
                ) -> nn.Sequential:
    """obs -> hidden (ReLU) -> action logits; PyTorch's layout, so it loads into torch too."""
    return nn.Sequential(nn.Linear(obs_dim, hidden, rng=rng), nn.ReLU(),
                         nn.Linear(hidden, n_actions, rng=rng))


def policy_arrays(policy: nn.Sequential) -> tuple[np.ndarray, ...]:
    """(W1, b1, W2, b2): the parameters' own arrays (Adam updates them in place)."""
    return tuple(p.data for p in policy.parameters())


def action_probs(params: tuple[np.ndarray, ...], obs: np.ndarray) -> np.ndarray:
    """pi(. | obs) in plain NumPy: the same function as `policy`, without a tape."""
    w1, b1, w2, b2 = params
    z = w2 @ np.maximum(w1 @ obs + b1, 0.0) + b2
    e = np.exp(z - z.max())
    return e / e.sum()


def returns_to_go(rewards: list[float], gamma: float, bootstrap: float) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1}, starting from G_T = bootstrap (0 after a fall)."""
    out = np.empty(len(rewards))
    g = bootstrap
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def update(policy: nn.Sequential, opt: optim.Adam, obs: np.ndarray, actions: np.ndarray,
           returns: np.ndarray, entropy: float, clip: float | None) -> None:
    """One policy-gradient step on a batch of steps: one forward, one backward, one Adam step."""
    adv = (returns - returns.mean()) / (returns.std() + 1e-8)  # normalised: the baseline
    logp_all = policy(mg.Tensor(obs)).log_softmax(axis=-1)     # (N, A), on the tape
    logp = logp_all[np.arange(len(actions)), actions]          # log pi(a_t | s_t)
    loss = -(logp * adv).mean()
    if entropy:
        loss = loss + entropy * (logp_all.exp() * logp_all).sum(axis=-1).mean()  # -H bonus
    opt.zero_grad()
    loss.backward()
    if clip:
        nn.utils.clip_grad_norm_(policy.parameters(), clip)
    opt.step()


def make_env(env_id: str) -> Any:
    try:
        import gymnasium as gym
    except ImportError:
        sys.exit("this example needs Gymnasium: pip install 'gymnasium>=1.0' "
                 "(or pip install -e '.[examples]')")
    return gym.make(env_id)


def progress(total: int, quiet: bool) -> Any:
    """A tqdm bar when tqdm is installed and output is wanted; else None."""
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="ep", dynamic_ncols=True, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
def train(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)  # one generator: initialisation, then actions
    env = make_env(args.env)
    threshold = env.spec.reward_threshold
    obs_dim, n_actions = env.observation_space.shape[0], env.action_space.n
    policy = make_policy(obs_dim, args.hidden, n_actions, rng)
    opt = optim.Adam(policy.parameters(), lr=args.lr)

    ep_returns: list[float] = []
    last100: deque[float] = deque(maxlen=100)
    mean100 = 0.0
    steps = 0
    batch_obs: list[np.ndarray] = []
    batch_act: list[int] = []
    batch_ret: list[np.ndarray] = []
    in_batch = 0
    solved = False
    bar = progress(args.episodes, args.quiet)
    t0 = time.perf_counter()
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=args.seed if episode == 0 else None)
        params = policy_arrays(policy)
        rewards: list[float] = []
        while True:
            p = action_probs(params, obs)
            a = int(rng.random() >= p[0]) if n_actions == 2 else int(rng.choice(n_actions, p=p))
            batch_obs.append(obs)
            batch_act.append(a)
            obs, r, terminated, truncated, _ = env.step(a)
            rewards.append(float(r))
            if terminated or truncated:
                break
        steps += len(rewards)
        tail = 1.0 / (1.0 - args.gamma) if truncated and not terminated and args.gamma < 1 else 0.0
        batch_ret.append(returns_to_go(rewards, args.gamma, tail))
        total = float(sum(rewards))
        ep_returns.append(total)
        last100.append(total)
        mean100 = sum(last100) / len(last100)
        if bar is not None:
            bar.update(1)
            if episode % 10 == 0:
                bar.set_postfix(ret=f"{total:.0f}", mean100=f"{mean100:.1f}", refresh=False)
        if len(last100) == 100 and mean100 >= threshold:
            solved = True
            break
        in_batch += 1
        if in_batch == args.batch_episodes:
            update(policy, opt, np.asarray(batch_obs, dtype=np.float64),
                   np.asarray(batch_act), np.concatenate(batch_ret), args.entropy, args.clip)
            batch_obs, batch_act, batch_ret, in_batch = [], [], [], 0
    seconds = time.perf_counter() - t0
    env.close()
    if bar is not None:
        bar.set_postfix(mean100=f"{mean100:.1f}")
        bar.close()

    if args.save:
        _save(args, policy, opt, len(ep_returns))
        if not args.quiet:
            print(f"saved the policy to {args.save}  (evaluate: python {sys.argv[0]} "
                  f"--eval {args.save})")
    if args.plot:
        if _plot(args.plot, ep_returns, threshold, args) and not args.quiet:
            print(f"saved the learning curve to {args.plot}")
    if not args.quiet:
        print(f"{'solved' if solved else 'not solved'} {args.env} in {len(ep_returns)} episodes"
              f" ({steps} env steps, {seconds:.1f} s, {1e6 * seconds / max(steps, 1):.1f} µs "
              f"per step)")
    print(f"seed={args.seed} solved={'yes' if solved else 'no'} episodes={len(ep_returns)} "
          f"steps={steps} seconds={seconds:.2f} mean100={mean100:.1f}")
    return 0


def _save(args: argparse.Namespace, policy: nn.Module, opt: optim.Adam, episodes: int) -> None:
    directory = os.path.dirname(os.path.abspath(args.save))
    os.makedirs(directory, exist_ok=True)
    mg.save({"policy": policy.state_dict(), "optimizer": opt.state_dict(),
             "config": {"env": args.env, "hidden": args.hidden, "seed": args.seed,
                        "episodes": episodes}}, args.save)


def _plot(path: str, ep_returns: list[float], threshold: float,
          args: argparse.Namespace) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(--plot skipped: matplotlib is not installed)", file=sys.stderr)
        return False
    r = np.asarray(ep_returns)
    mean = np.convolve(r, np.ones(100), "full")[: len(r)] / np.minimum(np.arange(1, len(r) + 1),
                                                                        100)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(np.arange(1, len(r) + 1), r, lw=0.8, alpha=0.45, label="episode return")
    ax.plot(np.arange(1, len(r) + 1), mean, lw=2, label="mean of the last 100")
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"solved: {threshold:g}")
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    ax.set_title(f"REINFORCE on {args.env} with minigrad (seed {args.seed}, hidden {args.hidden},"
                 f" lr {args.lr:g}, {args.batch_episodes} episodes/update)", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------
def evaluate(args: argparse.Namespace) -> int:
    ckpt = mg.load(args.eval)
    config = ckpt.get("config", {})
    env_id = args.env if args.env_given else config.get("env", args.env)
    env = make_env(env_id)
    sd = ckpt["policy"]
    hidden = int(sd["0.weight"].shape[0])
    policy = make_policy(env.observation_space.shape[0], hidden, env.action_space.n,
                         np.random.default_rng(0))
    policy.load_state_dict(sd)
    params = policy_arrays(policy)
    returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 1000 if episode == 0 else None)
        total, done = 0.0, False
        while not done:
            a = int(np.argmax(action_probs(params, obs)))  # greedy
            obs, r, terminated, truncated, _ = env.step(a)
            total += float(r)
            done = terminated or truncated
        returns.append(total)
        if not args.quiet:
            print(f"episode {episode + 1:>3}: return {total:.0f}")
    env.close()
    r = np.asarray(returns)
    print(f"eval episodes={len(r)} mean={r.mean():.1f} std={r.std():.1f}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="REINFORCE on Gymnasium CartPole with a minigrad softmax policy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="seeds the env, the init and the actions")
    ap.add_argument("--env", default="CartPole-v1",
                    help="Gymnasium id; the target is env.spec.reward_threshold")
    ap.add_argument("--episodes", type=int, default=2000, help="at most this many episodes")
    ap.add_argument("--hidden", type=int, default=32, help="hidden units")
    ap.add_argument("--lr", type=float, default=0.02, help="Adam's learning rate")
    ap.add_argument("--gamma", type=float, default=0.99, help="discount")
    ap.add_argument("--batch-episodes", type=int, default=2, help="episodes per update")
    ap.add_argument("--entropy", type=float, default=0.0, help="entropy bonus coefficient")
    ap.add_argument("--clip", type=float, default=None, help="max gradient norm (off if unset)")
    ap.add_argument("--save", metavar="PATH", default=None,
                    help=f"checkpoint path (default {DEFAULT_SAVE} when no --save/--plot/"
                         f"--quiet is given)")
    ap.add_argument("--plot", metavar="PATH", default=None,
                    help=f"learning-curve PNG (default {DEFAULT_PLOT}, as for --save)")
    ap.add_argument("--eval", metavar="PATH", default=None,
                    help="load a checkpoint and run greedy episodes instead of training")
    ap.add_argument("--eval-episodes", type=int, default=20, help="episodes for --eval")
    ap.add_argument("--quiet", action="store_true", help="no progress bar, only the last line")
    args = ap.parse_args(argv)
    args.env_given = any(a == "--env" or a.startswith("--env=") for a in (argv or sys.argv[1:]))
    if args.episodes < 1 or args.batch_episodes < 1 or args.hidden < 1:
        ap.error("--episodes, --batch-episodes and --hidden must be positive")
    if not 0.0 <= args.gamma <= 1.0 or not math.isfinite(args.lr) or args.lr <= 0:
        ap.error("--gamma must be in [0, 1] and --lr positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.eval:
        return evaluate(args)
    if args.save is None and args.plot is None and not args.quiet:
        args.save, args.plot = DEFAULT_SAVE, DEFAULT_PLOT
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
