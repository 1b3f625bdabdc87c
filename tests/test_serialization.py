"""mg.save / mg.load: exact round trips of nested state, never pickle, atomic writes, and a
clear ValueError for every kind of wrong file."""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import signal
import stat
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
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
_keys = (st.text(alphabet="ab.0_", max_size=4) | st.integers(-3, 3)
         | st.sampled_from(["w", "w.npy", "npy", ".npy", "file", "__minigrad__",
                            "__minigrad__.npy", "a\\b", "a/b", "w#1"]))  # names that look alike
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
    _bad(arch, "object array .*never unpickles")
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


# --- keys that look alike, keys that cannot be stored -----------------------------------------
def test_keys_that_look_alike_in_the_archive_keep_their_own_arrays(tmp_path):
    path = tmp_path / "ck.npz"
    state = {"w": np.zeros(2), "w.npy": np.ones(2), "head": {"w": np.full(2, 2.0)},
             "head.w.npy": np.full(2, 3.0), "__minigrad__.npy": np.full(2, 4.0),
             "a\\b": np.full(2, 5.0), "a/b": np.full(2, 6.0), "w#1": np.full(2, 7.0)}
    mg.save(state, path)
    assert_same(state, mg.load(path))
    with np.load(path, allow_pickle=False) as f:  # np.load shows every array once, by name
        seen = sorted(float(f[name][0]) for name in f.files if name != "__minigrad__")
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


@pytest.mark.parametrize("state, key", [
    ({"layer\x00name": np.zeros(3), "w": np.ones(2)}, r"'layer\\x00name' in the state"),
    ({"model": {"0.weight\x00": np.zeros(3)}}, r"'0.weight\\x00' in model .*NUL"),
    ({"\x00": 1}, r"'\\x00' in the state .*NUL"),
    ({"bad\udc80": np.zeros(1)}, r"'bad\\udc80' in the state .*lone surrogate"),
])
def test_a_key_that_could_not_round_trip_is_refused_at_save(tmp_path, state, key):
    path = tmp_path / "ck.npz"
    mg.save({"v": 1}, path)
    with pytest.raises(ValueError, match=f"mg.save: the key {key}"):
        mg.save(state, path)
    assert os.listdir(tmp_path) == ["ck.npz"]
    assert mg.load(path) == {"v": 1}


def test_a_container_that_holds_itself_is_refused(tmp_path):
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match="nested deeper than 100 levels"):
        mg.save({"loop": loop}, tmp_path / "ck.npz")
    deep: dict = {"x": np.ones(1)}
    for _ in range(99):
        deep = {"d": deep}
    mg.save(deep, tmp_path / "ck.npz")  # as deep as allowed still round-trips
    assert_same(deep, mg.load(tmp_path / "ck.npz"))


# --- symlinks and modes -------------------------------------------------------------------------
def test_saving_through_a_symlink_writes_its_target(tmp_path):
    (tmp_path / "run3").mkdir()
    target = tmp_path / "run3" / "ckpt.npz"
    mg.save({"step": 1}, target)
    link = tmp_path / "latest.npz"
    link.symlink_to(os.path.join("run3", "ckpt.npz"))  # relative, as `ln -s` makes it
    chain = tmp_path / "chain.npz"
    chain.symlink_to(link)
    mg.save({"step": 2}, link)
    mg.save({"step": 3}, chain)
    assert link.is_symlink() and chain.is_symlink()
    assert mg.load(target) == mg.load(link) == mg.load(chain) == {"step": 3}
    assert sorted(os.listdir(tmp_path / "run3")) == ["ckpt.npz"]


