"""The latency histogram column (dpi.schema.HIST_TYPE) from raw sketches (ext/ft_hist.h struct ft_hist),
shared by the TCP and RoCE meters' column builders so that every *_hist column is made the same way."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ._flowtable import hist_parts
from .coded import plain, validity, zero_buffer, zeros
from .schema import HIST_TYPE


def null_hist(n: int) -> pa.Array:
    """A histogram column of n nulls. Its children stay valid (Parquet refuses nulls in non-nullable struct
    children), the struct is null."""
    counts = pa.Array.from_buffers(pa.list_(pa.uint32()), n, [None, zero_buffer(4 * (n + 1))], null_count=0,
                                   children=[pa.array([], pa.uint32())])
    return pa.Array.from_buffers(HIST_TYPE, n, [zero_buffer((n + 7) // 8) if n else None], null_count=n,
                                 children=[zeros(pa.int16(), n), counts, zeros(pa.bool_(), n)])


def hist_column(n: int, rows: np.ndarray, sub: np.ndarray, prefix: str, srows: np.ndarray) -> pa.Array:
    """The struct<first_bucket, counts, collapsed> column of a batch of n records: rows (ascending) are the
    records with samples, srows where their sketches are in the side array sub (fields prefix_counts,
    _base, _halvings, _collapsed). Counts scaled back by the halvings, zero buckets at both ends left out
    (in C: _flowtable.hist_parts); the other rows are null."""
    if len(rows) == 0:
        return null_hist(n)
    first_r, len_r, values, coll_r = hist_parts(sub, prefix, np.ascontiguousarray(srows, dtype=np.int64))
    lengths = np.zeros(n, dtype=np.int32)
    lengths[rows] = len_r
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    first = np.zeros(n, dtype=np.int16)
    first[rows] = first_r
    has = np.zeros(n, dtype=bool)
    has[rows] = len_r > 0
    folded = np.zeros(n, dtype=bool)
    folded[rows] = coll_r
    lists = pa.ListArray.from_arrays(plain(offsets, pa.int32()), plain(values, pa.uint32()))
    # from buffers: StructArray.from_arrays(mask=...) would import pyarrow.compute (dpi/coded.py says why not)
    bitmap, nulls = validity(has)
    return pa.Array.from_buffers(HIST_TYPE, n, [bitmap], null_count=nulls,
                                 children=[plain(first, pa.int16()), lists, plain(folded, pa.bool_())])
