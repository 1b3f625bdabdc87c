"""REINFORCE on Gymnasium's CartPole, with a softmax policy trained by minigrad.

The clean, working version of the program behind the question that started minigrad ("my
softmax derivative gives a (20,20) matrix and backprop breaks"): see softmax_jacobian.py for
what went wrong there. Here the engine does the calculus; the example only has to get the
algorithm right.

The algorithm (Williams' REINFORCE with a normalised-return baseline):

1. Play `--batch-episodes` episodes with the current stochastic policy pi(a | s) =
   softmax(W2 relu(W1 s + b1) + b2). Acting needs no gradient: it runs the policy compiled
   (`mg.compile`: traced once, then replayed as generated NumPy) under `mg.no_grad()`, so no
   step records a tape; the actions are drawn outside it, from the probabilities it returns.
   Only observations, actions and rewards are stored.
2. For every step t, the discounted return-to-go G_t = r_t + gamma r_{t+1} + ... . An episode
   that hit the time limit (`truncated`, not `terminated`) did not fail: its tail is bootstrapped
   with the value of a pole that keeps standing, 1 / (1 - gamma), instead of being counted as a
   fall. The returns of the batch are then normalised to mean 0, std 1: these A_t are the
   advantages (the mean is the baseline; the std keeps the gradient's scale steady).
3. One batched forward on the engine over all stored steps, the loss
   -mean_t(A_t log pi(a_t | s_t)) - entropy * mean_t(H(pi(. | s_t))), one backward (the
   gradient w.r.t. the logits is A_t (onehot(a_t) - softmax(z_t)) plus the entropy term's, no
   Jacobian), and one Adam step. The small entropy bonus matters early: with a few
   ten-step episodes, the normalised returns reward whatever the first steps did, and without it
   about one seed in 200 collapses to always pushing one way and never recovers.

The saved policy (`policy.npz`, and what `--eval` plays greedily) is an exponential moving
average of the weights over the last ~20 updates (`--average 0.95`, Polyak averaging). The last
weights are one noisy REINFORCE step away from that average, and although they solve the task
stochastically, played greedily they occasionally let the cart drift off the track (about 1 seed
in 100 scored below 475 over 20 greedy episodes; with the average, 1 in 500).

Defaults (hidden 32, lr 0.02, 2 episodes per update, gamma 0.99, entropy 0.01, no clipping) were
chosen on seeds 0-59 and validated on seeds 100-599; `--num-envs N` steps a vector environment
instead (Gymnasium's native vector CartPole; other environments N copies in one process), one
batched forward per step for all N sub-environments. Any Gymnasium environment with discrete
actions, a flat vector of observations and a time limit fits the policy (`--env Acrobot-v1`).

It stops when the mean return of the last 100 episodes reaches the environment's threshold
(`env.spec.reward_threshold`: 475 for CartPole-v1, 195 for CartPole-v0). Every training run gets
its own folder under `--runs-dir` (default `runs/`, named by time, environment and seed):
policy.npz (the checkpoint), curve.csv and curve.png (the learning curve), args.json (the
arguments) and result.json. Ctrl-C saves the policy trained so far there and exits with status
130. The last line is machine-readable; `greedy` is the mean return of the saved policy over
`--eval-episodes` greedy episodes, the same episodes `--eval` plays:

    seed=S solved=yes|no episodes=E steps=N seconds=T mean100=M greedy=G

    python examples/cartpole_reinforce.py                  # train: runs/<time>_CartPole-v1_seed0/
    python examples/cartpole_reinforce.py --eval runs/<run>/policy.npz       # 20 greedy episodes
    python examples/cartpole_reinforce.py --eval runs/<run> --gif cartpole.gif   # and watch one
    python examples/cartpole_reinforce.py --seed 3 --quiet # one line of output, still saved

A mistake in the arguments ends with one line on stderr and exit status 2; a checkpoint that
`--eval` cannot use, with one line naming the file and exit status 1. Needs `gymnasium`; `tqdm`
(progress bar), `matplotlib` (curve.png) and, for `--gif`, `pygame` (Gymnasium's renderer) and
Pillow are optional and imported only when used.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import numpy as np

import minigrad as mg
from minigrad import nn, optim

PROG = "cartpole_reinforce.py"
DEFAULT_ENV = "CartPole-v1"
DEFAULT_RUNS_DIR = "runs"
POLICY_KEYS = ("0.weight", "0.bias", "2.weight", "2.bias")
GIF_WIDTH = 300  # pixels: half of Gymnasium's 600 x 400 CartPole frame
GIF_EVERY = 2  # record every 2nd step: CartPole runs at 50 steps per simulated second


class ExitError(Exception):
    """A problem reported as one line on stderr; `status` is the exit status (2: the command
    line, 1: a file or a missing package)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the message held
        self.status = status


