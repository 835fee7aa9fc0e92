"""Build the bundled sample capture (samples/sample.pcap) and its ground truth (samples/sample.truth.json).

    python -m probe.samplegen samples/sample.pcap --truth samples/sample.truth.json

Every byte is fixed: addresses, ports, initial sequence numbers, PSNs and payloads come from constants and
from a SHA-256 counter stream over SEED (not Python's `random`, whose algorithms may change), and every
timestamp is BASE_TS_NS plus a scripted offset. No wall clock, no network. Regenerating therefore gives a
byte-identical file for a given scapy version; tests/test_samplegen.py checks that against the committed copy.

The capture is what a tap beside a top-of-rack switch would record (Ethernet, nanosecond pcap). It holds:

  tcp_bulk     TCP upload with MSS/WS/SACK-perm/TS, one segment dropped before the probe (seen only as its fast
               retransmission after three duplicate ACKs with SACK), one tail segment lost after the probe
               (seen twice: the original, then its retransmission after an RTO of about 200 ms), FIN close
  http         HTTP/1.1 GET (Host, User-Agent) and a 200 response, IPv4
  tls          TLS 1.3 ClientHello (SNI, ALPN h2) and ServerHello, then encrypted records, IPv6
  dns_udp      DNS A query and response over UDP
  dns_tcp      DNS A query and response over TCP (RFC 1035 two-byte length prefix)
  roce_req     RoCEv2 RC requester -> responder: RDMA WRITE first/middle/last with RETH, one PSN dropped before
               the probe, go-back-N retransmission after a NAK, ECN CE marks, an RDMA READ request.
               The PSNs wrap through 2^24 on purpose.
  roce_resp    RoCEv2 responder -> requester: coalesced ACKs (AETH), the NAK (PSN sequence error), a CNP and
               the multi-packet READ response. RoCEv2 puts each QP's own UDP source port on what it sends
               (both directions go to UDP 4791), so one RC connection is two UDP 5-tuples; the truth lists
               both as flows and ties them together under "roce_connections".
  icmp_echo    ICMP echo request and reply
  vxlan_redis  a TCP conversation (Redis PING/PONG) between two VMs carried in VXLAN (UDP 4789, VNI 5001)
  vlan_ntp     an NTP client/server exchange in 802.1Q VLAN 100

The truth is arithmetic over the packets built here (never the output of flowtap): per flow the 5-tuple,
VLAN, tunnel, packets and bytes per direction, where bytes are IP octets as IPFIX octetDeltaCount counts
them (IPv4 total length, IPv6 payload length + 40; the inner packet for tunnelled flows), and what the
scenario was built to contain (retransmitted TCP segments, missing RoCE PSNs, ...).
"""
import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRROPT, dns_compress
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from scapy.contrib.roce import BTH, cnp

SEED = b"flowtap-sample-v1"
BASE_TS_NS = 1714564800 * 10**9  # 2024-05-01T12:00:00Z
TRUTH_FORMAT = 1
PCAP_SNAPLEN = 262144
LINKTYPE_ETHERNET = 1

US = 1_000
MS = 1_000_000

# RoCEv2 (IBTA annex A17) constants
ROCE_UDP_PORT = 4791
RC_RDMA_WRITE_FIRST = 0x06
RC_RDMA_WRITE_MIDDLE = 0x07
RC_RDMA_WRITE_LAST = 0x08
RC_RDMA_READ_REQUEST = 0x0C
RC_RDMA_READ_RESPONSE_FIRST = 0x0D
RC_RDMA_READ_RESPONSE_MIDDLE = 0x0E
RC_RDMA_READ_RESPONSE_LAST = 0x0F
RC_ACKNOWLEDGE = 0x11
AETH_ACK_NO_CREDIT = 0x1F     # ACK, credit count field 0b11111 = "invalid", as RDMA NICs send it
AETH_NAK_PSN_SEQ_ERR = 0x60   # NAK, code 0: PSN sequence error
PSN_MOD = 1 << 24

# DSCP 26 with ECT(0) for RoCE data, as the common lossless-class setups mark it; CE = 0b11
TOS_ROCE_ECT0 = (26 << 2) | 0b10
TOS_ROCE_CE = (26 << 2) | 0b11
TOS_CNP = 48 << 2


