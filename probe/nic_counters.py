"""RDMA NIC port counters: sample the kernel's per-port counters and write their deltas as an Arrow table.

    sampler = PortCounterSampler("/sys")
    batch = sampler.sample()            # pyarrow.RecordBatch of PORT_COUNTERS_SCHEMA, one row per counter
    run(interval_s=1, count=10, output="ports.parquet")

Where the numbers come from (Linux, any RDMA driver: mlx5, irdma, bnxt_re, rxe, ...):

- ``<root>/class/infiniband/<device>/ports/<port>/counters/<name>``: the InfiniBand port counters (PMA),
  e.g. ``port_xmit_data``, ``port_rcv_packets``, ``symbol_error``, ``link_downed``. ``port_xmit_data`` and
  ``port_rcv_data`` count 4-byte words, as the IBA defines them; values are written as the kernel shows them.
- ``<root>/class/infiniband/<device>/ports/<port>/hw_counters/<name>``: the driver's counters, e.g. for mlx5
  ``out_of_sequence``, ``packet_seq_err``, ``implied_nak_seq_err``, ``local_ack_timeout_err``,
  ``np_cnp_sent``, ``rp_cnp_handled``, ``np_ecn_marked_roce_packets``, ``duplicate_request``,
  ``rnr_nak_retry_err``; for rxe ``rcvd_seq_err``, ``duplicate_request``, ``send_rnr_err``, ... ``lifespan``
  (mlx5: how long the driver caches these values, in ms) is a setting, not a counter, and is left out.
- the netdev behind the port (``ports/<port>/gid_attrs/ndevs/<index>``, else ``device/net/*``, else rxe's
  ``parent``): ``<root>/class/net/<netdev>/statistics/<name>`` (``rx_packets``, ``tx_bytes``, ``rx_dropped``,
  ...).

Kernel names are kept as they are. A value below the previous one means the counter was reset (driver
reload, port reset) or wrapped: the row says reset = true and its delta is the new value (what was counted
since the reset). A port that disappears is counted (``ports_vanished``) and, when it comes back, starts
again with a baseline row (delta null). Time here is wall-clock time: it is when the kernel was asked.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa

PORT_COUNTERS_SCHEMA_VERSION = "1"
NOT_COUNTERS = {"lifespan"}            # hw_counters entries that are settings
MAX_GID_ENTRIES = 256                  # gid_attrs/ndevs entries looked at to find the netdev


def _f(name, typ, nullable, doc, unit=""):
    meta = {"doc": doc}
    if unit:
        meta["unit"] = unit
    return pa.field(name, typ, nullable=nullable, metadata=meta)


PORT_COUNTERS_SCHEMA = pa.schema([
    _f("timestamp", pa.timestamp("ns", tz="UTC"), False, "When this sample was read (wall clock)."),
    _f("interval_ns", pa.int64(), True, "Time since the previous sample of this counter; null for a "
       "baseline row (first sample of the port, or first after it came back).", "ns"),
    _f("device", pa.string(), False, "RDMA device name (/sys/class/infiniband/<device>)."),
    _f("port", pa.uint16(), False, "Port number of the device."),
    _f("netdev", pa.string(), True, "Network interface behind the port; null when the kernel shows none."),
    _f("source", pa.string(), False, "Where the counter lives: counters (IB port counters), hw_counters "
       "(driver counters) or netdev (/sys/class/net/<netdev>/statistics)."),
    _f("counter", pa.string(), False, "The kernel's name for the counter."),
    _f("value", pa.uint64(), False, "Value read (port_xmit_data / port_rcv_data count 4-byte words)."),
    _f("delta", pa.uint64(), True, "Increase since the previous sample; after a reset, the value itself; "
       "null for a baseline row."),
    _f("reset", pa.bool_(), False, "The value went down since the previous sample: the counter was reset "
       "or wrapped, and delta is the value counted since."),
], metadata={"flowtap.table": "port_counters", "flowtap.schema_version": PORT_COUNTERS_SCHEMA_VERSION})


@dataclass(frozen=True)
class Port:
    device: str
    port: int
    path: Path            # .../class/infiniband/<device>/ports/<port>
    netdev: str | None


class PortCounterSampler:
    """Reads every RDMA port under <sysfs_root>/class/infiniband (optionally only some devices) and turns
    successive reads into rows of PORT_COUNTERS_SCHEMA."""

    def __init__(self, sysfs_root: str | os.PathLike = "/sys", devices: list[str] | None = None,
                 clock_ns: Callable[[], int] = time.time_ns):
        self.root = Path(sysfs_root)
        self.ib = self.root / "class" / "infiniband"
        self.devices = set(devices) if devices else None
        self.clock_ns = clock_ns
        self.prev: dict[tuple, tuple[int, int]] = {}     # (device, port, source, counter) -> (value, ts)
        self.ports_seen: set[tuple[str, int]] = set()
        self.counters = {"samples": 0, "rows": 0, "ports_vanished": 0, "ports_appeared": 0,
                         "counter_resets": 0, "unreadable_files": 0}
        self.log: list[str] = []

    # ---- discovery ----
    def ports(self) -> list[Port]:
        """The RDMA ports present now, sorted by device and port."""
        out = []
        try:
            devs = sorted(p.name for p in self.ib.iterdir())
        except OSError:
            return out
        for dev in devs:
            if self.devices is not None and dev not in self.devices:
                continue
            pdir = self.ib / dev / "ports"
            try:
                nums = sorted(int(p.name) for p in pdir.iterdir() if p.name.isdigit())
            except OSError:
                continue
            for n in nums:
                path = pdir / str(n)
                out.append(Port(dev, n, path, self._netdev(dev, path)))
        return out

    def _netdev(self, dev: str, port_path: Path) -> str | None:
        ndevs = port_path / "gid_attrs" / "ndevs"
        try:
            idx = sorted((int(p.name) for p in ndevs.iterdir() if p.name.isdigit()))[:MAX_GID_ENTRIES]
        except OSError:
            idx = []
        for i in idx:
            try:   # the kernel answers EINVAL for an empty GID entry
                name = (ndevs / str(i)).read_text().strip()
            except OSError:
                continue
            if name:
                return name
        try:
            names = sorted(p.name for p in (self.ib / dev / "device" / "net").iterdir())
            if names:
                return names[0]
        except OSError:
            pass
        try:
            name = (self.ib / dev / "parent").read_text().strip()   # rxe (SoftRoCE)
            return name or None
        except OSError:
            return None

    # ---- reading ----
    def _read_dir(self, d: Path) -> list[tuple[str, int]]:
        try:
            names = sorted(p.name for p in d.iterdir())
        except OSError:
            return []
        out = []
        for name in names:
            if name in NOT_COUNTERS:
                continue
            try:
                text = (d / name).read_text().strip()
            except OSError:
                self.counters["unreadable_files"] += 1
                continue
            try:
                out.append((name, int(text, 10)))
            except ValueError:
                self.counters["unreadable_files"] += 1
        return out

    def read_port(self, p: Port) -> list[tuple[str, str, int]]:
        """(source, counter, value) of one port: IB counters, driver counters, netdev statistics."""
        rows = [("counters", n, v) for n, v in self._read_dir(p.path / "counters")]
        rows += [("hw_counters", n, v) for n, v in self._read_dir(p.path / "hw_counters")]
        if p.netdev:
            rows += [("netdev", n, v) for n, v in self._read_dir(self.root / "class" / "net" / p.netdev /
                                                                 "statistics")]
        return rows

    def sample(self) -> pa.RecordBatch:
        """Read every port once; returns its rows (baseline rows for ports not seen at the previous sample)."""
        now = self.clock_ns()
        ports = self.ports()
        present = {(p.device, p.port) for p in ports}
        for gone in sorted(self.ports_seen - present):
            self.counters["ports_vanished"] += 1
            self.log.append(f"port {gone[0]}/{gone[1]} vanished")
        for new in sorted(present - self.ports_seen):
            if self.counters["samples"]:
                self.counters["ports_appeared"] += 1
                self.log.append(f"port {new[0]}/{new[1]} appeared")
        self.ports_seen = present
        cols = {f.name: [] for f in PORT_COUNTERS_SCHEMA}
        fresh = {}
        for p in ports:
            for source, name, value in self.read_port(p):
                key = (p.device, p.port, source, name)
                before = self.prev.get(key)
                if before is None:
                    interval, delta, reset = None, None, False
                else:
                    interval = now - before[1]
                    reset = value < before[0]
                    delta = value if reset else value - before[0]
                    if reset:
                        self.counters["counter_resets"] += 1
                fresh[key] = (value, now)
                cols["timestamp"].append(now)
                cols["interval_ns"].append(interval)
                cols["device"].append(p.device)
                cols["port"].append(p.port)
                cols["netdev"].append(p.netdev)
                cols["source"].append(source)
                cols["counter"].append(name)
                cols["value"].append(value)
                cols["delta"].append(delta)
                cols["reset"].append(reset)
        # counters that vanished from a port that is still there are forgotten, like a vanished port
        self.prev = fresh
        self.counters["samples"] += 1
        self.counters["rows"] += len(cols["counter"])
        return pa.RecordBatch.from_arrays([pa.array(cols[f.name], f.type) for f in PORT_COUNTERS_SCHEMA],
                                          schema=PORT_COUNTERS_SCHEMA)


class NoRdmaDevices(Exception):
    """No RDMA device (or none of the requested ones) under the sysfs root."""


def run(output: str, interval_s: float = 1.0, count: int = 0, sysfs_root: str = "/sys",
        devices: list[str] | None = None, fmt: str | None = None, sleep: Callable[[float], None] = time.sleep,
        on_sample: Callable[[int, pa.RecordBatch], None] | None = None) -> dict:
    """Sample every interval_s seconds, count times (0: until KeyboardInterrupt), into output (.parquet,
    .arrow, .arrows). The first sample of each port is its baseline (delta null). Returns the counters.
    Raises NoRdmaDevices before creating the output when there is nothing to sample; OutputError (dpi.writer)
    when the output cannot be written. A KeyboardInterrupt seals the output and propagates."""
    from dpi.writer import FlowWriter

    sampler = PortCounterSampler(sysfs_root, devices)
    if not sampler.ports():
        where = sampler.ib
        raise NoRdmaDevices(f"no RDMA device under {where}" +
                            (f" named {', '.join(sorted(devices))}" if devices else "") +
                            " (is an RDMA driver loaded? this machine may have no RDMA NIC)")
    meta = {"flowtap.sysfs_root": str(Path(sysfs_root).resolve()), "flowtap.interval_s": str(interval_s)}
    schema = PORT_COUNTERS_SCHEMA.with_metadata({**PORT_COUNTERS_SCHEMA.metadata,
                                                 **{k.encode(): v.encode() for k, v in meta.items()}})
    writer = FlowWriter(output, schema, fmt)
    start = time.monotonic()
    i = 0
    try:
        while count == 0 or i < count:
            if i:
                delay = start + i * interval_s - time.monotonic()
                if delay > 0:
                    sleep(delay)
            batch = sampler.sample().replace_schema_metadata(schema.metadata)
            writer.write(batch, dict(sampler.counters))
            if on_sample is not None:
                on_sample(i, batch)
            i += 1
    finally:
        writer.close(dict(sampler.counters))
    return {**sampler.counters, "log": list(sampler.log)}
