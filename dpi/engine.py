"""The engine's Python face: per-packet records in, Arrow record batches of flow records out.

    eng = Engine(EngineConfig(idle_timeout_s=120))
    for records, data in reader:          # records: numpy array of dpi._reader.PKT_DTYPE
        for batch in eng.add(records):    # pyarrow.RecordBatch of dpi.schema.flow_schema()
            writer.write(batch)
    for batch in eng.flush():
        writer.write(batch)

The engine never reads a clock, the network or a file: the same records give the same batches.
Python objects appear per batch and per column, never per packet.
"""
from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa

from . import _flowtable
from . import roce_columns   # RoCE meter (issue 4)
from . import tcp_columns   # TCP meter (issue 3)
from . import dpi_columns
from .coded import CodedText, masked, plain
from ._reader import TUNNEL_NAMES
from .schema import flow_schema

NS = 1_000_000_000


@dataclass
class EngineConfig:
    idle_timeout_s: float = 120.0      # NFStream's default; a flow silent this long ends
    active_timeout_s: float = 1800.0   # a long flow yields one record per this period
    closed_timeout_s: float = 10.0     # a TCP flow that closed (FIN both ways / RST) leaves after this
    max_flows: int = 1_000_000         # hard table capacity; beyond it a flow is evicted (docs/limits.md)
    batch_rows: int = 65536            # flow records per Arrow record batch
    observer_host: str = ""            # default: this machine's host name
    community_id_seed: int = 0
    # ---- DPI (issue 5) ----
    dpi_budget: int = 16               # payload packets inspected per flow, both directions; 0 turns DPI off
    dpi_reasm_flows: int = 4096        # flows whose first bytes are reassembled at once (8 kB each); beyond,
                                       # a flow is inspected packet by packet (counted: reassembly_pool_full)
    rules: list = field(default_factory=list)  # extra rule files/directories (on top of the shipped rules/)
    shipped_rules: bool = True         # load rules/*.toml of this checkout
    tcp_meter: bool = True             # TCP loss/latency meters (issue 3); off: their columns are left out
    roce_columns: bool = True          # the RoCE meter's columns (issue 4); off: left out (the meter still keys
                                       # and pairs RoCE flows by queue pair: one record per QP pair)

    def validate(self) -> None:
        for name in ("idle_timeout_s", "active_timeout_s", "closed_timeout_s"):
            v = getattr(self, name)
            if not (v > 0):
                raise ValueError(f"{name.replace('_s', '').replace('_', '-')} must be positive, not {v}")
        if not 1 <= self.max_flows <= 1 << 30:
            raise ValueError(f"max-flows must be between 1 and {1 << 30}, not {self.max_flows}")
        if not 1 <= self.batch_rows <= 1 << 24:
            raise ValueError(f"batch-rows must be between 1 and {1 << 24}, not {self.batch_rows}")
        if not 0 <= self.community_id_seed <= 65535:
            raise ValueError("community-id seed must be 0..65535")
        if not 0 <= self.dpi_budget <= 255:
            raise ValueError(f"dpi-budget must be between 0 (off) and 255 packets, not {self.dpi_budget}")
        if not 0 <= self.dpi_reasm_flows <= 1 << 24:
            raise ValueError(f"dpi-reasm-flows must be between 0 (no reassembly) and {1 << 24}, "
                             f"not {self.dpi_reasm_flows}")

    def column_groups(self) -> tuple[str, ...]:
        """The output's column groups (dpi.schema.GROUPS): a meter that is off has no columns."""
        return ("core",) + (("dpi",) if self.dpi_budget else ()) + (("roce",) if self.roce_columns else ()) + \
            (("tcp",) if self.tcp_meter else ())

    def settings(self) -> dict:
        d = asdict(self)
        d.pop("observer_host")
        d["rules"] = [str(x) for x in self.rules]
        return d


_TUNNEL_TEXT = CodedText([t if t else None for t in TUNNEL_NAMES])


def _strings(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    return pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))


def _repeat(text: str, n: int) -> pa.Array:
    """A string column holding the same text n times, built from two buffers."""
    b = text.encode()
    offsets = np.arange(0, len(b) * (n + 1), len(b) or 1, dtype=np.int32)[: n + 1] if b else \
        np.zeros(n + 1, np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(b * n))


_masked = masked


