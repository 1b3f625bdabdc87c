"""The engine reads in an evening, and stays so: the tape and the rules (`graph.py`, `rules.py`)
hold at most 800 lines together, and no function in minigrad is longer than 60 lines. (Complexity
above 12 is ruff's C901, set in pyproject.toml.) Read from the source with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "minigrad"


def function_lengths(source: str) -> list[tuple[int, str, int]]:
    """(lines from `def` to the body's last line, name, first line) of every function."""
    return [(node.end_lineno - node.lineno + 1, node.name, node.lineno)  # type: ignore[operator]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_tape_and_the_rules_hold_at_most_800_lines() -> None:
    lines = {name: len((PACKAGE / name).read_text(encoding="utf-8").splitlines())
             for name in ("graph.py", "rules.py")}
    assert sum(lines.values()) <= 800, lines


def test_no_function_is_longer_than_60_lines() -> None:
    long = [f"{path.relative_to(PACKAGE.parent)}:{first} {name}: {n} lines"
            for path in sorted(PACKAGE.rglob("*.py"))
            for n, name, first in function_lengths(path.read_text(encoding="utf-8")) if n > 60]
    assert not long, long


def test_function_lengths_count_from_def_to_the_last_line() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    (n, name, first), = function_lengths(f"import os\n\ndef f():\n{body}")
    assert (n, name, first) == (61, "f", 3)
