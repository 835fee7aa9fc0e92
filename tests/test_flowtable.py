"""Flow table on hand-built per-packet records: expected values by arithmetic over the records we feed.

These tests do not go through the parser, so they pin the flow table's own semantics: bidirectional key,
initiator, timeouts on packet time, TCP end of flow, port reuse, capacity eviction, bounded output.
"""
import ipaddress
import shutil
import subprocess

import numpy as np
import pytest

from dpi import _flowtable
from dpi._reader import PKT_DTYPE
from dpi.engine import Engine, EngineConfig

FT_F_L3, FT_F_L4, FT_F_FRAG, FT_F_TRUNC = 0x1, 0x2, 0x4, 0x10
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
S = 1_000_000_000


def pkt(ts, src, dst, sport=0, dport=0, proto=6, tcp_flags=0, l3_len=100, seq=0, flags=FT_F_L3 | FT_F_L4,
        vlan=0, tunnel_id=0, icmp=None):
    r = np.zeros(1, PKT_DTYPE)
    r["ts_ns"] = ts
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    r["ip_version"] = s.version
    r["src_addr"] = np.void(s.packed.ljust(16, b"\0"))
    r["dst_addr"] = np.void(d.packed.ljust(16, b"\0"))
    r["sport"], r["dport"], r["proto"] = sport, dport, proto
    r["tcp_flags"], r["tcp_seq"], r["l3_len"], r["flags"] = tcp_flags, seq, l3_len, flags
    r["vlan_id"], r["tunnel_id"] = vlan, tunnel_id
    if icmp:
        r["icmp_type"], r["icmp_code"] = icmp
        r["sport"], r["dport"] = icmp
    return r


def run(pkts, **cfg):
    t = _flowtable.FlowTable(**cfg)
    recs = np.concatenate(pkts, dtype=PKT_DTYPE) if pkts else np.zeros(0, PKT_DTYPE)
    pos, out = 0, []
    while pos < len(recs):
        pos = t.add(recs, pos)
        out.append(t.take())
    while t.flush():
        out.append(t.take())
    out.append(t.take())
    return np.concatenate(out), t


def ip(v):
    return str(ipaddress.ip_address(bytes(v)[:4]))


def test_bidirectional_counts_and_initiator():
    a, b = "10.0.0.9", "10.0.0.1"  # initiator has the HIGHER address: key order must not decide src
    pk = [pkt(1 * S, a, b, 40000, 80, tcp_flags=SYN, l3_len=60, seq=7),
          pkt(2 * S, b, a, 80, 40000, tcp_flags=SYN | ACK, l3_len=60),
          pkt(3 * S, a, b, 40000, 80, tcp_flags=ACK, l3_len=52),
          pkt(4 * S, a, b, 40000, 80, tcp_flags=PSH | ACK, l3_len=552),
          pkt(5 * S, b, a, 80, 40000, tcp_flags=ACK, l3_len=52)]
    out, t = run(pk)
    assert len(out) == 1
    r = out[0]
    assert ip(r["src_addr"]) == a and ip(r["dst_addr"]) == b
    assert (r["src_port"], r["dst_port"]) == (40000, 80)
    assert (r["src_packets"], r["dst_packets"]) == (3, 2)
    assert (r["src_bytes"], r["dst_bytes"]) == (60 + 52 + 552, 60 + 52)
    assert (r["start_ns"], r["end_ns"]) == (1 * S, 5 * S)
    assert r["src_tcp_flags"] == SYN | ACK | PSH and r["dst_tcp_flags"] == SYN | ACK
    assert r["end_reason"] == 4  # forced end: input ended with the connection open
    assert t.counters()["packets_metered"] == 5


def test_synack_seen_first_makes_its_receiver_src():
    pk = [pkt(1 * S, "10.0.0.1", "10.0.0.2", 80, 5555, tcp_flags=SYN | ACK),
          pkt(2 * S, "10.0.0.2", "10.0.0.1", 5555, 80, tcp_flags=ACK)]
    out, _ = run(pk)
    assert ip(out[0]["src_addr"]) == "10.0.0.2" and out[0]["src_port"] == 5555
    assert (out[0]["src_packets"], out[0]["dst_packets"]) == (1, 1)


