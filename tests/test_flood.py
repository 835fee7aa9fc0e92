"""Flow floods (issue 7): a capped table under millions of one-packet flows, and the eviction policy.

Packets come from bench/flood.py (numpy records in PKT_DTYPE, built field by field, not by our parser);
every expected count is arithmetic over what was fed: flows fed minus the cap, connections that were
established, the order in which they were last touched.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from dpi import _flowtable
from dpi._reader import PKT_DTYPE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import flood  # noqa: E402

S = 1_000_000_000
RESOURCES, FORCED = 5, 4


def run_table(chunks, **cfg):
    t = _flowtable.FlowTable(**cfg)
    out = []
    for recs in chunks:
        pos = 0
        while pos < len(recs):
            pos = t.add(recs, pos)
            out.append(t.take())
    while t.flush():
        out.append(t.take())
    out.append(t.take())
    return np.concatenate(out), t


def client_ports(recs):
    """Client ports of the established connections among recs (their server port is 443)."""
    return sorted(int(p) for p in recs["src_port"][recs["dst_port"] == 443])


def shifted(a, dt):
    a = a.copy()
    a["ts_ns"] += np.uint64(dt)
    return a


def data_packets(conns, ts):
    n = len(conns)
    ts = np.full(n, ts, np.uint64) + np.arange(n, dtype=np.uint64)
    return flood.established_packets(np.asarray(conns), ts, np.full(n, flood.ACK | flood.PSH, np.uint16),
                                     np.zeros(n, bool))


def test_syn_flood_never_evicts_established_connections():
    n, k = 200, 100
    chunks = [a for a, _ in flood.stream(flows=100 * n, established=k, period=50, chunk=4096)]
    out, t = run_table(chunks, max_flows=n)
    c = t.counters()
    # every flood flow beyond the room the established connections leave is evicted, and only those
    assert c["flows_created"] == 100 * n + k
    assert c["flows_evicted"] == 100 * n + k - n
    assert c["flows_evicted_established"] == 0 and c["flows_promoted"] == k
    assert int((out["end_reason"] == RESOURCES).sum()) == 100 * n + k - n
    est = out[out["dst_port"] == 443]
    assert len(est) == k and set(est["end_reason"].tolist()) == {FORCED}
    # each connection: handshake (2 packets from the client, 1 from the server) + its data packets
    data = sum(len(a) for a in chunks) - 3 * k - 100 * n
    assert int(est["src_packets"].sum() + est["dst_packets"].sum()) == 3 * k + data


def test_syn_flood_answered_by_synack_stays_on_probation():
    # a flood against a listening port gets a SYN/ACK per SYN: packets both ways, yet no connection
    syn = flood.flood_chunk(0, 1000, 0)
    ack = syn.copy()
    ack["src_addr"], ack["dst_addr"] = syn["dst_addr"], syn["src_addr"]
    ack["sport"], ack["dport"] = syn["dport"], syn["sport"]
    ack["tcp_flags"] = flood.SYN | flood.ACK
    ack["ts_ns"] += np.uint64(1)
    both = np.empty(2000, PKT_DTYPE)
    both[0::2], both[1::2] = syn, ack
    out, t = run_table([both], max_flows=100)
    c = t.counters()
    assert c["flows_promoted"] == 0 and c["flows_evicted"] == 900
    assert int((out["end_reason"] == RESOURCES).sum()) == 900


def test_without_probation_flows_the_least_recently_seen_established_goes_first():
    n = 50
    chunks = [flood.handshakes(n, 0)]                       # 50 connections, all established, table full
    order = list(np.random.default_rng(3).permutation(n))
    # then traffic on each, one connection per second in a shuffled order (recency is kept to 10 s / 64)
    chunks += [data_packets([c], (1 + i) * S) for i, c in enumerate(order)]
    chunks.append(flood.flood_chunk(0, 3, 100 * S))           # three new flows, 1 us apart
    out, t = run_table(chunks, max_flows=n)
    ev = out[out["end_reason"] == RESOURCES]
    # the first new flow finds no flow on probation: the least recently seen connection goes; the next
    # two find one and two flows on probation, below the reserve max(1, 50 // 8) = 6, so the least recent
    # connections go again, in the order they were last seen
    expect = [40000 + int(c) for c in order[:3]]
    assert [int(p) for p in ev["src_port"]] == expect
    assert t.counters()["flows_evicted_established"] == 3


def test_idle_established_go_before_busy_ones_when_probation_is_short():
    n, k, idle = 80, 75, 5        # probation reserve max(1, 80 // 8) = 10 > n - k = 5
    chunks = [flood.handshakes(k, 0)]
    chunks.append(data_packets(range(idle, k), 1 * S))   # connections 0..4 stay silent after the handshake
    chunks.append(flood.flood_chunk(0, 100 * n, 2 * S))
    out, t = run_table(chunks, max_flows=n)
    c = t.counters()
    assert c["probation_reserve"] == 10
    # the flood finds 5 free slots, then takes the 5 idle connections, then probation holds the reserve
    assert c["flows_evicted_established"] == idle
    ev = out[out["end_reason"] == RESOURCES]
    assert client_ports(ev) == [40000 + i for i in range(idle)]
    assert c["flows_evicted"] == 100 * n + k - n


def test_flood_memory_stays_flat_and_evictions_are_counted():
    # a fresh interpreter, so the peak is this run's; figures for 10 M flows are in docs/limits.md
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "flood.py"), "--flows", "300000", "--max-flows",
                        "5000", "--established", "1000", "--batch-rows", "4096",
                        "--checkpoints", "100000,300000", "--json"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    c = res["counters"]
    assert c["flows_created"] == 301000 and c["flows_evicted"] == 301000 - 5000
    assert c["flows_evicted_established"] == 0 and res["established_evicted_in_records"] == 0
    assert res["records_by_end_reason"] == {"4": 5000, "5": 296000}
    at100k, at300k = res["checkpoints"]
    # 200,000 more flows through an unbounded table would take 200,000 x FLOW_STATE_BYTES (272 MiB)
    assert at300k["VmHWM"] - at100k["VmHWM"] < 24 * 1024
    assert at300k["VmRSS"] - at100k["VmRSS"] < 24 * 1024
    assert at100k["flows_active"] == at300k["flows_active"] == 5000


def test_timestamps_that_go_back_do_not_expire_new_flows():
    # Merged captures can jump back in time (nDPI's cassandra.pcap jumps back 1.45e9 s). A flow that starts
    # after the jump must not count as idle against the largest time seen: the recency lists are ordered by
    # table time, so connection 1 (three packets, started 1e9 s "earlier") stays one flow of 3 packets.
    late = flood.handshakes(1, 2_000_000 * S)
    early = flood.handshakes(2, 1_000_000 * S)[3:]          # connection 1 only
    both = np.zeros(len(late) + len(early), PKT_DTYPE)
    both[:len(late)] = late
    both[len(late):] = early
    recs, t = run_table([both], max_flows=100)
    assert len(recs) == 2
    assert sorted((recs["src_packets"] + recs["dst_packets"]).tolist()) == [3, 3]
    assert t.packets_ts_backwards == 3
