"""End to end: scapy-built captures -> `flowtap replay` -> files read back by pyarrow, polars and DuckDB.

Expected values come from the packets as built (arithmetic over their IP lengths), not from flowtap.
"""
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

scapy = pytest.importorskip("scapy.all")
from scapy.all import ICMP, IP, TCP, UDP, Ether, IPv6, Raw, wrpcap  # noqa: E402

from dpi import schema  # noqa: E402

FLOWTAP = [sys.executable, "-m", "probe.cli"]
T0 = 1_700_000_000.0
MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def conversation():
    """A TCP connection (handshake, data both ways, FIN close), a UDP exchange over IPv6, an ICMP ping.
    Returns (packets, expected) where expected maps (src, sport, dst, dport, proto) -> per-direction
    packets and IP bytes."""
    c, s = "192.0.2.10", "198.51.100.20"
    pk = [
        IP(src=c, dst=s) / TCP(sport=40001, dport=80, flags="S", seq=1000),
        IP(src=s, dst=c) / TCP(sport=80, dport=40001, flags="SA", seq=5000, ack=1001),
        IP(src=c, dst=s) / TCP(sport=40001, dport=80, flags="A", seq=1001, ack=5001),
        IP(src=c, dst=s) / TCP(sport=40001, dport=80, flags="PA", seq=1001, ack=5001) / Raw(b"G" * 300),
        IP(src=s, dst=c) / TCP(sport=80, dport=40001, flags="PA", seq=5001, ack=1301) / Raw(b"H" * 1200),
        IP(src=c, dst=s) / TCP(sport=40001, dport=80, flags="FA", seq=1301, ack=6201),
        IP(src=s, dst=c) / TCP(sport=80, dport=40001, flags="FA", seq=6201, ack=1302),
        IP(src=c, dst=s) / TCP(sport=40001, dport=80, flags="A", seq=1302, ack=6202),
        IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5353, dport=53) / Raw(b"q" * 40),
        IPv6(src="2001:db8::2", dst="2001:db8::1") / UDP(sport=53, dport=5353) / Raw(b"r" * 90),
        IP(src=c, dst="203.0.113.5") / ICMP(type=8, id=7, seq=1) / Raw(b"p" * 56),
        IP(src="203.0.113.5", dst=c) / ICMP(type=0, id=7, seq=1) / Raw(b"p" * 56),
    ]
    frames = []
    for i, p in enumerate(pk):
        f = Ether(**MAC) / p
        f.time = T0 + i * 0.001
        frames.append(f)
    exp = {}
    for p in pk:
        l3 = p if p.haslayer(IP) else p[IPv6]
        n = len(l3)
        if p.haslayer(TCP):
            key = ((c, 40001, s, 80, 6), p[IP].src == c)
        elif p.haslayer(UDP):
            key = (("2001:db8::1", 5353, "2001:db8::2", 53, 17), p[IPv6].src == "2001:db8::1")
        else:
            key = ((c, 0, "203.0.113.5", 0, 1), p[IP].src == c)
        d = exp.setdefault(key[0], [0, 0, 0, 0])
        if key[1]:
            d[0] += 1
            d[2] += n
        else:
            d[1] += 1
            d[3] += n
    return frames, exp


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    d = tmp_path_factory.mktemp("cap")
    frames, exp = conversation()
    p = d / "conv.pcap"
    wrpcap(str(p), frames)
    return p, exp


def run(*args, check=True):
    r = subprocess.run(FLOWTAP + [str(a) for a in args], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    if check and r.returncode != 0:
        raise AssertionError(f"exit {r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}")
    return r


def flows_of(table):
    out = {}
    for r in table.to_pylist():
        key = (r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["protocol"])
        out[key] = [r["src_packets"], r["dst_packets"], r["src_bytes"], r["dst_bytes"]]
    return out


def read_any(path):
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] == b"PAR1":
        return pq.read_table(path)
    if head == b"ARROW1":
        return pa.ipc.open_file(path).read_all()
    return pa.ipc.open_stream(path).read_all()