def test_idle_timeout_splits_flows_on_packet_time():
    pk = [pkt(0, "1.1.1.1", "2.2.2.2", 1000, 53, proto=17),
          pkt(10 * S, "1.1.1.1", "2.2.2.2", 1000, 53, proto=17),       # 10 s gap: same flow
          pkt(10 * S + 31 * S, "1.1.1.1", "2.2.2.2", 1000, 53, proto=17)]  # 31 s gap > 30 s: new flow
    out, t = run(pk, idle_timeout_ns=30 * S)
    assert [int(r["src_packets"]) for r in out] == [2, 1]
    assert [int(r["end_reason"]) for r in out] == [1, 4]
    assert out[0]["flow_id"] != out[1]["flow_id"]


def test_active_timeout_yields_delta_records_with_same_flow_id():
    pk = [pkt(i * S, "1.1.1.1", "2.2.2.2", 1000, 2000, proto=17, l3_len=10 + i) for i in range(25)]
    out, _ = run(pk, active_timeout_ns=10 * S)
    # periods start at the first packet: [0,10) [10,20) [20,24]
    assert [int(r["src_packets"]) for r in out] == [10, 10, 5]
    assert [int(r["src_bytes"]) for r in out] == [sum(10 + i for i in range(a, b))
                                                  for a, b in ((0, 10), (10, 20), (20, 25))]
    assert len({int(r["flow_id"]) for r in out}) == 1
    assert [int(r["rec_seq"]) for r in out] == [0, 1, 2]
    assert [int(r["end_reason"]) for r in out] == [2, 2, 4]
    assert [int(r["start_ns"]) for r in out] == [0, 10 * S, 20 * S]


def test_fin_both_ways_is_end_of_flow_and_rst_too():
    a, b = "10.1.0.1", "10.1.0.2"
    pk = [pkt(0, a, b, 1, 2, tcp_flags=SYN, seq=100), pkt(1, b, a, 2, 1, tcp_flags=SYN | ACK),
          pkt(2, a, b, 1, 2, tcp_flags=FIN | ACK), pkt(3, b, a, 2, 1, tcp_flags=FIN | ACK),
          pkt(4, a, b, 1, 2, tcp_flags=ACK),
          pkt(5, a, b, 3, 4, tcp_flags=SYN), pkt(6, b, a, 4, 3, tcp_flags=RST | ACK)]
    out, _ = run(pk)
    assert [int(r["end_reason"]) for r in out] == [3, 3]
    assert [int(r["src_packets"] + r["dst_packets"]) for r in out] == [5, 2]


def test_closed_flow_expires_after_closed_timeout():
    a, b = "10.1.0.1", "10.1.0.2"
    pk = [pkt(0, a, b, 1, 2, tcp_flags=SYN), pkt(1, b, a, 2, 1, tcp_flags=RST | ACK),
          pkt(3 * S, "9.9.9.9", "8.8.8.8", 5, 6, proto=17)]
    out, _ = run(pk, closed_timeout_ns=2 * S, idle_timeout_ns=100 * S)
    assert int(out[0]["end_reason"]) == 3 and int(out[0]["src_port"]) == 1  # left before the UDP flow
    assert int(out[1]["end_reason"]) == 4


def test_port_reuse_after_close_starts_new_flow():
    a, b = "10.1.0.1", "10.1.0.2"
    pk = [pkt(0, a, b, 1, 2, tcp_flags=SYN, seq=1), pkt(1, b, a, 2, 1, tcp_flags=RST | ACK),
          pkt(2, a, b, 1, 2, tcp_flags=SYN, seq=1000), pkt(3, b, a, 2, 1, tcp_flags=SYN | ACK)]
    out, t = run(pk)
    assert len(out) == 2 and out[0]["flow_id"] != out[1]["flow_id"]
    assert [int(r["src_packets"] + r["dst_packets"]) for r in out] == [2, 2]
    assert t.counters()["tcp_port_reuse_splits"] == 1