def make_policy(obs_dim: int, hidden: int, n_actions: int, rng: np.random.Generator
                ) -> nn.Sequential:
    """obs -> hidden (ReLU) -> action logits; PyTorch's layout, so it loads into torch too."""
    return nn.Sequential(nn.Linear(obs_dim, hidden, rng=rng), nn.ReLU(),
                         nn.Linear(hidden, n_actions, rng=rng))


def actor(policy: nn.Module) -> Callable[[np.ndarray], mg.Tensor]:
    """pi(. | obs) for one observation (D,) -> (A,) or a batch (N, D) -> (N, A): the policy's own
    forward and softmax, compiled. The first call with each shape runs them on the engine once,
    recording every op; later calls replay that as generated NumPy. The compiled step reads the
    parameters' arrays at every call, so after an update it acts with the new weights. Call it
    under mg.no_grad(): acting needs no gradient, and then no tape is recorded."""
    return mg.compile(lambda obs: policy(obs).softmax(axis=-1))


def sample(probs: np.ndarray, u: np.ndarray | float) -> np.ndarray:
    """Actions drawn from the rows of probs by inverse CDF, given uniforms u in [0, 1)."""
    cdf = np.cumsum(probs, axis=-1)
    return np.minimum((np.asarray(u)[..., None] >= cdf).sum(axis=-1), probs.shape[-1] - 1)


Episode = tuple[np.ndarray, np.ndarray, list[float], bool]  # obs, actions, rewards, cut by limit


# Acting runs under no_grad. As decorators on generators, no_grad holds while the generator runs
# and gives the caller back its own mode between episodes, when it records its update.
@mg.no_grad()
def play_one_env(env: Any, policy: nn.Module, rng: np.random.Generator, seed: int
                 ) -> Iterator[Episode]:
    """Episodes from one environment, each played with the policy as it is when it starts."""
    act = actor(policy)
    two = env.action_space.n == 2
    obs, _ = env.reset(seed=seed)
    while True:
        observations, actions, rewards = [], [], []
        while True:
            probs = act(obs).data
            # Two actions: a = 1 with probability pi(1 | obs), one comparison instead of a sum.
            a = int(rng.random() < probs[1]) if two else int(sample(probs, rng.random()))
            observations.append(obs)
            actions.append(a)
            obs, r, terminated, truncated, _ = env.step(a)
            rewards.append(float(r))
            if terminated or truncated:
                break
        yield (np.asarray(observations, dtype=np.float64), np.asarray(actions), rewards,
               bool(truncated and not terminated))
        obs, _ = env.reset()


@mg.no_grad()
def play_vector_env(envs: Any, policy: nn.Module, rng: np.random.Generator, seed: int
                    ) -> Iterator[Episode]:
    """Episodes from Gymnasium's vector env: one batched policy forward per step for all n
    sub-environments. Gymnasium resets a finished sub-environment on the NEXT step (its action
    is ignored, its reward is 0, it returns the first observation of the new episode): that
    step belongs to no episode and is skipped."""
    act = actor(policy)
    n = envs.num_envs
    obs, _ = envs.reset(seed=seed)
    buffers: list[tuple[list[np.ndarray], list[int], list[float]]] = [([], [], [])
                                                                        for _ in range(n)]
    resetting = np.zeros(n, dtype=bool)
    while True:
        actions = sample(act(obs).data, rng.random(n))
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        done = terminated | truncated
        rows, acts, rews, ends = list(obs), actions.tolist(), rewards.tolist(), done.tolist()
        for i in np.flatnonzero(~resetting).tolist():
            o, a, r = buffers[i]
            o.append(rows[i])
            a.append(acts[i])
            r.append(rews[i])
            if ends[i]:
                buffers[i] = ([], [], [])
                yield (np.asarray(o, dtype=np.float64), np.asarray(a), r,
                       bool(truncated[i] and not terminated[i]))
        resetting = done
        obs = next_obs


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


