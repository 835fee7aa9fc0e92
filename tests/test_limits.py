"""Limits a user can set and see (issue 7): max flows, DPI packet budget, DPI reassembly.

Each limit is set on the `flowtap replay` command line, and the test checks three places: the summary
line, the output's metadata (flowtap.settings for the value, flowtap.counters "limits" for how often it
was reached), and the count itself, which is arithmetic over scapy-built captures: flows fed minus the cap,
flows that send more payload packets than the budget, payload bytes that pass the reassembly bound.
"""
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

scapy = pytest.importorskip("scapy.all")
from scapy.all import IP, TCP, UDP, Ether, Raw, wrpcap  # noqa: E402

from dpi import _flowtable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# a request line and one header, then a header that never ends: HTTP keeps asking for more bytes
HTTP_OPEN = b"GET / HTTP/1.1\r\nHost: example.org\r\nX-Pad: "
# a request line that never ends: no verdict however many packets follow
HTTP_LINE = b"GET /"


def replay(tmp_path, pkts, *args):
    """Run `flowtap replay` on pkts; returns (summary text, settings, limits counters)."""
    cap, out = tmp_path / "in.pcap", tmp_path / "out.parquet"
    wrpcap(str(cap), pkts)
    r = subprocess.run([sys.executable, "-m", "probe.cli", "replay", str(cap), "-o", str(out), *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    meta = pq.read_metadata(out).metadata   # Parquet: the counters are written at close
    return (r.stdout, json.loads(meta[b"flowtap.settings"]),
            json.loads(meta[b"flowtap.counters"])["limits"])


def timed(pkts):
    for i, p in enumerate(pkts):
        p.time = 1.0 + i / 1000
    return pkts


def http_flows(n, chunks, interleave=True, first=HTTP_OPEN):
    """n TCP connections to port 80: handshake, then one client packet per chunk (the first prefixed by
    `first`), sequence numbers in order. Interleaved: every flow's k-th packet before any (k+1)-th."""
    per = []
    for i in range(n):
        c, s, sp, seq = f"10.1.0.{i + 1}", "10.2.0.1", 30000 + i, 1000
        f = [Ether() / IP(src=c, dst=s) / TCP(sport=sp, dport=80, flags="S", seq=seq - 1),
             Ether() / IP(src=s, dst=c) / TCP(sport=80, dport=sp, flags="SA", seq=5000, ack=seq),
             Ether() / IP(src=c, dst=s) / TCP(sport=sp, dport=80, flags="A", seq=seq, ack=5001)]
        for k, ch in enumerate(chunks):
            data = (first if k == 0 else b"") + ch
            f.append(Ether() / IP(src=c, dst=s) / TCP(sport=sp, dport=80, flags="PA", seq=seq, ack=5001)
                     / Raw(data))
            seq += len(data)
        per.append(f)
    if not interleave:
        return timed([p for f in per for p in f])
    return timed([f[k] for k in range(len(per[0])) for f in per])


def test_max_flows_limit_is_set_shown_stored_and_counted(tmp_path):
    pkts = timed([Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i, dport=53) / Raw(b"x")
                  for i in range(20)])
    text, settings, lim = replay(tmp_path, pkts, "--max-flows", "5")
    assert settings["max_flows"] == 5 and lim["max_flows"] == 5
    assert lim["flows_evicted"] == 15 and lim["flows_evicted_established"] == 0   # 20 one-packet flows, 5 fit
    assert "limits: max flows 5: evicted 15 (established 0)" in text


def test_dpi_budget_is_set_shown_stored_and_counted(tmp_path):
    pkts = http_flows(5, [b"a" * 100] * 5, first=HTTP_LINE)   # 5 payload packets per flow, no verdict
    text, settings, lim = replay(tmp_path, pkts, "--dpi-budget", "3")
    assert settings["dpi_budget"] == 3 and lim["dpi_budget_packets"] == 3
    assert lim["dpi_budget_exhausted_flows"] == 5
    assert "DPI budget 3 packets/flow: spent without a verdict 5 flows" in text
    # a budget above the 5 payload packets is never reached
    _, _, lim = replay(tmp_path, pkts, "--dpi-budget", "10")
    assert lim["dpi_budget_exhausted_flows"] == 0


def test_dpi_reassembly_prefix_limit_is_shown_and_counted(tmp_path):
    chunks = [b"a" * 1400] * 4
    sizes = [len(HTTP_OPEN) + 1400] + [1400] * 3
    # the packet whose bytes pass the bound is the first with a running total above it: 3 here
    assert next(k for k in range(4) if sum(sizes[:k + 1]) > _flowtable.DPI_REASM_BYTES) == 2
    text, _, lim = replay(tmp_path, http_flows(5, chunks))
    assert lim["dpi_reasm_bytes"] == _flowtable.DPI_REASM_BYTES == 4096
    assert lim["dpi_reasm_truncated"] == 5   # once per flow, at its third payload packet
    assert f"DPI reassembly 4,096 B/direction in 4,096 flows at once: prefix full 5," in text


def test_dpi_reassembly_flows_limit_is_set_shown_stored_and_counted(tmp_path):
    # 7 flows, one payload packet each, an unfinished header: each wants a buffer to wait for the rest,
    # and the 2 buffers stay taken (no flow ends before the input does): 7 - 2 packets find none
    pkts = http_flows(7, [b"a" * 100])
    text, settings, lim = replay(tmp_path, pkts, "--dpi-reasm-flows", "2")
    assert settings["dpi_reasm_flows"] == 2 and lim["dpi_reasm_flows"] == 2
    assert lim["dpi_reasm_no_buffer_packets"] == 5
    assert "in 2 flows at once: prefix full 0, packets with no buffer free 5" in text
    _, _, lim = replay(tmp_path, pkts, "--dpi-reasm-flows", "7")
    assert lim["dpi_reasm_no_buffer_packets"] == 0


@pytest.mark.parametrize("args", [["--max-flows", "0"], ["--dpi-budget", "256"], ["--dpi-reasm-flows", "-1"]])
def test_limits_out_of_range_are_usage_errors(tmp_path, args):
    cap = tmp_path / "in.pcap"
    wrpcap(str(cap), timed([Ether() / IP() / UDP()]))
    r = subprocess.run([sys.executable, "-m", "probe.cli", "replay", str(cap), "-o",
                        str(tmp_path / "o.arrow"), *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)


def test_capture_takes_the_same_limits():
    r = subprocess.run([sys.executable, "-m", "probe.cli", "capture", "--help"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    for opt in ("--max-flows", "--dpi-budget", "--dpi-reasm-flows", "--snap-len"):
        assert opt in r.stdout


def _sample_on_and_off(tmp_path, switch: str) -> dict:
    """The sample replayed with --SWITCH and --no-SWITCH: {True: table, False: table}."""
    root = Path(__file__).resolve().parents[1]
    tables = {}
    for on in (True, False):
        out = tmp_path / f"{switch}{on}.parquet"
        subprocess.run([sys.executable, "-m", "probe.cli", "replay", str(root / "samples" / "sample.pcap"),
                        "-o", str(out), f"--{switch}" if on else f"--no-{switch}"], cwd=root, check=True,
                       capture_output=True)
        tables[on] = pq.read_table(out)
    return tables


def test_no_tcp_meter_switch(tmp_path):
    """--no-tcp-meter: the file has no TCP meter columns (absent, not zero: dpi.schema column groups) and
    says the meter was off; the other columns are the same; with the meter on the sample's tcp_bulk flow
    reads its truth (2 re-sent segments)."""
    from dpi import schema
    root = Path(__file__).resolve().parents[1]
    truth = json.loads((root / "samples" / "sample.truth.json").read_text())
    bulk = next(f for f in truth["flows"] if f["name"] == "tcp_bulk")
    tables = _sample_on_and_off(tmp_path, "tcp-meter")
    for on, t in tables.items():
        settings = json.loads(t.schema.metadata[b"flowtap.settings"])
        assert settings["tcp_meter"] is on
        groups = json.loads(t.schema.metadata[b"flowtap.column_groups"])
        assert ("tcp" in groups) is on
        tcp_cols = [c.name for c in schema.COLUMNS if c.group == "tcp"]
        assert len(tcp_cols) == 70
        assert all((c in t.schema.names) is on for c in tcp_cols)
    on, off = tables[True], tables[False]
    assert off.schema.names == [n for n in on.schema.names if n not in tcp_cols]
    assert off.equals(on.select(off.schema.names))
    cols = ["src_port", "dst_port"] + [f"{x}_tcp_{c}" for x in ("src", "dst")
                                       for c in ("retrans_packets", "upstream_retrans_packets", "rtt_samples")]
    rows = [r for r in on.select(cols).to_pylist()
            if r["src_port"] == bulk["src_port"] and r["dst_port"] == bulk["dst_port"]]
    assert len(rows) == 1
    r = rows[0]
    # re-sent segments: of sequence space the probe had seen (lost after it) and of space it had not
    # (lost before it, the gap filled later): 1 + 1 in the truth file
    retrans = sum(r[f"{x}_tcp_{c}"] for x in ("src", "dst")
                  for c in ("retrans_packets", "upstream_retrans_packets"))
    assert retrans == bulk["tcp_retransmitted_segments"]
    assert r["src_tcp_rtt_samples"] + r["dst_tcp_rtt_samples"] > 0


def test_no_roce_columns_switch(tmp_path):
    """--no-roce-columns: the file has no RoCE columns, says so, and every other column is the same as with
    them (the meter still keys RoCE flows by queue pair: the sample's RoCE records stay as many)."""
    from dpi import schema
    tables = _sample_on_and_off(tmp_path, "roce-columns")
    for on, t in tables.items():
        assert json.loads(t.schema.metadata[b"flowtap.settings"])["roce_columns"] is on
        assert ("roce" in json.loads(t.schema.metadata[b"flowtap.column_groups"])) is on
    on, off = tables[True], tables[False]
    roce_cols = [c.name for c in schema.COLUMNS if c.group == "roce"]
    assert len(roce_cols) == 91 and not set(roce_cols) & set(off.schema.names)
    assert off.schema.names == [n for n in on.schema.names if n not in roce_cols]
    assert off.equals(on.select(off.schema.names))
    assert on.column("roce_transport").null_count < on.num_rows   # the sample does have RoCE flows
