"""Hostile frames through the packet parser (ext/ft_parse.h via dpi._reader.parse_frame, and the same header
compiled alone with ASan/UBSan) and through the flow engine (issue 7, "systematic malformation tests").

- every test frame (scapy-built: TCP with every option kind, an IPv6 extension chain, stacked VLAN + MPLS,
  GRE / ERSPAN II / ERSPAN III / VXLAN tunnels, RoCEv2 with RETH and AETH, ICMP and ICMPv6, SLL, SLL2,
  null/loopback) cut at EVERY byte offset: the exit reason is the one named for the header the cut falls
  in, computed from the header lengths the frame was built with, and FT_F_TRUNC says the frame was cut;
- options of zero length and beyond their header (TCP and IPv4), IHL and data offset at every value,
  IPv6 extension chains, VLAN and MPLS stacks exactly at and one past their bound, GRE/ERSPAN/VXLAN
  nesting from 0 to 12 levels;
- IPv4 and IPv6 flows whose address bytes coincide stay separate flows in the engine.

Expected values come from how each frame was built (field values and header lengths), never from running
the parser. docs/malformed.md lists what is tried and the reason each case gets.
"""
import logging
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.all import (  # noqa: E402
    GRE, ICMP, IP, TCP, UDP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, ICMPv6EchoRequest,
    IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Raw, conf,
)
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific  # noqa: E402
from scapy.contrib.mpls import MPLS  # noqa: E402
from scapy.contrib.roce import AETH, BTH  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402

from dpi._reader import (  # noqa: E402
    MAX_IPV6_EXT, MAX_MPLS, MAX_TUNNEL, MAX_VLAN, PKT_DTYPE, REASON_NAMES, TUNNEL_NAMES, parse_frame,
)

conf.verb = 0
ROOT = Path(__file__).resolve().parents[1]
TUN = {name: i for i, name in enumerate(TUNNEL_NAMES)}


def _flag(name):
    """A flag value read from the contract header, so these tests follow ext/ft_record.h."""
    text = (ROOT / "ext" / "ft_record.h").read_text()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "#define" and parts[1] == name:
            return int(parts[2], 0)
    raise KeyError(name)


F_L3, F_L4, F_TRUNC, F_ROCE = _flag("FT_F_L3"), _flag("FT_F_L4"), _flag("FT_F_TRUNC"), _flag("FT_F_ROCE")
F_OPT_BAD, F_IP_OPT = _flag("FT_F_TCP_OPT_BAD"), _flag("FT_F_IP_OPT")
MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def eth(**kw):
    return Ether(src=MAC_A, dst=MAC_B, **kw)


def hl(pkt, cls, nb=1):
    """Length of the nb-th `cls` header of pkt itself (without what it carries), as scapy built it."""
    layer = pkt.getlayer(cls, nb=nb)
    return len(layer) - len(layer.payload)


def reason(rec):
    return REASON_NAMES[int(rec["reason"])]


def a4(text):
    return socket.inet_pton(socket.AF_INET, text) + bytes(12)


def a6(text):
    return socket.inet_pton(socket.AF_INET6, text)


# ---------------------------------------------------------------------------------------------------------
# the frames: (name, frame bytes, linktype, layers, checks)
#   layers: [(header length, reason while a cut falls inside it)], in wire order; a cut at or past the end of
#           the last header parses "ok". Lengths are the ones the frame was built with.
#   tunnel_at: cut offset from which the record describes the inner packet (tunnel_depth 1), or None.
#   ok: {record field: value} that every cut reaching "ok" must show.

TCP_OPTS = [("MSS", 1460), ("WScale", 7), ("SAckOK", b""), ("SAck", (100, 200, 300, 400)),
            ("Timestamp", (0x11111111, 0x22222222)), ("NOP", None), ("EOL", None)]


def _tcp_all_options():
    pkt = eth() / IP(src="10.1.1.1", dst="10.1.1.2") / TCP(sport=40000, dport=443, options=TCP_OPTS) \
        / Raw(b"x" * 10)
    doff = hl(pkt, TCP)
    assert doff == 60  # 4 + 3 + 2 + 18 + 10 + 1 + 1 = 39 option bytes, padded to 40
    layers = [(14, "truncated_l2"), (20, "truncated_l3"), (doff, "truncated_l4")]
    ok = {"sport": 40000, "dport": 443, "tcp_mss": 1460, "tcp_wscale": 7, "tcp_sack_count": 2,
          "tcp_tsval": 0x11111111, "tcp_tsecr": 0x22222222, "tcp_doff": 60, "payload_len": 10,
          "src_addr": a4("10.1.1.1"), "ip_version": 4, "proto": 6}
    return pkt, 1, layers, None, ok


def _ipv6_chain():
    pkt = (eth() / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop()
           / IPv6ExtHdrRouting(addresses=["2001:db8::99"]) / IPv6ExtHdrFragment(id=7)
           / IPv6ExtHdrDestOpt() / TCP(sport=1, dport=2, options=[("MSS", 1220)]) / Raw(b"y" * 5))
    exts = [hl(pkt, c) for c in (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrFragment, IPv6ExtHdrDestOpt)]
    assert exts == [8, 24, 8, 8]
    layers = [(14, "truncated_l2"), (40, "truncated_l3")] + [(n, "truncated_ipv6_ext") for n in exts] \
        + [(24, "truncated_l4")]
    ok = {"sport": 1, "dport": 2, "tcp_mss": 1220, "proto": 6, "ip_version": 6, "l4_off": 14 + 40 + 48,
          "src_addr": a6("2001:db8::1"), "payload_len": 5}
    return pkt, 1, layers, None, ok