@pytest.mark.parametrize("ext", ["parquet", "arrow", "arrows"])
def test_replay_counts_match_the_built_packets(capture, tmp_path, ext):
    pcap, exp = capture
    out = tmp_path / f"flows.{ext}"
    r = run("replay", pcap, "-o", out)
    assert "12 packets" in r.stdout and "3 flows" in r.stdout
    t = read_any(out)
    assert flows_of(t) == exp
    assert t.schema.equals(schema.flow_schema(), check_metadata=False)
    row = {r["protocol"]: r for r in t.to_pylist()}
    assert row[6]["flow_end_reason"] == 3                   # FIN both ways
    assert row[6]["src_tcp_flags"] == 0x02 | 0x10 | 0x08 | 0x01
    assert row[17]["tcp_flags"] is None and row[17]["ip_version"] == 6
    assert (row[1]["icmp_type"], row[1]["icmp_code"]) == (8, 0)
    assert row[6]["flow_start"].timestamp() == pytest.approx(T0)
    assert row[6]["duration_ns"] == 7_000_000
    assert not list(tmp_path.glob(".*partial*"))  # the temporary file was renamed


def test_output_opens_in_polars_and_duckdb_with_documented_types(capture, tmp_path):
    polars = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    pcap, exp = capture
    out = tmp_path / "flows.parquet"
    run("replay", pcap, "-o", out)
    df = polars.read_parquet(out)
    assert df.height == 3
    assert df.schema["flow_start"] == polars.Datetime("ns", "UTC")
    assert df.schema["src_bytes"] == polars.UInt64 and df.schema["src_ip"] == polars.String
    con = duckdb.connect()
    total = con.execute(f"select sum(src_bytes + dst_bytes) from '{out}'").fetchall()[0][0]
    assert total == sum(v[2] + v[3] for v in exp.values())
    types = {r[0]: r[1] for r in con.execute(f"describe select * from '{out}'").fetchall()}
    assert types["flow_start"] in ("TIMESTAMPTZ_NS", "TIMESTAMP_NS WITH TIME ZONE", "TIMESTAMP WITH TIME ZONE")
    assert types["src_port"] == "USMALLINT" and types["flow_id"] == "UBIGINT"
    ipc = tmp_path / "flows.arrow"
    run("replay", pcap, "-o", ipc)
    assert polars.read_ipc(ipc).height == 3


def test_compressed_and_pcapng_inputs_give_the_same_flows(capture, tmp_path):
    pcap, exp = capture
    zst = pytest.importorskip("zstandard")
    raw = pcap.read_bytes()
    gz = tmp_path / "c.pcap.gz"
    gz.write_bytes(gzip.compress(raw))
    zs = tmp_path / "c.pcap.zst"
    zs.write_bytes(zst.ZstdCompressor().compress(raw))
    ng = tmp_path / "c.pcapng"
    frames, _ = conversation()
    scapy.wrpcapng(str(ng), frames)
    for src in (gz, zs, ng):
        out = tmp_path / (src.name + ".parquet")
        run("replay", src, "-o", out)
        assert flows_of(pq.read_table(out)) == exp, src.name


def test_several_files_in_one_run_and_determinism(capture, tmp_path):
    pcap, exp = capture
    a = tmp_path / "a.arrow"
    b = tmp_path / "b.arrow"
    run("replay", pcap, pcap, "-o", a, "--observer", "x")
    run("replay", pcap, pcap, "-o", b, "--observer", "x")
    ta, tb = read_any(a), read_any(b)
    # the second copy repeats the same packets with the same timestamps: the TCP flow closed, so its SYN
    # starts a new flow; UDP and ICMP flows continue
    assert ta.num_rows == 4
    assert ta.equals(tb)


def test_not_a_capture_keeps_what_was_read_and_exits_3(capture, tmp_path):
    pcap, exp = capture
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a capture\n")
    out = tmp_path / "f.parquet"
    r = run("replay", pcap, bad, "-o", out, check=False)
    assert r.returncode == 3
    assert f"{bad}: offset 0: not a pcap or pcapng file" in r.stderr
    assert "Traceback" not in r.stderr
    assert flows_of(pq.read_table(out)) == exp


def test_truncated_last_record_names_the_offset(capture, tmp_path):
    pcap, exp = capture
    raw = pcap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(raw[:-10])
    # offset of the last record header: walk the classic pcap records
    off, last = 24, 24
    while off < len(raw):
        last = off
        off += 16 + int.from_bytes(raw[off + 8:off + 12], "little")
    out = tmp_path / "f.arrows"
    r = run("replay", cut, "-o", out, check=False)
    assert r.returncode == 3
    assert f"{cut}: offset {last}:" in r.stderr
    t = read_any(out)
    assert sum(t.column("src_packets").to_pylist()) + sum(t.column("dst_packets").to_pylist()) == 11


