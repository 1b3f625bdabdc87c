"""`minigrad` on the package index is another project: the distribution has a name of its own,
and nothing in the repository tells anyone to install `minigrad` from the index."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# `pip install minigrad`, `pip install -U 'minigrad[viz]'`, `pip install "minigrad>=0.1"`, …
_FROM_INDEX = re.compile(r"pip3?\s+install\s+(?:-{1,2}[\w-]+(?:[ =]\S+)?\s+)*['\"]?minigrad\b")


def test_the_distribution_is_not_named_minigrad_but_imports_as_minigrad():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    name = project["project"]["name"]
    assert re.sub(r"[-_.]+", "-", name).lower() != "minigrad"
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["minigrad*"]
    assert (ROOT / "minigrad" / "py.typed").exists()


def test_the_pattern_catches_installing_from_the_index():
    for bad in ("pip install minigrad", "pip install 'minigrad[viz]'", "pip install minigrad-tape",
                'pip3 install -U "minigrad"', "pip install --upgrade minigrad>=0.1",
                "pip install -q -c constraints.txt minigrad"):
        assert _FROM_INDEX.search(bad), bad
    for good in ("pip install -e '.[viz]'", "pip install -q -c constraints.txt -e '.[test]'",
                 "pip install graphviz", "pip install -e .", "pip uninstall minigrad"):
        assert not _FROM_INDEX.search(good), good


def test_no_file_says_to_install_minigrad_from_the_index():
    files = [ROOT / name for name in ("README.md", "CHANGELOG.md", "pyproject.toml", ".ci/run")]
    for folder in ("docs", "minigrad", "examples", "benchmarks"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".txt")]
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files
                 for m in _FROM_INDEX.finditer(p.read_text(encoding="utf-8"))]
    assert offenders == []