# ---------------------------------------------------------------------------------------------
# The environment
# ---------------------------------------------------------------------------------------------
def import_gym() -> Any:
    try:
        import gymnasium as gym
    except ImportError:
        raise ExitError("this example needs Gymnasium: pip install 'gymnasium>=1.0' "
                        "(or pip install -e '.[examples]')") from None
    return gym


def make_env(env_id: str, num_envs: int = 1, render: bool = False) -> Any:
    """Gymnasium's `env_id` (a vector env of `num_envs` when above 1; frames as RGB arrays with
    `render`), checked to fit the policy. Raises ExitError (status 2) saying what does not fit."""
    gym = import_gym()
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as e:
        raise ExitError(f"--env {env_id}: {e}", 2) from None
    if spec.max_episode_steps is None:
        raise ExitError(f"--env {env_id}: it has no time limit (max_episode_steps), so an episode "
                        f"of a poor policy might never end", 2)
    try:
        if num_envs > 1:  # the native vector env steps all copies in NumPy at once
            mode = "vector_entry_point" if spec.vector_entry_point else "sync"
            env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
        else:
            env = gym.make(env_id, **({"render_mode": "rgb_array"} if render else {}))
    except Exception as e:  # a missing dependency (box2d, mujoco, jax, ...) or a broken env
        raise ExitError(f"--env {env_id}: cannot make it: {e}", 2) from None
    vector = num_envs > 1
    problem = unfit(gym, env.single_observation_space if vector else env.observation_space,
                    env.single_action_space if vector else env.action_space)
    if vector and problem is None and str(env.metadata.get("autoreset_mode", "")).split(".")[
            -1] not in ("NEXT_STEP", "next_step"):
        problem = f"its vector env resets with {env.metadata.get('autoreset_mode')}, not NEXT_STEP"
    if problem is not None:
        env.close()
        raise ExitError(f"--env {env_id}: {problem}; this policy needs discrete actions and a "
                        f"flat vector of observations (CartPole-v1, Acrobot-v1, ...)", 2)
    return env


def unfit(gym: Any, obs_space: Any, act_space: Any) -> str | None:
    """Why the spaces do not fit a softmax policy over a flat observation, or None."""
    if not isinstance(act_space, gym.spaces.Discrete):
        return f"its actions are {act_space}, not Discrete"
    if int(act_space.start) != 0 or int(act_space.n) < 2:
        return f"its actions are {act_space}, not Discrete(n) with n >= 2 starting at 0"
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        return f"its observations are {obs_space}, not a 1-D Box"
    return None


def env_sizes(env: Any) -> tuple[int, int]:
    """(observation size, number of actions) of a plain or vector env."""
    obs = getattr(env, "single_observation_space", env.observation_space)
    act = getattr(env, "single_action_space", env.action_space)
    return int(obs.shape[0]), int(act.n)


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
# Files: checked before any work, written so that a run is never overwritten
# ---------------------------------------------------------------------------------------------
def check_output_file(option: str, path: str) -> None:
    """Fail now, not after training: `path` must be writable in a directory that exists."""
    directory = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise ExitError(f"{option} {path}: that is a directory; give a file name", 2)
    if not os.path.isdir(directory):
        raise ExitError(f"{option} {path}: the directory {directory} does not exist", 2)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ExitError(f"{option} {path}: the directory {directory} is not writable", 2)


def new_run_dir(parent: str, env_id: str, seed: int) -> str:
    """Create and return a fresh folder parent/<time>_<env>_seed<S>, with -2, -3, ... added
    when that name is taken (os.mkdir fails on an existing folder, also between processes)."""
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ExitError(f"--runs-dir {parent}: that is not a directory", 2)
    stem = (f"{time.strftime('%Y%m%d-%H%M%S')}_{re.sub(r'[^A-Za-z0-9._-]+', '-', env_id)}"
            f"_seed{seed}")
    try:
        os.makedirs(parent, exist_ok=True)
        for i in range(1, 10_000):
            path = os.path.join(parent, stem if i == 1 else f"{stem}-{i}")
            with contextlib.suppress(FileExistsError):
                os.mkdir(path)
                return path
    except OSError as e:
        raise ExitError(f"--runs-dir {parent}: cannot create a run folder there: "
                        f"{e.strerror or e}", 2) from None
    raise ExitError(f"--runs-dir {parent}: 10,000 runs named {stem} already", 2)