def test_saving_through_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "latest.npz"
    link.symlink_to(tmp_path / "new.npz")
    mg.save({"step": 1}, link)
    assert link.is_symlink() and mg.load(tmp_path / "new.npz") == {"step": 1}


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_saving_over_a_checkpoint_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "private.npz"
    mg.save({"step": 1}, path)
    os.chmod(path, mode)
    mg.save({"step": 2}, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert mg.load(path) == {"step": 2}


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_new_checkpoint_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        mg.save({"step": 1}, tmp_path / "new.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == 0o640


# --- temporary files that crashed saves left --------------------------------------------------
def _temporaries(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


@pytest.mark.parametrize("how", ["save", "load"])
def test_the_next_save_or_load_removes_stale_temporary_files(tmp_path, how):
    path = tmp_path / "ck.npz"
    mg.save({"v": 1}, path)
    stale = [tmp_path / ".ck.npz.0123456789ab.tmp", tmp_path / ".ck.npz.ba9876543210.tmp"]
    others = [tmp_path / ".other.npz.0123456789ab.tmp", tmp_path / ".ck.npz.notes.tmp"]
    for p in stale + others:
        p.write_bytes(b"PK\x03\x04 what a killed save left")
    mg.save({"v": 2}, path) if how == "save" else mg.load(path)
    assert _temporaries(tmp_path) == sorted(p.name for p in others)  # only this path's
    assert mg.load(path) == {"v": 2 if how == "save" else 1}


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_a_live_save_s_temporary_file_is_left_alone(tmp_path):
    import fcntl

    path = tmp_path / "ck.npz"
    live = tmp_path / ".ck.npz.0123456789ab.tmp"
    with open(live, "wb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # what a save in another process holds
        mg.save({"v": 1}, path)
        mg.load(path)
        assert live.exists()
    mg.load(path)  # its lock is gone: now it is stale
    assert not live.exists()


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_a_save_whose_new_file_a_cleaner_removed_takes_another(tmp_path, monkeypatch):
    import minigrad.serialization as ser

    real, removed = ser.fcntl.flock, []

    def flock(fd, op):
        if not removed:  # a cleaner in another process wins the race for the fresh file
            removed.extend(_temporaries(tmp_path))
            os.unlink(tmp_path / removed[0])
        return real(fd, op)

    monkeypatch.setattr(ser.fcntl, "flock", flock)
    mg.save({"v": 1}, tmp_path / "ck.npz")
    assert len(removed) == 1 and os.listdir(tmp_path) == ["ck.npz"]
    assert mg.load(tmp_path / "ck.npz") == {"v": 1}


_SAVER = """
import os, sys, time, numpy as np, minigrad as mg
big = np.ones(2 ** 21)
mg.save({"gen": 1, "big": big}, sys.argv[1])  # a whole checkpoint exists before the kill


def stop_here(fd):  # the second save's 16 MB are in its temporary file, not yet renamed
    print("mid-save", flush=True)
    time.sleep(600)


os.fsync = stop_here
big[:] = 2
mg.save({"gen": 2, "big": big}, sys.argv[1])
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_kill_9_mid_save_leaves_a_whole_checkpoint_and_no_temporary_file(tmp_path):
    path = tmp_path / "ck.npz"
    child = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"mid-save\n"
        assert len(_temporaries(tmp_path)) == 1  # the save in flight
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        if child.stdout is not None:
            child.stdout.close()
    state = mg.load(path)  # the last completed save, whole
    assert state["gen"] == 1 and state["big"].shape == (2 ** 21,) and np.all(state["big"] == 1)
    assert _temporaries(tmp_path) == []  # load removed what the killed save left


# --- crafted archives ---------------------------------------------------------------------------
def _npy_header(shape: tuple, descr: str = "|u1") -> bytes:
    h = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    h += b" " * (64 - (10 + len(h) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h


def _zip_one(name: bytes, data: bytes, method: int, size: int, crc: int) -> bytes:
    """A one-entry zip archive whose directory declares `size` bytes for `data`."""
    common = struct.pack("<HHHHHIII", 20, 0, method, 0, 0x21, crc, len(data), size)
    local = b"PK\x03\x04" + common + struct.pack("<HH", len(name), 0) + name
    central = (b"PK\x01\x02" + struct.pack("<H", 20) + common
               + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, 0) + name)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central),
                                      len(local) + len(data), 0)
    return local + data + central + end


def _deflate_bomb(mib: int) -> bytes:
    """A `__minigrad__` entry of `mib` MiB of spaces (valid JSON whitespace) deflated to a few
    hundred kB: full flushes make one compressed chunk repeatable."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    header = _npy_header((mib * 2 ** 20,))
    first = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    chunk = c.compress(b" " * 2 ** 20) + c.flush(zlib.Z_FULL_FLUSH)
    data = first + chunk * mib + c.flush()
    return _zip_one(b"__minigrad__.npy", data, zipfile.ZIP_DEFLATED,
                    len(header) + mib * 2 ** 20, 0)


def _stored(shape: tuple, declared: int | None = None, descr: str = "|u1") -> bytes:
    """A stored `__minigrad__` entry whose .npy header says `shape`, holding 16 bytes of data;
    the directory declares `declared` bytes (by default what it holds)."""
    data = _npy_header(shape, descr) + b"\0" * 16
    size = len(data) if declared is None else declared
    return _zip_one(b"__minigrad__.npy", data, zipfile.ZIP_STORED, size, zlib.crc32(data))


@pytest.mark.parametrize("archive, why", [
    (lambda: _deflate_bomb(256), "encrypted or compressed"),
    (lambda: _stored((16,), declared=2 ** 30), "more than the file holds"),
    (lambda: _stored((2 ** 30,)), r"shape \(1073741824,\) of uint8 needs"),
    (lambda: _stored((10 ** 13,), descr="<f8"), r"shape \(10000000000000,\) of float64 needs"),
], ids=["deflated-256MiB", "stored-size-claims-1GiB", "header-claims-1GiB", "header-claims-80TB"])
def test_a_crafted_archive_is_refused_before_it_is_read(tmp_path, archive, why):
    path = tmp_path / "crafted.npz"
    path.write_bytes(archive())
    assert os.path.getsize(path) < 2 ** 20
    tracemalloc.start()  # refused before reading: the peak stays far below what it claims
    try:
        with pytest.raises(ValueError, match=re.escape(str(path))) as info:
            mg.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20, peak
    assert info.match(why)


def _with_flag(raw: bytes, flag_bits: int = 0, method: int = 0) -> bytes:
    """raw with every local and central header's flags or compression method changed."""
    b = bytearray(raw)
    for sig, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = 0
        while (i := b.find(sig, i)) >= 0:
            struct.pack_into("<HH", b, i + flags_at, flag_bits, method)
            i += 4
    return bytes(b)


def _npz(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in entries.items():
            z.writestr(k, v)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _meta(tree: str) -> bytes:
    text = '{"format": "minigrad-checkpoint", "version": 1, "tree": ' + tree + "}"
    return _npy(np.frombuffer(text.encode(), np.uint8))


def test_damaged_or_crafted_archives_are_value_errors(tmp_path):
    good = tmp_path / "good.npz"
    mg.save({"w": np.arange(6.0)}, good)
    raw = good.read_bytes()
    w = _npy(np.arange(6.0))
    cases = {
        "method99.npz": (_with_flag(raw, method=99), "encrypted or compressed"),
        "encrypted.npz": (_with_flag(raw, flag_bits=1), "encrypted or compressed"),
        "deep.npz": (_npz({"__minigrad__.npy": _meta('{"list": [' * 5000 + '{"value": 1}'
                                                      + "]}" * 5000)}), "RecursionError|deeper"),
        "twice.npz": (_npz({"__minigrad__.npy": _meta('{"list": [{"array": "w"}, {"array": '
                                                      '"w"}]}'), "w.npy": w}), "'w' twice"),
        "valuelist.npz": (_npz({"__minigrad__.npy": _meta('{"value": [1, 2]}')}),
                          "malformed scalar"),
        "notnpy.npz": (_npz({"__minigrad__.npy": _meta('{"value": 1}'), "notes.txt": b"hi"}),
                       "'notes.txt' is not a .npy"),
        "headerdtype.npz": (_npz({"__minigrad__.npy": _npy(np.zeros(3))}), "float64 array"),
    }
    for name, (data, why) in cases.items():
        (tmp_path / name).write_bytes(data)
        _bad(tmp_path / name, why)


def test_every_single_bit_flip_loads_the_same_or_is_a_value_error(tmp_path):
    """Half the single-bit flips of a small checkpoint (each byte's even bits, or odd bits,
    by turns), whatever they hit: the zip directory, the local headers, the .npy headers, the
    JSON, the data (CRC-checked)."""
    path = tmp_path / "ck.npz"
    state = {"w": np.arange(3.0), "b": {"x": np.float32(2)}, "n": 1, "s": "ok"}
    mg.save(state, path)
    raw = path.read_bytes()
    errors = 0
    for bit in range(len(raw) * 8):
        if (bit + bit // 8) % 2:
            continue
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(flipped)
        try:
            back = mg.load(path)
        except ValueError as e:
            assert str(path) in str(e)
            errors += 1
        else:
            assert_same(state, back, f"bit {bit}")
    assert errors > len(raw) * 2  # most flips are caught (the rest hit unused fields)