def _vlan_mpls():
    pkt = (eth() / Dot1AD(vlan=100) / Dot1Q(vlan=200, type=0x8847) / MPLS(label=16, s=0) / MPLS(label=17, s=1)
           / IP(src="10.2.2.1", dst="10.2.2.2") / UDP(sport=53, dport=5353) / Raw(b"z" * 7))
    # Ethernet, two tags and two labels all cut inside the L2 part; the IP version nibble is read first
    layers = [(14 + 4 + 4 + 4 + 4, "truncated_l2"), (20, "truncated_l3"), (8, "truncated_l4")]
    ok = {"vlan_id": 200, "outer_vlan_id": 100, "vlan_depth": 2, "mpls_depth": 2, "sport": 53,
          "dport": 5353, "payload_len": 7, "src_addr": a4("10.2.2.1")}
    return pkt, 1, layers, None, ok


def _outer():
    return eth() / IP(src="172.16.0.1", dst="172.16.0.2")


def _gre_key():
    pkt = _outer() / GRE(key_present=1, key=0xABCDEF01) / IP(src="10.3.3.1", dst="10.3.3.2") \
        / TCP(sport=7, dport=8) / Raw(b"g" * 3)
    assert hl(pkt, GRE) == 8
    layers = [(14, "truncated_l2"), (20, "truncated_l3"), (8, "truncated_tunnel"), (20, "truncated_l3"),
              (20, "truncated_l4")]
    ok = {"tunnel_type": TUN["gre"], "tunnel_id": 0xABCDEF01, "tunnel_depth": 1, "sport": 7, "dport": 8,
          "src_addr": a4("10.3.3.1"), "outer_src_addr": a4("172.16.0.1"), "payload_len": 3}
    return pkt, 1, layers, 14 + 20 + 8, ok


def _erspan2():
    pkt = (_outer() / GRE(seqnum_present=1, proto=0x88BE) / ERSPAN_II(session_id=0x155) / eth()
           / IP(src="10.4.4.1", dst="10.4.4.2") / UDP(sport=9, dport=10) / Raw(b"e" * 4))
    assert (hl(pkt, GRE), hl(pkt, ERSPAN_II)) == (8, 8)
    layers = [(14, "truncated_l2"), (20, "truncated_l3"), (8 + 8, "truncated_tunnel"), (14, "truncated_l2"),
              (20, "truncated_l3"), (8, "truncated_l4")]
    ok = {"tunnel_type": TUN["erspan2"], "tunnel_id": 0x155, "sport": 9, "dport": 10,
          "src_addr": a4("10.4.4.1")}
    return pkt, 1, layers, 14 + 20 + 16, ok


def _erspan3():
    pkt = (_outer() / GRE(seqnum_present=1, proto=0x22EB) / ERSPAN_III(session_id=0x2AA, o=1)
           / ERSPAN_PlatformSpecific() / eth() / IPv6(src="fd00::4", dst="fd00::5") / TCP(sport=11, dport=12))
    assert (hl(pkt, GRE), hl(pkt, ERSPAN_III), hl(pkt, ERSPAN_PlatformSpecific)) == (8, 12, 8)
    layers = [(14, "truncated_l2"), (20, "truncated_l3"), (8 + 12 + 8, "truncated_tunnel"),
              (14, "truncated_l2"), (40, "truncated_l3"), (20, "truncated_l4")]
    ok = {"tunnel_type": TUN["erspan3"], "tunnel_id": 0x2AA, "sport": 11, "dport": 12, "ip_version": 6,
          "outer_ip_version": 4, "src_addr": a6("fd00::4")}
    return pkt, 1, layers, 14 + 20 + 28, ok


def _vxlan():
    pkt = (_outer() / UDP(sport=40001, dport=4789) / VXLAN(vni=0x123456) / eth() / Dot1Q(vlan=33)
           / IP(src="10.5.5.1", dst="10.5.5.2") / ICMP(type=8, id=0x4242) / Raw(b"p" * 6))
    # the outer UDP header is complete before the VXLAN header is read: truncated_tunnel, not _l4
    layers = [(14, "truncated_l2"), (20, "truncated_l3"), (8, "truncated_l4"), (8, "truncated_tunnel"),
              (14 + 4, "truncated_l2"), (20, "truncated_l3"), (8, "truncated_l4")]
    ok = {"tunnel_type": TUN["vxlan"], "tunnel_id": 0x123456, "vlan_id": 33, "proto": 1, "icmp_type": 8,
          "icmp_id": 0x4242, "payload_len": 6}
    return pkt, 1, layers, 14 + 20 + 8 + 8, ok


RETH = struct.pack(">QII", 0x7FEE260FB000, 0x2B8, 65536)


def _roce_reth():
    pkt = (eth() / IP(src="192.168.1.1", dst="192.168.1.2") / UDP(sport=50000, dport=4791)
           / BTH(opcode=0x06, dqpn=0x11, psn=5557091) / Raw(RETH + b"P" * 32))  # scapy appends the ICRC
    layers = [(14, "truncated_l2"), (20, "truncated_l3"), (8, "truncated_l4"), (12 + 16, "truncated_roce")]
    ok = {"roce_opcode": 0x06, "roce_dqpn": 0x11, "roce_psn": 5557091, "roce_reth_len": 65536,
          "roce_reth_rkey": 0x2B8, "roce_reth_va": 0x7FEE260FB000, "roce_payload_len": 32}
    return pkt, 1, layers, None, ok


