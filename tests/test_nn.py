"""minigrad.nn: module tree and names, checkpoints, Linear, losses, gradient clipping.

Tests marked by `pytest.importorskip("torch")` compare with PyTorch and run only where it is
installed; everything else checks against formulas written out in NumPy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F  # noqa: N812  (PyTorch's spelling)
from minigrad.transforms import toposort


def mlp(seed: int = 0, dtype=np.float64) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(4, 16, rng=rng, dtype=dtype), nn.ReLU(),
                         nn.Linear(16, 2, rng=rng, dtype=dtype))


class Net(nn.Module):
    """A tree with every kind of container the walk must open."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 5, rng=0), nn.Tanh(), nn.Linear(5, 5, rng=1))
        self.heads = [nn.Linear(5, 2, rng=2), nn.Linear(5, 1, bias=False, rng=3)]
        self.extra = {"gate": nn.Linear(5, 1, rng=4)}
        self.scale = mg.tensor(np.ones(5), requires_grad=True)  # set last, listed first
        self.register_buffer("running", np.zeros(5))  # saved, never optimized
        self.name = "net"  # plain attributes are ignored
        self.frozen = mg.tensor(np.ones(2))  # a Tensor without grad is not state

    def forward(self, x):
        h = self.body(x) * self.scale
        return self.heads[0](h), self.heads[1](h), self.extra["gate"](h)


NET_KEYS = ["scale", "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
            "heads.0.weight", "heads.0.bias", "heads.1.weight", "extra.gate.weight",
            "extra.gate.bias"]


# --- the tree ---------------------------------------------------------------------------------
def test_sequential_names_and_layouts_are_pytorchs():
    net = mlp()
    assert [(k, p.shape) for k, p in net.named_parameters()] == [
        ("0.weight", (16, 4)), ("0.bias", (16,)), ("2.weight", (2, 16)), ("2.bias", (2,))]
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(list(net.parameters())) == 4


def test_walk_opens_attributes_lists_dicts_and_puts_own_tensors_first():
    net = Net()
    assert [k for k, _ in net.named_parameters()] == NET_KEYS
    assert list(net.state_dict()) == ["scale", "running"] + NET_KEYS[1:]
    assert [k for k, _ in net.named_parameters(prefix="model")] == \
        ["model." + k for k in NET_KEYS]
    assert [type(m).__name__ for m in net.children()] == ["Sequential", "Linear", "Linear",
                                                          "Linear"]
    assert [name for name, _ in net.named_modules()] == [
        "", "body", "body.0", "body.1", "body.2", "heads.0", "heads.1", "extra.gate"]


def test_shared_parameters_are_listed_once_but_saved_under_each_name():
    lin = nn.Linear(2, 2, rng=0)
    net = nn.Sequential(lin, nn.Tanh(), lin)
    assert [k for k, _ in net.named_parameters()] == ["0.weight", "0.bias"]
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_cycles_do_not_recurse_forever():
    class Parent(nn.Module):
        def __init__(self):
            self.child = nn.Linear(2, 2, rng=0)
            self.child.parent = self
            self.me = self

    p = Parent()
    assert [k for k, _ in p.named_parameters()] == ["child.weight", "child.bias"]
    assert list(p.state_dict()) == ["child.weight", "child.bias"]


def test_intermediate_tensors_kept_on_a_module_are_not_state():
    class Cache(nn.Module):
        def __init__(self):
            self.lin = nn.Linear(2, 2, rng=0)

        def forward(self, x):
            self.last = self.lin(x)  # a non-leaf Tensor: not a parameter, not a buffer
            return self.last

    m = Cache()
    m(np.ones((1, 2)))
    assert list(m.state_dict()) == ["lin.weight", "lin.bias"]


