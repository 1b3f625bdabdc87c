"""Checkpoints: `save(state, path)` and `load(path)`, a `.npz` archive that never uses pickle.

Layout. Every array in `state` (ndarrays, Tensors, NumPy scalars) is one `.npy` entry of the
archive, named by its dotted path: `{"model": {"0.weight": W}, "optim": {"state": {0: {...}}}}`
stores `model.0.weight`, `optim.state.0.exp_avg`, … (so `np.load(path)` shows them too). One
more entry, `__minigrad__`, is a small JSON document (stored as bytes) that records the format
version and the tree: which containers were dicts (with their exact keys, str or int, dots and
all), lists or tuples, and the Python scalars (int, float, bool, str, None) in place. `load`
rebuilds exactly that tree, reading every array with `allow_pickle=False`.

Safety. `save` writes a temporary file in the destination's directory, flushes and fsyncs it,
then renames it over `path` with `os.replace` (atomic on POSIX and Windows): a crash at any
moment leaves either the old checkpoint or the new one, never a torn file, and the temporary
file is removed on failure. `load` turns every way a file can be wrong (truncated, corrupt,
foreign, a plain `.npz`, a pickle, a newer format) into a ValueError that names the path.
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from typing import Any

import numpy as np

from minigrad.tensor import Tensor

__all__ = ["load", "save"]

MARKER = "__minigrad__"
FORMAT = "minigrad-checkpoint"
VERSION = 1
_RESERVED = {MARKER, "file", "allow_pickle"}  # names np.savez cannot take as keywords

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------------------------------
# The tree <-> (JSON description, {entry name: array})
# ---------------------------------------------------------------------------------------------
def _encode(value: Any, dotted: str, arrays: dict[str, np.ndarray]) -> Any:
    """A JSON node describing value; arrays go into `arrays` under a unique entry name."""
    if isinstance(value, (Tensor, np.ndarray, np.generic)):
        arr = np.asarray(value.data if isinstance(value, Tensor) else value)
        if arr.dtype.hasobject:
            raise TypeError(f"mg.save: {dotted or 'the state'} is an object array; only "
                            f"numeric, bool and string arrays can be saved without pickle")
        name = dotted or "value"
        if name in arrays or name in _RESERVED:
            n = 1
            while f"{name}#{n}" in arrays:
                n += 1
            name = f"{name}#{n}"
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
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"mg.save: dict keys must be str or int, got {k!r} "
                                f"({type(k).__name__}) in {dotted or 'the state'}")
            items.append([k, _encode(v, f"{dotted}.{k}" if dotted else str(k), arrays)])
        return {"dict": items}
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_encode(v, f"{dotted}.{i}" if dotted else str(i), arrays)
                       for i, v in enumerate(value)]}
    hint = "; save its .state_dict()" if hasattr(value, "state_dict") else ""
    raise TypeError(f"mg.save: cannot save {dotted or 'the state'} of type "
                    f"{type(value).__name__}{hint}; a checkpoint holds dicts, lists, tuples, "
                    f"arrays, Tensors and Python numbers, bools, strings and None")


def _decode(node: Any, arrays: Any, used: set[str]) -> Any:
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise ValueError(f"a malformed tree node {node!r:.80}")
    if "array" in node:
        name = node["array"]
        if name not in arrays.files:
            raise ValueError(f"the entry {name!r} is missing")
        used.add(name)
        arr = arrays[name]
        return arr[()] if node.get("scalar") else arr
    if "value" in node:
        return node["value"]
    if "float" in node:
        return float(node["float"])
    if "dict" in node:
        return {k: _decode(v, arrays, used) for k, v in node["dict"]}
    if "list" in node:
        return [_decode(v, arrays, used) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, arrays, used) for v in node["tuple"])
    raise ValueError(f"a malformed tree node {node!r:.80}")


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------
def save(state: Any, path: PathLike) -> None:
    """Write `state` (usually a dict: a `state_dict()`, an optimizer's, step counts, …) to
    `path` as a `.npz` archive without pickle, atomically (temporary file + fsync + rename).

    Nested dicts become dotted entry names; `load(path)` gives the same nesting back, with
    ndarrays for arrays and Tensors, and Python scalars, strings, None, lists and tuples as
    they were. The file is written at exactly `path` (no suffix is added).
    """
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(state, "", arrays)
    meta = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})
    arrays[MARKER] = np.frombuffer(meta.encode("utf-8"), dtype=np.uint8)

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: the directory {directory!r} for {os.fspath(path)!r} "
                                f"does not exist; create it first (os.makedirs)")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


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


def load(path: PathLike) -> Any:
    """Read a checkpoint written by `save`: the same nesting, arrays as ndarrays.

    Never unpickles. A missing file raises FileNotFoundError; a file that is not a complete
    minigrad checkpoint (truncated, corrupt, a plain `.npz`, text, a pickle, a newer format)
    raises ValueError naming the path.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            return _read(f)
        except _NotACheckpointError as e:
            raise ValueError(f"mg.load: {path} is not a minigrad checkpoint: {e}") from None
        except (ValueError, TypeError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise ValueError(f"mg.load: {path} is not a readable minigrad checkpoint (truncated "
                             f"or corrupt?): {type(e).__name__}: {e}") from None


class _NotACheckpointError(Exception):
    pass


def _read(f: Any) -> Any:
    head = f.read(4)
    f.seek(0)
    if head != b"PK\x03\x04":
        what = ("a .npy array" if head == b"\x93NUM" else "a pickle" if head[:1] == b"\x80"
                else "empty" if not head else "not a .npz (zip) archive")
        raise _NotACheckpointError(f"the file is {what}")
    with np.load(f, allow_pickle=False) as arrays:
        if MARKER not in arrays.files:
            raise _NotACheckpointError(f"it has no {MARKER!r} entry, so it was not written by "
                                  f"mg.save (a plain .npz? read it with np.load)")
        meta = json.loads(arrays[MARKER].tobytes().decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise _NotACheckpointError(f"its {MARKER!r} entry is not a minigrad header")
        if meta.get("version") != VERSION:
            raise _NotACheckpointError(f"format version {meta.get('version')!r}, this minigrad "
                                  f"reads version {VERSION}")
        used: set[str] = set()
        state = _decode(meta["tree"], arrays, used)
        extra = set(arrays.files) - used - {MARKER}
        if extra:
            raise _NotACheckpointError(f"entries not described by its header: {sorted(extra)}")
    return state
