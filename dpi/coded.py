"""Arrow building helpers: validity bitmaps, and string columns from small integer codes (tunnel type, RoCE
transport, DPI labels, ...), built from buffers.

`pyarrow.Array.take` would do the same, but its first call imports `pyarrow.compute`, which generates a
wrapper for every compute function: 60 ms here, 0.1-0.2 s on a loaded machine, a tenth of a whole replay of
the benchmark capture. Numpy gathers the bytes instead; nothing here is per row in Python.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pyarrow as pa


def validity(valid: np.ndarray) -> tuple[Optional[pa.Buffer], int]:
    """Arrow validity bitmap of a boolean mask and its null count; no bitmap when nothing is null. Built once
    and shared by the columns it applies to."""
    nulls = int(len(valid) - np.count_nonzero(valid))
    if nulls == 0:
        return None, 0
    return pa.py_buffer(np.packbits(valid, bitorder="little")), nulls


class CodedText:
    """texts[code] as an Arrow string column; null where the code is outside texts, texts[code] is None, or
    the row is not valid."""

    def __init__(self, texts: Sequence[Optional[str]]):
        enc = [t.encode() if t is not None else b"" for t in texts]
        self.size = len(enc)
        self.lens = np.array([len(b) for b in enc] or [0], np.int64)
        self.starts = np.zeros(len(self.lens), np.int64)
        np.cumsum(self.lens[:-1], out=self.starts[1:])
        self.data = np.frombuffer(b"".join(enc), np.uint8) if any(enc) else np.zeros(0, np.uint8)
        self.present = np.array([t is not None for t in texts] or [False], bool)

    def __len__(self) -> int:
        return self.size

    def __call__(self, codes: np.ndarray, valid: Optional[np.ndarray] = None) -> pa.Array:
        codes = np.asarray(codes).astype(np.int64, copy=False)
        n = len(codes)
        ok = (codes >= 0) & (codes < self.size)
        if valid is not None:
            ok &= valid
        c = np.where(ok, codes, 0)
        ok &= self.present[c]
        rowlen = np.where(ok, self.lens[c], 0)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(rowlen, out=offsets[1:])
        total = int(offsets[-1])
        if total > 0x7FFFFFFF:
            raise ValueError(f"{total} bytes of text do not fit an Arrow string column (int32 offsets)")
        if total:
            data = self.data[np.repeat(self.starts[c] - offsets[:-1], rowlen) + np.arange(total)]
        else:
            data = np.zeros(0, np.uint8)
        bitmap, nulls = validity(ok)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data),
                                           bitmap, nulls)


# ---- columns from shared zero pages --------------------------------------------------------------------------
# A batch without RoCE records has ~90 RoCE columns that are all 0 or all null; pyarrow.nulls() allocated and
# cleared a fresh buffer for each (31 MB per 65,536-row batch, 2 % of a replay in page clearing alone). These
# columns share one zero buffer instead (immutable, so sharing is safe): np.zeros' pages are mapped on first
# read from the kernel's zero page, never cleared.
_ZERO: list = [pa.py_buffer(np.zeros(1 << 16, np.uint8))]


def zero_buffer(nbytes: int) -> pa.Buffer:
    """A read-only buffer of nbytes zero bytes (a slice of a shared one, grown when too small)."""
    z = _ZERO[0]
    if z.size < nbytes:
        z = _ZERO[0] = pa.py_buffer(np.zeros(max(nbytes, 2 * z.size), np.uint8))
    return z.slice(0, nbytes)


def _data_bytes(typ: pa.DataType, n: int) -> int:
    return (n * typ.bit_width + 7) // 8


def zeros(typ: pa.DataType, n: int) -> pa.Array:
    """n zeros of a fixed-width type, no nulls."""
    return pa.Array.from_buffers(typ, n, [None, zero_buffer(_data_bytes(typ, n))], null_count=0)


def nulls(typ: pa.DataType, n: int) -> pa.Array:
    """n nulls of a fixed-width or string type (pyarrow.nulls without allocating)."""
    bitmap = zero_buffer((n + 7) // 8)
    if pa.types.is_string(typ):
        return pa.Array.from_buffers(typ, n, [bitmap, zero_buffer(4 * (n + 1)), zero_buffer(0)], null_count=n)
    return pa.Array.from_buffers(typ, n, [bitmap, zero_buffer(_data_bytes(typ, n))], null_count=n)


def masked(values: np.ndarray, valid: np.ndarray, typ: pa.DataType) -> pa.Array:
    """values (converted to typ's width) where valid, null elsewhere; from buffers (pyarrow.array(mask=)
    imports numpy.ma, 15 ms)."""
    data = np.ascontiguousarray(values, dtype=typ.to_pandas_dtype())
    bitmap, n_null = validity(valid)
    return pa.Array.from_buffers(typ, len(data), [bitmap, pa.py_buffer(data)], null_count=n_null)


def plain(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    """values as an Arrow array of a fixed-width type, no nulls, from one buffer: what pyarrow.array(values,
    typ) gives, without its per-call checks (and its import of numpy.ma, 15 ms)."""
    if pa.types.is_boolean(typ):
        data = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
    else:
        data = np.ascontiguousarray(values, dtype=typ.to_pandas_dtype())
    return pa.Array.from_buffers(typ, len(values), [None, pa.py_buffer(data)], null_count=0)