def test_unwritable_output_fails_before_any_work(capture, tmp_path):
    pcap, _ = capture
    r = run("replay", pcap, "-o", tmp_path / "no" / "such" / "dir" / "f.parquet", check=False)
    assert r.returncode == 4 and "does not exist" in r.stderr
    r = run("replay", pcap, "-o", tmp_path / "f.csv", check=False)
    assert r.returncode == 4 and "extension" in r.stderr


def test_missing_input_and_bad_options(tmp_path):
    r = run("replay", tmp_path / "nope.pcap", "-o", tmp_path / "f.parquet", check=False)
    assert r.returncode == 3 and "no such file" in r.stderr
    assert not (tmp_path / "f.parquet").exists()
    r = run("replay", tmp_path / "nope.pcap", "-o", tmp_path / "f.parquet", "--max-flows", "0", check=False)
    assert r.returncode == 2


@pytest.mark.parametrize("ext", ["parquet", "arrow", "arrows"])
def test_inspect_and_json_summary(capture, tmp_path, ext):
    pcap, exp = capture
    out = tmp_path / f"f.{ext}"
    r = run("replay", pcap, "-o", out, "--json")
    summary = json.loads(r.stdout)
    assert summary["packets"] == 12 and summary["flows"] == 3
    assert summary["counters"]["packets_metered"] == 12
    r = run("inspect", out)
    kind = {"parquet": "Parquet", "arrow": "Arrow IPC file", "arrows": "Arrow IPC stream"}[ext]
    assert "3 rows" in r.stdout and kind in r.stdout and "192.0.2.10:40001" in r.stdout
    info = json.loads(run("inspect", out, "--json").stdout)
    assert info["rows"] == 3 and info["counters"]["flows_created"] == 3
    from dpi.writer import read_counters
    assert read_counters(str(out))["packets_seen"] == 12


