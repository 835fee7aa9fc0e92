"""Flow flood: millions of distinct one-packet flows through a flow table capped far below that.

Packets are generated chunk by chunk as numpy arrays in the reader's record layout (dpi._reader.PKT_DTYPE)
and fed to the engine, so memory holds one chunk of packets, never the stream. Flood flow i is a TCP SYN
from 10.0.0.0 + i (port 1024 + i % 60000) to 192.0.2.1:80, one packet each, at 1 us spacing (packet time):
with the default 120 s idle timeout no flood flow idles out, so every flow beyond the cap leaves by eviction,
and the counts follow by arithmetic: evicted = flows - max_flows (when established flows are not evicted).

--established K adds K TCP connections (handshake first, then one data packet per connection, in turn,
every --period flood packets, alternating direction); the policy under test (ext/_flowtable.pyx
evict_victim) must never evict them while the flood has flows on probation.

    python bench/flood.py --flows 10000000 --max-flows 100000 --checkpoints 1000000,3000000,10000000
    python bench/flood.py --flows 300000 --max-flows 5000 --established 1000 --json

Prints RSS (VmRSS, VmHWM from /proc/self/status) at each checkpoint, run time, the end reasons counted
from the Arrow records the engine produced, and the table's counters.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpi._reader import PKT_DTYPE  # noqa: E402

FT_F_L3, FT_F_L4 = 0x1, 0x2
SYN, ACK, PSH = 0x02, 0x10, 0x08
US = 1000
T0 = 1_700_000_000 * 1_000_000_000
FLOOD_DST = bytes([192, 0, 2, 1])
EST_SRC_BASE = bytes([172, 16, 0, 0])


def rss_kib() -> dict:
    """VmRSS and VmHWM (peak) of this process, KiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


def _base(n: int) -> np.ndarray:
    a = np.zeros(n, PKT_DTYPE)
    a["flags"] = FT_F_L3 | FT_F_L4
    a["ip_version"] = 4
    a["proto"] = 6
    a["l3_len"] = 40
    a["wire_len"] = 54
    a["cap_len"] = 54
    a["tcp_doff"] = 5
    return a


def _set_v4(raw: np.ndarray, field: str, addrs_be: np.ndarray) -> None:
    """Write IPv4 addresses (uint32, host order values) into a V16 field, network byte order."""
    off = PKT_DTYPE.fields[field][1]
    raw[:, off:off + 4] = addrs_be.astype(">u4").view(np.uint8).reshape(-1, 4)


def flood_chunk(first: int, n: int, ts0: int) -> np.ndarray:
    """Flood flows first .. first+n-1: one SYN each, 1 us apart from ts0."""
    a = _base(n)
    idx = np.arange(first, first + n, dtype=np.int64)
    a["ts_ns"] = ts0 + np.arange(n, dtype=np.uint64) * US
    raw = a.view(np.uint8).reshape(n, PKT_DTYPE.itemsize)
    _set_v4(raw, "src_addr", (0x0A000000 + idx).astype(np.uint32))
    _set_v4(raw, "dst_addr", np.full(n, int.from_bytes(FLOOD_DST, "big"), np.uint32))
    a["sport"] = 1024 + idx % 60000
    a["dport"] = 80
    a["tcp_flags"] = SYN
    a["tcp_seq"] = (idx * 2654435761) & 0xFFFFFFFF
    return a


def established_packets(conn: np.ndarray, ts: np.ndarray, flags: np.ndarray,
                        reverse: np.ndarray) -> np.ndarray:
    """One packet per entry: connection conn[j] (172.16.x.y:40000+j % 20000 <-> 192.0.2.2:443), from the
    client unless reverse[j]."""
    n = len(conn)
    a = _base(n)
    a["ts_ns"] = ts
    raw = a.view(np.uint8).reshape(n, PKT_DTYPE.itemsize)
    cli = (int.from_bytes(EST_SRC_BASE, "big") + conn).astype(np.uint32)
    srv = np.full(n, 0xC0000202, np.uint32)
    _set_v4(raw, "src_addr", np.where(reverse, srv, cli))
    _set_v4(raw, "dst_addr", np.where(reverse, cli, srv))
    cport = (40000 + conn % 20000).astype(np.uint16)
    a["sport"] = np.where(reverse, 443, cport)
    a["dport"] = np.where(reverse, cport, 443)
    a["tcp_flags"] = flags
    a["tcp_seq"] = 1000
    return a


def handshakes(k: int, ts0: int) -> np.ndarray:
    """SYN, SYN/ACK, ACK for connections 0..k-1, 3 packets per connection, 1 us apart."""
    conn = np.repeat(np.arange(k), 3)
    step = np.tile(np.arange(3), k)
    flags = np.array([SYN, SYN | ACK, ACK], np.uint16)[step]
    ts = ts0 + np.arange(3 * k, dtype=np.uint64) * US
    return established_packets(conn, ts, flags, step == 1)


