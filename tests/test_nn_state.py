"""minigrad.nn module state: what `Module.__setattr__` registers, frozen parameters, buffers and
the other module utilities, `load_state_dict`'s report, and that walking a module leaves no
reference cycle behind."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn


def mlp(seed: int = 0) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(3, 4, rng=rng), nn.ReLU(), nn.Linear(4, 2, rng=rng))


MLP_KEYS = ["0.weight", "0.bias", "2.weight", "2.bias"]


class Norm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = mg.tensor(np.ones(3), requires_grad=True)
        self.register_buffer("mean", np.zeros(3))
        self.register_buffer("count", 0.0)

    def forward(self, x: Any) -> Any:
        return (x - self.mean) * self.scale


class Tree(nn.Module):
    """Registered without super().__init__(): a child, a container, a buffer, a parameter."""

    def __init__(self) -> None:
        self.norm = Norm()
        self.blocks = [nn.Linear(3, 3, rng=0), nn.Tanh()]
        self.register_buffer("steps", np.zeros((), dtype=np.int64))
        self.gain = mg.tensor(np.ones(1), requires_grad=True)

    def forward(self, x: Any) -> Any:
        return self.blocks[1](self.blocks[0](self.norm(x))) * self.gain


# --- registration at __setattr__ ----------------------------------------------------------------
def test_setattr_registers_by_value_and_a_container_stands_where_it_was_set():
    class M(nn.Module):
        def __init__(self) -> None:
            self.ws = [mg.tensor(np.ones(2), requires_grad=True)]  # like a ParameterList
            self.const = mg.tensor(np.ones(2))  # no grad: a plain attribute
            self.lin = nn.Linear(2, 2, rng=0)
            self.scale = mg.tensor(np.ones(2), requires_grad=True)

        def forward(self, x: Any) -> Any:
            return x

    m = M()
    m.ws.append(mg.tensor(np.ones(2), requires_grad=True))  # containers are opened at each walk
    # PyTorch's order: the module's own parameters, then its children, a container among them
    assert [k for k, _ in m.named_parameters()] == [
        "scale", "ws.0", "ws.1", "lin.weight", "lin.bias"]
    assert [k for k, _ in m.named_children()] == ["lin"]
    del m.scale
    assert "scale" not in m.state_dict()
    m.scale = mg.tensor(np.ones(2), requires_grad=True)  # registered again, now last of its kind
    assert list(m.state_dict())[:1] == ["scale"]


def test_a_parameter_name_keeps_its_kind():
    lin = nn.Linear(2, 2, rng=0)
    with pytest.raises(TypeError, match=r"Linear.weight is a parameter.*got a Tensor computed"):
        lin.weight = lin.weight * 2.0  # recorded on the tape: not a leaf
    lin.weight = mg.tensor(np.zeros((2, 2)))  # a leaf without grad: still the parameter
    assert [k for k, _ in lin.named_parameters()] == ["weight", "bias"]
    assert list(lin.state_dict()) == ["weight", "bias"]  # in its place
    with pytest.raises(TypeError, match=r"Linear.bias is a parameter: assign a leaf Tensor or "
                                        r"None, got ndarray"):
        lin.bias = np.zeros(2)
    lin.bias = None  # allowed, as in PyTorch: no longer saved
    assert list(lin.state_dict()) == ["weight"]
    del lin.weight  # frees the name for anything
    lin.weight = np.eye(2)
    assert list(lin.state_dict()) == []


def test_a_buffer_name_keeps_its_kind():
    norm = Norm()
    norm.mean = mg.tensor([1.0, 2.0, 3.0])
    assert [k for k, _ in norm.named_buffers()] == ["mean", "count"]
    with pytest.raises(TypeError, match=r"Norm.mean is a buffer: assign a Tensor or None, "
                                        r"got ndarray"):
        norm.mean = np.zeros(3)
    np.testing.assert_array_equal(norm.mean.data, [1.0, 2.0, 3.0])


def test_attributes_named_like_the_library_s_helpers_do_not_break_the_walk():
    class M(nn.Module):
        def __init__(self) -> None:
            self._own, self._walk, self._named, self._registry = 1, [2], {"a": 3}, None
            self.lin = nn.Linear(2, 2, rng=0)

        def forward(self, x: Any) -> Any:
            return self.lin(x)

    m = M()
    assert list(m.state_dict()) == ["lin.weight", "lin.bias"]
    assert [k for k, _ in m.named_children()] == ["lin"] and "(lin): Linear" in repr(m)
    m(np.ones((1, 2))).sum().backward()
    m.zero_grad()
    assert m.lin.weight.grad is None


# --- frozen parameters ----------------------------------------------------------------------------
def test_frozen_parameters_stay_parameters():
    m = mlp()
    assert m[0].requires_grad_(False) is m[0]
    assert not m[0].weight.requires_grad and not m[0].bias.requires_grad
    assert [k for k, _ in m.named_parameters()] == MLP_KEYS
    assert len(list(m.parameters())) == 4 and list(m.state_dict()) == MLP_KEYS
    m.requires_grad_()
    assert all(p.requires_grad for p in m.parameters())


@pytest.mark.parametrize("strict", [True, False])
def test_frozen_parameters_load(strict: bool):
    m = mlp(0).requires_grad_(False)
    full = mlp(5).state_dict()
    assert m.load_state_dict(full, strict=strict) == nn.IncompatibleKeys([], [])
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, full[k])
    assert not any(p.requires_grad for p in m.parameters())  # loading leaves the flag alone


# --- module utilities -----------------------------------------------------------------------------
def test_buffers_children_and_modules():
    tree = Tree()
    assert [k for k, _ in tree.named_buffers()] == ["steps", "norm.mean", "norm.count"]
    assert all(isinstance(b, mg.Tensor) and not b.requires_grad for b in tree.buffers())
    assert [k for k, _ in tree.named_buffers(prefix="t")][0] == "t.steps"
    assert list(tree.state_dict()) == ["gain", "steps", "norm.scale", "norm.mean", "norm.count",
                                       "blocks.0.weight", "blocks.0.bias"]
    assert [k for k, _ in tree.named_children()] == ["norm", "blocks.0", "blocks.1"]
    assert [type(m).__name__ for m in tree.children()] == ["Norm", "Linear", "Tanh"]
    assert [m for m in tree.modules()][0] is tree
    assert [k for k, _ in tree.named_modules(prefix="t")] == [
        "t", "t.norm", "t.blocks.0", "t.blocks.1"]
    shared = nn.Linear(2, 2, rng=0)
    net = nn.Sequential(shared, nn.Tanh(), shared)
    assert list(net.children()) == [shared, net[1]]  # each module once, as in PyTorch


def test_apply_visits_children_before_their_parent_each_once():
    tree = Tree()
    seen: list[str] = []
    assert tree.apply(lambda m: seen.append(type(m).__name__)) is tree
    assert seen == ["Norm", "Linear", "Tanh", "Tree"]
    shared = nn.Linear(2, 2, rng=0)
    calls: list[nn.Module] = []
    nn.Sequential(shared, nn.Tanh(), shared).apply(calls.append)
    assert [type(m).__name__ for m in calls] == ["Linear", "Tanh", "Sequential"]

    def zero_linears(m: nn.Module) -> None:  # the common use: initialise layers by type
        if isinstance(m, nn.Linear):
            m.weight.data[...] = 0.0

    tree.apply(zero_linears)
    assert not tree.blocks[0].weight.data.any()


# --- load_state_dict's report ---------------------------------------------------------------------
class _Unconvertible:
    """What a torch Parameter that requires grad does when NumPy asks for its array."""

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise RuntimeError("Can't call numpy() on Tensor that requires grad.")


def test_load_state_dict_files_each_problem_under_its_own_heading():
    m = mlp()
    before = m.state_dict()
    sd = mlp(1).state_dict()
    sd["0.weight"] = _Unconvertible()
    sd["2.bias"] = np.array(["a", "b"])
    sd["0.bias"] = np.zeros(5)
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd)
    lines = str(info.value).splitlines()
    (values,) = [line for line in lines if "not arrays of real numbers" in line]
    (shapes,) = [line for line in lines if "shape mismatches" in line]
    assert "0.weight: cannot convert _Unconvertible to an array (Can't call numpy()" in values
    assert "2.bias: ndarray of dtype <U1 does not hold real numbers" in values
    assert shapes == "  shape mismatches: 0.bias: checkpoint shape (5,), module shape (4,)"
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_of_torch_parameters_says_they_are_not_arrays():
    torch = pytest.importorskip("torch")
    t = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match=r"not arrays of real numbers: weight: cannot convert"):
        nn.Linear(2, 2, rng=0).load_state_dict(dict(t.named_parameters()))


# --- no reference cycles --------------------------------------------------------------------------
def _load_own(m: nn.Module) -> Any:
    return m.load_state_dict(m.state_dict())


CALLS: dict[str, Callable[[nn.Module], Any]] = {
    "parameters": lambda m: list(m.parameters()),
    "named_parameters": lambda m: list(m.named_parameters()),
    "buffers": lambda m: list(m.buffers()),
    "children": lambda m: list(m.children()),
    "named_modules": lambda m: list(m.named_modules()),
    "state_dict": lambda m: m.state_dict(),
    "load_state_dict": _load_own,
    "repr": repr,
    "zero_grad": lambda m: m.zero_grad(),
    "train": lambda m: m.train(),
    "apply": lambda m: m.apply(lambda _: None),
    "requires_grad_": lambda m: m.requires_grad_(False),
    "first parameter only": lambda m: next(m.parameters()),  # a walk left unfinished
}


@pytest.mark.parametrize("call", list(CALLS))
def test_walking_a_module_leaves_no_reference_cycle(call: str):
    """With the garbage collector off, `del model` must free the model and its arrays at once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        model = Tree()
        module, array = weakref.ref(model), weakref.ref(model.blocks[0].weight.data)
        CALLS[call](model)
        del model
        assert module() is None and array() is None
    finally:
        if enabled:
            gc.enable()
