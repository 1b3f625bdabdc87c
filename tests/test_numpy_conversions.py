"""The README's promise about NumPy functions, checked against its own list: the functions that
only convert through `__array__` take the value (an ndarray, never a Tensor), because NumPy
offers a Tensor no way to intercept them; a function that does dispatch to the Tensor records
or raises (tests/test_engine_semantics.py checks those one by one)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import minigrad as mg

README = Path(__file__).resolve().parents[1] / "README.md"
# The contract (API.md) names these; the README must list them with the rest.
CONTRACT_NAMES = {"np.asarray", "np.array", "np.ascontiguousarray",
                  "np.lib.stride_tricks.as_strided", "np.vectorize"}


def readme_list() -> list[str]:
    """The `np.…` functions the README says take the value."""
    text = " ".join(README.read_text().split())
    start = text.index("Functions that only convert through `__array__`")
    sentence = text[start:text.index("Use them to leave the tape", start)]
    return re.findall(r"`(np\.[A-Za-z_.]+)`", sentence)


def resolve(name: str) -> Any:
    obj: Any = np
    for part in name.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


# How each listed function is called on a Tensor, and the value it must give.
CALLS: dict[str, Any] = {
    "np.lib.stride_tricks.as_strided": lambda f, t: f(t, shape=(2, 2), strides=(16, 8)),
    "np.vectorize": lambda f, t: f(lambda v: v * 1.0)(t),
    "np.nditer": lambda f, t: np.array([v.item() for v in f(t)]).reshape(2, 2),
    "np.require": lambda f, t: f(t, requirements="C"),
    "np.ma": lambda f, t: f.asarray(t).filled(),
    "np.random": lambda f, t: f.default_rng(0).normal(loc=t, scale=0.0),
}


def test_the_readme_lists_what_the_contract_names() -> None:
    assert CONTRACT_NAMES <= set(readme_list())


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.asmatrix's
@pytest.mark.parametrize("name", readme_list())
def test_each_listed_function_takes_the_value(name: str) -> None:
    f = resolve(name)
    if callable(f):  # no dispatch protocol reaches the Tensor: it can only convert it
        assert not isinstance(f, np.ufunc) and not hasattr(f, "_implementation"), name
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = mg.tensor(x, requires_grad=True)
    got = CALLS.get(name, lambda f, t: f(t))(f, t)
    assert isinstance(got, np.ndarray) and not isinstance(got, mg.Tensor), type(got)
    np.testing.assert_array_equal(np.asarray(got), x)


@pytest.mark.parametrize("f", [np.asarray, np.array, np.ascontiguousarray, np.asfortranarray])
def test_like_a_tensor_dispatches_and_is_refused(f: Any) -> None:
    """`like=t` hands the call to the Tensor, which has no row for it: TypeError, no copy."""
    t = mg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="not a recorded primitive"):
        f([1.0, 2.0], like=t)