def shell_path(path: str) -> str:
    """`path` as a shell word, relative to the current directory when it is inside it."""
    rel = os.path.relpath(path)
    outside = rel == os.pardir or rel.startswith(os.pardir + os.sep)
    return shlex.quote(path if outside else rel)


def eval_command(policy_path: str) -> str:
    """The command that evaluates a saved policy, runnable as printed from this directory."""
    return (f"{shell_path(sys.executable)} {shell_path(os.path.abspath(__file__))} --eval "
            f"{shlex.quote(policy_path)}")


def can_draw_gif() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("PIL", "pygame"))


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C waits until the block is done (a run being saved is saved whole), then raises."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None
                      else signal.default_int_handler)
    if pressed:
        raise KeyboardInterrupt


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
class Run:
    """What training has produced so far: enough to save it at any moment, Ctrl-C included."""

    def __init__(self, policy: nn.Sequential, opt: optim.Adam) -> None:
        self.policy, self.opt = policy, opt
        self.average = [p.data.copy() for p in policy.parameters()]  # Polyak average
        self.returns: list[float] = []
        self.steps = 0
        self.solved = False
        self.interrupted = False
        self.seconds = 0.0

    @property
    def mean100(self) -> float:
        last = self.returns[-100:]
        return sum(last) / len(last) if last else 0.0


def learn(args: argparse.Namespace, env: Any, run: Run, rng: np.random.Generator,
          threshold: float | None, bar: Any) -> None:
    """Play and update until solved or `args.episodes` episodes: fills `run` as it goes."""
    play = play_vector_env if args.num_envs > 1 else play_one_env
    last100: deque[float] = deque(maxlen=100)
    batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # obs, actions, returns
    for obs, actions, rewards, cut in play(env, run.policy, rng, args.seed):
        run.steps += len(rewards)
        total = float(sum(rewards))
        run.returns.append(total)
        last100.append(total)
        mean100 = sum(last100) / len(last100)
        if bar is not None:
            bar.update(1)
            if len(run.returns) % 10 == 1:
                bar.set_postfix(ret=f"{total:.0f}", mean100=f"{mean100:.1f}", refresh=False)
        if threshold is not None and len(last100) == 100 and mean100 >= threshold:
            run.solved = True
            return
        if len(run.returns) == args.episodes:
            return
        # An episode cut by the time limit did not fail: bootstrap its tail with the value of
        # surviving forever, 1 / (1 - gamma), rather than 0.
        tail = 1.0 / (1.0 - args.gamma) if cut and args.gamma < 1 else 0.0
        batch.append((obs, actions, returns_to_go(rewards, args.gamma, tail)))
        if len(batch) == args.batch_episodes:
            update(run.policy, run.opt, np.concatenate([b[0] for b in batch]),
                   np.concatenate([b[1] for b in batch]), np.concatenate([b[2] for b in batch]),
                   args.entropy, args.clip)
            batch = []
            for avg, p in zip(run.average, run.policy.parameters()):
                avg += (1.0 - args.average) * (p.data - avg)


def close_bar(bar: Any, run: Run) -> None:
    if bar is None:
        return
    if run.solved:
        bar.total = bar.n  # solved early: the bar ends full, not at n of --episodes
    state = "interrupted" if run.interrupted else "solved" if run.solved else "not solved"
    bar.set_postfix_str(f"{state}: mean100={run.mean100:.1f}", refresh=False)
    bar.close()


