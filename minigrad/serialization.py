"""Checkpoints: `save(state, path)` and `load(path)`, a `.npz` archive that never uses pickle.

Layout. Every array in `state` (ndarrays, Tensors, NumPy scalars) is one uncompressed `.npy`
entry of the archive, named by its dotted path: `{"model": {"0.weight": W}, "optim": {"state":
{0: {...}}}}` stores `model.0.weight`, `optim.state.0.exp_avg`, … (so `np.load(path)` shows them
too; a name already taken, also in np.load's eyes, where `w` and `w.npy` look alike, gets `#1`,
`#2`, …). One more entry, `__minigrad__`, is a small JSON document (stored as bytes) that records
the format version and the tree: which containers were dicts (with their exact keys, str or int,
dots and all), lists or tuples, each array's entry, and the Python scalars (int, float, bool,
str, None) in place. `load` rebuilds exactly that tree. A key that no archive name can carry (a
NUL ends a zip name; a lone surrogate is not UTF-8) is refused at save with ValueError.

Writing. `save` follows symlinks to the file they name and writes that file, keeping its mode.
It writes a temporary file `.<name>.<12 hex>.tmp` beside it, flushes and fsyncs it, then renames
it over the target with `os.replace` (atomic on POSIX and Windows): a crash at any moment leaves
either the old checkpoint or the new one, never a torn file. A live save holds an exclusive lock
(flock) on its temporary file; a process killed mid-save holds none, so the next `save` or
`load` of that path removes every such file it can lock: what crashed saves left behind.

Reading. `load` checks the whole zip directory before it reads any array: every entry a stored
(uncompressed, unencrypted) `.npy` whose declared size is exactly its header's shape × itemsize,
all of them together no larger than the file. So reading never takes more memory than the file
has bytes, whatever the archive claims. Every way a file can be wrong (truncated, corrupt,
crafted, foreign, a plain `.npz`, a pickle, a newer format) is a ValueError naming the path.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import secrets
import stat
import struct
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from minigrad.tensor import Tensor

try:
    import fcntl
except ImportError:  # Windows: a file a live save holds open cannot be deleted, which serves
    fcntl = None  # type: ignore[assignment]  # as its lock

__all__ = ["load", "save"]

MARKER = "__minigrad__"
FORMAT = "minigrad-checkpoint"
VERSION = 1
_RESERVED = {MARKER, "file", "allow_pickle"}  # the header's entry; names np.savez takes as keywords
_MAX_DEPTH = 100  # nesting refused beyond this: a container holding itself, or a crafted header
_TMP_NAME_CHARS = 50  # of the target's name in a temporary file's (≤ 200 bytes + 18 < 255)

PathLike = str | os.PathLike[str]
Reader = Callable[[str], np.ndarray]

# What reading a damaged file can raise, from zipfile, NumPy's .npy reader, json and the tree.
_DAMAGED = (ValueError, TypeError, KeyError, IndexError, EOFError, OSError, OverflowError,
            RuntimeError, struct.error, zipfile.BadZipFile)


# ---------------------------------------------------------------------------------------------
# The tree <-> (JSON description, {entry name: array})
# ---------------------------------------------------------------------------------------------
def _encode(value: Any, dotted: str, arrays: dict[str, np.ndarray], depth: int = 0) -> Any:
    """A JSON node describing value; arrays go into `arrays` under a unique entry name."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"mg.save: {dotted} is nested deeper than {_MAX_DEPTH} levels (does a "
                         f"container hold itself?)")
    if isinstance(value, (Tensor, np.ndarray, np.generic)):
        arr = np.asarray(value.data if isinstance(value, Tensor) else value)
        if arr.dtype.hasobject:
            raise TypeError(f"mg.save: {dotted or 'the state'} is an object array; only "
                            f"numeric, bool and string arrays can be saved without pickle")
        name = _entry_name(dotted or "value", arrays)
        arrays[name] = arr
        return {"array": name, "scalar": isinstance(value, np.generic)}
    if value is None or isinstance(value, (bool, int, str)):
        return {"value": value}
    if isinstance(value, float):
        # JSON has no inf/nan: store those as strings, tagged.
        return {"value": value} if np.isfinite(value) else {"float": repr(value)}
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            _check_key(k, dotted)
            child = f"{dotted}.{k}" if dotted else str(k)
            items.append([k, _encode(v, child, arrays, depth + 1)])
        return {"dict": items}
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_encode(v, f"{dotted}.{i}" if dotted else str(i), arrays, depth + 1)
                       for i, v in enumerate(value)]}
    hint = "; save its .state_dict()" if hasattr(value, "state_dict") else ""
    raise TypeError(f"mg.save: cannot save {dotted or 'the state'} of type "
                    f"{type(value).__name__}{hint}; a checkpoint holds dicts, lists, tuples, "
                    f"arrays, Tensors and Python numbers, bools, strings and None")


