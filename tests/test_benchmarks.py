"""Smoke test of the benchmark suite: `python -m benchmarks --quick --check --json PATH` runs,
every implementation's gradients agree with the hand-written NumPy floor, and the JSON has the
schema the report promises. Runs with or without PyTorch installed (its rows are then absent)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

IMPLS = ("numpy", "minigrad", "minigrad-compiled", "torch", "autograd", "bare")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    out = tmp_path_factory.mktemp("bench")
    path_json, path_md = out / "quick.json", out / "quick.md"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--check",
                           "--json", str(path_json), "--markdown", str(path_md)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(path_json.read_text()), proc.stdout, path_md.read_text()


def _number_or_none(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and math.isfinite(x) and x >= 0)


def test_quick_run_schema(quick_run: tuple[dict[str, Any], str, str]) -> None:
    result, _, _ = quick_run
    rows = result["workloads"]
    assert isinstance(rows, list) and rows
    for r in rows:
        assert isinstance(r["name"], str) and r["name"].startswith("W")
        assert r["impl"] in IMPLS
        for key in ("median_s", "ratio_to_floor", "ratio_to_torch", "peak_bytes"):
            assert key in r and _number_or_none(r[key]), (r["name"], r["impl"], key, r[key])
        assert "error" not in r, (r["name"], r["impl"], r.get("error"))
        assert r["median_s"] > 0
        assert r["ratio_to_floor"] is not None
    names = {r["name"] for r in rows}
    assert {"W0", "W1", "W1-train", "W2", "W3-float32", "W3-float64", "W4"} <= names
    assert any(n.startswith("W5-") for n in names)
    assert not any(n.startswith("W6") for n in names), "--quick must never train CartPole"
    for name in names:
        impls = {r["impl"]: r for r in rows if r["name"] == name}
        assert {"numpy", "minigrad"} <= set(impls), name
        assert impls["numpy"]["ratio_to_floor"] == pytest.approx(1.0)
        has_torch = "torch" in impls
        for r in impls.values():
            assert (r["ratio_to_torch"] is not None) == has_torch, (name, r["impl"])
    for name in ("W0", "W1", "W2", "W3-float32", "W3-float64"):  # the measuring stick ran
        assert any(r["name"] == name and r["impl"] == "bare" for r in rows), name
    w4 = {r["impl"]: r for r in rows if r["name"] == "W4"}
    activation = 4096 * 1000 * 8
    assert w4["numpy"]["peak_bytes"] >= activation  # at least the gradient it returns
    assert w4["minigrad"]["peak_bytes"] >= activation
    for r in rows:
        if r["name"] in ("W0",) or r["name"].startswith("W5-"):
            assert r["per_op_s"] == pytest.approx(r["median_s"] / r["ops"])


def test_quick_run_versions_and_targets(quick_run: tuple[dict[str, Any], str, str]) -> None:
    result, stdout, markdown = quick_run
    v = result["versions"]
    for key in ("python", "numpy", "torch", "minigrad", "machine"):
        assert key in v
    assert v["numpy"] and v["python"] and v["minigrad"]
    assert v["machine"]["cpu"]
    assert result["settings"]["check"] is True
    for t in result["targets"]:
        assert t["met"] in (True, False, None)
    assert "| workload | impl |" in stdout
    assert markdown.strip() in stdout


def test_only_and_quick_reject_w6() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "W6"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "W6" in proc.stderr


def _git_checkout() -> bool:
    """git is installed and the repository is the top of a git checkout with a HEAD commit."""
    if shutil.which("git") is None:
        return False
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--show-toplevel", "--verify",
                           "--quiet", "HEAD^{commit}"], capture_output=True, text=True, timeout=30)
    top = proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else ""
    return bool(top) and os.path.samefile(top, ROOT)


needs_git = pytest.mark.skipif(not _git_checkout(), reason="needs git and a git checkout")


@needs_git
def test_against_head() -> None:
    """--against HEAD: W0 with HEAD's engine and the working tree's, two rounds, one table."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--against", "HEAD", "--only",
                           "W0", "--quick", "--rounds", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "| old: HEAD (" in proc.stdout and "| new: working tree (" in proc.stdout
    row = [line for line in proc.stdout.splitlines() if line.startswith("| W0 |")]
    assert len(row) == 1, proc.stdout
    assert re.search(r"\*\*\d+\.\d{3}\*\*", row[0]), row[0]  # new / old
    assert "round 2, new first" in proc.stdout
    assert "failed" not in proc.stdout


@needs_git
def test_against_rejects_a_bad_revision() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--against", "no-such-rev~9"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no-such-rev~9" in proc.stderr
