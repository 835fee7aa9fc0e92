"""TCP meter against tshark's TCP analysis, flow by flow, on the nDPI captures (../shared/data/ndpi/pcap).

tshark runs once per capture (-T fields) and its per-packet flags are summed per TCP stream; flowtap
replays the same file with timeouts long enough that one stream is one record. Flows are paired by their
two endpoints and first packet time. The agreement rate over all of tshark's TCP streams is printed, with
every class of difference counted and named (docs/tcp.md explains each); at least 99 % must agree on
retransmissions and on the handshake RTT (within 1 microsecond).

Retransmissions are compared as tshark counts them: tshark's tcp.analysis.retransmission (set on fast and
spurious retransmissions too) against flowtap's retransmissions plus its upstream retransmissions (holes
filled late: tshark calls them retransmissions, flowtap keeps them apart because the probe never saw that
sequence space). tshark is the reference, not the truth: it calls a retransmission that arrives within its
out-of-order threshold "out-of-order".

Run alone with: python -m pytest -q -s tests/test_tcp_tshark.py (about 2 minutes on 2 cores).
"""
from __future__ import annotations

import collections
import multiprocessing
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FLOWTAP_SHARED_DATA", ROOT / ".." / "shared" / "data"))
PCAPS = DATA / "ndpi" / "pcap"

pytestmark = [pytest.mark.ndpi, pytest.mark.tshark]

FIELDS = ("tcp.stream", "frame.time_epoch", "frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport",
          "tcp.dstport", "tcp.analysis.retransmission", "tcp.analysis.fast_retransmission",
          "tcp.analysis.spurious_retransmission", "tcp.analysis.out_of_order", "tcp.analysis.initial_rtt",
          "tcp.analysis.lost_segment", "tcp.analysis.keep_alive", "tcp.analysis.zero_window_probe")
BIG = 10**9   # seconds (31 years): timeouts that never fire, so one tshark stream is one flowtap record


def _ns(text: str) -> int:
    """'1724035928.024039000' -> ns, exactly (no float)."""
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def _last(text: str) -> str:
    return text.split(",")[-1]   # tunnelled packets list the outer address first


