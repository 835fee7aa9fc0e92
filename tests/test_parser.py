"""Packet parser (ext/ft_parse.h) through dpi._reader.parse_frame.

Every frame is built with scapy; expected values come from how it was built (field values, header lengths
by arithmetic) or from tshark (RoCE), never from the parser itself. Flag and option bit values are read from
ext/ft_record.h so the tests follow the contract rather than a copy of it.
"""
import logging
import os
import random
import re
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.all import (  # noqa: E402
    AH, ARP, GRE, ICMP, IP, LLC, PPP, STP, TCP, UDP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Dot3,
    Ether, GRE_PPTP, ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, IPOption_Router_Alert, IPv6,
    IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Loopback,
    LoopbackOpenBSD, MIP6MH_BRR, Raw, RawPcapReader, conf, fragment, wrpcap,
)
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific  # noqa: E402
from scapy.contrib.mpls import MPLS, EoMCW  # noqa: E402
from scapy.contrib.roce import AETH, BTH, cnp  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402

from dpi._reader import (  # noqa: E402
    MAX_IPV6_EXT, MAX_MPLS, MAX_TUNNEL, MAX_VLAN, REASON_NAMES, TUNNEL_NAMES, parse_frame,
)

conf.verb = 0
ROOT = Path(__file__).resolve().parents[1]


def _header_constants():
    text = (ROOT / "ext" / "ft_record.h").read_text()
    return {m[1]: int(m[2], 0) for m in re.finditer(r"#define (FT_\w+) (0x[0-9A-Fa-f]+|\d+)\b", text)}


H = _header_constants()
F_L3, F_L4, F_FRAG, F_FRAG_FIRST = H["FT_F_L3"], H["FT_F_L4"], H["FT_F_FRAG"], H["FT_F_FRAG_FIRST"]
F_TRUNC, F_ROCE, F_OPT_BAD = H["FT_F_TRUNC"], H["FT_F_ROCE"], H["FT_F_TCP_OPT_BAD"]
F_IP_OPT, F_DF = H["FT_F_IP_OPT"], H["FT_F_IPV4_DF"]
TUN = {name: i for i, name in enumerate(TUNNEL_NAMES)}
DIR_INGRESS, DIR_EGRESS = H["FT_DIR_INGRESS"], H["FT_DIR_EGRESS"]

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def eth(**kw):
    return Ether(src=MAC_A, dst=MAC_B, **kw)


def parse(pkt, linktype=1, wire_len=None):
    return parse_frame(bytes(pkt), linktype=linktype, wire_len=wire_len)


def reason(rec):
    return REASON_NAMES[int(rec["reason"])]


def a4(text):
    """Record form of an IPv4 address: network order in the first 4 of 16 bytes."""
    return socket.inet_pton(socket.AF_INET, text) + bytes(12)


def a6(text):
    return socket.inet_pton(socket.AF_INET6, text)


def flags(rec):
    return int(rec["flags"])


def assert_l3_only(rec):
    assert flags(rec) & F_L3 and not flags(rec) & F_L4
    assert (int(rec["sport"]), int(rec["dport"])) == (0, 0)


# ---------------------------------------------------------------------------------------------------------
# Ethernet / IPv4 / TCP


def test_tcp_ipv4_all_fields():
    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456789, 987654321)), ("NOP", None),
            ("WScale", 7)]
    pkt = (eth() / IP(src="10.1.2.3", dst="10.4.5.6", tos=0xB8, ttl=17, flags="DF")
           / TCP(sport=40000, dport=443, seq=0xDEADBEEF, ack=0x01020304, flags="SAECN", window=29200,
                 options=opts) / Raw(b"x" * 100))
    built = Ether(bytes(pkt))
    doff = built[TCP].dataofs * 4
    rec = parse(pkt)
    assert reason(rec) == "ok"
    assert flags(rec) == F_L3 | F_L4 | F_DF
    assert rec["linktype"] == 1 and rec["ethertype"] == 0x0800
    assert bytes(rec["src_addr"]) == a4("10.1.2.3") and bytes(rec["dst_addr"]) == a4("10.4.5.6")
    assert (rec["ip_version"], rec["proto"], rec["tos"], rec["ttl"]) == (4, 6, 0xB8, 17)
    assert rec["l3_len"] == built[IP].len == 20 + doff + 100
    assert rec["l4_off"] == 14 + 20
    assert (rec["sport"], rec["dport"]) == (40000, 443)
    assert (rec["tcp_seq"], rec["tcp_ack"], rec["tcp_win"]) == (0xDEADBEEF, 0x01020304, 29200)
    assert rec["tcp_flags"] == int(built[TCP].flags) == 0x02 | 0x10 | 0x40 | 0x80 | 0x100
    assert rec["tcp_doff"] == doff
    assert rec["tcp_mss"] == 1460 and rec["tcp_wscale"] == 7
    assert (rec["tcp_tsval"], rec["tcp_tsecr"]) == (123456789, 987654321)
    assert rec["tcp_opt_present"] == (H["FT_TCPOPT_MSS"] | H["FT_TCPOPT_WSCALE"] | H["FT_TCPOPT_SACK_PERM"]
                                      | H["FT_TCPOPT_TS"])
    assert rec["payload_off"] == 14 + 20 + doff
    assert rec["payload_len"] == rec["payload_cap"] == 100
    assert (rec["vlan_depth"], rec["mpls_depth"], rec["tunnel_depth"]) == (0, 0, 0)
    assert rec["frag_off"] == 0 and rec["wire_len"] == rec["cap_len"] == len(bytes(pkt))


@pytest.mark.parametrize("opts", [
    [("NOP", None), ("NOP", None), ("Timestamp", (0xFEDCBA98, 0x01234567))],  # the layout Linux sends
    [("Timestamp", (0xFEDCBA98, 0x01234567)), ("NOP", None), ("NOP", None)],
    [("NOP", None), ("Timestamp", (0xFEDCBA98, 0x01234567)), ("NOP", None)],
])
def test_tcp_timestamps_any_alignment(opts):
    rec = parse(eth() / IP() / TCP(flags="A", options=opts) / Raw(b"d" * 5))
    assert reason(rec) == "ok" and rec["tcp_doff"] == 32
    assert (rec["tcp_tsval"], rec["tcp_tsecr"]) == (0xFEDCBA98, 0x01234567)
    assert rec["tcp_opt_present"] == H["FT_TCPOPT_TS"] and not flags(rec) & F_OPT_BAD
    assert rec["payload_len"] == 5


def test_tcp_sack_blocks_kept_and_counted():
    edges = (1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000)
    pkt = eth() / IP() / TCP(flags="A", options=[("NOP", None), ("NOP", None), ("SAck", edges)])
    rec = parse(pkt)
    assert reason(rec) == "ok"
    assert rec["tcp_sack_count"] == 4
    assert list(rec["tcp_sack"]) == list(edges)
    assert rec["tcp_opt_present"] == H["FT_TCPOPT_SACK"]
    assert rec["tcp_doff"] == 20 + 2 + 2 + 8 * 4


def test_ethernet_padding_is_not_payload():
    pkt = eth() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="S", options=[])
    frame = bytes(pkt) + bytes(60 - len(bytes(pkt)))  # minimum Ethernet frame, padded as a NIC does
    rec = parse_frame(frame)
    assert reason(rec) == "ok"
    assert rec["l3_len"] == 40
    assert rec["payload_len"] == 0 and rec["payload_cap"] == 0
    assert rec["payload_off"] == 54


def test_snaplen_cut_payload():
    pkt = eth() / IP() / UDP(sport=1111, dport=2222) / Raw(bytes(range(200)))
    full = bytes(pkt)
    rec = parse_frame(full[:96], wire_len=len(full))
    assert reason(rec) == "ok"
    assert flags(rec) & F_TRUNC
    assert rec["payload_len"] == 200
    assert rec["payload_cap"] == 96 - 42