def train(args: argparse.Namespace) -> int:
    env = make_env(args.env, args.num_envs)  # checked first: a bad --env never makes a folder
    for option, path in (("--save", args.save), ("--plot", args.plot)):
        if path:
            check_output_file(option, path)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ExitError("--plot needs matplotlib: pip install matplotlib (or -e '.[examples]')")
    run_dir = new_run_dir(args.runs_dir, args.env, args.seed)
    threshold = import_gym().spec(args.env).reward_threshold
    rng = np.random.default_rng(args.seed)  # one generator: initialisation, then actions
    obs_dim, n_actions = env_sizes(env)
    policy = make_policy(obs_dim, args.hidden, n_actions, rng)
    run = Run(policy, optim.Adam(policy.parameters(), lr=args.lr))
    bar = None
    t0 = time.perf_counter()
    try:
        bar = progress(args.episodes, args.quiet)
        learn(args, env, run, rng, threshold, bar)
    except KeyboardInterrupt:
        run.interrupted = True
    finally:
        run.seconds = time.perf_counter() - t0
        env.close()
        close_bar(bar, run)
    policy_path = os.path.join(run_dir, "policy.npz")
    if run.interrupted:
        with interrupts_deferred():
            save_run(args, run, run_dir, threshold)
        print(f"interrupted at episode {len(run.returns)}: saved the policy so far to "
              f"{policy_path}; evaluate it: {eval_command(policy_path)}", file=sys.stderr)
        return 130
    with interrupts_deferred():
        files = save_run(args, run, run_dir, threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # making the training env showed them already
        eval_env = make_env(args.env)
    try:
        greedy = greedy_returns(eval_env, policy_from(averaged_state(run)), args.eval_episodes,
                                args.seed)
    except KeyboardInterrupt:
        print(f"interrupted during the greedy evaluation; the run is saved in {run_dir}",
              file=sys.stderr)
        return 130
    write_json(os.path.join(run_dir, "result.json"), result(args, run, greedy))
    if not args.quiet:
        gif_path = shlex.quote(os.path.join(run_dir, "episode.gif"))
        gif = f" --gif {gif_path}" if can_draw_gif() else ""
        print(f"saved the run in {run_dir}: {', '.join(files + ['result.json'])}")
        print(f"evaluate the policy{' and watch it' if gif else ''}: "
              f"{eval_command(policy_path)}{gif}")
    print(f"seed={args.seed} solved={'yes' if run.solved else 'no'} episodes={len(run.returns)} "
          f"steps={run.steps} seconds={run.seconds:.2f} mean100={run.mean100:.1f} "
          f"greedy={float(np.mean(greedy)):.1f}")
    return 0


def result(args: argparse.Namespace, run: Run, greedy: list[float] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"env": args.env, "seed": args.seed, "solved": run.solved,
                           "interrupted": run.interrupted, "episodes": len(run.returns),
                           "steps": run.steps, "seconds": round(run.seconds, 3),
                           "mean100": run.mean100}
    if greedy is not None:
        out.update(greedy_mean=float(np.mean(greedy)), greedy_returns=greedy)
    return out


def write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def save_run(args: argparse.Namespace, run: Run, run_dir: str, threshold: float | None
             ) -> list[str]:
    """Write the run's files into run_dir (and to --save / --plot); return their names."""
    state = checkpoint(args, run)
    try:
        mg.save(state, os.path.join(run_dir, "policy.npz"))
        if args.save:
            mg.save(state, args.save)
        with open(os.path.join(run_dir, "curve.csv"), "w", encoding="utf-8") as f:
            f.write("episode,return,mean100\n")
            for i, (r, m) in enumerate(zip(run.returns, moving_mean(run.returns)), start=1):
                f.write(f"{i},{r:g},{m:.6g}\n")
        write_json(os.path.join(run_dir, "args.json"), vars(args))
        if run.interrupted:
            write_json(os.path.join(run_dir, "result.json"), result(args, run, None))
    except OSError as e:
        raise ExitError(f"cannot write the run to {run_dir}: {e.strerror or e}") from None
    files = ["policy.npz", "curve.csv"]
    if importlib.util.find_spec("matplotlib") is None:
        if not args.quiet:
            print("(curve.png skipped: matplotlib is not installed; curve.csv has the data)",
                  file=sys.stderr)
    else:
        for path in (os.path.join(run_dir, "curve.png"), args.plot):
            if path:
                plot(path, run.returns, threshold, args)
        files.append("curve.png")
    return files + ["args.json"]


def checkpoint(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    """"policy": the averaged weights (what --eval plays); "policy_last" and "optimizer": the
    last weights and Adam's state. Both policies load into the same torch.nn.Sequential."""
    return {"policy": averaged_state(run), "policy_last": run.policy.state_dict(),
            "optimizer": run.opt.state_dict(),
            "config": {"env": args.env, "hidden": args.hidden, "seed": args.seed,
                       "episodes": len(run.returns), "average": args.average,
                       "solved": run.solved, "interrupted": run.interrupted}}


def averaged_state(run: Run) -> dict[str, np.ndarray]:
    """The averaged weights as a state dict of the policy (copies)."""
    return {name: avg.copy() for (name, _), avg in zip(run.policy.named_parameters(),
                                                        run.average)}


def moving_mean(returns: list[float], window: int = 100) -> np.ndarray:
    """The mean of the last `window` returns (fewer at the start) at each episode."""
    c = np.concatenate([[0.0], np.cumsum(returns)])
    i = np.arange(1, len(returns) + 1)
    return (c[i] - c[np.maximum(i - window, 0)]) / np.minimum(i, window)


def plot(path: str, returns: list[float], threshold: float | None,
         args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = np.arange(1, len(returns) + 1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(episodes, returns, lw=0.8, alpha=0.45, label="episode return")
    ax.plot(episodes, moving_mean(returns), lw=2, label="mean of the last 100")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"solved: {threshold:g}")
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    ax.set_title(f"REINFORCE on {args.env} with minigrad (seed {args.seed}, hidden {args.hidden},"
                 f" lr {args.lr:g}, {args.batch_episodes} episodes/update)", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise ExitError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
@mg.no_grad()
def greedy_returns(env: Any, policy: nn.Module, episodes: int, seed: int,
                   gif: Gif | None = None, say: Callable[[str], None] | None = None
                   ) -> list[float]:
    """Returns of `episodes` greedy episodes (the first seeded with seed + 1000, the rest
    following on), frames of the first one into `gif`. Closes env."""
    act = actor(policy)
    returns = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + 1000 if episode == 0 else None)
            recorder = gif if episode == 0 else None
            if recorder is not None:
                recorder.add(env.render())
            total, done, t = 0.0, False, 0
            while not done:
                a = int(np.argmax(act(obs).data))
                obs, r, terminated, truncated, _ = env.step(a)
                total += float(r)
                t += 1
                done = terminated or truncated
                if recorder is not None and (t % GIF_EVERY == 0 or done):
                    recorder.add(env.render())
            returns.append(total)
            if say is not None:
                say(f"episode {episode + 1:>3}: return {total:.0f}")
    finally:
        env.close()
    return returns


class Gif:
    """Frames of one episode, downscaled to GIF_WIDTH and reduced to 32 colours as they come,
    so that a 500-step episode takes a few MB of memory."""

    def __init__(self, every_ms: int) -> None:
        from PIL import Image

        self.image = Image
        self.every_ms = every_ms
        self.frames: list[Any] = []

    def add(self, rgb: np.ndarray) -> None:
        img = self.image.fromarray(np.ascontiguousarray(rgb))
        img = img.resize((GIF_WIDTH, max(1, round(img.height * GIF_WIDTH / img.width))),
                         self.image.Resampling.LANCZOS)
        self.frames.append(img.quantize(colors=32))

    def save(self, path: str) -> None:
        """Written beside `path` and renamed over it: never a half-written GIF."""
        tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp")
        try:
            self.frames[0].save(tmp, format="GIF", save_all=True, append_images=self.frames[1:],
                                duration=self.every_ms, loop=0)
            os.replace(tmp, path)
        except BaseException as e:  # Ctrl-C included: no temporary file stays behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(e, OSError):
                raise ExitError(f"--gif {path}: cannot write it: {e.strerror or e}") from None
            raise


def gif_recorder(path: str) -> Gif:
    """Checks that a GIF can be written to `path` and drawn, before anything is played."""
    check_output_file("--gif", path)
    if importlib.util.find_spec("PIL") is None:
        raise ExitError("--gif needs Pillow: pip install pillow (or pip install -e '.[examples]')")
    if importlib.util.find_spec("pygame") is None:
        raise ExitError("--gif needs pygame, which Gymnasium draws with: pip install "
                        "'gymnasium[classic-control]' (or pip install -e '.[examples]')")
    # Gymnasium's renderer opens pygame's display even for frames in memory: SDL's dummy
    # driver needs no screen, and pygame's greeting would go to stdout.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    return Gif(every_ms=0)


def read_policy(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The "policy" state dict and the "config" of a checkpoint; ExitError naming the file and
    what is wrong with it otherwise. A run's folder stands for its policy.npz."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "policy.npz")):
        path = os.path.join(path, "policy.npz")
    if not os.path.exists(path):
        raise ExitError(f"--eval {path}: no such file")
    if os.path.isdir(path):
        raise ExitError(f"--eval {path}: that is a directory with no policy.npz in it")
    try:
        ckpt = mg.load(path)
    except ValueError as e:  # mg.load names the file and what is wrong with it
        raise ExitError(f"--eval {str(e).removeprefix('mg.load: ')}") from None
    except OSError as e:
        raise ExitError(f"--eval {path}: cannot read it: {e.strerror or e}") from None
    if not isinstance(ckpt, dict) or "policy" not in ckpt:
        keys = ", ".join(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ExitError(f"--eval {path}: no 'policy' entry (it holds: {keys or 'nothing'}); a "
                        f"checkpoint of this example has one")
    config = ckpt.get("config")
    problem = policy_problem(ckpt["policy"])
    if problem is not None:
        raise ExitError(f"--eval {path}: its policy {problem}")
    return ckpt["policy"], config if isinstance(config, dict) else {}


def policy_problem(sd: Any) -> str | None:
    """What keeps a state dict from being a obs -> hidden -> actions policy, or None."""
    if not isinstance(sd, dict) or set(sd) != set(POLICY_KEYS):
        have = ", ".join(map(str, sd)) if isinstance(sd, dict) else type(sd).__name__
        return f"has the entries [{have}], not [{', '.join(POLICY_KEYS)}]"
    arrays = [sd[k] for k in POLICY_KEYS]
    for key, a in zip(POLICY_KEYS, arrays):
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
            return f"entry {key} is not an array of real numbers"
    w1, b1, w2, b2 = arrays
    if (w1.ndim != 2 or w2.ndim != 2 or b1.shape != (w1.shape[0],)
            or w2.shape[1] != w1.shape[0] or b2.shape != (w2.shape[0],)):
        return ("has shapes that do not chain: " +
                ", ".join(f"{k} {a.shape}" for k, a in zip(POLICY_KEYS, arrays)))
    if not all(np.isfinite(a).all() for a in arrays):
        return "holds NaN or infinite weights"
    return None


def policy_from(sd: dict[str, np.ndarray]) -> nn.Sequential:
    """A policy holding the weights of a state dict that policy_problem accepts, in float64."""
    w1, w2 = sd["0.weight"], sd["2.weight"]
    policy = make_policy(w1.shape[1], w1.shape[0], w2.shape[0],
                         np.random.default_rng(0))  # initial weights, replaced just below
    policy.load_state_dict({k: np.asarray(sd[k], dtype=np.float64) for k in POLICY_KEYS})
    return policy


def evaluate(args: argparse.Namespace) -> int:
    gif = gif_recorder(args.gif) if args.gif else None
    sd, config = read_policy(args.eval)
    env_id = args.env or config.get("env") or DEFAULT_ENV
    seed = args.seed if args.seed is not None else config.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise ExitError(f"--eval {args.eval}: its config holds the seed {seed!r}, not an "
                        f"integer of at least 0 (give --seed)")
    try:
        env = make_env(str(env_id), render=gif is not None)
    except ExitError as e:
        if args.env:
            raise
        why = str(e).removeprefix(f"--env {env_id}: ")
        raise ExitError(f"--eval {args.eval}: its environment {env_id} cannot be used: {why}"
                        ) from None
    obs_dim, n_actions = env_sizes(env)
    w1, w2 = sd["0.weight"], sd["2.weight"]
    if (w1.shape[1], w2.shape[0]) != (obs_dim, n_actions):
        env.close()
        raise ExitError(f"--eval {args.eval}: the policy takes {w1.shape[1]} observations and "
                        f"chooses among {w2.shape[0]} actions, but {env_id} has {obs_dim} and "
                        f"{n_actions}")
    if gif is not None:
        gif.every_ms = 10 * round(100 * GIF_EVERY / env.metadata.get("render_fps", 50))
    returns = greedy_returns(env, policy_from(sd), args.eval_episodes, seed, gif,
                             None if args.quiet else print)
    if gif is not None:
        gif.save(args.gif)
        if not args.quiet:
            print(f"saved {len(gif.frames)} frames of episode 1 (return {returns[0]:.0f}) to "
                  f"{args.gif}")
    r = np.asarray(returns)
    print(f"eval episodes={len(r)} mean={r.mean():.1f} std={r.std():.1f}")
    return 0


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """A mistake on the command line ends in one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def number(kind: type, low: float, high: float = math.inf, *, open_low: bool = False,
           open_high: bool = False, hint: str = "") -> Callable[[str], Any]:
    """An argparse type: a finite `kind` (int or float) within the bounds, else the reason."""
    if high == math.inf:
        wanted = f"{'greater than' if open_low else 'at least'} {low:g}"
    else:
        wanted = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not (math.isfinite(value) and (value > low if open_low else value >= low)
                and (value < high if open_high else value <= high)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}{hint}")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = Parser(prog=PROG, description="REINFORCE on Gymnasium CartPole with a minigrad softmax "
                "policy. Each training run is kept in its own folder under --runs-dir.")
    ap.add_argument("--seed", type=number(int, 0), default=None,
                    help="seeds the env, the initialisation and the actions (default 0; with "
                         "--eval, the checkpoint's: the greedy episodes of the run's last line)")
    ap.add_argument("--env", default=None,
                    help=f"Gymnasium id with discrete actions and a 1-D Box observation (default "
                         f"{DEFAULT_ENV}; with --eval, the checkpoint's); training stops at "
                         f"env.spec.reward_threshold")
    ap.add_argument("--episodes", type=number(int, 1), default=2000,
                    help="at most this many episodes (default %(default)s)")
    ap.add_argument("--hidden", type=number(int, 1), default=32,
                    help="hidden units (default %(default)s)")
    ap.add_argument("--lr", type=number(float, 0, open_low=True), default=0.02,
                    help="Adam's learning rate (default %(default)s)")
    ap.add_argument("--gamma", type=number(float, 0, 1), default=0.99,
                    help="discount, in [0, 1] (default %(default)s)")
    ap.add_argument("--batch-episodes", type=number(int, 1), default=2,
                    help="episodes per update (default %(default)s)")
    ap.add_argument("--entropy", type=number(float, 0), default=0.01,
                    help="entropy bonus, at least 0; keeps early updates from collapsing the "
                         "policy (default %(default)s)")
    ap.add_argument("--clip", type=number(float, 0, open_low=True,
                                          hint=" (leave --clip out for no clipping)"),
                    default=None, help="clip the gradient's norm to this (default: no clipping)")
    ap.add_argument("--average", type=number(float, 0, 1, open_high=True), default=0.95,
                    metavar="DECAY",
                    help="the saved policy is an exponential moving average of the weights "
                         "with this decay per update, in [0, 1); 0 saves the last weights "
                         "(default %(default)s)")
    ap.add_argument("--num-envs", type=number(int, 1), default=1, metavar="N",
                    help="step N sub-environments of a vector env together (default "
                         "%(default)s: one plain environment)")
    ap.add_argument("--runs-dir", metavar="DIR", default=None,
                    help=f"each training run writes a new folder in DIR: policy.npz, curve.csv, "
                         f"curve.png, args.json, result.json (default {DEFAULT_RUNS_DIR})")
    ap.add_argument("--save", metavar="PATH", default=None,
                    help="also write the checkpoint here (its directory must exist)")
    ap.add_argument("--plot", metavar="PATH", default=None,
                    help="also write the learning-curve PNG here; needs matplotlib")
    ap.add_argument("--eval", metavar="POLICY", default=None,
                    help="play greedy episodes with a saved policy (a policy.npz, or its run "
                         "folder) instead of training")
    ap.add_argument("--eval-episodes", type=number(int, 1), default=20, metavar="N",
                    help="greedy episodes for --eval and after training (default %(default)s)")
    ap.add_argument("--gif", metavar="PATH", default=None,
                    help="with --eval: write an animated GIF of the first episode; needs Pillow "
                         "and pygame")
    ap.add_argument("--quiet", action="store_true",
                    help="no progress bar and no messages, only the last line (still saves)")
    args = ap.parse_args(argv)
    if args.eval is not None:
        given = [o for o, v in (("--save", args.save), ("--plot", args.plot),
                                ("--runs-dir", args.runs_dir)) if v is not None]
        if given:
            ap.error(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to "
                     f"training, not to --eval")
    elif args.gif is not None:
        ap.error("--gif draws an evaluation: give --eval POLICY too")
    if args.eval is None:
        args.seed = 0 if args.seed is None else args.seed
        args.env = args.env or DEFAULT_ENV
        args.runs_dir = args.runs_dir or DEFAULT_RUNS_DIR
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return evaluate(args) if args.eval is not None else train(args)
    except ExitError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
