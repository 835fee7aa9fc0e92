"""RoCE meter (ext/ft_roce.h, docs/roce.md) on scapy-built RoCEv2 traffic with known ground truth.

The expected values come from how each capture was built (tests/roce_pcap.py: which PSN was dropped before
the probe, which request asked for an ACK and when the ACK came) and from the histogram definition written
out in integer arithmetic, never from flowtap itself. Captures go through the whole replay path (reader,
parser, flow table, batch builder, Arrow file).
"""
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from dpi import _flowtable
from dpi.capture import CaptureReader
from dpi.engine import Engine, EngineConfig
from dpi.replay import replay

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roce_pcap as rp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIME_COLUMNS = ("flow_start", "flow_end")


def _table(path, tmp_path, **cfg):
    out = tmp_path / (Path(path).stem + ".arrow")
    res = replay([str(path)], str(out), EngineConfig(observer_host="t", **cfg))
    assert not res.errors
    t = pa.ipc.open_file(out).read_all()
    return t.select([c for c in t.column_names if c not in TIME_COLUMNS]), res


def _find(rows, exp):
    keys = [k for k in ("src_ip", "dst_ip", "protocol", "roce_transport") if k in exp]
    got = [r for r in rows if all(r[k] == exp[k] for k in keys)]
    assert len(got) == 1, (keys, [exp[k] for k in keys], len(got))
    return got[0]


def _check(rows, expected):
    for exp in expected:
        r = _find(rows, exp)
        for k, v in exp.items():
            if isinstance(v, float):
                assert r[k] == pytest.approx(v, rel=1e-12), k
            else:
                assert r[k] == v, (k, r[k], v)


@pytest.mark.parametrize("name", list(rp.SCENARIOS))
def test_scenario(name, tmp_path):
    cap, expected = rp.SCENARIOS[name]()
    path = tmp_path / f"{name}.pcap"
    cap.write(path)
    t, _ = _table(path, tmp_path)
    rows = t.to_pylist()
    assert len(rows) == len(expected)
    _check(rows, expected)


def test_all_scenarios_interleaved(tmp_path):
    """Every scenario in one capture, packets interleaved by time: no state leaks between connections."""
    cap, expected = rp.Capture(), []
    for fn in rp.SCENARIOS.values():
        c, e = fn()
        cap.extend(c)
        expected += e
    path = tmp_path / "all.pcap"
    cap.write(path)
    t, res = _table(path, tmp_path)
    rows = t.to_pylist()
    assert len(rows) == len(expected)
    _check(rows, expected)
    roce = res.counters["roce"]
    # two-way RC connections built: 12 paired from PSNs (rnr_and_error_naks has two), cm_connection by CM
    assert roce["pairs_proven_by_cm"] == 1
    assert roce["pairs_inferred_from_psn"] == 12 == sum(1 for r in rows if r["roce_pairing"] == "psn")
    assert roce["alias_table_full"] == 0 and roce["pairing_ambiguous"] == 0


def test_ack_latency_percentiles_and_histogram(tmp_path):
    """200 AckReq'd WRITEs acknowledged after delays spread over 100 ns .. 60 us: count, min, mean, max,
    p50, p99 and every histogram bucket as the bucket definition gives them."""
    rng = random.Random(5)
    cap = rp.Capture()
    c = rp.Conn(cap, rp.Endpoint(rp._host("10.20.0.1", 40), 0x21, 0xC021),
                rp.Endpoint(rp._host("10.20.0.2", 41), 0x22, 0xC022))
    delays = [rng.randrange(100, 60_000) for _ in range(200)]
    t = 0
    for i, d in enumerate(delays):
        c.send(t, "a", rp.WRITE_ONLY, i, ext=rp.reth(8), data=rp.payload(8), ackreq=1)
        c.send(t + d, "b", rp.ACK, i, ext=rp.aeth(rp.SYN_ACK, i))
        t += d + 1000
    path = tmp_path / "spread.pcap"
    cap.write(path)
    t, _ = _table(path, tmp_path)
    rows = t.to_pylist()
    assert len(rows) == 1
    exp = rp.latency_expect("roce_src_ack_latency", delays)
    for k, v in exp.items():
        assert rows[0][k] == v, k
    # the layout the metadata promises: 8 buckets per octave, base 1 ns
    meta = t.schema.field("roce_src_ack_latency_hist").metadata
    assert meta[b"buckets_per_octave"] == b"8" and meta[b"bucket_base_ns"] == b"1"