def test_tso_total_length_zero_uses_wire_length():
    pkt = eth() / IP(len=0) / TCP(options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
    frame = bytes(pkt) + b"p" * 100
    wire = 14 + 9000  # the capture holds the first bytes of a 9000-byte TSO super-frame
    rec = parse_frame(frame, wire_len=wire)
    assert reason(rec) == "ok"
    assert rec["l3_len"] == 9000
    assert rec["payload_len"] == 9000 - 20 - 32
    assert rec["payload_cap"] == 100


def test_ipv4_options_flag():
    pkt = eth() / IP(options=[IPOption_Router_Alert()]) / UDP(sport=5, dport=6) / Raw(b"abcd")
    rec = parse(pkt)
    assert reason(rec) == "ok"
    assert flags(rec) & F_IP_OPT
    assert rec["l4_off"] == 14 + 24 and rec["payload_len"] == 4
    assert (rec["sport"], rec["dport"]) == (5, 6)


def test_ipv4_fragments():
    whole = IP(src="10.0.0.1", dst="10.0.0.2", id=77) / UDP(sport=53, dport=5353) / Raw(b"z" * 3000)
    frags = fragment(whole, fragsize=1480)
    assert len(frags) == 3
    first, middle, last = (parse(eth() / f) for f in frags)
    assert reason(first) == "ok"
    assert flags(first) == F_L3 | F_L4 | F_FRAG | F_FRAG_FIRST
    assert (first["sport"], first["dport"]) == (53, 5353)
    assert first["payload_len"] == 3000  # from the UDP length: the datagram, not this fragment
    for f, rec in zip(frags[1:], (middle, last)):
        assert reason(rec) == "ip_fragment"
        assert flags(rec) == F_L3 | F_FRAG
        assert rec["frag_off"] == f.frag and f.frag > 0
        assert rec["proto"] == 17 and rec["l3_len"] == len(bytes(f))
        assert_l3_only(rec)


def test_ipv4_negative_headers():
    rec = parse(eth() / IP(ihl=4) / TCP())
    assert reason(rec) == "bad_ipv4_ihl" and flags(rec) == 0
    # IHL 15 = 60-byte header, but only 20 + 10 bytes were captured
    frame = bytes(eth() / IP(ihl=15, options=[]) / Raw(b"0123456789"))
    rec = parse_frame(frame[:14 + 30])
    assert reason(rec) == "truncated_l3" and flags(rec) == 0
    rec = parse(eth() / IP(len=12) / TCP())
    assert reason(rec) == "bad_ip_length" and flags(rec) == 0
    rec = parse(eth(type=0x0800) / IPv6() / TCP())
    assert reason(rec) == "bad_ip_version" and flags(rec) == 0


def test_tcp_data_offset_4_and_beyond_ip_payload():
    rec = parse(eth() / IP() / TCP(dataofs=4))
    assert reason(rec) == "bad_tcp_data_offset"
    assert_l3_only(rec)
    # data offset 15 (60 bytes) but IP says the segment is 20 bytes; the capture holds 60 (trailing bytes)
    frame = bytes(eth() / IP() / TCP(dataofs=15, options=[])) + bytes(40)
    rec = parse_frame(frame)
    assert reason(rec) == "bad_tcp_data_offset"
    assert_l3_only(rec)


def _tcp_with_raw_options(opt_bytes):
    assert len(opt_bytes) % 4 == 0
    return eth() / IP() / TCP(sport=7, dport=8, dataofs=5 + len(opt_bytes) // 4) / Raw(opt_bytes + b"DATA")


def test_tcp_option_zero_length_stops_parsing():
    mss = b"\x02\x04\x05\xb4"
    rec = parse(_tcp_with_raw_options(mss + b"\x08\x00" + bytes(6)))
    assert reason(rec) == "bad_tcp_options" and flags(rec) & F_L4
    assert flags(rec) & F_OPT_BAD
    assert rec["tcp_mss"] == 1460 and rec["tcp_opt_present"] == H["FT_TCPOPT_MSS"]
    assert rec["payload_len"] == 4


def test_tcp_option_length_past_header():
    # window scale, then a timestamp option claiming 10 bytes where 5 remain
    rec = parse(_tcp_with_raw_options(b"\x01\x01\x03\x03\x07" + b"\x08\x0a" + bytes(5)))
    assert reason(rec) == "bad_tcp_options"
    assert flags(rec) & F_OPT_BAD
    assert rec["tcp_wscale"] == 7 and rec["tcp_opt_present"] == H["FT_TCPOPT_WSCALE"]
    assert rec["tcp_tsval"] == 0
    # the length byte itself is outside the header
    rec = parse(_tcp_with_raw_options(b"\x01" * 11 + b"\x02"))
    assert flags(rec) & F_OPT_BAD and rec["tcp_opt_present"] == 0


def test_tcp_option_list_ends_at_eol():
    rec = parse(_tcp_with_raw_options(b"\x00" + b"\x02\x04\x05\xb4" + bytes(3)))
    assert reason(rec) == "ok"
    assert not flags(rec) & F_OPT_BAD
    assert rec["tcp_opt_present"] == 0 and rec["tcp_mss"] == 0


def test_tcp_all_nop_options_terminate():
    rec = parse(_tcp_with_raw_options(b"\x01" * 40))
    assert reason(rec) == "ok" and rec["tcp_doff"] == 60
    assert not flags(rec) & F_OPT_BAD and rec["tcp_opt_present"] == 0


# ---------------------------------------------------------------------------------------------------------
# UDP, ICMP, other protocols


def test_udp_fields():
    pkt = eth() / IP(src="192.0.2.1", dst="198.51.100.2") / UDP(sport=12345, dport=53) / Raw(b"q" * 33)
    rec = parse(pkt)
    assert reason(rec) == "ok" and flags(rec) == F_L3 | F_L4
    assert (rec["sport"], rec["dport"], rec["proto"]) == (12345, 53, 17)
    assert rec["payload_off"] == 42 and rec["payload_len"] == rec["payload_cap"] == 33


def test_udp_length_below_8_is_metered_from_ip_length():
    pkt = eth() / IP() / UDP(sport=1, dport=2, len=5) / Raw(b"y" * 30)
    rec = parse(pkt)
    assert reason(rec) == "bad_udp_length"
    assert flags(rec) & F_L3 and flags(rec) & F_L4
    assert (rec["sport"], rec["dport"]) == (1, 2)
    assert rec["payload_len"] == 30


def test_icmp_echo_and_error():
    rec = parse(eth() / IP() / ICMP(type=8, code=0, id=0x1234, seq=9) / Raw(b"ping" * 4))
    assert reason(rec) == "ok" and flags(rec) == F_L3 | F_L4
    assert (rec["icmp_type"], rec["icmp_code"], rec["icmp_id"]) == (8, 0, 0x1234)
    assert (rec["sport"], rec["dport"]) == (8, 0)
    assert rec["payload_len"] == 16
    rec = parse(eth() / IP() / ICMP(type=0, id=0xBEEF))
    assert (rec["icmp_type"], rec["icmp_id"]) == (0, 0xBEEF)
    # redirect: bytes 4-7 are a gateway address, not an identifier
    rec = parse(eth() / IP() / ICMP(type=5, code=1, gw="18.52.86.120") / IP() / UDP())
    assert (rec["icmp_type"], rec["icmp_code"], rec["icmp_id"]) == (5, 1, 0)
    assert (rec["sport"], rec["dport"]) == (5, 1)


def test_icmpv6_echo_and_error():
    rec = parse(eth() / IPv6() / ICMPv6EchoRequest(id=0x4321, seq=1, data=b"abc"))
    assert reason(rec) == "ok" and rec["proto"] == 58
    assert (rec["icmp_type"], rec["icmp_code"], rec["icmp_id"]) == (128, 0, 0x4321)
    assert (rec["sport"], rec["dport"]) == (128, 0)
    rec = parse(eth() / IPv6() / ICMPv6EchoReply(id=0x0102))
    assert (rec["icmp_type"], rec["icmp_id"]) == (129, 0x0102)
    rec = parse(eth() / IPv6() / ICMPv6DestUnreach(code=4) / IPv6() / UDP())
    assert (rec["icmp_type"], rec["icmp_code"], rec["icmp_id"]) == (1, 4, 0)


def test_other_ip_protocols_are_l3_only():
    rec = parse(eth() / IP(proto=132) / Raw(b"\x00" * 24))
    assert reason(rec) == "ok" and rec["proto"] == 132 and rec["l4_off"] == 34
    assert_l3_only(rec)
    rec = parse(eth() / IPv6(nh=50) / Raw(b"\x00" * 24))  # ESP ends the header walk
    assert reason(rec) == "ok" and rec["proto"] == 50
    assert_l3_only(rec)
    rec = parse(eth() / IPv6(nh=59))  # no next header
    assert reason(rec) == "ok" and rec["proto"] == 59 and rec["l3_len"] == 40
    assert_l3_only(rec)


# ---------------------------------------------------------------------------------------------------------
# IPv6 and its extension headers


def test_ipv6_tcp_fields():
    pkt = (eth() / IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0xB9, fl=0xABCDE, hlim=3)
           / TCP(sport=1, dport=2, seq=5) / Raw(b"w" * 10))
    rec = parse(pkt)
    assert reason(rec) == "ok" and rec["ethertype"] == 0x86DD
    assert bytes(rec["src_addr"]) == a6("2001:db8::1") and bytes(rec["dst_addr"]) == a6("2001:db8::2")
    assert (rec["ip_version"], rec["tos"], rec["ttl"], rec["proto"]) == (6, 0xB9, 3, 6)
    assert rec["l3_len"] == 40 + 20 + 10
    assert rec["l4_off"] == 54 and rec["payload_len"] == 10


def test_ipv6_extension_chain():
    pkt = (eth() / IPv6(src="fe80::1", dst="fe80::2") / IPv6ExtHdrHopByHop()
           / IPv6ExtHdrRouting(addresses=["2001:db8::9"]) / IPv6ExtHdrDestOpt()
           / AH(nh=17, payloadlen=4, spi=1, seq=2, icv=bytes(12)) / UDP(sport=9, dport=10) / Raw(b"u" * 7))
    ext_len = 8 + (8 + 16) + 8 + 24
    rec = parse(pkt)
    assert reason(rec) == "ok"
    assert rec["proto"] == 17 and (rec["sport"], rec["dport"]) == (9, 10)
    assert rec["l4_off"] == 14 + 40 + ext_len
    assert rec["l3_len"] == 40 + ext_len + 8 + 7
    assert rec["payload_len"] == 7


def test_ipv6_mobility_header():
    pkt = eth() / IPv6() / MIP6MH_BRR()  # mobility header (135) whose payload protocol is 59
    rec = parse(pkt)
    assert reason(rec) == "ok" and rec["proto"] == 59 and rec["l4_off"] == 14 + 40 + 8


def test_ipv6_fragments():
    first = eth() / IPv6() / IPv6ExtHdrFragment(nh=17, offset=0, m=1, id=5) / UDP(sport=3, dport=4)
    rec = parse(first)
    assert reason(rec) == "ok"
    assert flags(rec) == F_L3 | F_L4 | F_FRAG | F_FRAG_FIRST
    assert (rec["proto"], rec["sport"], rec["dport"]) == (17, 3, 4)
    later = eth() / IPv6() / IPv6ExtHdrFragment(nh=17, offset=185, m=0, id=5) / Raw(b"r" * 16)
    rec = parse(later)
    assert reason(rec) == "ip_fragment"
    assert flags(rec) == F_L3 | F_FRAG
    assert (rec["proto"], rec["frag_off"]) == (17, 185)
    assert_l3_only(rec)
    atomic = eth() / IPv6() / IPv6ExtHdrFragment(nh=6, offset=0, m=0) / TCP()
    rec = parse(atomic)
    assert reason(rec) == "ok" and flags(rec) == F_L3 | F_L4  # RFC 6946: not a fragment at all


def _ipv6_dstopt_chain(n):
    pkt = IPv6()
    for _ in range(n):
        pkt = pkt / IPv6ExtHdrDestOpt()
    return eth() / pkt / TCP(sport=80, dport=81)


def test_ipv6_extension_depth_bound():
    rec = parse(_ipv6_dstopt_chain(MAX_IPV6_EXT))
    assert reason(rec) == "ok" and rec["proto"] == 6 and rec["l4_off"] == 14 + 40 + 8 * MAX_IPV6_EXT
    rec = parse(_ipv6_dstopt_chain(MAX_IPV6_EXT + 1))
    assert reason(rec) == "ipv6_ext_too_deep"
    assert flags(rec) == 0


def test_ipv6_truncated_extension():
    frame = bytes(eth() / IPv6() / IPv6ExtHdrRouting(addresses=["::1", "::2"]) / UDP())
    for cut in (54, 55, 54 + 8, 54 + 8 + 31):  # inside the fixed part, then inside the 40-byte body
        rec = parse_frame(frame[:cut], wire_len=len(frame))
        assert reason(rec) == "truncated_ipv6_ext", cut
        assert flags(rec) & (F_L3 | F_L4) == 0
    # hop-by-hop header whose length field points far past the capture
    frame = bytes(eth() / IPv6(nh=0)) + b"\x06\xff" + bytes(30)
    assert reason(parse_frame(frame)) == "truncated_ipv6_ext"


def test_ipv6_jumbogram_length_from_frame():
    pkt = eth() / IPv6(plen=0) / UDP(sport=1, dport=2) / Raw(b"j" * 50)
    rec = parse_frame(bytes(pkt)[:80], wire_len=14 + 70000)
    assert reason(rec) == "ok" and rec["l3_len"] == 70000


# ---------------------------------------------------------------------------------------------------------
# VLAN, MPLS, non-IP


def test_single_vlan():
    rec = parse(eth() / Dot1Q(vlan=100, prio=5) / IP() / UDP())
    assert reason(rec) == "ok"
    assert (rec["vlan_id"], rec["outer_vlan_id"], rec["vlan_depth"]) == (100, 0, 1)
    assert rec["ethertype"] == 0x0800 and rec["l4_off"] == 14 + 4 + 20


def test_qinq_8021ad_and_9100():
    rec = parse(eth() / Dot1AD(vlan=200) / Dot1Q(vlan=100) / IPv6() / UDP())
    assert reason(rec) == "ok"
    assert (rec["vlan_id"], rec["outer_vlan_id"], rec["vlan_depth"]) == (100, 200, 2)
    rec = parse(eth(type=0x9100) / Dot1Q(vlan=3000, type=0x8100) / Dot1Q(vlan=4000) / IP() / TCP())
    assert reason(rec) == "ok"
    assert (rec["vlan_id"], rec["outer_vlan_id"], rec["vlan_depth"]) == (4000, 3000, 2)


def _vlan_stack(n):
    pkt = eth()
    for i in range(n):
        pkt = pkt / Dot1Q(vlan=10 + i)
    return pkt / IP() / UDP()


def test_vlan_depth_bound():
    rec = parse(_vlan_stack(MAX_VLAN))
    assert reason(rec) == "ok"
    assert (rec["vlan_id"], rec["outer_vlan_id"], rec["vlan_depth"]) == (10 + MAX_VLAN - 1, 10, MAX_VLAN)
    rec = parse(_vlan_stack(MAX_VLAN + 1))
    assert reason(rec) == "vlan_too_deep" and flags(rec) == 0


def _mpls_stack(n, payload, ethertype=0x8847):
    pkt = eth(type=ethertype)
    for i in range(n):
        pkt = pkt / MPLS(label=16 + i, s=int(i == n - 1), ttl=64)
    return pkt / payload


def test_mpls():
    rec = parse(_mpls_stack(1, IP(src="1.2.3.4") / TCP(sport=5, dport=6)))
    assert reason(rec) == "ok"
    assert (rec["mpls_depth"], rec["ethertype"], rec["ip_version"]) == (1, 0x8847, 4)
    assert bytes(rec["src_addr"]) == a4("1.2.3.4") and rec["l4_off"] == 14 + 4 + 20
    rec = parse(_mpls_stack(2, IPv6() / UDP(sport=7, dport=8), ethertype=0x8848))
    assert reason(rec) == "ok"
    assert (rec["mpls_depth"], rec["ethertype"], rec["ip_version"], rec["dport"]) == (2, 0x8848, 6, 8)
    rec = parse(eth() / Dot1Q(vlan=9) / MPLS(label=100, s=1) / IP() / UDP())
    assert reason(rec) == "ok" and (rec["vlan_id"], rec["mpls_depth"]) == (9, 1)


def test_mpls_depth_bound_and_unknown_payload():
    rec = parse(_mpls_stack(MAX_MPLS, IP() / UDP()))
    assert reason(rec) == "ok" and rec["mpls_depth"] == MAX_MPLS
    rec = parse(_mpls_stack(MAX_MPLS + 1, IP() / UDP()))
    assert reason(rec) == "mpls_too_deep" and flags(rec) == 0
    rec = parse(_mpls_stack(1, EoMCW() / eth() / IP() / UDP()))  # Ethernet pseudowire with control word
    assert reason(rec) == "mpls_unknown_payload" and flags(rec) == 0


def test_not_ip():
    rec = parse(eth() / ARP())
    assert reason(rec) == "not_ip" and rec["ethertype"] == 0x0806 and flags(rec) == 0
    frame = bytes(Dot3(src=MAC_A, dst="01:80:c2:00:00:00") / LLC() / STP())
    rec = parse_frame(frame)
    assert reason(rec) == "not_ip" and rec["ethertype"] == Dot3(frame).len < 0x0600
    rec = parse(eth(type=0x88CC) / Raw(b"\x02\x07\x04" + bytes(20)))  # LLDP
    assert reason(rec) == "not_ip" and rec["ethertype"] == 0x88CC


# ---------------------------------------------------------------------------------------------------------
# link types


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip_version_nibble_decides(linktype):
    rec = parse(IP(src="9.9.9.9") / UDP(sport=1, dport=2), linktype=linktype)
    assert reason(rec) == "ok" and rec["ip_version"] == 4 and rec["ethertype"] == 0x0800
    assert rec["l4_off"] == 20 and rec["linktype"] == linktype
    rec = parse(IPv6(src="::9") / TCP(sport=3, dport=4), linktype=linktype)
    assert reason(rec) == "ok" and rec["ip_version"] == 6 and rec["ethertype"] == 0x86DD
    assert rec["l4_off"] == 40
    rec = parse_frame(b"\x50" + bytes(39), linktype=linktype)
    assert reason(rec) == "bad_ip_version"
    assert reason(parse_frame(b"", linktype=linktype)) == "truncated_l3"


def test_linktype_ipv4_ipv6():
    rec = parse(IP() / UDP(), linktype=228)
    assert reason(rec) == "ok" and rec["ip_version"] == 4
    rec = parse(IPv6() / UDP(), linktype=229)
    assert reason(rec) == "ok" and rec["ip_version"] == 6
    assert reason(parse(IPv6() / UDP(), linktype=228)) == "bad_ip_version"
    assert reason(parse(IP() / UDP() / Raw(bytes(20)), linktype=229)) == "bad_ip_version"


@pytest.mark.parametrize("pkttype,direction", [(0, DIR_INGRESS), (1, DIR_INGRESS), (2, DIR_INGRESS),
                                               (3, DIR_INGRESS), (4, DIR_EGRESS), (5, 0)])
def test_linux_sll(pkttype, direction):
    rec = parse(CookedLinux(pkttype=pkttype, proto=0x0800) / IP() / TCP(sport=10, dport=20), linktype=113)
    assert reason(rec) == "ok" and rec["direction"] == direction
    assert rec["l4_off"] == 16 + 20 and (rec["sport"], rec["dport"]) == (10, 20)
    rec = parse(CookedLinuxV2(pkttype=pkttype, proto=0x86DD) / IPv6() / UDP(sport=30, dport=40),
                linktype=276)
    assert reason(rec) == "ok" and rec["direction"] == direction
    assert rec["l4_off"] == 20 + 40 and (rec["sport"], rec["dport"]) == (30, 40)


def test_linux_sll_other_cases():
    rec = parse(CookedLinux(proto=0x8100) / Dot1Q(vlan=55) / IP() / UDP(), linktype=113)
    assert reason(rec) == "ok" and rec["vlan_id"] == 55
    rec = parse(CookedLinux(proto=0x0806) / ARP(), linktype=113)
    assert reason(rec) == "not_ip" and rec["ethertype"] == 0x0806
    assert reason(parse_frame(bytes(CookedLinux())[:15], linktype=113)) == "truncated_l2"
    assert reason(parse_frame(bytes(CookedLinuxV2())[:19], linktype=276)) == "truncated_l2"


@pytest.mark.parametrize("family", [24, 28, 30])
@pytest.mark.parametrize("order", ["<", ">"])
def test_bsd_null_both_byte_orders(family, order):
    rec = parse_frame(struct.pack(order + "I", family) + bytes(IPv6() / UDP(sport=1, dport=2)), linktype=0)
    assert reason(rec) == "ok" and rec["ip_version"] == 6 and rec["l4_off"] == 44
    rec = parse_frame(struct.pack(order + "I", 2) + bytes(IP() / UDP()), linktype=0)
    assert reason(rec) == "ok" and rec["ip_version"] == 4 and rec["ethertype"] == 0x0800


def test_bsd_null_and_openbsd_loop():
    assert reason(parse(Loopback(type=2) / IP() / TCP(), linktype=0)) == "ok"
    rec = parse(LoopbackOpenBSD(type=24) / IPv6() / TCP(sport=8, dport=9), linktype=108)
    assert reason(rec) == "ok" and (rec["ip_version"], rec["dport"]) == (6, 9)
    # 108 is network order only: a little-endian AF_INET is some other family
    assert reason(parse(Loopback(type=2) / IP() / TCP(), linktype=108)) == "not_ip"
    assert reason(parse(Loopback(type=7) / Raw(bytes(20)), linktype=0)) == "not_ip"  # OSI
    assert reason(parse_frame(b"\x02\x00\x00", linktype=0)) == "truncated_l2"


def test_unsupported_linktype():
    rec = parse(IP() / TCP(), linktype=105)  # 802.11
    assert reason(rec) == "unsupported_linktype" and rec["linktype"] == 105 and flags(rec) == 0


# ---------------------------------------------------------------------------------------------------------
# tunnels

OUT_SRC, OUT_DST, IN_SRC, IN_DST = "172.16.0.1", "172.16.0.2", "10.9.8.7", "10.6.5.4"


def _outer4():
    return eth() / IP(src=OUT_SRC, dst=OUT_DST, ttl=250)


def _inner_tcp():
    return IP(src=IN_SRC, dst=IN_DST, ttl=33) / TCP(sport=5555, dport=80, flags="PA") / Raw(b"i" * 12)


def assert_inner_tcp(rec, outer_version=4, outer_src=OUT_SRC, outer_dst=OUT_DST):
    assert reason(rec) == "ok"
    assert flags(rec) == F_L3 | F_L4
    assert bytes(rec["src_addr"]) == a4(IN_SRC) and bytes(rec["dst_addr"]) == a4(IN_DST)
    assert (rec["ip_version"], rec["proto"], rec["ttl"], rec["l3_len"]) == (4, 6, 33, 20 + 20 + 12)
    assert (rec["sport"], rec["dport"], rec["payload_len"]) == (5555, 80, 12)
    enc = a4 if outer_version == 4 else a6
    assert rec["outer_ip_version"] == outer_version
    assert bytes(rec["outer_src_addr"]) == enc(outer_src) and bytes(rec["outer_dst_addr"]) == enc(outer_dst)


def test_gre_ipv4():
    pkt = _outer4() / GRE() / _inner_tcp()
    rec = parse(pkt)
    assert_inner_tcp(rec)
    assert (rec["tunnel_type"], rec["tunnel_depth"], rec["tunnel_id"]) == (TUN["gre"], 1, 0)
    assert rec["l4_off"] == 14 + 20 + 4 + 20 and rec["ethertype"] == 0x0800


def test_gre_key_checksum_sequence():
    gre = GRE(chksum_present=1, key_present=1, key=0xABCDEF01, seqnum_present=1, sequence_number=99)
    rec = parse(_outer4() / gre / _inner_tcp())
    assert_inner_tcp(rec)
    assert rec["tunnel_id"] == 0xABCDEF01
    assert rec["l4_off"] == 14 + 20 + 16 + 20


def test_gre_ipv6_outer_ipv4_inner_clears_address_tail():
    pkt = eth() / IPv6(src="2001:db8::a", dst="2001:db8::b") / GRE() / _inner_tcp()
    rec = parse(pkt)
    assert_inner_tcp(rec, outer_version=6, outer_src="2001:db8::a", outer_dst="2001:db8::b")


def test_gre_inner_ipv6_and_mpls():
    rec = parse(_outer4() / GRE() / IPv6(src="::1", dst="::2") / UDP(sport=1, dport=2))
    assert reason(rec) == "ok" and rec["ip_version"] == 6 and bytes(rec["src_addr"]) == a6("::1")
    assert rec["ethertype"] == 0x86DD
    rec = parse(_outer4() / GRE(proto=0x8847) / MPLS(label=30, s=1) / _inner_tcp())
    assert_inner_tcp(rec)
    assert rec["mpls_depth"] == 1 and rec["tunnel_type"] == TUN["gre"]


def test_gre_teb_inner_ethernet_vlan_replaces_outer():
    pkt = (eth() / Dot1Q(vlan=7) / IP(src=OUT_SRC, dst=OUT_DST) / GRE(proto=0x6558)
           / eth() / Dot1Q(vlan=42) / _inner_tcp())
    rec = parse(pkt)
    assert_inner_tcp(rec)
    assert rec["tunnel_type"] == TUN["gre_teb"]
    assert (rec["vlan_id"], rec["vlan_depth"], rec["outer_vlan_id"]) == (42, 1, 0)
    rec = parse(eth() / Dot1Q(vlan=7) / IP(src=OUT_SRC, dst=OUT_DST) / GRE(proto=0x6558) / eth() / _inner_tcp())
    assert_inner_tcp(rec)
    assert (rec["vlan_id"], rec["vlan_depth"]) == (0, 0)  # the mirrored frame was untagged


def test_erspan_type2():
    pkt = (_outer4() / GRE(seqnum_present=1, sequence_number=4, proto=0x88BE)
           / ERSPAN_II(session_id=0x155, vlan=10, index=77) / eth() / _inner_tcp())
    rec = parse(pkt)
    assert_inner_tcp(rec)
    assert (rec["tunnel_type"], rec["tunnel_id"], rec["tunnel_depth"]) == (TUN["erspan2"], 0x155, 1)
    assert rec["l4_off"] == 14 + 20 + 8 + 8 + 14 + 20


def test_erspan_type3_with_and_without_platform_subheader():
    pkt = _outer4() / GRE(proto=0x22EB) / ERSPAN_III(session_id=0x2AA, o=0) / eth() / _inner_tcp()
    rec = parse(pkt)
    assert_inner_tcp(rec)
    assert (rec["tunnel_type"], rec["tunnel_id"]) == (TUN["erspan3"], 0x2AA)
    assert rec["l4_off"] == 14 + 20 + 4 + 12 + 14 + 20
    pkt = (_outer4() / GRE(proto=0x22EB) / ERSPAN_III(session_id=0x3FF, o=1)
           / ERSPAN_PlatformSpecific(platf_id=3, info1=5, info2=6) / eth() / _inner_tcp())
    rec = parse(pkt)
    assert_inner_tcp(rec)
    assert rec["tunnel_id"] == 0x3FF and rec["l4_off"] == 14 + 20 + 4 + 12 + 8 + 14 + 20
    pkt = _outer4() / GRE(proto=0x22EB) / ERSPAN_III(session_id=9, ft=2) / _inner_tcp()  # frame type IP
    rec = parse(pkt)
    assert_inner_tcp(rec)
    assert rec["l4_off"] == 14 + 20 + 4 + 12 + 20


def test_bad_tunnels_are_metered_as_outer_gre():
    def check(rec):
        assert reason(rec) == "unsupported_tunnel"
        assert flags(rec) == F_L3 and rec["proto"] == 47 and rec["tunnel_depth"] == 0
        assert bytes(rec["src_addr"]) == a4(OUT_SRC)

    check(parse(_outer4() / GRE_PPTP(call_id=5, seqnum_present=1) / PPP() / _inner_tcp()))  # GRE v1
    check(parse(_outer4() / GRE(routing_present=1, proto=0x0800) / _inner_tcp()))  # RFC 1701 routing
    check(parse(_outer4() / GRE(proto=0x88BE) / eth() / _inner_tcp()))  # ERSPAN type I (no sequence)
    check(parse(_outer4() / GRE(seqnum_present=1, proto=0x88BE) / ERSPAN_III() / eth() / _inner_tcp()))
    check(parse(_outer4() / GRE(proto=0x22EB) / ERSPAN_III(ft=1) / eth() / _inner_tcp()))


def test_truncated_gre_is_metered_as_outer():
    frame = bytes(_outer4() / GRE(key_present=1, key=5) / _inner_tcp())
    for cut in (34, 37, 38, 41):
        rec = parse_frame(frame[:cut], wire_len=len(frame))
        assert reason(rec) == "truncated_tunnel", cut
        assert flags(rec) & F_L3 and rec["proto"] == 47 and rec["tunnel_depth"] == 0
        assert rec["l3_len"] == len(frame) - 14
    frame = bytes(_outer4() / GRE(proto=0x22EB) / ERSPAN_III(o=1) / ERSPAN_PlatformSpecific() / eth())
    assert reason(parse_frame(frame[:38 + 12 + 4])) == "truncated_tunnel"


def test_gre_unknown_payload_is_ok_as_gre():
    rec = parse(_outer4() / GRE(proto=0x0806) / ARP())
    assert reason(rec) == "ok" and flags(rec) == F_L3 and rec["proto"] == 47 and rec["tunnel_depth"] == 0


def test_vxlan():
    pkt = (eth() / Dot1Q(vlan=5) / IP(src=OUT_SRC, dst=OUT_DST) / UDP(sport=49152, dport=4789)
           / VXLAN(vni=0x123456) / eth() / _inner_tcp())
    rec = parse(pkt)
    assert_inner_tcp(rec)
    assert (rec["tunnel_type"], rec["tunnel_id"], rec["tunnel_depth"]) == (TUN["vxlan"], 0x123456, 1)
    assert (rec["vlan_id"], rec["vlan_depth"]) == (0, 0)
    assert rec["l4_off"] == 18 + 20 + 8 + 8 + 14 + 20


def test_vxlan_without_i_flag_is_metered_as_udp():
    pkt = _outer4() / UDP(sport=49152, dport=4789) / VXLAN(flags=0, vni=1) / eth() / _inner_tcp()
    rec = parse(pkt)
    assert reason(rec) == "unsupported_tunnel"
    assert flags(rec) == F_L3 | F_L4 and (rec["sport"], rec["dport"]) == (49152, 4789)
    assert rec["tunnel_depth"] == 0 and bytes(rec["src_addr"]) == a4(OUT_SRC)


def test_vxlan_in_gre_two_levels():
    pkt = (_outer4() / GRE(key_present=1, key=77) / IP(src="192.168.0.1", dst="192.168.0.2")
           / UDP(sport=1, dport=4789) / VXLAN(vni=500) / eth() / _inner_tcp())
    rec = parse(pkt)
    assert_inner_tcp(rec)
    # tunnel_type and tunnel_id describe the outermost encapsulation
    assert (rec["tunnel_type"], rec["tunnel_id"], rec["tunnel_depth"]) == (TUN["gre"], 77, 2)


def _gre_nest(levels, inner):
    pkt = eth()
    for i in range(levels):
        pkt = pkt / IP(src=f"10.0.{i}.1", dst=f"10.0.{i}.2") / GRE()
    return pkt / inner


def test_tunnel_depth_bound():
    rec = parse(_gre_nest(MAX_TUNNEL, _inner_tcp()))
    assert_inner_tcp(rec, outer_src="10.0.0.1", outer_dst="10.0.0.2")
    assert rec["tunnel_depth"] == MAX_TUNNEL
    rec = parse(_gre_nest(MAX_TUNNEL + 1, _inner_tcp()))
    assert reason(rec) == "tunnel_too_deep"
    assert rec["tunnel_depth"] == MAX_TUNNEL and flags(rec) == F_L3 and rec["proto"] == 47
    assert bytes(rec["src_addr"]) == a4(f"10.0.{MAX_TUNNEL}.1")  # metered as the deepest GRE packet
    assert bytes(rec["outer_src_addr"]) == a4("10.0.0.1")


# ---------------------------------------------------------------------------------------------------------
# RoCEv2

RETH = struct.Struct(">QII")


def _roce(bth, tail=b"", ip=None, sport=50000):
    ip = IP(src="192.168.1.1", dst="192.168.1.2") if ip is None else ip
    pkt = eth() / ip / UDP(sport=sport, dport=4791) / bth
    return pkt / Raw(tail) if tail else pkt


# IBA 1.4 vol 1 table 38 (extension headers per opcode), written out here independently of the parser.
# (opcode, headers in order, {name: bytes}); payload follows.
ROCE_CASES = [
    (0x04, []),                               # RC SEND Only
    (0x06, ["RETH"]),                         # RC RDMA WRITE First
    (0x07, []),                               # RC RDMA WRITE Middle
    (0x0B, ["RETH", "IMMDT"]),                # RC RDMA WRITE Only with Immediate
    (0x0C, ["RETH"]),                         # RC RDMA READ Request
    (0x0D, ["AETH"]),                         # RC READ Response First
    (0x0E, []),                               # RC READ Response Middle
    (0x10, ["AETH"]),                         # RC READ Response Only
    (0x11, ["AETH"]),                         # RC Acknowledge
    (0x12, ["AETH", "ATOMICACKETH"]),         # RC ATOMIC Acknowledge
    (0x13, ["ATOMICETH"]),                    # RC CmpSwap
    (0x14, ["ATOMICETH"]),                    # RC FetchAdd
    (0x03, ["IMMDT"]),                        # RC SEND Last with Immediate
    (0x17, ["IETH"]),                         # RC SEND Only with Invalidate
    (0x26, ["RETH"]),                         # UC RDMA WRITE First
    (0x25, ["IMMDT"]),                        # UC SEND Only with Immediate
    (0x64, ["DETH"]),                         # UD SEND Only
    (0x65, ["DETH", "IMMDT"]),                # UD SEND Only with Immediate
]
EXT_BYTES = {
    "RETH": RETH.pack(0x00007FEE260FB000, 0x2B8, 65536),
    "AETH": bytes(AETH(syndrome=0x1F, msn=0xABCDEF)),
    "ATOMICACKETH": struct.pack(">Q", 0x1122334455667788),
    "ATOMICETH": struct.pack(">QIQQ", 0x1000, 0x77, 5, 6),
    "IMMDT": struct.pack(">I", 0xCAFEBABE),
    "IETH": struct.pack(">I", 0x1234),
    "DETH": struct.pack(">II", 0x80010000, 0x000ABC),
}


def _roce_case(opcode, headers, payload_len=64, pad=0, ip=None):
    tail = b"".join(EXT_BYTES[h] for h in headers) + b"P" * payload_len + bytes(pad)
    bth = BTH(opcode=opcode, dqpn=0x10000 + opcode, psn=0xFFFFF0 + (opcode & 7), padcount=pad, ackreq=1)
    return _roce(bth, tail, ip=ip)


@pytest.mark.parametrize("opcode,headers", ROCE_CASES, ids=[f"op{op:#04x}" for op, _ in ROCE_CASES])
@pytest.mark.parametrize("ipv", [4, 6])
def test_roce_opcodes(opcode, headers, ipv):
    ip = IPv6(src="fd00::1", dst="fd00::2") if ipv == 6 else None
    pad = 2 if headers == [] else 0
    pkt = _roce_case(opcode, headers, payload_len=64, pad=pad, ip=ip)
    rec = parse(pkt)
    assert reason(rec) == "ok"
    assert flags(rec) == F_L3 | F_L4 | F_ROCE
    assert rec["roce_opcode"] == opcode
    assert rec["roce_dqpn"] == 0x10000 + opcode and rec["roce_psn"] == 0xFFFFF0 + (opcode & 7)
    assert rec["roce_pad"] == pad and rec["roce_tver"] == 0 and rec["roce_pkey"] == 0xFFFF
    assert rec["roce_bth_flags"] == H["FT_BTH_ACKREQ"]
    want_ext = 0
    for h in headers:
        want_ext |= H["FT_ROCE_" + h]
    assert rec["roce_ext"] == want_ext
    assert rec["roce_payload_len"] == 64
    if "RETH" in headers:
        assert (rec["roce_reth_va"], rec["roce_reth_rkey"], rec["roce_reth_len"]) == (0x00007FEE260FB000, 0x2B8, 65536)
    else:
        assert rec["roce_reth_len"] == 0
    if "AETH" in headers:
        assert (rec["roce_aeth_syndrome"], rec["roce_aeth_msn"]) == (0x1F, 0xABCDEF)
    udp_payload = 12 + sum(len(EXT_BYTES[h]) for h in headers) + 64 + pad + 4
    assert rec["payload_len"] == udp_payload and (rec["sport"], rec["dport"]) == (50000, 4791)


def test_roce_bth_flags_and_pkey():
    bth = BTH(opcode=0x04, solicited=1, migreq=1, padcount=3, version=0, pkey=0x8001, fecn=1, becn=1,
              dqpn=0xABCDEF, ackreq=1, psn=0x123456)
    rec = parse(_roce(bth, b"d" * 13))
    assert reason(rec) == "ok"
    want = H["FT_BTH_SE"] | H["FT_BTH_MIG"] | H["FT_BTH_ACKREQ"] | H["FT_BTH_FECN"] | H["FT_BTH_BECN"]
    assert rec["roce_bth_flags"] == want
    assert (rec["roce_pad"], rec["roce_pkey"], rec["roce_dqpn"], rec["roce_psn"]) == (3, 0x8001, 0xABCDEF, 0x123456)
    assert rec["roce_payload_len"] == 13 - 3


def test_roce_cnp():
    rec = parse(_roce(cnp(0x33)))
    assert reason(rec) == "ok" and flags(rec) & F_ROCE
    assert (rec["roce_opcode"], rec["roce_dqpn"], rec["roce_ext"], rec["roce_payload_len"]) == (0x81, 0x33, 0, 0)
    assert rec["roce_bth_flags"] == H["FT_BTH_BECN"]


def test_roce_too_short():
    # UDP payload shorter than a BTH: metered as UDP
    rec = parse(_outer4() / UDP(sport=1000, dport=4791) / Raw(b"\x04" * 8))
    assert reason(rec) == "truncated_roce"
    assert flags(rec) == F_L3 | F_L4 and (rec["sport"], rec["dport"]) == (1000, 4791)
    # BTH present, UDP length ends inside the RETH (headers say so, not the capture)
    rec = parse(_roce(BTH(opcode=0x06, dqpn=5, psn=6), b"\x00" * 10))
    assert reason(rec) == "truncated_roce"
    assert flags(rec) & F_ROCE and rec["roce_opcode"] == 0x06 and rec["roce_ext"] == 0
    assert (rec["roce_dqpn"], rec["roce_psn"], rec["roce_payload_len"]) == (5, 6, 0)
    # snap length cuts inside the AETH: BTH fields valid, payload from the lengths
    frame = bytes(_roce_case(0x10, ["AETH"], payload_len=1000))
    rec = parse_frame(frame[:42 + 12 + 2], wire_len=len(frame))
    assert reason(rec) == "truncated_roce"
    assert rec["roce_ext"] == 0 and rec["roce_payload_len"] == 1000


ROCE_TSHARK_FIELDS = ["infiniband.bth.opcode", "infiniband.bth.destqp", "infiniband.bth.psn",
                      "infiniband.bth.padcnt", "infiniband.bth.p_key", "infiniband.bth.se",
                      "infiniband.bth.a", "infiniband.aeth.syndrome", "infiniband.aeth.msn",
                      "infiniband.reth.va", "infiniband.reth.r_key", "infiniband.reth.dmalen",
                      "udp.srcport", "udp.dstport"]


def _tshark_rows(path):
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    cmd = ["tshark", "-n", "-r", str(path), "-d", "udp.port==4791,infiniband", "-T", "fields",
           "-E", "separator=|", "-E", "occurrence=f"]
    for f in ROCE_TSHARK_FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [dict(zip(ROCE_TSHARK_FIELDS, line.split("|"))) for line in out.splitlines()]


def _assert_matches_tshark(rec, row):
    def num(name):
        return int(row[name], 0)

    assert rec["roce_opcode"] == num("infiniband.bth.opcode")
    assert rec["roce_dqpn"] == num("infiniband.bth.destqp")
    assert rec["roce_psn"] == num("infiniband.bth.psn")
    assert rec["roce_pad"] == num("infiniband.bth.padcnt")
    assert rec["roce_pkey"] == num("infiniband.bth.p_key")
    assert bool(rec["roce_bth_flags"] & H["FT_BTH_SE"]) == bool(num("infiniband.bth.se"))
    assert bool(rec["roce_bth_flags"] & H["FT_BTH_ACKREQ"]) == bool(num("infiniband.bth.a"))
    assert (rec["sport"], rec["dport"]) == (num("udp.srcport"), num("udp.dstport"))
    if row["infiniband.aeth.syndrome"]:
        assert rec["roce_ext"] & H["FT_ROCE_AETH"]
        assert rec["roce_aeth_syndrome"] == num("infiniband.aeth.syndrome")
        assert rec["roce_aeth_msn"] == num("infiniband.aeth.msn")
    else:
        assert not rec["roce_ext"] & H["FT_ROCE_AETH"]
    if row["infiniband.reth.dmalen"]:
        assert rec["roce_ext"] & H["FT_ROCE_RETH"]
        assert rec["roce_reth_len"] == num("infiniband.reth.dmalen")
        assert rec["roce_reth_rkey"] == num("infiniband.reth.r_key")
        assert rec["roce_reth_va"] == num("infiniband.reth.va")
    else:
        assert not rec["roce_ext"] & H["FT_ROCE_RETH"]


@pytest.mark.tshark
def test_roce_against_tshark(tmp_path):
    pkts = [_roce_case(op, hdrs, ip=IPv6() if op & 1 else None) for op, hdrs in ROCE_CASES]
    pkts += [
        _roce(BTH(opcode=0x0C, dqpn=0x11, psn=5557091, ackreq=1), RETH.pack(0x1000, 0x99, 1 << 20)),
        _roce(BTH(opcode=0x11, dqpn=0x22, psn=78) / AETH(syndrome=0x60, msn=0x123456)),
        _roce(cnp(0x44)),
        _roce(BTH(opcode=0x06, dqpn=0x55, psn=1, solicited=1, padcount=1, pkey=0x7FFF),
              RETH.pack(0xFFFF0000FFFF0000, 0xDEAD, 4096) + b"x" * 33),
    ]
    path = tmp_path / "roce.pcap"
    wrpcap(str(path), pkts)
    rows = _tshark_rows(path)
    assert len(rows) == len(pkts)
    for pkt, row in zip(pkts, rows):
        rec = parse(pkt)
        assert flags(rec) & F_ROCE
        _assert_matches_tshark(rec, row)


def _shared_data():
    env = os.environ.get("FLOWTAP_SHARED_DATA")
    return Path(env) if env else ROOT / ".." / "shared" / "data"


def test_softroce_read_request_capture():
    path = _shared_data() / "roce" / "softroce_read_request.pcap"
    if not path.exists():
        pytest.skip(f"{path} not found (set FLOWTAP_SHARED_DATA to the shared data directory)")
    with RawPcapReader(str(path)) as reader:
        linktype = reader.linktype
        frames = [data for data, _meta in reader]
    assert len(frames) == 1
    rec = parse_frame(frames[0], linktype=linktype)
    assert reason(rec) == "ok" and flags(rec) & F_ROCE
    assert rec["roce_opcode"] == 0x0C  # RC RDMA READ Request
    assert rec["roce_dqpn"] == 0x11 and rec["roce_psn"] == 5557091
    assert rec["roce_reth_len"] == 65536 and rec["roce_ext"] == H["FT_ROCE_RETH"]
    assert (rec["sport"], rec["dport"]) == (57236, 4791)
    assert bytes(rec["src_addr"]) == a4("192.168.56.129") and bytes(rec["dst_addr"]) == a4("192.168.56.131")
    assert rec["roce_payload_len"] == 0  # a READ request carries no data
    if shutil.which("tshark"):
        rows = _tshark_rows(path)
        _assert_matches_tshark(rec, rows[0])


# ---------------------------------------------------------------------------------------------------------
# every exit reason, by name

REASON_CASES = {
    "ok": (eth() / IP() / TCP(), 1),
    "truncated_l2": (bytes(eth() / IP())[:10], 1),
    "unsupported_linktype": (IP() / TCP(), 9),  # PPP
    "not_ip": (eth() / ARP(), 1),
    "vlan_too_deep": (_vlan_stack(MAX_VLAN + 1), 1),
    "mpls_too_deep": (_mpls_stack(MAX_MPLS + 1, IP()), 1),
    "mpls_unknown_payload": (_mpls_stack(1, EoMCW() / eth()), 1),
    "truncated_l3": (bytes(eth() / IP() / TCP())[:30], 1),
    "bad_ip_version": (eth(type=0x86DD) / IP() / TCP(), 1),
    "bad_ipv4_ihl": (eth() / IP(ihl=4) / TCP(), 1),
    "bad_ip_length": (eth() / IP(len=19) / TCP(), 1),
    "ipv6_ext_too_deep": (_ipv6_dstopt_chain(MAX_IPV6_EXT + 1), 1),
    "truncated_ipv6_ext": (bytes(eth() / IPv6() / IPv6ExtHdrHopByHop() / TCP())[:58], 1),
    "ip_fragment": (eth() / IP(frag=10, proto=6) / Raw(bytes(16)), 1),
    "truncated_l4": (bytes(eth() / IP() / TCP())[:40], 1),
    "bad_tcp_data_offset": (eth() / IP() / TCP(dataofs=4), 1),
    "bad_udp_length": (eth() / IP() / UDP(len=4), 1),
    "tunnel_too_deep": (_gre_nest(MAX_TUNNEL + 1, IP() / UDP()), 1),
    "truncated_tunnel": (bytes(_outer4() / GRE(key_present=1) / IP())[:40], 1),
    "unsupported_tunnel": (_outer4() / GRE_PPTP() / PPP(), 1),
    "truncated_roce": (_outer4() / UDP(dport=4791) / Raw(bytes(11)), 1),
    "bad_tcp_options": (eth() / IP() / TCP(dataofs=6) / Raw(b"\x08\x00\x00\x00"), 1),
    "bad_ipv4_options": (eth() / IP(ihl=6, proto=17) / Raw(b"\x44\x00\x00\x00") / UDP(), 1),
}


def test_every_reason_has_a_case():
    assert set(REASON_CASES) == set(REASON_NAMES)


@pytest.mark.parametrize("name", list(REASON_CASES))
def test_reason_case(name):
    frame, linktype = REASON_CASES[name]
    assert reason(parse_frame(bytes(frame), linktype=linktype)) == name


# ---------------------------------------------------------------------------------------------------------
# frames cut at every byte offset


def _tcp_vlan_frame():
    opts = [("MSS", 1400), ("SAckOK", b""), ("Timestamp", (11, 22)), ("NOP", None), ("WScale", 9)]
    pkt = eth() / Dot1Q(vlan=7) / IP() / TCP(sport=1, dport=2, options=opts) / Raw(b"t" * 20)
    doff = Ether(bytes(pkt))[TCP].dataofs * 4
    l4 = 14 + 4 + 20
    # (first offset at which the cut no longer falls inside this part, reason while it does)
    bounds = [(18, "truncated_l2"), (l4, "truncated_l3"), (l4 + doff, "truncated_l4")]
    return bytes(pkt), bounds, l4, l4 + doff


def _roce_ipv6_frame():
    pkt = _roce_case(0x06, ["RETH"], payload_len=64, ip=IPv6(src="fd00::1", dst="fd00::2"))
    bth = 14 + 40 + 8
    bounds = [(14, "truncated_l2"), (54, "truncated_l3"), (bth, "truncated_l4"), (bth + 12 + 16, "truncated_roce")]
    return bytes(pkt), bounds, 54, bth


def _vxlan_frame():
    opts = [("NOP", None), ("NOP", None), ("Timestamp", (5, 6))]
    pkt = (_outer4() / UDP(sport=40000, dport=4789) / VXLAN(vni=42) / eth() / IP(src=IN_SRC, dst=IN_DST)
           / TCP(sport=3, dport=4, options=opts) / Raw(b"v" * 10))
    bounds = [(14, "truncated_l2"), (34, "truncated_l3"), (42, "truncated_l4"), (50, "truncated_tunnel"),
              (64, "truncated_l2"), (84, "truncated_l3"), (84 + 32, "truncated_l4")]
    return bytes(pkt), bounds, 34, 84 + 32


def _expected_reason(bounds, cut):
    for end, name in bounds:
        if cut < end:
            return name
    return "ok"


def test_cut_tcp_over_vlan_every_offset():
    frame, bounds, l3_at, l4_end = _tcp_vlan_frame()
    for cut in range(len(frame) + 1):
        rec = parse_frame(frame[:cut], wire_len=len(frame))
        assert reason(rec) == _expected_reason(bounds, cut), cut
        assert bool(flags(rec) & F_L3) == (cut >= l3_at), cut
        assert bool(flags(rec) & F_L4) == (cut >= l4_end), cut
        assert bool(flags(rec) & F_TRUNC) == (cut < len(frame)), cut
        if cut >= l4_end:
            assert (rec["tcp_mss"], rec["tcp_wscale"], rec["tcp_tsval"], rec["tcp_tsecr"]) == (1400, 9, 11, 22)
            assert rec["payload_cap"] == cut - l4_end and rec["payload_len"] == 20


def test_cut_roce_over_ipv6_every_offset():
    frame, bounds, l3_at, bth = _roce_ipv6_frame()
    for cut in range(len(frame) + 1):
        rec = parse_frame(frame[:cut], wire_len=len(frame))
        assert reason(rec) == _expected_reason(bounds, cut), cut
        assert bool(flags(rec) & F_L3) == (cut >= l3_at), cut
        assert bool(flags(rec) & F_L4) == (cut >= bth), cut
        assert bool(flags(rec) & F_ROCE) == (cut >= bth + 12), cut
        assert bool(rec["roce_ext"]) == (cut >= bth + 28), cut
        if cut >= bth + 12:
            assert rec["roce_opcode"] == 0x06 and rec["roce_payload_len"] == 64
        if cut >= bth + 28:
            assert rec["roce_reth_len"] == 65536


def test_cut_vxlan_every_offset():
    frame, bounds, l3_at, l4_end = _vxlan_frame()
    for cut in range(len(frame) + 1):
        rec = parse_frame(frame[:cut], wire_len=len(frame))
        want = _expected_reason(bounds, cut)
        assert reason(rec) == want, cut
        inner = cut >= 50
        assert rec["tunnel_depth"] == int(inner), cut
        if not inner:
            assert bool(flags(rec) & F_L3) == (cut >= l3_at), cut
            assert bool(flags(rec) & F_L4) == (cut >= 42), cut
        else:
            assert rec["tunnel_type"] == TUN["vxlan"] and rec["tunnel_id"] == 42
            assert bytes(rec["outer_src_addr"]) == a4(OUT_SRC)
            assert bool(flags(rec) & F_L3) == (cut >= 84), cut
            assert bool(flags(rec) & F_L4) == (cut >= l4_end), cut
            if cut >= 84:
                assert bytes(rec["src_addr"]) == a4(IN_SRC)
            else:
                assert bytes(rec["src_addr"]) == bytes(16) and rec["sport"] == 0


# ---------------------------------------------------------------------------------------------------------
# robustness: mutated frames never crash and keep the record's invariants


def _representative_frames():
    return [
        (_tcp_vlan_frame()[0], 1), (_roce_ipv6_frame()[0], 1), (_vxlan_frame()[0], 1),
        (bytes(_ipv6_dstopt_chain(3)), 1),
        (bytes(_outer4() / GRE(proto=0x22EB) / ERSPAN_III(o=1) / ERSPAN_PlatformSpecific() / eth() / _inner_tcp()), 1),
        (bytes(_mpls_stack(3, IPv6() / IPv6ExtHdrFragment(nh=17, m=1) / UDP())), 1),
        (bytes(CookedLinuxV2() / IP() / ICMP()), 276),
        (bytes(_roce_case(0x12, ["AETH", "ATOMICACKETH"])), 1),
    ]


def _mutations(seed=1234, per_frame=1500):
    rng = random.Random(seed)
    for frame, linktype in _representative_frames():
        for _ in range(per_frame):
            b = bytearray(frame)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            yield bytes(b[:rng.randint(0, len(b))] if rng.random() < 0.3 else b), linktype, len(frame)


def test_mutated_frames_keep_invariants():
    n = 0
    for frame, linktype, wire in _mutations():
        rec = parse_frame(frame, linktype=linktype, wire_len=wire)
        n += 1
        f = flags(rec)
        assert 0 <= rec["reason"] < len(REASON_NAMES)
        if f & F_L4:
            assert f & F_L3
            assert rec["payload_off"] + rec["payload_cap"] <= len(frame)
        if f & F_L3:
            assert rec["ip_version"] in (4, 6)
        if reason(rec) == "ok":
            assert f & F_L3
        assert rec["vlan_depth"] <= MAX_VLAN and rec["mpls_depth"] <= MAX_MPLS
        assert rec["tunnel_depth"] <= MAX_TUNNEL and rec["tcp_doff"] <= 60
        assert rec["tcp_sack_count"] <= 4
    assert n > 10000


# ---------------------------------------------------------------------------------------------------------
# the header compiled on its own with sanitizers: exact-size buffers, caller-set direction

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ft_parse.h"

/* stdin: records of linktype(u32) wire_len(u32) direction(u8) caplen(u32) bytes; stdout: one line each */
int main(void)
{
    unsigned char hdr[13];
    while (fread(hdr, 1, sizeof(hdr), stdin) == sizeof(hdr)) {
        ft_u32 linktype, wire, cap;
        memcpy(&linktype, hdr, 4);
        memcpy(&wire, hdr + 4, 4);
        memcpy(&cap, hdr + 9, 4);
        ft_u8 *buf = malloc(cap ? cap : 1);
        if (!buf || fread(buf, 1, cap, stdin) != cap)
            return 2;
        struct ft_pkt p;
        memset(&p, 0, sizeof(p));
        p.wire_len = wire;
        p.cap_len = cap;
        p.direction = hdr[8];
        if (cap < wire)
            p.flags |= FT_F_TRUNC;
        int r = ft_parse(buf, buf + cap, linktype, &p);
        printf("%d %u %u %u %u %u %u\n", r, p.reason, p.flags, p.direction, p.sport, p.dport, p.tunnel_depth);
        free(buf);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def build_harness(tmp_path_factory):
    """Returns build(*cflags) -> run(items): the header compiled on its own with -Wextra -Werror and ASan/UBSan;
    run feeds (frame, linktype, wire_len, direction) items and returns one tuple of ints per item."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("harness")
    src = d / "harness.c"
    src.write_text(HARNESS)
    built = {}

    def build(*cflags):
        if cflags in built:
            return built[cflags]
        exe = d / f"harness{len(built)}"
        cmd = [cc, "-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function",
               "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-I", str(ROOT / "ext"), *cflags,
               str(src), "-o", str(exe)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 and "sanitize" in res.stderr:
            pytest.skip("compiler lacks address/undefined sanitizers")
        assert res.returncode == 0, res.stderr

        def run(items):
            blob = b"".join(struct.pack("<IIBI", lt, wire, direction, len(f)) + f
                            for f, lt, wire, direction in items)
            out = subprocess.run([str(exe)], input=blob, capture_output=True, check=True).stdout.decode()
            return [tuple(int(x) for x in line.split()) for line in out.splitlines()]

        built[cflags] = run
        return run

    return build


@pytest.fixture(scope="module")
def harness(build_harness):
    return build_harness()


def test_sll_keeps_direction_set_by_caller(harness):
    sll_out = bytes(CookedLinux(pkttype=4) / IP() / UDP(sport=1, dport=2))
    sll2_in = bytes(CookedLinuxV2(pkttype=0) / IP() / UDP(sport=1, dport=2))
    rows = harness([(sll_out, 113, len(sll_out), DIR_INGRESS), (sll_out, 113, len(sll_out), 0),
                    (sll2_in, 276, len(sll2_in), DIR_EGRESS), (sll2_in, 276, len(sll2_in), 0)])
    assert [row[3] for row in rows] == [DIR_INGRESS, DIR_EGRESS, DIR_EGRESS, DIR_INGRESS]
    assert all(row[0] == row[1] == 0 for row in rows)


def test_sanitized_build_agrees_on_cut_and_mutated_frames(harness):
    items = []
    for frame, linktype in _representative_frames():
        items += [(frame[:cut], linktype, len(frame), 0) for cut in range(len(frame) + 1)]
    items += [(f, lt, wire, 0) for f, lt, wire in _mutations(seed=99, per_frame=500)]
    items += [(bytes(frame), lt, len(bytes(frame)), 0) for frame, lt in REASON_CASES.values()]
    rows = harness(items)
    assert len(rows) == len(items)
    for (frame, lt, wire, _d), row in zip(items, rows):
        rec = parse_frame(frame, linktype=lt, wire_len=wire)
        assert row[0] == row[1] == rec["reason"]
        assert (row[2], row[4], row[5]) == (flags(rec), rec["sport"], rec["dport"])


@pytest.mark.parametrize("limit", range(MAX_TUNNEL))
def test_build_time_tunnel_limit(build_harness, limit):
    """FT_PARSE_MAX_TUNNEL lets a BPF build unwrap fewer levels; deeper frames get tunnel_too_deep."""
    run = build_harness(f"-DFT_PARSE_MAX_TUNNEL={limit}")
    ok, deep = bytes(_gre_nest(limit, _inner_tcp())), bytes(_gre_nest(limit + 1, _inner_tcp()))
    (r_ok, r_deep) = run([(ok, 1, len(ok), 0), (deep, 1, len(deep), 0)])
    assert REASON_NAMES[r_ok[0]] == "ok" and r_ok[6] == limit
    assert REASON_NAMES[r_deep[0]] == "tunnel_too_deep" and r_deep[6] == limit