def test_buffers_are_saved_not_optimized_and_other_tensors_are_not_state():
    class Norm(nn.Module):
        def __init__(self):
            self.register_buffer("mean", np.zeros(3))
            self.w = mg.tensor(np.ones(3), requires_grad=True)
            self.seen = [mg.tensor(np.ones(3)) for _ in range(2)]  # e.g. observations kept

    m = Norm()
    assert list(m.state_dict()) == ["w", "mean"]  # PyTorch's order: parameters, then buffers
    assert [k for k, _ in m.named_parameters()] == ["w"]
    m.mean = mg.tensor([1.0, 2.0, 3.0])  # a new value is still the buffer
    other = Norm()
    other.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(other.mean.data, [1.0, 2.0, 3.0])


def test_train_eval_are_recursive_and_zero_grad_resets_to_none():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    out = net(np.ones((2, 3)))
    (out[0].sum() + out[1].sum() + out[2].sum()).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def _give_grads(module: nn.Module) -> list[mg.Tensor]:
    params = list(module.parameters())
    for p in params:
        p.grad = np.ones_like(p.data)
    return params


def test_zero_grad_sees_every_change_to_the_tree():
    """zero_grad reads the registries and opens containers at every call: a parameter set,
    replaced, frozen or deleted on any module, and a Module added to a list or dict, are seen."""
    net = nn.Sequential(nn.Linear(2, 3, rng=0), nn.ReLU(), nn.Linear(3, 1, rng=1))

    def freeze() -> None:
        net[2].weight.requires_grad = False  # a frozen parameter's stale grad is reset too

    changes = [
        lambda: setattr(net[0], "weight", mg.tensor(np.ones((3, 2)), requires_grad=True)),
        lambda: setattr(net[1], "extra", mg.tensor(np.ones(2), requires_grad=True)),
        lambda: setattr(net, "3", nn.Linear(1, 1, rng=2)),
        lambda: delattr(net[1], "extra"),
        lambda: net[0].register_buffer("stat", np.zeros(3)),
        freeze,
    ]
    for change in changes:
        net.zero_grad()
        change()
        params = _give_grads(net)
        net.zero_grad()
        assert all(p.grad is None for p in params)

    class Holder(nn.Module):
        def __init__(self, container: list[nn.Module] | dict[str, nn.Module]) -> None:
            self.blocks = container

        def forward(self, x):
            return x

    for container in ([nn.Linear(2, 2, rng=0)], {"first": nn.Linear(2, 2, rng=0)}):
        holder = Holder(container)
        holder.zero_grad()
        late = nn.Linear(2, 1, rng=1)
        if isinstance(container, list):
            container.append(late)  # no attribute is set: only the list changed
        else:
            container["late"] = late
        params = _give_grads(holder)
        holder.zero_grad()
        assert len(params) == 4
        assert all(p.grad is None for p in params), type(container)


def test_module_without_super_init_and_forward_missing():
    class Bare(nn.Module):
        def __init__(self):
            self.w = mg.tensor([1.0, 2.0], requires_grad=True)

    b = Bare()
    assert b.training and [k for k, _ in b.named_parameters()] == ["w"]
    with pytest.raises(NotImplementedError, match="Bare"):
        b(1.0)


def test_repr_nests():
    text = repr(Net())
    assert "(body): Sequential(" in text and "(0): Linear(in_features=3, out_features=5" in text
    assert "(heads.1): Linear(in_features=5, out_features=1, bias=False)" in text


# --- state_dict / load_state_dict -------------------------------------------------------------
def test_state_dict_values_are_owned_copies():
    net = mlp()
    sd = net.state_dict()
    for (_, p), v in zip(net.named_parameters(), sd.values()):
        assert type(v) is np.ndarray and v.flags.owndata and v.flags.writeable
        assert not np.shares_memory(v, p.data)
    sd["0.weight"][...] = 7.0
    assert not np.any(net[0].weight.data == 7.0)