def test_cm_proves_pairing_only_with_frame_bytes(tmp_path):
    """Without the frame bytes the engine cannot read the CM MADs: the same connection is then paired from
    PSNs, and src is the side whose request came first (the passive side here), not the CM active side."""
    cap, expected = rp.cm_connection()
    frames = sorted(cap.frames, key=lambda f: f[0])
    path = tmp_path / "cm.pcap"
    cap.write(path)
    for with_data in (True, False):
        eng = Engine(EngineConfig(observer_host="t"))
        batches = []
        with CaptureReader(str(path)) as reader:
            for pkts, data in reader:
                batches += list(eng.add(pkts, data if with_data else None))
        batches += list(eng.flush())
        tab = pa.Table.from_batches(batches)
        rows = tab.select([c for c in tab.column_names if c not in TIME_COLUMNS]).to_pylist()
        data_rows = [r for r in rows if r["roce_transport"] == "RC"]
        assert len(data_rows) == 1 and len(frames) == 7
        r = data_rows[0]
        if with_data:
            assert (r["roce_pairing"], r["src_ip"]) == ("cm", rp.CM_CASE["active"])
        else:
            assert (r["roce_pairing"], r["src_ip"]) == ("psn", rp.CM_CASE["passive"])
            assert (r["roce_src_qpn"], r["roce_dst_qpn"]) == (rp.CM_CASE["passive_qpn"], rp.CM_CASE["active_qpn"])


def test_cm_ends_flows_of_an_earlier_connection_on_the_same_qpns(tmp_path):
    """QPNs are reused: a REP for QPs that still have a flow ends that flow first (end of flow detected)."""
    old, _ = rp.cm_connection()
    new, _ = rp.cm_connection()
    shift = 10 ** 9
    cap = rp.Capture()
    cap.extend(old)
    cap.frames += [(ts + shift, b) for ts, b in new.frames]
    path = tmp_path / "reuse.pcap"
    cap.write(path)
    t, res = _table(path, tmp_path)
    rc = [r for r in t.to_pylist() if r["roce_transport"] == "RC"]
    assert len(rc) == 2 and sorted(r["flow_end_reason"] for r in rc) == [3, 4]
    assert all(r["roce_pairing"] == "cm" and r["src_packets"] == 2 and r["dst_packets"] == 2 for r in rc)
    assert res.counters["roce"]["qpn_reuse_splits"] == 1
    assert res.counters["roce"]["pairs_proven_by_cm"] == 2


def test_active_timeout_keeps_psn_state(tmp_path):
    """Two records of one connection (active timeout 1 s): the second starts with the PSN state of the first,
    so no false gap, and its counters restart."""
    cap = rp.Capture()
    c = rp.Conn(cap, rp.Endpoint(rp._host("10.21.0.1", 42), 0x31, 0xC031),
                rp.Endpoint(rp._host("10.21.0.2", 43), 0x32, 0xC032))
    for i in range(4):
        ts = i * 600_000_000
        c.send(ts, "a", rp.WRITE_ONLY, 70 + i, ext=rp.reth(8), data=rp.payload(8), ackreq=1)
        c.send(ts + 2000, "b", rp.ACK, 70 + i, ext=rp.aeth(rp.SYN_ACK, i))
    path = tmp_path / "active.pcap"
    cap.write(path)
    t, _ = _table(path, tmp_path, active_timeout_s=1.0)
    rows = sorted(t.to_pylist(), key=lambda r: r["record_seq"])
    assert [r["record_seq"] for r in rows] == [0, 1]
    assert [r["roce_src_write_messages"] for r in rows] == [2, 2]
    assert [r["roce_src_psn_gaps"] for r in rows] == [0, 0]
    assert [r["roce_src_ack_latency_samples"] for r in rows] == [2, 2]
    assert all(r["roce_pairing"] == "psn" for r in rows)


def test_meter_size_is_documented():
    doc = (ROOT / "docs" / "roce.md").read_text()
    assert f"{_flowtable.ROCE_METER_BYTES} bytes" in doc
    assert _flowtable.ROCE_METER_BYTES == 1952