def stream(flows: int, established: int, period: int, chunk: int):
    """Yield (packet chunk, flood flows emitted so far). Established traffic: after every `period` flood
    packets, one data packet of the next connection in turn (its timestamp just after the flood packet)."""
    ts = T0
    if established:
        h = handshakes(established, ts)
        ts = int(h["ts_ns"][-1]) + US
        yield h, 0
    done, turn = 0, 0
    while done < flows:
        n = min(chunk, flows - done)
        a = flood_chunk(done, n, ts)
        if established and period:
            # the flood packets that a data packet follows
            pos = np.arange(period - 1 - (done % period), n, period)
            if len(pos):
                seq = turn + np.arange(len(pos))   # data packet number; each round over the connections
                turn += len(pos)                   # flips the direction
                extra = established_packets(seq % established, a["ts_ns"][pos] + 1,
                                            np.full(len(pos), ACK | PSH, np.uint16),
                                            (seq // established) % 2 == 1)
                a = np.insert(a, pos + 1, extra)
        ts = int(a["ts_ns"][-1]) + US
        done += n
        yield a, done


def run(flows: int, max_flows: int, established: int = 0, period: int = 100, chunk: int = 65536,
        checkpoints=(), dpi_budget: int = 0, batch_rows: int = 65536, output: str | None = None) -> dict:
    """Meter the flood through an Engine; returns figures (see module doc)."""
    import pyarrow.compute as pc
    from dpi.engine import Engine, EngineConfig
    eng = Engine(EngineConfig(max_flows=max_flows, dpi_budget=dpi_budget, batch_rows=batch_rows,
                              observer_host="flood"))
    writer = None
    if output:
        from dpi.writer import FlowWriter
        writer = FlowWriter(output, eng.schema, None)
    ends = np.zeros(8, np.int64)
    est_evicted = 0

    def take(batch):
        nonlocal est_evicted
        r = batch.column("flow_end_reason").to_numpy()
        ends[:] += np.bincount(r, minlength=8)[:8]
        if established:
            # an evicted established connection: client in 172.16/16 (the flood comes from 10/8)
            est = pc.starts_with(batch.column("src_ip"), "172.16.").to_numpy(zero_copy_only=False)
            est_evicted += int(np.count_nonzero(est & (r == 5)))
        if writer:
            writer.write(batch, eng.counters())

    cps = sorted(set(checkpoints))
    marks = []
    t0 = time.monotonic()
    pkts = 0
    for a, done in stream(flows, established, period, chunk):
        pkts += len(a)
        for b in eng.add(a):
            take(b)
        while cps and done >= cps[0]:
            marks.append({"flows": cps.pop(0), "seconds": round(time.monotonic() - t0, 2),
                          "flows_active": eng.active_flows, **rss_kib()})
    t_meter = time.monotonic() - t0
    for b in eng.flush():
        take(b)
    if writer:
        writer.close(eng.counters())
    c = eng.counters()
    return {
        "flows": flows, "max_flows": max_flows, "established": established, "packets": pkts,
        "seconds_metering": round(t_meter, 2), "seconds_total": round(time.monotonic() - t0, 2),
        "checkpoints": marks, "final": rss_kib(),
        "records_by_end_reason": {int(i): int(v) for i, v in enumerate(ends) if v},
        "established_evicted_in_records": est_evicted,
        "counters": {k: c[k] for k in ("flows_created", "flows_evicted", "flows_evicted_established",
                                       "flows_promoted", "probation_reserve", "records_exported",
                                       "packets_seen", "max_flows")},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=10_000_000, help="distinct flood flows")
    ap.add_argument("--max-flows", type=int, default=100_000, help="flow-table cap")
    ap.add_argument("--established", type=int, default=0, help="established connections with traffic")
    ap.add_argument("--period", type=int, default=100, help="flood packets between two established packets")
    ap.add_argument("--chunk", type=int, default=65536, help="packets generated at a time")
    ap.add_argument("--checkpoints", default="", help="flood-flow counts at which RSS is taken (comma list)")
    ap.add_argument("--batch-rows", type=int, default=65536, help="flow records per output batch")
    ap.add_argument("--dpi-budget", type=int, default=0, help="engine DPI budget (SYNs carry no payload)")
    ap.add_argument("-o", "--output", help="also write the flow records here (.arrows, .arrow, .parquet)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    cps = [int(x) for x in a.checkpoints.split(",") if x]
    res = run(a.flows, a.max_flows, a.established, a.period, a.chunk, cps, a.dpi_budget, a.batch_rows,
              a.output)
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['flows']:,} flood flows (+{res['established']:,} established), {res['packets']:,} packets, "
          f"cap {res['max_flows']:,}: {res['seconds_metering']} s metering, {res['seconds_total']} s in all")
    for m in res["checkpoints"]:
        print(f"  at {m['flows']:>12,} flows: VmRSS {m['VmRSS'] / 1024:8.1f} MiB, "
              f"VmHWM {m['VmHWM'] / 1024:8.1f} MiB, {m['flows_active']:,} active, {m['seconds']} s")
    fin = res["final"]
    print(f"  end: VmRSS {fin['VmRSS'] / 1024:.1f} MiB, VmHWM {fin['VmHWM'] / 1024:.1f} MiB")
    print(f"  records by end reason: {res['records_by_end_reason']}")
    print(f"  counters: {res['counters']}")
    print(f"  established connections evicted (from records): {res['established_evicted_in_records']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