def test_load_state_dict_round_trip_gives_the_same_function():
    a, b = mlp(0), mlp(1)
    x = np.random.default_rng(2).normal(size=(5, 4))
    assert not np.allclose(a(x).data, b(x).data)
    assert b.load_state_dict(a.state_dict()) == nn.IncompatibleKeys([], [])
    np.testing.assert_array_equal(a(x).data, b(x).data)
    # the loaded arrays are b's own, not a's
    assert not np.shares_memory(a[0].weight.data, b[0].weight.data)
    # written in place: references to the parameters' arrays stay valid
    arrays = [p.data for p in b.parameters()]
    b.load_state_dict(mlp(3).state_dict())
    assert all(p.data is arr for p, arr in zip(b.parameters(), arrays))
    np.testing.assert_array_equal(b(x).data, mlp(3)(x).data)


def test_load_state_dict_reports_every_problem_at_once_and_changes_nothing():
    net = mlp()
    before = net.state_dict()
    bad = mlp().state_dict()
    del bad["0.bias"], bad["2.bias"]
    bad["0.weight"] = np.zeros((16, 5))
    bad["3.weight"] = np.zeros(2)
    bad["extra"] = np.zeros(1)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(bad)
    msg = str(info.value)
    for needle in ("missing keys: 0.bias, 2.bias", "unexpected keys: 3.weight, extra",
                   "0.weight: checkpoint shape (16, 5), module shape (16, 4)"):
        assert needle in msg
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_non_strict_returns_the_skipped_keys():
    net = mlp(0)
    sd = mlp(1).state_dict()
    sd.pop("2.bias")
    sd["junk"] = np.zeros(3)
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["2.bias"] and result.unexpected_keys == ["junk"]
    np.testing.assert_array_equal(net[0].weight.data, sd["0.weight"])
    with pytest.raises(RuntimeError, match="0.bias"):  # shapes are checked even then
        net.load_state_dict({"0.bias": np.zeros(3)}, strict=False)


def test_load_state_dict_casts_to_the_parameter_dtype_and_takes_tensors_and_lists():
    net = mlp(dtype=np.float32)
    sd = {k: mg.tensor(v.astype(np.float64)) for k, v in mlp(1).state_dict().items()}
    sd["2.bias"] = [0.5, -0.5]
    net.load_state_dict(sd)
    assert all(p.dtype == np.float32 for p in net.parameters())
    np.testing.assert_array_equal(net[2].bias.data, np.array([0.5, -0.5], np.float32))


def test_load_state_dict_works_while_a_graph_holds_the_parameters():
    net = mlp(0)
    x = np.ones((1, 4))
    out = net(x)  # the tape holds the weights read-only
    net.load_state_dict(mlp(1).state_dict())
    out.sum().backward()  # the old graph still differentiates at the values it used
    np.testing.assert_array_equal(net(x).data, mlp(1)(x).data)


# --- Linear ------------------------------------------------------------------------------------
def test_linear_init_is_pytorchs_uniform_bound():
    lin = nn.Linear(400, 300, rng=0)
    bound = 1 / math.sqrt(400)
    for p in (lin.weight, lin.bias):
        assert np.abs(p.data).max() <= bound
    w = lin.weight.data
    assert abs(w.mean()) < 0.02 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound  # std of U(-k, k) is k/√3
    assert np.abs(lin.bias.data).max() > 0.9 * bound


def test_linear_parameters_are_owned_leaves_and_seeded():
    lin = nn.Linear(3, 2, rng=5, dtype=np.float32)
    for p in (lin.weight, lin.bias):
        assert p.is_leaf and p.requires_grad and p.dtype == np.float32
        assert p.data.flags.owndata and p.data.flags.writeable and p.data.flags.c_contiguous
    np.testing.assert_array_equal(lin.weight.data, nn.Linear(3, 2, rng=5,
                                                             dtype=np.float32).weight.data)
    gen = np.random.default_rng(5)
    np.testing.assert_array_equal(nn.Linear(3, 2, rng=gen, dtype=np.float32).weight.data,
                                  lin.weight.data)
    assert not np.array_equal(nn.Linear(3, 2, rng=gen).weight.data, lin.weight.data)
    assert nn.Linear(3, 2, bias=False).bias is None
    assert list(nn.Linear(3, 2, bias=False).state_dict()) == ["weight"]
    with pytest.raises(TypeError, match="rng"):
        nn.Linear(3, 2, rng="seed")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating"):
        nn.Linear(3, 2, dtype=np.int64)