def test_stdout_stream(capture, tmp_path):
    pcap, exp = capture
    r = subprocess.run(FLOWTAP + ["replay", str(pcap), "-o", "-"], capture_output=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0
    t = pa.ipc.open_stream(r.stdout).read_all()
    assert flows_of(t) == exp
    assert b"12 packets" in r.stderr  # the summary moves to stderr when data goes to stdout


def test_max_flows_evictions_reach_the_output(capture, tmp_path):
    pcap, exp = capture
    out = tmp_path / "f.parquet"
    r = run("replay", pcap, "-o", out, "--max-flows", "1")
    t = pq.read_table(out)
    assert 5 in t.column("flow_end_reason").to_pylist()
    md = json.loads(pq.ParquetFile(out).metadata.metadata[b"flowtap.counters"])
    assert md["flows_evicted"] >= 2 and "evicted" in r.stdout


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_writes_what_was_read(capture, tmp_path, sig):
    """A replay stopped by a signal (here while it waits on a pipe that stays open) still writes and seals
    every flow read so far, and exits 130."""
    import signal
    import time
    pcap, exp = capture
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    out = tmp_path / "f.parquet"
    proc = subprocess.Popen(FLOWTAP + ["replay", str(fifo), "-o", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    with open(fifo, "wb") as w:
        w.write(pcap.read_bytes())
        w.flush()
        time.sleep(1.5)  # the replay has read everything and waits for more
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert flows_of(pq.read_table(out)) == exp


def test_progress_on_stderr(capture, tmp_path):
    pcap, _ = capture
    r = run("replay", pcap, "-o", tmp_path / "f.parquet", "--progress")
    assert "conv.pcap" in r.stderr and "active flows" in r.stderr


def test_encapsulations_meter_the_inner_flow(tmp_path):
    """The same TCP exchange carried bare, in QinQ, MPLS, GRE, GRE-TEB, ERSPAN II/III and VXLAN: each copy is
    its own flow (tunnel id and VLAN are part of the key), counted on the inner IP octets, with the outer
    encapsulation named."""
    from scapy.all import GRE, Dot1AD, Dot1Q
    from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
    from scapy.contrib.mpls import MPLS
    from scapy.layers.vxlan import VXLAN

    def inner(i):
        c, s = f"10.9.{i}.1", f"10.9.{i}.2"
        return [IP(src=c, dst=s) / TCP(sport=1000 + i, dport=22, flags="S"),
                IP(src=s, dst=c) / TCP(sport=22, dport=1000 + i, flags="SA"),
                IP(src=c, dst=s) / TCP(sport=1000 + i, dport=22, flags="PA") / Raw(b"x" * (100 + i))]

    outer = IP(src="172.16.0.1", dst="172.16.0.2")
    wraps = {
        None: lambda p: Ether(**MAC) / p,
        "qinq": lambda p: Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / p,
        "mpls": lambda p: Ether(**MAC) / MPLS(label=16, s=0) / MPLS(label=17, s=1) / p,
        "gre": lambda p: Ether(**MAC) / outer / GRE(key_present=1, key=42) / p,
        "gre_teb": lambda p: Ether(**MAC) / outer / GRE(proto=0x6558) / Ether(**MAC) / p,
        "erspan2": lambda p: Ether(**MAC) / outer / GRE(seqnum_present=1, proto=0x88BE)
        / ERSPAN_II(session_id=7) / Ether(**MAC) / p,
        "erspan3": lambda p: Ether(**MAC) / outer / GRE(proto=0x22EB) / ERSPAN_III(session_id=8)
        / Ether(**MAC) / p,
        "vxlan": lambda p: Ether(**MAC) / outer / UDP(sport=49152, dport=4789) / VXLAN(vni=5001)
        / Ether(**MAC) / p,
    }
    frames, exp = [], {}
    for i, (name, wrap) in enumerate(wraps.items()):
        pk = inner(i)
        for j, p in enumerate(pk):
            f = wrap(p)
            f.time = T0 + i + j * 0.001
            frames.append(f)
        tunnel = None if name in ("qinq", "mpls") else name  # VLAN and MPLS are not tunnels
        exp[f"10.9.{i}.1"] = (tunnel, [2, 1, len(pk[0]) + len(pk[2]), len(pk[1])])
    cap = tmp_path / "tun.pcap"
    wrpcap(str(cap), frames)
    out = tmp_path / "tun.parquet"
    run("replay", cap, "-o", out)
    t = pq.read_table(out).to_pylist()
    got = {r["src_ip"]: (r["tunnel_type"], [r["src_packets"], r["dst_packets"], r["src_bytes"], r["dst_bytes"]])
           for r in t}
    assert got == exp
    by = {r["tunnel_type"] or r["src_ip"]: r for r in t}
    assert (by["10.9.1.1"]["outer_vlan_id"], by["10.9.1.1"]["vlan_id"]) == (100, 200)  # QinQ
    assert by["gre"]["tunnel_id"] == 42 and by["vxlan"]["tunnel_id"] == 5001
    assert by["erspan2"]["tunnel_id"] == 7 and by["erspan3"]["tunnel_id"] == 8
    assert by["10.9.0.1"]["tunnel_id"] is None and by["10.9.2.1"]["vlan_id"] == 0


@pytest.mark.parametrize("linktype", ["sll", "sll2", "raw", "null"])
def test_link_types_give_the_same_flows(capture, tmp_path, linktype):
    from scapy.all import CookedLinux, CookedLinuxV2, Loopback, PcapWriter
    frames, exp = conversation()
    wrap = {"sll": lambda p: CookedLinux(proto=0x800 if p.haslayer(IP) else 0x86DD) / p,
            "sll2": lambda p: CookedLinuxV2(proto=0x800 if p.haslayer(IP) else 0x86DD) / p,
            "raw": lambda p: p,
            "null": lambda p: Loopback(type=2 if p.haslayer(IP) else 24) / p}[linktype]
    lt = {"sll": 113, "sll2": 276, "raw": 101, "null": 0}[linktype]
    cap = tmp_path / f"{linktype}.pcap"
    with PcapWriter(str(cap), linktype=lt, sync=True) as w:
        for f in frames:
            p = wrap(f.payload)
            p.time = f.time
            w.write(p)
    out = tmp_path / "f.parquet"
    run("replay", cap, "-o", out)
    assert flows_of(pq.read_table(out)) == exp
