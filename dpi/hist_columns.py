"""The latency histogram column (dpi.schema.HIST_TYPE) from raw sketches (ext/ft_hist.h struct ft_hist),
shared by the TCP and RoCE meters' column builders so that every *_hist column is made the same way."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .schema import HIST_TYPE


def null_hist(n: int) -> pa.Array:
    """A histogram column of n nulls. Its children stay valid (Parquet refuses nulls in non-nullable struct
    children), the struct is null."""
    return pa.StructArray.from_arrays(
        [pa.array(np.zeros(n, np.int16), pa.int16()),
         pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.uint32())),
         pa.array(np.zeros(n, bool), pa.bool_())],
        fields=list(HIST_TYPE), mask=pa.array(np.ones(n, bool), pa.bool_()))


def hist_column(n: int, rows: np.ndarray, counts: np.ndarray, base: np.ndarray, halvings: np.ndarray,
                collapsed: np.ndarray) -> pa.Array:
    """The struct<first_bucket, counts, collapsed> column of a batch of n records: rows are the records with
    samples (ascending), counts/base/halvings/collapsed their sketches (80 16-bit counts per row, global
    index of the first, times halved, folded flag). Counts are scaled back by the halvings (saturating at
    2^32-1), zero buckets at both ends are left out; the other rows are null."""
    if len(rows) == 0:
        return null_hist(n)
    raw = counts.reshape(len(rows), -1).astype(np.uint64)
    width = raw.shape[1]
    shift = np.minimum(halvings.astype(np.uint64), 16)
    scaled = np.minimum(raw << shift[:, None], np.uint64(0xFFFFFFFF)).astype(np.uint32)
    nz = scaled > 0
    ok = nz.any(axis=1)
    lo = np.argmax(nz, axis=1)
    hi = width - 1 - np.argmax(nz[:, ::-1], axis=1)
    col = np.arange(width)[None, :]
    keep = ok[:, None] & (col >= lo[:, None]) & (col <= hi[:, None])
    values = np.ascontiguousarray(scaled[keep])            # row-major: rows stay in order
    lengths = np.zeros(n, dtype=np.int32)
    lengths[rows] = np.where(ok, hi - lo + 1, 0)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    first = np.zeros(n, dtype=np.int16)
    first[rows] = np.where(ok, base.astype(np.int64) + lo, 0)
    has = np.zeros(n, dtype=bool)
    has[rows] = ok
    folded = np.zeros(n, dtype=bool)
    folded[rows] = collapsed != 0
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.uint32()))
    return pa.StructArray.from_arrays([pa.array(first, pa.int16()), lists, pa.array(folded, pa.bool_())],
                                      fields=list(HIST_TYPE), mask=pa.array(~has, pa.bool_()))