def test_linear_forward_and_gradients():
    lin = nn.Linear(3, 2, rng=0)
    w, b = lin.weight.data, lin.bias.data
    x = np.random.default_rng(1).normal(size=(4, 3))
    y = lin(x)
    np.testing.assert_allclose(y.data, x @ w.T + b)
    g = np.random.default_rng(2).normal(size=(4, 2))
    y.backward(g)
    np.testing.assert_allclose(lin.weight.grad, g.T @ x)
    np.testing.assert_allclose(lin.bias.grad, g.sum(0))
    # 1-D and batched inputs follow matmul's rules
    np.testing.assert_allclose(lin(x[0]).data, x[0] @ w.T + b)
    assert lin(np.ones((5, 4, 3))).shape == (5, 4, 2)
    # float32 in, float32 out
    assert nn.Linear(3, 2, dtype=np.float32)(np.ones((1, 3), np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match=r"Linear\(3, 2\).*\(4, 5\).*in_features=3"):
        lin(np.ones((4, 5)))


def test_linear_passes_gradcheck():
    lin = nn.Linear(3, 2, rng=0)
    x = mg.tensor(np.random.default_rng(1).normal(size=(4, 3)), requires_grad=True)
    assert mg.gradcheck(lambda x, w, b: (x @ w.T + b).tanh(), [x, lin.weight, lin.bias])


def test_sequential_container():
    net = mlp()
    assert len(net) == 3 and isinstance(net[1], nn.ReLU) and list(net)[2] is net[2]
    head = net[:2]
    assert isinstance(head, nn.Sequential) and head(np.ones((1, 4))).shape == (1, 16)
    with pytest.raises(TypeError, match="argument 1 is a function, not a Module"):
        nn.Sequential(nn.Linear(2, 2), lambda t: t.relu())  # type: ignore[arg-type]


def test_sequential_calls_each_layer_as_written():
    x = mg.tensor(np.random.default_rng(4).normal(size=(3, 4)))

    class Leaky(nn.ReLU):  # a subclass keeps its own forward
        def forward(self, x):
            return mg.maximum(x, x * 0.1)

    net = nn.Sequential(nn.Linear(4, 3, rng=0), Leaky())
    pre = net[0](x).data
    np.testing.assert_allclose(net(x).data, np.maximum(pre, 0.1 * pre))
    patched = nn.ReLU()
    patched.forward = lambda t: t.tanh()  # type: ignore[method-assign]
    net = nn.Sequential(nn.Linear(4, 3, rng=0), patched)
    np.testing.assert_allclose(net(x).data, np.tanh(pre))
    with pytest.raises(ValueError, match=r"Linear\(4, 3\): input of shape \(2, 5\) must end in "
                                         r"in_features=4"):
        nn.Sequential(nn.Linear(4, 3), nn.ReLU())(mg.tensor(np.ones((2, 5))))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_relu_is_linear_then_relu_as_one_op(bias, dtype, monkeypatch):
    """Same values, gradients and checkpoint as Linear then ReLU (with kernels on, through the
    sweep-owned kernel); one node on the tape, which keeps the output, not the pre-activation."""
    owned_calls = []
    row = nn.primitives.linear_relu
    if row.vjp_owned is not None:
        kernel = row.vjp_owned
        monkeypatch.setattr(row, "vjp_owned",
                            lambda *a, **k: owned_calls.append(1) or kernel(*a, **k))
    rng = np.random.default_rng(7)
    x = rng.normal(size=(600, 4)).astype(dtype)  # large enough for the sweep-owned kernels
    fused = nn.Sequential(nn.LinearReLU(4, 16, bias=bias, rng=1, dtype=dtype),
                          nn.Linear(16, 3, rng=2, dtype=dtype))
    plain = nn.Sequential(nn.Linear(4, 16, bias=bias, rng=1, dtype=dtype), nn.ReLU(),
                          nn.Linear(16, 3, rng=2, dtype=dtype))
    assert list(fused.state_dict()) == ["0.weight"] + ["0.bias"] * bias + ["1.weight", "1.bias"]
    outs = []
    for net in (fused, plain):
        out = net(mg.Tensor(x))
        out.log_softmax(axis=-1)[np.arange(600), rng.integers(0, 3, 600) * 0].sum().backward()
        outs.append((out.data, [p.grad for p in net.parameters()]))
    assert len(owned_calls) == (row.vjp_owned is not None)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=tol, atol=tol)
    for a, b in zip(outs[0][1], outs[1][1]):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    y = fused[0](mg.tensor(x, requires_grad=True))
    assert [n._op.name for n in toposort(y, set()) if n._op is not None] == ["linear_relu"]
    assert all(v is not None and v.shape != y.shape for v in y._values[:2])
    assert y._ans is y.data or np.shares_memory(y._ans, y.data)