def build_batch(recs: np.ndarray, schema: pa.Schema, observer: str, seed: int = 0,
                roce_recs: np.ndarray | None = None, dpi_vocab=None,
                tcp_recs: np.ndarray | None = None, dpi_recs: np.ndarray | None = None) -> pa.RecordBatch:
    """One record batch from an array of _flowtable.FLOWREC_DTYPE, column by column, with the columns of
    schema (its column groups: dpi.schema.flow_schema); roce_recs and tcp_recs are the RoCE and TCP parts of
    its RoCE and TCP records (_flowtable.ROCE_OUT_DTYPE / TCP_OUT_DTYPE, FlowTable.taken_roce / taken_tcp
    after take()); dpi_recs the DPI parts of every record while DPI is on (DPI_OUT_DTYPE, taken_dpi)."""
    if roce_recs is None:
        roce_recs = np.empty(0, dtype=_flowtable.ROCE_OUT_DTYPE)
    if tcp_recs is None:
        tcp_recs = np.empty(0, dtype=_flowtable.TCP_OUT_DTYPE)
    n = len(recs)
    (so, sd), (do, dd), (co, cd) = _flowtable.text_columns(recs, seed)
    start = recs["start_ns"].astype(np.int64)
    end = recs["end_ns"].astype(np.int64)
    proto = recs["proto"]
    is_tcp = proto == 6
    tun = recs["tunnel_type"]
    tunnelled = tun != 0
    has_icmp = recs["has_icmp"].astype(bool)
    src_flags = recs["src_tcp_flags"]
    dst_flags = recs["dst_tcp_flags"]
    cols = {
        "flow_id": plain(recs["flow_id"], pa.uint64()),
        "record_seq": plain(recs["rec_seq"], pa.uint32()),
        "community_id": _strings(co, cd),
        "observer_host": _repeat(observer, n),
        "flow_start": plain(start, pa.int64()).view(pa.timestamp("ns", tz="UTC")),
        "flow_end": plain(end, pa.int64()).view(pa.timestamp("ns", tz="UTC")),
        "duration_ns": plain(end - start, pa.int64()),
        "flow_end_reason": plain(recs["end_reason"], pa.uint8()),
        "ip_version": plain(recs["ip_version"], pa.uint8()),
        "src_ip": _strings(so, sd),
        "dst_ip": _strings(do, dd),
        "src_port": plain(recs["src_port"], pa.uint16()),
        "dst_port": plain(recs["dst_port"], pa.uint16()),
        "protocol": plain(proto, pa.uint8()),
        "vlan_id": plain(recs["vlan_id"], pa.uint16()),
        "outer_vlan_id": plain(recs["outer_vlan_id"], pa.uint16()),
        "dscp": plain(recs["tos"] >> 2, pa.uint8()),
        "tunnel_type": _TUNNEL_TEXT(tun),
        "tunnel_id": _masked(recs["tunnel_id"], tunnelled, pa.uint32()),
        "src_packets": plain(recs["src_packets"], pa.uint64()),
        "dst_packets": plain(recs["dst_packets"], pa.uint64()),
        "src_bytes": plain(recs["src_bytes"], pa.uint64()),
        "dst_bytes": plain(recs["dst_bytes"], pa.uint64()),
        "tcp_flags": _masked(src_flags | dst_flags, is_tcp, pa.uint16()),
        "src_tcp_flags": _masked(src_flags, is_tcp, pa.uint16()),
        "dst_tcp_flags": _masked(dst_flags, is_tcp, pa.uint16()),
        "icmp_type": _masked(recs["icmp_type"], has_icmp, pa.uint8()),
        "icmp_code": _masked(recs["icmp_code"], has_icmp, pa.uint8()),
        "truncated_packets": plain(recs["truncated_packets"], pa.uint32()),
        "fragment_packets": plain(recs["fragment_packets"], pa.uint32()),
        "interface": plain(recs["iface"], pa.uint16()),
    }
    names = schema.names
    if "roce_transport" in names:
        cols.update(roce_columns.build(recs, roce_recs))   # RoCE meter columns (issue 4)
    if "src_tcp_retrans_packets" in names:
        cols.update(tcp_columns.build(recs, tcp_recs))   # TCP meter columns (issue 3)
    cols.update(dpi_columns.build(recs, dpi_recs, dpi_vocab, "app_category" in names))  # DPI (issue 5)
    return pa.RecordBatch.from_arrays([cols[name] for name in names], schema=schema)