def _roce_aeth():
    pkt = (eth() / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=50001, dport=4791)
           / BTH(opcode=0x11, dqpn=0x22, psn=77) / AETH(syndrome=0x1F, msn=0xABCDEF))
    layers = [(14, "truncated_l2"), (40, "truncated_l3"), (8, "truncated_l4"), (12 + 4, "truncated_roce")]
    ok = {"roce_opcode": 0x11, "roce_aeth_syndrome": 0x1F, "roce_aeth_msn": 0xABCDEF, "roce_payload_len": 0}
    return pkt, 1, layers, None, ok


def _icmp():
    pkt = eth() / IP(src="10.6.6.1", dst="10.6.6.2") / ICMP(type=8, id=99, seq=1) / Raw(b"ping")
    return pkt, 1, [(14, "truncated_l2"), (20, "truncated_l3"), (8, "truncated_l4")], None, \
        {"icmp_type": 8, "icmp_id": 99, "payload_len": 4, "proto": 1}


def _icmpv6():
    pkt = eth() / IPv6(src="fd00::6", dst="fd00::7") / ICMPv6EchoRequest(id=0x77, seq=2) / Raw(b"p6")
    return pkt, 1, [(14, "truncated_l2"), (40, "truncated_l3"), (8, "truncated_l4")], None, \
        {"icmp_type": 128, "icmp_id": 0x77, "payload_len": 2, "proto": 58}


def _sll():
    pkt = CookedLinux(pkttype=4) / IP(src="10.7.7.1", dst="10.7.7.2") / UDP(sport=1000, dport=2000) / Raw(b"s")
    return pkt, 113, [(16, "truncated_l2"), (20, "truncated_l3"), (8, "truncated_l4")], None, \
        {"sport": 1000, "dport": 2000, "direction": 2, "payload_len": 1}


def _sll2():
    pkt = CookedLinuxV2(pkttype=0) / IPv6(src="fd00::8", dst="fd00::9") / TCP(sport=3000, dport=4000)
    return pkt, 276, [(20, "truncated_l2"), (40, "truncated_l3"), (20, "truncated_l4")], None, \
        {"sport": 3000, "dport": 4000, "direction": 1, "ip_version": 6}


def _null_v6():
    # BSD null/loopback: the address family in the capturing host's byte order (30 = AF_INET6 on macOS)
    pkt = Raw(struct.pack("<I", 30)) / IPv6(src="fd00::a", dst="fd00::b") / UDP(sport=5, dport=6)
    return pkt, 0, [(4, "truncated_l2"), (40, "truncated_l3"), (8, "truncated_l4")], None, \
        {"sport": 5, "dport": 6, "ip_version": 6}


def _loop_v4():
    # OpenBSD loop: the family in network order
    pkt = Raw(struct.pack(">I", 2)) / IP(src="10.8.8.1", dst="10.8.8.2") / TCP(sport=8, dport=9)
    return pkt, 108, [(4, "truncated_l2"), (20, "truncated_l3"), (20, "truncated_l4")], None, \
        {"sport": 8, "dport": 9, "ip_version": 4}


FRAMES = {f.__name__.lstrip("_"): f for f in (
    _tcp_all_options, _ipv6_chain, _vlan_mpls, _gre_key, _erspan2, _erspan3, _vxlan, _roce_reth,
    _roce_aeth, _icmp, _icmpv6, _sll, _sll2, _null_v6, _loop_v4)}


def expected_at(layers, cut):
    """The reason for a frame cut after `cut` bytes: the one of the header the cut falls in."""
    end = 0
    for length, name in layers:
        end += length
        if cut < end:
            return name
    return "ok"


def cut_items():
    """Every test frame at every length 0..len: (name, frame[:cut], linktype, full length, expected reason,
    inner), inner saying whether the record should describe the inner packet of a tunnel."""
    items = []
    for name, make in FRAMES.items():
        pkt, linktype, layers, tunnel_at, _ok = make()
        frame = bytes(pkt)
        assert sum(n for n, _ in layers) <= len(frame), name
        for cut in range(len(frame) + 1):
            inner = tunnel_at is not None and cut >= tunnel_at
            items.append((name, frame[:cut], linktype, len(frame), expected_at(layers, cut), inner))
    return items