def test_capacity_evicts_least_recently_seen_and_counts():
    # recency is tracked to 1/64 of the shortest timeout (here 10 s / 64): packets 1 s apart are ordered
    pk = [pkt(i * S, "10.0.0.1", "10.0.0.2", 1000 + i, 80, proto=17) for i in range(5)]
    pk.append(pkt(10 * S, "10.0.0.1", "10.0.0.2", 1000, 80, proto=17))  # refresh flow 0
    pk += [pkt((20 + i) * S, "10.0.0.1", "10.0.0.2", 2000 + i, 80, proto=17) for i in range(2)]
    out, t = run(pk, max_flows=5)
    evicted = [int(r["src_port"]) for r in out if r["end_reason"] == 5]
    assert evicted == [1001, 1002]  # flow 1000 was refreshed, so 1001 and 1002 were the least recent
    c = t.counters()
    assert c["flows_evicted"] == 2 and c["records_by_end_reason"]["lack of resources"] == 2
    assert sum(int(r["src_packets"]) for r in out) == len(pk)


def test_bounded_output_drains_in_batches():
    pk = [pkt(i, "10.0.0.1", "10.0.0.2", 1000 + i, 80, proto=17) for i in range(1000)]
    recs = np.concatenate(pk, dtype=PKT_DTYPE)
    t = _flowtable.FlowTable(idle_timeout_ns=1, batch_rows=64)  # every flow idles out at the next packet
    pos, sizes = 0, []
    while pos < len(recs):
        pos = t.add(recs, pos)
        sizes.append(len(t.take()))
    while t.flush():
        sizes.append(len(t.take()))
    sizes.append(len(t.take()))
    assert max(sizes) <= 64 and sum(sizes) == 1000


def test_unmetered_packets_are_counted_not_flowed():
    pk = [pkt(0, "10.0.0.1", "10.0.0.2", 1, 2, flags=0),                 # no L3 (e.g. ARP)
          pkt(1, "10.0.0.1", "10.0.0.2", 1, 2, flags=FT_F_L3),           # TCP without ports (cut header)
          pkt(2, "10.0.0.1", "10.0.0.2", 0, 0, proto=17, flags=FT_F_L3 | FT_F_FRAG),  # non-first fragment
          pkt(3, "10.0.0.1", "10.0.0.2", 0, 0, proto=47, flags=FT_F_L3)]  # GRE: no ports by nature
    out, t = run(pk)
    c = t.counters()
    assert c["packets_seen"] == 4 and c["packets_metered"] == 2 and c["packets_not_metered"] == 2
    assert sorted(int(r["proto"]) for r in out) == [17, 47]
    assert int(out[out["proto"] == 17][0]["fragment_packets"]) == 1


def test_vlan_and_tunnel_id_separate_flows():
    pk = [pkt(0, "10.0.0.1", "10.0.0.2", 1, 2, proto=17, vlan=10),
          pkt(1, "10.0.0.1", "10.0.0.2", 1, 2, proto=17, vlan=20),
          pkt(2, "10.0.0.1", "10.0.0.2", 1, 2, proto=17, tunnel_id=5000)]
    out, _ = run(pk)
    assert len(out) == 3


def test_ipv6_and_ipv4_never_share_a_flow():
    v4 = pkt(0, "10.0.0.1", "10.0.0.2", 1, 2, proto=17)
    v6 = pkt(1, "::a00:1", "::a00:2", 1, 2, proto=17)
    v6["src_addr"] = v4["src_addr"]  # same 16 address bytes, other family
    v6["dst_addr"] = v4["dst_addr"]
    out, _ = run([v4, v6])
    assert sorted(int(r["ip_version"]) for r in out) == [4, 6]


def test_replay_is_deterministic():
    rng = np.random.default_rng(7)
    pk = [pkt(int(i * S / 10), f"10.0.{rng.integers(4)}.1", "10.9.0.1", int(rng.integers(1000, 1010)), 80,
              proto=17, l3_len=int(rng.integers(40, 1500))) for i in range(500)]
    a, _ = run(pk, idle_timeout_ns=3 * S, max_flows=8)
    b, _ = run(pk, idle_timeout_ns=3 * S, max_flows=8)
    assert a.tobytes() == b.tobytes()


def test_flow_state_size_is_documented():
    # docs/architecture.md quotes this figure; keep them in step
    import pathlib
    doc = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    assert f"{_flowtable.FLOW_STATE_BYTES} bytes per flow" in doc