def _dpkt_counts(path):
    """READ requests and response packets per RoCE connection, counted with dpkt (independent of flowtap):
    {(requester ip, responder ip, responder qpn): [read requests, ...]}"""
    dpkt = pytest.importorskip("dpkt")
    import socket
    reads = {}
    with open(path, "rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) or not isinstance(ip.data, dpkt.udp.UDP):
                continue
            bth = bytes(ip.data.data)
            if ip.data.dport != 4791 or len(bth) < 12:
                continue
            fam = socket.AF_INET6 if isinstance(ip, dpkt.ip6.IP6) else socket.AF_INET
            if bth[0] == 0x0C:
                key = (socket.inet_ntop(fam, ip.src), socket.inet_ntop(fam, ip.dst),
                       int.from_bytes(bth[5:8], "big"))
                reads[key] = reads.get(key, 0) + 1
    return reads


def test_benchmark_generator_capture_is_healthy(tmp_path):
    """bench/make_roce.py traffic (16 RC QPs, WRITEs, multi-packet READs, coalesced ACKs, CNPs, a PSN wrap,
    IPv6, VLANs on one direction) loses nothing: every QP pairs, no gap, no duplicate, no reordering, and
    one READ latency sample per READ request (counted with dpkt)."""
    path = tmp_path / "gen.pcap"
    subprocess.run([sys.executable, str(ROOT / "bench" / "make_roce.py"), str(path), "--packets", "30000",
                    "--seed", "3"], check=True, capture_output=True)
    t, res = _table(path, tmp_path)
    rows = t.to_pylist()
    assert len(rows) == 16
    reads = _dpkt_counts(path)
    for r in rows:
        assert r["roce_pairing"] == "psn" and r["roce_transport"] == "RC" and r["roce_path_mtu"] == 4096
        for x in ("src", "dst"):
            for k in ("psn_gaps", "psn_missing", "psn_duplicates", "psn_out_of_order"):
                assert r[f"roce_{x}_{k}"] == 0, (x, k)
        n_reads = reads.get((r["src_ip"], r["dst_ip"], r["roce_dst_qpn"]), 0)
        assert r["roce_src_read_messages"] == n_reads
        assert r["roce_src_read_latency_samples"] == n_reads
    assert res.counters["roce"]["pairs_inferred_from_psn"] == 16


def test_key_ignores_udp_source_port(tmp_path):
    """The NIC may change the UDP source port of a QP (e.g. on path migration): still one flow."""
    cap = rp.Capture()
    a, b = rp._host("10.22.0.1", 44), rp._host("10.22.0.2", 45)
    for i, sport in enumerate([0xC001, 0xD002, 0xE003]):
        cap.add(rp.T0 + i, rp.roce_frame(a, b, sport, rp.SEND_ONLY, 0x77, i, rp.payload(16)))
    path = tmp_path / "sport.pcap"
    cap.write(path)
    t, _ = _table(path, tmp_path)
    rows = t.to_pylist()
    assert len(rows) == 1 and rows[0]["src_packets"] == 3 and rows[0]["src_port"] == 0xC001
    assert rows[0]["roce_src_psn_gaps"] == 0 and rows[0]["roce_dst_qpn"] == 0x77


def test_pairing_again_after_an_idle_timeout(tmp_path):
    """A connection idle longer than the idle timeout leaves a record; when it resumes, the first packet is
    addressed to the QP that was the alias (the responder now writes): the directions pair again from PSNs,
    src being the side whose request came first."""
    cap = rp.Capture()
    a, b = rp.Endpoint(rp._host("10.23.0.1", 46), 0x51, 0xC051), rp.Endpoint(rp._host("10.23.0.2", 47), 0x52, 0xC052)
    c = rp.Conn(cap, a, b)
    c.send(0, "a", rp.WRITE_ONLY, 10, ext=rp.reth(8), data=rp.payload(8), ackreq=1)
    c.send(900, "b", rp.ACK, 10, ext=rp.aeth(rp.SYN_ACK, 1))
    later = 200 * 10 ** 9
    c.send(later, "b", rp.WRITE_ONLY, 500, ext=rp.reth(8), data=rp.payload(8), ackreq=1)
    c.send(later + 700, "a", rp.ACK, 500, ext=rp.aeth(rp.SYN_ACK, 1))
    c.send(later + 1000, "a", rp.WRITE_ONLY, 11, ext=rp.reth(8), data=rp.payload(8), ackreq=1)
    c.send(later + 1600, "b", rp.ACK, 11, ext=rp.aeth(rp.SYN_ACK, 2))
    path = tmp_path / "idle.pcap"
    cap.write(path)
    t, res = _table(path, tmp_path, idle_timeout_s=120)
    rows = sorted(t.to_pylist(), key=lambda r: r["flow_id"])
    assert len(rows) == 2
    first, second = rows
    assert (first["src_ip"], first["flow_end_reason"], first["src_packets"], first["dst_packets"]) == \
        ("10.23.0.1", 1, 1, 1)
    assert (second["src_ip"], second["roce_pairing"], second["src_packets"], second["dst_packets"]) == \
        ("10.23.0.2", "psn", 2, 2)
    assert (second["roce_src_qpn"], second["roce_dst_qpn"]) == (0x52, 0x51)
    assert second["roce_src_ack_latency_samples"] == 1 and second["roce_dst_ack_latency_samples"] == 1
    assert res.counters["roce"]["pairs_inferred_from_psn"] == 2


def test_random_roce_records_conserve_packets():
    """Random RoCE records (any opcode, PSN, syndrome, length, ECN; few hosts and QPs so that pairings,
    merges, aliases and expiries collide): nothing crashes, every metered packet is in exactly one record,
    and the tables report no inconsistency. Records are built directly (no parser)."""
    import ipaddress
    import numpy as np
    from dpi._reader import PKT_DTYPE
    rng = np.random.default_rng(7)
    n = 60_000
    r = np.zeros(n, PKT_DTYPE)
    hosts = [ipaddress.ip_address(f"10.30.0.{i}").packed.ljust(16, b"\0") for i in (1, 2, 3)]
    src = rng.integers(0, 3, n)
    dst = np.where(rng.random(n) < 0.1, src, rng.integers(0, 3, n))   # some on one address
    r["ts_ns"] = 10 ** 18 + np.cumsum(rng.integers(1, 4_000_000_000 // n * 400, n))
    r["flags"] = 0x1 | 0x2 | 0x20
    r["ip_version"], r["proto"], r["dport"] = 4, 17, 4791
    r["src_addr"] = np.array([np.void(hosts[i]) for i in src])
    r["dst_addr"] = np.array([np.void(hosts[i]) for i in dst])
    r["sport"] = rng.integers(49152, 65535, n)
    r["l3_len"] = 100
    r["vlan_id"] = np.where(rng.random(n) < 0.05, 7, 0)
    ops = np.array([0x00, 0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0A, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x12,
                    0x13, 0x14, 0x1C, 0x26, 0x2A, 0x64, 0x81, 0x4A, 0xA4, 0xFF])
    r["roce_opcode"] = ops[rng.integers(0, len(ops), n)]
    r["roce_dqpn"] = rng.choice([1, 0x10, 0x11, 0x12, 0x20, 0x21, 0xFFFFFF], n)
    base = rng.integers(0, 1 << 24, 8)
    r["roce_psn"] = (base[rng.integers(0, 8, n)] + rng.integers(0, 40, n)) % (1 << 24)
    r["roce_bth_flags"] = rng.integers(0, 32, n)
    r["roce_ext"] = np.where(np.isin(r["roce_opcode"], [0x06, 0x0A, 0x0C]), 0x01, 0) | \
        np.where(np.isin(r["roce_opcode"], [0x0D, 0x0F, 0x10, 0x11, 0x12]), 0x02, 0)
    r["roce_aeth_syndrome"] = rng.choice([0x1F, 0x00, 0x2E, 0x60, 0x61, 0x62, 0x63, 0x64, 0x40, 0xFF], n)
    r["roce_reth_len"] = rng.choice([0, 1, 256, 4096, 4097, 1 << 20, 1 << 31], n)
    r["roce_payload_len"] = rng.choice([0, 16, 256, 1024, 4096], n)
    r["tos"] = rng.integers(0, 256, n)
    t = _flowtable.FlowTable(max_flows=64, idle_timeout_ns=2_000_000_000, active_timeout_ns=3_000_000_000,
                             batch_rows=97)
    out, roce, pos = [], [], 0

    def take():
        out.append(t.take())
        roce.append(t.taken_roce)
    while pos < n:
        pos = t.add(r, pos)
        take()
    while t.flush():
        take()
    take()
    recs = np.concatenate(out)
    roce_recs = np.concatenate(roce)
    c = t.counters()
    assert c["packets_metered"] == n
    assert int(recs["src_packets"].sum() + recs["dst_packets"].sum()) == n
    assert len(roce_recs) == len(recs) and (recs["roce_row"] >= 0).all()
    assert (roce_recs["roce_is_roce"] == 1).all()
    assert c["roce"]["pairs_inferred_from_psn"] > 0 and c["flows_evicted"] > 0


@pytest.mark.parametrize("names", [("tcp_beside",), ("tcp_beside", "write_v4", "one_direction")])
def test_parquet_output(names, tmp_path):
    """Parquet refuses nulls in non-nullable struct children: histogram columns without any sample (a batch
    with no RoCE flow) and with some must both write and read back."""
    import pyarrow.parquet as pq
    cap, expected = rp.Capture(), []
    for name in names:
        c, e = rp.SCENARIOS[name]()
        cap.extend(c)
        expected += e
    path = tmp_path / "mix.pcap"
    cap.write(path)
    out = tmp_path / "mix.parquet"
    res = replay([str(path)], str(out), EngineConfig(observer_host="t"))
    assert not res.errors
    t = pq.read_table(out)
    rows = t.select([c for c in t.column_names if c not in TIME_COLUMNS]).to_pylist()
    assert len(rows) == len(expected)
    _check(rows, expected)
