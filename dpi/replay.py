"""Replay: capture files -> reader -> engine -> writer, with progress, counters and a summary.

Bad input never loses what was already read: a capture error ends that file (the error names the file and
byte offset), the remaining files are still replayed, every flow collected is flushed and written, and the
caller learns of the error through ReplayResult.errors.
"""
from __future__ import annotations

import heapq
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from . import __version__
from ._reader import RECORD_VERSION
from .capture import CaptureError, CaptureReader
from .engine import Engine, EngineConfig
from .writer import FlowWriter

TOP_HOSTS_CAP = 1_000_000  # distinct hosts summed for the top talkers (bounded; hosts beyond are counted)


class _Held:
    """SIGINT/SIGTERM held while a batch travels from the engine to the file (issue 7): raised there, the
    KeyboardInterrupt would drop a batch the engine had already handed out. Between such moments (reading
    input, blocked on a pipe) the signal stops the run at once."""
    depth = 0
    pending = False


HELD = _Held()


def interrupt_handler(signum, frame):
    """Handler for SIGINT and SIGTERM (the CLI installs it): KeyboardInterrupt now, or, inside a held section,
    as soon as the section ends."""
    if HELD.depth:
        HELD.pending = True
        return
    raise KeyboardInterrupt


class _hold:
    def __enter__(self):
        HELD.depth += 1

    def __exit__(self, exc_type, exc, tb):
        HELD.depth -= 1
        if HELD.depth == 0 and HELD.pending and exc_type is None:
            HELD.pending = False
            raise KeyboardInterrupt
        return False


class InputError(Exception):
    """An input file cannot be opened (message names the file)."""


@dataclass
class Progress:
    """What a progress display needs; passed to the callback about every batch."""
    file_index: int
    file_count: int
    path: str
    bytes_done: int
    bytes_total: int
    packets: int
    active_flows: int
    elapsed_s: float


@dataclass
class ReplayResult:
    output: str
    packets: int = 0
    bytes_ip: int = 0
    records: int = 0
    flows: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    counters: dict = field(default_factory=dict)
    top_flows: list[tuple] = field(default_factory=list)   # (bytes, packets, "src:port -> dst:port proto")
    top_hosts: list[tuple] = field(default_factory=list)   # (bytes, host)
    hosts_capped: bool = False


PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 58: "icmpv6", 132: "sctp"}


def endpoint(ip: str, port: int) -> str:
    """addr:port, with IPv6 addresses in brackets (RFC 5952 section 6)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class _Summary:
    """Running top flows over the written batches: the n largest of each batch, merged in a heap. Top talkers
    come from the engine's HostSums (exact byte sums per host over every record, in C; dpi._flowtable)."""

    def __init__(self, n: int = 5):
        self.n = n
        self.flows: list[tuple] = []

    def add(self, b: pa.RecordBatch) -> None:
        if b.num_rows == 0:
            return
        tot = b.column("src_bytes").to_numpy() + b.column("dst_bytes").to_numpy()
        k = min(self.n, b.num_rows)
        idx = np.argpartition(-tot.astype(np.int64), k - 1)[:k] if b.num_rows > k else np.arange(b.num_rows)
        # only the k rows and columns shown, as scalars (RecordBatch.take would import pyarrow.compute,
        # dpi/coded.py says why not; to_pylist() of a ns timestamp needs pandas)
        cols = {c: b.column(c) for c in ("src_ip", "src_port", "dst_ip", "dst_port", "protocol", "src_bytes",
                                         "dst_bytes", "src_packets", "dst_packets")}
        for i in idx.tolist():
            row = {c: a[i].as_py() for c, a in cols.items()}
            label = (f"{endpoint(row['src_ip'], row['src_port'])} -> "
                     f"{endpoint(row['dst_ip'], row['dst_port'])} {PROTO_NAMES.get(row['protocol'], row['protocol'])}")
            item = (row["src_bytes"] + row["dst_bytes"], row["src_packets"] + row["dst_packets"], label)
            heapq.heappush(self.flows, item)
            if len(self.flows) > self.n:
                heapq.heappop(self.flows)

    def result(self) -> list[tuple]:
        return sorted(self.flows, reverse=True)


