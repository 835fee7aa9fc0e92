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