def _check_key(k: Any, dotted: str) -> None:
    """A dict key the archive can carry back exactly, or an error naming it."""
    where = dotted or "the state"
    if not isinstance(k, (str, int)) or isinstance(k, bool):
        raise TypeError(f"mg.save: dict keys must be str or int, got {k!r} "
                        f"({type(k).__name__}) in {where}")
    if isinstance(k, str):
        if "\0" in k:
            raise ValueError(f"mg.save: the key {k!r} in {where} holds a NUL character, which "
                             f"ends a name in the archive, so it could not be loaded; rename it")
        try:
            k.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"mg.save: the key {k!r} in {where} is not valid Unicode (a lone "
                             f"surrogate), so the archive cannot name it; rename it") from None


def _entry_name(dotted: str, arrays: dict[str, np.ndarray]) -> str:
    """The dotted path as an entry name ('\\' as '/', the only separator zip names have),
    with '#n' added while it is taken."""
    base = dotted.replace("\\", "/")
    name, n = base, 0
    while _taken(name, arrays):
        n += 1
        name = f"{base}#{n}"
    return name


def _taken(name: str, arrays: dict[str, np.ndarray]) -> bool:
    """np.load strips one '.npy' and tries the name with and without it, so `w` and `w.npy`
    would look alike there: each blocks the other."""
    alike = (name, name + ".npy", name[:-4] if name.endswith(".npy") else name)
    return any(a in arrays or a in _RESERVED for a in alike)


def _decode(node: Any, read: Reader, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError(f"the tree is nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise ValueError(f"a malformed tree node {node!r:.80}")
    if "array" in node:
        arr = read(node["array"])
        return arr[()] if node.get("scalar") else arr
    if "value" in node or "float" in node:
        return _scalar(node)
    if "dict" in node:
        items = node["dict"]
        if not all(isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], (str, int))
                   and not isinstance(kv[0], bool) for kv in items):
            raise ValueError(f"a malformed dict node {node!r:.80}")
        return {k: _decode(v, read, depth + 1) for k, v in items}
    if "list" in node:
        return [_decode(v, read, depth + 1) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, read, depth + 1) for v in node["tuple"])
    raise ValueError(f"a malformed tree node {node!r:.80}")


def _scalar(node: dict[str, Any]) -> Any:
    if "float" in node and isinstance(node["float"], str):
        return float(node["float"])
    value = node.get("value", ())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"a malformed scalar node {node!r:.80}")


# ---------------------------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------------------------
def save(state: Any, path: PathLike) -> None:
    """Write `state` (usually a dict: a `state_dict()`, an optimizer's, step counts, …) to
    `path` as a `.npz` archive without pickle, atomically (temporary file + fsync + rename).

    Nested dicts become dotted entry names; `load(path)` gives the same nesting back, with
    ndarrays for arrays and Tensors, and Python scalars, strings, None, lists and tuples as
    they were. The file is written at exactly `path` (no suffix is added); a symlink there
    stays, and the file it names is written, keeping its mode.
    """
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(state, "", arrays)
    meta = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})
    arrays[MARKER] = np.frombuffer(meta.encode("utf-8"), dtype=np.uint8)

    target = os.path.realpath(path)
    directory, base = os.path.split(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: the directory {directory!r} for {path!r} does not "
                                f"exist; create it first (os.makedirs)")
    _remove_stale_temporaries(directory, base)
    mode = _mode_of(target)
    fd, tmp = _create_temporary(directory, base)
    try:
        if mode is not None:
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:
                os.replace(tmp, target)  # renamed while still locked: never taken for stale
        if fcntl is None:
            os.replace(tmp, target)  # Windows renames closed files only
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _mode_of(target: str) -> int | None:
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return None


def _tmp_prefix(base: str) -> str:
    return f".{base[:_TMP_NAME_CHARS]}."