def replay(paths: list[str], output: str, config: EngineConfig | None = None, fmt: str | None = None,
           progress: Callable[[Progress], None] | None = None, batch_packets: int = 16384,
           max_output_bytes: int | None = None, parquet_journal: bool = True) -> ReplayResult:
    """Replay capture files into one flow-record file. Raises InputError before any work when an input
    cannot be opened, OutputError (dpi.writer) when the output cannot be written. max_output_bytes: stop
    writing once the file holds that many bytes (the run goes on, so that the records not written are
    counted exactly: counters["output"]); parquet_journal: see dpi.writer."""
    for p in paths:
        if not os.path.exists(p):
            raise InputError(f"{p}: no such file")
        if os.path.isdir(p):
            raise InputError(f"{p}: is a directory")
        if not os.access(p, os.R_OK):
            raise InputError(f"{p}: permission denied")
    config = config or EngineConfig()
    HELD.pending = False   # a signal held by an earlier run in this process is not this run's
    meta = {
        "flowtap.version": __version__,
        "flowtap.record_version": str(RECORD_VERSION),
        "flowtap.capture_source": json.dumps([os.path.abspath(p) for p in paths]),
        "flowtap.settings": json.dumps(config.settings()),
    }
    engine = Engine(config, meta, host_sums=TOP_HOSTS_CAP)
    meta["flowtap.observer_host"] = engine.observer
    engine.schema = engine.schema.with_metadata({**engine.schema.metadata,
                                                 b"flowtap.observer_host": engine.observer.encode()})
    writer = FlowWriter(output, engine.schema, fmt, journal=parquet_journal, max_bytes=max_output_bytes)
    res = ReplayResult(output=output)
    summary = _Summary()
    reader_counters: dict[str, int] = {}
    t0 = time.monotonic()

    def counters() -> dict:
        c = dict(engine.counters())
        c["reader"] = dict(reader_counters)
        c["capture_errors"] = list(res.errors)
        c["files"] = len(paths)
        c["output"] = writer.status()   # issue 7: the output-size limit and what it kept out
        return c

    def emit(batch: pa.RecordBatch) -> None:
        summary.add(batch)
        writer.write(batch, counters())

    try:
        for fi, path in enumerate(paths):
            try:
                reader = CaptureReader(path, batch_size=batch_packets)
            except CaptureError as e:
                res.errors.append(str(e))
                continue
            except OSError as e:
                res.errors.append(f"{path}: cannot read: {e.strerror or e}")
                continue
            try:
                for records, data in reader:
                    with _hold():   # a batch taken from the engine reaches the file whole
                        for batch in engine.add(records, data):   # data: RoCE meter reads RDMA CM (issue 4)
                            emit(batch)
                    if progress is not None:
                        progress(Progress(fi, len(paths), path, reader.bytes_consumed, reader.total_bytes,
                                          engine.table.packets_seen, engine.active_flows,
                                          time.monotonic() - t0))
            except CaptureError as e:
                res.errors.append(str(e))
            finally:
                for k, v in reader.counters.items():
                    if isinstance(v, int):
                        reader_counters[k] = reader_counters.get(k, 0) + v
                reader.close()
    finally:
        # whatever happened above (capture error, Ctrl-C), the flows collected so far are written out; a
        # signal meanwhile waits until the file is sealed (SIGKILL still ends it: the journal is recoverable)
        HELD.depth += 1
        try:
            for batch in engine.flush():
                emit(batch)
            writer.close(counters())
        finally:
            HELD.depth -= 1
    if HELD.pending and HELD.depth == 0:
        HELD.pending = False
        raise KeyboardInterrupt   # the output is complete and sealed; the caller learns of the signal

    c = engine.counters()
    res.counters = counters()
    res.packets = c["packets_seen"]
    res.bytes_ip = c["bytes_metered"]
    res.records = c["records_exported"]
    res.flows = c["flows_created"]
    res.elapsed_s = time.monotonic() - t0
    res.top_flows = summary.result()
    res.top_hosts = engine.hosts.top(5)
    res.hosts_capped = engine.hosts.hosts_dropped > 0
    return res