def limits(config: EngineConfig, c: dict) -> dict:
    """Each limit a user can set, its value, and how often it was reached (docs/limits.md); c is
    FlowTable.counters(). Stored in the output's flowtap.counters and shown in the CLI summaries."""
    d = c.get("dpi", {})
    return {
        "max_flows": config.max_flows,
        "flows_evicted": c["flows_evicted"],
        "flows_evicted_established": c["flows_evicted_established"],
        "dpi_budget_packets": config.dpi_budget,
        "dpi_budget_exhausted_flows": d.get("flows_budget_spent", 0),
        # reassembled prefix per direction: a compile-time bound (ext/dpi/dpi_types.h), not settable
        "dpi_reasm_bytes": _flowtable.DPI_REASM_BYTES if config.dpi_budget else 0,
        # times a direction's reassembled prefix reached dpi_reasm_bytes: bytes beyond were not inspected
        "dpi_reasm_truncated": d.get("reassembly_full", 0),
        "dpi_reasm_flows": config.dpi_reasm_flows,
        # payload packets that wanted a reassembly buffer while all dpi_reasm_flows were taken
        "dpi_reasm_no_buffer_packets": d.get("reassembly_pool_full", 0),
    }


class RulesError(ValueError):
    """Rule files that cannot be used: .errors lists every problem as "FILE:LINE: message"."""

    def __init__(self, errors):
        self.errors = [str(e) for e in errors]
        super().__init__("invalid rules:\n  " + "\n  ".join(self.errors))


class Engine:
    """Flow table + batch builder. Feed it record arrays with add(); finish with flush()."""

    def __init__(self, config: EngineConfig | None = None, metadata: dict[str, str] | None = None,
                 host_sums: int = 0):
        """host_sums: when > 0, self.hosts (_flowtable.HostSums of that capacity) sums every record's bytes
        per host (the replay summary's top talkers)."""
        self.config = config or EngineConfig()
        self.hosts = _flowtable.HostSums(host_sums) if host_sums > 0 else None
        self.config.validate()
        c = self.config
        # ---- DPI (issue 5): rules are checked before anything runs; a bad file stops the engine. With DPI
        # off the shipped rules would decide nothing (16 ms of parsing, 11 ms of importing dpi.rules): only
        # files the user names are still checked.
        self.rules = self.dpi_vocab = None
        if c.dpi_budget > 0 or c.rules:
            from .rules import load_rules
            self.rules = load_rules(c.rules, shipped=c.shipped_rules and c.dpi_budget > 0)
            if self.rules.errors:
                raise RulesError(self.rules.errors)
            self.dpi_vocab = self.rules.vocab()
        self.observer = c.observer_host or socket.gethostname()
        self.table = _flowtable.FlowTable(
            max_flows=c.max_flows,
            idle_timeout_ns=int(c.idle_timeout_s * NS),
            active_timeout_ns=int(c.active_timeout_s * NS),
            closed_timeout_ns=int(c.closed_timeout_s * NS),
            batch_rows=c.batch_rows,
            dpi_budget=c.dpi_budget,
            dpi_reasm_max=c.dpi_reasm_flows,
            tcp_meter=c.tcp_meter,
        )
        if self.rules is not None:
            self.table.set_rules(self.rules.compile())
        self.schema = flow_schema(metadata, c.column_groups())

    def _batch(self) -> pa.RecordBatch:
        recs = self.table.take()
        if self.hosts is not None:
            self.hosts.add(recs)
        return build_batch(recs, self.schema, self.observer, self.config.community_id_seed,
                           self.table.taken_roce, self.dpi_vocab, self.table.taken_tcp, self.table.taken_dpi)

    def add(self, records: np.ndarray, data: np.ndarray | None = None) -> Iterator[pa.RecordBatch]:
        """Meter a batch of per-packet records; yields a flow-record batch each time batch_rows are ready.
        data: the reader's frame bytes the records index into (frame_off); the RoCE meter reads RDMA CM
        messages from it (issue 4), without it it pairs queue pairs from PSNs only; DPI reads payload from
        it (issue 5)."""
        pos, n = 0, len(records)
        while pos < n:
            pos = self.table.add(records, pos, data)
            if self.table.pending >= self.config.batch_rows:
                yield self._batch()

    def expire(self, now_ns: int) -> Iterator[pa.RecordBatch]:
        """Advance packet time without packets (live capture) and yield what expired."""
        while self.table.expire(now_ns) >= self.config.batch_rows:
            yield self._batch()

    def flush(self) -> Iterator[pa.RecordBatch]:
        """End of input: export every open flow; yields the remaining batches (at least one, maybe empty)."""
        while self.table.flush() > 0:
            yield self._batch()
        yield self._batch()

    def counters(self) -> dict:
        c = self.table.counters()
        c["limits"] = limits(self.config, c)
        return c

    @property
    def active_flows(self) -> int:
        return self.table.active