@pytest.mark.parametrize("name", list(FRAMES))
def test_cut_at_every_offset(name):
    pkt, linktype, layers, tunnel_at, ok = FRAMES[name]()
    frame = bytes(pkt)
    hdr_end = sum(n for n, _ in layers)
    for cut in range(len(frame) + 1):
        rec = parse_frame(frame[:cut], linktype=linktype, wire_len=len(frame))
        want = expected_at(layers, cut)
        where = f"{name} cut at {cut} of {len(frame)}"
        assert reason(rec) == want, where
        f = int(rec["flags"])
        assert bool(f & F_TRUNC) == (cut < len(frame)), where
        assert (rec["cap_len"], rec["wire_len"]) == (cut, len(frame)), where
        inner = tunnel_at is not None and cut >= tunnel_at
        assert rec["tunnel_depth"] == int(inner), where
        if want in ("truncated_l2", "truncated_l3", "truncated_ipv6_ext"):
            assert f & (F_L3 | F_L4) == 0, where  # no address or port of a packet whose header was cut
        if want == "truncated_l4":
            assert f & F_L3 and not f & F_L4, where
        if want == "ok":
            assert f & F_L3 and f & F_L4, where
            for field, value in ok.items():
                got = bytes(rec[field]) if isinstance(value, bytes) else int(rec[field])
                assert got == value, (where, field)
            # the payload present is what the cut left of it, never more than the headers announce
            assert rec["payload_cap"] == min(max(0, cut - int(rec["payload_off"])), int(rec["payload_len"])), where
            assert int(rec["payload_off"]) + int(rec["payload_cap"]) <= cut, where
        if want == "truncated_roce":
            assert f & F_L4, where  # metered as UDP
            assert bool(f & F_ROCE) == (cut >= hdr_end - layers[-1][0] + 12), where
    # the last cut is the whole frame
    assert reason(parse_frame(frame, linktype=linktype)) == "ok"


def test_cut_count():
    """How many cut frames the parametrized test above parses (quoted in docs/malformed.md)."""
    items = cut_items()
    assert len(FRAMES) == 15
    assert len(items) == sum(len(bytes(make()[0])) + 1 for make in FRAMES.values())
    assert len(items) > 1000


# ---------------------------------------------------------------------------------------------------------
# options, IHL and data offset


def _tcp_with_raw_options(opt_bytes, payload=b"d" * 8):
    """IPv4/TCP with option bytes as given (padded with EOL to a multiple of 4)."""
    opt_bytes += bytes(-len(opt_bytes) % 4)
    doff = (20 + len(opt_bytes)) // 4
    tcp = struct.pack(">HHIIBBHHH", 1111, 2222, 1, 0, doff << 4, 0x18, 1000, 0, 0) + opt_bytes
    ip = IP(src="10.9.0.1", dst="10.9.0.2", proto=6) / Raw(tcp + payload)
    return bytes(eth() / ip)


# (name, option bytes, tcp_opt_present bits still parsed before the bad option, mss kept)
BAD_TCP_OPTIONS = [
    ("zero_length", b"\x02\x04\x05\xb4" + b"\x08\x00", 0x01, 1460),          # timestamp claiming length 0
    ("length_one", b"\x03\x01", 0, 0),                                          # window scale, length 1
    ("zero_length_first", b"\x02\x00\x05\xb4", 0, 0),                          # MSS length 0: 0 never advances
    ("past_header", b"\x02\x04\x05\xb4" + b"\x05\x28" + bytes(6), 0x01, 1460), # SACK claims 40 bytes of 12
    ("kind_without_length", b"\x01\x01\x01\x08", 0, 0),                        # last byte a kind, no length
    ("max_length", b"\xfe\xff" + bytes(38), 0, 0),                             # 255 in a 40-byte space
    ("unknown_kind_past_end", b"\x02\x04\x05\xb4" + b"\x1e\x25" + bytes(34), 0x01, 1460),  # 37 of 36 bytes
]


@pytest.mark.parametrize("name,opts,present,mss", BAD_TCP_OPTIONS, ids=[c[0] for c in BAD_TCP_OPTIONS])
def test_bad_tcp_options_named(name, opts, present, mss):
    """A TCP option of length < 2 or running past the header stops the option walk (no loop on length 0),
    keeps what came before it, and names the packet bad_tcp_options; the packet is still metered."""
    frame = _tcp_with_raw_options(opts)
    rec = parse_frame(frame)
    assert reason(rec) == "bad_tcp_options"
    f = int(rec["flags"])
    assert f & F_OPT_BAD and f & F_L3 and f & F_L4
    assert (rec["sport"], rec["dport"], rec["tcp_opt_present"], rec["tcp_mss"]) == (1111, 2222, present, mss)
    doff = 20 + len(opts) + (-len(opts) % 4)
    assert (rec["tcp_doff"], rec["payload_off"], rec["payload_len"]) == (doff, 14 + 20 + doff, 8)


def test_good_tcp_option_edges_are_ok():
    """Options filling the 40-byte space exactly, forty NOPs, EOL followed by garbage: all well formed."""
    exact = b"\x02\x04\x05\xb4" + b"\xfd\x24" + bytes(34)             # MSS + experimental option to byte 40
    nops = b"\x01" * 40
    eol_garbage = b"\x03\x03\x08\x00" + b"\xff" * 36                  # wscale 8, EOL, then anything
    for opts, present in ((exact, 0x01), (nops, 0), (eol_garbage, 0x02)):
        rec = parse_frame(_tcp_with_raw_options(opts))
        assert reason(rec) == "ok" and not int(rec["flags"]) & F_OPT_BAD, opts
        assert rec["tcp_opt_present"] == present and rec["tcp_doff"] == 60


