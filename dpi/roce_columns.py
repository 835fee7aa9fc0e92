"""Arrow columns of the RoCE meter (ext/ft_roce.h, docs/roce.md) from an array of _flowtable.FLOWREC_DTYPE.

One function, build(recs) -> {column name: pyarrow.Array}, merged into the batch by dpi.engine.build_batch.
Every column is built from numpy views in one step (no Python object per flow). Conventions
(dpi/schema.py): counters are never null and are 0 for flows that are not RoCE; measurements are null when
nothing was measured (no sample, not seen, or not RoCE).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .coded import CodedText, masked, nulls, plain, zeros
from .hist_columns import hist_column, null_hist
from .schema import ROCE_LATENCIES, ROCE_PAIRINGS, ROCE_TRANSPORTS

# per-direction counters: record field suffix (after roce_src_ / roce_dst_) -> Arrow type
_COUNTERS = (
    ("psn_gaps", pa.uint32()), ("psn_missing", pa.uint32()), ("psn_duplicates", pa.uint32()),
    ("psn_out_of_order", pa.uint32()), ("acks", pa.uint32()), ("nak_psn_seq_err", pa.uint32()),
    ("nak_rnr", pa.uint32()), ("nak_invalid_request", pa.uint32()), ("nak_remote_access", pa.uint32()),
    ("nak_remote_operational", pa.uint32()), ("cnp_packets", pa.uint32()), ("ecn_ect_packets", pa.uint32()),
    ("ecn_ce_packets", pa.uint32()), ("fecn_packets", pa.uint32()), ("becn_packets", pa.uint32()),
    ("send_messages", pa.uint32()), ("write_messages", pa.uint32()), ("read_messages", pa.uint32()),
    ("atomic_messages", pa.uint32()), ("payload_bytes", pa.uint64()), ("message_bytes", pa.uint64()),
)
_MESSAGES = ("send_messages", "write_messages", "read_messages", "atomic_messages")
_TR_NONE = 0xFF

# code -> text (a code without a name is null)
_TRANSPORT_TEXT = CodedText([ROCE_TRANSPORTS.get(i) for i in range(256)])
_PAIRING_TEXT = CodedText([ROCE_PAIRINGS.get(i) for i in range(256)])


def _coded(codes: np.ndarray, valid: np.ndarray, table: CodedText) -> pa.Array:
    return table(codes, valid)


def _measure(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    return masked(values, valid, pa.int64())


def _hist(sub: np.ndarray, roce_row: np.ndarray, prefix: str, valid: np.ndarray) -> pa.Array:
    """The histogram column (dpi.hist_columns) of the rows with samples; null elsewhere."""
    rows = np.flatnonzero(valid)
    return hist_column(len(valid), rows, sub, prefix + "_hist", roce_row[rows])   # roce_row: where in sub


def _no_roce(n: int) -> dict[str, pa.Array]:
    """The columns of a batch without a RoCE record (most batches): counters 0 from one zero buffer,
    everything else null; the same values build() gives non-RoCE rows."""
    cols: dict[str, pa.Array] = {
        "roce_transport": nulls(pa.string(), n), "roce_pairing": nulls(pa.string(), n),
        "roce_src_qpn": nulls(pa.uint32(), n), "roce_dst_qpn": nulls(pa.uint32(), n),
        "roce_path_mtu": nulls(pa.uint16(), n),
    }
    for x in ("src", "dst"):
        f = f"roce_{x}_"
        for name, typ in _COUNTERS:
            cols[f + name] = zeros(typ, n)
        cols[f + "mean_message_bytes"] = nulls(pa.float64(), n)
        for lat in ROCE_LATENCIES:
            p = f + lat
            cols[p + "_samples"] = zeros(pa.uint32(), n)
            for st in ("min_ns", "mean_ns", "max_ns", "p50_ns", "p99_ns"):
                cols[f"{p}_{st}"] = nulls(pa.int64(), n)
            cols[p + "_hist"] = null_hist(n)
    return cols


def build(recs: np.ndarray, roce_recs: np.ndarray) -> dict[str, pa.Array]:
    """Columns of the RoCE meter for a batch of flow records, named as in dpi.schema.

    Only the RoCE records are read (gathered once): in a mixed capture most records are other flows, and
    reading ninety fields of every 1.7 KB record column by column cost more than the whole TCP/UDP part."""
    n = len(recs)
    # roce_recs holds the RoCE parts of the RoCE records only (FlowTable.taken_roce), in record order
    roce_row = recs["roce_row"]
    rows = np.flatnonzero(roce_row >= 0)
    assert len(rows) == len(roce_recs), "RoCE side records do not match the batch"
    sub = roce_recs
    if len(rows) == 0:
        return _no_roce(n)
    roce = np.zeros(n, dtype=bool)
    roce[rows] = True

    def full(values: np.ndarray) -> np.ndarray:
        """values of the RoCE rows, in place in a batch-long array of zeros"""
        if len(rows) == n:
            return values
        out = np.zeros(n, dtype=values.dtype)
        out[rows] = values
        return out

    def nulls_(typ: pa.DataType) -> pa.Array:
        return nulls(typ, n)

    cols: dict[str, pa.Array] = {}
    tr = full(sub["roce_transport_code"])
    cols["roce_transport"] = _coded(tr, roce & (tr != _TR_NONE), _TRANSPORT_TEXT)
    cols["roce_pairing"] = _coded(full(sub["roce_pairing_code"]), roce, _PAIRING_TEXT)
    qv = full(sub["roce_qpn_valid"])
    cols["roce_src_qpn"] = masked(full(sub["roce_src_qpn"]), (qv & 1) != 0, pa.uint32())
    cols["roce_dst_qpn"] = masked(full(sub["roce_dst_qpn"]), (qv & 2) != 0, pa.uint32())
    mtu = full(sub["roce_path_mtu"])
    cols["roce_path_mtu"] = masked(mtu, roce & (mtu != 0), pa.uint16())
    for x in ("src", "dst"):
        f = f"roce_{x}_"
        for name, typ in _COUNTERS:
            cols[f + name] = plain(full(sub[f + name]), typ)
        msgs = sum(sub[f + k].astype(np.uint64) for k in _MESSAGES)
        has = full(msgs > 0) if len(rows) else np.zeros(n, dtype=bool)
        mean = np.divide(sub[f + "message_bytes"].astype(np.float64), msgs.astype(np.float64),
                         out=np.zeros(len(rows)), where=msgs > 0)
        cols[f + "mean_message_bytes"] = masked(full(mean), has, pa.float64()) if has.any() \
            else nulls_(pa.float64())
        for lat in ROCE_LATENCIES:
            p = f + lat
            cnt = full(sub[p + "_samples"])
            has = cnt > 0
            cols[p + "_samples"] = plain(cnt, pa.uint32())
            if not has.any():
                for st in ("min_ns", "mean_ns", "max_ns", "p50_ns", "p99_ns"):
                    cols[f"{p}_{st}"] = nulls_(pa.int64())
                cols[p + "_hist"] = _hist(sub, roce_row, p, has)
                continue
            cols[p + "_min_ns"] = _measure(full(sub[p + "_min_ns"]), has)
            mean_ns = np.floor_divide(sub[p + "_sum_ns"], np.maximum(sub[p + "_samples"], 1).astype(np.uint64))
            cols[p + "_mean_ns"] = _measure(full(mean_ns), has)
            cols[p + "_max_ns"] = _measure(full(sub[p + "_max_ns"]), has)
            cols[p + "_p50_ns"] = _measure(full(sub[p + "_p50_ns"]), has)
            cols[p + "_p99_ns"] = _measure(full(sub[p + "_p99_ns"]), has)
            cols[p + "_hist"] = _hist(sub, roce_row, p, has)
    return cols
