"""The scatter behind indexing's backward: out[index] += src with repeated picks summed.

An algorithm, not a kernel (plain mode runs it too): `np.add.at` element by element is the
plain statement of it, and the rule table's `scatter_add` (and so getitem's VJP) calls this.
NumPy only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def add_at(out: np.ndarray, index: Any, src: Any, basic: bool) -> None:
    """out[index] += src in place, where a position picked k times gets the sum of its k values
    (np.add.at's meaning). out is C-contiguous (a fresh np.zeros): its rows are written through
    a reshaped view."""
    if basic:
        out[index] += src  # a basic index never picks an element twice
        return
    rows, pos, src = _picked_rows(out, index, src)
    if src.size == 0:
        return
    # Number the distinct rows picked (np.unique sorts them); bincount then sums each pick's
    # row into its number's row, every element in one pass, in float64 and in the picks' order
    # (float64 gets np.add.at's sums exactly, float32 them rounded once). Each picked row of out
    # is written once, and no other row is touched.
    picked, number = np.unique(pos, return_inverse=True)
    width = rows.shape[1]
    slots = (number.reshape((-1, 1)) * width + np.arange(width)).reshape(-1)
    sums = np.bincount(slots, weights=src.reshape(-1), minlength=picked.size * width)
    rows[picked] += sums.reshape((picked.size, width)).astype(rows.dtype, copy=False)


def _picked_rows(out: np.ndarray, index: Any,
                 src: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """out as rows, the row each pick of out[index] lands in, and src as one row per pick.
    One integer array picks whole rows of the first axis (an embedding's lookup): its rows
    are out's rows. Any other index picks single elements, found by indexing their positions."""
    if isinstance(index, np.ndarray) and index.dtype.kind in "iu" and out.ndim:
        pos = index.reshape(-1).astype(np.intp)
        pos[pos < 0] += out.shape[0]  # a negative index counts from the end
        rows = out.reshape((out.shape[0], math.prod(out.shape[1:])))
        picked = index.shape + out.shape[1:]
    else:
        pos = np.arange(out.size).reshape(out.shape)[index]
        rows, picked = out.reshape((out.size, 1)), pos.shape
        pos = pos.reshape(-1)
    if np.shape(src) != picked:  # only then: bincount copies a read-only view such as this
        src = np.broadcast_to(src, picked)
    return rows, pos, src.reshape((pos.size, rows.shape[1]))