def byte_stream(label, n):
    """Return n pseudo-random bytes for `label`: SHA-256 in counter mode over SEED, stable across versions."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(SEED + b"/" + label.encode() + struct.pack(">I", counter)).digest()
        counter += 1
    return bytes(out[:n])


def u32(label):
    return struct.unpack(">I", byte_stream(label, 4))[0]


class Sample:
    """Collects frames with their time, flow and direction, and the per-flow facts for the truth."""

    def __init__(self):
        self.frames = []      # (ts_ns, order, frame bytes, flow name, "src"/"dst", ip octets)
        self.flows = {}       # name -> truth dict (insertion order = order of definition)
        self.connections = []
        self._order = 0

    def flow(self, name, **facts):
        self.flows[name] = facts
        return name

    def emit(self, ts_ns, frame, flow, direction, ip_layer):
        """Record one frame. ip_layer is the (inner) IP packet whose octets the flow counts."""
        raw = bytes(frame)
        if len(raw) < 60:
            # Frames received from the wire arrive padded to the Ethernet minimum: the IP length, not the
            # frame length, must be what the meter counts.
            raw += b"\x00" * (60 - len(raw))
        ip_octets = len(bytes(ip_layer))
        self.frames.append((ts_ns, self._order, raw, flow, direction, ip_octets))
        self._order += 1


def ether(src_mac, dst_mac, l3, vlan=None):
    if vlan is None:
        return Ether(src=src_mac, dst=dst_mac) / l3
    return Ether(src=src_mac, dst=dst_mac) / Dot1Q(vlan=vlan, prio=0) / l3


class Host:
    def __init__(self, ip, mac, ttl=64, ip_id=0, flowlabel=0):
        self.ip = ip
        self.mac = mac
        self.ttl = ttl
        self.ip_id = ip_id & 0xFFFF
        self.flowlabel = flowlabel

    @property
    def v6(self):
        return ":" in self.ip

    def ip_header(self, dst, **kw):
        """IPv4 (DF set, per-host incrementing id, as Linux does for connected sockets) or IPv6 header."""
        if self.v6:
            return IPv6(src=self.ip, dst=dst.ip, hlim=self.ttl, fl=self.flowlabel, tc=kw.get("tos", 0))
        pkt = IP(src=self.ip, dst=dst.ip, ttl=self.ttl, id=self.ip_id, flags="DF", tos=kw.get("tos", 0))
        self.ip_id = (self.ip_id + 1) & 0xFFFF
        return pkt


class TcpConn:
    """A TCP connection between `cli` (the SYN sender) and `srv`, written as a script of segments.

    Sequence numbers are given relative to each side's ISN (the SYN takes relative 0), as in Wireshark's
    relative view; timestamps follow Linux (1 ms TSval clock, TSecr echoes the peer's latest TSval).
    """

    def __init__(self, sample, flow, cli, srv, sport, dport, t0_ns, wrap=None, vlan=None):
        self.s = sample
        self.flow = flow
        self.side = {"src": cli, "dst": srv}
        self.port = {"src": sport, "dst": dport}
        self.t0 = t0_ns
        self.isn = {"src": u32(flow + "/isn/src"), "dst": u32(flow + "/isn/dst")}
        self.ts_base = {"src": u32(flow + "/ts/src"), "dst": u32(flow + "/ts/dst")}
        self.last_tsval = {"src": 0, "dst": 0}
        self.nxt = {"src": 0, "dst": 0}   # next relative sequence number each side sends
        self.wrap = wrap                   # callable(l3, direction) -> frame, else plain Ethernet
        self.vlan = vlan

    @staticmethod
    def other(d):
        return "dst" if d == "src" else "src"

    def seg(self, t_ns, d, flags, data=b"", seq=None, ack=None, win=502, sack=(), syn_opts=None):
        """Emit one segment from side d at t0 + t_ns. seq/ack default to in-order values."""
        o = self.other(d)
        me, peer = self.side[d], self.side[o]
        if seq is None:
            seq = self.nxt[d]
        if ack is None:
            ack = self.nxt[o]
        abs_t = self.t0 + t_ns
        tsval = (self.ts_base[d] + abs_t // MS) & 0xFFFFFFFF
        tsecr = self.last_tsval[o]
        self.last_tsval[d] = tsval
        if syn_opts is not None:
            opts = [("MSS", syn_opts["mss"]), ("SAckOK", b""), ("Timestamp", (tsval, tsecr)),
                    ("NOP", None), ("WScale", syn_opts["wscale"])]
        else:
            opts = [("NOP", None), ("NOP", None), ("Timestamp", (tsval, tsecr))]
            if sack:
                opts += [("NOP", None), ("NOP", None),
                         ("SAck", tuple((self.isn[o] + x) & 0xFFFFFFFF for edge in sack for x in edge))]
        has_ack = "A" in flags
        tcp = TCP(sport=self.port[d], dport=self.port[o], flags=flags,
                  seq=(self.isn[d] + seq) & 0xFFFFFFFF,
                  ack=((self.isn[o] + ack) & 0xFFFFFFFF) if has_ack else 0,
                  window=win, options=opts)
        l3 = me.ip_header(peer) / tcp
        if data:
            l3 = l3 / Raw(data)
        frame = self.wrap(l3, d) if self.wrap else ether(me.mac, peer.mac, l3, self.vlan)
        self.s.emit(abs_t, frame, self.flow, d, l3)
        end = seq + len(data) + ("S" in flags) + ("F" in flags)
        if end > self.nxt[d]:
            self.nxt[d] = end
        return seq


def new_flow(sample, name, cli, srv, proto, sport, dport, app=None, vlan=0, tunnel=None, **extra):
    facts = {
        "ip_version": 6 if cli.v6 else 4,
        "src_ip": cli.ip, "dst_ip": srv.ip,
        "src_port": sport, "dst_port": dport,
        "protocol": proto,
        "vlan_id": vlan,
        "tunnel_type": tunnel.pop("type") if tunnel else "",
        "tunnel_id": tunnel.pop("id") if tunnel else 0,
    }
    if tunnel:
        facts["tunnel_outer"] = tunnel
    facts.update(extra)
    if app:
        facts["app"] = app
    return sample.flow(name, **facts)


# --- the conversations ------------------------------------------------------------------------------------

ROUTER_MAC = "02:00:0a:00:00:01"
CLIENT = dict(ip="10.0.1.10", mac="02:00:0a:00:01:0a")


def tcp_bulk(s, t0):
    """Upload of 12 full segments. Segment 4 is dropped between the sender and the probe; segment 11 (the tail)
    is lost between the probe and the receiver. RTT seen from the probe (beside the sender) is 80 us."""
    cli = Host(CLIENT["ip"], CLIENT["mac"], ip_id=0x4a10)
    srv = Host("10.0.2.20", ROUTER_MAC, ttl=62, ip_id=0x9c02)
    mss_payload = 1448          # MSS 1460 less the 12-byte timestamp option
    nseg = 12
    rtt = 80 * US
    gap = 1_210                 # one 1514-byte frame at 10 Gb/s
    name = new_flow(s, "tcp_bulk", cli, srv, 6, 45678, 5201)
    c = TcpConn(s, name, cli, srv, 45678, 5201, t0)
    data = byte_stream("tcp_bulk/data", nseg * mss_payload)

    def start(i):
        return 1 + i * mss_payload

    def end(i):
        return 1 + (i + 1) * mss_payload

    def payload(i):
        return data[i * mss_payload:(i + 1) * mss_payload]

    c.seg(0, "src", "S", syn_opts={"mss": 1460, "wscale": 7}, win=64240)
    c.seg(rtt, "dst", "SA", syn_opts={"mss": 1460, "wscale": 7}, win=65160)
    c.seg(rtt + 2 * US, "src", "A", win=502)
    # first flight: initial window of 10 segments
    send_t = {}
    for i in range(10):
        send_t[i] = rtt + 3 * US + i * gap
        if i == 4:
            c.nxt["src"] = end(i)   # sent by the host, dropped before the probe: never captured
            continue
        c.seg(send_t[i], "src", "PA" if i == 9 else "A", payload(i), seq=start(i), ack=1)
    # receiver: delayed ACK every second segment, then an immediate duplicate ACK per out-of-order segment
    c.seg(send_t[1] + rtt, "dst", "A", ack=end(1), win=523)
    c.seg(send_t[3] + rtt, "dst", "A", ack=end(3), win=545)
    dup_acks = 0
    for i in range(5, 10):
        c.seg(send_t[i] + rtt, "dst", "A", ack=start(4), win=545, sack=[(start(5), end(i))])
        dup_acks += 1
        if i == 7:
            fast_rtx_t = send_t[i] + rtt + 2 * US   # third duplicate ACK: fast retransmit
    # the first ACK opened the window: the last two segments go out (slow start, no more data after them)
    send_t[10] = send_t[1] + rtt + 2 * US
    send_t[11] = send_t[10] + gap
    c.seg(send_t[10], "src", "A", payload(10), seq=start(10), ack=1)
    c.seg(send_t[11], "src", "PA", payload(11), seq=start(11), ack=1)   # lost after the probe
    c.seg(fast_rtx_t, "src", "A", payload(4), seq=start(4), ack=1)      # fast retransmission
    c.seg(send_t[10] + rtt, "dst", "A", ack=start(4), win=545, sack=[(start(5), end(10))])
    dup_acks += 1
    last_ack_t = fast_rtx_t + rtt
    c.seg(last_ack_t, "dst", "A", ack=end(10), win=700)                  # hole filled, tail still missing
    # Linux RTO = srtt + max(4 * rttvar, tcp_rto_min = 200 ms), re-armed by the last ACK that advanced
    rto_t = last_ack_t + 200 * MS + rtt
    c.seg(rto_t, "src", "PA", payload(11), seq=start(11), ack=1)         # RTO retransmission
    c.seg(rto_t + rtt, "dst", "A", ack=end(11), win=722)
    fin_t = rto_t + rtt + 20 * US
    c.seg(fin_t, "src", "FA", seq=end(11), ack=1)
    c.seg(fin_t + rtt, "dst", "FA", ack=end(11) + 1, win=722)
    c.seg(fin_t + rtt + 1 * US, "src", "A", seq=end(11) + 1, ack=2)
    s.flows[name].update({
        "tcp_retransmitted_segments": 2,      # segment 4 (fast retransmit) and segment 11 (RTO)
        "tcp_fast_retransmissions": 1,
        "tcp_rto_retransmissions": 1,
        "tcp_segments_lost_before_probe": 1,  # segment 4's original never reached the probe
        "tcp_segments_lost_after_probe": 1,   # segment 11's original was captured, then lost
        "tcp_duplicate_acks": dup_acks,
        "tcp_payload_bytes": nseg * mss_payload,
        "tcp_mss": 1460, "tcp_wscale": 7, "tcp_sack_permitted": True, "tcp_timestamps": True,
    })


def http_get(s, t0):
    cli = Host(CLIENT["ip"], CLIENT["mac"], ip_id=0x51e0)
    srv = Host("10.0.3.30", ROUTER_MAC, ttl=62, ip_id=0x0d44)
    rtt = 300 * US
    host, ua, path = "www.example.com", "curl/7.88.1", "/index.html"
    name = new_flow(s, "http", cli, srv, 6, 51234, 80,
                    app={"name": "http", "http_method": "GET", "http_host": host, "http_user_agent": ua,
                         "http_url": path, "http_status": 200})
    c = TcpConn(s, name, cli, srv, 51234, 80, t0)
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\n\r\n").encode()
    body = (b"<!doctype html>\n<html>\n<head>\n<title>flowtap sample</title>\n</head>\n<body>\n"
            b"<h1>It works</h1>\n<p>This page was served inside the bundled flowtap sample capture.</p>\n"
            b"</body>\n</html>\n")
    resp = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 01 May 2024 12:00:00 GMT\r\n"
            b"Content-Type: text/html\r\nContent-Length: " + str(len(body)).encode() +
            b"\r\nLast-Modified: Mon, 15 Apr 2024 08:30:00 GMT\r\nConnection: keep-alive\r\n"
            b"Accept-Ranges: bytes\r\n\r\n" + body)
    c.seg(0, "src", "S", syn_opts={"mss": 1460, "wscale": 7}, win=64240)
    c.seg(rtt, "dst", "SA", syn_opts={"mss": 1460, "wscale": 7}, win=65160)
    c.seg(rtt + 30 * US, "src", "A")
    c.seg(rtt + 45 * US, "src", "PA", req)
    c.seg(2 * rtt + 150 * US, "dst", "PA", resp, win=509)
    c.seg(2 * rtt + 180 * US, "src", "A", win=501)
    c.seg(2 * rtt + 400 * US, "src", "FA", win=501)
    c.seg(3 * rtt + 420 * US, "dst", "FA", win=509)
    c.seg(3 * rtt + 440 * US, "src", "A", win=501)


def tls_client_hello(sni, alpn, rnd, sid, key):
    def ext(etype, body):
        return struct.pack(">HH", etype, len(body)) + body

    def vec8(b):
        return struct.pack(">B", len(b)) + b

    def vec16(b):
        return struct.pack(">H", len(b)) + b

    name = sni.encode()
    exts = b"".join([
        ext(0x0000, vec16(b"\x00" + vec16(name))),                                # server_name
        ext(0x000B, vec8(b"\x00")),                                               # ec_point_formats
        ext(0x000A, vec16(struct.pack(">HHH", 0x001D, 0x0017, 0x0018))),           # supported_groups
        ext(0x0010, vec16(b"".join(vec8(p.encode()) for p in alpn))),             # ALPN
        ext(0x0016, b""),                                                         # encrypt_then_mac
        ext(0x0017, b""),                                                         # extended_master_secret
        ext(0x000D, vec16(struct.pack(">8H", 0x0403, 0x0804, 0x0401, 0x0503,
                                      0x0805, 0x0501, 0x0806, 0x0601))),          # signature_algorithms
        ext(0x002B, vec8(struct.pack(">HH", 0x0304, 0x0303))),                    # supported_versions
        ext(0x002D, vec8(b"\x01")),                                               # psk_key_exchange_modes
        ext(0x0033, vec16(struct.pack(">HH", 0x001D, len(key)) + key)),           # key_share x25519
    ])
    suites = struct.pack(">9H", 0x1302, 0x1303, 0x1301, 0xC02C, 0xC030, 0xC02B, 0xC02F, 0xCCA9, 0x00FF)
    body = struct.pack(">H", 0x0303) + rnd + vec8(sid) + vec16(suites) + vec8(b"\x00") + vec16(exts)
    hs = struct.pack(">B", 1) + struct.pack(">I", len(body))[1:] + body
    return struct.pack(">BHH", 0x16, 0x0301, len(hs)) + hs


def tls_server_hello(rnd, sid, key):
    exts = (struct.pack(">HHH", 0x002B, 2, 0x0304) +
            struct.pack(">HHHH", 0x0033, 4 + len(key), 0x001D, len(key)) + key)
    body = (struct.pack(">H", 0x0303) + rnd + struct.pack(">B", len(sid)) + sid +
            struct.pack(">HB", 0x1302, 0) + struct.pack(">H", len(exts)) + exts)
    hs = struct.pack(">B", 2) + struct.pack(">I", len(body))[1:] + body
    return struct.pack(">BHH", 0x16, 0x0303, len(hs)) + hs


def tls_record(ctype, payload):
    return struct.pack(">BHH", ctype, 0x0303, len(payload)) + payload


def tls13(s, t0):
    cli = Host("2001:db8:1::10", CLIENT["mac"], flowlabel=0x3A5C1)
    srv = Host("2001:db8:2::443", ROUTER_MAC, ttl=58, flowlabel=0x8D20F)
    rtt = 1 * MS
    sni, alpn = "api.example.org", ["h2", "http/1.1"]
    name = new_flow(s, "tls", cli, srv, 6, 50432, 443,
                    app={"name": "tls", "tls_version": "1.3", "tls_sni": sni, "tls_alpn_offered": alpn,
                         "tls_cipher_suite": 0x1302})
    c = TcpConn(s, name, cli, srv, 50432, 443, t0)
    ch = tls_client_hello(sni, alpn, byte_stream("tls/crand", 32), byte_stream("tls/sid", 32),
                          byte_stream("tls/ckey", 32))
    sh = tls_server_hello(byte_stream("tls/srand", 32), byte_stream("tls/sid", 32), byte_stream("tls/skey", 32))
    ccs = tls_record(0x14, b"\x01")
    # EncryptedExtensions, Certificate, CertificateVerify, Finished under the handshake keys: opaque here
    server_flight = sh + ccs + tls_record(0x17, byte_stream("tls/sflight", 2310))
    client_finished = ccs + tls_record(0x17, byte_stream("tls/cfin", 53))
    client_request = tls_record(0x17, byte_stream("tls/creq", 121))
    server_reply = (tls_record(0x17, byte_stream("tls/ticket1", 234)) +
                    tls_record(0x17, byte_stream("tls/ticket2", 234)) +
                    tls_record(0x17, byte_stream("tls/sresp", 517)))
    c.seg(0, "src", "S", syn_opts={"mss": 1440, "wscale": 7}, win=64800)
    c.seg(rtt, "dst", "SA", syn_opts={"mss": 1440, "wscale": 7}, win=64260)
    c.seg(rtt + 40 * US, "src", "A")
    c.seg(rtt + 250 * US, "src", "PA", ch)
    t = 2 * rtt + 900 * US
    mss = 1428
    for k in range(0, len(server_flight), mss):
        chunk = server_flight[k:k + mss]
        c.seg(t, "dst", "PA" if k + mss >= len(server_flight) else "A", chunk, win=502)
        t += 2 * US
    c.seg(t + rtt + 60 * US, "src", "A")
    c.seg(t + rtt + 700 * US, "src", "PA", client_finished)
    c.seg(t + rtt + 720 * US, "src", "PA", client_request)
    t = t + 2 * rtt + 1500 * US
    c.seg(t, "dst", "PA", server_reply, win=502)
    c.seg(t + rtt + 40 * US, "src", "A")
    t += 3 * MS
    c.seg(t, "src", "PA", tls_record(0x17, byte_stream("tls/cclose", 19)))   # close_notify, encrypted
    c.seg(t + 20 * US, "src", "FA")
    c.seg(t + rtt + 30 * US, "dst", "PA", tls_record(0x17, byte_stream("tls/sclose", 19)), win=502)
    c.seg(t + rtt + 40 * US, "dst", "FA", win=502)
    c.seg(t + rtt + 80 * US, "src", "A")


def dns_udp(s, t0):
    cli = Host(CLIENT["ip"], CLIENT["mac"], ip_id=0x7711)
    srv = Host("10.0.0.53", ROUTER_MAC, ttl=63, ip_id=0x2a80)
    qname, answer = "www.example.com", "10.0.3.30"
    name = new_flow(s, "dns_udp", cli, srv, 17, 53001, 53,
                    app={"name": "dns", "dns_query": qname, "dns_qtype": "A", "dns_answers": [answer]})
    q = DNS(id=0x3A7C, rd=1, qd=DNSQR(qname=qname, qtype="A"),
            ar=DNSRROPT(rclass=1232, z=0))
    # servers compress repeated names (RFC 1035 4.1.4); scapy does not unless asked
    r = dns_compress(DNS(id=0x3A7C, qr=1, rd=1, ra=1, qd=DNSQR(qname=qname, qtype="A"),
                         an=DNSRR(rrname=qname, type="A", ttl=300, rdata=answer),
                         ar=DNSRROPT(rclass=1232, z=0)))
    for t, d, a, b, msg in ((0, "src", cli, srv, q), (210 * US, "dst", srv, cli, r)):
        l3 = a.ip_header(b) / UDP(sport=53001 if d == "src" else 53, dport=53 if d == "src" else 53001) / msg
        s.emit(t0 + t, ether(a.mac, b.mac, l3), name, d, l3)


def dns_tcp(s, t0):
    cli = Host(CLIENT["ip"], CLIENT["mac"], ip_id=0x1c3e)
    srv = Host("10.0.0.53", ROUTER_MAC, ttl=63, ip_id=0x6b01)
    qname = "files.example.com"
    answers = ["10.0.4.11", "10.0.4.12", "10.0.4.13"]
    name = new_flow(s, "dns_tcp", cli, srv, 6, 41234, 53,
                    app={"name": "dns", "dns_query": qname, "dns_qtype": "A", "dns_answers": answers})
    c = TcpConn(s, name, cli, srv, 41234, 53, t0)
    rtt = 200 * US
    q = bytes(DNS(id=0x91D2, rd=1, qd=DNSQR(qname=qname, qtype="A")))
    r = bytes(dns_compress(DNS(id=0x91D2, qr=1, rd=1, ra=1, qd=DNSQR(qname=qname, qtype="A"),
                               an=[DNSRR(rrname=qname, type="A", ttl=60, rdata=a) for a in answers])))
    c.seg(0, "src", "S", syn_opts={"mss": 1460, "wscale": 7}, win=64240)
    c.seg(rtt, "dst", "SA", syn_opts={"mss": 1460, "wscale": 7}, win=65160)
    c.seg(rtt + 20 * US, "src", "A")
    c.seg(rtt + 30 * US, "src", "PA", struct.pack(">H", len(q)) + q)
    c.seg(2 * rtt + 90 * US, "dst", "PA", struct.pack(">H", len(r)) + r, win=509)
    c.seg(2 * rtt + 110 * US, "src", "A")
    c.seg(2 * rtt + 130 * US, "src", "FA")
    c.seg(3 * rtt + 140 * US, "dst", "FA", win=509)
    c.seg(3 * rtt + 150 * US, "src", "A")


def icmp_echo(s, t0):
    cli = Host(CLIENT["ip"], CLIENT["mac"], ip_id=0xB3A0)
    srv = Host("10.0.2.20", ROUTER_MAC, ttl=62, ip_id=0x0E17)
    ident, seq = 0x2F1C, 1
    name = new_flow(s, "icmp_echo", cli, srv, 1, None, None, icmp_id=ident, app={"name": "icmp echo"})
    # iputils ping: a 16-byte struct timeval (x86_64, little-endian), then bytes 0x10..0x37: 56 data bytes
    sec, usec = divmod((t0 // US), 10**6)
    data = struct.pack("<qq", sec, usec) + bytes(range(0x10, 0x38))
    req = cli.ip_header(srv) / ICMP(type=8, code=0, id=ident, seq=seq) / Raw(data)
    s.emit(t0, ether(cli.mac, srv.mac, req), name, "src", req)
    rep = srv.ip_header(cli)
    rep.flags = 0   # Linux answers echo requests without DF
    rep = rep / ICMP(type=0, code=0, id=ident, seq=seq) / Raw(data)
    s.emit(t0 + 85 * US, ether(srv.mac, cli.mac, rep), name, "dst", rep)


def vxlan_redis(s, t0):
    vtep_a = Host("10.0.9.1", "02:00:0a:00:09:01", ip_id=0x0400)
    vtep_b = Host("10.0.9.2", "02:00:0a:00:09:02", ip_id=0x7100)
    vm_a = Host("192.168.10.5", "02:42:c0:a8:0a:05", ip_id=0xA001)
    vm_b = Host("192.168.10.6", "02:42:c0:a8:0a:06", ip_id=0x3302)
    vni = 5001
    # a VTEP picks the outer source port from a hash of the inner flow, per direction (RFC 7348 section 5)
    outer_sport = {"src": 49821, "dst": 61234}
    vtep = {"src": (vtep_a, vtep_b), "dst": (vtep_b, vtep_a)}
    vm = {"src": (vm_a, vm_b), "dst": (vm_b, vm_a)}
    tunnel = {"type": "vxlan", "id": vni, "src_ip": vtep_a.ip, "dst_ip": vtep_b.ip,
              "udp_dst_port": 4789, "udp_src_ports": [outer_sport["src"], outer_sport["dst"]]}
    name = new_flow(s, "vxlan_redis", vm_a, vm_b, 6, 42100, 6379, tunnel=tunnel, app={"name": "redis"})

    def wrap(l3, d):
        o_src, o_dst = vtep[d]
        i_src, i_dst = vm[d]
        inner = Ether(src=i_src.mac, dst=i_dst.mac) / l3
        # UDP checksum 0: Linux VXLAN default for IPv4 (RFC 7348 says it SHOULD be zero)
        return (Ether(src=o_src.mac, dst=o_dst.mac) / o_src.ip_header(o_dst) /
                UDP(sport=outer_sport[d], dport=4789, chksum=0) / VXLAN(flags="Instance", vni=vni) / inner)

    c = TcpConn(s, name, vm_a, vm_b, 42100, 6379, t0, wrap=wrap)
    rtt = 60 * US
    c.seg(0, "src", "S", syn_opts={"mss": 1410, "wscale": 7}, win=64860)
    c.seg(rtt, "dst", "SA", syn_opts={"mss": 1410, "wscale": 7}, win=64308)
    c.seg(rtt + 5 * US, "src", "A")
    c.seg(rtt + 12 * US, "src", "PA", b"*1\r\n$4\r\nPING\r\n")
    c.seg(2 * rtt + 20 * US, "dst", "PA", b"+PONG\r\n", win=503)
    c.seg(2 * rtt + 30 * US, "src", "A")
    c.seg(2 * rtt + 60 * US, "src", "FA")
    c.seg(3 * rtt + 70 * US, "dst", "FA", win=503)
    c.seg(3 * rtt + 75 * US, "src", "A")


NTP_EPOCH_OFFSET = 2208988800   # seconds from 1900-01-01 to 1970-01-01


def ntp_ts(ns):
    """64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time in ns, truncated, as integers."""
    sec, frac_ns = divmod(ns, 10**9)
    return ((sec + NTP_EPOCH_OFFSET) << 32) | ((frac_ns << 32) // 10**9)


def ntp_packet(mode, stratum, precision, root_delay, root_disp, ref_id, ref, orig, recv, xmit):
    """RFC 5905 header, version 4, no extension fields; root delay/dispersion in NTP short format (16.16)."""
    return struct.pack(">BBbbII4sQQQQ", (0 << 6) | (4 << 3) | mode, stratum, 6, precision,
                       root_delay, root_disp, ref_id, ref, orig, recv, xmit)


def vlan_ntp(s, t0):
    cli = Host("10.0.100.5", "02:00:0a:00:64:05", ip_id=0x5e21)
    srv = Host("10.0.100.1", "02:00:0a:00:64:01", ip_id=0x1f90)
    vlan = 100
    name = new_flow(s, "vlan_ntp", cli, srv, 17, 123, 123, vlan=vlan, app={"name": "ntp"})
    t_req, t_rep = t0, t0 + 150 * US
    # client mode 3: only the transmit timestamp is set (RFC 5905 section 8)
    q = ntp_packet(3, 0, -25, 0, 0, b"\0\0\0\0", 0, 0, 0, ntp_ts(t_req))
    # server mode 4, stratum 2, synchronised to 10.0.100.254; root delay 1 ms, dispersion 2 ms (16.16)
    r = ntp_packet(4, 2, -24, 65536 // 1000, 2 * 65536 // 1000, bytes([10, 0, 100, 254]),
                   ntp_ts(t0 - 20 * 10**9), ntp_ts(t_req), ntp_ts(t_req + 60 * US), ntp_ts(t_req + 75 * US))
    for t, d, a, b, msg in ((t_req, "src", cli, srv, q), (t_rep, "dst", srv, cli, r)):
        l3 = a.ip_header(b) / UDP(sport=123, dport=123) / Raw(msg)
        s.emit(t, ether(a.mac, b.mac, l3, vlan), name, d, l3)


def roce_rc(s, t0):
    """One RC connection seen from a tap beside the responder (so one-way requester delay is already spent):
    WRITE 4 KiB (PSNs 0xfffffa..0xfffffd, one coalesced ACK), WRITE 8 KiB (PSNs 0xfffffe..0x000005 through the
    2^24 wrap; PSN 0x000001 dropped upstream; NAK PSN sequence error; go-back-N from 0x000001), CE marks on
    two packets and the CNP they cause, then a 3 KiB READ (request PSN 0x000006, response PSNs 6..8)."""
    req = Host("10.0.5.1", "02:00:0a:00:05:01", ip_id=0)
    rsp = Host("10.0.5.2", "02:00:0a:00:05:02", ip_id=0)
    req_qpn, rsp_qpn = 0x0011A2, 0x0011B7
    # RoCEv2 UDP source port: chosen per QP (a hash of the QP number into 0xC000-0xFFFF, as rxe and mlx5 do)
    req_sport, rsp_sport = 0xCBA2, 0xF1B7
    pmtu = 1024
    rkey = 0x00002B81
    va = 0x00007F3AC0000000
    rtt = 4 * US
    gap = 100          # ns between back-to-back 1098-byte frames at 100 Gb/s
    first_psn = 0xFFFFFA
    f_req = new_flow(s, "roce_req", req, rsp, 17, req_sport, ROCE_UDP_PORT, app={"name": "rocev2"},
                     roce_role="requester", roce_dest_qpn=rsp_qpn)
    f_rsp = new_flow(s, "roce_resp", rsp, req, 17, rsp_sport, ROCE_UDP_PORT, app={"name": "rocev2"},
                     roce_role="responder", roce_dest_qpn=req_qpn)
    counts = {"missing": 0, "rtx": 0, "ce": 0, "naks": 0, "cnps": 0, "acks": 0}

    def send(t, d, bth, ext=b"", payload=b"", tos=TOS_ROCE_ECT0):
        a, b = (req, rsp) if d == "requester" else (rsp, req)
        sport = req_sport if d == "requester" else rsp_sport
        l3 = a.ip_header(b, tos=tos) / UDP(sport=sport, dport=ROCE_UDP_PORT, chksum=0) / bth
        if ext or payload:
            l3 = l3 / Raw(ext + payload)
        s.emit(t0 + t, Ether(src=a.mac, dst=b.mac) / l3, f_req if d == "requester" else f_rsp,
               "src", l3)

    def reth(addr, length):
        return struct.pack(">QII", addr, rkey, length)

    def aeth(syndrome, msn):
        return struct.pack(">I", (syndrome << 24) | msn)

    def write_pkt(t, psn, k, npkts, msg_va, msg_len, ce=False):
        if k == 0:
            op, ext = RC_RDMA_WRITE_FIRST, reth(msg_va, msg_len)
        elif k == npkts - 1:
            op, ext = RC_RDMA_WRITE_LAST, b""
        else:
            op, ext = RC_RDMA_WRITE_MIDDLE, b""
        data = byte_stream(f"roce/write/{msg_va:x}", msg_len)[k * pmtu:(k + 1) * pmtu]
        bth = BTH(opcode=op, migreq=1, pkey=0xFFFF, dqpn=rsp_qpn, psn=psn % PSN_MOD,
                  ackreq=1 if k == npkts - 1 else 0)
        send(t, "requester", bth, ext, data, tos=TOS_ROCE_CE if ce else TOS_ROCE_ECT0)
        if ce:
            counts["ce"] += 1

    def ack(t, psn, syndrome, msn):
        bth = BTH(opcode=RC_ACKNOWLEDGE, migreq=1, pkey=0xFFFF, dqpn=req_qpn, psn=psn % PSN_MOD)
        send(t, "responder", bth, aeth(syndrome, msn))
        counts["naks" if syndrome >> 5 == 0b011 else "acks"] += 1

    # WRITE 1: 4 packets, all delivered; one coalesced ACK for the last (ack-requested) PSN
    w1_va, w1_len = va, 4 * pmtu
    for k in range(4):
        write_pkt(k * gap, first_psn + k, k, 4, w1_va, w1_len)
    ack(3 * gap + 1500, first_psn + 3, AETH_ACK_NO_CREDIT, 1)
    # WRITE 2: 8 packets; the 4th (PSN 0x000001) is dropped upstream of the probe; 6th and 7th carry CE
    w2_va, w2_len, w2_psn = va + 0x10000, 8 * pmtu, first_psn + 4
    t_w2 = 2 * US
    for k in range(8):
        if k == 3:
            counts["missing"] += 1
            continue
        write_pkt(t_w2 + k * gap, w2_psn + k, k, 8, w2_va, w2_len, ce=k in (5, 6))
    # the responder sees PSN 0x000002 while expecting 0x000001: NAK (implicitly ACKs up to 0x000000), MSN 1;
    # it drops everything after it until the retransmission arrives
    t_nak = t_w2 + 4 * gap + 800
    ack(t_nak, w2_psn + 3, AETH_NAK_PSN_SEQ_ERR, 1)
    # DCQCN notification point: one CNP for the first CE-marked packet (CNPs are rate-limited per QP)
    t_cnp = t_w2 + 5 * gap + 1000
    c = cnp(req_qpn)
    c.migreq = 1
    send(t_cnp, "responder", c, tos=TOS_CNP)
    counts["cnps"] += 1
    # requester gets the NAK one RTT later and goes back to PSN 0x000001 (go-back-N)
    t_rtx = t_nak + rtt + 500
    for j, k in enumerate(range(3, 8)):
        write_pkt(t_rtx + j * gap, w2_psn + k, k, 8, w2_va, w2_len)
        counts["rtx"] += 1
    ack(t_rtx + 4 * gap + 1200, w2_psn + 7, AETH_ACK_NO_CREDIT, 2)
    # READ 3 KiB: one request, three response packets in the requester's PSN space
    rd_psn, rd_len, rd_va = w2_psn + 8, 3 * pmtu, va + 0x20000
    t_rd = t_rtx + 5 * gap
    send(t_rd, "requester",
         BTH(opcode=RC_RDMA_READ_REQUEST, migreq=1, pkey=0xFFFF, dqpn=rsp_qpn, psn=rd_psn % PSN_MOD, ackreq=1),
         reth(rd_va, rd_len))
    rd_data = byte_stream("roce/read", rd_len)
    for k, op in enumerate((RC_RDMA_READ_RESPONSE_FIRST, RC_RDMA_READ_RESPONSE_MIDDLE,
                            RC_RDMA_READ_RESPONSE_LAST)):
        ext = aeth(AETH_ACK_NO_CREDIT, 3) if op != RC_RDMA_READ_RESPONSE_MIDDLE else b""
        send(t_rd + 1200 + k * gap, "responder",
             BTH(opcode=op, migreq=1, pkey=0xFFFF, dqpn=req_qpn, psn=(rd_psn + k) % PSN_MOD),
             ext, rd_data[k * pmtu:(k + 1) * pmtu])
    next_psn = (rd_psn + 3) % PSN_MOD
    s.flows[f_req].update({
        "roce_psn_missing": counts["missing"],
        "roce_retransmitted_packets": counts["rtx"],
        "roce_ecn_ce_packets": counts["ce"],
        "roce_first_psn": first_psn, "roce_next_psn": next_psn,
    })
    s.flows[f_rsp].update({
        "roce_psn_missing": 0,
        "roce_acks": counts["acks"], "roce_naks": counts["naks"], "roce_cnps": counts["cnps"],
        "roce_read_response_packets": 3,
    })
    s.connections.append({
        "transport": "RC",
        "requester": {"ip": req.ip, "udp_src_port": req_sport, "qpn": req_qpn, "flow": f_req},
        "responder": {"ip": rsp.ip, "udp_src_port": rsp_sport, "qpn": rsp_qpn, "flow": f_rsp},
        "pmtu": pmtu,
        "messages": [
            {"op": "RDMA_WRITE", "first_psn": first_psn, "packets": 4, "length": w1_len},
            {"op": "RDMA_WRITE", "first_psn": w2_psn % PSN_MOD, "packets": 8, "length": w2_len},
            {"op": "RDMA_READ", "first_psn": rd_psn % PSN_MOD, "packets": 3, "length": rd_len},
        ],
        "psn_missing": counts["missing"],
        "psn_dropped_before_probe": [(w2_psn + 3) % PSN_MOD],
        "nak_psn_sequence_errors": counts["naks"],
        "cnps": counts["cnps"],
        "ecn_ce_packets": counts["ce"],
        "retransmitted_packets": counts["rtx"],
    })


# Start of each conversation, relative to BASE_TS_NS. The client looks the web server up, fetches a page,
# and so on; the bulk upload runs across the others and finishes last because of its RTO.
SCHEDULE = [
    (dns_udp, 0),
    (http_get, 400 * US),
    (dns_tcp, 3 * MS),
    (tls13, 5 * MS),
    (tcp_bulk, 10 * MS),
    (roce_rc, 20 * MS),
    (icmp_echo, 30 * MS),
    (vxlan_redis, 40 * MS),
    (vlan_ntp, 50 * MS),
]


def build_sample():
    """Return (frames, truth): frames is a list of (ts_ns, frame_bytes) in capture order, truth a dict."""
    s = Sample()
    for fn, offset in SCHEDULE:
        fn(s, BASE_TS_NS + offset)
    s.frames.sort(key=lambda f: (f[0], f[1]))
    # distinct timestamps keep the capture order independent of how ties would be broken
    assert all(a[0] < b[0] for a, b in zip(s.frames, s.frames[1:])), "two frames share a timestamp"
    frames = [(ts, raw) for ts, _, raw, _, _, _ in s.frames]
    data = pcap_bytes(frames)
    flows = []
    for name, facts in s.flows.items():
        mine = [f for f in s.frames if f[3] == name]
        entry = {"name": name}
        entry.update({k: v for k, v in facts.items() if k not in ("app",)})
        for d in ("src", "dst"):
            entry[f"{d}_packets"] = sum(1 for f in mine if f[4] == d)
            entry[f"{d}_bytes"] = sum(f[5] for f in mine if f[4] == d)
        entry["first_ts_ns"] = min(f[0] for f in mine)
        entry["last_ts_ns"] = max(f[0] for f in mine)
        if "app" in facts:
            entry["app"] = facts["app"]
        flows.append(entry)
    truth = {
        "format": TRUTH_FORMAT,
        "generator": "python -m probe.samplegen",
        "description": "ground truth for samples/sample.pcap, computed from the packets as built",
        "units": {"bytes": "IP octets (IPv4 total length, IPv6 payload length + 40; inner packet when "
                           "tunnelled)", "ts": "ns since the Unix epoch, UTC"},
        "capture": {
            "linktype": LINKTYPE_ETHERNET,
            "timestamp_resolution": "ns",
            "packets": len(frames),
            "frame_bytes": sum(len(raw) for _, raw in frames),
            "first_ts_ns": frames[0][0],
            "last_ts_ns": frames[-1][0],
            "pcap_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "flows": flows,
        "roce_connections": s.connections,
    }
    return frames, truth


def pcap_bytes(frames):
    """Classic pcap, nanosecond timestamps (magic 0xa1b23c4d), little-endian, Ethernet."""
    out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, PCAP_SNAPLEN, LINKTYPE_ETHERNET)]
    for ts, raw in frames:
        sec, nsec = divmod(ts, 10**9)
        out.append(struct.pack("<IIII", sec, nsec, len(raw), len(raw)))
        out.append(raw)
    return b"".join(out)


def truth_json(truth):
    return json.dumps(truth, indent=1) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m probe.samplegen", description=__doc__.split("\n\n")[0],
                                 epilog="example: python -m probe.samplegen samples/sample.pcap "
                                        "--truth samples/sample.truth.json")
    ap.add_argument("out", help="pcap file to write")
    ap.add_argument("--truth", help="also write the ground-truth JSON here")
    args = ap.parse_args(argv)
    frames, truth = build_sample()
    data = pcap_bytes(frames)
    Path(args.out).write_bytes(data)
    if args.truth:
        Path(args.truth).write_text(truth_json(truth))
    print(f"samplegen: wrote {args.out} ({len(frames)} packets, {len(data)} bytes, {len(truth['flows'])} flows)"
          + (f" and {args.truth}" if args.truth else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
