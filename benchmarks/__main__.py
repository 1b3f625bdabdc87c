"""`python -m benchmarks`: see benchmarks/cli.py, and benchmarks/against.py for --against."""

import sys

if __name__ == "__main__":
    # --against goes its own way before cli.py imports the working tree's minigrad, which may
    # not import at all in the middle of a refactor
    if any(a == "--against" or a.startswith("--against=") for a in sys.argv[1:]):
        from benchmarks.against import main
    else:
        from benchmarks.cli import main
    raise SystemExit(main())
