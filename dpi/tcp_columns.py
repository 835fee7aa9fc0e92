"""Arrow columns of the TCP meter (ext/ft_tcp.h, docs/tcp.md) from a batch of _flowtable.FLOWREC_DTYPE records
and the TCP parts of its TCP records (_flowtable.TCP_OUT_DTYPE, FlowTable.taken_tcp; record i's part is row
recs["tcp_row"][i], -1 for other flows).

One function, build(recs, tcp_recs) -> {column name: pyarrow.Array}, merged into the batch by
dpi.engine.build_batch. Every column is built from numpy arrays in one step (no Python object per flow), and
only the TCP rows are read. Conventions (dpi/schema.py): counters are never null and are 0 for non-TCP flows;
measurements are null when nothing was measured (no sample, no handshake, or not TCP).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ._flowtable import scatter_fields
from .coded import nulls, validity, zeros
from .hist_columns import hist_column, null_hist

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
_ART_STATS = ("min_ns", "mean_ns", "max_ns", "p50_ns", "p99_ns")

# handshake validity bits (FT_TH_S_* in ext/ft_tcp.h)
_HS_TOTAL, _HS_SERVER, _HS_CLIENT = 0x08, 0x10, 0x20


def _measure(values: np.ndarray, valid: tuple[pa.Buffer | None, int]) -> pa.Array:
    """int64 column from a (strided) uint64 field: one contiguous copy, the shared validity bitmap."""
    data = np.ascontiguousarray(values).view(np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [valid[0], pa.py_buffer(data)], valid[1])


def _counter(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    data = np.ascontiguousarray(values)
    return pa.Array.from_buffers(typ, len(data), [None, pa.py_buffer(data)], 0)


def _names() -> list[str]:
    """Column names build() returns, in schema order of appearance."""
    out = []
    for x in ("src", "dst"):
        out += [f"{x}_tcp_{name}" for name, _ in _COUNTERS]
        out += [f"{x}_tcp_rtt_samples"] + [f"{x}_tcp_rtt_{st}" for st in _RTT_STATS] + [f"{x}_tcp_rtt_hist"]
        out += [f"{x}_tcp_ts_rtt_samples"] + [f"{x}_tcp_ts_rtt_{st}" for st in _TS_STATS]
    out += ["tcp_handshake_rtt_ns", "tcp_handshake_server_ns", "tcp_handshake_client_ns", "tcp_art_samples"]
    out += [f"tcp_art_{st}" for st in _ART_STATS] + ["tcp_art_hist"]
    return out


def _no_tcp(n: int) -> dict[str, pa.Array]:
    """The columns of a batch without a TCP record: counters 0, measurements null, from one zero buffer."""
    cols: dict[str, pa.Array] = {}
    for x in ("src", "dst"):
        for name, typ in _COUNTERS + (("rtt_samples", pa.uint32()), ("ts_rtt_samples", pa.uint32())):
            cols[f"{x}_tcp_{name}"] = zeros(typ, n)
    cols["tcp_art_samples"] = zeros(pa.uint32(), n)
    for name in _names():
        if name not in cols:
            cols[name] = null_hist(n) if name.endswith("_hist") else nulls(pa.int64(), n)
    return cols


def build(recs: np.ndarray, tcp_recs: np.ndarray) -> dict[str, pa.Array]:
    """Columns of the TCP meter for a batch of flow records, named as in dpi.schema."""
    n = len(recs)
    rows = np.flatnonzero(recs["tcp_row"] >= 0)
    if len(rows) == 0:
        return _no_tcp(n)
    # the flow table writes the TCP parts in record order: row k of tcp_recs belongs to record rows[k]
    assert len(rows) == len(tcp_recs), "TCP side records do not match the batch"
    sub = tcp_recs
    # every scalar field the columns need, scattered to batch positions in one C pass each (zero elsewhere)
    names = []
    for x in ("src", "dst"):
        f = f"tcp_{x}_"
        names += [f + name for name, _ in _COUNTERS] + [f + "rtt_samples", f + "ts_rtt_samples"]
        names += [f + "rtt_" + st for st in _RTT_STATS] + [f + "ts_rtt_" + st for st in _TS_STATS]
    names += ["tcp_hs_valid", "tcp_hs_total_ns", "tcp_hs_server_ns", "tcp_hs_client_ns", "tcp_art_samples"]
    names += ["tcp_art_" + st for st in _ART_STATS]
    full = scatter_fields(sub, rows, n, names)

    def hist(prefix: str, samples: str) -> pa.Array:
        r = np.flatnonzero(sub[samples] > 0)   # side rows with samples
        return hist_column(n, rows[r], sub, prefix, r)

    cols: dict[str, pa.Array] = {}
    for x in ("src", "dst"):
        f = f"tcp_{x}_"
        for name, typ in _COUNTERS:
            cols[f"{x}_tcp_{name}"] = _counter(full[f + name], typ)
        n_rtt = full[f + "rtt_samples"]
        valid = validity(n_rtt > 0)
        cols[f"{x}_tcp_rtt_samples"] = _counter(n_rtt, pa.uint32())
        for st in _RTT_STATS:
            cols[f"{x}_tcp_rtt_{st}"] = _measure(full[f + "rtt_" + st], valid)
        cols[f"{x}_tcp_rtt_hist"] = hist(f + "rtt_hist", f + "rtt_samples")
        n_ts = full[f + "ts_rtt_samples"]
        valid = validity(n_ts > 0)
        cols[f"{x}_tcp_ts_rtt_samples"] = _counter(n_ts, pa.uint32())
        for st in _TS_STATS:
            cols[f"{x}_tcp_ts_rtt_{st}"] = _measure(full[f + "ts_rtt_" + st], valid)
    hs = full["tcp_hs_valid"]
    cols["tcp_handshake_rtt_ns"] = _measure(full["tcp_hs_total_ns"], validity((hs & _HS_TOTAL) != 0))
    cols["tcp_handshake_server_ns"] = _measure(full["tcp_hs_server_ns"], validity((hs & _HS_SERVER) != 0))
    cols["tcp_handshake_client_ns"] = _measure(full["tcp_hs_client_ns"], validity((hs & _HS_CLIENT) != 0))
    n_art = full["tcp_art_samples"]
    valid = validity(n_art > 0)
    cols["tcp_art_samples"] = _counter(n_art, pa.uint32())
    for st in _ART_STATS:
        cols[f"tcp_art_{st}"] = _measure(full["tcp_art_" + st], valid)
    cols["tcp_art_hist"] = hist("tcp_art_hist", "tcp_art_samples")
    return cols