def tshark_streams(path: Path) -> dict:
    """tshark's TCP streams of one capture: {stream: dict(endpoints, start_ns, counts, irtt_ns)}."""
    cmd = ["tshark", "-n", "-r", str(path), "-Y", "tcp && !icmp && !icmpv6", "-T", "fields",
           "-E", "separator=/t", "-E", "occurrence=a"] + [a for f in FIELDS for a in ("-e", f)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    streams: dict = {}
    for line in out.splitlines():
        v = line.split("\t")
        if len(v) != len(FIELDS) or not v[0] or "," in v[0] or "," in v[FIELDS.index("tcp.srcport")]:
            continue
        f = dict(zip(FIELDS, v))
        protos = f["frame.protocols"].split(":")
        l3 = [p for p in protos[:protos.index("tcp")] if p in ("ip", "ipv6")] if "tcp" in protos else []
        if not l3:
            continue
        src = _last(f[l3[-1] + ".src"])   # the innermost IP layer carries the TCP segment
        dst = _last(f[l3[-1] + ".dst"])
        s = streams.setdefault(int(f["tcp.stream"]), {
            "ipip": len(l3) > 1 and not any(t in protos for t in ("gre", "vxlan", "erspan")),
            "ends": frozenset({(src, int(f["tcp.srcport"])), (dst, int(f["tcp.dstport"]))}),
            "start_ns": None, "retrans": 0, "fast": 0, "spurious": 0, "ooo": 0, "lost": 0, "irtt_ns": None,
            "packets": 0})
        t = _ns(f["frame.time_epoch"])
        s["start_ns"] = t if s["start_ns"] is None else min(s["start_ns"], t)
        s["packets"] += 1
        for key, field in (("retrans", "tcp.analysis.retransmission"),
                           ("fast", "tcp.analysis.fast_retransmission"),
                           ("spurious", "tcp.analysis.spurious_retransmission"),
                           ("ooo", "tcp.analysis.out_of_order"), ("lost", "tcp.analysis.lost_segment")):
            s[key] += bool(f[field])
        if s["irtt_ns"] is None and f["tcp.analysis.initial_rtt"]:
            s["irtt_ns"] = _ns(f["tcp.analysis.initial_rtt"])
    return streams


def flowtap_flows(path: Path) -> dict:
    """flowtap's TCP flow records of one capture: {(endpoints, start_ns): columns}."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dpi.capture import iter_captures
    from dpi.engine import Engine, EngineConfig

    eng = Engine(EngineConfig(idle_timeout_s=BIG, active_timeout_s=BIG, closed_timeout_s=BIG,
                              observer_host="test"))
    batches = []
    try:
        for b in iter_captures([str(path)]):
            batches.extend(eng.add(b.pkts))
    except Exception:   # a deliberately malformed capture: keep what was read, as replay does
        pass
    batches.extend(eng.flush())
    tab = pa.Table.from_batches(batches, schema=eng.schema)
    tab = tab.filter(pc.equal(tab["protocol"], 6))
    cols = ("src_ip", "src_port", "dst_ip", "dst_port", "src_tcp_retrans_packets", "dst_tcp_retrans_packets",
            "src_tcp_upstream_retrans_packets", "dst_tcp_upstream_retrans_packets",
            "src_tcp_out_of_order_packets", "dst_tcp_out_of_order_packets", "src_tcp_seq_gaps",
            "dst_tcp_seq_gaps", "src_tcp_spurious_retrans_packets", "dst_tcp_spurious_retrans_packets",
            "src_tcp_fast_retrans_packets", "dst_tcp_fast_retrans_packets", "tcp_handshake_rtt_ns",
            "src_packets", "dst_packets")
    d = tab.select(list(cols)).to_pydict()
    start = tab.column("flow_start").cast("int64").to_pylist()
    flows = {}
    for i in range(tab.num_rows):
        row = {c: d[c][i] for c in cols}
        ends = frozenset({(row["src_ip"], row["src_port"]), (row["dst_ip"], row["dst_port"])})
        flows[(ends, start[i])] = row
    return flows


def compare_file(path: Path) -> list[dict]:
    """One row per tshark TCP stream: what tshark and flowtap say about it."""
    ts = tshark_streams(path)
    ft = flowtap_flows(path)
    rows = []
    for sid, s in sorted(ts.items()):
        s["file"] = path.name
        r = ft.get((s["ends"], s["start_ns"]))
        row = {"file": path.name, "stream": sid, "tshark": s, "flowtap": r}
        rows.append(row)
    return rows


def classify_retrans(t: dict, f: dict | None) -> str:
    """'agree' or the class of the difference (docs/tcp.md, table of differences)."""
    if f is None:
        return _unpaired(t)
    ours = f["src_tcp_retrans_packets"] + f["dst_tcp_retrans_packets"] + \
        f["src_tcp_upstream_retrans_packets"] + f["dst_tcp_upstream_retrans_packets"]
    if ours == t["retrans"]:
        return "agree"
    ooo = f["src_tcp_out_of_order_packets"] + f["dst_tcp_out_of_order_packets"]
    if ours > t["retrans"] and ours + ooo == t["retrans"] + t["ooo"]:
        return "tshark: out-of-order within its threshold (initial RTT or 3 ms); flowtap: sequence space " \
               "already seen, a retransmission"
    if ours < t["retrans"] and ours + ooo == t["retrans"] + t["ooo"]:
        return "flowtap: fills a never-seen hole within the reordering window (out-of-order); tshark: " \
               "retransmission"
    if f["src_packets"] + f["dst_packets"] != t["packets"]:
        return SPLIT
    if t.get("file", "").startswith("fuzz"):
        return FUZZ
    return "other (inspected: Ethernet padding counted as payload on ACKs, IP total length beyond the " \
        "frame, an ACK captured before the FIN it follows, SYN/ACKs with different ISNs; docs/tcp.md)"


SPLIT = ("flowtap and tshark put different packets in the flow: flowtap starts a new flow at a SYN after the "
         "connection closed (FIN both ways or RST) even with the same ISN, and keys flows by VLAN (the same "
         "packets seen on two VLANs are two flows); tshark keeps one stream")
FUZZ = "fuzzed capture (sequence and ACK numbers corrupted on purpose)"


def _unpaired(t: dict) -> str:
    if t["ipip"]:
        return "IP-in-IP (6in4/4in6): flowtap's parser meters the outer packet, tshark the inner TCP"
    return "no flowtap flow with the same endpoints and first packet (link types the parser does not read: " \
        "Cisco HDLC, PPP; TCP in IP fragments that tshark reassembles; fuzzed captures; vnc.pcap)"


def classify_irtt(t: dict, f: dict | None) -> str:
    if f is None:
        return _unpaired(t)
    a, b = t["irtt_ns"], f["tcp_handshake_rtt_ns"]
    if a is None and b is None:
        return "agree"
    if a is not None and b is not None and abs(a - b) <= 1000:
        return "agree"
    if f["src_packets"] + f["dst_packets"] != t["packets"]:
        return SPLIT
    if a is None:
        return "flowtap measured a handshake RTT, tshark none"
    if b is None:
        return "tshark measured a handshake RTT, flowtap none"
    return "both measured, differ by more than 1 us"


def _compare(path):
    try:
        return compare_file(path)
    except subprocess.TimeoutExpired:
        return [{"file": path.name, "stream": -1, "tshark": None, "flowtap": None}]


@pytest.fixture(scope="module")
def comparison():
    if not PCAPS.is_dir():
        pytest.skip(f"nDPI captures not found at {PCAPS} (set FLOWTAP_SHARED_DATA)")
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    files = sorted(p for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".cap"))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        rows = [r for part in pool.imap_unordered(_compare, files, chunksize=4) for r in part]
    return [r for r in rows if r["tshark"] is not None], len(files)


UNPAIRED_PREFIXES = ("IP-in-IP", "no flowtap flow", SPLIT[:40])


def _report(rows, nfiles, name, classify, capsys, examples=3) -> float:
    """Prints the agreement over all tshark TCP streams and over those both tools see as the same TCP flow
    (same endpoints, first packet and packet count: the others are matters of the parser, the link type or
    the flow table's definition of a flow, not of the meter); returns the latter."""
    classes = collections.Counter()
    ex = collections.defaultdict(list)
    for r in rows:
        c = classify(r["tshark"], r["flowtap"])
        classes[c] += 1
        if c != "agree" and len(ex[c]) < examples:
            ex[c].append(f"{r['file']}#{r['stream']}")
    n = len(rows)
    unpaired = sum(k for c, k in classes.items() if c.startswith(UNPAIRED_PREFIXES))
    paired = n - unpaired
    rate = classes["agree"] / paired if paired else 0.0
    with capsys.disabled():
        print(f"\n{name}: {classes['agree']:,} of {n:,} tshark TCP streams in {nfiles} captures agree "
              f"({100 * classes['agree'] / max(n, 1):.2f} %); of the {paired:,} that both tools see as the same "
              f"TCP flow: {100 * rate:.2f} %")
        for c, k in classes.most_common():
            if c != "agree":
                print(f"  {k:6,}  {c}   e.g. {', '.join(ex[c])}")
    return rate


def test_retransmissions_agree_with_tshark(comparison, capsys):
    rows, nfiles = comparison
    rate = _report(rows, nfiles, "retransmissions (flowtap retrans + upstream retrans vs tshark "
                   "tcp.analysis.retransmission)", classify_retrans, capsys)
    assert rate >= 0.99


def test_handshake_rtt_agrees_with_tshark(comparison, capsys):
    rows, nfiles = comparison
    rate = _report(rows, nfiles, "handshake RTT (tcp_handshake_rtt_ns vs tcp.analysis.initial_rtt, 1 us)",
                   classify_irtt, capsys)
    assert rate >= 0.99
