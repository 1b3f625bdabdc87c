"""Smoke tests of the examples: they run, print their machine-readable last lines, and round-trip
their checkpoints. Full CartPole training is opt-in (`pytest -m slow`)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import minigrad as mg

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LAST_LINE = re.compile(r"^seed=(\d+) solved=(yes|no) episodes=(\d+) steps=(\d+) "
                       r"seconds=(\d+\.\d+) mean100=(\d+\.\d) greedy=(\d+\.\d)$")
EVAL_LINE = re.compile(r"^eval episodes=(\d+) mean=(\d+\.\d) std=(\d+\.\d)$")


def run(script: str, *args: str, cwd: Path, timeout: float = 120) -> list[str]:
    """Run an example as a user would; return its stdout lines (fail with its stderr)."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout.strip().splitlines()


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_gym = pytest.mark.skipif(not has("gymnasium"), reason="needs gymnasium (the test extra)")


# --- cartpole_reinforce.py ---------------------------------------------------------------------
@needs_gym
def test_cartpole_short_run_save_eval_plot(tmp_path: Path) -> None:
    ckpt, png = tmp_path / "policy.npz", tmp_path / "curve.png"
    lines = run("cartpole_reinforce.py", "--seed", "3", "--episodes", "20", "--quiet",
                "--save", str(ckpt), "--plot", str(png), "--eval-episodes", "3", cwd=tmp_path)
    m = LAST_LINE.match(lines[-1])
    assert m, lines[-1]
    assert m.group(1) == "3" and m.group(2) == "no" and m.group(3) == "20"
    assert int(m.group(4)) >= 20 * 8  # a CartPole episode lasts at least 8 steps
    assert ckpt.exists()
    if has("matplotlib"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    state = mg.load(ckpt)
    assert state["config"]["env"] == "CartPole-v1"
    assert state["policy"]["0.weight"].shape == (32, 4)
    # "policy" is the running average of the weights, "policy_last" the last weights
    assert state["policy"].keys() == state["policy_last"].keys() == {
        "0.weight", "0.bias", "2.weight", "2.bias"}
    assert not np.array_equal(state["policy"]["2.weight"], state["policy_last"]["2.weight"])
    # --save writes the run folder's checkpoint a second time
    (folder,) = (tmp_path / "runs").iterdir()
    assert (folder / "policy.npz").read_bytes() == ckpt.read_bytes()
    lines = run("cartpole_reinforce.py", "--eval", str(ckpt), "--quiet", "--eval-episodes", "3",
                cwd=tmp_path)
    e = EVAL_LINE.match(lines[-1])
    assert e and e.group(1) == "3", lines[-1]
    assert e.group(2) == m.group(7)  # the same greedy episodes as the closing line's


@needs_gym
def test_cartpole_is_reproducible_and_default_run_saves_under_runs(tmp_path: Path) -> None:
    first = run("cartpole_reinforce.py", "--episodes", "6", cwd=tmp_path)
    again = run("cartpole_reinforce.py", "--episodes", "6", "--quiet", cwd=tmp_path)
    strip = lambda line: re.sub(r"seconds=\S+ ", "", line)  # noqa: E731
    assert strip(first[-1]) == strip(again[-1])
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all((f / "policy.npz").exists() for f in folders)
    assert any(str(Path("runs") / folders[0].name) in line for line in first)
    if has("matplotlib"):
        assert all((f / "curve.png").exists() for f in folders)


@needs_gym
def test_cartpole_v0_uses_its_own_threshold(tmp_path: Path) -> None:
    lines = run("cartpole_reinforce.py", "--env", "CartPole-v0", "--episodes", "4",
                "--batch-episodes", "1", "--entropy", "0.01", "--clip", "1.0", "--quiet",
                cwd=tmp_path)
    assert LAST_LINE.match(lines[-1]), lines[-1]


@needs_gym
def test_cartpole_vector_env_short_run(tmp_path: Path) -> None:
    lines = run("cartpole_reinforce.py", "--num-envs", "4", "--episodes", "20", "--quiet",
                cwd=tmp_path)
    m = LAST_LINE.match(lines[-1])
    assert m and m.group(3) == "20", lines[-1]


@needs_gym
def test_cartpole_vector_env_skips_the_autoreset_step() -> None:
    ex = load_example("cartpole_reinforce")
    rng = np.random.default_rng(0)
    envs = ex.make_env("CartPole-v1", num_envs=3)
    policy = ex.make_policy(4, 8, 2, rng)
    episodes = ex.play_vector_env(envs, policy, rng, seed=0)
    for _ in range(12):
        obs, actions, rewards, cut = next(episodes)
        assert len(obs) == len(actions) == len(rewards) >= 8
        assert all(r == 1.0 for r in rewards)  # the autoreset step (reward 0) is not in it
        assert np.all(np.abs(obs[0]) <= 0.05)  # starts at a fresh reset state
        assert not cut
    envs.close()


def test_cartpole_acting_matches_the_engine_policy() -> None:
    ex = load_example("cartpole_reinforce")
    rng = np.random.default_rng(0)
    policy = ex.make_policy(4, 16, 3, rng)
    opt = mg.optim.Adam(policy.parameters(), lr=0.1)
    act = ex.actor(policy)
    obs = rng.normal(size=(5, 4))
    for _ in range(2):  # the second time after an update: acting reads the new weights
        with mg.no_grad():
            want = policy(mg.Tensor(obs)).softmax(axis=-1).numpy()
            batch, one = act(obs), act(obs[2].astype(np.float32))  # a vector env's, a plain env's
        assert not batch.requires_grad and not one.requires_grad
        np.testing.assert_allclose(batch.numpy(), want, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(one.numpy(), want[2], rtol=1e-6)
        opt.zero_grad()
        policy(mg.Tensor(obs))[:, 0].sum().backward()
        opt.step()
    assert act.traces == 2  # once per shape and dtype, then replayed
    counts = np.bincount(ex.sample(np.tile([0.2, 0.5, 0.3], (10_000, 1)),
                                   rng.random(10_000)), minlength=3)
    np.testing.assert_allclose(counts / 10_000, [0.2, 0.5, 0.3], atol=0.02)


@needs_gym
def test_cartpole_acts_with_the_weights_of_the_moment_and_leaves_grad_mode_alone() -> None:
    ex = load_example("cartpole_reinforce")
    rng = np.random.default_rng(0)
    env = ex.make_env("CartPole-v1")
    policy = ex.make_policy(4, 8, 2, rng)
    bias = policy[2].bias
    episodes = ex.play_one_env(env, policy, rng, seed=0)
    for favoured in (1, 0, 1):
        bias.data[...] = np.where(np.arange(2) == favoured, 50.0, 0.0)  # in place, as Adam does
        _, actions, _, _ = next(episodes)
        assert set(actions.tolist()) == {favoured}
        assert mg.is_grad_enabled()  # acting's no_grad stays inside the generator
    env.close()


def test_cartpole_returns_to_go_and_truncation_bootstrap() -> None:
    ex = load_example("cartpole_reinforce")
    np.testing.assert_allclose(ex.returns_to_go([1.0, 1.0, 1.0], 0.5, 0.0), [1.75, 1.5, 1.0])
    # A run cut by the time limit is not a fall: with the tail 1/(1-gamma), every step of an
    # all-ones episode is worth 1/(1-gamma), so none of its actions is blamed.
    np.testing.assert_allclose(ex.returns_to_go([1.0] * 4, 0.9, 10.0), [10.0] * 4)


def test_cartpole_update_is_one_tape_and_lowers_the_loss() -> None:
    ex = load_example("cartpole_reinforce")
    rng = np.random.default_rng(1)
    policy = ex.make_policy(4, 8, 2, rng)
    opt = mg.optim.Adam(policy.parameters(), lr=0.05)
    obs, actions = rng.normal(size=(64, 4)), rng.integers(0, 2, size=64)
    returns = rng.normal(size=64)
    adv = (returns - returns.mean()) / returns.std()

    def objective() -> float:
        with mg.no_grad():
            logp = policy(mg.Tensor(obs)).log_softmax(axis=-1).numpy()
        return float(-(logp[np.arange(64), actions] * adv).mean())

    before = objective()
    for _ in range(5):
        ex.update(policy, opt, obs, actions, returns, entropy=0.0, clip=None)
    assert objective() < before


# --- softmax_jacobian.py -----------------------------------------------------------------------
def test_softmax_jacobian_small(tmp_path: Path) -> None:
    out = "\n".join(run("softmax_jacobian.py", "--small", cwd=tmp_path))
    assert "MISMATCH" not in out
    for n in range(1, 8):
        assert f"== {n}. " in out
    assert out.count(" ok") >= 12
    assert "(10, 2, 10, 2)" in out and "(20, 20)" in out
    assert "read-only" in out and "accepted" not in out


# --- two_moons.py ------------------------------------------------------------------------------
def test_two_moons_learns(tmp_path: Path) -> None:
    png = tmp_path / "moons.png"
    lines = run("two_moons.py", "--n", "400", "--steps", "150", "--quiet", "--plot", str(png),
                cwd=tmp_path)
    m = re.match(r"^two_moons train_accuracy=(\S+) test_accuracy=(\S+) ", lines[-1])
    assert m, lines[-1]
    assert float(m.group(1)) > 0.97 and float(m.group(2)) > 0.95
    if has("matplotlib"):
        assert png.read_bytes()[:4] == b"\x89PNG"


# --- full training: opt in with `pytest -m slow` ------------------------------------------------
@pytest.mark.slow
@needs_gym
def test_cartpole_solves_seeds_0_to_9(tmp_path: Path) -> None:
    """The bar: all of seeds 0-9 reach the 100-episode mean >= 475 within 2,000 episodes,
    at a median of at most 500 episodes (about 10-20 s in all)."""
    episodes = []
    for seed in range(10):
        m = LAST_LINE.match(run("cartpole_reinforce.py", "--seed", str(seed), "--quiet",
                                cwd=tmp_path, timeout=900)[-1])
        assert m and m.group(2) == "yes" and float(m.group(6)) >= 475, (seed, m)
        episodes.append(int(m.group(3)))
    assert max(episodes) <= 2000 and float(np.median(episodes)) <= 500, episodes


@pytest.mark.slow
@needs_gym
def test_cartpole_saved_policy_is_good_greedily(tmp_path: Path) -> None:
    ckpt = tmp_path / "policy.npz"
    run("cartpole_reinforce.py", "--seed", "0", "--quiet", "--save", str(ckpt), cwd=tmp_path)
    m = EVAL_LINE.match(run("cartpole_reinforce.py", "--eval", str(ckpt), "--quiet",
                            cwd=tmp_path)[-1])
    assert m and float(m.group(2)) >= 475, m


# --- digits_mlp.py, digits_cnn.py, char_rnn.py ------------------------------------------------
needs_sklearn = pytest.mark.skipif(not has("sklearn"),
                                   reason="needs scikit-learn (the test and digits extras)")
DIGITS_LINE = re.compile(r"^(digits_mlp|digits_cnn) test_accuracy=(\d\.\d{4}) "
                         r"train_accuracy=(\d\.\d{4}) epochs=(\d+) seconds=(\d+\.\d+)$")
RNN_LINE = re.compile(r"^char_rnn steps=(\d+) train_bits_per_char=(\d+\.\d+) "
                      r"val_bits_per_char=(\d+\.\d+) uniform_bits_per_char=(\d+\.\d+) "
                      r"seconds=(\d+\.\d+)$")


@needs_sklearn
@pytest.mark.parametrize("script,extra", [("digits_mlp.py", ["--hidden", "32"]),
                                          ("digits_cnn.py", ["--channels", "4"])])
def test_digits_short_run_learns(tmp_path: Path, script: str, extra: list[str]) -> None:
    lines = run(script, "--epochs", "4", "--limit", "400", "--lr", "0.02", "--batch-size", "16",
                *extra, cwd=tmp_path)
    assert sum(line.startswith("epoch ") for line in lines) == 4
    m = DIGITS_LINE.match(lines[-1])
    assert m and m.group(1) == script.removesuffix(".py") and m.group(4) == "4", lines[-1]
    assert float(m.group(2)) > 0.6 and float(m.group(3)) > 0.6  # chance is 0.1
    if script == "digits_mlp.py":
        return
    again = run(script, "--epochs", "4", "--limit", "400", "--lr", "0.02", "--batch-size", "16",
                "--quiet", *extra, cwd=tmp_path)
    assert len(again) == 1 and again[0].split(" seconds=")[0] == lines[-1].split(" seconds=")[0]


def test_char_rnn_short_run_beats_a_uniform_guess(tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    lines = run("char_rnn.py", "--text", str(text), "--steps", "60", "--hidden", "16",
                "--seq-len", "12", "--batch-size", "8", "--sample-length", "15", "--prompt",
                "the ", cwd=tmp_path)
    m = RNN_LINE.match(lines[-1])
    assert m and m.group(1) == "60", lines[-1]
    assert lines[-2].startswith("the ") and len(lines[-2]) == 4 + 15
    assert float(m.group(3)) < 0.75 * float(m.group(4))  # held-out, against log2(alphabet)
    assert any(line.startswith("step     1 ") for line in lines)
    # the repository's own text, quietly, with no sample
    lines = run("char_rnn.py", "--steps", "3", "--hidden", "8", "--sample-length", "0",
                "--quiet", cwd=tmp_path)
    assert len(lines) == 1 and RNN_LINE.match(lines[0]), lines


@pytest.mark.parametrize("script,args,words", [
    ("digits_cnn.py", ["--epochs", "0"], ["--epochs", "at least 1"]),
    ("digits_cnn.py", ["--channels", "two"], ["--channels", "integer"]),
    ("digits_mlp.py", ["--lr", "-0.1"], ["--lr", "greater than 0"]),
    ("digits_mlp.py", ["--limit", "9"], ["--limit", "at least 10"]),
    ("digits_mlp.py", ["--batch-size", "inf"], ["--batch-size"]),
    ("digits_mlp.py", ["--hidden"], ["--hidden", "expected one argument"]),
    ("char_rnn.py", ["--temperature", "0"], ["--temperature", "greater than 0"]),
    ("char_rnn.py", ["--clip", "nan"], ["--clip"]),
    ("char_rnn.py", ["--seq-len", "1"], ["--seq-len", "at least 2"]),
    ("char_rnn.py", ["--text", "no/such/file.txt"], ["--text", "No such file"]),
    ("char_rnn.py", ["--seq-len", "100000"], ["--seq-len", "too few"]),
    ("char_rnn.py", ["--sample-length", "-1"], ["--sample-length"]),
])
def test_bad_flags_end_in_one_line_and_status_2(tmp_path: Path, script: str, args: list[str],
                                                words: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"{script}: error: "), proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


@pytest.mark.parametrize("script", ["digits_mlp.py", "digits_cnn.py", "char_rnn.py"])
def test_help_lists_the_flags(tmp_path: Path, script: str) -> None:
    out = "\n".join(run(script, "--help", cwd=tmp_path))
    assert out.startswith(f"usage: {script}") and "--seed" in out and "--quiet" in out


@pytest.mark.slow
@needs_sklearn
def test_digits_cnn_default_run_reaches_95_percent(tmp_path: Path) -> None:
    for seed in ("0", "1", "2"):
        m = DIGITS_LINE.match(run("digits_cnn.py", "--seed", seed, "--quiet", cwd=tmp_path,
                                  timeout=600)[-1])
        assert m and float(m.group(2)) >= 0.95, (seed, m)