def _cid_records(cases):
    recs = np.zeros(len(cases), _flowtable.FLOWREC_DTYPE)
    for i, (src, dst, proto, sport, dport) in enumerate(cases):
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        recs[i]["ip_version"] = s.version
        recs[i]["src_addr"] = np.void(s.packed.ljust(16, b"\0"))
        recs[i]["dst_addr"] = np.void(d.packed.ljust(16, b"\0"))
        recs[i]["proto"] = proto
        if proto in (1, 58):
            recs[i]["has_icmp"] = 1
            recs[i]["icmp_type"], recs[i]["icmp_code"] = sport, dport
        else:
            recs[i]["src_port"], recs[i]["dst_port"] = sport, dport
    return recs


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_community_id_matches_tshark(tmp_path):
    scapy = pytest.importorskip("scapy.all")
    cases = [("128.232.110.120", "66.35.250.204", 6, 34855, 80),
             ("66.35.250.204", "128.232.110.120", 6, 80, 34855),
             ("10.0.0.2", "10.0.0.1", 17, 53, 53),
             ("10.0.0.2", "10.0.0.1", 1, 3, 1),      # dest unreachable: one-way
             ("10.0.0.2", "10.0.0.1", 1, 0, 0),      # echo reply
             ("10.0.0.1", "10.0.0.2", 1, 8, 0),      # echo request
             ("fe80::1", "fe80::2", 58, 128, 0),
             ("2001:db8::2", "2001:db8::1", 6, 443, 50000),
             ("10.0.0.1", "10.0.0.2", 47, 0, 0)]
    pk = []
    for src, dst, proto, sp, dp in cases:
        ipl = scapy.IPv6(src=src, dst=dst) if ":" in src else scapy.IP(src=src, dst=dst)
        if proto == 6:
            l4 = scapy.TCP(sport=sp, dport=dp)
        elif proto == 17:
            l4 = scapy.UDP(sport=sp, dport=dp)
        elif proto == 1:
            l4 = scapy.ICMP(type=sp, code=dp)
        elif proto == 58:
            l4 = scapy.ICMPv6EchoRequest()
        else:
            l4 = scapy.GRE()
        pk.append(scapy.Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ipl / l4)
    f = tmp_path / "cid.pcap"
    scapy.wrpcap(str(f), pk)
    want = subprocess.run(["tshark", "--enable-protocol", "communityid", "-r", str(f), "-T", "fields",
                           "-e", "communityid"], capture_output=True, text=True, check=True).stdout.split()
    _, _, (off, data) = _flowtable.text_columns(_cid_records(cases))
    got = [bytes(data[off[i]:off[i + 1]]).decode() for i in range(len(cases))]
    assert got == want


def test_engine_batches_are_valid_arrow():
    pk = [pkt(i * S, "10.0.0.1", "10.0.0.2", 1000 + i, 80, proto=17) for i in range(10)]
    eng = Engine(EngineConfig(batch_rows=4, observer_host="obs1"))
    batches = list(eng.add(np.concatenate(pk, dtype=PKT_DTYPE))) + list(eng.flush())
    assert sum(b.num_rows for b in batches) == 10
    for b in batches:
        b.validate(full=True)
        assert b.schema.equals(eng.schema)
    assert batches[0].column("observer_host")[0].as_py() == "obs1"
    assert batches[0].column("src_ip")[0].as_py() == "10.0.0.1"
    assert batches[0].column("tcp_flags").null_count == batches[0].num_rows  # UDP: not measured


def test_address_text_matches_python_ipaddress():
    rng = np.random.default_rng(3)
    addrs = [ipaddress.IPv4Address(int(x)) for x in rng.integers(0, 2**32, 300)]
    addrs += [ipaddress.IPv4Address(a) for a in ("0.0.0.0", "255.255.255.255", "10.0.100.9")]
    addrs += [ipaddress.IPv6Address(bytes(rng.integers(0, 256, 16, dtype=np.uint8))) for _ in range(100)]
    addrs += [ipaddress.IPv6Address(a) for a in ("::", "::1", "fe80::1:0:0:1", "2001:db8::ffff:1.2.3.4")]
    recs = _cid_records([(str(a), str(a), 17, 1, 2) for a in addrs])
    (off, data), _, _ = _flowtable.text_columns(recs)
    got = [bytes(data[off[i]:off[i + 1]]).decode() for i in range(len(addrs))]
    assert got == [str(a) for a in addrs]