def test_linear_relu_loads_a_linear_and_reports_shapes_as_itself():
    linear = nn.Linear(4, 3, rng=0)
    fused = nn.LinearReLU(4, 3, rng=5)
    fused.load_state_dict(linear.state_dict())
    x = np.random.default_rng(8).normal(size=(5, 4))
    np.testing.assert_allclose(fused(x).data, np.maximum(linear(x).data, 0), rtol=1e-13)
    assert F.linear_relu(x, linear.weight, linear.bias).data.tolist() == fused(x).data.tolist()
    with pytest.raises(ValueError, match=r"LinearReLU\(4, 3\): input of shape \(2, 5\) must end "
                                         r"in in_features=4"):
        fused(np.ones((2, 5)))
    assert repr(nn.LinearReLU(4, 3, bias=False)) == \
        "LinearReLU(in_features=4, out_features=3, bias=False)"


def test_linear_relu_checks_shapes_and_takes_its_bias_only_as_an_input():
    w = mg.tensor(np.ones((4, 3)), requires_grad=True)
    b = mg.tensor(np.ones(4), requires_grad=True)
    with pytest.raises(ValueError, match=r"linear_relu: bias of shape \(2, 5, 4\) does not fit"):
        F.linear_relu(np.ones((5, 3)), w, np.ones((2, 5, 4)))
    with pytest.raises(ValueError, match=r"linear_relu: bias of shape \(4, 1\) does not fit"):
        F.linear_relu(np.ones((4, 3)), w, np.ones((4, 1)))
    with pytest.raises(ValueError, match=r"linear_relu: input of shape \(5, 2\) and weight of "
                                         r"shape \(4, 3\) do not fit"):
        F.linear_relu(np.ones((5, 2)), w, b)
    with pytest.raises(TypeError, match="linear_relu: .*positional"):
        nn.primitives.linear_relu(np.ones((5, 3)), w, b=b)  # a keyword is a parameter: refused


def test_linear_relu_under_detect_anomaly_checks_the_pre_activation():
    """The fused op never sees x Wᵀ + b; under anomaly mode it is recorded as linear and relu."""
    x = mg.tensor([[1e200, 1e200]], requires_grad=True)
    w = mg.tensor([[-1e200, -1e200]], requires_grad=True)
    layer = nn.LinearReLU(2, 1, bias=False)
    layer.weight.data[...] = -1e200
    with np.errstate(over="ignore"):
        assert F.linear_relu(x, w).data.tolist() == [[0.0]]  # -inf, relu: no error outside
        with mg.detect_anomaly(), pytest.raises(RuntimeError, match="forward of linear"):
            F.linear_relu(x, w)
        with mg.detect_anomaly(), pytest.raises(RuntimeError, match="forward of linear"):
            layer(x)


def test_sequential_layers_are_children_named_by_index():
    net = mlp()
    assert [name for name, _ in net.named_children()] == ["0", "1", "2"]
    assert getattr(net, "2") is net[2] is net[-1] and net.layers == tuple(net)
    net.head = nn.Linear(2, 1, rng=3)  # as in PyTorch, a child set later is the next layer
    assert len(net) == 4 and net[3] is net.head and net(np.ones((1, 4))).shape == (1, 1)
    assert list(net.state_dict())[-2:] == ["head.weight", "head.bias"]


