"""mg.save / mg.load: exact round trips of nested state, never pickle, atomic writes, and a
clear ValueError for every kind of wrong file."""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from minigrad import nn, optim


def _checkpoint() -> dict:
    net = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Tanh(), nn.Linear(4, 2, rng=1))
    opt = optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    net(np.ones((2, 3))).sum().backward()
    opt.step()
    return {"model": net.state_dict(), "optim": opt.state_dict(), "episode": 120,
            "best": 487.5, "solved": False, "note": "seed 3", "env": None,
            "returns": [9.0, 14.0, 500.0], "shape": (4, 2)}


def assert_same(a, b, where="state"):
    """Equal values AND equal types, recursively (an int must come back an int)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def test_round_trip_of_a_training_checkpoint(tmp_path):
    state = _checkpoint()
    mg.save(state, tmp_path / "ck.npz")
    back = mg.load(tmp_path / "ck.npz")
    assert_same(state, back)
    assert back["optim"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert list(back["optim"]["state"]) == [0, 1, 2, 3]  # int keys stay ints


def test_archive_holds_dotted_entries_readable_without_pickle(tmp_path):
    mg.save(_checkpoint(), tmp_path / "ck.npz")
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as f:
        names = set(f.files)
        assert {"model.0.weight", "model.2.bias", "optim.state.0.exp_avg",
                "optim.state.3.exp_avg_sq", "__minigrad__"} <= names
        np.testing.assert_array_equal(f["model.0.weight"],
                                      _checkpoint()["model"]["0.weight"])
    with zipfile.ZipFile(tmp_path / "ck.npz") as z:  # every entry is a plain .npy
        for info in z.infolist():
            assert info.filename.endswith(".npy")


def test_a_plain_state_dict_keeps_its_dotted_keys(tmp_path):
    sd = nn.Sequential(nn.Linear(2, 3, rng=0), nn.ReLU(), nn.Linear(3, 1, rng=1)).state_dict()
    mg.save(sd, tmp_path / "policy.npz")
    back = mg.load(tmp_path / "policy.npz")
    assert list(back) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # not split at the dots
    assert_same(sd, back)


def test_every_supported_leaf_round_trips(tmp_path):
    state = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i64": np.array([-(2 ** 62), 3]), "u8": np.array([0, 255], np.uint8),
        "bool": np.array([True, False]), "empty": np.zeros((0, 3)), "zero_d": np.array(2.5),
        "strings": np.array(["a", "bé"]), "fortran": np.asfortranarray(np.ones((2, 3))),
        "np_scalar": np.float32(1.5), "np_int": np.int64(7),
        "tensor": mg.tensor([1.0, 2.0], requires_grad=True),
        "big_int": 2 ** 80, "neg": -3, "float": 0.1, "inf": math.inf, "ninf": -math.inf,
        "nan": math.nan, "t": True, "none": None, "text": "ü ✓", "empty_list": [],
        "nested_list": [[1, 2], [3.5]], "tuple": (1, "a", None),
        "mixed": [np.ones(2), {"k": 1}],
        7: "int key", "a.b": np.ones(1), "a": {"b": np.zeros(1)},  # same dotted name twice
        "file": np.ones(2), "allow_pickle": 1, "__minigrad__": np.ones(1),  # savez's names
        "": {"": 1},
    }
    mg.save(state, tmp_path / "all.npz")
    back = mg.load(tmp_path / "all.npz")
    expected = dict(state, tensor=np.array([1.0, 2.0]))
    assert_same(expected, back)


_leaves = (st.none() | st.booleans() | st.integers() | st.text(max_size=5)
           | st.floats(allow_nan=False) | st.sampled_from([math.inf, -math.inf])
           | st.builds(lambda n, seed: np.random.default_rng(seed).normal(size=n),
                       st.integers(0, 4), st.integers(0, 9))
           | st.builds(lambda v: np.array(v, np.int32), st.lists(st.integers(-9, 9), max_size=3)))
_keys = st.text(alphabet="ab.0_", max_size=4) | st.integers(-3, 3)
_trees = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=3)
                      | st.tuples(inner, inner) | st.dictionaries(_keys, inner, max_size=3),
                      max_leaves=12)


@given(tree=_trees)
def test_any_nesting_round_trips(tmp_path_factory, tree):
    path = tmp_path_factory.getbasetemp() / "any_nesting.npz"  # overwritten each example
    mg.save(tree, path)
    assert_same(tree, mg.load(path))


def test_save_writes_exactly_the_given_path(tmp_path):
    mg.save({"x": 1}, str(tmp_path / "policy.ckpt"))
    assert os.listdir(tmp_path) == ["policy.ckpt"]
    assert mg.load(str(tmp_path / "policy.ckpt")) == {"x": 1}


def test_save_into_a_missing_directory_names_the_directory(tmp_path):
    target = tmp_path / "runs" / "ckpt.npz"
    with pytest.raises(FileNotFoundError, match=r"save: the directory .*runs.* does not exist"):
        mg.save({"w": np.ones(2)}, target)
    assert not (tmp_path / "runs").exists()


def test_save_refuses_what_it_cannot_store_without_pickle(tmp_path):
    path = tmp_path / "ck.npz"
    mg.save({"ok": 1}, path)
    with pytest.raises(TypeError, match=r"model\.layer of type Linear; save its .state_dict"):
        mg.save({"model": {"layer": nn.Linear(2, 2)}}, path)
    with pytest.raises(TypeError, match=r"bad is an object array"):
        mg.save({"bad": np.array([{}, 1], dtype=object)}, path)
    with pytest.raises(TypeError, match="dict keys must be str or int"):
        mg.save({(1, 2): 3}, path)
    assert mg.load(path) == {"ok": 1}
    assert os.listdir(tmp_path) == ["ck.npz"]


# --- atomic writes ------------------------------------------------------------------------------
class CrashError(Exception):
    pass


def _crashing_savez(real):
    """np.savez that writes part of the archive, then dies."""
    def savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half of a zip archive")
        raise CrashError("killed mid-save")
    return savez


@pytest.mark.parametrize("error", [CrashError, KeyboardInterrupt])
def test_a_crash_mid_save_leaves_the_earlier_checkpoint(tmp_path, monkeypatch, error):
    path = tmp_path / "ck.npz"
    good = _checkpoint()
    mg.save(good, path)
    real = np.savez

    def savez(file, *args, **kwargs):
        real(file, *args, **kwargs)  # the whole archive is written...
        file.truncate(file.tell() // 2)  # ...then half of it is lost as we die
        raise error("killed mid-save")

    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(error):
        mg.save({"model": {}, "episode": 999}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck.npz"]  # no temporary file left behind
    assert_same(mg.load(path), good)


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_a_crash_before_the_rename_leaves_the_earlier_checkpoint(tmp_path, monkeypatch, where):
    path = tmp_path / "ck.npz"
    mg.save({"v": 1}, path)

    def die(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, where, die)
    with pytest.raises(OSError, match="disk full"):
        mg.save({"v": 2}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck.npz"]
    assert mg.load(path) == {"v": 1}
    mg.save({"v": 3}, path)  # and a later save replaces it
    assert mg.load(path) == {"v": 3}


def test_a_crash_on_the_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", _crashing_savez(np.savez))
    with pytest.raises(CrashError):
        mg.save({"v": 1}, tmp_path / "ck.npz")
    assert os.listdir(tmp_path) == []


def test_save_into_a_missing_directory_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError):
        mg.save({"v": 1}, tmp_path / "nope" / "ck.npz")


# --- wrong files --------------------------------------------------------------------------------
def _bad(path: Path, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as info:
        mg.load(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_truncated_files_are_a_clear_value_error(tmp_path):
    path = tmp_path / "ck.npz"
    mg.save(_checkpoint(), path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 10, 3):
        path.write_bytes(data[:cut])
        _bad(path, "not a|truncated or corrupt")


def test_corrupt_bytes_are_a_clear_value_error(tmp_path):
    path = tmp_path / "ck.npz"
    mg.save({"w": np.arange(1000.0)}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the array's bytes: the zip CRC catches it
    path.write_bytes(bytes(data))
    _bad(path, "truncated or corrupt")


def test_foreign_files_are_a_clear_value_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("weights: 1 2 3\n")
    _bad(text, "not a .npz")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _bad(empty, "is empty")
    npy = tmp_path / "a.npy"
    np.save(npy, np.ones(3))
    _bad(npy, "a .npy array")
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.ones(3))
    _bad(plain, "not written by mg.save.*np.load")
    other = tmp_path / "other.npz"
    np.savez(other, __minigrad__=np.frombuffer(b'{"format": "else"}', np.uint8))
    _bad(other, "not a minigrad header")
    junk = tmp_path / "junk.npz"
    np.savez(junk, __minigrad__=np.frombuffer(b"\xff\xfe not json", np.uint8))
    _bad(junk, "truncated or corrupt")


class _Boom:
    def __reduce__(self):
        return (os.mkdir, (str(_Boom.target),))


def test_a_pickle_is_refused_and_never_run(tmp_path):
    _Boom.target = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps({"w": _Boom()}))
    _bad(path, "a pickle")
    # an object array (pickled inside the archive) that the header names is refused too
    arch = tmp_path / "evil2.npz"
    meta = b'{"format": "minigrad-checkpoint", "version": 1, "tree": {"array": "w"}}'
    np.savez(arch, __minigrad__=np.frombuffer(meta, np.uint8),
             w=np.array([_Boom(), 1], dtype=object))
    _bad(arch, "Object arrays cannot be loaded")
    assert not _Boom.target.exists()


def test_mismatched_files_are_a_clear_value_error(tmp_path):
    missing = tmp_path / "missing.npz"
    meta = b'{"format": "minigrad-checkpoint", "version": 1, "tree": {"array": "w"}}'
    np.savez(missing, __minigrad__=np.frombuffer(meta, np.uint8))
    _bad(missing, "entry 'w' is missing")
    extra = tmp_path / "extra.npz"
    meta = b'{"format": "minigrad-checkpoint", "version": 1, "tree": {"value": 1}}'
    np.savez(extra, __minigrad__=np.frombuffer(meta, np.uint8), w=np.ones(2))
    _bad(extra, r"not described by its header: \['w'\]")
    newer = tmp_path / "newer.npz"
    meta = b'{"format": "minigrad-checkpoint", "version": 99, "tree": {"value": 1}}'
    np.savez(newer, __minigrad__=np.frombuffer(meta, np.uint8))
    _bad(newer, "version 99")
    malformed = tmp_path / "malformed.npz"
    meta = b'{"format": "minigrad-checkpoint", "version": 1, "tree": {"dict": 5}}'
    np.savez(malformed, __minigrad__=np.frombuffer(meta, np.uint8))
    _bad(malformed, "truncated or corrupt")


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        mg.load(tmp_path / "nope.npz")


def test_loading_into_a_different_model_names_the_mismatch(tmp_path):
    mg.save(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).state_dict(),
            tmp_path / "ck.npz")
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(RuntimeError, match=r"0.weight: checkpoint shape \(8, 4\), module "
                                           r"shape \(16, 4\)"):
        other.load_state_dict(mg.load(tmp_path / "ck.npz"))
