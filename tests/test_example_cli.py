"""The examples' command lines as a user meets them, each run as a subprocess: every mistake ends
in exactly one line on stderr (never a traceback) with exit status 2 (the command line) or 1 (a
file `--eval` cannot use, a missing package); each CartPole training run is kept in a folder of
its own; Ctrl-C saves the policy trained so far; `--gif` draws a greedy episode."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LAST_LINE = re.compile(r"^seed=(\d+) solved=(yes|no) episodes=(\d+) steps=(\d+) "
                       r"seconds=(\d+\.\d+) mean100=(-?\d+\.\d) greedy=(-?\d+\.\d)$")
EVAL_LINE = re.compile(r"^eval episodes=(\d+) mean=(-?\d+\.\d) std=(\d+\.\d)$")
HINT = re.compile(r"^evaluate the policy(?: and watch it)?: (.+)$")
# Runs a script with some modules made unimportable: `python -c BLOCK mod1,mod2 script args...`
BLOCK = ("import runpy, sys; sys.modules.update(dict.fromkeys(sys.argv[1].split(','), None)); "
         "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_gym = pytest.mark.skipif(not has("gymnasium"), reason="needs gymnasium (the test extra)")
needs_gif = pytest.mark.skipif(not (has("gymnasium") and has("PIL") and has("pygame")),
                               reason="needs gymnasium, Pillow and pygame (the test extra)")


def example(script: str, *args: str, cwd: Path, block: str = "",
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = ([sys.executable, "-c", BLOCK, block] if block else [sys.executable])
    return subprocess.run([*cmd, str(EXAMPLES / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess[str], script: str, status: int) -> str:
    """The single stderr line of a failed run, after checking how it failed."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert lines[0].startswith(f"{script}: error: "), lines[0]
    assert proc.stdout == ""
    return lines[0]


def greedy_policy(path: Path, env: str | None = "CartPole-v1") -> None:
    """A hand-made 4-2-2 ReLU policy that balances CartPole: push right when
    x + 1.5 x' + 18 theta + 3 theta' > 0 (a hidden unit for each sign of it)."""
    w = np.array([1.0, 1.5, 18.0, 3.0])
    policy = {"0.weight": np.stack([w, -w]), "0.bias": np.zeros(2),
              "2.weight": np.array([[0.0, 1.0], [1.0, 0.0]]), "2.bias": np.zeros(2)}
    mg.save({"policy": policy, **({"config": {"env": env}} if env else {})}, path)


# --- mistakes on the command line: one line, status 2 --------------------------------------------
CP, TM = "cartpole_reinforce.py", "two_moons.py"
USAGE = [  # (script, arguments, words the line names)
    (CP, ["--env", "Pendulum-v1"], ["Pendulum-v1", "Discrete"]),
    (CP, ["--env", "Nope-v0"], ["Nope-v0", "doesn't exist"]),
    (CP, ["--env", "FrozenLake-v1"], ["FrozenLake-v1", "1-D Box"]),
    (CP, ["--env", "CliffWalking-v1"], ["CliffWalking-v1", "time limit"]),
    (CP, ["--num-envs", "4", "--env", "Pendulum-v1"], ["Pendulum-v1", "Discrete"]),
    (CP, ["--seed", "-1"], ["--seed", "at least 0"]),
    (CP, ["--seed", "1.5"], ["--seed", "integer"]),
    (CP, ["--clip", "-1"], ["--clip", "greater than 0"]),
    (CP, ["--clip", "0"], ["--clip", "no clipping"]),
    (CP, ["--entropy", "-5"], ["--entropy", "at least 0"]),
    (CP, ["--eval-episodes", "0"], ["--eval-episodes", "at least 1"]),
    (CP, ["--lr", "nan"], ["--lr", "greater than 0"]),
    (CP, ["--lr", "0"], ["--lr", "greater than 0"]),
    (CP, ["--gamma", "1.5"], ["--gamma", "[0, 1]"]),
    (CP, ["--average", "1"], ["--average", "[0, 1)"]),
    (CP, ["--episodes", "0"], ["--episodes"]),
    (CP, ["--hidden", "0"], ["--hidden"]),
    (CP, ["--batch-episodes", "-2"], ["--batch-episodes"]),
    (CP, ["--num-envs", "0"], ["--num-envs"]),
    (CP, ["--episodes"], ["--episodes", "expected one argument"]),
    (CP, ["--bogus"], ["--bogus"]),
    (CP, ["--save", "missing/policy.npz"], ["--save", "missing", "does not exist"]),
    (CP, ["--save", "."], ["--save", "directory"]),
    (CP, ["--plot", "missing/curve.png"], ["--plot", "does not exist"]),
    (CP, ["--runs-dir", "a_file"], ["--runs-dir", "a_file", "not a directory"]),
    (CP, ["--gif", "x.gif"], ["--gif", "--eval"]),
    (CP, ["--eval", "policy.npz", "--save", "x.npz"], ["--save", "training"]),
    (CP, ["--eval", "policy.npz", "--gif", "missing/x.gif"], ["--gif", "does not exist"]),
    (TM, ["--n", "0"], ["--n", "at least 10"]),
    (TM, ["--n", "9"], ["--n"]),
    (TM, ["--steps", "-1"], ["--steps"]),
    (TM, ["--steps", "0"], ["--steps"]),
    (TM, ["--hidden", "0"], ["--hidden"]),
    (TM, ["--noise", "-1"], ["--noise", "at least 0"]),
    (TM, ["--noise", "inf"], ["--noise"]),
    (TM, ["--lr", "-0.1"], ["--lr"]),
    (TM, ["--seed", "-1"], ["--seed"]),
    (TM, ["--seed", "x"], ["--seed", "integer"]),
    (TM, ["--plot", "missing/moons.png"], ["--plot", "does not exist"]),
    (TM, ["--plot", "."], ["--plot", "directory"]),
    ("custom_function.py", ["--bogus"], ["--bogus"]),
    ("softmax_jacobian.py", ["--seed", "-1"], ["--seed"]),
    ("softmax_jacobian.py", ["--small", "extra"], ["extra"]),
]


