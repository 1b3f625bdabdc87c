"""The documentation's code runs: every ```python block of README.md and docs/*.md, in order,
as one script per file, in a fresh process and an empty working directory.

A fragment that cannot run as written (output, a shell session, one line of a larger file)
takes another fence (```text, ```pycon, ```console); a ```python block that needs a name
defines it earlier in the same file. A failure names the file, the block's opening line and
the failing line of the file. A ```text block showing a tape listing (`mg.tape`'s output,
first line "tape: ...") or a compiled step's source (first line "def forward(") must be what
the page's code prints.

The README's CartPole table must be, line for line, what the command shown above it
(examples/cartpole_table.py) prints for the results in its rows."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from minigrad import kernels

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(`{3,}|~{3,})\s*([^`\s]*)")
# Fences a reader would take for Python but the runner would not: they would dodge the test.
PYTHON_ALIASES = {"py", "py3", "python3", "python3.11", "python2", "py2", "ipython", "ipython3"}
TIMEOUT = 60  # seconds per file; the whole test takes a few
PRINTED = ("tape: ", "def forward(")  # listings the page's code prints, checked word for word


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(info word, line number of the opening fence, code lines) for each top-level fence.

    A fence closes on a line of at least its own run of the same character (CommonMark)."""
    blocks: list[tuple[str, int, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        marker, info, start = m.group(1), m.group(2), i + 1
        body: list[str] = []
        i += 1
        while i < len(lines) and not (lines[i].startswith(marker)
                                      and lines[i].strip(marker[0]).strip() == ""):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"the fence opened at line {start} is never closed")
        blocks.append((info, start, body))
        i += 1
    return blocks


def python_script(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The ```python blocks joined into one script, and for each script line (1-based, index
    0 unused) the block's opening line and the line of the file it came from."""
    script: list[str] = []
    origin: list[tuple[int, int]] = [(0, 0)]
    for info, start, body in fenced_blocks(text):
        if info != "python":
            continue
        for k, line in enumerate(body, start=1):
            script.append(line)
            origin.append((start, start + k))
    return "\n".join(script) + "\n", origin


def where_it_failed(stderr: str, script: Path, origin: list[tuple[int, int]]) -> str:
    """The innermost traceback frame in the script, as "block at line B, line L: <code>"."""
    frames = re.findall(rf'File "{re.escape(str(script))}", line (\d+)', stderr)
    if not frames:
        return "no line of the script is in the traceback"
    n = int(frames[-1])
    if not 0 < n < len(origin):
        return f"script line {n}"
    block, line = origin[n]
    return f"the ```python block opened at line {block}, failing at line {line}"


def as_this_mode_prints(listing: str) -> str:
    """A listing of generated code as this mode writes it: the pages show the default mode,
    where a small product is `a.dot(b)` (lowering.small_products); plain mode writes `a @ b`."""
    if kernels.ENABLED:
        return listing
    return re.sub(r"([\w.]+)\.dot\(([\w.]+)\)", r"\1 @ \2", listing)


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_python_blocks_run(doc: Path, tmp_path: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    name = doc.relative_to(ROOT)
    for info, start, _ in fenced_blocks(text):
        assert info.lower() not in PYTHON_ALIASES and not (
            info.lower() == "python" and info != "python"), (
            f"{name}:{start}: a ```{info} fence is not run by this test; use ```python for "
            f"code that runs, ```pycon / ```text / ```console for fragments")
    source, origin = python_script(text)
    if doc.name == "README.md":
        assert len(origin) > 1, "README.md has no ```python block: this test would check nothing"
    if len(origin) == 1:
        return  # a page with no runnable code (prose, or fragments only) passes trivially
    script = tmp_path / f"{doc.stem}_blocks.py"
    script.write_text(source, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), MPLBACKEND="Agg")
    work = tmp_path / "cwd"
    work.mkdir()
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=work, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: its ```python blocks did not finish in {TIMEOUT} s")
    assert proc.returncode == 0, (
        f"{name}: {where_it_failed(proc.stderr, script, origin)}\n{proc.stderr[-3000:]}")
    for info, start, body in fenced_blocks(text):
        if info == "text" and body and body[0].startswith(PRINTED):
            assert as_this_mode_prints("\n".join(body)) in proc.stdout, (
                f"{name}:{start}: this listing is not what the page's code prints; it "
                f"printed:\n{proc.stdout}")


def test_the_failure_names_the_block_and_the_line(tmp_path: Path) -> None:
    """The mapping from the script back to the page: a failure in the second block of a page
    is reported at that block's line, not the script's."""
    page = ("Text.\n\n```python\nx = 1\n```\n\n```text\nnot code\n```\n\n"
            "Then:\n\n```python\ny = x + 1\nassert y == 3, y\n```\n")
    source, origin = python_script(page)
    assert source == "x = 1\ny = x + 1\nassert y == 3, y\n"
    script = tmp_path / "page.py"
    script.write_text(source, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 1
    lines = page.splitlines()
    where = where_it_failed(proc.stderr, script, origin)
    assert where == "the ```python block opened at line 13, failing at line 15", where
    assert lines[12] == "```python" and lines[14] == "assert y == 3, y"


def test_fences_parse_like_commonmark() -> None:
    page = "````markdown\n```python\nnot run\n```\n````\n~~~python\nrun = 1\n~~~\n"
    assert [(i, s, b) for i, s, b in fenced_blocks(page)] == [
        ("markdown", 1, ["```python", "not run", "```"]), ("python", 6, ["run = 1"])]
    with pytest.raises(AssertionError, match="line 2 is never closed"):
        fenced_blocks("a\n```python\nx = 1\n")


# --- the README's CartPole table: exactly what the command above it prints ----------------------
EXAMPLES = ROOT / "examples"
TABLE_HEADER = "| seed | episodes | env steps | wall s |"
TABLE_ROW = re.compile(r"^\| (\d+) \| (\d+)( \(not solved\))? \| (\d{1,3}(?:,\d{3})*) \| "
                       r"(\d+\.\d\d) \| (-?\d+\.\d) \|$")


@pytest.fixture
def table_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """examples/cartpole_table.py as a module (it imports its sibling cartpole_reinforce)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location("cartpole_table", EXAMPLES / "cartpole_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_table() -> tuple[list[str], list[str]]:
    """(the command in the ```bash block right above the table, the table and the line under
    it as they stand in README.md)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    (top,) = [i for i, line in enumerate(lines) if line.startswith(TABLE_HEADER)]
    assert lines[top - 1] == "" and lines[top - 2] == "```" and lines[top - 4] == "```bash", (
        "README.md: the CartPole table must follow a ```bash block holding its command")
    end = top
    while lines[end].startswith("|"):
        end += 1
    assert lines[end] == "" and lines[end + 1] != "", "the summary line follows the table"
    return shlex.split(lines[top - 3]), lines[top:end + 2]


def test_the_readme_table_is_what_its_command_prints_for_those_results(
        table_script: ModuleType) -> None:
    """The README's rows read back and formatted again give the README's text, line for line:
    header, row format, and the solved count and median of the line under the table."""
    command, shown = readme_table()
    assert command[:2] == ["python", "examples/cartpole_table.py"], command
    seeds = table_script.parse(command[2:]).seeds
    results = []
    for row in shown[2:-2]:
        m = TABLE_ROW.match(row)
        assert m, f"README.md: a table row not in the command's format: {row}"
        results.append(table_script.Result(
            int(m.group(1)), m.group(3) is None, int(m.group(2)), int(m.group(4).replace(
                ",", "")), float(m.group(5)), float(m.group(6))))
    assert [r.seed for r in results] == seeds, "the table's seeds are the command's --seeds"
    eval_episodes = table_script.parse_args([]).eval_episodes
    assert table_script.format_table(results, eval_episodes).splitlines() == shown


def test_the_table_format_of_unsolved_seeds_and_the_median(table_script: ModuleType) -> None:
    r = table_script.Result
    text = table_script.format_table([r(4, True, 300, 65_000, 0.9, 500.0),
                                      r(5, False, 2000, 1_234_567, 12.3456, 9.44),
                                      r(6, True, 100, 999, 0.0, 475.25)], 7)
    assert text.splitlines() == [
        "| seed | episodes | env steps | wall s | greedy eval of the saved policy (7 episodes) |",
        "|---|---|---|---|---|",
        "| 4 | 300 | 65,000 | 0.90 | 500.0 |",
        "| 5 | 2000 (not solved) | 1,234,567 | 12.35 | 9.4 |",
        "| 6 | 100 | 999 | 0.00 | 475.2 |",
        "",
        "2 of 3 solved, median 300 episodes (an unsolved seed counts the episodes it ran)."]
    assert table_script.format_table([r(0, True, 231, 1, 1.0, 1.0),
                                      r(1, True, 232, 1, 1.0, 1.0)], 20).endswith(
        "\n\n2 of 2 solved, median 231.5 episodes.")


@pytest.mark.skipif(importlib.util.find_spec("gymnasium") is None,
                    reason="needs gymnasium (the test extra)")
def test_the_readme_command_prints_a_table_with_the_readme_header(tmp_path: Path) -> None:
    """The README's own command, cut to one seed and three episodes (later flags win)."""
    command, shown = readme_table()
    proc = subprocess.run([sys.executable, str(ROOT / command[1]), *command[2:], "--seeds", "0",
                           "--episodes", "3"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[:2] == shown[:2] and len(out) == 5, proc.stdout
    m = TABLE_ROW.match(out[2])
    assert m and m.group(1) == "0" and m.group(2) == "3" and m.group(3), out[2]
    assert out[3:] == ["", "0 of 1 solved, median 3 episodes (an unsolved seed counts the "
                           "episodes it ran)."]
    assert proc.stderr.startswith("seed 0: not solved in 3 episodes")
    assert list(tmp_path.iterdir()) == [], "the runs go to a temporary folder, then away"


@pytest.mark.parametrize("args,words", [
    (["--seeds", "x"], ["--seeds", "0-9 or 0,3,5", "'x'"]),
    (["--seeds", "-1"], ["--seeds", "at least 0"]),
    (["--seeds", "5-2"], ["--seeds", "5-2 is empty"]),
    (["--seeds", "1,0-3"], ["--seeds", "seed 1 is given twice"]),
    (["--seeds", ""], ["--seeds"]),
    (["--episodes", "0"], ["--episodes", "at least 1"]),
    (["--runs-dir", "a_file"], ["--runs-dir", "a_file", "not a directory"]),
    (["--bogus"], ["--bogus"]),
])
def test_a_table_flag_mistake_is_one_line_and_status_2(
        tmp_path: Path, args: list[str], words: list[str]) -> None:
    (tmp_path / "a_file").write_text("not a folder\n")
    proc = subprocess.run([sys.executable, str(EXAMPLES / "cartpole_table.py"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("cartpole_table.py: error: ")
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


def test_a_failed_run_is_one_line_naming_the_seed_and_status_1(
        table_script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import sys\nprint('warming up')\nsys.exit('cartpole: no such env')\n")
    monkeypatch.setattr(table_script, "EXAMPLE", str(broken))
    assert table_script.main(["--seeds", "3"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("cartpole_table.py: error: seed 3: the run failed (status 1): cartpole: no "
                   "such env\n")
