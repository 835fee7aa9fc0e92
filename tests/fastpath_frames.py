"""Frames at every edge of the fast path (ext/ft_parse_fast.h), shared by the live parity test (BPF entry
programs) and tests/test_parse_fast.py (the replay reader)."""
from __future__ import annotations


def edge_frames():
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