def test_activation_modules():
    x = np.linspace(-3, 3, 7).reshape(1, 7)
    np.testing.assert_allclose(nn.ReLU()(x).data, np.maximum(x, 0))
    np.testing.assert_allclose(nn.Tanh()(x).data, np.tanh(x))
    np.testing.assert_allclose(nn.Sigmoid()(x).data, 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(nn.Softmax()(x).data.sum(), 1.0)
    np.testing.assert_allclose(np.exp(nn.LogSoftmax(axis=1)(x).data), nn.Softmax(1)(x).data)
    assert nn.Identity()(x) is x


# --- losses -------------------------------------------------------------------------------------
def _ce_reference(z: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row loss logsumexp(z) − z[t] and its gradient softmax(z) − onehot(t), in float64."""
    z = z.astype(np.float64)
    m = z.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(1))
    p = np.exp(z - m)
    p /= p.sum(1, keepdims=True)
    return lse - z[np.arange(len(t)), t], p - np.eye(z.shape[1])[t]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_value_and_gradient(reduction):
    rng = np.random.default_rng(0)
    z = mg.tensor(rng.normal(size=(6, 4)), requires_grad=True)
    t = np.array([0, 3, 1, 1, 2, 0])
    loss = F.cross_entropy(z, t, reduction=reduction)
    ref, dz = _ce_reference(z.data, t)
    if reduction == "none":
        np.testing.assert_allclose(loss.data, ref, rtol=1e-12)
        loss.backward(np.ones(6))
        np.testing.assert_allclose(z.grad, dz, rtol=1e-12, atol=1e-15)
    else:
        scale = 1 / 6 if reduction == "mean" else 1.0
        np.testing.assert_allclose(loss.item(), ref.sum() * scale, rtol=1e-12)
        loss.backward()
        np.testing.assert_allclose(z.grad, dz * scale, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_at_huge_logits(dtype):
    z = mg.tensor(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [3.0, 2.0, 1.0]], dtype),
                  requires_grad=True)
    t = np.array([1, 0, 0])
    loss = F.cross_entropy(z, t, reduction="none")
    assert loss.dtype == dtype and np.all(np.isfinite(loss.data))
    ref, dz = _ce_reference(z.data, t)
    np.testing.assert_allclose(loss.data, ref, rtol=1e-6)  # 2e4, 2e4 + log 2, 0.4076
    loss.sum().backward()
    assert z.grad.dtype == dtype and np.all(np.isfinite(z.grad))
    np.testing.assert_allclose(z.grad, dz, atol=1e-6)


def test_cross_entropy_checks_its_targets():
    z = mg.tensor(np.zeros((3, 4)), requires_grad=True)
    with pytest.raises(TypeError, match=r"cross_entropy: targets must be integer.*float64"):
        F.cross_entropy(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="integer"):
        F.cross_entropy(z, np.array([True, False, True]))
    with pytest.raises(ValueError, match=r"shape \(N,\) = \(3,\).*\(3, 4\).*\(3, 1\)"):
        F.cross_entropy(z, np.array([[0], [1], [2]]))
    with pytest.raises(ValueError, match=r"target 4 is out of range for 4 classes"):
        F.cross_entropy(z, [0, 4, 1])
    with pytest.raises(ValueError, match=r"target -1 is out of range"):
        F.cross_entropy(z, [0, -1, 1])  # never wraps around like NumPy indexing would
    with pytest.raises(ValueError, match=r"logits must have shape \(N, C\), got shape \(4,\)"):
        F.cross_entropy(mg.tensor(np.zeros(4)), [1])
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(z, [0, 1, 2], reduction="avg")  # type: ignore[arg-type]
    # Tensors, lists and unsigned integers are fine as targets
    for t in (mg.tensor(np.array([0, 1, 2])), [0, 1, 2], np.array([0, 1, 2], np.uint8)):
        assert F.cross_entropy(z, t).item() == pytest.approx(math.log(4))


def test_nll_loss_on_log_softmax_is_cross_entropy():
    z = mg.tensor(np.random.default_rng(0).normal(size=(5, 3)), requires_grad=True)
    t = [2, 0, 1, 1, 0]
    a = F.nll_loss(F.log_softmax(z, axis=1), t)
    b = F.cross_entropy(z, t)
    assert a.item() == pytest.approx(b.item(), rel=1e-14)
    with pytest.raises(ValueError, match="nll_loss"):
        F.nll_loss(z, [0, 1])


@given(st.integers(1, 5), st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_cross_entropy_passes_gradcheck(n, c, seed):
    rng = np.random.default_rng(seed)
    z = mg.tensor(rng.normal(size=(n, c)) * 3, requires_grad=True)
    t = rng.integers(0, c, size=n)
    assert mg.gradcheck(lambda z: F.cross_entropy(z, t), [z])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(reduction):
    rng = np.random.default_rng(0)
    p = mg.tensor(rng.normal(size=(4, 3)), requires_grad=True)
    y = rng.normal(size=(4, 3))
    loss = F.mse_loss(p, y, reduction=reduction)
    d = p.data - y
    ref = {"mean": (d ** 2).mean(), "sum": (d ** 2).sum(), "none": d ** 2}[reduction]
    np.testing.assert_allclose(loss.data, ref, rtol=1e-14)
    loss.backward(np.ones_like(d) if reduction == "none" else None)
    np.testing.assert_allclose(p.grad, 2 * d / (d.size if reduction == "mean" else 1),
                               rtol=1e-14)
    with pytest.raises(ValueError, match=r"mse_loss: pred has shape \(4, 1\).*\(4,\)"):
        F.mse_loss(mg.tensor(np.zeros((4, 1))), np.zeros(4))


def test_functional_activations_are_the_engines():
    x = mg.tensor([[-1.0, 0.0, 2.0]])
    for f, g in ((F.relu, mg.relu), (F.tanh, mg.tanh), (F.softmax, mg.softmax),
                 (F.log_softmax, mg.log_softmax), (F.sigmoid, mg.sigmoid)):
        np.testing.assert_array_equal(f(x).data, g(x).data)


# --- clip_grad_norm_ ----------------------------------------------------------------------------
def _params_with_grads(*grads):
    ps = []
    for g in grads:
        p = mg.tensor(np.zeros(np.shape(g)), requires_grad=True)
        p.grad = None if g is None else np.array(g, dtype=float)
        ps.append(p)
    return ps


def test_clip_grad_norm_scales_all_grads_together():
    ps = _params_with_grads([3.0, 0.0], [[4.0]], None)
    total = nn.utils.clip_grad_norm_(ps, 1.0)
    assert isinstance(total, float) and total == pytest.approx(5.0)
    np.testing.assert_allclose(ps[0].grad, [3 / (5 + 1e-6), 0.0])
    np.testing.assert_allclose(ps[1].grad, [[4 / (5 + 1e-6)]])
    assert ps[2].grad is None
    new = math.sqrt(sum(float((p.grad ** 2).sum()) for p in ps[:2]))
    assert new == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_leaves_small_grads_and_takes_any_iterable():
    ps = _params_with_grads([0.3, 0.4])
    g = ps[0].grad
    assert nn.utils.clip_grad_norm_(iter(ps), 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(ps[0].grad, [0.3, 0.4])
    assert ps[0].grad is g  # in place
    assert nn.utils.clip_grad_norm_(ps[0], 0.1) == pytest.approx(0.5)  # a single Tensor
    np.testing.assert_allclose(np.linalg.norm(ps[0].grad), 0.1, rtol=1e-5)
    assert nn.utils.clip_grad_norm_(_params_with_grads(None), 1.0) == 0.0
    ps = _params_with_grads([1.0, -7.0], [2.0])
    assert nn.utils.clip_grad_norm_(ps, 1.0, norm_type=math.inf) == 7.0
    ps = _params_with_grads([1.0, -2.0], [2.0])
    assert nn.utils.clip_grad_norm_(ps, 10.0, norm_type=1) == 5.0


def test_clip_grad_norm_keeps_float32():
    p = mg.tensor(np.zeros(3, np.float32), requires_grad=True)
    p.grad = np.array([30.0, 40.0, 0.0], np.float32)
    nn.utils.clip_grad_norm_([p], 1.0)
    assert p.grad.dtype == np.float32


# --- a short training run -----------------------------------------------------------------------
def test_a_small_classifier_learns():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 2))
    y = ((x[:, 0] * x[:, 1]) > 0).astype(int)  # XOR of the signs: needs the hidden layer
    net = nn.Sequential(nn.Linear(2, 16, rng=rng), nn.Tanh(), nn.Linear(16, 2, rng=rng))
    opt = mg.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
    accuracy = (net(x).data.argmax(1) == y).mean()
    assert accuracy > 0.95


# --- PyTorch, where installed -----------------------------------------------------------------
def _torch_mlp(torch):
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
                               ).double()


def test_trained_state_dict_loads_into_the_same_torch_sequential():
    torch = pytest.importorskip("torch")
    net = mlp(0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 4))
    y = (x[:, 0] > x[:, 1]).astype(int)
    opt = mg.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    tnet = _torch_mlp(torch)
    tnet.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    with torch.no_grad():
        out = tnet(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, net(x).data, rtol=1e-12, atol=1e-12)
    # and back: torch's state dict loads into ours
    back = mlp(5)
    back.load_state_dict(tnet.state_dict())
    np.testing.assert_allclose(back(x).data, out, rtol=1e-12, atol=1e-12)


def test_names_match_torch_for_a_nested_tree():
    torch = pytest.importorskip("torch")

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(),
                                            torch.nn.Linear(5, 5))
            self.heads = torch.nn.ModuleList([torch.nn.Linear(5, 2),
                                              torch.nn.Linear(5, 1, bias=False)])
            self.extra = torch.nn.ModuleDict({"gate": torch.nn.Linear(5, 1)})
            self.scale = torch.nn.Parameter(torch.ones(5))
            self.register_buffer("running", torch.zeros(5))

    tnet = TorchNet()
    assert [k for k, _ in tnet.named_parameters()] == [k for k, _ in Net().named_parameters()]
    ours = Net().state_dict()
    assert list(tnet.state_dict()) == list(ours)
    assert [tuple(v.shape) for v in tnet.state_dict().values()] == [v.shape for v in
                                                                    ours.values()]


def test_init_matches_torchs_distribution():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.Linear(400, 300)
    ours = nn.Linear(400, 300, rng=0)
    bound = 1 / math.sqrt(400)
    for a, b in ((theirs.weight.detach().numpy(), ours.weight.data),
                 (theirs.bias.detach().numpy(), ours.bias.data)):
        assert a.shape == b.shape
        for v in (a, b):  # both U(−k, k) with k = 1/√in_features
            assert bound * 0.99 < np.abs(v).max() <= bound
        assert abs(a.std() - b.std()) < 0.05 * bound


def test_cross_entropy_and_clipping_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3)) * 5
    z[0] = [1e4, -1e4, 0]
    t = np.array([1, 0, 2, 2, 1])
    for reduction in ("mean", "sum", "none"):
        ours = mg.tensor(z, requires_grad=True)
        theirs = torch.tensor(z, requires_grad=True)
        a = F.cross_entropy(ours, t, reduction=reduction)
        b = torch.nn.functional.cross_entropy(theirs, torch.from_numpy(t), reduction=reduction)
        np.testing.assert_allclose(a.data, b.detach().numpy(), rtol=1e-12)
        a.sum().backward()
        b.sum().backward()
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)
        total = nn.utils.clip_grad_norm_([ours], 0.3)
        ttotal = torch.nn.utils.clip_grad_norm_([theirs], 0.3)
        assert total == pytest.approx(float(ttotal), rel=1e-12)
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)
