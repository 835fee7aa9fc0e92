"""One parser, two builds: every frame of the nDPI Ethernet captures goes through the BPF programs
(BPF_PROG_TEST_RUN on ft_xdp and ft_tc_ingress: the staged, tail-called driver of ext/ft_parse.h's
functions) and through the replay parser (dpi._reader.parse_frame, ft_parse() itself); the records must be
identical, field by field, except the fields the two sources fill differently by design:
ts_ns (kernel clock vs file), frame_off and payload_cap (live: the snippet in the batch's data buffer), iface
and direction (hook vs file). Root only."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from test_live_common import live_skip_reason

pytestmark = [pytest.mark.root, pytest.mark.ndpi,
              pytest.mark.skipif(live_skip_reason() is not None, reason=live_skip_reason() or "")]

DATA = Path(os.environ.get("FLOWTAP_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
SNAP = 128
# live records by design: cap_len = payload_off + payload_cap (user space holds only the snippet's frame bytes)
IGNORED = {"ts_ns", "frame_off", "payload_cap", "iface", "direction", "cap_len"}
MAX_TEST_RUN = 3000  # BPF_PROG_TEST_RUN takes one page less head- and tailroom (linear XDP / skb data)


def _frames():
    import dpkt
    names = (DATA / "ndpi" / "ether_files.txt").read_text().split()
    for name in names:
        with open(DATA / "ndpi" / "pcap" / name, "rb") as f:
            try:
                rd = dpkt.pcapng.Reader(f) if name.endswith("pcapng") else dpkt.pcap.Reader(f)
                for _ts, buf in rd:
                    yield name, bytes(buf)
            except Exception:  # the deliberately malformed captures: what was read so far counts
                continue


def _equal(a, b) -> bool:
    return bool(np.all(a == b)) if isinstance(a, np.ndarray) else a == b


@pytest.mark.skipif(not (DATA / "ndpi" / "ether_files.txt").exists(), reason="../shared/data/ndpi not present")
def test_kernel_records_equal_replay_parser_records_on_ndpi_frames():
    from dpi._reader import PKT_DTYPE, parse_frame
    from probe.live import BpfConfig, Probe, test_run

    probe = Probe(BpfConfig(snap_len=SNAP, ring_bytes=1 << 24))
    ring = probe.ring_reader()
    cap = 4096
    pkts = np.zeros(cap, PKT_DTYPE)
    data = np.zeros(cap * SNAP, np.uint8)
    snip = np.zeros(cap, np.uint16)
    fields = [f for f in PKT_DTYPE.names if f not in IGNORED]
    checked = skipped = cut = 0
    mismatches = []
    reasons = {}
    tunnelled = 0
    try:
        pending = []  # (name, frame) in the order their records enter the ring
        def compare():
            nonlocal checked, tunnelled, cut
            while pending:
                n, used, _more = ring.drain(pkts, data, snip, 0)
                assert n > 0, "a test run wrote no record"
                for i in range(n):
                    name, frame = pending.pop(0)
                    ref = parse_frame(np.frombuffer(frame, np.uint8), 1)
                    got = pkts[i]
                    bad = [f for f in fields if not _equal(got[f], ref[f])]
                    # the snippet: the payload's first bytes, as many as the record's flow gets
                    s = int(snip[i])
                    cut += 0 < s < int(ref["payload_len"])   # the snap length hit: the ring counts it
                    if int(got["cap_len"]) != int(got["payload_off"]) + s or int(got["payload_cap"]) != s:
                        bad.append("cap_len")
                    if s:
                        off = int(ref["payload_off"])
                        start = (int(got["frame_off"]) + off) % (1 << 64)
                        if bytes(data[start:start + s]) != frame[off:off + s] or s > min(SNAP, int(ref["payload_cap"])):
                            bad.append("snippet")
                    if bad and len(mismatches) < 20:
                        mismatches.append((name, bad, {f: (got[f], ref[f]) for f in bad if f != "snippet"}))
                    checked += 1
                    tunnelled += int(ref["tunnel_depth"]) > 0
                    r = int(ref["reason"])
                    reasons[r] = reasons.get(r, 0) + 1

        for name, frame in _frames():
            if not 14 <= len(frame) <= MAX_TEST_RUN:
                skipped += 1
                continue
            for prog in ("ft_xdp", "ft_tc_ingress"):
                test_run(probe.fd(prog), frame)
                pending.append((name, frame))
            if len(pending) >= cap:
                compare()
        compare()
        snippets_cut = ring.counters()["snippets_cut"]
    finally:
        ring.close()
        probe.close()
    assert not mismatches, mismatches
    assert cut > 0 and snippets_cut == cut
    # sanity of the corpus walk itself: most frames parse to the end, and tunnels were among them
    assert checked > 150_000 and reasons.get(0, 0) > 0.9 * checked and tunnelled > 0
    print(f"{checked} records compared ({skipped} frames outside 14..{MAX_TEST_RUN} bytes), reasons {reasons}")


def _edge_frames():
    """(label, frame, fast): frames at every edge of the entry program's fast path (ext/ft_parse_fast.h), and
    whether the fast path should take them (True) or leave them to the staged parser (False)."""
    from scapy.all import GRE, ICMP, IP, TCP, UDP, ARP, Dot1AD, Dot1Q, Ether, IPOption_Router_Alert, IPv6, \
        IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, ICMPv6EchoRequest, Raw
    from scapy.contrib.roce import BTH
    from scapy.layers.vxlan import VXLAN
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    v4 = IP(src="10.1.2.3", dst="10.4.5.6", ttl=61, tos=0xB8)
    v6 = IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0x2E, hlim=17)
    ts = [("NOP", None), ("NOP", None), ("Timestamp", (11111, 22222))]
    tcp = TCP(sport=40000, dport=443, flags="PA", seq=123456789, ack=987654321, window=501)
    pay = Raw(b"p" * 200)
    reth = bytes.fromhex("0000112233445566") + (0x1234).to_bytes(4, "big") + (4096).to_bytes(4, "big")

    def raw_v4(pkt, **fix):  # a built IPv4 frame with header fields overwritten after scapy's checksums
        b = bytearray(bytes(pkt))
        for off, val in fix.items():
            b[int(off[1:])] = val
        return bytes(b)

    f = [
        ("v4 tcp", e / v4 / tcp / pay, True),
        ("v4 tcp ts, pure ack", e / v4 / TCP(sport=1, dport=2, flags="A", options=ts), True),
        ("v4 tcp DF syn", e / IP(src="10.0.0.1", dst="10.0.0.2", flags="DF") / TCP(flags="S") / Raw(b"s" * 10), True),
        ("vlan 8100 v4 tcp ts", e / Dot1Q(vlan=100, prio=5) / v4 / TCP(options=ts) / pay, True),
        ("vlan id 0 (priority tag)", e / Dot1Q(vlan=0, prio=3) / v4 / tcp / pay, True),
        ("vlan 88a8 v6 udp", e / Dot1AD(vlan=7) / v6 / UDP(sport=5353, dport=53) / pay, True),
        ("vlan 9100 v4 udp", Ether(type=0x9100) / Dot1Q(vlan=4095) / v4 / UDP(sport=1, dport=2) / pay, True),
        ("v6 tcp ts", e / v6 / TCP(sport=1234, dport=80, flags="PA", options=ts) / pay, True),
        ("v6 udp", e / v6 / UDP(sport=1, dport=2) / pay, True),
        ("roce send only", e / v4 / UDP(sport=49152, dport=4791) / BTH(opcode=0x04, dqpn=0x11, psn=7) / Raw(b"r" * 256), True),
        ("roce write first + RETH", e / v4 / UDP(sport=49152, dport=4791) / BTH(opcode=0x06, dqpn=9, psn=1, solicited=1) /
         Raw(reth + b"w" * 64), True),
        ("roce RETH cut", e / v4 / UDP(sport=49152, dport=4791) / BTH(opcode=0x06, psn=1) / Raw(reth[:8]), True),
        ("roce BTH cut", e / v4 / UDP(sport=49152, dport=4791) / Raw(b"\x04\x00\x00\x00\x00\x00"), True),
        ("roce v6 CNP", e / v6 / UDP(sport=49152, dport=4791) / BTH(opcode=0x81, becn=1) / Raw(bytes(16)), True),
        ("v4 length beyond the frame", raw_v4(e / v4 / tcp / pay, b16=0x05, b17=0xDC), True),
        ("ethernet padding", e / v4 / UDP(sport=7, dport=7) / Raw(b"x") / Raw(bytes(20)), True),
        ("udp length beyond ip", raw_v4(e / v4 / UDP(sport=7, dport=8) / pay, b38=0x07, b39=0xFF), True),
        ("v4 ihl 6 (router alert)", e / IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_Router_Alert()]) / tcp / pay, False),
        ("v4 ihl 6 bad option", raw_v4(e / IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_Router_Alert()]) / tcp,
                                       b35=1), False),
        ("v4 first fragment", e / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / UDP(sport=3, dport=4) / pay, False),
        ("v4 later fragment", e / IP(src="10.0.0.1", dst="10.0.0.2", frag=100, proto=17) / pay, False),
        ("v4 total length 0 (TSO)", raw_v4(e / v4 / tcp / pay, b16=0, b17=0), False),
        ("v4 total length 10", raw_v4(e / v4 / tcp / pay, b16=0, b17=10), False),
        ("v4 version 6 in 0x0800", raw_v4(e / v4 / tcp / pay, b14=0x65), False),
        ("qinq 2 tags", e / Dot1AD(vlan=10) / Dot1Q(vlan=20) / v4 / tcp / pay, False),
        ("3 tags", e / Dot1AD(vlan=10) / Dot1Q(vlan=20) / Dot1Q(vlan=30) / v4 / tcp / pay, False),
        ("v6 hop-by-hop + tcp", e / v6 / IPv6ExtHdrHopByHop() / tcp / pay, False),
        ("v6 fragment header + udp", e / v6 / IPv6ExtHdrFragment(m=1, id=5) / UDP(sport=1, dport=2) / pay, False),
        ("v6 payload length 0", raw_v4(e / v6 / tcp / pay, b18=0, b19=0), False),
        ("v6 icmp echo", e / v6 / ICMPv6EchoRequest(id=77) / pay, False),
        ("v4 icmp echo", e / v4 / ICMP(id=99) / pay, False),
        ("tcp mss (doff 24)", e / v4 / TCP(flags="S", options=[("MSS", 1460)]), False),
        ("tcp doff 32, sack", e / v4 / TCP(flags="A", options=[("NOP", None), ("NOP", None), ("SAck", (5, 9))]) / pay, False),
        ("tcp doff 36, ts + mss", e / v4 / TCP(flags="S", options=ts + [("MSS", 1400)]), False),
        ("tcp doff 32, ts layout shifted", e / v4 / TCP(flags="A", options=[("Timestamp", (1, 2)), ("NOP", None), ("NOP", None)]), False),
        ("tcp doff 16", raw_v4(e / v4 / tcp / pay, b46=0x40), False),
        ("tcp doff beyond ip", raw_v4(e / v4 / TCP(options=ts), b16=0, b17=44), False),
        ("tcp header cut", bytes(e / v4 / tcp)[:44], False),
        ("ip header cut", bytes(e / v4 / tcp)[:30], False),
        ("vlan tag cut", bytes(e / Dot1Q(vlan=5) / v4)[:16], False),
        ("ethernet only", bytes(e / v4)[:14], False),
        ("udp length 4", raw_v4(e / v4 / UDP(sport=7, dport=8) / pay, b38=0, b39=4), False),
        ("vxlan", e / v4 / UDP(sport=5000, dport=4789) / VXLAN(vni=42) / e / v4 / tcp / pay, False),
        ("gre", e / v4 / GRE() / v4 / UDP(sport=1, dport=2) / pay, False),
        ("arp", e / ARP(), False),
    ]
    return [(label, bytes(pkt), fast) for label, pkt, fast in f]


def test_fast_path_edges_equal_replay_parser_records():
    """Each frame at an edge of the fast path through both entries: the record equals the replay parser's, and
    fast_parsed says which path parsed it (so both paths are exercised on the frames meant for them)."""
    from dpi._reader import PKT_DTYPE, parse_frame
    from probe.live import BpfConfig, Probe, test_run

    probe = Probe(BpfConfig(snap_len=SNAP, ring_bytes=1 << 22))
    ring = probe.ring_reader()
    pkts = np.zeros(8, PKT_DTYPE)
    data = np.zeros(8 * SNAP, np.uint8)
    snip = np.zeros(8, np.uint16)
    fields = [f for f in PKT_DTYPE.names if f not in IGNORED]
    mismatches = []
    frames = _edge_frames()
    try:
        for label, frame, fast in frames:
            before = probe.counters()["fast_parsed"]
            # the kernel's skb test run refuses an IPv4 frame shorter than an IPv4 header (EINVAL): XDP only
            progs = ("ft_xdp",) if label in ("ip header cut", "ethernet only") else ("ft_xdp", "ft_tc_ingress")
            for prog in progs:
                test_run(probe.fd(prog), frame)
            took = probe.counters()["fast_parsed"] - before
            n, _used, _more = ring.drain(pkts, data, snip, 0)
            assert n == len(progs), (label, n)
            ref = parse_frame(np.frombuffer(frame, np.uint8), 1)
            for i in range(n):
                bad = [f for f in fields if not _equal(pkts[i][f], ref[f])]
                s = int(snip[i])
                if s:
                    off = int(ref["payload_off"])
                    start = (int(pkts[i]["frame_off"]) + off) % (1 << 64)
                    if bytes(data[start:start + s]) != frame[off:off + s]:
                        bad.append("snippet")
                if s != min(SNAP, int(ref["payload_cap"])) and int(ref["reason"]) in (0, 20):
                    bad.append("snippet_len")
                if bad:
                    mismatches.append((label, i, {f: (pkts[i][f], ref[f]) for f in bad if f in fields}))
            if took != (len(progs) if fast else 0):
                mismatches.append((label, "fast_parsed", took))
    finally:
        ring.close()
        probe.close()
    assert not mismatches, mismatches
    # the frames meant for each path end where the replay parser says (not all in one reason by accident)
    reasons = {int(parse_frame(np.frombuffer(fr, np.uint8), 1)["reason"]) for _l, fr, _f in frames}
    assert len(reasons) >= 8, reasons
