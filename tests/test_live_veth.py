"""Live capture on real veth traffic between network namespaces (root only): the flow records' counters
equal what was sent, by the senders' own accounting (TCP_INFO, datagram and echo counts) and arithmetic."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest

from test_live_common import (PY, Capture, VethPair, in_ns, live_skip_reason, read_flows, tcp_exchange,
                              tcp_info)

pytestmark = [pytest.mark.root, pytest.mark.skipif(live_skip_reason() is not None,
                                                   reason=live_skip_reason() or "")]

# Linux's SYN and SYN/ACK carry MSS(4) SACK-permitted(2) timestamps(10) NOP(1) window scale(3) = 20 option
# bytes; every later segment carries NOP NOP timestamps = 12. Headers: IPv4 20 / IPv6 40, TCP 20.
SYN_EXTRA = 20 - 12


def _flow(table, proto, port=None):
    rows = [r for r in table.to_pylist() if r["protocol"] == proto and (port is None or r["dst_port"] == port)]
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_tcp_counters_equal_the_senders_tcp_info(tmp_path, v6):
    up, down = 300_000, 70_000
    with VethPair() as p:
        out = tmp_path / "tcp.arrows"
        with Capture(p.ns_a, [p.if_a], out) as cap:
            # 64 KiB writes: TCP builds GSO super-packets that tc egress sees before they are segmented
            cli, srv = tcp_exchange(p, up, down, v6=v6)
            summary = cap.stop()
    assert cap.first_line.startswith(f"Capturing on {p.if_a} (tc ingress+egress")
    ci = tcp_info(cli["tcp_info"])
    assert cli["sent"] == up and cli["received"] == down and srv["received"] == up
    assert ci["total_retrans"] == 0
    f = _flow(read_flows(out), 6, 5201)
    hdr = (40 if v6 else 20) + 20 + 12
    assert (f["src_ip"], f["dst_ip"]) == ((p.ip6_a, p.ip6_b) if v6 else (p.ip_a, p.ip_b))
    assert f["src_packets"] == ci["segs_out"]
    assert f["dst_packets"] == ci["segs_in"]
    assert f["src_bytes"] == up + hdr * ci["segs_out"] + SYN_EXTRA
    assert f["dst_bytes"] == down + hdr * ci["segs_in"] + SYN_EXTRA
    live = summary["counters"]["live"]
    assert live["ring_full_drops"] == 0 and live["tail_call_failed"] == 0
    assert live["meters_packets_seen"] == live["kernel_packets"]  # full coverage


UDP_SEND = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(bytes([i % 256]) * int(sys.argv[4]), (sys.argv[1], int(sys.argv[2])))
'''

ICMP_ECHO = r'''
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2)
n, size, got = int(sys.argv[2]), int(sys.argv[3]), 0
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
for seq in range(n):
    body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + b"p" * size
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    s.sendto(body, (sys.argv[1], 0))
    while True:
        pkt = s.recv(4096)
        if pkt[20] == 0 and struct.unpack("!H", pkt[26:28])[0] == seq:
            got += 1; break
print(got)
'''


UDP_SINK = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(60)
print("ready", flush=True)
s.recv(65536); n = 1; s.settimeout(1.0)
try:
    while True:
        s.recv(65536); n += 1
except socket.timeout:
    pass
print(n, flush=True)
'''


def test_udp_and_icmp_counters_after_sigterm(tmp_path):
    n_udp, size = 500, 700
    n_icmp, isize = 7, 100
    with VethPair() as p:
        out = tmp_path / "udp.arrows"
        sink = subprocess.Popen(["ip", "netns", "exec", p.ns_b, PY, "-c", UDP_SINK, p.ip_b, "9999"],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout.readline().strip() == "ready"
            with Capture(p.ns_a, [p.if_a], out) as cap:
                r = in_ns(p.ns_a, PY, "-c", ICMP_ECHO, p.ip_b, n_icmp, isize)
                in_ns(p.ns_a, PY, "-c", UDP_SEND, p.ip_b, 9999, n_udp, size)
                summary = cap.stop(signal.SIGTERM)  # SIGTERM too leaves a complete output
            received = int(sink.communicate(timeout=30)[0].split()[-1])
        finally:
            if sink.poll() is None:
                sink.kill()
    assert int(r.stdout) == n_icmp
    assert received == n_udp
    assert summary["stopped_by"] == "SIGTERM"
    t = read_flows(out)
    u = _flow(t, 17, 9999)
    assert (u["src_packets"], u["dst_packets"]) == (n_udp, 0)
    assert u["src_bytes"] == n_udp * (size + 8 + 20)
    icmp = [r for r in t.to_pylist() if r["protocol"] == 1 and r["src_ip"] == p.ip_a]
    echo = [r for r in icmp if r["icmp_type"] == 8]
    assert len(echo) == 1, icmp
    e = echo[0]
    assert (e["src_packets"], e["dst_packets"]) == (n_icmp, n_icmp)
    assert e["src_bytes"] == e["dst_bytes"] == n_icmp * (isize + 8 + 20)


ROCE_SEND = r'''
import sys
from scapy.all import Ether, IP, UDP, Raw, sendp, conf
from scapy.contrib.roce import BTH, AETH
conf.verb = 0
frames = []
n = int(sys.argv[4])
for i in range(n):
    frames.append(Ether(src="02:00:00:00:00:01", dst=sys.argv[3]) / IP(src=sys.argv[1], dst=sys.argv[2]) /
                  UDP(sport=49152, dport=4791) / BTH(opcode=4, dqpn=0x11, psn=1000 + i) / Raw(b"d" * 256))
sendp(frames, iface=sys.argv[5])
print(sum(len(bytes(f)) - 14 for f in frames))
'''


@pytest.mark.parametrize("mode", ["tc", "xdp"])
def test_roce_frames_counted(tmp_path, mode):
    n = 40
    with VethPair() as p:
        mac_b = json.loads(in_ns(p.ns_b, "ip", "-j", "link", "show", p.if_b).stdout)[0]["address"]
        out = tmp_path / f"roce-{mode}.arrows"
        # capture where the frames arrive: B's end (xdp sees ingress only)
        with Capture(p.ns_b, [p.if_b], out, mode=mode) as cap:
            r = in_ns(p.ns_a, PY, "-c", ROCE_SEND, "10.9.9.1", "10.9.9.2", mac_b, n, p.if_a)
            summary = cap.stop()
    if mode == "xdp":
        assert "(xdp " in cap.first_line
    ip_bytes = int(r.stdout)
    f = _flow(read_flows(out), 17, 4791)
    assert (f["src_ip"], f["dst_ip"], f["src_port"]) == ("10.9.9.1", "10.9.9.2", 49152)
    assert (f["src_packets"], f["dst_packets"]) == (n, 0)
    assert f["src_bytes"] == ip_bytes == n * (20 + 8 + 12 + 256 + 4)
    assert summary["counters"]["live"]["kernel_parse_reasons"].get("ok", 0) >= n
