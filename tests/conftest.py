"""Shared test setup.

Hypothesis runs under the "ci" profile by default: no deadlines (timings vary on shared
machines) and derandomized (the same examples on every run, so a failure reproduces); the
strategies themselves keep values off kinks, ties and domain edges. `HYPOTHESIS_PROFILE=dev`
draws more examples, randomly.

Every test must leave this thread's grad and anomaly modes as it found them.

Tests that compare with PyTorch carry the `torch` marker, given here to every test in a file
named test_*torch*.py and to every test that calls `pytest.importorskip("torch")` itself (or
written with `@pytest.mark.torch`). Without torch they skip; CI then installs torch and runs
`pytest -m torch` with MINIGRAD_REQUIRE_TORCH=1, where torch must import and a torch test that
skips fails. So that the torch run misses none, a test or module that skips because torch is
missing without being a torch test by these rules fails, saying how to make it one.
"""

import fnmatch
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from minigrad.modes import THREAD

settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _modes_are_restored() -> Iterator[None]:
    yield
    modes = THREAD.modes
    state = (modes.grad_enabled, modes.anomaly, modes.transform_depth, modes.vjp_of)
    assert state == (True, False, 0, None), f"a test left the modes at {state}"


REQUIRE_TORCH = os.environ.get("MINIGRAD_REQUIRE_TORCH") == "1"
TORCH_FILES = "test_*torch*.py"
NO_TORCH = "could not import 'torch'"  # how pytest.importorskip("torch") words its skip


def pytest_configure(config: pytest.Config) -> None:
    if REQUIRE_TORCH:
        try:
            import torch  # noqa: F401
        except ImportError as e:
            pytest.exit(f"MINIGRAD_REQUIRE_TORCH=1, but torch does not import ({e}); install "
                        f"it into this environment (pip install torch)", returncode=1)


def _calls_importorskip_torch(item: pytest.Item) -> bool:
    code = getattr(getattr(item, "function", None), "__code__", None)
    return code is not None and "importorskip" in code.co_names and "torch" in code.co_consts


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if fnmatch.fnmatch(item.path.name, TORCH_FILES) or _calls_importorskip_torch(item):
            item.add_marker(pytest.mark.torch)


def _fail_skip(report: Any, why: str) -> None:
    """Turn a skip report into a failure that says why, and what the skip said."""
    said = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = f"{why}\n(it skipped: {said})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.skipped:
        is_torch = item.get_closest_marker("torch") is not None
        if REQUIRE_TORCH and is_torch:
            _fail_skip(report, "MINIGRAD_REQUIRE_TORCH=1: this torch test must run, not skip")
        elif not is_torch and NO_TORCH in str(report.longrepr):
            _fail_skip(report, "this test skips without torch but is not a torch test, so CI's "
                               "torch run would never run it: call pytest.importorskip('torch') "
                               "in the test itself or mark it @pytest.mark.torch")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    if report.skipped and isinstance(collector, pytest.Module):
        if fnmatch.fnmatch(collector.path.name, TORCH_FILES):
            if REQUIRE_TORCH:
                _fail_skip(report, "MINIGRAD_REQUIRE_TORCH=1: this torch module must run")
        elif NO_TORCH in str(report.longrepr):
            _fail_skip(report, f"this module skips without torch, but only files named "
                               f"{TORCH_FILES} are torch modules, so CI's torch run would never "
                               f"run it: rename it")
    return report
