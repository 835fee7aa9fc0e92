"""The bundled sample (samples/sample.pcap + sample.truth.json) against its generator and against tshark.

- determinism: probe.samplegen rebuilds both files byte for byte;
- well-formedness: every IPv4/TCP/UDP/ICMP checksum and every RoCEv2 ICRC verifies (own RFC 1071 / IBTA A17
  arithmetic here, and tshark's checksum validation when tshark is installed);
- the truth: per-flow packets and IP octets per direction agree with tshark's dissection (-T fields) and with
  its conversation tables (-z conv,tcp / conv,udp), and tshark's own analysis finds what the scenario claims
  (retransmissions, duplicate ACKs, missing PSNs, NAK, CNP, CE marks, SNI, Host, ...).
"""
import hashlib
import json
import re
import shutil
import struct
import subprocess
import zlib
from decimal import Decimal
from collections import Counter, defaultdict
from ipaddress import ip_address
from pathlib import Path

import pytest

samplegen = pytest.importorskip("probe.samplegen", reason="probe.samplegen needs scapy (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.pcap"
TRUTH = ROOT / "samples" / "sample.truth.json"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (sh setup.sh --test installs it)")


@pytest.fixture(scope="module")
def truth():
    return json.loads(TRUTH.read_text())


@pytest.fixture(scope="module")
def flows(truth):
    return {f["name"]: f for f in truth["flows"]}


def read_pcap(path):
    """Yield (ts_ns, frame) from a little-endian classic pcap with nanosecond timestamps."""
    data = path.read_bytes()
    magic, vmaj, vmin, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", data, 0)
    assert (magic, vmaj, vmin, linktype) == (0xA1B23C4D, 2, 4, 1)
    off = 24
    while off < len(data):
        sec, nsec, caplen, wirelen = struct.unpack_from("<IIII", data, off)
        assert caplen == wirelen <= snaplen and nsec < 10**9
        yield sec * 10**9 + nsec, data[off + 16:off + 16 + caplen]
        off += 16 + caplen
    assert off == len(data)


# --- determinism -------------------------------------------------------------------------------------------

def test_regenerating_gives_the_committed_bytes(tmp_path):
    import scapy
    out, out_truth = tmp_path / "s.pcap", tmp_path / "s.json"
    assert samplegen.main([str(out), "--truth", str(out_truth)]) == 0
    hint = (f"samples/ differ from what probe.samplegen builds now (scapy {scapy.__version__}); if the change "
            "is intended run: python -m probe.samplegen samples/sample.pcap --truth samples/sample.truth.json")
    assert out.read_bytes() == SAMPLE.read_bytes(), hint
    assert out_truth.read_text() == TRUTH.read_text(), hint


def test_build_sample_is_pure():
    frames1, truth1 = samplegen.build_sample()
    frames2, truth2 = samplegen.build_sample()
    assert frames1 == frames2 and truth1 == truth2
    assert samplegen.pcap_bytes(frames1) == SAMPLE.read_bytes()


def test_capture_summary_matches_file(truth):
    data = SAMPLE.read_bytes()
    frames = list(read_pcap(SAMPLE))
    cap = truth["capture"]
    assert len(data) < 200_000
    assert cap["sha256"] == hashlib.sha256(data).hexdigest()
    assert cap["pcap_bytes"] == len(data)
    assert cap["packets"] == len(frames) == sum(f["src_packets"] + f["dst_packets"] for f in truth["flows"])
    assert cap["frame_bytes"] == sum(len(fr) for _, fr in frames)
    assert cap["first_ts_ns"] == frames[0][0] and cap["last_ts_ns"] == frames[-1][0]
    assert all(a[0] < b[0] for a, b in zip(frames, frames[1:]))


# --- checksums by arithmetic (RFC 1071, IBTA annex A17), no tshark needed ----------------------------------

def inet_sum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def rocev2_icrc(ip_packet_without_icrc, ihl):
    """ICRC of a RoCEv2 packet over IPv4: CRC-32 of 8 bytes of 0xff (the absent LRH), the IP header with TOS,
    TTL and checksum set to ones, the UDP header with its checksum set to ones, the BTH with its reserved byte
    (FECN/BECN) set to ones, and the rest; sent least significant byte first."""
    b = bytearray(ip_packet_without_icrc)
    b[1] = 0xFF
    b[8] = 0xFF
    b[10:12] = b"\xff\xff"
    b[ihl + 6:ihl + 8] = b"\xff\xff"
    b[ihl + 8 + 4] = 0xFF
    return struct.pack("<I", zlib.crc32(b"\xff" * 8 + bytes(b)))


def walk(frame):
    """Return the list of IP packets in a frame, outermost first (Ethernet, 802.1Q, VXLAN over UDP 4789)."""
    off, etype = 12, struct.unpack_from(">H", frame, 12)[0]
    off += 2
    while etype == 0x8100:
        etype = struct.unpack_from(">H", frame, off + 2)[0]
        off += 4
    out = []
    if etype == 0x0800:
        ihl = (frame[off] & 0x0F) * 4
        total = struct.unpack_from(">H", frame, off + 2)[0]
        ip = frame[off:off + total]
        out.append((4, ip, ihl))
        if ip[9] == 17 and struct.unpack_from(">H", ip, ihl + 2)[0] == 4789:
            out += walk(ip[ihl + 16:])
    elif etype == 0x86DD:
        plen = struct.unpack_from(">H", frame, off + 4)[0]
        out.append((6, frame[off:off + 40 + plen], 40))
    return out


def test_checksums_and_icrc_by_arithmetic():
    checked = Counter()
    for _, frame in read_pcap(SAMPLE):
        for ver, ip, hlen in walk(frame):
            if ver == 4:
                assert inet_sum(ip[:hlen]) == 0xFFFF
                checked["ipv4"] += 1
                proto, l4 = ip[9], ip[hlen:]
                pseudo = ip[12:20] + struct.pack(">BBH", 0, proto, len(l4))
            else:
                proto, l4 = ip[6], ip[40:]     # the sample has no IPv6 extension headers
                pseudo = ip[8:40] + struct.pack(">IxxxB", len(l4), proto)
            if proto == 17 and ver == 4 and l4[6:8] == b"\0\0":
                checked["udp_zero"] += 1    # no checksum (RFC 768): VXLAN and RoCEv2 over IPv4 send none
            elif proto in (6, 17):
                assert inet_sum(pseudo + l4) == 0xFFFF
                checked[proto] += 1
            elif proto == 1:
                assert inet_sum(l4) == 0xFFFF
                checked["icmp"] += 1
            if proto == 17 and struct.unpack_from(">H", l4, 2)[0] == 4791:
                assert ip[-4:] == rocev2_icrc(ip[:-4], hlen)
                checked["icrc"] += 1
    # 86 IPv4 frames + 9 inner VXLAN packets; TCP: http 9, dns_tcp 9, tls 16, bulk 29, vxlan 9;
    # UDP with checksum: DNS 2 + NTP 2; without: 24 RoCEv2 + 9 VXLAN
    assert checked == {"ipv4": 95, 6: 72, 17: 4, "udp_zero": 33, "icmp": 2, "icrc": 24}


def test_icrc_arithmetic_matches_a_real_softroce_packet():
    """The ICRC code above is itself checked against a packet captured from SoftRoCE (shared data)."""
    import os
    base = Path(os.environ.get("FLOWTAP_SHARED_DATA", ROOT / ".." / "shared" / "data"))
    path = base / "roce" / "softroce_read_request.pcap"
    if not path.exists():
        pytest.skip(f"{path} not found (shared test data is absent; set FLOWTAP_SHARED_DATA)")
    data = path.read_bytes()
    frame = data[24 + 16:]
    (ver, ip, ihl), = walk(frame)
    assert ip[-4:] == rocev2_icrc(ip[:-4], ihl)
    assert ip[-4:] != rocev2_icrc(ip[:-5] + bytes([ip[-5] ^ 1]), ihl)


# --- tshark ------------------------------------------------------------------------------------------------

FIELDS = [
    "frame.number", "frame.len", "frame.time_epoch", "vlan.id", "vxlan.vni",
    "ip.src", "ip.dst", "ip.len", "ip.proto", "ip.dsfield.ecn",
    "ipv6.src", "ipv6.dst", "ipv6.plen", "ipv6.nxt",
    "tcp.srcport", "tcp.dstport", "tcp.seq", "tcp.len", "udp.srcport", "udp.dstport", "icmp.type", "icmp.ident",
    "ip.checksum.status", "tcp.checksum.status", "udp.checksum.status", "icmp.checksum.status",
    "_ws.malformed", "_ws.expert.severity",
    "tcp.analysis.retransmission", "tcp.analysis.fast_retransmission", "tcp.analysis.duplicate_ack",
    "tcp.analysis.lost_segment",
    "infiniband.bth.opcode", "infiniband.bth.psn", "infiniband.bth.destqp", "infiniband.aeth.syndrome",
    "infiniband.reth.dmalen",
    "dns.qry.name", "dns.a", "http.request.method", "http.host", "http.user_agent", "http.request.uri",
    "http.response.code", "tls.handshake.type", "tls.handshake.extensions_server_name",
    "tls.handshake.extensions_alpn_str", "tls.handshake.ciphersuite", "ntp.flags.mode",
]
CHECKSUM_PREFS = ["-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                  "-o", "udp.check_checksum:TRUE"]
# Wireshark's proto_checksum_enum_e
CK_BAD, CK_GOOD, CK_NOT_PRESENT = 0, 1, 3
PI_ERROR = 0x00800000


def tshark(*args):
    r = subprocess.run([TSHARK, "-n", "-r", str(SAMPLE), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def dissected():
    """One dict per frame: field -> list of values (all occurrences, outer layer first)."""
    out = tshark(*CHECKSUM_PREFS, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|",
                 *[a for f in FIELDS for a in ("-e", f)])
    rows = []
    for line in out.splitlines():
        vals = line.split("\t")
        assert len(vals) == len(FIELDS), line
        rows.append({f: (v.split("|") if v else []) for f, v in zip(FIELDS, vals)})
    return rows


def innermost(row):
    """(ip_version, src, dst, proto, sport, dport, ip_octets) of a frame's innermost IP packet."""
    if row["ipv6.src"]:
        ver, src, dst, proto = 6, row["ipv6.src"][-1], row["ipv6.dst"][-1], int(row["ipv6.nxt"][-1])
        octets = int(row["ipv6.plen"][-1]) + 40
    else:
        ver, src, dst, proto = 4, row["ip.src"][-1], row["ip.dst"][-1], int(row["ip.proto"][-1])
        octets = int(row["ip.len"][-1])
    if proto == 6:
        sport, dport = int(row["tcp.srcport"][-1]), int(row["tcp.dstport"][-1])
    elif proto == 17:
        sport, dport = int(row["udp.srcport"][-1]), int(row["udp.dstport"][-1])
    else:
        sport = dport = None
    return ver, src, dst, proto, sport, dport, octets


def flow_of(row, flows):
    """Name and direction of the truth flow a frame belongs to; exactly one must match."""
    ver, src, dst, proto, sport, dport, _ = innermost(row)
    vlan = int(row["vlan.id"][0]) if row["vlan.id"] else 0
    hits = []
    for f in flows.values():
        key = (f["ip_version"], f["protocol"], f["vlan_id"])
        if key != (ver, proto, vlan):
            continue
        a = (ip_address(f["src_ip"]), f["src_port"])
        b = (ip_address(f["dst_ip"]), f["dst_port"])
        here = ((ip_address(src), sport), (ip_address(dst), dport))
        if here == (a, b):
            hits.append((f["name"], "src"))
        elif here == (b, a):
            hits.append((f["name"], "dst"))
    assert len(hits) == 1, (row["frame.number"], hits)
    return hits[0]


@needs_tshark
def test_tshark_validates_every_checksum(dissected):
    assert len(dissected) == len(list(read_pcap(SAMPLE)))
    for row in dissected:
        n = row["frame.number"]
        assert all(int(s) == CK_GOOD for s in row["ip.checksum.status"]), n
        assert all(int(s) == CK_GOOD for s in row["tcp.checksum.status"]), n
        assert all(int(s) == CK_GOOD for s in row["icmp.checksum.status"]), n
        assert all(int(s) in (CK_GOOD, CK_NOT_PRESENT) for s in row["udp.checksum.status"]), n
        assert not row["_ws.malformed"], n
        assert all(int(s) < PI_ERROR for s in row["_ws.expert.severity"]), n


@needs_tshark
def test_truth_packets_and_ip_octets_match_tshark_fields(dissected, flows):
    got = defaultdict(lambda: defaultdict(int))
    for row in dissected:
        name, d = flow_of(row, flows)
        got[name][f"{d}_packets"] += 1
        got[name][f"{d}_bytes"] += innermost(row)[-1]
    for name, f in flows.items():
        counted = {k: got[name][k] for k in ("src_packets", "dst_packets", "src_bytes", "dst_bytes")}
        assert counted == {k: f[k] for k in counted}, name


CONV_LINE = re.compile(r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+) (\d+) (bytes|kB|MB)\s+(\d+) (\d+) (bytes|kB|MB)")
UNIT = {"bytes": 1, "kB": 1000, "MB": 1000**2}


def conversations(kind):
    out = tshark("-q", "-z", f"conv,{kind}")
    convs = []
    for line in out.splitlines():
        m = CONV_LINE.match(line)
        if m:
            a_ip, a_port, b_ip, b_port, f_ba, n_ba, u_ba, f_ab, n_ab, u_ab = m.groups()
            # columns: "<-" counts frames towards A (sent by B), "->" frames sent by A
            convs.append(((ip_address(a_ip), int(a_port)), (ip_address(b_ip), int(b_port)),
                          int(f_ab), (int(n_ab), u_ab), int(f_ba), (int(n_ba), u_ba)))
    return convs


def same_size(expected_bytes, shown):
    """tshark prints a size as exact bytes below 10 kB and truncated kB/MB above."""
    value, unit = shown
    return value == expected_bytes // UNIT[unit]


def l2_overhead(f):
    """Frame bytes around the IP octets the truth counts (no frame in the sample needs padding)."""
    if f["tunnel_type"] == "vxlan":
        return 14 + 20 + 8 + 8 + 14     # outer Ethernet, IPv4, UDP, VXLAN, inner Ethernet
    return 14 + (4 if f["vlan_id"] else 0)


@needs_tshark
@pytest.mark.parametrize("kind,proto", [("tcp", 6), ("udp", 17)])
def test_truth_matches_tshark_conversations(flows, kind, proto):
    convs = conversations(kind)
    expected = [f for f in flows.values() if f["protocol"] == proto]
    outer_vxlan = [f for f in flows.values() if f["tunnel_type"] == "vxlan"] if kind == "udp" else []
    assert len(convs) == len(expected) + sum(len(f["tunnel_outer"]["udp_src_ports"]) for f in outer_vxlan)
    seen = set()
    for a, b, frames_ab, size_ab, frames_ba, size_ba in convs:
        if kind == "udp" and 4789 in (a[1], b[1]):
            # outer VXLAN tunnel: one conversation per VTEP source port, one direction each
            f = outer_vxlan[0]
            o = f["tunnel_outer"]
            d = "src" if (str(a[0]), str(b[0])) == (o["src_ip"], o["dst_ip"]) else "dst"
            assert a[1] == o["udp_src_ports"][0 if d == "src" else 1] and frames_ba == 0
            assert frames_ab == f[f"{d}_packets"]
            assert same_size(f[f"{d}_bytes"] + f[f"{d}_packets"] * l2_overhead(f), size_ab)
            continue
        for f in expected:
            fa, fb = (ip_address(f["src_ip"]), f["src_port"]), (ip_address(f["dst_ip"]), f["dst_port"])
            if (a, b) in ((fa, fb), (fb, fa)):
                break
        else:
            pytest.fail(f"tshark conversation {a} <-> {b} is not in the truth")
        seen.add(f["name"])
        if (a, b) == (fb, fa):
            frames_ab, size_ab, frames_ba, size_ba = frames_ba, size_ba, frames_ab, size_ab
        assert (frames_ab, frames_ba) == (f["src_packets"], f["dst_packets"]), f["name"]
        oh = l2_overhead(f)
        assert same_size(f["src_bytes"] + f["src_packets"] * oh, size_ab), (f["name"], size_ab)
        assert same_size(f["dst_bytes"] + f["dst_packets"] * oh, size_ba), (f["name"], size_ba)
    assert seen == {f["name"] for f in expected}


def rows_of(dissected, flows, name):
    return [r for r in dissected if flow_of(r, flows)[0] == name]


@needs_tshark
def test_tshark_tcp_analysis_finds_the_constructed_losses(dissected, flows):
    f = flows["tcp_bulk"]
    rows = rows_of(dissected, flows, "tcp_bulk")
    retrans = [r for r in rows if r["tcp.analysis.retransmission"] or r["tcp.analysis.fast_retransmission"]]
    fast = [r for r in rows if r["tcp.analysis.fast_retransmission"]]
    assert len(retrans) == f["tcp_retransmitted_segments"] == 2
    assert len(fast) == f["tcp_fast_retransmissions"] == 1
    assert sum(1 for r in rows if r["tcp.analysis.duplicate_ack"]) == f["tcp_duplicate_acks"]
    assert sum(1 for r in rows if r["tcp.analysis.lost_segment"]) == f["tcp_segments_lost_before_probe"]
    # the RTO retransmission repeats a captured segment about 200 ms (Linux tcp_rto_min) after it
    rto, = [r for r in retrans if r not in fast]
    original, = [r for r in rows if r["tcp.seq"] == rto["tcp.seq"] and r["tcp.len"] == rto["tcp.len"]
                 and r is not rto]
    gap_s = Decimal(rto["frame.time_epoch"][0]) - Decimal(original["frame.time_epoch"][0])
    assert Decimal("0.200") < gap_s < Decimal("0.201")
    # the other flows are clean
    for name, g in flows.items():
        if g["protocol"] == 6 and name != "tcp_bulk":
            for r in rows_of(dissected, flows, name):
                assert not (r["tcp.analysis.retransmission"] or r["tcp.analysis.duplicate_ack"]
                            or r["tcp.analysis.lost_segment"]), (name, r["frame.number"])


RC_REQUEST_OPCODES = set(range(0x00, 0x0D))     # RC SEND/WRITE/READ request opcodes: one PSN each
RC_READ_RESPONSE = {0x0D, 0x0E, 0x0F, 0x10}
RC_ACK, CNP = 0x11, 0x81


@needs_tshark
def test_tshark_roce_matches_the_truth(dissected, flows, truth):
    conn, = truth["roce_connections"]
    req = rows_of(dissected, flows, "roce_req")
    rsp = rows_of(dissected, flows, "roce_resp")
    psns = [int(r["infiniband.bth.psn"][0]) for r in req
            if int(r["infiniband.bth.opcode"][0]) in RC_REQUEST_OPCODES]
    # Walk the requester's PSNs in capture order with 24-bit serial arithmetic: a jump past highest + 1 leaves
    # PSNs missing (the probe never saw them in order); a PSN not ahead of the highest is a retransmission.
    highest, skipped, went_back = None, [], 0
    for psn in psns:
        delta = (psn - highest) % (1 << 24) if highest is not None else 1
        if 0 < delta < (1 << 23):
            skipped += [(highest + i) % (1 << 24) for i in range(1, delta)]
            highest = psn
        else:
            went_back += 1
    assert len(skipped) == flows["roce_req"]["roce_psn_missing"] == conn["psn_missing"] == 1
    assert skipped == conn["psn_dropped_before_probe"]
    assert went_back == flows["roce_req"]["roce_retransmitted_packets"] == conn["retransmitted_packets"] == 5
    assert psns[0] == conn["messages"][0]["first_psn"]
    assert (highest + conn["messages"][-1]["packets"]) % (1 << 24) == flows["roce_req"]["roce_next_psn"]
    ce = sum(1 for r in req if r["ip.dsfield.ecn"] == ["3"])
    assert ce == flows["roce_req"]["roce_ecn_ce_packets"] == 2
    syndromes = [int(r["infiniband.aeth.syndrome"][0]) for r in rsp
                 if int(r["infiniband.bth.opcode"][0]) == RC_ACK]
    assert sum(1 for s in syndromes if s >> 5 == 0b011) == flows["roce_resp"]["roce_naks"] == 1
    assert sum(1 for s in syndromes if s >> 5 == 0) == flows["roce_resp"]["roce_acks"]
    assert sum(1 for r in rsp if int(r["infiniband.bth.opcode"][0]) == CNP) == flows["roce_resp"]["roce_cnps"]
    read = conn["messages"][-1]
    read_psns = [(read["first_psn"] + i) % (1 << 24) for i in range(read["packets"])]
    resp_psns = [int(r["infiniband.bth.psn"][0]) for r in rsp
                 if int(r["infiniband.bth.opcode"][0]) in RC_READ_RESPONSE]
    assert resp_psns == read_psns and len(resp_psns) == flows["roce_resp"]["roce_read_response_packets"]
    assert {int(r["infiniband.bth.destqp"][0], 16) for r in req} == {conn["responder"]["qpn"]}
    assert {int(r["infiniband.bth.destqp"][0], 16) for r in rsp} == {conn["requester"]["qpn"]}


@needs_tshark
def test_tshark_sees_the_application_facts(dissected, flows):
    def values(name, field):
        return [v for r in rows_of(dissected, flows, name) for v in r[field]]

    for name in ("dns_udp", "dns_tcp"):
        app = flows[name]["app"]
        assert set(values(name, "dns.qry.name")) == {app["dns_query"]}
        assert values(name, "dns.a") == app["dns_answers"]
    http = flows["http"]["app"]
    assert values("http", "http.request.method") == [http["http_method"]]
    assert values("http", "http.host") == [http["http_host"]]
    assert values("http", "http.user_agent") == [http["http_user_agent"]]
    assert values("http", "http.request.uri") == [http["http_url"]]
    assert values("http", "http.response.code") == [str(http["http_status"])]
    tls = flows["tls"]["app"]
    assert values("tls", "tls.handshake.type") == ["1", "2"]      # ClientHello, ServerHello; rest encrypted
    assert values("tls", "tls.handshake.extensions_server_name") == [tls["tls_sni"]]
    assert values("tls", "tls.handshake.extensions_alpn_str") == tls["tls_alpn_offered"]
    assert int(values("tls", "tls.handshake.ciphersuite")[-1], 16) == tls["tls_cipher_suite"]
    assert values("vlan_ntp", "ntp.flags.mode") == ["3", "4"]
    assert set(values("vxlan_redis", "vxlan.vni")) == {str(flows["vxlan_redis"]["tunnel_id"])}
    assert set(values("vlan_ntp", "vlan.id")) == {str(flows["vlan_ntp"]["vlan_id"])}