def _usage_case(folder: Path, script: str, args: list[str]
                ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    folder.mkdir()
    (folder / "a_file").write_text("not a folder\n")
    greedy_policy(folder / "policy.npz")
    return folder, example(script, *args, cwd=folder)


@pytest.fixture(scope="module")
def usage_runs(tmp_path_factory: pytest.TempPathFactory
               ) -> dict[int, tuple[Path, subprocess.CompletedProcess[str]]]:
    """Every row of USAGE, run once, a few processes at a time (each is mostly start-up)."""
    base = tmp_path_factory.mktemp("usage")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {i: pool.submit(_usage_case, base / str(i), script, args)
                   for i, (script, args, _) in enumerate(USAGE)}
        return {i: f.result() for i, f in futures.items()}


@pytest.mark.parametrize("row", range(len(USAGE)),
                         ids=[f"{s.split('_')[0]} {' '.join(a)}" for s, a, _ in USAGE])
def test_a_usage_mistake_is_one_line_and_status_2(
        usage_runs: dict[int, tuple[Path, subprocess.CompletedProcess[str]]], row: int) -> None:
    script, args, words = USAGE[row]
    if script == CP and any(a.startswith("--env") or a == "--num-envs" for a in args):
        pytest.importorskip("gymnasium")
    folder, proc = usage_runs[row]
    line = one_line_error(proc, script, 2)
    for word in words:
        assert word in line, (word, line)
    assert not (folder / "runs").exists(), "a rejected command must not start a run"


# --- files that --eval cannot use: one line naming the file, status 1 ----------------------------
def _write_policy(path: Path, env: str = "CartPole-v1", **change: np.ndarray) -> None:
    sd = {"0.weight": np.ones((8, 4)), "0.bias": np.zeros(8), "2.weight": np.ones((2, 8)),
          "2.bias": np.zeros(2)}
    sd.update(change)
    mg.save({"policy": sd, "config": {"env": env}}, path)


BAD_FILES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "missing": (lambda p: None, ["no such file"]),
    "a directory": (lambda p: p.mkdir(), ["directory"]),
    "truncated": (lambda p: (greedy_policy(p), p.write_bytes(p.read_bytes()[:300])),
                  ["not a readable minigrad checkpoint"]),
    "a plain .npz": (lambda p: np.savez(p.with_suffix(""), a=np.ones(3)),
                     ["not a minigrad checkpoint"]),
    "text": (lambda p: p.write_text("hello\n"), ["not a minigrad checkpoint"]),
    "no policy entry": (lambda p: mg.save({"weights": np.ones(3)}, p), ["'policy'", "weights"]),
    "other entries": (lambda p: mg.save({"policy": {"w": np.ones(3)}}, p), ["0.weight"]),
    "shapes that do not chain": (lambda p: _write_policy(p, **{"0.bias": np.zeros(7)}),
                                 ["do not chain", "(7,)"]),
    "NaN weights": (lambda p: _write_policy(p, **{"2.bias": np.array([0.0, np.nan])}),
                    ["NaN"]),
    "text weights": (lambda p: _write_policy(p, **{"0.bias": np.array(["a"] * 8)}),
                     ["0.bias", "real numbers"]),
    "another env's shapes": (lambda p: _write_policy(p, **{"0.weight": np.ones((8, 6))}),
                             ["6 observations", "CartPole-v1 has 4"]),
    "an env that does not exist": (lambda p: _write_policy(p, env="Nope-v3"),
                                   ["Nope-v3", "doesn't exist"]),
}


