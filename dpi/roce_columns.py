"""Arrow columns of the RoCE meter (ext/ft_roce.h, docs/roce.md) from an array of _flowtable.FLOWREC_DTYPE.

One function, build(recs) -> {column name: pyarrow.Array}, merged into the batch by dpi.engine.build_batch.
Every column is built from numpy views in one step (no Python object per flow). Conventions
(dpi/schema.py): counters are never null and are 0 for flows that are not RoCE; measurements are null when
nothing was measured (no sample, not seen, or not RoCE).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .schema import ROCE_HIST_TYPE, ROCE_LATENCIES, ROCE_PAIRINGS, ROCE_TRANSPORTS

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

# code -> text lookup arrays for pyarrow's take (index 256 = null)
_TRANSPORT_TEXT = pa.array([ROCE_TRANSPORTS.get(i) for i in range(256)], pa.string())
_PAIRING_TEXT = pa.array([ROCE_PAIRINGS.get(i) for i in range(256)], pa.string())


def _coded(codes: np.ndarray, valid: np.ndarray, table: pa.Array) -> pa.Array:
    idx = pa.array(codes.astype(np.int32), pa.int32(), mask=~valid)
    return table.take(idx)


def _measure(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64), type=pa.int64(), mask=~valid)


def _hist(sub: np.ndarray, roce_row: np.ndarray, prefix: str, valid: np.ndarray) -> pa.Array:
    """The struct<first_bucket, counts, collapsed> column from the raw sketches (80 16-bit counts, base
    bucket, halvings): counts scaled back by the halvings, zero buckets at both ends left out; null where
    there is no sample. Only the rows with samples are expanded (most flows of a mixed capture have none)."""
    n = len(valid)
    rows = np.flatnonzero(valid)
    srows = roce_row[rows]   # where those records' RoCE parts are in sub
    if len(rows) == 0:   # children stay valid (Parquet: non-nullable fields), the struct is null
        return pa.StructArray.from_arrays(
            [pa.array(np.zeros(n, np.int16), pa.int16()),
             pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.uint32())),
             pa.array(np.zeros(n, bool), pa.bool_())],
            fields=list(ROCE_HIST_TYPE), mask=pa.array(np.ones(n, bool), pa.bool_()))
    raw = sub[prefix + "_hist_counts"][srows].reshape(len(rows), -1).astype(np.uint64)
    width = raw.shape[1]
    shift = np.minimum(sub[prefix + "_hist_halvings"][srows].astype(np.uint64), 16)
    counts = np.minimum(raw << shift[:, None], np.uint64(0xFFFFFFFF)).astype(np.uint32)
    nz = counts > 0
    ok = nz.any(axis=1)
    lo = np.argmax(nz, axis=1)
    hi = width - 1 - np.argmax(nz[:, ::-1], axis=1)
    col = np.arange(width)[None, :]
    keep = ok[:, None] & (col >= lo[:, None]) & (col <= hi[:, None])
    values = np.ascontiguousarray(counts[keep])            # row-major: rows stay in order
    lengths = np.zeros(n, dtype=np.int32)
    lengths[rows] = np.where(ok, hi - lo + 1, 0)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    first = np.zeros(n, dtype=np.int16)
    first[rows] = np.where(ok, sub[prefix + "_hist_base"][srows].astype(np.int64) + lo, 0)
    has = np.zeros(n, dtype=bool)
    has[rows] = ok
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.uint32()))
    collapsed = np.zeros(n, dtype=bool)
    collapsed[rows] = sub[prefix + "_hist_collapsed"][srows] != 0
    collapsed = pa.array(collapsed, pa.bool_())
    return pa.StructArray.from_arrays([pa.array(first, pa.int16()), lists, collapsed],
                                      fields=list(ROCE_HIST_TYPE), mask=pa.array(~has, pa.bool_()))


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
    roce = np.zeros(n, dtype=bool)
    roce[rows] = True

    def full(values: np.ndarray) -> np.ndarray:
        """values of the RoCE rows, in place in a batch-long array of zeros"""
        if len(rows) == n:
            return values
        out = np.zeros(n, dtype=values.dtype)
        out[rows] = values
        return out

    def nulls(typ: pa.DataType) -> pa.Array:
        return pa.nulls(n, typ)

    cols: dict[str, pa.Array] = {}
    tr = full(sub["roce_transport_code"])
    cols["roce_transport"] = _coded(tr, roce & (tr != _TR_NONE), _TRANSPORT_TEXT)
    cols["roce_pairing"] = _coded(full(sub["roce_pairing_code"]), roce, _PAIRING_TEXT)
    qv = full(sub["roce_qpn_valid"])
    cols["roce_src_qpn"] = pa.array(full(sub["roce_src_qpn"]), pa.uint32(), mask=~((qv & 1) != 0))
    cols["roce_dst_qpn"] = pa.array(full(sub["roce_dst_qpn"]), pa.uint32(), mask=~((qv & 2) != 0))
    mtu = full(sub["roce_path_mtu"])
    cols["roce_path_mtu"] = pa.array(mtu, pa.uint16(), mask=~(roce & (mtu != 0)))
    for x in ("src", "dst"):
        f = f"roce_{x}_"
        for name, typ in _COUNTERS:
            cols[f + name] = pa.array(full(sub[f + name]), typ)
        msgs = sum(sub[f + k].astype(np.uint64) for k in _MESSAGES)
        has = full(msgs > 0) if len(rows) else np.zeros(n, dtype=bool)
        mean = np.divide(sub[f + "message_bytes"].astype(np.float64), msgs.astype(np.float64),
                         out=np.zeros(len(rows)), where=msgs > 0)
        cols[f + "mean_message_bytes"] = pa.array(full(mean), pa.float64(), mask=~has) if has.any() \
            else nulls(pa.float64())
        for lat in ROCE_LATENCIES:
            p = f + lat
            cnt = full(sub[p + "_samples"])
            has = cnt > 0
            cols[p + "_samples"] = pa.array(cnt, pa.uint32())
            if not has.any():
                for st in ("min_ns", "mean_ns", "max_ns", "p50_ns", "p99_ns"):
                    cols[f"{p}_{st}"] = nulls(pa.int64())
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
