"""Arrow columns of the TCP meter (ext/ft_tcp.h, docs/tcp.md) from an array of _flowtable.FLOWREC_DTYPE.

One function, build(recs) -> {column name: pyarrow.Array}, merged into the batch by dpi.engine.build_batch.
Every column is built from numpy views in one step (no Python object per flow). Conventions
(dpi/schema.py): counters are never null and are 0 for non-TCP flows; measurements are null when nothing
was measured (no sample, no handshake, or not TCP).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .schema import TCP_HIST_TYPE

# counters per direction: record field suffix (after tcp_src_/tcp_dst_) -> Arrow type
_COUNTERS = (
    ("retrans_packets", pa.uint32()), ("retrans_bytes", pa.uint64()), ("fast_retrans_packets", pa.uint32()),
    ("timeout_retrans_packets", pa.uint32()), ("spurious_retrans_packets", pa.uint32()),
    ("syn_retrans_packets", pa.uint32()), ("out_of_order_packets", pa.uint32()),
    ("upstream_retrans_packets", pa.uint32()), ("seq_gaps", pa.uint32()), ("seq_gaps_unfilled", pa.uint32()),
    ("dup_acks", pa.uint32()), ("sack_blocks", pa.uint32()), ("zero_window_events", pa.uint32()),
    ("zero_window_probes", pa.uint32()), ("window_full_packets", pa.uint32()), ("rst_handshake", pa.uint32()),
    ("rst_established", pa.uint32()), ("keepalive_packets", pa.uint32()),
)
_RTT_STATS = ("min_ns", "mean_ns", "max_ns", "p50_ns", "p90_ns", "p99_ns")
_TS_STATS = ("min_ns", "mean_ns", "max_ns")

# handshake validity bits (FT_TH_S_* in ext/ft_tcp.h)
_HS_TOTAL, _HS_SERVER, _HS_CLIENT = 0x08, 0x10, 0x20


def _validity(valid: np.ndarray) -> tuple[pa.Buffer, int]:
    """Arrow validity bitmap of a boolean mask, built once and shared by the columns it applies to."""
    return pa.py_buffer(np.packbits(valid, bitorder="little")), int(len(valid) - np.count_nonzero(valid))


def _measure(values: np.ndarray, validity: tuple[pa.Buffer, int]) -> pa.Array:
    """int64 column from a (strided) uint64 field: one contiguous copy, the shared validity bitmap."""
    data = np.ascontiguousarray(values).view(np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [validity[0], pa.py_buffer(data)], validity[1])


def _counter(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    data = np.ascontiguousarray(values)
    return pa.Array.from_buffers(typ, len(data), [None, pa.py_buffer(data)], 0)


def _hist(recs: np.ndarray, prefix: str, valid: np.ndarray) -> pa.Array:
    """The struct<first_octave, counts, collapsed> column: each row's counts[0:len]; null where there is no
    sample. Only rows with samples are gathered (most flows have none)."""
    n = len(recs)
    rows = np.flatnonzero(valid)
    row_len = recs[prefix + "_len"][rows].astype(np.int32)
    lengths = np.zeros(n, dtype=np.int32)
    lengths[rows] = row_len
    counts = recs[prefix][rows]                             # (rows, FT_TCP_HOCT) uint32, gathered
    keep = np.arange(counts.shape[1], dtype=np.int32)[None, :] < row_len[:, None]
    values = np.ascontiguousarray(counts[keep], dtype=np.uint32)   # row-major: rows stay in order
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.uint32()))
    first = np.zeros(n, np.int16)
    first[rows] = recs[prefix + "_first"][rows]
    collapsed = np.zeros(n, bool)
    collapsed[rows] = recs[prefix + "_collapsed"][rows] != 0
    return pa.StructArray.from_arrays([pa.array(first, pa.int16()), lists, pa.array(collapsed, pa.bool_())],
                                      fields=list(TCP_HIST_TYPE), mask=pa.array(~valid, pa.bool_()))


def build(recs: np.ndarray) -> dict[str, pa.Array]:
    """Columns of the TCP meter for a batch of flow records, named as in dpi.schema."""
    cols: dict[str, pa.Array] = {}
    for x in ("src", "dst"):
        f = f"tcp_{x}_"
        for name, typ in _COUNTERS:
            cols[f"{x}_tcp_{name}"] = _counter(recs[f + name], typ)
        n_rtt = np.ascontiguousarray(recs[f + "rtt_samples"])
        has = n_rtt > 0
        valid = _validity(has)
        cols[f"{x}_tcp_rtt_samples"] = _counter(n_rtt, pa.uint32())
        for st in _RTT_STATS:
            cols[f"{x}_tcp_rtt_{st}"] = _measure(recs[f + "rtt_" + st], valid)
        cols[f"{x}_tcp_rtt_hist"] = _hist(recs, f + "rtt_hist", has)
        n_ts = np.ascontiguousarray(recs[f + "ts_rtt_samples"])
        valid = _validity(n_ts > 0)
        cols[f"{x}_tcp_ts_rtt_samples"] = _counter(n_ts, pa.uint32())
        for st in _TS_STATS:
            cols[f"{x}_tcp_ts_rtt_{st}"] = _measure(recs[f + "ts_rtt_" + st], valid)
    hs = recs["tcp_hs_valid"]
    cols["tcp_handshake_rtt_ns"] = _measure(recs["tcp_hs_total_ns"], _validity((hs & _HS_TOTAL) != 0))
    cols["tcp_handshake_server_ns"] = _measure(recs["tcp_hs_server_ns"], _validity((hs & _HS_SERVER) != 0))
    cols["tcp_handshake_client_ns"] = _measure(recs["tcp_hs_client_ns"], _validity((hs & _HS_CLIENT) != 0))
    n_art = np.ascontiguousarray(recs["tcp_art_samples"])
    has_art = n_art > 0
    valid = _validity(has_art)
    cols["tcp_art_samples"] = _counter(n_art, pa.uint32())
    for st in ("min_ns", "mean_ns", "max_ns", "p50_ns", "p99_ns"):
        cols[f"tcp_art_{st}"] = _measure(recs["tcp_art_" + st], valid)
    cols["tcp_art_hist"] = _hist(recs, "tcp_art_hist", has_art)
    return cols