@pytest.mark.parametrize("doff", range(16))
def test_every_tcp_data_offset(doff):
    """Data offset 0-4 words: below the fixed header. 5-15: fine when the IP payload holds them; with a
    payload of 24 bytes, offsets past 6 words run beyond it."""
    tcp = struct.pack(">HHIIBBHHH", 1, 2, 0, 0, doff << 4, 0x10, 0, 0, 0) + b"\x01" * 4
    frame = bytes(eth() / IP(proto=6) / Raw(tcp))
    rec = parse_frame(frame)
    if doff < 5 or doff * 4 > 24:
        assert reason(rec) == "bad_tcp_data_offset", doff
        assert not int(rec["flags"]) & F_L4
    else:
        assert reason(rec) == "ok" and rec["tcp_doff"] == doff * 4 and rec["payload_len"] == 24 - doff * 4


def test_tcp_data_offset_beyond_capture():
    """A data offset the IP length allows but the capture does not hold: truncated_l4, not an over-read."""
    frame = _tcp_with_raw_options(b"\x01" * 40, payload=b"q" * 100)
    for cut in range(14 + 20 + 20, 14 + 20 + 60):
        rec = parse_frame(frame[:cut], wire_len=len(frame))
        assert reason(rec) == "truncated_l4", cut


@pytest.mark.parametrize("ihl", range(16))
def test_every_ipv4_ihl(ihl):
    """IHL 0-4: bad_ipv4_ihl. 5-15 with a total length of 60: ok (options flagged when IHL > 5), the L4
    header where IHL puts it. With a total length of 40, IHL 11-15 exceeds it: bad_ip_length."""
    body = bytes(60)  # zero option bytes (EOL) then zeros: a UDP header of port 0 wherever IHL lands
    hdr = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, 60, 0, 0, 64, 17, 0, socket.inet_aton("10.0.0.1"),
                      socket.inet_aton("10.0.0.2"))
    rec = parse_frame(bytes(eth(type=0x0800)) + hdr + body)
    if ihl < 5:
        assert reason(rec) == "bad_ipv4_ihl" and int(rec["flags"]) == 0
    else:
        assert reason(rec) == "bad_udp_length"  # the zero bytes behind the header say UDP length 0
        assert rec["l4_off"] == 14 + ihl * 4
        assert bool(int(rec["flags"]) & F_IP_OPT) == (ihl > 5)
    short = bytearray(bytes(eth(type=0x0800)) + hdr + body)
    struct.pack_into(">H", short, 14 + 2, 40)
    rec = parse_frame(bytes(short))
    want = "bad_ipv4_ihl" if ihl < 5 else "bad_ip_length" if ihl * 4 > 40 else "bad_udp_length"
    assert reason(rec) == want, ihl


def test_ipv4_ihl_beyond_capture():
    frame = bytes(eth() / IP(ihl=15, options=[], len=100) / Raw(bytes(40)))
    for cut in range(14, 14 + 60):
        assert reason(parse_frame(frame[:cut], wire_len=len(frame))) == "truncated_l3", cut


# IPv4 options (RFC 791): type, length (covering type and length), data. The parser only checks their framing
# (FT_F_IP_OPT says they are there); a malformed one sets FT_F_IP_OPT_BAD and the TCP/UDP/ICMP parse that
# ends the frame names it bad_ipv4_options. The packet is still metered (tshark keeps such packets in its
# conversations too).
F_IP_OPT_BAD = _flag("FT_F_IP_OPT_BAD")
BAD_IP_OPTIONS = [
    ("zero_length", b"\x44\x00" + bytes(2)),                 # timestamp option of length 0
    ("length_one", b"\x83\x01" + bytes(2)),                  # loose source route of length 1
    ("past_header", b"\x07\x27" + bytes(2)),                  # record route claiming 39 of 4 bytes
    ("after_nops", b"\x01\x01\x01\x94" ),                     # router alert type as the last byte
    ("max_space_overrun", b"\x44\x29" + bytes(38)),           # 41 bytes in a 40-byte option space
]