def _bad_file_case(folder: Path, make: Callable[[Path], None]
                   ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    folder.mkdir()
    path = folder / "policy.npz"
    make(path)
    return path, example(CP, "--eval", str(path), cwd=folder)


@pytest.fixture(scope="module")
def bad_file_runs(tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    base = tmp_path_factory.mktemp("bad_files")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(_bad_file_case, base / str(i), make)
                   for i, (case, (make, _)) in enumerate(BAD_FILES.items())}
        return {case: f.result() for case, f in futures.items()}


@needs_gym
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_eval_file_is_one_line_naming_it_and_status_1(
        bad_file_runs: dict[str, tuple[Path, subprocess.CompletedProcess[str]]],
        case: str) -> None:
    path, proc = bad_file_runs[case]
    _, words = BAD_FILES[case]
    line = one_line_error(proc, CP, 1)
    assert str(path) in line, line
    for word in words:
        assert word in line, (word, line)


# --- training runs are kept -------------------------------------------------------------------
@needs_gym
def test_two_default_runs_leave_two_run_folders_and_a_hint_that_works(tmp_path: Path) -> None:
    runs = tmp_path / "my runs"  # a space: the printed command must quote it
    outputs = [example(CP, "--episodes", "4", "--eval-episodes", "2", "--runs-dir", str(runs),
                       cwd=tmp_path) for _ in range(2)]
    folders = sorted(runs.iterdir())
    assert len(folders) == 2
    for proc, folder in zip(outputs, folders):
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        m = LAST_LINE.match(lines[-1])
        assert m and m.group(1) == "0" and m.group(3) == "4", lines[-1]
        assert "_CartPole-v1_seed0" in folder.name
        assert any(str(folder) in line for line in lines[:-1]), lines  # says where it went
        names = {p.name for p in folder.iterdir()}
        assert {"policy.npz", "curve.csv", "args.json", "result.json"} <= names
        assert ("curve.png" in names) == has("matplotlib")
        assert json.loads((folder / "args.json").read_text())["episodes"] == 4
        curve = (folder / "curve.csv").read_text().splitlines()
        assert curve[0] == "episode,return,mean100" and len(curve) == 1 + 4
        result = json.loads((folder / "result.json").read_text())
        assert result["episodes"] == 4 and len(result["greedy_returns"]) == 2
    # The hint runs as printed (through a shell, from the same directory) and plays the saved
    # policy on the same episodes as the closing line's greedy evaluation.
    hint = next(HINT.match(line) for line in outputs[0].stdout.splitlines() if HINT.match(line))
    assert hint is not None
    proc = subprocess.run(hint.group(1) + " --eval-episodes 2 --quiet", shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    m = EVAL_LINE.match(proc.stdout.splitlines()[-1])
    greedy = LAST_LINE.match(outputs[0].stdout.splitlines()[-1])
    assert m and greedy and m.group(2) == greedy.group(7), (proc.stdout, outputs[0].stdout)


@needs_gym
def test_quiet_only_silences_and_plot_keeps_the_checkpoint(tmp_path: Path) -> None:
    png = tmp_path / "curve.png"
    args = ["--quiet", "--episodes", "3", "--eval-episodes", "1", "--runs-dir", "r"]
    if has("matplotlib"):
        args += ["--plot", str(png)]
    proc = example(CP, *args, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert len(proc.stdout.splitlines()) == 1 and LAST_LINE.match(proc.stdout.strip())
    (folder,) = (tmp_path / "r").iterdir()
    assert mg.load(folder / "policy.npz")["policy"]["0.weight"].shape == (32, 4)
    if has("matplotlib"):
        assert png.read_bytes()[:4] == b"\x89PNG"


@needs_gym
def test_without_matplotlib_a_run_skips_the_picture_with_a_note(tmp_path: Path) -> None:
    proc = example(CP, "--episodes", "3", "--eval-episodes", "1", "--runs-dir", "r",
                   cwd=tmp_path, block="matplotlib,tqdm")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stderr.splitlines()
    assert len(notes) == 1 and "matplotlib" in notes[0], proc.stderr
    (folder,) = (tmp_path / "r").iterdir()
    names = {p.name for p in folder.iterdir()}
    assert "curve.png" not in names and {"policy.npz", "curve.csv"} <= names
    line = one_line_error(example(CP, "--plot", "c.png", cwd=tmp_path, block="matplotlib"),
                          CP, 1)
    assert "matplotlib" in line


@needs_gym
def test_a_run_folder_name_is_never_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    spec = importlib.util.spec_from_file_location("cartpole_cli", EXAMPLES / CP)
    assert spec is not None and spec.loader is not None
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    monkeypatch.setattr(ex.time, "strftime", lambda fmt: "20250101-000000")
    made = [ex.new_run_dir(str(tmp_path), "phys2d/CartPole-v1", 7) for _ in range(3)]
    stem = "20250101-000000_phys2d-CartPole-v1_seed7"
    assert [os.path.basename(m) for m in made] == [stem, f"{stem}-2", f"{stem}-3"]
    assert all(os.path.isdir(m) for m in made)


@needs_gym
def test_the_bar_ends_full_when_solved_early(tmp_path: Path) -> None:
    proc = example(CP, "--env", "CartPole-v0", "--seed", "4", "--eval-episodes", "1",
                   "--runs-dir", "r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    m = LAST_LINE.match(proc.stdout.splitlines()[-1])
    assert m and m.group(2) == "yes", proc.stdout
    if has("tqdm"):
        final = re.split(r"[\r\n]", proc.stderr.strip())[-1]
        assert "100%" in final and f" {m.group(3)}/{m.group(3)} " in final, final
        assert "solved" in final


@needs_gym
def test_a_vector_env_without_a_native_version_trains(tmp_path: Path) -> None:
    proc = example(CP, "--num-envs", "4", "--env", "Acrobot-v1", "--episodes", "4",
                   "--eval-episodes", "1", "--quiet", "--runs-dir", "r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    m = LAST_LINE.match(proc.stdout.strip())
    assert m and m.group(3) == "4", proc.stdout


# --- Ctrl-C -------------------------------------------------------------------------------------
def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    # A child of a shell without job control may start with SIGINT ignored; give it the default.
    return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@needs_gym
def test_ctrl_c_saves_the_policy_so_far_and_exits_130(tmp_path: Path) -> None:
    # lr 1e-6 never solves: the run is still training when it is interrupted
    proc = _start([str(EXAMPLES / CP), "--lr", "1e-6", "--episodes", "1000000", "--runs-dir",
                   "r"], tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not ((tmp_path / "r").is_dir() and any((tmp_path / "r").iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, proc.poll()
            time.sleep(0.02)
        time.sleep(0.5)  # the folder is made just before the first episode: likely mid-training
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == ""
    last = err.strip().splitlines()[-1]
    m = re.match(r"^interrupted at episode (\d+): saved the policy so far to (.+?); "
                 r"evaluate it: (.+)$", last)
    assert m, last  # also at episode 0 (a slow machine): the initial policy is what is saved
    state = mg.load(tmp_path / m.group(2))
    assert state["policy"]["0.weight"].shape == (32, 4)
    assert state["config"]["interrupted"] is True
    assert state["config"]["episodes"] == int(m.group(1))
    result = json.loads((tmp_path / m.group(2)).with_name("result.json").read_text())
    assert result["interrupted"] and result["episodes"] == int(m.group(1))
    again = subprocess.run(m.group(3) + " --eval-episodes 1 --quiet", shell=True, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and EVAL_LINE.match(again.stdout.strip()), again.stderr


def test_ctrl_c_in_two_moons_is_one_line_and_130(tmp_path: Path) -> None:
    proc = _start([str(EXAMPLES / TM), "--steps", "100000000"], tmp_path)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("step    1")  # training has started
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err == "two_moons.py: interrupted\n", err


# --- watching the agent -------------------------------------------------------------------------
@needs_gif
def test_gif_of_a_greedy_episode(tmp_path: Path) -> None:
    from PIL import Image

    greedy_policy(tmp_path / "policy.npz", env=None)  # no config: CartPole-v1 by default
    gif = tmp_path / "episode.gif"
    proc = example(CP, "--eval", "policy.npz", "--gif", "episode.gif", "--eval-episodes", "1",
                   cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "eval episodes=1 mean=500.0 std=0.0", lines
    assert "episode.gif" in lines[-2]
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.is_animated and im.n_frames >= 50
        assert im.size == (300, 200)
    assert gif.stat().st_size < 500_000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


@needs_gym
def test_gif_without_pillow_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    greedy_policy(tmp_path / "policy.npz")
    line = one_line_error(example(CP, "--eval", "policy.npz", "--gif", "a.gif", cwd=tmp_path,
                                  block="PIL"), CP, 1)
    assert "Pillow" in line and not (tmp_path / "a.gif").exists()


@pytest.mark.parametrize("script", [CP, TM, "custom_function.py", "softmax_jacobian.py"])
def test_help_works_everywhere(tmp_path: Path, script: str) -> None:
    proc = example(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(f"usage: {script}")