def _create_temporary(directory: str, base: str) -> tuple[int, str]:
    """A new file beside the target, open for writing and locked for as long as it is open."""
    while True:
        tmp = os.path.join(directory, f"{_tmp_prefix(base)}{secrets.token_hex(6)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o666)
        if fcntl is None:
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a cleaner is looking at it
        except OSError:
            return fd, tmp  # a file system without locks: cleaners cannot lock it either
        if _same_file(fd, tmp):
            return fd, tmp
        os.close(fd)  # a cleaner took it for stale between open and lock: another name


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _remove_stale_temporaries(directory: str, base: str) -> None:
    """Remove the temporary files of saves of this path that died (kill -9, power loss)."""
    pattern = re.compile(re.escape(_tmp_prefix(base)) + r"[0-9a-f]{12}\.tmp")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if pattern.fullmatch(name):
            _remove_if_stale(os.path.join(directory, name))


def _remove_if_stale(tmp: str) -> None:
    if fcntl is None:  # Windows refuses to delete a file that a live save has open
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    try:
        fd = os.open(tmp, os.O_RDONLY)
    except OSError:
        return
    try:
        # A live save holds the lock; the kernel releases a dead process's locks.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _same_file(fd, tmp):
            os.unlink(tmp)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------
def load(path: PathLike) -> Any:
    """Read a checkpoint written by `save`: the same nesting, arrays as ndarrays.

    Never unpickles, and never reads more than the file holds. A missing file raises
    FileNotFoundError; a file that is not a complete minigrad checkpoint (truncated, corrupt,
    crafted, a plain `.npz`, text, a pickle, a newer format) raises ValueError naming the path.
    Removes what crashed saves of this path left behind.
    """
    path = os.fspath(path)
    _remove_stale_temporaries(*os.path.split(os.path.realpath(path)))
    with open(path, "rb") as f:
        try:
            return _read(f)
        except _NotACheckpointError as e:
            raise ValueError(f"mg.load: {path} is not a minigrad checkpoint: {e}") from None
        except _DAMAGED as e:
            raise ValueError(f"mg.load: {path} is not a readable minigrad checkpoint (truncated "
                             f"or corrupt?): {type(e).__name__}: {e}") from None


class _NotACheckpointError(Exception):
    pass


def _read(f: BinaryIO) -> Any:
    head = f.read(4)
    f.seek(0)
    if head != b"PK\x03\x04":
        what = ("a .npy array" if head == b"\x93NUM" else "a pickle" if head[:1] == b"\x80"
                else "empty" if not head else "not a .npz (zip) archive")
        raise _NotACheckpointError(f"the file is {what}")
    with zipfile.ZipFile(f) as z:
        if MARKER + ".npy" not in z.namelist():
            raise _NotACheckpointError(f"it has no {MARKER!r} entry, so it was not written by "
                                       f"mg.save (a plain .npz? read it with np.load)")
        entries = _directory(z, os.fstat(f.fileno()).st_size)
        used: set[str] = set()
        read = functools.partial(_read_entry, z, entries, used)
        meta = _header(read(MARKER))
        state = _decode(meta["tree"], read)
        extra = set(entries) - used
        if extra:
            raise _NotACheckpointError(f"entries not described by its header: {sorted(extra)}")
    return state


def _header(raw: np.ndarray) -> dict[str, Any]:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"its {MARKER!r} entry is a {raw.dtype} array of shape {raw.shape}")
    meta = json.loads(raw.tobytes().decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _NotACheckpointError(f"its {MARKER!r} entry is not a minigrad header")
    if meta.get("version") != VERSION:
        raise _NotACheckpointError(f"format version {meta.get('version')!r}, this minigrad "
                                   f"reads version {VERSION}")
    return meta


def _directory(z: zipfile.ZipFile, file_size: int) -> dict[str, zipfile.ZipInfo]:
    """The entries by name (without '.npy'), every one checked before any is read: a stored
    (uncompressed, unencrypted) .npy whose declared size is exactly what its header's shape ×
    itemsize needs, all of them together no larger than the file."""
    entries: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in z.infolist():
        name = info.filename
        if not name.endswith(".npy") or name[:-4] in entries:
            raise ValueError(f"the entry {name!r} is not a .npy array, or appears twice")
        if info.flag_bits & 0x1 or info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"the entry {name!r} is encrypted or compressed (method "
                             f"{info.compress_type}); mg.save writes neither")
        total += info.file_size
        if info.compress_size != info.file_size or total > file_size:
            raise ValueError(f"the entry {name!r} declares {info.file_size} bytes "
                             f"({info.compress_size} stored), more than the file holds")
        _check_npy_header(z, info)
        entries[name[:-4]] = info
    return entries


def _check_npy_header(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Read only the entry's .npy header (a few bytes) and check the declared size against it."""
    with z.open(info) as m:
        version = np.lib.format.read_magic(m)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"the entry {info.filename!r} is .npy version {version}")
        # Version 3 lays out its header as 2 does (only field names decode as UTF-8): the
        # shape and itemsize read the same.
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(m)
        need = m.tell() + dtype.itemsize * math.prod(shape)
    if dtype.hasobject:
        raise ValueError(f"the entry {info.filename!r} is an object array (only pickle reads "
                         f"those; mg.load never unpickles)")
    if need != info.file_size:
        raise ValueError(f"the entry {info.filename!r} declares {info.file_size} bytes, but its "
                         f"header's shape {shape} of {dtype} needs {need}")


def _read_entry(z: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], used: set[str],
                name: str) -> np.ndarray:
    if not isinstance(name, str) or name not in entries:
        raise ValueError(f"the entry {name!r} is missing")
    if name in used:
        raise ValueError(f"the header names the entry {name!r} twice")
    used.add(name)
    with z.open(entries[name]) as m:  # the zip CRC is checked as the last byte is read
        return np.lib.format.read_array(m, allow_pickle=False)