@pytest.mark.parametrize("name,opts", BAD_IP_OPTIONS, ids=[c[0] for c in BAD_IP_OPTIONS])
def test_bad_ipv4_options_named(name, opts):
    hdr_len = 20 + len(opts)
    ip = struct.pack(">BBHHHBBH4s4s", 0x40 | (hdr_len // 4), 0, hdr_len + 8 + 3, 0, 0, 64, 17, 0,
                     socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")) + opts
    frame = bytes(eth(type=0x0800)) + ip + struct.pack(">HHHH", 1234, 5678, 11, 0) + b"abc"
    rec = parse_frame(frame)
    assert reason(rec) == "bad_ipv4_options", name
    f = int(rec["flags"])
    assert f & F_IP_OPT and f & F_IP_OPT_BAD and f & F_L3 and f & F_L4
    assert bytes(rec["src_addr"]) == a4("10.0.0.1") and (rec["proto"], rec["l3_len"]) == (17, hdr_len + 11)
    assert (rec["sport"], rec["dport"], rec["payload_len"], rec["l4_off"]) == (1234, 5678, 3, 14 + hdr_len)


def test_bad_ipv4_options_with_tcp_icmp_and_under_a_tunnel():
    """TCP and ICMP name it too; bad TCP options take precedence (both are counted in the flags); an outer
    header's bad options stay reported for the inner packet of a GRE tunnel."""
    bad = b"\x44\x00\x00\x00"

    def ip4(proto, body, src="10.0.0.1", dst="10.0.0.2"):
        return struct.pack(">BBHHHBBH4s4s", 0x46, 0, 24 + len(body), 0, 0, 64, proto, 0, socket.inet_aton(src),
                           socket.inet_aton(dst)) + bad + body

    tcp = bytes(TCP(sport=1, dport=2))
    rec = parse_frame(bytes(eth(type=0x0800)) + ip4(6, tcp))
    assert reason(rec) == "bad_ipv4_options" and (rec["sport"], rec["dport"]) == (1, 2)
    tcp_bad = _tcp_with_raw_options(b"\x03\x01")[14 + 20:]
    rec = parse_frame(bytes(eth(type=0x0800)) + ip4(6, tcp_bad))
    assert reason(rec) == "bad_tcp_options" and int(rec["flags"]) & F_IP_OPT_BAD
    rec = parse_frame(bytes(eth(type=0x0800)) + ip4(1, bytes(ICMP(type=8, id=5))))
    assert reason(rec) == "bad_ipv4_options" and rec["icmp_id"] == 5
    inner = bytes(IP(src="10.9.9.1", dst="10.9.9.2") / UDP(sport=3, dport=4))
    rec = parse_frame(bytes(eth(type=0x0800)) + ip4(47, bytes(GRE(proto=0x0800)) + inner))
    assert reason(rec) == "bad_ipv4_options" and rec["tunnel_depth"] == 1
    assert bytes(rec["src_addr"]) == a4("10.9.9.1") and (rec["sport"], rec["dport"]) == (3, 4)
    # other protocols: the flag alone says it
    rec = parse_frame(bytes(eth(type=0x0800)) + ip4(50, bytes(8)))
    assert reason(rec) == "ok" and int(rec["flags"]) & F_IP_OPT_BAD


def test_good_ipv4_options_are_ok():
    for opts in (b"\x94\x04\x00\x00",                      # router alert
                 b"\x01" * 40,                               # forty NOPs
                 b"\x00" + b"\xff" * 3,                     # EOL then anything
                 b"\x07\x27\x04" + bytes(36) + b"\x00"):    # record route filling 39 bytes, then EOL
        hdr_len = 20 + len(opts)
        ip = struct.pack(">BBHHHBBH4s4s", 0x40 | (hdr_len // 4), 0, hdr_len + 8, 0, 0, 64, 17, 0,
                         socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")) + opts
        rec = parse_frame(bytes(eth(type=0x0800)) + ip + struct.pack(">HHHH", 1, 2, 8, 0))
        assert reason(rec) == "ok", opts
        assert int(rec["flags"]) & F_IP_OPT and not int(rec["flags"]) & F_IP_OPT_BAD


# ---------------------------------------------------------------------------------------------------------
# stacks at and one past their bound


def _ipv6_chain_of(n):
    pkt = IPv6(src="fd00::1", dst="fd00::2")
    for i in range(n):
        pkt = pkt / (IPv6ExtHdrDestOpt() if i % 2 else IPv6ExtHdrHopByHop())
    return eth() / pkt / UDP(sport=7, dport=7)


def test_ipv6_chain_at_and_past_bound():
    at = bytes(_ipv6_chain_of(MAX_IPV6_EXT))
    rec = parse_frame(at)
    assert reason(rec) == "ok" and rec["l4_off"] == 14 + 40 + 8 * MAX_IPV6_EXT and rec["dport"] == 7
    past = bytes(_ipv6_chain_of(MAX_IPV6_EXT + 1))
    rec = parse_frame(past)
    assert reason(rec) == "ipv6_ext_too_deep" and int(rec["flags"]) == 0
    # the chain at its bound, captured up to exactly its last byte and one byte short of it
    end = 14 + 40 + 8 * MAX_IPV6_EXT
    assert reason(parse_frame(at[:end], wire_len=len(at))) == "truncated_l4"
    assert reason(parse_frame(at[:end - 1], wire_len=len(at))) == "truncated_ipv6_ext"
    # 20 headers: the walk still stops after MAX_IPV6_EXT of them
    assert reason(parse_frame(bytes(_ipv6_chain_of(20)))) == "ipv6_ext_too_deep"


def test_ipv6_ext_length_beyond_frame():
    """An extension header whose length byte (255: 2048 bytes) runs past the frame."""
    frame = bytearray(bytes(eth() / IPv6() / IPv6ExtHdrDestOpt() / UDP()))
    frame[14 + 40 + 1] = 255
    assert reason(parse_frame(bytes(frame))) == "truncated_ipv6_ext"


def _vlans(n):
    pkt = eth()
    for i in range(n):
        pkt = pkt / Dot1Q(vlan=1 + i)
    return pkt


def test_vlan_and_mpls_at_and_past_bound():
    rec = parse_frame(bytes(_vlans(MAX_VLAN) / IP() / UDP(sport=3, dport=4)))
    assert reason(rec) == "ok" and rec["vlan_depth"] == MAX_VLAN and rec["vlan_id"] == MAX_VLAN
    rec = parse_frame(bytes(_vlans(MAX_VLAN + 1) / IP() / UDP()))
    assert reason(rec) == "vlan_too_deep" and int(rec["flags"]) == 0 and rec["vlan_depth"] == MAX_VLAN

    def mpls(n, vlans=0):
        frame = bytearray(bytes(_vlans(vlans)))
        struct.pack_into(">H", frame, len(frame) - 2, 0x8847)
        for i in range(n):
            frame += struct.pack(">I", ((100 + i) << 12) | (int(i == n - 1) << 8) | 64)
        return bytes(frame) + bytes(IP(src="10.0.0.9") / UDP(sport=5, dport=6))

    for vlans in (0, MAX_VLAN):
        rec = parse_frame(mpls(MAX_MPLS, vlans))
        assert reason(rec) == "ok" and (rec["mpls_depth"], rec["vlan_depth"]) == (MAX_MPLS, vlans)
        rec = parse_frame(mpls(MAX_MPLS + 1, vlans))
        assert reason(rec) == "mpls_too_deep" and int(rec["flags"]) == 0 and rec["mpls_depth"] == MAX_MPLS
    # a label stack that never sets bottom-of-stack and runs off the frame
    frame = bytearray(bytes(eth(type=0x8847)) + struct.pack(">I", 100 << 12 | 64) * 3)
    assert reason(parse_frame(bytes(frame))) == "truncated_l2"


# ---------------------------------------------------------------------------------------------------------
# tunnels inside tunnels: GRE / ERSPAN / VXLAN loops beyond the depth bound


def _level(kind, i):
    """One encapsulation level: (scapy layers up to the inner packet's network header, what it carries)."""
    ip = IP(src=f"10.{i}.0.1", dst=f"10.{i}.0.2")
    if kind == "gre":
        return ip / GRE()
    if kind == "erspan2":
        return ip / GRE(seqnum_present=1, proto=0x88BE) / ERSPAN_II(session_id=i) / eth()
    if kind == "erspan3":
        return ip / GRE(seqnum_present=1, proto=0x22EB) / ERSPAN_III(session_id=i) / eth()
    return ip / UDP(sport=1000 + i, dport=4789) / VXLAN(vni=i) / eth()


KINDS = ("gre", "erspan2", "erspan3", "vxlan")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("levels", range(0, 13))
def test_tunnel_nesting(kind, levels):
    """`levels` encapsulations of one kind around an IPv4/TCP packet. Up to MAX_TUNNEL: the inner TCP packet
    with tunnel_depth = levels. Beyond: tunnel_too_deep, metered as the packet at depth MAX_TUNNEL (whose
    addresses are those of level MAX_TUNNEL), never more levels walked whatever the nesting."""
    pkt = eth()
    for i in range(levels):
        pkt = pkt / _level(kind, i)
    pkt = pkt / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=123, dport=456)
    rec = parse_frame(bytes(pkt))
    if levels <= MAX_TUNNEL:
        assert reason(rec) == "ok" and rec["tunnel_depth"] == levels
        assert (rec["sport"], rec["dport"]) == (123, 456) and bytes(rec["src_addr"]) == a4("192.0.2.1")
        if levels:
            assert rec["tunnel_type"] == TUN[kind] and bytes(rec["outer_src_addr"]) == a4("10.0.0.1")
    else:
        assert reason(rec) == "tunnel_too_deep"
        assert rec["tunnel_depth"] == MAX_TUNNEL
        assert bytes(rec["src_addr"]) == a4(f"10.{MAX_TUNNEL}.0.1")
        assert rec["tunnel_type"] == TUN[kind]


def test_mixed_tunnel_chain_beyond_bound():
    """VXLAN in ERSPAN III in GRE, then more GRE: the outermost type is kept, the depth stops at the bound."""
    pkt = eth() / _level("gre", 0) / _level("erspan3", 1) / _level("vxlan", 2) / _level("gre", 3) \
        / IP() / UDP()
    rec = parse_frame(bytes(pkt))
    assert reason(rec) == "tunnel_too_deep" and rec["tunnel_type"] == TUN["gre"]
    assert rec["tunnel_depth"] == MAX_TUNNEL and bytes(rec["src_addr"]) == a4(f"10.{MAX_TUNNEL}.0.1")


def test_gre_self_loop_fills_a_jumbo_frame():
    """The same IPv4/GRE header repeated to fill 9000 bytes (a loop an attacker can write in a frame):
    MAX_TUNNEL levels walked, the rest never touched."""
    hop = bytes(IP(src="10.0.0.1", dst="10.0.0.2", proto=47, len=0)) + bytes(GRE(proto=0x0800))
    n = 9000 // len(hop)
    frame = bytes(eth(type=0x0800)) + hop * n
    rec = parse_frame(frame)
    assert reason(rec) == "tunnel_too_deep" and rec["tunnel_depth"] == MAX_TUNNEL
    assert rec["l4_off"] == 14 + MAX_TUNNEL * len(hop) + 20


# ---------------------------------------------------------------------------------------------------------
# the same frames through the header compiled alone with ASan/UBSan: no over-read, no undefined behaviour

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ft_parse.h"

/* stdin: (linktype u32, wire u32, caplen u32, bytes)*; each frame copied into a buffer of exactly caplen
 * bytes so that ASan sees a read one past it. stdout: "reason flags" per frame. */
int main(void)
{
    ft_u32 h[3];
    while (fread(h, sizeof(h), 1, stdin) == 1) {
        ft_u8 *buf = malloc(h[2] ? h[2] : 1);
        struct ft_pkt p;
        if (!buf || fread(buf, 1, h[2], stdin) != h[2])
            return 2;
        memset(&p, 0, sizeof(p));
        p.wire_len = h[1];
        p.cap_len = h[2];
        ft_parse(buf, buf + h[2], h[0], &p);
        printf("%u %u\n", p.reason, p.flags);
        free(buf);
    }
    return 0;
}
"""


def malformed_items():
    """Every frame the option, IHL, bound and nesting tests above build: (frame, linktype)."""
    items = [(_tcp_with_raw_options(o), 1) for _, o, _, _ in BAD_TCP_OPTIONS]
    for doff in range(16):
        items.append((bytes(eth() / IP(proto=6) / Raw(struct.pack(">HHIIBBHHH", 1, 2, 0, 0, doff << 4, 0, 0, 0, 0)
                                                       + bytes(4))), 1))
    for ihl in range(16):
        items.append((bytes(eth(type=0x0800)) + bytes([0x40 | ihl]) + bytes(59), 1))
    for n in (MAX_IPV6_EXT, MAX_IPV6_EXT + 1, 20):
        items.append((bytes(_ipv6_chain_of(n)), 1))
    for n in (MAX_VLAN, MAX_VLAN + 1):
        items.append((bytes(_vlans(n) / IP() / UDP()), 1))
    for kind in KINDS:
        pkt = eth()
        for i in range(6):
            pkt = pkt / _level(kind, i)
            items.append((bytes(pkt / IP() / TCP()), 1))
    return items


def test_sanitized_parser_on_cut_and_malformed_frames(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "h.c"
    src.write_text(HARNESS)
    exe = tmp_path / "h"
    res = subprocess.run([cc, "-std=gnu11", "-O1", "-g", "-fsanitize=address,undefined",
                          "-fno-sanitize-recover=all", "-I", str(ROOT / "ext"), str(src), "-o", str(exe)],
                         capture_output=True, text=True)
    if res.returncode != 0 and "sanitize" in res.stderr:
        pytest.skip("compiler lacks address/undefined sanitizers")
    assert res.returncode == 0, res.stderr
    items = [(frame, lt, wire) for _n, frame, lt, wire, _r, _i in cut_items()]
    items += [(frame, lt, len(frame)) for frame, lt in malformed_items()]
    blob = b"".join(struct.pack("<III", lt, wire, len(f)) + f for f, lt, wire in items)
    out = subprocess.run([str(exe)], input=blob, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    rows = [tuple(map(int, line.split())) for line in out.stdout.decode().splitlines()]
    assert len(rows) == len(items)
    for (frame, lt, wire), (r, f) in zip(items, rows):
        rec = parse_frame(frame, linktype=lt, wire_len=wire)
        assert (r, f & ~F_TRUNC) == (int(rec["reason"]), int(rec["flags"]) & ~F_TRUNC)


# ---------------------------------------------------------------------------------------------------------
# IPv4 and IPv6 flows whose address bytes coincide stay apart


def test_ipv4_and_ipv6_flows_with_coinciding_bytes_stay_separate():
    """10.0.0.1 -> 10.0.0.2, ::ffff:10.0.0.1 -> ::ffff:10.0.0.2 (IPv4-mapped) and a00:1:: -> a00:2:: (whose
    16 bytes are exactly the record's bytes of the IPv4 addresses: the first 4 bytes, then zeros), all
    UDP 1000 -> 2000: three flows, each with its own packets and bytes."""
    from dpi.engine import Engine, EngineConfig

    pairs = [(IP, "10.0.0.1", "10.0.0.2", 3), (IPv6, "::ffff:10.0.0.1", "::ffff:10.0.0.2", 5),
             (IPv6, "a00:1::", "a00:2::", 7)]
    # the point of the third pair: its address bytes equal the IPv4 record's
    assert a6("a00:1::") == a4("10.0.0.1") and a6("a00:2::") == a4("10.0.0.2")
    recs, t = [], 1_000_000_000
    for ipcls, src, dst, n in pairs:
        for i in range(n):
            fwd = i % 2 == 0
            ip = ipcls(src=src, dst=dst) if fwd else ipcls(src=dst, dst=src)
            udp = UDP(sport=1000, dport=2000) if fwd else UDP(sport=2000, dport=1000)
            frame = bytes(eth() / ip / udp / Raw(b"k" * 10))
            t += 1000
            recs.append(parse_frame(frame, ts_ns=t))
    arr = np.array(recs, dtype=PKT_DTYPE)
    eng = Engine(EngineConfig(observer_host="test", dpi_budget=0, shipped_rules=False))
    batches = list(eng.add(arr)) + list(eng.flush())
    cols = ["ip_version", "src_ip", "dst_ip", "src_packets", "dst_packets", "src_bytes", "dst_bytes"]
    rows = [r for b in batches for r in b.select(cols).to_pylist()]
    got = sorted((r["ip_version"], r["src_ip"], r["dst_ip"], r["src_packets"], r["dst_packets"],
                  r["src_bytes"] + r["dst_bytes"]) for r in rows)
    want = sorted((4 if ipcls is IP else 6, socket.inet_ntop(socket.AF_INET if ipcls is IP else socket.AF_INET6,
                                                             socket.inet_pton(socket.AF_INET if ipcls is IP
                                                                              else socket.AF_INET6, src)),
                   socket.inet_ntop(socket.AF_INET if ipcls is IP else socket.AF_INET6,
                                    socket.inet_pton(socket.AF_INET if ipcls is IP else socket.AF_INET6, dst)),
                   (n + 1) // 2, n // 2, n * ((20 if ipcls is IP else 40) + 8 + 10))
                  for ipcls, src, dst, n in pairs)
    assert got == want
    c = eng.counters()
    assert c["flows_created"] == 3 and c["packets_metered"] == 15
