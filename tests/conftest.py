"""Shared test setup.

Hypothesis runs under the "ci" profile by default: no deadlines (timings vary on shared
machines) and derandomized (the same examples on every run, so a failure reproduces); the
strategies themselves keep values off kinks, ties and domain edges. `HYPOTHESIS_PROFILE=dev`
draws more examples, randomly.

Every test must leave this thread's grad and anomaly modes as it found them.
"""

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from minigrad.modes import MODES

settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _modes_are_restored() -> Iterator[None]:
    yield
    state = (MODES.grad_enabled, MODES.anomaly, MODES.transform_depth, MODES.vjp_of)
    assert state == (True, False, 0, None), f"a test left the modes at {state}"
